"""The shared trainer, through the stage-1 recipe on a tiny model."""

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from llm2comp import LLM2Comp
from llm2comp.recipes.pretrain import run_pretrain
from llm2comp.recipes.stage_config import apply_overrides, load_stage_config
from llm2comp.recipes.stage_config import stage_config as StageConfig
from llm2comp.training.checkpoint import list_checkpoints
from llm2comp.training.loop import TrainingDiverged

from .training_helpers import tiny_stage_config, write_corpus

REPO = Path(__file__).resolve().parents[1]


def final_weights(output_dir: Path) -> dict:
    return load_file(str(list_checkpoints(output_dir / "checkpoints")[-1] / "trainable.safetensors"))


def test_run_writes_log_curve_checkpoints_and_a_loadable_model(tiny_llama_dir, tmp_path):
    cfg = tiny_stage_config(tiny_llama_dir, write_corpus(tmp_path / "c.txt"), tmp_path / "run")
    path = run_pretrain(cfg)
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6]
    assert rows[-1]["loss"] < rows[0]["loss"]  # a high learning rate on a tiny model: it must learn
    assert rows[0]["lr"] == pytest.approx(5e-3) and rows[-1]["lr"] == pytest.approx(0.0)
    assert (tmp_path / "run" / "loss_curve.png").stat().st_size > 1000
    assert [p.name for p in list_checkpoints(tmp_path / "run" / "checkpoints")] == ["step-000004", "step-000006"]
    trained = LLM2Comp.from_pretrained(path)
    untrained = LLM2Comp.from_pretrained(tiny_llama_dir, num_memory_tokens=2, max_length=64, seed=0)
    a, b = trained.encode(["river city music"]), untrained.encode(["river city music"])
    assert abs(a - b).max() > 1e-3
    # rerunning a finished stage reuses it instead of training again
    assert run_pretrain(cfg) == path and len((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()) == 6


KILL_SCRIPT = textwrap.dedent("""
    import os, signal, sys
    sys.path.insert(0, {tests!r})
    from training_helpers import tiny_stage_config
    from llm2comp.recipes.pretrain import run_pretrain
    cfg = tiny_stage_config({model!r}, {corpus!r}, {out!r}, lora={{"r": 4, "alpha": 8, "dropout": 0.1}})
    kill_after = int(sys.argv[1])
    def killer(step, row):
        if step == kill_after:
            os.kill(os.getpid(), signal.SIGKILL)
    run_pretrain(cfg, callbacks=[killer])
""")


def test_killed_run_resumes_to_the_same_weights(tiny_llama_dir, tmp_path):
    corpus = write_corpus(tmp_path / "c.txt")
    scripts = {}
    for name in ("straight", "killed"):
        scripts[name] = tmp_path / f"{name}.py"
        scripts[name].write_text(KILL_SCRIPT.format(tests=str(REPO / "tests"), model=str(tiny_llama_dir),
                                                    corpus=str(corpus), out=str(tmp_path / name)))
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    straight = subprocess.run([sys.executable, str(scripts["straight"]), "-1"], env=env, capture_output=True)
    assert straight.returncode == 0, straight.stderr.decode()[-2000:]
    killed = subprocess.run([sys.executable, str(scripts["killed"]), "3"], env=env, capture_output=True)
    assert killed.returncode == -signal.SIGKILL  # died after step 3; the newest checkpoint is step 2
    assert [p.name for p in list_checkpoints(tmp_path / "killed" / "checkpoints")] == ["step-000002"]
    resumed = subprocess.run([sys.executable, str(scripts["killed"]), "-1"], env=env, capture_output=True)
    assert resumed.returncode == 0, resumed.stderr.decode()[-2000:]
    a, b = final_weights(tmp_path / "straight"), final_weights(tmp_path / "killed")
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], atol=1e-6, rtol=0)
    log = [json.loads(x)["step"] for x in (tmp_path / "killed" / "metrics.jsonl").read_text().splitlines()]
    assert log == [1, 2, 3, 4, 5, 6]


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tiny_llama_dir, tmp_path, monkeypatch):
    from llm2comp.losses import compression

    real_forward = compression.CompressionObjective.forward
    calls = {"n": 0}

    def poisoned(self, examples):
        calls["n"] += 1
        loss = real_forward(self, examples)
        return loss * float("nan") if calls["n"] == 3 else loss

    monkeypatch.setattr(compression.CompressionObjective, "forward", poisoned)
    cfg = tiny_stage_config(tiny_llama_dir, write_corpus(tmp_path / "c.txt"), tmp_path / "run")
    with pytest.raises(TrainingDiverged, match="loss became nan at step 3.*step-000002"):
        run_pretrain(cfg)
    assert [p.name for p in list_checkpoints(tmp_path / "run" / "checkpoints")] == ["step-000002"]
    assert not (tmp_path / "run" / "model").exists()


