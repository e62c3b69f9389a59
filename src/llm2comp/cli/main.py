"""`llm2comp` command line: one subcommand per file in this package.

A problem with what the user gave (an `LLM2CompError`: bad input, config, files, output location)
is printed as one line and exits with status 2; anything else is a bug and keeps its traceback.
Ctrl-C (SIGINT) prints one line and exits with status 130; what was written stays consistent
(every output is written atomically), so `train`, `demo` and `study` resume when run again.
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
    "export": "llm2comp.cli.export_cmd",
    "plan": "llm2comp.cli.plan_cmd",
    "configs": "llm2comp.cli.configs_cmd",
}


INTERRUPTED = {  # what Ctrl-C leaves, by command
    "train": "interrupted; rerun the same command to resume",
    "demo": "interrupted; rerun the same command to resume",
    "study": "interrupted; rerun the same command to resume",
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
    except KeyboardInterrupt:  # Ctrl-C: one line, the shell's status for SIGINT; every write is atomic
        print(f"\nllm2comp {args.command}: {INTERRUPTED.get(args.command, 'interrupted')}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
