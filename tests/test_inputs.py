"""Bad input to `encode` and to model loading gets an error that names the problem."""

import pytest

from llm2comp import LLM2Comp
from llm2comp.inputs import normalize_inputs


def test_valid_inputs_normalise():
    assert normalize_inputs("hi") == ([(None, "hi")], True)
    assert normalize_inputs(["a", ("inst", "b"), ["", "c"]], instruction="q") == (
        [("q", "a"), ("inst", "b"), (None, "c")], False)


@pytest.mark.parametrize(
    "texts, error, match",
    [
        (None, TypeError, "texts is None"),
        (42, TypeError, "got int"),
        (["ok", None], TypeError, r"texts\[1\] must be a str"),
        (["ok", 3.5], TypeError, r"texts\[1\]"),
        (["ok", "   "], ValueError, r"texts\[1\] is empty"),
        ([""], ValueError, r"texts\[0\] is empty"),
        ("", ValueError, "empty"),
        ([("inst", "a", "b")], ValueError, r"texts\[0\] must be an \(instruction, text\) pair"),
        ([("inst", 5)], TypeError, r"texts\[0\]\[1\]"),
        ([(5, "text")], TypeError, r"texts\[0\]\[0\] \(instruction\)"),
        ([("inst", " ")], ValueError, r"texts\[0\]\[1\] \(text\) is empty"),
        (["ab\ud800cd"], ValueError, r"texts\[0\] is not valid Unicode text: '\\ud800' at character 2"),
        (["ok", "x\udfff"], ValueError, r"texts\[1\] is not valid Unicode text"),
        ("ab\ud800cd", ValueError, r"text is not valid Unicode text.*lone surrogate"),
        ([("q\ud800", "text")], ValueError, r"texts\[0\]\[0\] \(instruction\) is not valid Unicode"),
        ([("query", "t\ud800")], ValueError, r"texts\[0\]\[1\] \(text\) is not valid Unicode"),
    ],
)
def test_bad_texts_name_the_index(texts, error, match):
    with pytest.raises(error, match=match):
        normalize_inputs(texts)


def test_bad_instruction_and_batch_size(tiny_encoder):
    with pytest.raises(ValueError, match="instruction is empty"):
        tiny_encoder.encode(["a"], instruction=" ")
    with pytest.raises(ValueError, match="batch_size"):
        tiny_encoder.encode(["a"], batch_size=0)


def test_unknown_model_and_folders_without_weights(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        LLM2Comp.from_pretrained("./no/such/folder")
    with pytest.raises(FileNotFoundError, match="no config.json"):
        LLM2Comp.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="holds no model weights"):
        LLM2Comp.from_pretrained(tmp_path)
    with pytest.raises(OSError, match="could not load a causal LM from 'no-such-org/no-such-model'"):
        LLM2Comp.from_pretrained("no-such-org/no-such-model")


def test_a_lone_surrogate_gets_a_named_error_not_the_tokenizers_type_error(tiny_encoder):
    from llm2comp.errors import InvalidSetting

    # before: TypeError "TextEncodeInput must be Union[...]" from the tokenizers library
    with pytest.raises(InvalidSetting, match=r"texts\[0\] is not valid Unicode text.*lone surrogate"):
        tiny_encoder.encode(["ab\ud800cd"])
    with pytest.raises(InvalidSetting, match=r"texts\[1\]\[0\] \(instruction\) is not valid Unicode"):
        tiny_encoder.encode(["fine", ("q\ud800", "text")])
    with pytest.raises(InvalidSetting, match=r"instruction is not valid Unicode"):
        tiny_encoder.encode_query(["fine"], instruction="q\ud800")
