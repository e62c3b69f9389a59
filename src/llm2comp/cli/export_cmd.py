"""`llm2comp export`: write a saved model's ONNX graph (fp32 or int8) into its folder's onnx/."""

from __future__ import annotations

from ..backends.int8_per_token import DEFAULT_ALPHA


def add_parser(sub) -> None:
    parser = sub.add_parser(
        "export", help="export a saved model to ONNX (fp32 or int8) for the onnx backends",
        description="Trace a saved LLM2Comp folder's encoder into <folder>/onnx/model.onnx (--quantize none) or "
        "model_int8.onnx (--quantize int8: int8 weights per output channel, activations int8 with one scale "
        "per token), with export.json recording which model it was made from. Load it with --backend onnx / "
        "onnx-int8 on encode, search, eval and serve, or LLM2Comp.from_pretrained(folder, backend=...).")
    parser.add_argument("--model", required=True, help="the saved LLM2Comp folder")
    parser.add_argument("--backend", default="onnx", choices=["onnx"], help="the export format (default: onnx)")
    parser.add_argument("--quantize", default="none", choices=["none", "int8"],
                        help="none: the fp32 graph; int8: int8 MatMuls, one activation scale per token (default: none)")
    parser.add_argument("--keep-float32", default="none", metavar="PARTS",
                        help="with --quantize int8: comma-separated parts of node names whose MatMuls stay fp32, e.g. "
                        "down_proj,layers.0/ (default: none, every weight MatMul int8)")
    parser.add_argument("--smoothing", default=str(DEFAULT_ALPHA), metavar="ALPHA",
                        help="with --quantize int8: SmoothQuant strength in [0, 1], moving activation outlier channels "
                        f"into the weights, measured on calibration texts; none: off (default: {DEFAULT_ALPHA})")
    parser.add_argument("--calibration-texts", default=None, metavar="FILE",
                        help="with --smoothing: a text file, one text per line, to measure the activations on "
                        "(default: 64 paragraphs of the bundled Wikipedia excerpt)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing export of the same kind")
    parser.set_defaults(run=run)


def run(args) -> int:
    import time

    from ..backends.onnx_export import export_onnx

    started = time.perf_counter()
    keep = () if args.keep_float32 in ("", "none") else tuple(part for part in args.keep_float32.split(",") if part)
    path = export_onnx(args.model, quantize=args.quantize, overwrite=args.overwrite, keep_float32=keep,
                       smoothing=_alpha(args.smoothing), calibration_texts=_texts(args.calibration_texts))
    backend = "onnx-int8" if args.quantize == "int8" else "onnx"
    print(f"wrote {path} ({path.stat().st_size / 2**20:.0f} MiB) in {time.perf_counter() - started:.0f} s; "
          f"use it with --backend {backend}")
    return 0


def _alpha(value: str) -> float | None:
    from ..errors import InvalidSetting

    if value.strip().lower() in ("none", "off", ""):
        return None
    try:
        return float(value)
    except ValueError:
        raise InvalidSetting(f"--smoothing takes a number in [0, 1] or none, got {value!r}") from None


def _texts(path: str | None) -> list[str] | None:
    from ..data.sources import read_text_file

    return None if path is None else read_text_file(path)
