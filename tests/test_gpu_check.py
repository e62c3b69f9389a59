"""benchmarks/gpu_check.py --cpu-tiny: the GPU check's code runs on CPU in CI, so it cannot rot.

One run (~45 s on one thread) of the whole script: correctness on tiny Llama / Qwen2 / Mistral, the
recipes in a subprocess, and the speed sections on a tiny stand-in for the 7B shape. The asserts
read the JSON it writes: every check passed with its numbers, except the known failures below.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # the GPU check's CPU mode, every stage

ROOT = Path(__file__).resolve().parents[1]
ARCHES = ("llama", "qwen2", "mistral")
# This check found that stage 1 crashed with gradient checkpointing (the student pass, adapter off, was
# recomputed with the adapter on: CheckpointError); fixed in training/activation_checkpointing.py.
# A check known to fail goes here with its reason; the test then requires it to fail until fixed.
KNOWN_FAILURES: set[tuple[str, str]] = set()  # checks expected to fail until a fix lands (none today)


@pytest.fixture(scope="module")
def report(tmp_path_factory, tokenizer_dir):
    out = tmp_path_factory.mktemp("gpu_check") / "check.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "src"), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--cpu-tiny", "--out", str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert out.is_file(), done.stderr[-3000:]
    data = json.loads(out.read_text())
    data["stdout"], data["returncode"] = done.stdout, done.returncode
    return data


def checks(report, section: str | None = None) -> dict:
    return {(c["section"], c["name"]): c for c in report["checks"] if section in (None, c["section"])}


def test_every_check_passed_except_the_known_failures(report):
    failed = {key for key, c in checks(report).items() if c["passed"] is False}
    assert failed - KNOWN_FAILURES == set(), [checks(report)[k]["error"] for k in failed - KNOWN_FAILURES]
    assert KNOWN_FAILURES - failed == set(), "fixed: remove these from KNOWN_FAILURES"
    assert report["returncode"] == (1 if failed else 0)
    assert "| section | check | result |" in report["stdout"]


def test_correctness_numbers_per_architecture(report):
    for arch in ARCHES:
        found = checks(report, arch)
        same = found[(arch, "fp32 embeddings: device == CPU")]["numbers"]
        assert same["max_rel_error"] <= 1e-4 and same["spread_across_texts"] > 1e-3
        assert found[(arch, "batch composition invariance (device)")]["numbers"]["max_rel_error"] <= 1e-4
        assert found[(arch, "bf16 close to fp32 (device)")]["numbers"]["min_cosine"] >= 0.99
        losses = found[(arch, "first-step losses: device == CPU (fp32, in-process)")]["numbers"]
        assert losses["max_rel_error"] <= 1e-4
        assert all(losses[f"{k}_cpu"] > 0 for k in ("pretrain_kl", "unsupervised_simcse", "supervised_infonce"))
        cached = found[(arch, "GradCache == InfoNCE (device)")]["numbers"]
        assert cached["max_rel_error"] <= 1e-4 and cached["loss"] > 0
    assert checks(report)[("llama", "gradient checkpointing: same gradients, stage 3 GradCache")]["passed"]


def test_recipes_ran_every_stage(report):
    found = checks(report, "recipes")
    for stage in ("pretrain", "unsupervised", "supervised"):
        row = next(c for (_, name), c in found.items() if name.startswith(f"{stage}: losses of steps 1-2"))
        assert row["passed"] and len(row["numbers"]["cpu"]) == 2 and all(math.isfinite(x) for x in row["numbers"]["cpu"])
    assert any("FSDP" in name and c["numbers"].get("skipped") for (_, name), c in found.items())


def test_speed_sections_measured(report):
    found = {name: c["numbers"] for (section, name), c in checks(report, "speed").items() if c["passed"] is not False}
    assert found["matmul rate (float32, 512^3)"]["tflops"] > 0
    step = found["stage-1 KL step, batch 2 x 63 tokens, k 8, no checkpointing"]
    assert step["s_per_step"] > 0 and step["tokens_per_s"] > 0 and 0 < step["mfu"] and step["plan_gib"] > 0
    assert any("_scaled_dot_product" in op for op in
               found["SDPA op run by the encoder forward (bidirectional 4-D mask)"]["ops"])
    backends = next(v for k, v in found.items() if k.startswith("SDPA backends accepting"))
    assert isinstance(backends["MATH"], float)  # the math backend takes any mask
    kernel = found["SDPA default kernel: bidirectional 4-D mask vs causal"]
    assert kernel["default_ops"] and kernel["bidirectional_over_is_causal"] > 0
    stage3 = next(v for k, v in found.items() if k.startswith("stage-3 GradCache step"))
    assert stage3["s_per_step"] > 0 and math.isfinite(stage3["loss"])
    encode = next(v for k, v in found.items() if k.startswith("encode tokens/s"))
    assert all(encode[f"{name}_tokens_per_s"] > 0 for name in ("llm2comp", "sentence_transformers", "bare_transformers"))
    assert report["env"]["pyproject_transformers_lower_bound"] and report["env"]["transformers"]
