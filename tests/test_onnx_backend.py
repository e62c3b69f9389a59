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


def test_int8_export_quantises_every_weight_matmul_and_stays_close(tiny_llama_dir, tmp_path):
    folder = saved_model(tmp_path, tiny_llama_dir)
    path = export_onnx(folder, quantize="int8")
    assert path.name == "model_int8.onnx" and not (folder / "onnx" / "model.onnx").exists()  # only what was asked
    entry = json.loads((folder / "onnx" / "export.json").read_text())["files"]["onnx-int8"]
    layers = 2  # the tiny llama: 7 weight MatMuls per layer
    assert entry["quantization"]["quantized_matmuls"] == 7 * layers
    assert entry["quantization"]["float32_matmuls"] == 0
    assert entry["quantization"]["smoothing"] == {"alpha": 0.5, "calibration_texts": 64}  # the built-in texts
    expected = LLM2Comp.from_pretrained(folder).encode(TEXTS)
    int8 = LLM2Comp.from_pretrained(folder, backend="onnx-int8")
    got = int8.encode(TEXTS, batch_size=8)
    assert not np.allclose(got, expected, atol=1e-6)  # really quantised
    assert cosines(got, expected).min() > 0.98
    # one activation scale per token: a text's vector does not depend on what it is batched with
    for batch_size in (1, 2):
        np.testing.assert_allclose(int8.encode(TEXTS, batch_size=batch_size), got, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(int8.encode(TEXTS[::-1], batch_size=8)[::-1], got, rtol=1e-5, atol=1e-5)
    export_onnx(folder)  # a second kind goes beside the first, both listed
    assert set(json.loads((folder / "onnx" / "export.json").read_text())["files"]) == {"onnx", "onnx-int8"}


def test_int8_rewrite_computes_per_token_quantised_matmul(tmp_path):
    """One MatMul through ONNX Runtime equals the numpy statement of the maths; kept names stay fp32."""
    import onnx
    import onnxruntime
    from onnx import TensorProto, helper, numpy_helper

    from llm2comp.backends.int8_per_token import quantize_matmuls, reference_matmul

    rng = np.random.default_rng(0)
    weight = rng.normal(size=(16, 5)).astype(np.float32)
    x = rng.normal(size=(2, 3, 16)).astype(np.float32)
    x[0, 0, 4] = 300.0  # an outlier: coarsens its own token only
    x[1, 2] = 0.0  # an all-zero row (padding) stays finite
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["h"], name="layer/up_proj/MatMul"),
         helper.make_node("MatMul", ["h", "w2"], ["y"], name="layer/down_proj/MatMul")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3, 5])],
        [numpy_helper.from_array(weight, "w"), numpy_helper.from_array(np.eye(5, dtype=np.float32), "w2")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "f.onnx")
    count, kept = quantize_matmuls(tmp_path / "f.onnx", tmp_path / "q.onnx", keep_float32=("down_proj",))
    assert (count, kept) == (1, ["layer/down_proj/MatMul"])
    session = onnxruntime.InferenceSession(str(tmp_path / "q.onnx"), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {"x": x})
    np.testing.assert_allclose(got, reference_matmul(x, weight), rtol=1e-5, atol=1e-5)
    assert np.isfinite(got).all() and np.abs(got[1, 2]).max() == 0.0
    # per token: the outlier's row is coarse, the other rows keep ~1% error
    exact = x @ weight
    error = np.abs(got - exact).max(-1) / np.maximum(np.abs(exact).max(-1), 1e-6)
    assert error[0, 1:].max() < 0.02 and error[1, :2].max() < 0.02


