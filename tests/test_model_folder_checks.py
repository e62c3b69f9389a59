"""A model folder's files are checked at load: every wrong field, tokenizer, adapter or backbone is named.

Before these checks the same folders gave raw TypeError / IndexError / UnicodeDecodeError /
JSONDecodeError / RuntimeError, or loaded and gave wrong vectors (a template without `{text}`,
`embedding_dim` of another model, a sentence-transformers config with other prompts).
"""

import json
import shutil

import pytest
import torch

from llm2comp import LLM2Comp, LoraSettings
from llm2comp.cli.main import main
from llm2comp.errors import ConfigError, CorruptFile, InvalidSetting, MissingFile
from llm2comp.models import saving

from .conftest import save_tiny_model, tiny_config

CONFIG = "llm2comp_config.json"
ST_CONFIG = "config_sentence_transformers.json"


@pytest.fixture(scope="module")
def saved(tiny_llama_dir, tmp_path_factory):
    """A folder with an adapter, memory vectors (k = 2, d = 64) and trained input embeddings."""
    folder = tmp_path_factory.mktemp("checks") / "model"
    model = LLM2Comp.from_pretrained(tiny_llama_dir, num_memory_tokens=2, max_length=32)
    model.add_lora(LoraSettings(r=2, alpha=4, dropout=0.0))
    model.config.input_embeddings = True
    model.config.prompts = {"query": "Find the passage"}
    model.save(folder)
    return folder


@pytest.fixture
def folder(saved, tmp_path):
    copy = tmp_path / "model"
    shutil.copytree(saved, copy)
    return copy


@pytest.fixture
def no_backbone_load(monkeypatch):
    """Fail the test if the backbone's weights start loading: the check must come first."""
    def refuse(*args, **kwargs):
        raise AssertionError("the backbone was loaded before the folder was checked")

    monkeypatch.setattr(saving, "load_causal_lm", refuse)


def edit_json(path, **changes):
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


@pytest.mark.parametrize("changes, match", [
    ({"format_version": "4"}, r"field 'format_version' must be a whole number in \[1, 3\], got '4'"),
    ({"format_version": None}, r"field 'format_version' must be .*got None"),
    ({"max_length": "64"}, r"field 'max_length' must be a whole number >= 2, got '64'"),
    ({"max_length": 3}, r"field 'max_length' \(3\) leaves no room for text"),
    ({"num_memory_tokens": True}, r"field 'num_memory_tokens' must be a whole number >= 0, got True"),
    ({"pooling": "max"}, r"field 'pooling' must be one of"),
    ({"num_memory_tokens": 0}, r"field 'pooling'.*memory"),
    ({"instruction_template": "{0} {text}"}, r"field 'instruction_template'.*has the field \{0\}"),
    ({"instruction_template": "{instruction}"}, r"field 'instruction_template'.*\{text\} exactly once"),
    ({"instruction_template": "{text} / {text}"}, r"\{text\} exactly once"),
    ({"instruction_template": "{instruction}: {query}"}, r"has the field \{query\}"),
    ({"instruction_template": "{instruction}: {text"}, r"not a valid format string"),
    ({"instruction_template": 7}, r"field 'instruction_template' must be a string, got 7"),
    ({"prompts": {"query": 5}}, r"field 'prompts' must be an object mapping prompt names to instruction strings"),
    ({"prompts": ["query"]}, r"field 'prompts' must be an object"),
    ({"prompts": {"document": "Represent"}}, r"field 'prompts': prompts\['document'\].*documents take no"),
    ({"prompts": {"query": "a\ud800"}}, r"field 'prompts' must be"),
    ({"long_texts": "segments", "long_text_overlap": 40}, r"field 'long_text_overlap' \(40\) must be smaller"),
    ({"long_text_overlap": -1}, r"field 'long_text_overlap' must be a whole number >= 0"),
    ({"long_texts": "chunks"}, r"field 'long_texts' must be one of"),
    ({"embedding_dim": "64"}, r"field 'embedding_dim' must be a whole number >= 1 or null"),
    ({"adapters": ["../elsewhere"]}, r"field 'adapters' must be a list of folders inside the model folder"),
    ({"adapters": "adapters/00"}, r"field 'adapters' must be a list"),
    ({"input_embeddings": "yes"}, r"field 'input_embeddings' must be true or false"),
    ({"backbone": ""}, r"field 'backbone' must be a non-empty string"),
    ({"backbone_revision": 3}, r"field 'backbone_revision' must be a string or null"),
    ({"colour": "blue"}, r"unknown fields \['colour'\]"),
])
def test_every_config_field_is_checked(folder, no_backbone_load, changes, match):
    edit_json(folder / CONFIG, **changes)
    with pytest.raises((ConfigError, CorruptFile), match=rf"{folder / CONFIG}: .*{match}"):
        LLM2Comp.from_pretrained(folder)


