"""`llm2comp encode`: embed a text file into a .npy matrix (one row per text, input order).

With `--long-texts multivector` the output is a .npz file: `vectors` (all windows, d) float32 and
`text_index` (one int per window: the input line it belongs to), windows in text order.

`--precision` writes sentence-transformers' quantised codes instead of float32 (models/quantization.py):
int8 / uint8 (n, d), or binary / ubinary (n, ceil(d / 8)): the sign bits packed 8 to a byte, as int8
(minus 128) / uint8. int8 / uint8 take their ranges from `--calibration`, a float .npy of
representative embeddings, never from the texts being encoded.
"""

from __future__ import annotations

import io

import numpy as np

from ..atomic import atomic_write_bytes, ensure_writable_file
from ..errors import InvalidSetting
from ..models.default_model import DEFAULT_MODEL_NAME
from ..models.quantization import PRECISIONS, code_dtype
from .arguments import add_backend, add_trust_remote_code, device_name, non_blank_text, positive_int
from .long_text_options import add_long_text_arguments, check_overlap_applies


def add_parser(sub) -> None:
    parser = sub.add_parser(
        "encode",
        help="embed texts from a .txt/.jsonl file into a .npy file",
        description="Embed texts with an LLM2Comp model (or a plain backbone) and write a float32 .npy "
        "matrix, one row per text in input order. .txt: one text per line (blank lines skipped); "
        ".jsonl: objects with a 'text' field and an optional 'instruction' (queries only). With --precision "
        "int8/uint8 the matrix is (texts, d) of that dtype; with binary/ubinary it is (texts, ceil(d/8)): the "
        "sign bits packed 8 to a byte (np.packbits order), int8 (minus 128) / uint8, as sentence-transformers "
        "writes them.",
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
    parser.add_argument("--precision", choices=PRECISIONS, default="float32",
                        help="float32 (default); int8 / uint8: (texts, d) codes, needs --calibration; binary / "
                        "ubinary: (texts, ceil(d/8)) packed sign bits as int8 / uint8 (after --normalize)")
    parser.add_argument("--calibration", type=non_blank_text, default=None,
                        help="with --precision int8/uint8: a float .npy (n >= 2, d) of representative embeddings "
                        "(e.g. an earlier float32 `llm2comp encode`, same --normalize); its per-dimension min/max "
                        "are the code ranges, so a text's code never depends on the other input texts")
    parser.add_argument("--pooling", choices=["memory_mean", "mean", "last"], default=None,
                        help="for a plain backbone: memory_mean (default), or mean/last token baselines")
    parser.add_argument("--dtype", default="float32", help="float32 | bfloat16 | float16")
    parser.add_argument("--device", type=device_name, default=None, help="cpu, cuda, cuda:1, ... (default: cpu)")
    add_long_text_arguments(parser)
    add_trust_remote_code(parser)
    add_backend(parser)
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
    calibration = _read_calibration(args.calibration, args.precision)
    ensure_writable_file(args.output)  # before the model loads and encodes everything
    if args.field is not None and format_suffix(args.input) not in JSONL_SUFFIXES:
        raise InvalidSetting(f"--field {args.field} applies only to a .jsonl input; {args.input} is read as one text "
                             "per line")
    texts = read_texts(args.input, field=args.field or "text")
    model = load_for_use(args.model, args.pooling, dtype=args.dtype, device=args.device,
                         trust_remote_code=args.trust_remote_code, backend=args.backend)
    model.set_long_texts(args.long_texts, args.overlap)
    check_overlap_applies(args.overlap, model.config.long_texts, saved=True)
    _check_calibration_width(calibration, args.calibration, model.hidden_size)
    embeddings = model.encode(texts, batch_size=args.batch_size, show_progress_bar=True,
                              normalize_embeddings=args.normalize, instruction=args.instruction,
                              precision=args.precision, calibration_embeddings=calibration)
    dtype = code_dtype(args.precision)
    kind = "" if args.precision == "float32" else f" {args.precision} ({dtype.name})"
    buffer = io.BytesIO()
    if multivector:
        text_index = np.repeat(np.arange(len(embeddings)), [len(part) for part in embeddings])
        vectors = np.concatenate(embeddings).astype(dtype)
        np.savez(buffer, vectors=vectors, text_index=text_index.astype(np.int64))
        shape = f"{len(vectors)}{kind} window vectors of {vectors.shape[1]} for {len(embeddings)} texts"
    else:
        np.save(buffer, embeddings.astype(dtype))
        shape = f"{embeddings.shape[0]} x {embeddings.shape[1]}{kind} embeddings"
    atomic_write_bytes(args.output, buffer.getvalue())
    print(f"wrote {shape} to {args.output}")
    return 0


def _read_calibration(path: str | None, precision: str) -> np.ndarray | None:
    """The --calibration embeddings (float, 2-D, at least 2 rows), read and checked before the model loads;
    required by int8 / uint8 and refused with any other precision."""
    from ..errors import CorruptFile, MissingFile
    from ..models.quantization import CALIBRATED, check_calibration

    if path is None:
        if precision in CALIBRATED:
            raise InvalidSetting(f"--precision {precision} needs --calibration FILE.npy: float embeddings of "
                                 "representative texts (e.g. an earlier float32 `llm2comp encode`, same --normalize), "
                                 "whose per-dimension min/max are the code ranges. Ranges taken from the input itself "
                                 "would make a text's code depend on the other texts")
        return None
    if precision not in CALIBRATED:
        raise InvalidSetting(f"--calibration applies to --precision int8 or uint8 only; --precision is {precision}")
    try:
        array = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise MissingFile(f"--calibration {path}: no such file") from None
    except (OSError, ValueError) as error:
        raise CorruptFile(f"--calibration {path}: not a readable .npy file ({error})") from None
    if not isinstance(array, np.ndarray) or array.dtype.kind != "f":
        found = f"dtype {array.dtype}" if isinstance(array, np.ndarray) else "a .npz archive"
        raise InvalidSetting(f"--calibration {path}: expected float embeddings (a float32 `llm2comp encode` "
                             f"output), found {found}")
    name = f"--calibration {path}"
    return check_calibration(precision, None, array, names=("ranges", name))["calibration_embeddings"]


def _check_calibration_width(calibration: np.ndarray | None, path: str | None, dim: int) -> None:
    if calibration is not None and calibration.shape[1] != dim:
        raise InvalidSetting(f"--calibration {path}: embeddings of width {calibration.shape[1]}, but the model's are "
                             f"{dim} wide; encode the calibration texts with the same model")
