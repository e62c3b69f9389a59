"""Inference backends: what runs an LLM2Comp encoder's forward pass.

- `torch` (default): the PyTorch model, `models/encoder.py`; trains, and runs on CPU or GPU.
- `onnx`: the exported fp32 graph under ONNX Runtime (CPU), `onnx_model.py`.
- `onnx-int8`: the same graph with every weight MatMul in int8: weights per output channel,
  activations per token after SmoothQuant scaling (`int8_per_token.py` says why, calibrated by
  `int8_calibration.py`).

`llm2comp export` writes the ONNX files into the model folder's `onnx/`; `LLM2Comp.from_pretrained(path,
backend=...)` and `--backend` on encode / search / eval / serve load them.
"""

BACKENDS = ("torch", "onnx", "onnx-int8")
ONNX_FILES = {"onnx": "model.onnx", "onnx-int8": "model_int8.onnx"}  # backend -> file in <folder>/onnx/
EXPORT_DIR = "onnx"
EXPORT_RECORD = "export.json"
