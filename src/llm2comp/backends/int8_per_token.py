"""int8 MatMuls with one activation scale per token, after SmoothQuant scaling: `--quantize int8`.

Every MatMul `Y = X W` of the fp32 graph whose W (K x N) is a weight becomes

    s_w[n] = max_k |W[k, n]| / 127                 W_q = round(W / s_w)      (int8, once, at export)
    s_x[t] = max(max_k |X[t, k]|, 1e-8) / 127      X_q = round(X / s_x) + 128 (uint8, at run time)
    Y[t, n] ~= s_x[t] * s_w[n] * sum_k (X_q[t, k] - 128) * W_q[k, n]

with the integer product in ONNX's standard `MatMulInteger` (uint8 x int8, zero point 128 for X),
so ONNX Runtime runs it on its int8 kernels (VNNI where the CPU has it).

Why per token: ONNX Runtime's own dynamic quantisation (`quantize_dynamic`) takes one scale for the
whole activation tensor, i.e. for every token of every text in the batch. LLM activations carry
rare huge values (the first token's "massive activations", the MLP's gated products), so that one
scale is coarse for every other token, and it changes with whatever else is in the batch: measured
on the trained demo model, a text's embedding moved by up to 2.05 (max abs) between being encoded
alone and in a batch of 32, and the offline suite lost 0.71 points. With a scale per token an
outlier only coarsens its own row, nothing depends on the batch (the same text gives the same
vector, up to float rounding), and the offline suite stayed within 0.3 points of fp32 (docs/backends.md).

Smoothing (SmoothQuant, Xiao et al. 2023, arXiv 2211.10438): a per-token scale copes with an
outlier *token*, not with an outlier *channel* -- a few input channels j that are large on every
token, which make max_k |X[t, k]| large and every other channel of the row coarse. With a_j = max
|X[:, j]| over calibration tokens (`int8_calibration.channel_max`) and w_j = max_n |W[j, n]| over
every W that reads X,

    s_j = a_j^alpha / w_j^(1 - alpha),  normalised to geometric mean 1,    X W = (X / s) (diag(s) W)

so the rewrite quantises X / s per token (one Mul before it) and diag(s) W per column. alpha = 0.5
(the paper's default) splits the range evenly between the two. MatMuls reading one input (q, k, v;
gate, up) share s and the quantised X, so each input is quantised once.

Only the standard ONNX operators are used (Abs, ReduceMax, Max, Div, Round, Add, Cast,
MatMulInteger, Mul), so the file runs on any ONNX Runtime build.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

ZERO_POINT = 128  # X_q is uint8 around 128: the (uint8 x int8) kernels are ONNX Runtime's fast ones
EPSILON = 1e-8  # an all-zero row (padding) keeps a finite scale
DEFAULT_ALPHA = 0.5  # smoothing strength: how much of the activation range moves into the weights


def quantized_matmul(node, weights, keep_float32: tuple[str, ...] = ()) -> bool:
    """Whether the rewrite quantises `node`: a MatMul whose second input is a weight (a name in
    `weights`) and whose node name contains no part of `keep_float32`."""
    return (node.op_type == "MatMul" and node.input[1] in weights
            and not any(part in node.name for part in keep_float32))


def quantize_weight(weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(W_q int8, s_w float32) of a (K, N) weight, symmetric per output column."""
    weight = weight.astype(np.float32)
    scale = np.maximum(np.abs(weight).max(axis=0), 1e-12) / 127.0
    return np.clip(np.round(weight / scale), -127, 127).astype(np.int8), scale.astype(np.float32)


def smoothing_scales(activation_max: np.ndarray, weights: list[np.ndarray], alpha: float) -> np.ndarray:
    """s (K,) for an input whose per-channel max |X| is `activation_max`, read by `weights` (K, N_i)."""
    weight_max = np.max([np.abs(weight).max(axis=1) for weight in weights], axis=0)
    usable = (activation_max > 0) & (weight_max > 0)
    scales = np.ones_like(activation_max, dtype=np.float64)
    scales[usable] = activation_max[usable].astype(np.float64) ** alpha / weight_max[usable].astype(np.float64) ** (1 - alpha)
    scales /= np.exp(np.log(scales).mean())  # geometric mean 1: the overall size of X and W stays put
    return scales.astype(np.float32)


def reference_matmul(x: np.ndarray, weight: np.ndarray, smoothing: np.ndarray | None = None) -> np.ndarray:
    """What one rewritten MatMul computes, in numpy (the tests' reference); `smoothing` is s (K,)."""
    if smoothing is not None:
        x, weight = (x * (np.float32(1.0) / smoothing)).astype(np.float32), weight * smoothing[:, None]
    weight_q, weight_scale = quantize_weight(weight)
    x_scale = (np.maximum(np.abs(x).max(axis=-1, keepdims=True), EPSILON) / np.float32(127.0)).astype(np.float32)
    x_q = np.round(x / x_scale).astype(np.int32)
    return (x_q @ weight_q.astype(np.int32)).astype(np.float32) * x_scale * weight_scale


