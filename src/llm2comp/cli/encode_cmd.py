"""`llm2comp encode`: embed a text file into a .npy matrix (one row per text, input order).

With `--long-texts multivector` the output is a .npz file: `vectors` (all windows, d) float32 and
`text_index` (one int per window: the input line it belongs to), windows in text order.
"""

from __future__ import annotations

import io

import numpy as np

from ..atomic import atomic_write_bytes, ensure_writable_file
from ..errors import InvalidSetting
from ..models.default_model import DEFAULT_MODEL_NAME
from .arguments import add_trust_remote_code, device_name, non_blank_text, positive_int
from .long_text_options import add_long_text_arguments, check_overlap_applies


def add_parser(sub) -> None:
    parser = sub.add_parser(
        "encode",
        help="embed texts from a .txt/.jsonl file into a .npy file",
        description="Embed texts with an LLM2Comp model (or a plain backbone) and write a float32 .npy "
        "matrix, one row per text in input order. .txt: one text per line (blank lines skipped); "
        ".jsonl: objects with a 'text' field and an optional 'instruction' (queries only).",
    )
    parser.add_argument("--model", type=non_blank_text, default=DEFAULT_MODEL_NAME,
                        help=f"saved LLM2Comp folder, Hub id or local backbone folder (default: {DEFAULT_MODEL_NAME})")
    parser.add_argument("--input", type=non_blank_text, required=True,
                        help="texts.txt or texts.jsonl (also .gz/.bz2, a pipe such as <(...), or - for the "
                        "standard input, one text per line)")
    parser.add_argument("--output", type=non_blank_text, required=True,
                        help="where to write the embeddings (.npy; .npz with --long-texts multivector)")
    parser.add_argument("--field", default=None, help="JSONL field holding the text (default: text; .jsonl only)")
    parser.add_argument("--instruction", type=non_blank_text, default=None,
                        help="instruction prepended to every text (queries)")
    parser.add_argument("--batch-size", type=positive_int, default=32)
    parser.add_argument("--normalize", action="store_true", help="L2-normalise the embeddings")
    parser.add_argument("--pooling", choices=["memory_mean", "mean", "last"], default=None,
                        help="for a plain backbone: memory_mean (default), or mean/last token baselines")
    parser.add_argument("--dtype", default="float32", help="float32 | bfloat16 | float16")
    parser.add_argument("--device", type=device_name, default=None, help="cpu, cuda, cuda:1, ... (default: cpu)")
    add_long_text_arguments(parser)
    add_trust_remote_code(parser)
    parser.set_defaults(run=run)


def run(args) -> int:
    from ..data.reading import format_suffix
    from ..models.loading import load_for_use
    from ..text_files import JSONL_SUFFIXES, read_texts

    multivector = args.long_texts == "multivector"
    suffix = ".npz" if multivector else ".npy"
    if not str(args.output).endswith(suffix):
        raise InvalidSetting(f"--output {args.output}: expected a {suffix} file"
                             + (" (--long-texts multivector writes vectors + text_index)" if multivector else ""))
    check_overlap_applies(args.overlap, args.long_texts)
    ensure_writable_file(args.output)  # before the model loads and encodes everything
    if args.field is not None and format_suffix(args.input) not in JSONL_SUFFIXES:
        raise InvalidSetting(f"--field {args.field} applies only to a .jsonl input; {args.input} is read as one text "
                             "per line")
    texts = read_texts(args.input, field=args.field or "text")
    model = load_for_use(args.model, args.pooling, dtype=args.dtype, device=args.device,
                         trust_remote_code=args.trust_remote_code)
    model.set_long_texts(args.long_texts, args.overlap)
    check_overlap_applies(args.overlap, model.config.long_texts, saved=True)
    embeddings = model.encode(texts, batch_size=args.batch_size, show_progress_bar=True,
                              normalize_embeddings=args.normalize, instruction=args.instruction)
    buffer = io.BytesIO()
    if multivector:
        text_index = np.repeat(np.arange(len(embeddings)), [len(part) for part in embeddings])
        vectors = np.concatenate(embeddings).astype(np.float32)
        np.savez(buffer, vectors=vectors, text_index=text_index.astype(np.int64))
        shape = f"{len(vectors)} window vectors of {vectors.shape[1]} for {len(embeddings)} texts"
    else:
        np.save(buffer, embeddings.astype(np.float32))
        shape = f"{embeddings.shape[0]} x {embeddings.shape[1]} embeddings"
    atomic_write_bytes(args.output, buffer.getvalue())
    print(f"wrote {shape} to {args.output}")
    return 0
