"""`llm2comp search`: a small semantic search, to see a model in use.

`--precision binary` searches a binary index: the documents are kept only as their sign bits
(ceil(d / 8) bytes each) and ranked by Hamming distance to the query's bits. `--rescore-multiplier M`
then takes the best `--top` x M of them and ranks those again by the cosine of the float query with
each document's bits unpacked to +-1 (models/quantization.py `rank_binary`): the rescoring reads the
binary index only, no float document embedding is kept.
"""

from __future__ import annotations

from ..errors import InvalidSetting
from ..models.default_model import DEFAULT_MODEL_NAME
from .arguments import add_backend, add_trust_remote_code, non_blank_text, positive_int

SEARCH_PRECISIONS = ("float32", "binary")
from .long_text_options import add_long_text_arguments, check_overlap_applies

EXAMPLE_DOCUMENTS = [
    "The Eiffel Tower is a wrought-iron lattice tower in Paris, France.",
    "Photosynthesis converts light energy into chemical energy stored in glucose.",
    "The stock market fell sharply after the central bank raised interest rates.",
    "A balanced diet includes vegetables, fruit, whole grains and protein.",
    "The Python programming language emphasises code readability.",
    "Mount Everest is the highest mountain above sea level.",
]
EXAMPLE_QUERIES = [
    "Which landmark is in the French capital?",
    "How do plants make food from sunlight?",
    "what should I eat to stay healthy",
]
DEFAULT_INSTRUCTION = "Given a question, retrieve passages that answer the question"


def add_parser(sub) -> None:
    parser = sub.add_parser("search", help="rank documents for queries (a small semantic search)",
                            description="Embed queries (with an instruction) and documents (without), "
                            "and print each query's top matches by cosine similarity.")
    parser.add_argument("--model", type=non_blank_text, default=DEFAULT_MODEL_NAME)
    parser.add_argument("--query", action="append", type=non_blank_text,
                        help="a query (repeatable; default: examples)")
    parser.add_argument("--documents", type=non_blank_text, default=None,
                        help=".txt/.jsonl file of documents, or - for the standard input (default: examples)")
    parser.add_argument("--instruction", default=DEFAULT_INSTRUCTION,
                        help="instruction given to the queries ('' = only the model's saved query prompt, if any; "
                        "default: a retrieval instruction)")
    parser.add_argument("--top", type=positive_int, default=2, help="matches shown per query (>= 1)")
    parser.add_argument("--precision", choices=SEARCH_PRECISIONS, default="float32",
                        help="float32: cosine of float embeddings (default); binary: documents as packed sign bits, "
                        "ranked by Hamming distance (the score shown: 1 - 2 x distance / d)")
    parser.add_argument("--rescore-multiplier", type=positive_int, default=None,
                        help="with --precision binary: rank the best --top x N by Hamming, then rescore those by "
                        "the float query . the documents' +-1 bits (cosine; default: no rescoring)")
    add_long_text_arguments(parser)
    add_trust_remote_code(parser)
    add_backend(parser)
    parser.set_defaults(run=run)


def semantic_search(model, queries, documents, instruction: str | None, top: int, precision: str = "float32",
                    rescore_multiplier: int | None = None):
    """Return, per query, the `top` (score, document) pairs, best first (MaxSim for multivector models).

    `precision="binary"`: documents as binary codes, Hamming search, and with `rescore_multiplier` the
    float rescoring of the best `top * rescore_multiplier` (module docstring)."""
    from ..models.quantization import check_precision, rank_binary

    check_precision(precision, SEARCH_PRECISIONS)
    if rescore_multiplier is not None and precision != "binary":
        raise InvalidSetting("--rescore-multiplier applies to --precision binary only (float32 ranks exactly)")
    if precision == "binary" and model.config.long_texts == "multivector":
        raise InvalidSetting("--precision binary searches one vector per text; the model reads long texts as "
                             "multivector: add --long-texts truncate or segments")
    query_embeddings = model.encode_query(queries, instruction=instruction)
    if precision == "binary":
        codes = model.encode_document(documents, precision="binary")
        indices, scores = rank_binary(query_embeddings, codes, top, rescore_multiplier)
        return [[(float(s), documents[i]) for s, i in zip(values, rows)]
                for values, rows in zip(scores.tolist(), indices.tolist())]
    document_embeddings = model.encode_document(documents)
    scores = model.similarity(query_embeddings, document_embeddings)
    best = scores.topk(min(top, len(documents)), dim=1)
    return [[(float(s), documents[i]) for s, i in zip(values, indices)]
            for values, indices in zip(best.values.tolist(), best.indices.tolist())]


def print_search(queries, results) -> None:
    for query, hits in zip(queries, results):
        print(f"\nquery: {query}")
        for rank, (score, document) in enumerate(hits, start=1):
            print(f"  {rank}. {score:.3f}  {document}")


def run(args) -> int:
    from ..models.loading import load_for_use
    from ..text_files import read_texts

    check_overlap_applies(args.overlap, args.long_texts)
    documents = read_texts(args.documents) if args.documents is not None else EXAMPLE_DOCUMENTS
    if any(isinstance(document, tuple) for document in documents):
        raise InvalidSetting(f"--documents {args.documents}: rows carry an 'instruction' field, but documents are "
                             "embedded without instruction (queries get --instruction); remove the field")
    queries = args.query or EXAMPLE_QUERIES
    instruction = args.instruction if args.instruction.strip() else None
    if args.rescore_multiplier is not None and args.precision != "binary":
        raise InvalidSetting("--rescore-multiplier applies to --precision binary only (float32 ranks exactly)")
    if args.precision == "binary" and args.long_texts == "multivector":
        raise InvalidSetting("--precision binary searches one vector per text; --long-texts multivector gives "
                             "several: use --long-texts truncate or segments")
    model = load_for_use(args.model, trust_remote_code=args.trust_remote_code, backend=args.backend)
    model.set_long_texts(args.long_texts, args.overlap)
    check_overlap_applies(args.overlap, model.config.long_texts, saved=True)
    print_search(queries, semantic_search(model, queries, documents, instruction, args.top, args.precision,
                                          args.rescore_multiplier))
    return 0
