"""`llm2comp export`: write a saved model's ONNX graph (fp32 or int8) into its folder's onnx/."""

from __future__ import annotations


def add_parser(sub) -> None:
    parser = sub.add_parser(
        "export", help="export a saved model to ONNX (fp32 or int8) for the onnx backends",
        description="Trace a saved LLM2Comp folder's encoder into <folder>/onnx/model.onnx (--quantize none) or "
        "model_int8.onnx (--quantize int8: int8 weights per output channel, the MLP down projections kept "
        "fp32), with export.json recording which model it was made from. Load it with --backend onnx / "
        "onnx-int8 on encode, search, eval and serve, or LLM2Comp.from_pretrained(folder, backend=...).")
    parser.add_argument("--model", required=True, help="the saved LLM2Comp folder")
    parser.add_argument("--backend", default="onnx", choices=["onnx"], help="the export format (default: onnx)")
    parser.add_argument("--quantize", default="none", choices=["none", "int8"],
                        help="none: the fp32 graph; int8: dynamic int8 weights (default: none)")
    parser.add_argument("--keep-float32", default="down_proj", metavar="PARTS",
                        help="with --quantize int8: comma-separated parts of node names whose MatMuls stay fp32, e.g. "
                        "down_proj,layers.0/ (default: down_proj, the MLP down projections; none: quantise all)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing export of the same kind")
    parser.set_defaults(run=run)


def run(args) -> int:
    import time

    from ..backends.onnx_export import export_onnx

    started = time.perf_counter()
    keep = () if args.keep_float32 in ("", "none") else tuple(part for part in args.keep_float32.split(",") if part)
    path = export_onnx(args.model, quantize=args.quantize, overwrite=args.overwrite, keep_float32=keep)
    backend = "onnx-int8" if args.quantize == "int8" else "onnx"
    print(f"wrote {path} ({path.stat().st_size / 2**20:.0f} MiB) in {time.perf_counter() - started:.0f} s; "
          f"use it with --backend {backend}")
    return 0
