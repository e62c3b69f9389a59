"""`llm2comp encode`: embed a text file into a .npy matrix (one row per text, input order).

With `--long-texts multivector` the output is a .npz file: `vectors` (all windows, d) float32 and
`text_index` (one int per window: the input line it belongs to), windows in text order.
"""

from __future__ import annotations

import io

import numpy as np

from ..atomic import atomic_write_bytes
from ..models.default_model import DEFAULT_MODEL_NAME
from .long_text_options import add_long_text_arguments


def add_parser(sub) -> None:
    parser = sub.add_parser(
        "encode",
        help="embed texts from a .txt/.jsonl file into a .npy file",
        description="Embed texts with an LLM2Comp model (or a plain backbone) and write a float32 .npy "
        "matrix, one row per text in input order. .txt: one text per line (blank lines skipped); "
        ".jsonl: objects with a 'text' field and an optional 'instruction' (queries only).",
    )
    parser.add_argument("--model", default=DEFAULT_MODEL_NAME,
                        help=f"saved LLM2Comp folder, Hub id or local backbone folder (default: {DEFAULT_MODEL_NAME})")
    parser.add_argument("--input", required=True, help="texts.txt or texts.jsonl")
    parser.add_argument("--output", required=True,
                        help="where to write the embeddings (.npy; .npz with --long-texts multivector)")
    parser.add_argument("--field", default="text", help="JSONL field holding the text (default: text)")
    parser.add_argument("--instruction", default=None, help="instruction prepended to every text (queries)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--normalize", action="store_true", help="L2-normalise the embeddings")
    parser.add_argument("--pooling", choices=["memory_mean", "mean", "last"], default=None,
                        help="for a plain backbone: memory_mean (default), or mean/last token baselines")
    parser.add_argument("--dtype", default="float32", help="float32 | bfloat16 | float16")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: cpu)")
    add_long_text_arguments(parser)
    parser.set_defaults(run=run)


def load_for_cli(model: str, pooling: str | None, dtype: str, device: str | None):
    from ..models.config import is_llm2comp_folder
    from ..models.encoder import LLM2Comp

    if pooling in ("mean", "last"):
        if is_llm2comp_folder(model):
            raise ValueError(f"--pooling {pooling} is for plain backbones; {model} is a trained LLM2Comp model")
        return LLM2Comp.from_pretrained(model, num_memory_tokens=0, pooling=pooling, attention="causal",
                                        dtype=dtype, device=device)
    return LLM2Comp.from_pretrained(model, dtype=dtype, device=device)


def run(args) -> int:
    from ..text_files import read_texts

    multivector = args.long_texts == "multivector"
    suffix = ".npz" if multivector else ".npy"
    if not str(args.output).endswith(suffix):
        raise ValueError(f"--output {args.output}: expected a {suffix} file"
                         + (" (--long-texts multivector writes vectors + text_index)" if multivector else ""))
    texts = read_texts(args.input, field=args.field)
    model = load_for_cli(args.model, args.pooling, args.dtype, args.device)
    model.set_long_texts(args.long_texts, args.overlap)
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
