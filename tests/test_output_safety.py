"""Nothing a user owns is ever deleted: saving, training and their output folders."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
from pathlib import Path

import numpy as np
import pytest

from llm2comp import LLM2Comp
from llm2comp.errors import ConfigError, OutputError, OutputInUse
from llm2comp.recipes import run_stage
from llm2comp.recipes.pretrain import run_pretrain
from llm2comp.training.run_lock import LOCK_NAME

from .training_helpers import tiny_stage_config, write_corpus

TEXTS = ["The cat sat on the mat.", "Memory tokens compress text."]


@pytest.fixture
def small(tiny_llama_dir):
    return LLM2Comp.from_pretrained(tiny_llama_dir, num_memory_tokens=2, max_length=32)


def user_folder(path):
    path.mkdir()
    (path / "thesis.tex").write_text("\\section{Years of work}")
    (path / "sub").mkdir()
    (path / "sub" / "d.csv").write_text("a,b\n1,2\n")
    return path


def test_saving_never_replaces_a_folder_that_is_not_a_model(small, tmp_path):
    mine = user_folder(tmp_path / "mine")
    with pytest.raises(OutputError, match=r"mine is a folder that is not an llm2comp model folder \(it holds "
                                          r"sub/d.csv, thesis.tex\).*another path, or pass overwrite=True"):
        small.save(mine)  # before: both files were deleted with the folder
    assert (mine / "thesis.tex").is_file() and (mine / "sub" / "d.csv").is_file()
    assert sorted(p.name for p in mine.iterdir()) == ["sub", "thesis.tex"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]
    (tmp_path / "empty").mkdir()
    small.save(tmp_path / "empty")  # an empty folder is replaced
    assert (tmp_path / "empty" / "llm2comp_config.json").is_file()


def test_overwrite_writes_into_the_folder_and_keeps_the_users_files(small, tmp_path):
    mine = user_folder(tmp_path / "mine")
    small.save(mine, overwrite=True)
    assert (mine / "thesis.tex").read_text() == "\\section{Years of work}"
    assert (mine / "sub" / "d.csv").read_text() == "a,b\n1,2\n"
    np.testing.assert_allclose(LLM2Comp.from_pretrained(mine).encode(TEXTS), small.encode(TEXTS), atol=1e-5)
    # now a model folder with extra files: a plain save refuses (it would delete them) ...
    with pytest.raises(OutputError, match=r"model folder that also holds files a model folder does not "
                                          r"\(sub/d.csv, thesis.tex\)"):
        small.save(mine)
    # ... overwrite=True replaces the old model's own files and keeps the others
    (mine / "adapters").mkdir()
    (mine / "adapters" / "00").mkdir()
    (mine / "adapters" / "00" / "adapter_model.safetensors").write_bytes(b"an older stage")
    small.save(mine, overwrite=True)
    assert not (mine / "adapters").exists() and (mine / "thesis.tex").is_file() and (mine / "sub" / "d.csv").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]


def test_a_file_is_never_replaced_by_a_model_folder(small, tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes")
    for overwrite in (False, True):
        with pytest.raises(OutputError, match="notes.txt: it is a file and a model is a folder"):
            small.save(notes, overwrite=overwrite)  # before: the file was replaced by a folder
    assert notes.read_text() == "my notes"


def test_saving_to_the_working_folder_is_refused_by_name(small, tmp_path, monkeypatch):
    small.save(tmp_path / "m")
    monkeypatch.chdir(tmp_path / "m")
    for target in (".", tmp_path / "m", tmp_path / "m" / ".."):
        with pytest.raises(OutputError, match="current working folder of this process"):
            small.save(target)  # before: raw OSError [Errno 16] and a stray `..old-XXXX/` folder
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]
    assert os.getcwd() == str(tmp_path / "m") and (tmp_path / "m" / "llm2comp_config.json").is_file()
    monkeypatch.chdir(tmp_path)
    small.save("m")  # from outside it: replaced as usual
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


# ------------------------------------------------------------------------------------------ training
def _no_model_load(monkeypatch):
    monkeypatch.setattr(LLM2Comp, "from_pretrained", lambda *a, **k: pytest.fail("model loaded before the check"))


def _lock(folder, pid, host=None):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / LOCK_NAME).write_text(json.dumps({"pid": pid, "host": host or socket.gethostname(),
                                                "started": "2026-01-01 00:00:00"}))


def test_a_second_run_into_one_output_dir_stops_at_once(tiny_llama_dir, tmp_path, monkeypatch):
    corpus, run = write_corpus(tmp_path / "c.txt"), tmp_path / "run"
    cfg = tiny_stage_config(tiny_llama_dir, corpus, run, max_steps=2)
    other = subprocess.Popen(["sleep", "60"])  # a live process holding the lock, as a first run would
    try:
        _lock(run, other.pid)
        with monkeypatch.context() as patch:
            _no_model_load(patch)
            for start in (run_stage, run_pretrain):  # before: both wrote checkpoints into one folder
                with pytest.raises(OutputInUse, match=rf"another run is using .*run \(pid {other.pid} on "
                                                      rf"{socket.gethostname()}, since 2026-01-01"):
                    start(cfg)
        assert sorted(p.name for p in run.iterdir()) == [LOCK_NAME]  # nothing written, the lock left alone
    finally:
        other.kill()
        other.wait()
    # its process is gone: the lock is stale and is taken over; released when the run ends
    assert run_stage(cfg) == run / "model" and not (run / LOCK_NAME).exists()
    # released on an exception too (Ctrl-C included)
    cfg = tiny_stage_config(tiny_llama_dir, corpus, tmp_path / "run2", max_steps=2)
    with pytest.raises(KeyboardInterrupt):
        run_stage(cfg, callbacks=[_interrupt_at(1)])
    assert not (tmp_path / "run2" / LOCK_NAME).exists()


def test_a_lock_from_another_host_or_an_unreadable_one_is_refused(tiny_llama_dir, tmp_path, monkeypatch):
    _no_model_load(monkeypatch)
    run = tmp_path / "run"
    cfg = tiny_stage_config(tiny_llama_dir, write_corpus(tmp_path / "c.txt"), run)
    _lock(run, 4242, host="gpu-node-7")
    with pytest.raises(OutputInUse, match=r"pid 4242 on gpu-node-7.*if no run is using it any more, delete"):
        run_stage(cfg)
    (run / LOCK_NAME).write_text("")
    with pytest.raises(OutputInUse, match=r"lock .* cannot be read"):
        run_stage(cfg)
    assert sorted(p.name for p in run.iterdir()) == [LOCK_NAME]


def _interrupt_at(step_number):
    def callback(step, row):
        if step == step_number:
            raise KeyboardInterrupt
    return callback


def test_a_user_file_in_the_model_folder_stops_the_run_before_any_work(tiny_llama_dir, tmp_path, monkeypatch):
    run = tmp_path / "run"
    (run / "model").mkdir(parents=True)
    (run / "model" / "notes.txt").write_text("mine")
    cfg = tiny_stage_config(tiny_llama_dir, write_corpus(tmp_path / "c.txt"), run, max_steps=2)
    with monkeypatch.context() as patch:
        _no_model_load(patch)
        with pytest.raises(OutputError, match=r"run/model is a folder that is not an llm2comp model folder \(it "
                                              r"holds notes.txt\).*move those files out of it"):
            run_stage(cfg)  # before: trained, then replaced the folder and deleted notes.txt
    assert (run / "model" / "notes.txt").read_text() == "mine"
    # starting over moves the folder aside, whole, and never deletes it
    run_stage(cfg, resume=False)
    (previous,) = run.glob("model.previous-*")
    assert (previous / "notes.txt").read_text() == "mine" and (run / "model" / "llm2comp_config.json").is_file()


def test_someone_elses_metrics_file_is_named_and_kept(tiny_llama_dir, tmp_path, monkeypatch):
    _no_model_load(monkeypatch)
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text('{"step": 1, "loss": 2.0}\n{"epoch": 3, "acc": 0.9}\nnot json\n')
    cfg = tiny_stage_config(tiny_llama_dir, write_corpus(tmp_path / "c.txt"), run)
    for resume in (True, False):  # before: a raw JSONDecodeError (resume), or the file silently rewritten
        with pytest.raises(OutputError, match=r"metrics.jsonl:2: not a training-log row.*move it away"):
            run_stage(cfg, resume=resume)
    (run / "metrics.jsonl").write_text("not json\n")
    with pytest.raises(OutputError, match=r"metrics.jsonl:1: not a JSON line of a training log"):
        run_stage(cfg)
    assert (run / "metrics.jsonl").read_text() == "not json\n"


def test_the_output_dir_may_not_be_the_input_model_folder(tiny_llama_dir, tmp_path, monkeypatch):
    _no_model_load(monkeypatch)
    base = shutil.copytree(tiny_llama_dir, tmp_path / "stage1" / "model")
    before = sorted(p.name for p in base.iterdir())
    corpus = write_corpus(tmp_path / "c.txt")
    for output, relation in ((base, "is"), (base / "run", "is inside"), (tmp_path / "stage1", "contains")):
        cfg = tiny_stage_config(base, corpus, output)
        with pytest.raises(ConfigError, match=rf"output_dir .* {relation} the input model folder"):
            run_stage(cfg)  # before: checkpoints written into the model folder (or over it)
    assert sorted(p.name for p in base.iterdir()) == before
    assert sorted(p.name for p in (tmp_path / "stage1").iterdir()) == ["model"]


# ------------------------------------------------------------------------------------------ Ctrl-C
def test_ctrl_c_prints_one_line_and_exits_130(tmp_path, monkeypatch, capsys):
    import llm2comp.recipes
    from llm2comp.cli.main import main

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(llm2comp.recipes, "run_stage", interrupted)
    (tmp_path / "c.yaml").write_text(f"stage: pretrain\noutput_dir: {tmp_path / 'run'}\n")
    assert main(["train", "--config", str(tmp_path / "c.yaml")]) == 130  # before: a KeyboardInterrupt traceback
    assert capsys.readouterr().err.strip() == "llm2comp train: interrupted; rerun the same command to resume"
    monkeypatch.setattr("llm2comp.models.loading.load_for_use", interrupted)
    assert main(["search"]) == 130
    assert capsys.readouterr().err.strip() == "llm2comp search: interrupted"


@pytest.mark.slow
def test_sigint_to_train_stops_cleanly_and_the_rerun_resumes(tiny_llama_dir, tmp_path):
    import signal
    import sys
    import time

    import yaml

    from llm2comp.training.checkpoint import list_checkpoints

    run = tmp_path / "run"
    cfg = tiny_stage_config(tiny_llama_dir, write_corpus(tmp_path / "c.txt"), run, max_steps=500, save_every=1,
                            keep_last=2)
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg.to_dict()))
    src = Path(__file__).resolve().parents[1] / "src"
    env = {**os.environ, "PYTHONPATH": str(src), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "llm2comp", "train", "--config", str(tmp_path / "c.yaml")]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while not list_checkpoints(run / "checkpoints") and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130, err[-2000:]
    assert "Traceback" not in err  # before: a KeyboardInterrupt traceback
    assert "llm2comp train: interrupted; rerun the same command to resume" in err.splitlines()
    assert not (run / LOCK_NAME).exists()  # released
    done = list_checkpoints(run / "checkpoints")
    assert done and sorted(p.name for p in (run / "checkpoints").iterdir()) == [p.name for p in done]  # no temporaries
    step = int(done[-1].name.split("-")[1])
    from llm2comp.cli.main import main

    assert main(["train", "--config", str(tmp_path / "c.yaml"), "--max_steps", str(step + 1),
                 "--accept-resume-changes"]) == 0
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, step + 2))  # resumed where it stopped, nothing trained twice
