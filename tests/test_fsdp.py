"""Sharded training (FSDP2) on CPU: two gloo processes, torch's `fully_shard`, the project's loop.

accelerate shards only on GPUs (on CPU it falls back to plain data parallelism, which the loop now
refuses when the config asked for FSDP: tests/test_trainer.py). torch's FSDP2 itself runs on CPU with
gloo, so these tests shard with it where accelerate's FSDP2 would (in `prepare`: every decoder layer,
then the root, parameters replaced by DTensor shards, the optimizer switched to them) and run the
project's unchanged `train_loop` on the stage-1 objective: the encoder pass with the LoRA adapter on,
the teacher and student passes with it switched off inside the sharded model, checkpoints gathered
with `torch.distributed.checkpoint.state_dict` (full_state_dict, cpu_offload), a resume that loads
the optimizer state into the sharded optimizer, and a final model folder written from the
unsharded parameters. The results must equal one unsharded process on the same global batch.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import socket

import pytest
import torch
from safetensors.torch import load_file

WORLD = 2
PER_RANK = 2
STEPS = 2


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def build_objective(model_dir: str):
    """The stage-1 objective on a tiny Llama: fresh-seeded non-zero LoRA, trainable memory vectors."""
    from llm2comp import LLM2Comp, LoraSettings
    from llm2comp.losses.compression import CompressionObjective

    from .conftest import randomize_lora

    encoder = LLM2Comp.from_pretrained(model_dir, num_memory_tokens=2, max_length=64)
    encoder.add_lora(LoraSettings(r=4, alpha=8, dropout=0.0))
    randomize_lora(encoder.model)
    encoder.memory.weight.requires_grad_(True)
    return CompressionObjective(encoder, "kl")


def examples():
    from llm2comp.data.compression_examples import make_example

    rows = [[(7 * i + 13 * j) % 3000 + 100 for j in range(24 + i % 6)] for i in range(16)]
    return [make_example(row, "kl", 0, i) for i, row in enumerate(rows)]


class Interrupted(Exception):
    """Stands for a killed run: raised by a callback before the step's checkpoint is written."""


def train(model_dir: str, out: str, steps: int, accelerator, rank: int = 0, world: int = 1, stop_at: int = 0):
    from llm2comp.training.batches import BatchStream
    from llm2comp.training.loop import LoopSettings, train_loop

    objective = build_objective(model_dir)
    stream = BatchStream(examples(), PER_RANK * WORLD // world, seed=0, rank=rank, world_size=world)
    settings = LoopSettings(max_steps=steps, lr=5e-3, save_every=1, keep_last=5, progress=False)
    def stop(step, row):
        if step == stop_at:
            raise Interrupted(step)

    result = train_loop(objective, stream, settings, accelerator=accelerator, output_dir=out,
                        config={"stage": "fsdp-test"}, callbacks=[stop])
    return objective, result


def shard_like_accelerate(model, world: int, **fsdp_options) -> None:
    """What accelerate's FSDP2 `prepare` does with transformer-layer auto wrap: one unit per decoder
    layer, then the root (`fsdp_options`, e.g. `mp_policy`, go to every unit)."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh("cpu", (world,))
    for module in list(model.modules()):
        if type(module).__name__.endswith("DecoderLayer"):
            fully_shard(module, mesh=mesh, **fsdp_options)
    fully_shard(model, mesh=mesh, **fsdp_options)


@contextlib.contextmanager
def gloo_group(rank: int, port: int):
    """This worker's process group (gloo over loopback), destroyed on the way out."""
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD,
                            timeout=datetime.timedelta(seconds=120))
    try:
        yield dist
    finally:
        dist.destroy_process_group()


def sharding_accelerator():
    """A real accelerate Accelerator (MULTI_CPU, gloo) whose `prepare` shards with torch's FSDP2."""
    from accelerate import Accelerator

    class ShardingAccelerator(Accelerator):
        def prepare(self, model, optimizer):
            before = dict(model.named_parameters())
            shard_like_accelerate(model, self.num_processes)
            after = dict(model.named_parameters())
            swap = {before[name]: after[name] for name in before}
            for group in optimizer.param_groups:
                group["params"] = [swap[p] for p in group["params"]]
            self._models.append(model)
            return model, self.prepare_optimizer(optimizer)

    return ShardingAccelerator(cpu=True)


