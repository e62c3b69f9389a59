"""Nothing a user owns is ever deleted: saving, training and their output folders."""

from __future__ import annotations

import os

import numpy as np
import pytest

from llm2comp import LLM2Comp
from llm2comp.errors import OutputError

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
