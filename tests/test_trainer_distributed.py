"""Two CPU processes (gloo, `accelerate launch`) train to the same weights as one process."""

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


@pytest.mark.multiprocess
def test_two_processes_equal_one_process_on_the_same_global_batch(tiny_llama_dir, tmp_path):
    corpus = write_corpus(tmp_path / "c.txt")
    single = _config_file(tmp_path, "single", model=tiny_llama_dir, corpus=corpus, batch_size=4)
    double = _config_file(tmp_path, "double", model=tiny_llama_dir, corpus=corpus, batch_size=2)
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}
    one = subprocess.run([sys.executable, "-m", "llm2comp", "train", "--config", str(single)], env=env,
                         capture_output=True, text=True)
    assert one.returncode == 0, one.stderr[-3000:]
    launch = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
              str(_free_port()), "-m", "llm2comp", "train", "--config", str(double)]
    two = subprocess.run(launch, env=env, capture_output=True, text=True)
    assert two.returncode == 0, two.stderr[-3000:]
    a = load_file(str(list_checkpoints(tmp_path / "single" / "checkpoints")[-1] / "trainable.safetensors"))
    b = load_file(str(list_checkpoints(tmp_path / "double" / "checkpoints")[-1] / "trainable.safetensors"))
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], atol=1e-5, rtol=0)
    assert "world size 2" in two.stderr and "world size 1" in one.stderr  # negative control: really 2 ranks