def test_a_config_without_backbone_or_in_another_encoding_is_named(folder, no_backbone_load):
    data = json.loads((folder / CONFIG).read_text())
    del data["backbone"]
    (folder / CONFIG).write_text(json.dumps(data))
    with pytest.raises(ConfigError, match=r"llm2comp_config.json: field 'backbone' is missing"):
        LLM2Comp.from_pretrained(folder)
    (folder / CONFIG).write_bytes(json.dumps({"backbone": "caf\u00e9"}).encode("utf-16"))
    with pytest.raises(CorruptFile, match=r"llm2comp_config.json is not UTF-8 text"):  # before: UnicodeDecodeError
        LLM2Comp.from_pretrained(folder)


def test_upgrade_names_the_bad_field(folder, capsys):
    edit_json(folder / CONFIG, format_version="4")  # before: TypeError "'>' not supported between str and int"
    assert main(["upgrade", "--model", str(folder)]) == 2
    assert f"{folder / CONFIG}: field 'format_version' must be a whole number" in capsys.readouterr().err
    edit_json(folder / CONFIG, format_version=None)
    assert main(["upgrade", "--model", str(folder)]) == 2
    assert "got None" in capsys.readouterr().err
    edit_json(folder / CONFIG, format_version=3)
    assert main(["upgrade", "--model", str(folder)]) == 0
    assert "already at format 3" in capsys.readouterr().out


def test_embedding_dim_must_be_the_backbones_hidden_size(folder, no_backbone_load):
    edit_json(folder / CONFIG, embedding_dim=128)  # before: accepted, and silently reset to 64
    with pytest.raises(ConfigError, match=r"field 'embedding_dim' is 128, but the backbone .* has hidden size 64"):
        LLM2Comp.from_pretrained(folder)


def test_the_exact_window_budget_is_checked_once_the_tokenizer_is_known(folder):
    # max_length 32 - BOS - 2 memory tokens = 29 text tokens per window: overlap 29 cannot work
    edit_json(folder / CONFIG, long_texts="segments", long_text_overlap=29)
    with pytest.raises(ConfigError, match=r"field 'long_text_overlap' \(29\) must be smaller than a window's text "
                                          r"budget, 29 tokens"):
        LLM2Comp.from_pretrained(folder)
    edit_json(folder / CONFIG, long_text_overlap=28)
    assert LLM2Comp.from_pretrained(folder).encode("word " * 80).shape == (64,)


def test_a_template_must_keep_the_query_text(folder):
    edit_json(folder / CONFIG, instruction_template="Query: {text} ({instruction})")
    model = LLM2Comp.from_pretrained(folder)  # any order is fine, as long as the text is there
    assert model.config.instruction_template == "Query: {text} ({instruction})"
    edit_json(folder / CONFIG, instruction_template="{text}")  # instructions off: allowed
    LLM2Comp.from_pretrained(folder)


# ---------------------------------------------------------------- tokenizer, adapters, backbone


def test_a_broken_or_missing_tokenizer_is_named_before_the_backbone_loads(folder, no_backbone_load):
    (folder / "tokenizer.json").write_text("{not json")  # before: json.JSONDecodeError from transformers
    with pytest.raises(CorruptFile, match=rf"{folder / 'tokenizer.json'} is not valid JSON"):
        LLM2Comp.from_pretrained(folder)
    (folder / "tokenizer.json").unlink()  # before: ValueError "Couldn't instantiate the backend tokenizer"
    with pytest.raises(MissingFile, match=rf"{folder} has no tokenizer \(tokenizer.json\)"):
        LLM2Comp.from_pretrained(folder)


def test_an_adapter_of_another_kind_is_refused(folder, no_backbone_load):
    adapter = folder / "adapters" / "00" / "adapter_config.json"
    edit_json(adapter, peft_type="IA3")  # before: loaded as if it were the model's LoRA
    with pytest.raises(ConfigError, match=rf"{adapter}: peft_type is 'IA3', but llm2comp folders hold LoRA"):
        LLM2Comp.from_pretrained(folder)
    adapter.write_text("{bad")  # before: json.JSONDecodeError
    with pytest.raises(CorruptFile, match=rf"{adapter} is not valid JSON"):
        LLM2Comp.from_pretrained(folder)
    adapter.unlink()  # before: ValueError "Can't find 'adapter_config.json'"
    with pytest.raises(MissingFile, match=r"adapters/00 has no adapter_config.json"):
        LLM2Comp.from_pretrained(folder)


