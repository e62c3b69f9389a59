"""`llm2comp search`: a small semantic search, to see a model in use."""

from __future__ import annotations

from ..errors import InvalidSetting
from ..models.default_model import DEFAULT_MODEL_NAME
from .arguments import add_trust_remote_code, non_blank_text, positive_int
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
    add_long_text_arguments(parser)
    add_trust_remote_code(parser)
    parser.set_defaults(run=run)


def semantic_search(model, queries, documents, instruction: str | None, top: int):
    """Return, per query, the `top` (score, document) pairs, best first (MaxSim for multivector models)."""
    query_embeddings = model.encode_query(queries, instruction=instruction)
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
    model = load_for_use(args.model, trust_remote_code=args.trust_remote_code)
    model.set_long_texts(args.long_texts, args.overlap)
    check_overlap_applies(args.overlap, model.config.long_texts, saved=True)
    print_search(queries, semantic_search(model, queries, documents, instruction, args.top))
    return 0
