"""Bad files and arguments get one-line errors that name them; bugs keep their traceback."""

import json

import numpy as np
import pytest

from llm2comp import LLM2Comp, LoraSettings
from llm2comp.cli import encode_cmd
from llm2comp.cli.main import main
from llm2comp.errors import CorruptFile, InvalidSetting, InvalidType
from llm2comp.inputs import normalize_inputs
from llm2comp.training.checkpoint import list_checkpoints, load_checkpoint

from .training_helpers import tiny_stage_config, write_corpus


def truncate(path, keep_fraction=0.5):
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * keep_fraction)])


def test_a_truncated_safetensors_file_names_itself(tiny_llama_dir, tmp_path):
    model = LLM2Comp.from_pretrained(tiny_llama_dir, num_memory_tokens=2, max_length=32)
    model.add_lora(LoraSettings(r=2, alpha=4))
    model.save(tmp_path / "adapters")
    model.save(tmp_path / "merged", merge=True)
    for folder, file in ((tmp_path / "adapters", "memory_tokens.safetensors"),
                         (tmp_path / "adapters", "adapters/00/adapter_model.safetensors"),
                         (tmp_path / "merged", "backbone/model.safetensors")):
        intact = (folder / file).read_bytes()
        truncate(folder / file)  # before: "Error while deserializing header: ..." and no file name
        with pytest.raises(CorruptFile, match=rf"{folder / file}: not a readable safetensors file .*truncated"):
            LLM2Comp.from_pretrained(folder)
        (folder / file).write_bytes(intact)


def test_a_truncated_checkpoint_names_itself(tiny_llama_dir, tmp_path):
    from llm2comp.recipes.pretrain import run_pretrain

    run_pretrain(tiny_stage_config(tiny_llama_dir, write_corpus(tmp_path / "c.txt"), tmp_path / "run", max_steps=2))
    checkpoint = list_checkpoints(tmp_path / "run" / "checkpoints")[-1]
    truncate(checkpoint / "trainable.safetensors", 0.9)
    with pytest.raises(CorruptFile, match="trainable.safetensors: not a readable safetensors file"):
        load_checkpoint(checkpoint, model=None, optimizer=None, scheduler=None)


def test_command_line_numbers_must_be_positive(capsys):
    for command in (["search", "--top", "0"], ["search", "--top", "-1"], ["encode", "--input", "x", "--output", "y",
                                                                          "--batch-size", "1.5"]):
        with pytest.raises(SystemExit) as stop:  # argparse: before anything loads
            main(command)
        assert stop.value.code == 2
        err = capsys.readouterr().err
        assert "must be >= 1" in err or "expected a whole number >= 1, got '1.5'" in err


def test_batch_size_must_be_a_positive_whole_number(tiny_encoder):
    for bad in (1.5, 0, "8", True):
        with pytest.raises(InvalidSetting, match="batch_size must be a whole number >= 1"):
            tiny_encoder.encode(["a", "b", "c"], batch_size=bad)


def test_a_top_level_tuple_is_refused_not_guessed(tiny_encoder):
    # before: ("doc a", "doc b") gave ONE vector, for the text "doc a: doc b"
    for texts in (("doc a", "doc b"), ("Retrieve passages", "what is a river?"), ("a", "b", "c"), ()):
        with pytest.raises(InvalidType, match=r"texts is a tuple .*ambiguous.*pass a list"):
            tiny_encoder.encode(texts)
    with pytest.raises(InvalidType, match="pass a list"):
        tiny_encoder.encode_query(("doc a", "doc b"))
    # the explicit spellings of both readings work
    assert tiny_encoder.encode(["doc a", "doc b"]).shape == (2, tiny_encoder.hidden_size)
    pair = tiny_encoder.encode([("Retrieve passages", "what is a river?")])
    np.testing.assert_allclose(pair[0], tiny_encoder.encode("what is a river?", instruction="Retrieve passages"),
                               atol=1e-6)
    with pytest.raises(InvalidType, match=r"texts\[0\]\[0\] \(instruction\) must be a str, got int"):
        normalize_inputs([(0, "text")])


def test_a_non_string_instruction_names_file_and_line(tmp_path, capsys):
    (tmp_path / "q.jsonl").write_text('{"text": "fine"}\n{"text": "hello", "instruction": 5}\n')
    assert main(["encode", "--input", str(tmp_path / "q.jsonl"), "--output", str(tmp_path / "o.npy")]) == 2
    assert "q.jsonl:2: field 'instruction' must be a string (or absent), got int" in capsys.readouterr().err


def test_the_command_line_prints_user_errors_and_keeps_tracebacks_of_bugs(tmp_path, monkeypatch, capsys):
    (tmp_path / "in.txt").write_text("text\n")
    args = ["encode", "--input", str(tmp_path / "in.txt"), "--output", str(tmp_path / "o.npy")]

    def bug(parsed):
        return json.loads(None)  # a programming error: TypeError

    monkeypatch.setattr(encode_cmd, "run", bug)
    with pytest.raises(TypeError):  # before: printed as "error: ..." with exit status 2, traceback lost
        main(args)

    def user_error(parsed):
        raise InvalidSetting("a user error")

    monkeypatch.setattr(encode_cmd, "run", user_error)
    assert main(args) == 2 and capsys.readouterr().err == "llm2comp encode: error: a user error\n"


def test_api_argument_errors_are_the_projects_own(tiny_encoder):
    # before: plain ValueErrors, which the CLI and server would treat as bugs
    with pytest.raises(InvalidSetting, match=r"padding_side must be 'right' or 'left', got 'middle'"):
        tiny_encoder.encode(["a"], padding_side="middle")
    with pytest.raises(InvalidSetting, match=r"documents take no instruction; instructions go on queries only"):
        tiny_encoder.encode_document(["a"], instruction="Find")
    with pytest.raises(InvalidSetting, match=r"documents take no instruction; pass plain strings"):
        tiny_encoder.encode_document([("Find", "a")])
