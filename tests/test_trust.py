"""No code runs from a model folder unless the caller asks; nothing is ever unpickled."""

import ast
import json
from pathlib import Path

import pytest

from llm2comp import LLM2Comp
from llm2comp.cli.main import main
from llm2comp.errors import UntrustedCode

SRC = Path(__file__).resolve().parents[1] / "src" / "llm2comp"

CUSTOM_CODE = """
from pathlib import Path
Path({marker!r}).write_text("this code ran")
from transformers import LlamaConfig, LlamaForCausalLM

class MarkerConfig(LlamaConfig):
    model_type = "marker_llama"

class MarkerForCausalLM(LlamaForCausalLM):
    config_class = MarkerConfig
"""


@pytest.fixture
def code_carrying_folder(tiny_llama_dir, tmp_path):
    """A merged model folder whose backbone names its own Python module (`auto_map`) and whose
    llm2comp_config.json (format 1) says `trust_remote_code: true`, as a downloaded folder could."""
    folder, marker = tmp_path / "downloaded", tmp_path / "MARKER"
    LLM2Comp.from_pretrained(tiny_llama_dir, num_memory_tokens=2, max_length=32).save(folder, merge=True)
    config = json.loads((folder / "backbone" / "config.json").read_text())
    config.update(model_type="marker_llama", auto_map={"AutoConfig": "marker.MarkerConfig",
                                                       "AutoModelForCausalLM": "marker.MarkerForCausalLM"})
    (folder / "backbone" / "config.json").write_text(json.dumps(config))
    (folder / "backbone" / "marker.py").write_text(CUSTOM_CODE.format(marker=str(marker)))
    saved = json.loads((folder / "llm2comp_config.json").read_text())
    (folder / "llm2comp_config.json").write_text(json.dumps({**saved, "format_version": 1, "trust_remote_code": True}))
    return folder, marker


def test_a_folder_never_grants_itself_trust(code_carrying_folder, capsys):
    folder, marker = code_carrying_folder
    with pytest.raises(UntrustedCode, match=r"backbone/config.json asks to run Python code.*trust_remote_code=True"):
        LLM2Comp.from_pretrained(folder)
    (folder.parent / "in.txt").write_text("hello\n")
    for command in (["encode", "--input", str(folder.parent / "in.txt"), "--output", str(folder.parent / "o.npy")],
                    ["search"], ["eval", "--max-items", "8"]):
        assert main([command[0], "--model", str(folder), *command[1:]]) == 2
        assert "--trust-remote-code" in capsys.readouterr().err
    assert not marker.exists()
    # the caller can still choose to trust it: then (and only then) its code runs
    model = LLM2Comp.from_pretrained(folder, trust_remote_code=True)
    assert marker.read_text() == "this code ran" and model.encode("hello").shape == (64,)


def test_a_tokenizer_with_unknown_custom_code_is_refused_too(tiny_llama_dir, tmp_path):
    folder = tmp_path / "m"
    LLM2Comp.from_pretrained(tiny_llama_dir, num_memory_tokens=2, max_length=32).save(folder)
    settings = json.loads((folder / "tokenizer_config.json").read_text())
    settings.update(tokenizer_class="MarkerTokenizer", auto_map={"AutoTokenizer": ["marker.MarkerTokenizer", None]})
    (folder / "tokenizer_config.json").write_text(json.dumps(settings))
    with pytest.raises(UntrustedCode, match="tokenizer_config.json asks to run Python code"):
        LLM2Comp.from_pretrained(folder)


def test_saved_folders_no_longer_record_trust(tiny_llama_dir, tmp_path):
    LLM2Comp.from_pretrained(tiny_llama_dir, num_memory_tokens=2, trust_remote_code=True).save(tmp_path / "m")
    assert "trust_remote_code" not in json.loads((tmp_path / "m" / "llm2comp_config.json").read_text())


def _calls_and_imports(tree):
    """(dotted callee, {keyword: constant value}) of every call, and every imported module name."""
    calls, imports = [], []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            callee = ast.unparse(node.func)
            keywords = {k.arg: k.value.value for k in node.keywords if isinstance(k.value, ast.Constant)}
            calls.append((callee, keywords))
        elif isinstance(node, ast.Import):
            imports += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            imports.append(node.module)
    return calls, imports


def test_nothing_is_ever_unpickled():
    """Audit of every module's code (not its prose): no pickle, no torch.load, no numpy object arrays,
    no YAML that builds objects, and trust_remote_code only ever passed through, never switched on."""
    found = []
    for path in sorted(SRC.rglob("*.py")):
        calls, imports = _calls_and_imports(ast.parse(path.read_text()))
        where = path.relative_to(SRC)
        found += [f"{where}: imports {name}" for name in imports
                  if name.split(".")[0] in ("pickle", "dill", "cloudpickle", "joblib", "marshal", "shelve")]
        for callee, keywords in calls:
            if callee in ("torch.load", "yaml.load", "yaml.unsafe_load", "yaml.full_load", "eval", "exec"):
                found.append(f"{where}: calls {callee}")
            if keywords.get("trust_remote_code") is True or keywords.get("allow_pickle") is True:
                found.append(f"{where}: {callee}(...) switches trust_remote_code / allow_pickle on")
            if keywords.get("weights_only") is False:
                found.append(f"{where}: {callee}(weights_only=False)")
    assert found == []
