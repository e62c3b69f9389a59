"""A resumed (or reused) run is the run that was started; a killed write leaves nothing behind."""

import json
import os
import stat

import pytest

from llm2comp import LLM2Comp
from llm2comp.atomic import atomic_directory, atomic_write_bytes, remove_stale_temporaries
from llm2comp.errors import ResumeMismatch
from llm2comp.recipes import run_stage
from llm2comp.recipes.pretrain import run_pretrain
from llm2comp.training.checkpoint import list_checkpoints
from llm2comp.training.loop import check_resumable

from .training_helpers import tiny_stage_config, write_corpus


class Killed(Exception):
    pass


def kill_at(step_number):
    def callback(step, row):
        if step == step_number:
            raise Killed(step)
    return callback


def logged_steps(run_dir):
    return [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture
def no_model_load(monkeypatch):
    """Fails the test if a model is loaded: the checks must come first."""
    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the settings were checked")
    monkeypatch.setattr(LLM2Comp, "from_pretrained", refuse)


def test_resume_with_changed_settings_stops_before_any_step(tiny_llama_dir, tmp_path, monkeypatch):
    corpus, run = write_corpus(tmp_path / "c.txt"), tmp_path / "run"
    cfg = tiny_stage_config(tiny_llama_dir, corpus, run)
    with pytest.raises(Killed):
        run_pretrain(cfg, callbacks=[kill_at(3)])  # checkpoint at step 2, killed during step 3
    assert [p.name for p in list_checkpoints(run / "checkpoints")] == ["step-000002"]

    with monkeypatch.context() as patch:
        patch.setattr(LLM2Comp, "from_pretrained", lambda *a, **k: pytest.fail("model loaded before the check"))
        for changed in ({"lr": 1e-3}, {"batch_size": 2}, {"objective": "nll"}, {"seed": 1}):
            with pytest.raises(ResumeMismatch, match=rf"{next(iter(changed))}: .* then, .* now.*another output_dir"):
                run_stage(tiny_stage_config(tiny_llama_dir, corpus, run, **changed))
        with pytest.raises(ResumeMismatch, match="max_steps: 6 then, 8 now.*--accept-resume-changes"):
            run_stage(tiny_stage_config(tiny_llama_dir, corpus, run, max_steps=8))  # harmless, but not asked for
    assert logged_steps(run) == [1, 2] and not (run / "model").exists()  # nothing was trained meanwhile
    with pytest.raises(ResumeMismatch, match="made by 1 process"):
        check_resumable(list_checkpoints(run / "checkpoints")[-1], cfg.to_dict(), world_size=2)

    # a harmless change the caller asks for: the run is extended from its checkpoint
    extended = tiny_stage_config(tiny_llama_dir, corpus, run, max_steps=8, accept_resume_changes=True)
    model_dir = run_stage(extended)
    assert logged_steps(run) == [1, 2, 3, 4, 5, 6, 7, 8]
    # a finished stage is reused only with the settings that made it
    with pytest.raises(ResumeMismatch, match=r"run/model was made with other settings \(seed: 0 then, 5 now"):
        run_stage(tiny_stage_config(tiny_llama_dir, corpus, run, max_steps=8, seed=5))
    assert run_stage(tiny_stage_config(tiny_llama_dir, corpus, run, max_steps=8)) == model_dir


def test_the_model_folder_appears_with_its_training_config(tiny_llama_dir, tmp_path, monkeypatch):
    """Killed right after the final save: the folder that appeared is complete (it used to lack
    training_config.yaml for good, and was then reused as finished)."""
    cfg = tiny_stage_config(tiny_llama_dir, write_corpus(tmp_path / "c.txt"), tmp_path / "run", max_steps=2)
    real_save = LLM2Comp.save

    def save_then_die(self, path, *args, **kwargs):
        real_save(self, path, *args, **kwargs)
        raise Killed("after the rename")

    with monkeypatch.context() as patch:
        patch.setattr(LLM2Comp, "save", save_then_die)
        with pytest.raises(Killed):
            run_pretrain(cfg)
    saved = (tmp_path / "run" / "model" / "training_config.yaml").read_text()
    assert "max_steps: 2" in saved and "data_stats:" in saved
    # a folder without it (left by an older version) is not taken as finished: the run re-saves it
    (tmp_path / "run" / "model" / "training_config.yaml").unlink()
    assert run_pretrain(cfg) == tmp_path / "run" / "model"
    assert (tmp_path / "run" / "model" / "training_config.yaml").is_file()
    assert logged_steps(tmp_path / "run") == [1, 2]  # no step trained twice


def test_starting_over_removes_the_old_checkpoints(tiny_llama_dir, tmp_path):
    corpus, run = write_corpus(tmp_path / "c.txt"), tmp_path / "run"
    run_pretrain(tiny_stage_config(tiny_llama_dir, corpus, run))  # checkpoints 4 and 6 (keep_last 2)
    run_pretrain(tiny_stage_config(tiny_llama_dir, corpus, run, max_steps=2, lr=1e-3), resume=False)
    # before: step-000002 was pruned as the oldest and the old run's 4 and 6 stayed, to be resumed later
    assert [p.name for p in list_checkpoints(run / "checkpoints")] == ["step-000002"]
    assert logged_steps(run) == [1, 2]


def test_stale_temporaries_of_killed_writes_are_cleaned(tiny_llama_dir, tmp_path):
    run = tmp_path / "run"
    stale = [run / "checkpoints" / ".step-000004.tmp-k1lled00", run / ".model.tmp-k1lled00"]
    for folder in stale:
        (folder / "sub").mkdir(parents=True)
    (run / ".metrics.jsonl.k1lled00").write_text("half")
    run_pretrain(tiny_stage_config(tiny_llama_dir, write_corpus(tmp_path / "c.txt"), run, max_steps=2))
    assert not any(path.exists() for path in stale) and not (run / ".metrics.jsonl.k1lled00").exists()
    assert sorted(p.name for p in run.iterdir() if p.name.startswith(".")) == []


def test_a_write_killed_between_its_two_renames_keeps_the_previous_version(tmp_path):
    (tmp_path / ".model.old-k1lled00" / "model").mkdir(parents=True)  # the old version, moved aside
    (tmp_path / ".model.old-k1lled00" / "model" / "weights").write_text("previous")
    (tmp_path / ".model.tmp-k1lled01").mkdir()  # the new one, never renamed into place
    (tmp_path / "unrelated.tmp-k1lled00").write_text("not ours")
    remove_stale_temporaries(tmp_path, "model")
    assert (tmp_path / "model" / "weights").read_text() == "previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model", "unrelated.tmp-k1lled00"]


