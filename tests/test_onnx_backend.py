"""The ONNX backends (backends/): an exported graph embeds as the PyTorch model does, and is refused
for any other model."""

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from llm2comp import LLM2Comp, LoraSettings
from llm2comp.cli.main import main
from llm2comp.errors import InvalidSetting, MissingFile, OutputError

from .conftest import randomize_lora

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from llm2comp.backends.onnx_export import export_onnx  # noqa: E402

TEXTS = ["short", "a somewhat longer text about the plot of a film and its reviews",
         "the central bank raised interest rates again on Tuesday",
         " ".join(["many words in a long text"] * 30), "x"]


def saved_model(tmp_path, source, name="model", seed=1, num_memory_tokens=3):
    model = LLM2Comp.from_pretrained(source, num_memory_tokens=num_memory_tokens, max_length=96, seed=seed)
    model.add_lora(LoraSettings(r=4, alpha=8, dropout=0.0))
    randomize_lora(model.model, seed=seed)
    model.save(tmp_path / name)
    return tmp_path / name


def cosines(a, b):
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


@pytest.mark.parametrize("arch", ["llama", "gemma3", "gpt2"])  # plain, per-layer-kind sliding masks, Conv1D
def test_fp32_export_embeds_as_torch_does(arch, tiny_model_dirs, tmp_path):
    folder = saved_model(tmp_path, tiny_model_dirs[arch])
    path = export_onnx(folder)
    assert path == folder / "onnx" / "model.onnx"
    torch_model = LLM2Comp.from_pretrained(folder)
    onnx_model = LLM2Comp.from_pretrained(folder, backend="onnx")
    expected = torch_model.encode(TEXTS, batch_size=2)
    for batch_size in (1, 2, 8):  # other batch shapes than the one traced
        got = onnx_model.encode(TEXTS, batch_size=batch_size)
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
    # the API around the forward pass is the shared one: instructions, normalisation, quantised outputs
    pair = [("Retrieve reviews", "a film")]
    np.testing.assert_allclose(onnx_model.encode(pair, normalize_embeddings=True),
                               torch_model.encode(pair, normalize_embeddings=True), atol=1e-4)
    assert onnx_model.encode(TEXTS[:2], precision="binary").dtype == np.int8


def test_int8_export_keeps_down_projections_fp32_and_stays_close(tiny_llama_dir, tmp_path):
    folder = saved_model(tmp_path, tiny_llama_dir)
    path = export_onnx(folder, quantize="int8")
    assert path.name == "model_int8.onnx" and not (folder / "onnx" / "model.onnx").exists()  # only what was asked
    entry = json.loads((folder / "onnx" / "export.json").read_text())["files"]["onnx-int8"]
    layers = 2  # the tiny llama: 7 weight MatMuls per layer, one of them down_proj
    assert entry["quantization"]["quantized_matmuls"] == 6 * layers
    assert entry["quantization"]["float32_matmuls"] == layers
    expected = LLM2Comp.from_pretrained(folder).encode(TEXTS)
    got = LLM2Comp.from_pretrained(folder, backend="onnx-int8").encode(TEXTS)
    assert not np.allclose(got, expected, atol=1e-6)  # really quantised
    assert cosines(got, expected).min() > 0.98
    export_onnx(folder)  # a second kind goes beside the first, both listed
    assert set(json.loads((folder / "onnx" / "export.json").read_text())["files"]) == {"onnx", "onnx-int8"}


