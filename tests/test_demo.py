"""`llm2comp demo` end to end on a tiny model: trains, evaluates side by side, searches, reruns by reuse."""

import json

import pytest
import yaml

from llm2comp.cli.main import main

from .training_helpers import write_corpus, write_sentences

pytestmark = pytest.mark.slow  # the demo twice


def test_demo_runs_end_to_end_and_reuses_everything_on_rerun(tiny_llama_dir, tmp_path, capsys):
    config = {
        "model": str(tiny_llama_dir), "output_dir": str(tmp_path / "run"), "num_memory_tokens": 2,
        "max_length": 64, "lora": {"r": 4, "alpha": 8, "dropout": 0.0}, "batch_size": 4, "warmup_steps": 0,
        "max_steps": 2, "save_every": 0, "seed": 0,
        "stages": {
            "pretrain": {"data": {"type": "text", "path": str(write_corpus(tmp_path / "c.txt"))}, "max_tokens": 60},
            "unsupervised": {"data": {"type": "text", "path": str(write_sentences(tmp_path / "s.txt"))},
                             "attention_dropout": 0.2},
        },
    }
    (tmp_path / "demo.yaml").write_text(yaml.safe_dump(config))
    argv = ["demo", "--config", str(tmp_path / "demo.yaml"), "--eval-items", "12"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "| backbone (mean) | TF-IDF+SVD (256) | WordLlama (l2_supercat_256) | after pretrain | after unsupervised |" in out
    assert "| **average**" in out
    assert "query: " in out
    trained = json.loads((tmp_path / "run" / "eval" / "trained" / "results.json").read_text())
    after_pretrain = json.loads((tmp_path / "run" / "eval" / "after-pretrain" / "results.json").read_text())
    assert len(trained["tasks"]) == len(after_pretrain["tasks"]) >= 5
    assert trained["settings"]["max_items"] == 12 and trained["average"] != after_pretrain["average"]
    assert (tmp_path / "run" / "unsupervised" / "model" / "llm2comp_config.json").is_file()
    assert main(argv) == 0  # second run: stages and evaluations reused
    again = capsys.readouterr().out
    assert again.count("reusing") >= 3 and "train:" not in again
    assert "(same model, suite and settings)" in again and "evaluating again" not in again
    assert main([*argv[:-1], "8"]) == 0  # other settings: evaluated again, training still reused
    third = capsys.readouterr().out
    assert third.count("differ in: settings (max_items)") == 5 and "train:" not in third  # 3 + the two baselines
    assert json.loads((tmp_path / "run" / "eval" / "trained" / "results.json").read_text())["settings"]["max_items"] == 8


def test_demo_checks_its_arguments_before_any_work(tmp_path, monkeypatch, capsys):
    def no_work(*args, **kwargs):
        raise AssertionError("work started before the arguments were checked")

    monkeypatch.setattr("llm2comp.models.default_model.resolve_default_model", no_work)
    monkeypatch.setattr("llm2comp.recipes.pipeline.run_pipeline", no_work)
    with pytest.raises(SystemExit) as stopped:
        main(["demo", "--eval-items", "-3"])  # before: checked only after the whole training
    assert stopped.value.code == 2 and "--eval-items: must be >= 1, got -3" in capsys.readouterr().err
    (tmp_path / "bad.yaml").write_text("output_dir: out\nstages:\n  pretrain: {lr: .inf}\n")
    assert main(["demo", "--config", str(tmp_path / "bad.yaml")]) == 2
    assert "lr must be a finite number" in capsys.readouterr().err
