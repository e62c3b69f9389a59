"""`llm2comp` command line: one subcommand per file in this package.

A problem with what the user gave (an `LLM2CompError`: bad input, config, files, output location)
is printed as one line and exits with status 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from ..errors import LLM2CompError

SUBCOMMANDS = {
    "encode": "llm2comp.cli.encode_cmd",
    "search": "llm2comp.cli.search_cmd",
    "eval": "llm2comp.cli.eval_cmd",
    "train": "llm2comp.cli.train_cmd",
    "demo": "llm2comp.cli.demo_cmd",
    "study": "llm2comp.cli.study_cmd",
    "serve": "llm2comp.cli.serve_cmd",
    "upgrade": "llm2comp.cli.upgrade_cmd",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="llm2comp",
        description="Turn a decoder-only LLM into a text-embedding model by learning to compress "
        "(LLM2Comp). Without --model, commands use the embedded default SmolLM2-135M.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, module in SUBCOMMANDS.items():
        importlib.import_module(module).add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    takes_overrides = getattr(args, "accepts_overrides", False)  # `train` passes --key value to the config
    if extra and not takes_overrides:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return int((args.run(args, extra) if takes_overrides else args.run(args)) or 0)
    except LLM2CompError as error:
        print(f"llm2comp {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