def test_exports_are_refused_for_another_model_and_never_overwritten(tiny_llama_dir, tmp_path):
    folder = saved_model(tmp_path, tiny_llama_dir)
    with pytest.raises(MissingFile, match=r"has no ONNX export .*llm2comp export --model .* --backend onnx$"):
        LLM2Comp.from_pretrained(folder, backend="onnx")
    export_onnx(folder)
    with pytest.raises(OutputError, match="model.onnx exists; pass overwrite=True"):
        export_onnx(folder)
    with pytest.raises(MissingFile, match="lists no 'onnx-int8' export"):
        LLM2Comp.from_pretrained(folder, backend="onnx-int8")
    other = saved_model(tmp_path, tiny_llama_dir, name="other", seed=2)  # same shapes, other weights
    shutil.copytree(folder / "onnx", other / "onnx")
    with pytest.raises(InvalidSetting, match="exported from another model .* --overwrite"):
        LLM2Comp.from_pretrained(other, backend="onnx")
    export_onnx(other, overwrite=True)
    assert LLM2Comp.from_pretrained(other, backend="onnx").encode("x").shape == (64,)
    with pytest.raises(InvalidSetting, match="not a saved LLM2Comp folder"):
        export_onnx(tiny_llama_dir)  # a plain backbone: nothing to fingerprint the graph against
    with pytest.raises(InvalidSetting, match="backend must be one of"):
        LLM2Comp.from_pretrained(folder, backend="openvino")
    with pytest.raises(InvalidSetting, match="only encodes"):
        LLM2Comp.from_pretrained(folder, backend="onnx").train()


def test_the_onnx_backend_loads_without_the_training_stack(tiny_llama_dir, tmp_path):
    folder = saved_model(tmp_path, tiny_llama_dir)
    export_onnx(folder)
    script = ("import sys; from llm2comp import LLM2Comp; "
              f"m = LLM2Comp.from_pretrained({str(folder)!r}, backend='onnx'); m.encode(['a text']); "
              "print(sorted(name for name in ('peft', 'accelerate') if name in sys.modules))")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "[]"


def test_cli_export_then_encode_with_the_backend(tiny_llama_dir, tmp_path, capsys):
    folder = saved_model(tmp_path, tiny_llama_dir)
    texts = tmp_path / "texts.txt"
    texts.write_text("\n".join(TEXTS) + "\n")
    assert main(["export", "--model", str(folder), "--quantize", "int8", "--keep-float32", "none"]) == 0
    assert "use it with --backend onnx-int8" in capsys.readouterr().out
    record = json.loads((folder / "onnx" / "export.json").read_text())["files"]["onnx-int8"]["quantization"]
    assert record["float32_matmuls"] == 0 and record["kept_float32"] == []
    assert main(["export", "--model", str(folder), "--quantize", "int8"]) == 2  # never replaced unasked
    assert "exists" in capsys.readouterr().err
    assert main(["export", "--model", str(folder), "--quantize", "int8", "--overwrite"]) == 0
    assert main(["encode", "--model", str(folder), "--input", str(texts), "--output", str(tmp_path / "t.npy")]) == 0
    assert main(["encode", "--model", str(folder), "--input", str(texts), "--output", str(tmp_path / "o.npy"),
                 "--backend", "onnx-int8"]) == 0
    assert cosines(np.load(tmp_path / "o.npy"), np.load(tmp_path / "t.npy")).min() > 0.98
    assert main(["encode", "--model", str(folder), "--input", str(texts), "--output", str(tmp_path / "x.npy"),
                 "--backend", "onnx-int8", "--dtype", "bfloat16"]) == 2
    assert "runs the exported graph as it was exported" in capsys.readouterr().err


def test_sentence_transformers_loads_the_export_with_backend_onnx(tiny_llama_dir, tmp_path):
    from sentence_transformers import SentenceTransformer

    folder = saved_model(tmp_path, tiny_llama_dir)
    export_onnx(folder, quantize="int8")
    export_onnx(folder)
    expected = LLM2Comp.from_pretrained(folder).encode(TEXTS)
    st = SentenceTransformer(str(folder), trust_remote_code=True, backend="onnx")
    np.testing.assert_allclose(st.encode(TEXTS), expected, atol=1e-4)
    st8 = SentenceTransformer(str(folder), trust_remote_code=True, backend="onnx",
                              model_kwargs={"file_name": "onnx/model_int8.onnx"})
    got = st8.encode(TEXTS)
    assert cosines(got, expected).min() > 0.98 and not np.allclose(got, expected, atol=1e-6)
    with pytest.raises(ValueError, match="not an llm2comp export"):
        SentenceTransformer(str(folder), trust_remote_code=True, backend="onnx",
                            model_kwargs={"file_name": "model_qint8_avx512.onnx"})