def quantize_matmuls(source: str | Path, target: str | Path, keep_float32: tuple[str, ...] = (),
                     activation_max: dict[str, np.ndarray] | None = None,
                     alpha: float = DEFAULT_ALPHA) -> tuple[int, list[str]]:
    """Rewrite `source`'s weight MatMuls (module docstring) into `target`; a MatMul whose node name
    contains one of `keep_float32` stays fp32. `activation_max` ({input name: a (K,)}, from
    `int8_calibration.channel_max`) turns smoothing on with strength `alpha`. MatMuls that read the
    same input share its quantisation (and its s). Returns (number rewritten, names of those kept)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(str(source))
    graph = model.graph
    weights = {init.name: init for init in graph.initializer}
    opset = next((entry.version for entry in model.opset_import if entry.domain in ("", "ai.onnx")), 17)
    constants = {"int8_eps": np.array(EPSILON, np.float32), "int8_127": np.array(127.0, np.float32),
                 "int8_zero_point_f": np.array(float(ZERO_POINT), np.float32),
                 "int8_zero_point": np.array(ZERO_POINT, np.uint8)} | ({"int8_last_axis": np.array([-1], np.int64)} if opset >= 18 else {})
    added = [numpy_helper.from_array(value, name) for name, value in constants.items()]

    def rewritten(node) -> bool:
        return quantized_matmul(node, weights, keep_float32)

    readers: dict[str, list[str]] = {}  # input -> the weights that read it (names: converted when smoothing)
    for node in graph.node:
        if rewritten(node):
            readers.setdefault(node.input[0], []).append(node.input[1])
    quantized: dict[str, tuple[str, str, np.ndarray | None]] = {}  # input -> (X_q, s_x, smoothing s)
    nodes, kept, count = [], [], 0
    for node in graph.node:
        if not rewritten(node):
            if quantized_matmul(node, weights):  # a weight MatMul that keep_float32 names
                kept.append(node.name)
            nodes.append(node)
            continue
        x = node.input[0]
        if x not in quantized:  # quantise this input once, before its first reader
            p = f"int8_x{len(quantized)}_"
            smoothing = None
            if activation_max is not None:
                if x not in activation_max:
                    raise ValueError(f"no calibration statistics for MatMul input {x!r}")
                smoothing = smoothing_scales(activation_max[x], [numpy_helper.to_array(weights[name])
                                                                 for name in readers[x]], alpha)
                added.append(numpy_helper.from_array((np.float32(1.0) / smoothing).astype(np.float32), p + "inv_s"))
                nodes.append(helper.make_node("Mul", [x, p + "inv_s"], [p + "smooth"], name=node.name + "/int8_smooth"))
                x_in = p + "smooth"
            else:
                x_in = x
            reduce_max = (helper.make_node("ReduceMax", [p + "abs"], [p + "amax"], keepdims=1, axes=[-1]) if opset < 18 else
                          helper.make_node("ReduceMax", [p + "abs", "int8_last_axis"], [p + "amax"], keepdims=1))
            nodes += [
                helper.make_node("Abs", [x_in], [p + "abs"], name=node.name + "/int8_abs"),
                reduce_max,
                helper.make_node("Max", [p + "amax", "int8_eps"], [p + "amax_safe"]),
                helper.make_node("Div", [p + "amax_safe", "int8_127"], [p + "x_scale"]),
                helper.make_node("Div", [x_in, p + "x_scale"], [p + "x_scaled"]),
                helper.make_node("Round", [p + "x_scaled"], [p + "x_round"]),
                helper.make_node("Add", [p + "x_round", "int8_zero_point_f"], [p + "x_shift"]),
                helper.make_node("Cast", [p + "x_shift"], [p + "x_q"], to=TensorProto.UINT8),
            ]
            quantized[x] = (p + "x_q", p + "x_scale", smoothing)
        x_q, x_scale, smoothing = quantized[x]
        weight = numpy_helper.to_array(weights[node.input[1]])
        weight_q, weight_scale = quantize_weight(weight if smoothing is None else weight * smoothing[:, None])
        p = f"int8_{count}_"
        count += 1
        added += [numpy_helper.from_array(weight_q, p + "w_q"), numpy_helper.from_array(weight_scale, p + "w_scale")]
        nodes += [
            helper.make_node("MatMulInteger", [x_q, p + "w_q", "int8_zero_point"], [p + "y_int"], name=node.name + "/int8"),
            helper.make_node("Cast", [p + "y_int"], [p + "y_float"], to=TensorProto.FLOAT),
            helper.make_node("Mul", [p + "y_float", x_scale], [p + "y_row"]),
            helper.make_node("Mul", [p + "y_row", p + "w_scale"], [node.output[0]]),
        ]
    still_read = {name for node in nodes for name in node.input}
    initializers = [init for init in graph.initializer if init.name in still_read] + added
    del graph.node[:]
    graph.node.extend(nodes)
    del graph.initializer[:]
    graph.initializer.extend(initializers)
    onnx.save(model, str(target))
    return count, kept