def worker(rank: int, port: int, model_dir: str, out: str) -> None:
    torch.set_num_threads(1)
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(WORLD), LOCAL_WORLD_SIZE=str(WORLD),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), GLOO_SOCKET_IFNAME="lo")
    import torch.distributed as dist
    from torch.distributed.tensor import DTensor

    from llm2comp.training.sharded_state import unsharded

    dist.init_process_group("gloo", rank=rank, world_size=WORLD, timeout=datetime.timedelta(seconds=120))
    try:
        accelerator = sharding_accelerator()
        # killed during step 2 (the checkpoint of step 1 written), then resumed: the optimizer state of
        # step 1 goes back into the sharded optimizer
        try:
            train(model_dir, os.path.join(out, "fsdp"), STEPS, accelerator, rank, WORLD, stop_at=STEPS)
        except Interrupted:
            pass
        objective, result = train(model_dir, os.path.join(out, "fsdp"), STEPS, accelerator, rank, WORLD)
        embed = objective.encoder.model.get_input_embeddings().weight
        report = {"resumed_from": result.resumed_from, "sharded": isinstance(embed, DTensor),
                  "local_rows": embed.to_local().shape[0] if isinstance(embed, DTensor) else None}
        with unsharded(objective):  # collective; then rank 0 writes the folder from full tensors
            if rank == 0:
                objective.encoder.save(os.path.join(out, "fsdp_model"))
        if rank == 0:
            with open(os.path.join(out, "report.json"), "w") as file:
                json.dump(report, file)
    finally:
        dist.destroy_process_group()