def test_config_files_and_overrides(tmp_path):
    assert apply_overrides({"lora": {"r": 16}}, ["--lora.r", "8", "--lr=3e-5", "--data.path", "x.txt"]) == {
        "lora": {"r": 8}, "lr": "3e-5", "data": {"path": "x.txt"}}
    (tmp_path / "c.yaml").write_text("stage: pretrain\nmax_steps: 7\nlora: {r: 4, alpha: 8, dropout: 0.0}\n")
    cfg = load_stage_config(tmp_path / "c.yaml", ["--max_steps", "9", "--objective", "nll", "--lr", "3e-5"])
    assert (cfg.loop.max_steps, cfg.objective, cfg.lora.r, cfg.loop.lr) == (9, "nll", 4, 3e-5)
    with pytest.raises(ValueError, match=r"--max_stepz \(command line\): unknown config key 'max_stepz'"):
        load_stage_config(tmp_path / "c.yaml", ["--max_stepz", "9"])
    with pytest.raises(ValueError, match="stage must be one of"):
        StageConfig(stage="finetune")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_stage_config(tmp_path / "missing.yaml")


@pytest.mark.parametrize("path", sorted(p for p in (REPO / "configs").glob("*.yaml")  # accelerate's: test_fsdp.py
                                         if not p.name.startswith("accelerate_")), ids=lambda p: p.name)
def test_shipped_configs_load(path):
    from llm2comp.recipes.pipeline import is_pipeline_file, load_pipeline
    from llm2comp.recipes.study import load_study_config, plan_runs

    if path.name.startswith("study_"):  # a study: every run resolves, each with its arm's objective
        study = load_study_config(path)
        runs = plan_runs(study)
        assert runs and all(r.config.objective == study.arms[r.arm]["objective"] for r in runs)
        return
    configs = load_pipeline(path) if is_pipeline_file(path) else [load_stage_config(path)]
    expected = "mntp" if "mntp" in path.name else "kl"
    assert configs and all(c.objective == expected for c in configs if c.stage == "pretrain")
    for previous, current in zip(configs, configs[1:]):
        assert current.model == f"{previous.output_dir}/model"


def test_mntp_quickstart_mirrors_the_kl_quickstart():
    """The baseline differs from the compression quickstart in its objective only: same data, budget, LoRA."""
    kl = load_stage_config(REPO / "configs" / "pretrain_quickstart.yaml").to_dict()
    mntp = load_stage_config(REPO / "configs" / "pretrain_mntp_quickstart.yaml").to_dict()
    assert {key for key in kl.keys() & mntp.keys() if kl[key] != mntp[key]} == {"output_dir", "objective",
                                                                                "num_memory_tokens"}
    terms = {"reconstruction_weight", "alignment_weight", "margin_weight", "margin", "alignment_temperature", "teacher"}
    assert kl.keys() - mntp.keys() == terms and mntp.keys() - kl.keys() == {"mask_ratio"}
    assert (mntp["objective"], mntp["num_memory_tokens"], mntp["mask_ratio"]) == ("mntp", 0, 0.2)


def test_bad_data_stops_before_training(tiny_llama_dir, tmp_path):
    (tmp_path / "bad.jsonl").write_text('{"text": "fine text here"}\n{"body": 1}\n')
    cfg = tiny_stage_config(tiny_llama_dir, tmp_path / "unused", tmp_path / "run",
                            data={"type": "jsonl", "path": str(tmp_path / "bad.jsonl")})
    with pytest.raises(ValueError, match="bad.jsonl.*2"):
        run_pretrain(cfg)
    assert not (tmp_path / "run").exists()
