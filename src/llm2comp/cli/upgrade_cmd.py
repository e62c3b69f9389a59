"""`llm2comp upgrade`: bring a model folder saved by an older llm2comp to the current format, in place."""

from __future__ import annotations

from ..errors import MissingFile


def add_parser(sub) -> None:
    parser = sub.add_parser(
        "upgrade",
        help="add the sentence-transformers files to a model folder from an older llm2comp",
        description="Upgrade a saved LLM2Comp folder in place (format 1 -> 2: adds modules.json, "
        "config_sentence_transformers.json and llm2comp_st_module.json, so that "
        "SentenceTransformer(path, trust_remote_code=True) loads it). Weights are not touched.",
    )
    parser.add_argument("--model", required=True, help="the saved LLM2Comp folder")
    parser.set_defaults(run=run)


def run(args) -> int:
    from ..models.config import FORMAT_VERSION, is_llm2comp_folder
    from ..models.st_files import upgrade_folder

    if not is_llm2comp_folder(args.model):
        raise MissingFile(f"{args.model} is not an LLM2Comp model folder (no llm2comp_config.json)")
    changed = upgrade_folder(args.model)
    print(f"{args.model}: {'upgraded to' if changed else 'already at'} format {FORMAT_VERSION}")
    return 0