@pytest.mark.multiprocess
def test_fsdp2_stage1_training_resume_and_saving_equal_one_process(tiny_llama_dir, tmp_path):
    from accelerate import Accelerator

    from llm2comp import LLM2Comp
    from llm2comp.training.checkpoint import list_checkpoints

    torch.multiprocessing.spawn(worker, args=(free_port(), str(tiny_llama_dir), str(tmp_path)), nprocs=WORLD,
                                join=True)
    report = json.loads((tmp_path / "report.json").read_text())
    vocab = LLM2Comp.from_pretrained(tiny_llama_dir).model.get_input_embeddings().weight.shape[0]
    assert report == {"resumed_from": 1, "sharded": True, "local_rows": vocab // WORLD}  # really sharded
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        objective, _ = train(str(tiny_llama_dir), str(tmp_path / "single"), STEPS, Accelerator())
        texts = ["river city music", "a garden in winter"]
        single_embeddings = objective.encoder.eval().encode(texts)
    finally:
        torch.set_num_threads(threads)
    for step in ("step-000001", "step-000002"):
        for name in ("trainable.safetensors", "optimizer.safetensors"):
            sharded = load_file(str(tmp_path / "fsdp" / "checkpoints" / step / name))
            single = load_file(str(tmp_path / "single" / "checkpoints" / step / name))
            assert sharded.keys() == single.keys() and len(single) > 4
            for key in single:
                torch.testing.assert_close(sharded[key], single[key], atol=1e-5, rtol=1e-4,
                                           msg=lambda m, k=key, s=step: f"{s} {k}: {m}")
    assert [p.name for p in list_checkpoints(tmp_path / "fsdp" / "checkpoints")][-1] == "step-000002"
    # the gradient norm is clipped over the shards of the prepared parameters (old code: the parameters
    # from before `prepare`, which FSDP had replaced: no gradients, norm 0, no clipping)
    norms = {run: [json.loads(line)["grad_norm"] for line in (tmp_path / run / "metrics.jsonl").read_text().splitlines()]
             for run in ("fsdp", "single")}
    assert norms["single"][0] > 0
    torch.testing.assert_close(norms["fsdp"], norms["single"], rtol=1e-4, atol=0)
    saved = LLM2Comp.from_pretrained(tmp_path / "fsdp_model").encode(texts)
    assert abs(saved - single_embeddings).max() < 1e-4
    untrained = LLM2Comp.from_pretrained(tiny_llama_dir, num_memory_tokens=2, max_length=64).encode(texts)
    assert abs(saved - untrained).max() > 1e-3  # negative control: training changed the model


# ------------------------------------------------------------------ what accelerate is asked for
REPO = __import__("pathlib").Path(__file__).resolve().parents[1]


def test_loop_refuses_sharding_that_accelerate_did_not_start():
    """accelerate falls back to data parallelism (or one process) when it cannot shard (no GPU,
    `use_cpu: true`) and says nothing; the loop stops before any step, naming what was asked and got."""
    from accelerate import Accelerator

    from llm2comp.errors import InvalidSetting
    from llm2comp.training.loop import check_distributed_type

    accelerator = Accelerator()  # a CPU: DistributedType.NO
    check_distributed_type(accelerator, environ={})
    check_distributed_type(accelerator, environ={"ACCELERATE_USE_FSDP": "false"})
    with pytest.raises(InvalidSetting, match=r"asks for FSDP \(ACCELERATE_USE_FSDP=true\) but accelerate runs NO"):
        check_distributed_type(accelerator, environ={"ACCELERATE_USE_FSDP": "true"})
    with pytest.raises(InvalidSetting, match="asks for DEEPSPEED"):
        check_distributed_type(accelerator, environ={"ACCELERATE_USE_DEEPSPEED": "true"})


def test_deepspeed_refuses_several_backward_passes_per_step():
    """accelerate's backward steps DeepSpeed's optimizer: GradCache (a backward per chunk) and gradient
    accumulation would update the weights after every chunk. The plain one-backward step is allowed."""
    from types import SimpleNamespace

    from accelerate.utils import DistributedType

    from llm2comp.errors import InvalidSetting
    from llm2comp.training.loop import LoopSettings, check_deepspeed_steps

    deepspeed = SimpleNamespace(distributed_type=DistributedType.DEEPSPEED)
    check_deepspeed_steps(deepspeed, LoopSettings(max_steps=1), {"cache_chunk_size": 0})
    with pytest.raises(InvalidSetting, match="cache_chunk_size=16 \\(GradCache\\)"):
        check_deepspeed_steps(deepspeed, LoopSettings(max_steps=1), {"cache_chunk_size": 16})
    with pytest.raises(InvalidSetting, match="grad_accum=4"):
        check_deepspeed_steps(deepspeed, LoopSettings(max_steps=1, grad_accum=4), {})
    ddp = SimpleNamespace(distributed_type=DistributedType.MULTI_GPU)
    check_deepspeed_steps(ddp, LoopSettings(max_steps=1, grad_accum=4), {"cache_chunk_size": 16})


def test_shipped_accelerate_configs_parse_with_accelerates_own_classes():
    """configs/accelerate_*.yaml load as accelerate's ClusterConfig; the FSDP one builds an FSDP2
    FullyShardedDataParallelPlugin with transformer-layer wrapping; the DeepSpeed JSONs build a
    DeepSpeedPlugin (no deepspeed install needed) with their ZeRO stage and explicit micro-batch size
    (accelerate cannot infer it: the loop prepares no dataloader)."""
    import json as json_module

    from accelerate.commands.config.config_args import ClusterConfig
    from accelerate.utils import DeepSpeedPlugin, DistributedType, FullyShardedDataParallelPlugin

    fsdp = ClusterConfig.from_yaml_file(str(REPO / "configs" / "accelerate_fsdp.yaml"))
    assert (fsdp.distributed_type, fsdp.mixed_precision) == (DistributedType.FSDP, "bf16")
    options = {key.removeprefix("fsdp_"): value for key, value in fsdp.fsdp_config.items()}
    plugin = FullyShardedDataParallelPlugin(
        fsdp_version=options["version"], auto_wrap_policy=options["auto_wrap_policy"].lower(),
        transformer_cls_names_to_wrap=[options["transformer_layer_cls_to_wrap"]],
        reshard_after_forward=options["reshard_after_forward"], cpu_offload=options["offload_params"],
        cpu_ram_efficient_loading=options["cpu_ram_efficient_loading"], state_dict_type=options["state_dict_type"],
        activation_checkpointing=options["activation_checkpointing"])
    assert plugin.fsdp_version == 2 and plugin.auto_wrap_policy.__name__ == "transformer_auto_wrap_policy"
    for stage in (2, 3):
        launch = ClusterConfig.from_yaml_file(str(REPO / "configs" / f"accelerate_deepspeed_zero{stage}.yaml"))
        assert launch.distributed_type == DistributedType.DEEPSPEED
        path = REPO / launch.deepspeed_config["deepspeed_config_file"]
        plugin = DeepSpeedPlugin(hf_ds_config=str(path))
        assert plugin.zero_stage == stage
        raw = json_module.loads(path.read_text())
        assert raw["train_micro_batch_size_per_gpu"] == 1 and raw["gradient_clipping"] == 2.0


@pytest.mark.multiprocess
def test_accelerate_launch_with_the_fsdp_config_on_cpu_is_refused(tiny_llama_dir, tmp_path):
    """The issue's case: `accelerate launch --config_file <FSDP config>` on a CPU used to train with
    plain data parallelism; now `llm2comp train` stops with one line (exit 2) before loading the model."""
    import subprocess
    import sys

    import yaml

    from .training_helpers import tiny_stage_config, write_corpus

    cfg = tiny_stage_config(tiny_llama_dir, write_corpus(tmp_path / "c.txt"), tmp_path / "run", max_steps=1)
    (tmp_path / "train.yaml").write_text(yaml.safe_dump(cfg.to_dict()))
    launch_config = yaml.safe_load((REPO / "configs" / "accelerate_fsdp.yaml").read_text())
    launch_config.update(use_cpu=True, num_processes=2)  # what a user tries on a machine without GPUs
    (tmp_path / "fsdp.yaml").write_text(yaml.safe_dump(launch_config))
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(tmp_path / "fsdp.yaml"),
              "--main_process_port", str(free_port()), "-m", "llm2comp", "train", "--config",
              str(tmp_path / "train.yaml")]
    done = subprocess.run(launch, env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode != 0
    assert "asks for FSDP (ACCELERATE_USE_FSDP=true) but accelerate runs" in done.stderr, done.stderr[-3000:]
    assert not (tmp_path / "run" / "model").exists() and not (tmp_path / "run" / "checkpoints").exists()


def bf16_worker(rank: int, port: int, model_dir: str, out: str) -> None:
    from torch.distributed.fsdp import MixedPrecisionPolicy
    from torch.distributed.tensor import DTensor

    with gloo_group(rank, port):
        objective = bf16_objective(model_dir)
        policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)  # accelerate's bf16
        shard_like_accelerate(objective, WORLD, mp_policy=policy)
        loss = objective(examples()[:4])  # the global batch on every rank: the loss must equal one process's
        loss.backward()
        trainable = [p for p in objective.parameters() if p.requires_grad]
        report = {"loss": loss.item(), "sharded": all(isinstance(p, DTensor) for p in trainable),
                  "grad_dtypes": sorted({str(p.grad.dtype) for p in trainable}),
                  "weight_dtypes": sorted({str(p.dtype) for p in objective.parameters()})}
        if rank == 0:
            with open(os.path.join(out, "bf16.json"), "w") as file:
                json.dump(report, file)


