"""`llm2comp study` end to end on a tiny model: arms on the same texts, fractions scored, gap logged,
probe written, everything reused on a rerun."""

import json

import pytest
import yaml

from llm2comp.cli.main import main
from llm2comp.recipes.study import StudyConfig, load_study_config, plan_runs

from .training_helpers import write_corpus

pytestmark = pytest.mark.slow  # a study end to end


def _study(tmp_path, tiny_llama_dir) -> dict:
    return {
        "output_dir": str(tmp_path / "study"),
        "base": {"model": str(tiny_llama_dir), "num_memory_tokens": 2, "max_length": 64,
                 "lora": {"r": 4, "alpha": 8, "dropout": 0.0}, "batch_size": 2, "warmup_steps": 0,
                 "max_steps": 4, "save_every": 0, "lr": 1e-3, "max_tokens": 60, "held_out_texts": 4,
                 "data": {"type": "text", "path": str(write_corpus(tmp_path / "c.txt"))}},
        "arms": {"kl": {"objective": "kl"}, "kl_align": {"objective": "kl", "alignment_weight": 1.0}},
        "seeds": [0, 1], "repeat": ["kl"], "fractions": [0.5, 1.0], "max_items": 8, "probe_texts": 2,
        "floors": ["mean"],
        "probe_tokens": 4,
    }


def test_plan_gives_every_arm_the_same_texts_budget_and_snapshots(tmp_path, tiny_llama_dir):
    runs = plan_runs(StudyConfig(**_study(tmp_path, tiny_llama_dir)))
    assert [r.name for r in runs] == ["kl-s0", "kl-s1", "kl_align-s0"]
    assert {r.config.loop.max_steps for r in runs} == {4} and {str(r.config.data) for r in runs} == {
        str(runs[0].config.data)}
    assert all(r.config.snapshot_steps == [2] and r.config.gap_every == 0 for r in runs)
    assert runs[2].config.terms.alignment_weight == 1.0 and runs[0].config.terms.alignment_weight == 0.0
    with pytest.raises(ValueError, match="unknown arm"):
        StudyConfig(arms={"kl": {}}, repeat=["nll"])
    bad = _study(tmp_path, tiny_llama_dir)
    bad["arms"]["kl"]["objectve"] = "kl"
    with pytest.raises(ValueError, match="objectve"):
        plan_runs(StudyConfig(**bad))


def test_study_end_to_end_and_reuse(tmp_path, tiny_llama_dir, capsys):
    study = _study(tmp_path, tiny_llama_dir)
    del study["arms"]["kl_align"]  # planned above; one arm keeps the end-to-end run short
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(study))
    assert main(["study", "--config", str(tmp_path / "study.yaml")]) == 0
    out = capsys.readouterr().out
    assert "# Pretext study" in out and "untrained backbone, mean pooling" in out and "kl-s1" in out
    report = json.loads((tmp_path / "study" / "results.json").read_text())
    run = report["runs"]["kl-s1"]
    assert [p["step"] for p in run["points"]] == [2, 4] and [p["samples"] for p in run["points"]] == [4, 8]
    for point in run["points"]:
        gap = point["memory_gap"]
        assert gap["gap"] == pytest.approx(gap["other"] - gap["own"])
        assert 0 <= point["average"] <= 1
    assert len(run["probe"]) == 2 and all(isinstance(row["decoded"], str) and row["expected"] for row in run["probe"])
    assert set(report["floors"]) == {"mean"}
    assert (tmp_path / "study" / "score_vs_samples.png").is_file()
    assert main(["study", "--config", str(tmp_path / "study.yaml")]) == 0  # everything reused
    rerun = capsys.readouterr()
    assert "train:" not in rerun.err
    evaluations = len(report["floors"]) + sum(len(entry["points"]) for entry in report["runs"].values())
    assert rerun.out.count("(same model, suite and settings)") == evaluations and "evaluating again" not in rerun.out


def test_study_config_rejects_unknown_keys(tmp_path):
    (tmp_path / "s.yaml").write_text("arms: {kl: {}}\nseed: 3\n")
    with pytest.raises(ValueError, match="unknown study key"):
        load_study_config(tmp_path / "s.yaml")


def test_memory_gap_is_logged_every_gap_every_steps_and_at_snapshots(tmp_path, tiny_llama_dir, monkeypatch):
    # regression: the study once set gap_every to gcd(snapshot steps, gap_every), which is 1 for
    # 125 steps at fractions 0.5 / 1.0 (step 63): the gap was measured at every step, 6x the run time
    import llm2comp.training.memory_probe as memory_probe
    from llm2comp.recipes.pretrain import gap_logger

    config = _study(tmp_path, tiny_llama_dir)
    config["base"].update(max_steps=125, gap_every=25)
    (run,) = [r for r in plan_runs(StudyConfig(**config)) if r.name == "kl-s0"]
    assert run.config.gap_every == 25 and run.config.snapshot_steps == [63]
    measured = []
    monkeypatch.setattr(memory_probe, "memory_gap", lambda *a, **k: measured.append(1) or {
        "gap": 0.0, "own": 1.0, "other": 1.0, "gap_first": 0.0})
    callback = gap_logger(None, ["held"], run.config)
    logged = []
    for step in range(1, 126):
        row = {}
        callback(step, row)
        if row:
            logged.append(step)
    assert logged == [25, 50, 63, 75, 100, 125] and len(measured) == 6
