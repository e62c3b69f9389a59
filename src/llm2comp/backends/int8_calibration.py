"""Calibration for int8 smoothing: the largest |activation| of each input channel of every weight MatMul.

`int8_per_token.quantize_matmuls` moves the activations' outlier channels into the weights
(SmoothQuant's per-channel scaling, its docstring has the maths). It needs, for each MatMul input
X (..., K), the per-channel maximum over real tokens

    a[j] = max over texts t and positions p with valid[t, p] = 1 of |X[t, p, j]|

which this module measures by running the exported fp32 graph with those inputs made graph
outputs, on a few calibration texts: by default paragraphs of the bundled Wikipedia excerpt (the
training corpus, never the evaluation suite's texts), cut to mixed lengths.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np

from ..errors import InvalidSetting
from .int8_per_token import quantized_matmul

CALIBRATION_TEXTS = 64
CALIBRATION_BATCH = 8


def weight_matmul_inputs(model, keep_float32: tuple[str, ...] = ()) -> list[str]:
    """Names of the inputs X of the MatMuls the rewrite quantises (`quantized_matmul`), in graph order."""
    weights = {init.name for init in model.graph.initializer}
    names = [node.input[0] for node in model.graph.node if quantized_matmul(node, weights, keep_float32)]
    return list(dict.fromkeys(names))


def channel_max(float_graph: str | Path, batches, keep_float32: tuple[str, ...] = (),
                threads: int | None = None) -> dict[str, np.ndarray]:
    """{X name: a (K,)} over `batches` (dicts of the graph's int64 inputs); padding rows are left out."""
    import onnx
    import onnxruntime
    from onnx import TensorProto, helper

    model = onnx.load(str(float_graph))
    names = weight_matmul_inputs(model, keep_float32)
    known = {output.name for output in model.graph.output}
    model.graph.output.extend(helper.make_tensor_value_info(name, TensorProto.FLOAT, None)
                              for name in names if name not in known)
    options = onnxruntime.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    session = onnxruntime.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    inputs = {item.name for item in session.get_inputs()}
    result: dict[str, np.ndarray] = {}
    seen = 0
    for feeds in batches:
        seen += 1
        valid = feeds["valid"].astype(bool)
        values = session.run(names, {name: value for name, value in feeds.items() if name in inputs})
        for name, value in zip(names, values):
            rows = value[valid] if value.shape[:2] == valid.shape else value.reshape(-1, value.shape[-1])
            peak = np.abs(rows).max(axis=0)
            result[name] = peak if name not in result else np.maximum(result[name], peak)
    if not seen:
        raise InvalidSetting("int8 smoothing needs at least one calibration text")
    return result


def default_calibration_texts(n: int = CALIBRATION_TEXTS, seed: int = 0) -> list[str]:
    """n paragraphs of the bundled Wikipedia excerpt, each cut to 8-160 words (mixed lengths)."""
    from ..data.wikipedia import wiki_paragraphs

    paragraphs = wiki_paragraphs()
    rng = random.Random(seed)
    chosen = rng.sample(paragraphs, min(n, len(paragraphs)))
    return [" ".join(text.split()[:rng.randint(8, 160)]) for text in chosen]


def encoder_batches(model, texts: list[str], batch_size: int = CALIBRATION_BATCH):
    """The graph inputs for `texts`, length-sorted batches of `batch_size`, as numpy int64 feeds."""
    ids, _ = model.tokenize(texts)
    order = sorted(range(len(ids)), key=lambda index: len(ids[index]))
    for start in range(0, len(order), batch_size):
        batch = model.collate([ids[index] for index in order[start:start + batch_size]])
        yield {"input_ids": batch.input_ids.numpy(), "valid": batch.valid.numpy(),
               "memory_slot": batch.memory_slot.numpy()}