def bf16_objective(model_dir: str):
    """The paper's precision: bf16 backbone weights, float32 LoRA and memory vectors in the same units."""
    from llm2comp import LLM2Comp, LoraSettings
    from llm2comp.losses.compression import CompressionObjective

    encoder = LLM2Comp.from_pretrained(model_dir, num_memory_tokens=2, max_length=64, dtype=torch.bfloat16)
    encoder.add_lora(LoraSettings(r=4, alpha=8, dropout=0.0))
    encoder.memory.weight.requires_grad_(True)
    return CompressionObjective(encoder, "kl")


@pytest.mark.multiprocess
def test_fsdp2_shards_bf16_backbone_with_float32_lora_in_the_same_units(tiny_llama_dir, tmp_path):
    """FSDP2 units mixing bf16 frozen weights and float32 trainable ones (what `dtype: bfloat16` gives),
    under the bf16 MixedPrecisionPolicy accelerate sets for `mixed_precision: bf16`: a stage-1 step runs,
    the float32 shards get float32 gradients, and the loss equals the unsharded bf16 model's (2%: bf16)."""
    torch.multiprocessing.spawn(bf16_worker, args=(free_port(), str(tiny_llama_dir), str(tmp_path)), nprocs=WORLD,
                                join=True)
    report = json.loads((tmp_path / "bf16.json").read_text())
    assert report["sharded"] and report["grad_dtypes"] == ["torch.float32"]
    assert report["weight_dtypes"] == ["torch.bfloat16", "torch.float32"]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        reference = bf16_objective(str(tiny_llama_dir))(examples()[:4]).item()
    assert report["loss"] == pytest.approx(reference, rel=0.02)