@pytest.fixture(scope="module")
def other_backbones(tokenizer_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("other_backbones")
    narrow = tiny_config("llama")
    narrow.hidden_size, narrow.intermediate_size = 32, 64
    wider_vocab = tiny_config("llama")
    wider_vocab.vocab_size = 49200
    return {"narrow": save_tiny_model("llama", root / "narrow", tokenizer_dir, config=narrow),
            "vocab": save_tiny_model("llama", root / "vocab", tokenizer_dir, config=wider_vocab)}


def test_a_backbone_of_another_width_or_vocabulary_is_named(folder, other_backbones, no_backbone_load):
    edit_json(folder / CONFIG, backbone=str(other_backbones["narrow"]))
    with pytest.raises(ConfigError, match=r"field 'embedding_dim' is 64, but the backbone .*narrow has hidden size 32"):
        LLM2Comp.from_pretrained(folder)
    edit_json(folder / CONFIG, embedding_dim=None)  # then the memory vectors say it (before: peft RuntimeError)
    with pytest.raises(CorruptFile, match=r"memory_tokens.safetensors: memory vectors of shape \(2, 64\), expected "
                                          r"\(2, 32\).*has hidden size 32"):
        LLM2Comp.from_pretrained(folder)
    edit_json(folder / CONFIG, backbone=str(other_backbones["vocab"]), embedding_dim=64)
    with pytest.raises(CorruptFile, match=r"input_embeddings.safetensors: input embeddings of shape \(49152, 64\).*"
                                          r"vocabulary of 49200"):
        LLM2Comp.from_pretrained(folder)


# ---------------------------------------------------------------- the sentence-transformers door


def _both_doors_refuse(folder, match):
    pytest.importorskip("sentence_transformers")
    from sentence_transformers import SentenceTransformer

    with pytest.raises(ConfigError, match=match):
        LLM2Comp.from_pretrained(folder)
    with pytest.raises(ConfigError, match=match):
        SentenceTransformer(str(folder), trust_remote_code=True)


def test_sentence_transformers_prompts_must_agree_with_the_llm2comp_config(folder, no_backbone_load):
    st_config = folder / ST_CONFIG
    intact = st_config.read_text()
    edit_json(st_config, prompts={"query": "Something else", "document": ""})  # before: two doors, two vectors
    _both_doors_refuse(folder, rf"{st_config}: prompts \{{'query': 'Something else'\}} differ from those of "
                               rf".*{CONFIG} \(\{{'query': 'Find the passage'\}}\)")
    edit_json(st_config, prompts={"query": "Find the passage", "document": "Represent the document"})
    _both_doors_refuse(folder, r"prompts\['document'\] = 'Represent the document', but documents take no")
    edit_json(st_config, prompts={"query": 3})
    _both_doors_refuse(folder, r"prompts must map names to instruction strings")
    st_config.write_text(intact)
    edit_json(st_config, default_prompt_name="query")
    _both_doors_refuse(folder, r"default_prompt_name is 'query'.*set it to null")
    st_config.write_text("{oops")
    with pytest.raises(CorruptFile, match=rf"{st_config} is not valid JSON"):
        LLM2Comp.from_pretrained(folder)


@pytest.mark.parametrize("arguments, match", [
    (dict(max_length="64"), r"field 'max_length' must be a whole number >= 2, got '64'"),
    (dict(num_memory_tokens=-1), r"field 'num_memory_tokens' must be a whole number >= 0, got -1"),
    (dict(num_memory_tokens=4, max_length=5), r"field 'max_length' \(5\) leaves no room for text"),
    (dict(attention="sideways"), r"field 'attention' must be one of"),
])
def test_from_pretrained_checks_its_arguments_before_the_backbone_loads(tiny_llama_dir, no_backbone_load,
                                                                       monkeypatch, arguments, match):
    from llm2comp.models import encoder

    monkeypatch.setattr(encoder, "load_causal_lm", saving.load_causal_lm)  # the refusing stand-in
    with pytest.raises(ConfigError, match=rf"LLM2Comp.from_pretrained: {match}"):
        LLM2Comp.from_pretrained(tiny_llama_dir, **arguments)


# ---------------------------------------------------------------- issue 18 re-probe: the last folder / argument defects
def test_a_config_that_is_a_folder_is_named_not_read_as_a_plain_backbone(folder, no_backbone_load):
    (folder / CONFIG).unlink()
    (folder / CONFIG).mkdir()  # before: "has no config.json: not a transformers model folder"
    with pytest.raises(CorruptFile, match=rf"{folder / CONFIG} is not a file"):
        LLM2Comp.from_pretrained(folder)


def test_a_tokenizer_json_of_another_schema_is_named(folder, no_backbone_load):
    (folder / "tokenizer.json").write_text('{"hello": 1}')  # before: KeyError 'added_tokens' from tokenizers
    with pytest.raises(CorruptFile, match=r"tokenizer.json: field 'model' is missing or not a JSON object"):
        LLM2Comp.from_pretrained(folder)


def test_a_window_overlap_that_fits_no_window_is_refused_at_load(folder):
    # max_length 32 - BOS - 2 memory tokens: a window holds 29 text tokens
    with pytest.raises(InvalidSetting, match=r"overlap must be an int in \[0, 29\)"):
        LLM2Comp.from_pretrained(folder, long_texts="segments", long_text_overlap=10000)  # before: accepted
    model = LLM2Comp.from_pretrained(folder, long_texts="segments", long_text_overlap=28)
    assert model.config.long_text_overlap == 28


@pytest.mark.parametrize("device, match", [("gpu7", r"device 'gpu7' is not a device torch knows"),
                                           ("cuda:0", r"device 'cuda:0' asks for CUDA, but torch sees no CUDA")])
def test_an_unknown_or_absent_device_is_named_before_the_backbone_loads(folder, no_backbone_load, device, match):
    if device.startswith("cuda") and torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    with pytest.raises(InvalidSetting, match=match):  # before: RuntimeError "Invalid device string"
        LLM2Comp.from_pretrained(folder, device=device)