def test_written_outputs_get_ordinary_file_modes(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write_bytes(tmp_path / "out.npy", b"x")
        assert stat.S_IMODE((tmp_path / "out.npy").stat().st_mode) == 0o644  # was 0600 (mkstemp's)
        os.chmod(tmp_path / "out.npy", 0o640)
        atomic_write_bytes(tmp_path / "out.npy", b"y")  # a rewrite keeps the mode the file had
        assert stat.S_IMODE((tmp_path / "out.npy").stat().st_mode) == 0o640
        with atomic_directory(tmp_path / "folder") as tmp:
            (tmp / "f").write_text("z")
        assert stat.S_IMODE((tmp_path / "folder").stat().st_mode) == 0o755
    finally:
        os.umask(old)


def test_an_interrupted_restart_resumes_on_a_plain_rerun(tiny_llama_dir, tmp_path):
    """--no-resume, Ctrl-C, then the command without it: the restart's checkpoints resume (before: the
    old model/ was kept, so the rerun refused them, and the only way out offered discarded them)."""
    from llm2comp.recipes.common import check_output_dir, finished

    corpus, run = write_corpus(tmp_path / "c.txt"), tmp_path / "run"
    run_pretrain(tiny_stage_config(tiny_llama_dir, corpus, run))  # a finished run: model/, lr 5e-3
    restart = tiny_stage_config(tiny_llama_dir, corpus, run, lr=1e-3)

    def interrupt(step, row):
        if step == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_pretrain(restart, resume=False, callbacks=[interrupt])
    (previous,) = run.glob("model.previous-*")  # moved aside, never deleted
    assert "lr: 0.005" in (previous / "training_config.yaml").read_text() and not (run / "model").exists()
    assert [p.name for p in list_checkpoints(run / "checkpoints")] == ["step-000002"]
    assert not finished(restart)
    check_output_dir(restart, resume=True)  # consistent: the rerun may resume

    # the state an older version left (the old model kept beside the restart's checkpoints) resumes too
    previous.rename(run / "model")
    assert run_stage(restart) == run / "model"
    assert logged_steps(run) == [1, 2, 3, 4, 5, 6]
    assert "lr: 0.001" in (run / "model" / "training_config.yaml").read_text()
    (previous,) = run.glob("model.previous-*")
    assert "lr: 0.005" in (previous / "training_config.yaml").read_text()