def _two_matmul_graph(tmp_path, weight, weight2, shape):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(  # q and k read the same input: one quantisation, one smoothing s
        [helper.make_node("MatMul", ["x", "wq"], ["q"], name="attn/q_proj/MatMul"),
         helper.make_node("MatMul", ["x", "wk"], ["k"], name="attn/k_proj/MatMul"),
         helper.make_node("Add", ["q", "k"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(weight, "wq"), numpy_helper.from_array(weight2, "wk")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "f.onnx")
    return tmp_path / "f.onnx"


def test_smoothing_moves_an_outlier_channel_into_the_weights(tmp_path):
    """With s_j = a_j^alpha / max|W_j.|^(1 - alpha), the rewrite computes per-token int8 of (X / s)(s W):
    equal to the numpy reference, exact in real arithmetic, and far closer to X W when a channel of
    X is huge on every token (what per-token scales alone cannot fix)."""
    import onnx
    import onnxruntime

    from llm2comp.backends.int8_calibration import channel_max
    from llm2comp.backends.int8_per_token import quantize_matmuls, reference_matmul, smoothing_scales

    rng = np.random.default_rng(0)
    weight, weight2 = rng.normal(size=(16, 5)).astype(np.float32), rng.normal(size=(16, 5)).astype(np.float32)
    x = rng.normal(size=(2, 6, 16)).astype(np.float32)
    x[..., 3] *= 200.0  # an outlier channel, on every token
    valid = np.ones((2, 6), np.int64)
    valid[1, 4:] = 0
    x[1, 4:, 7] = 1e4  # padding rows: not part of the statistics
    source = _two_matmul_graph(tmp_path, weight, weight2, [2, 6, 16])
    stats = channel_max(source, [{"x": x, "valid": valid}])
    np.testing.assert_allclose(stats["x"], np.abs(x[valid.astype(bool)]).max(0))
    assert set(stats) == {"x"}  # both MatMuls read it: one statistic
    results = {}
    for name, statistics in (("plain", None), ("smooth", stats)):
        count, _ = quantize_matmuls(source, tmp_path / f"{name}.onnx", activation_max=statistics, alpha=0.5)
        assert count == 2
        ops = [node.op_type for node in onnx.load(str(tmp_path / f"{name}.onnx")).graph.node]
        assert ops.count("MatMulInteger") == 2 and ops.count("Abs") == 1  # x quantised once for both readers
        session = onnxruntime.InferenceSession(str(tmp_path / f"{name}.onnx"), providers=["CPUExecutionProvider"])
        (results[name],) = session.run(None, {"x": x})
    s = smoothing_scales(stats["x"], [weight, weight2], 0.5)
    assert abs(np.log(s).mean()) < 1e-5 and s[3] > 5 * np.median(s)  # the outlier channel is scaled down in X
    np.testing.assert_allclose(results["smooth"], reference_matmul(x, weight, s) + reference_matmul(x, weight2, s),
                               rtol=1e-4, atol=1e-3)
    exact = x @ weight + x @ weight2
    rows = valid.astype(bool)
    error = {name: np.abs(value - exact)[rows].mean() for name, value in results.items()}
    assert error["smooth"] < 0.5 * error["plain"]
    with pytest.raises(ValueError, match="no calibration statistics for MatMul input 'x'"):
        quantize_matmuls(source, tmp_path / "bad.onnx", activation_max={"other": stats["x"]})


def test_smoothing_settings_are_recorded_checked_and_can_be_turned_off(tiny_llama_dir, tmp_path, capsys):
    folder = saved_model(tmp_path, tiny_llama_dir)
    with pytest.raises(InvalidSetting, match=r"smoothing \(alpha\) must lie in \[0, 1\]"):
        export_onnx(folder, quantize="int8", smoothing=1.5)
    with pytest.raises(InvalidSetting, match="calibration_texts is empty"):
        export_onnx(folder, quantize="int8", calibration_texts=[])
    texts = tmp_path / "calibration.txt"
    texts.write_text("\n".join(TEXTS) + "\n")
    assert main(["export", "--model", str(folder), "--quantize", "int8", "--smoothing", "0.8",
                 "--calibration-texts", str(texts)]) == 0
    record = json.loads((folder / "onnx" / "export.json").read_text())["files"]["onnx-int8"]["quantization"]
    assert record["smoothing"] == {"alpha": 0.8, "calibration_texts": len(TEXTS)}
    smoothed = LLM2Comp.from_pretrained(folder, backend="onnx-int8").encode(TEXTS)
    assert main(["export", "--model", str(folder), "--quantize", "int8", "--smoothing", "none", "--overwrite"]) == 0
    record = json.loads((folder / "onnx" / "export.json").read_text())["files"]["onnx-int8"]["quantization"]
    assert record["smoothing"] is None
    plain = LLM2Comp.from_pretrained(folder, backend="onnx-int8").encode(TEXTS)
    assert not np.allclose(plain, smoothed, atol=1e-6)  # the option changes the graph
    expected = LLM2Comp.from_pretrained(folder).encode(TEXTS)
    assert cosines(plain, expected).min() > 0.98 and cosines(smoothed, expected).min() > 0.98
    assert main(["export", "--model", str(folder), "--quantize", "int8", "--smoothing", "strong", "--overwrite"]) == 2
    assert "--smoothing takes a number in [0, 1] or none, got 'strong'" in capsys.readouterr().err


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
    assert main(["export", "--model", str(folder), "--quantize", "int8", "--keep-float32", "down_proj"]) == 0
    assert "use it with --backend onnx-int8" in capsys.readouterr().out
    record = json.loads((folder / "onnx" / "export.json").read_text())["files"]["onnx-int8"]["quantization"]
    assert record["float32_matmuls"] == 2 and record["kept_float32"] == ["down_proj"]  # one per layer
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