def gradcache_worker(rank: int, port: int, model_dir: str, out: str) -> None:
    from llm2comp.losses.cached_info_nce import CachedInfoNCE

    with gloo_group(rank, port) as dist:
        model = contrastive_model(model_dir)
        shard_like_accelerate(model, WORLD)
        half = len(contrastive_batch()[0]) // WORLD
        local = [group[rank * half:(rank + 1) * half] for group in contrastive_batch()]
        loss = CachedInfoNCE(model, chunk_size=2)(local)
        loss.backward()  # step 3 (a forward and a backward per chunk on the shards) runs in this backward
        loss = loss.detach()
        grads = {name: p.grad.full_tensor() for name, p in model.named_parameters() if p.requires_grad}
        total = loss.clone()
        dist.all_reduce(total)
        if rank == 0:
            torch.save({"loss": total / WORLD, "grads": grads}, os.path.join(out, "gradcache.pt"))


def contrastive_model(model_dir: str):
    from llm2comp import LLM2Comp, LoraSettings

    from .conftest import randomize_lora

    model = LLM2Comp.from_pretrained(model_dir, num_memory_tokens=2, max_length=64)
    model.add_lora(LoraSettings(r=4, alpha=8, dropout=0.0))
    randomize_lora(model.model, scale=0.1)
    model.memory.weight.requires_grad_(True)
    return model.eval()


def contrastive_batch() -> list[list[list[int]]]:
    """8 queries, 8 positives, 8 hard negatives (token ids, mixed lengths)."""
    rows = [[(11 * i + 5 * j) % 3000 + 100 for j in range(5 + i % 6)] for i in range(24)]
    return [rows[:8], rows[8:16], rows[16:]]


@pytest.mark.multiprocess
def test_fsdp2_gradcache_on_half_batches_equals_one_process_on_the_global_batch(tiny_llama_dir, tmp_path):
    """Stage 3 sharded: GradCache (a no-grad pass, then a forward and backward per chunk, candidates
    gathered across ranks) on a sharded LLM2Comp; FSDP2 averages the reduce-scattered gradients like DDP,
    so the full gradients equal plain InfoNCE in one unsharded process on the whole batch."""
    from llm2comp.losses.info_nce import InfoNCE

    torch.multiprocessing.spawn(gradcache_worker, args=(free_port(), str(tiny_llama_dir), str(tmp_path)),
                                nprocs=WORLD, join=True)
    sharded = torch.load(tmp_path / "gradcache.pt", weights_only=True)
    model = contrastive_model(str(tiny_llama_dir))
    loss = InfoNCE(model)(contrastive_batch())
    loss.backward()
    loss = loss.detach()
    torch.testing.assert_close(sharded["loss"], loss, atol=1e-5, rtol=0)
    grads = {name: p.grad for name, p in model.named_parameters() if p.requires_grad}
    assert sharded["grads"].keys() == grads.keys() and any("memory" in name for name in grads)
    for name, grad in grads.items():
        torch.testing.assert_close(sharded["grads"][name], grad, atol=2e-5, rtol=1e-4, msg=lambda m, n=name: f"{n}: {m}")


@pytest.mark.parametrize("kind", ["FSDP", "DEEPSPEED"])
def test_the_memory_gap_diagnostic_is_refused_under_sharding_before_the_model_loads(kind):
    """The gap logger calls the objective outside the loop's forward on one rank's shard: refused by name
    (before, nothing checked it)."""
    from types import SimpleNamespace

    from llm2comp.errors import ConfigError
    from llm2comp.recipes.pretrain import check_gap_logging

    sharded = SimpleNamespace(distributed_type=SimpleNamespace(value=kind))
    plain = SimpleNamespace(distributed_type=SimpleNamespace(value="MULTI_GPU"))
    with pytest.raises(ConfigError, match="held_out_texts=32"):
        check_gap_logging(sharded, SimpleNamespace(held_out_texts=32))
    check_gap_logging(sharded, SimpleNamespace(held_out_texts=0))
    check_gap_logging(plain, SimpleNamespace(held_out_texts=32))
