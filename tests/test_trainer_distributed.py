"""Two CPU processes (gloo, `accelerate launch`) train to the same weights as one process."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from llm2comp.training.checkpoint import list_checkpoints

from .training_helpers import tiny_stage_config, write_corpus

REPO = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _config_file(tmp_path: Path, name: str, **overrides) -> Path:
    cfg = tiny_stage_config(overrides.pop("model"), overrides.pop("corpus"), tmp_path / name,
                            max_steps=3, save_every=0, **overrides)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg.to_dict()))
    return path


def _train_on_one_and_two_processes(single: Path, double: Path):
    """`llm2comp train` on config `single` in one process and on `double` in two (torchrun, gloo)."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}
    one = subprocess.run([sys.executable, "-m", "llm2comp", "train", "--config", str(single)], env=env,
                         capture_output=True, text=True)
    assert one.returncode == 0, one.stderr[-3000:]
    launch = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
              str(_free_port()), "-m", "llm2comp", "train", "--config", str(double)]
    two = subprocess.run(launch, env=env, capture_output=True, text=True)
    assert two.returncode == 0, two.stderr[-3000:]
    return one, two


@pytest.mark.multiprocess
def test_two_processes_equal_one_process_on_the_same_global_batch(tiny_llama_dir, tmp_path):
    corpus = write_corpus(tmp_path / "c.txt")
    single = _config_file(tmp_path, "single", model=tiny_llama_dir, corpus=corpus, batch_size=4)
    double = _config_file(tmp_path, "double", model=tiny_llama_dir, corpus=corpus, batch_size=2)
    one, two = _train_on_one_and_two_processes(single, double)
    a = load_file(str(list_checkpoints(tmp_path / "single" / "checkpoints")[-1] / "trainable.safetensors"))
    b = load_file(str(list_checkpoints(tmp_path / "double" / "checkpoints")[-1] / "trainable.safetensors"))
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], atol=1e-5, rtol=0)
    assert "world size 2" in two.stderr and "world size 1" in one.stderr  # negative control: really 2 ranks


def _contrastive_config(tmp_path: Path, model: Path, stage: str, name: str, batch_size: int, **extra) -> Path:
    """A stage-2/3 config file: tiny model, no dropout anywhere (every rank would draw other masks)."""
    from .training_helpers import write_pairs, write_sentences

    data = ({"type": "pairs", "path": str(write_pairs(tmp_path / "p.jsonl"))} if stage == "supervised" else
            {"type": "text", "path": str(write_sentences(tmp_path / "s.txt"))})
    values = dict(stage=stage, model=str(model), output_dir=str(tmp_path / name), num_memory_tokens=2, max_length=64,
                  lora={"r": 4, "alpha": 8, "dropout": 0.0}, data=data, batch_size=batch_size, lr=1e-3,
                  warmup_steps=1, max_steps=3, save_every=0, log_every=1, seed=0, **extra)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


@pytest.mark.multiprocess
@pytest.mark.parametrize("stage, cache_chunk_size", [("supervised", 1), ("unsupervised", 0)],
                         ids=["stage3-gradcache", "stage2-simcse"])
def test_contrastive_stages_on_two_processes_equal_one_process(tiny_llama_dir, tmp_path, stage, cache_chunk_size):
    """Stage 3 with GradCache (chunks of 1 text: per rank 6 chunks, one kept, five re-embedded inside the
    backward, all but the last under DDP's no_sync) and stage 2 SimCSE (two DDP forwards, one backward),
    each on 2 gloo processes with half the global batch: the trained weights equal one process's. With the
    reducer armed wrongly (several backwards per armed forward) DDP raises; with the gradients left
    unsynced each rank would train on its half and the weights would differ."""
    extra = {"cache_chunk_size": cache_chunk_size}
    single = _contrastive_config(tmp_path, tiny_llama_dir, stage, "single", 4, **extra)
    double = _contrastive_config(tmp_path, tiny_llama_dir, stage, "double", 2, **extra)
    one, two = _train_on_one_and_two_processes(single, double)
    assert "world size 2" in two.stderr and "world size 1" in one.stderr  # really 2 ranks
    a = load_file(str(list_checkpoints(tmp_path / "single" / "checkpoints")[-1] / "trainable.safetensors"))
    b = load_file(str(list_checkpoints(tmp_path / "double" / "checkpoints")[-1] / "trainable.safetensors"))
    assert a.keys() == b.keys() and any("lora_B" in name for name in a)
    assert any(a[name].abs().max() > 0 for name in a if "lora_B" in name)  # trained (LoRA B starts at 0)
    for name in a:
        torch.testing.assert_close(a[name], b[name], atol=1e-5, rtol=0, msg=lambda m, n=name: f"{n}: {m}")
    losses = [[json.loads(line)["loss"] for line in (tmp_path / run / "metrics.jsonl").read_text().splitlines()]
              for run in ("single", "double")]
    assert losses[0] == pytest.approx(losses[1], rel=1e-5)  # the global batch's loss, averaged over ranks


NAN_ON_ONE_RANK = """
import os, sys
import torch
from accelerate import Accelerator
from llm2comp.training.batches import BatchStream
from llm2comp.training.loop import LoopSettings, TrainingDiverged, train_loop

class Regression(torch.nn.Module):  # rank 1's loss is NaN at its 2nd step; rank 0's stays finite
    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(4, 1)
        self.calls = 0

    def forward(self, batch):
        self.calls += 1
        x = torch.stack(batch)
        loss = (self.linear(x) - x.sum(1, keepdim=True)).pow(2).mean()
        return loss * float("nan") if os.environ["RANK"] == "1" and self.calls == 2 else loss

torch.manual_seed(0)
items = list(torch.randn(16, 4))
accelerator = Accelerator(cpu=True)
stream = BatchStream(items, 2, rank=accelerator.process_index, world_size=accelerator.num_processes)
try:
    train_loop(Regression(), stream, LoopSettings(max_steps=4, save_every=1, progress=False), accelerator=accelerator,
               output_dir={out!r}, config={{"stage": "toy"}})
except TrainingDiverged as error:
    print(f"rank {{os.environ['RANK']}} stopped: {{error}}", flush=True)
    sys.exit(3)
"""


@pytest.mark.multiprocess
def test_a_non_finite_loss_on_one_rank_stops_every_rank_together(tmp_path):
    script = tmp_path / "nan_rank.py"
    script.write_text(NAN_ON_ONE_RANK.format(out=str(tmp_path / "run")))
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}
    launch = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
              str(_free_port()), str(script)]
    try:
        done = subprocess.run(launch, env=env, capture_output=True, text=True, timeout=90)
    except subprocess.TimeoutExpired as error:  # with NCCL a mismatch hangs; gloo may abort instead
        pytest.fail(f"the ranks did not stop together (hang): {str(error.stderr)[-1500:]}")
    for rank in (0, 1):  # both ranks raise at the same step, and keep the last good checkpoint
        assert f"rank {rank} stopped: loss became nan at step 2" in done.stdout, done.stdout + done.stderr[-3000:]
    assert done.returncode != 0 and "collective mismatch" not in done.stderr
    assert [p.name for p in list_checkpoints(tmp_path / "run" / "checkpoints")] == ["step-000001"]
