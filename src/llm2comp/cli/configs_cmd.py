"""`llm2comp configs`: list the recipes shipped with the package, copy one out to edit it.

    llm2comp configs list                      # name, kind and what each recipe is
    llm2comp configs copy quickstart my.yaml   # then: llm2comp train --config my.yaml
    llm2comp configs copy accelerate_fsdp .    # into a folder: ./accelerate_fsdp.yaml

Commands that read a recipe (`train`, `demo`, `study`, `plan`) take its bare name as well.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

EPILOG = """\
examples:
  llm2comp configs list
  llm2comp configs copy quickstart my_quickstart.yaml
  llm2comp configs copy deepspeed_zero2 configs/      # a folder: configs/deepspeed_zero2.json
  llm2comp train --config quickstart                 # a packaged recipe by name; a path always wins
"""


def add_parser(sub) -> None:
    parser = sub.add_parser("configs", help="list the packaged recipes, or copy one to edit it",
                            description="The YAML recipes (and accelerate / DeepSpeed files) shipped with "
                            "llm2comp. Any command that reads a recipe takes its name (`quickstart` or "
                            "`quickstart.yaml`); an existing path of that name wins.", epilog=EPILOG,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    listing = actions.add_parser("list", help="every packaged recipe: name, kind, one-line description")
    listing.set_defaults(run=run_list)
    copy = actions.add_parser("copy", help="copy a packaged recipe to a file or into a folder")
    copy.add_argument("name", help="a packaged recipe (`llm2comp configs list`), with or without its suffix")
    copy.add_argument("dest", help="the file to write, or an existing folder to copy it into under its own name")
    copy.add_argument("--force", action="store_true", help="overwrite DEST when it exists")
    copy.set_defaults(run=run_copy)


def recipe_kind(path: Path) -> str:
    """What a recipe file is: a pipeline, a stage (with its name), a study, an accelerate or DeepSpeed config."""
    import yaml

    try:
        data = json.loads(path.read_text()) if path.suffix == ".json" else yaml.safe_load(path.read_text())
    except (ValueError, yaml.YAMLError):
        return "unreadable"
    if not isinstance(data, dict):
        return "yaml"
    if path.suffix == ".json":
        return "deepspeed" if "zero_optimization" in data else "json"
    if "stages" in data:
        return "pipeline"
    if "arms" in data:
        return "study"
    if "compute_environment" in data or "distributed_type" in data:
        return "accelerate"
    return f"stage: {data['stage']}" if "stage" in data else "stage"


def recipe_description(path: Path) -> str:
    """The text of the file's first comment line; for a file without one (JSON), what its kind says."""
    for line in path.read_text().splitlines():
        if line.strip().startswith("#"):
            return line.strip().lstrip("#").strip()
        if line.strip():
            break
    if recipe_kind(path) == "deepspeed":
        stage = json.loads(path.read_text())["zero_optimization"].get("stage", "?")
        return f"DeepSpeed settings, ZeRO stage {stage} (read by an accelerate config)"
    return recipe_kind(path)


def run_list(args) -> int:
    from ..recipes.packaged import RECIPE_DIR, packaged_recipes

    recipes = packaged_recipes()
    rows = [(name, recipe_kind(path), recipe_description(path)) for name, path in recipes.items()]
    width = [max((len(row[i]) for row in rows), default=0) for i in range(2)]
    for name, kind, description in rows:
        print(f"{name:<{width[0]}}  {kind:<{width[1]}}  {description}".rstrip())
    print(f"\n{len(rows)} recipes in {RECIPE_DIR}; use a name as --config, or `llm2comp configs copy NAME DEST`")
    return 0


def run_copy(args) -> int:
    from ..atomic import atomic_write_bytes
    from ..errors import OutputError
    from ..recipes.packaged import packaged_recipe

    source = packaged_recipe(args.name)
    dest = Path(args.dest).expanduser()
    if dest.is_dir() or args.dest.endswith(("/", os.sep)):  # a folder: the recipe under its own file name
        dest = dest / source.name
    if dest.exists() and not args.force:
        raise OutputError(f"{dest} already exists; not overwritten (--force replaces it)")
    atomic_write_bytes(dest, source.read_bytes())
    print(f"copied {source.name} to {dest}")
    return 0
