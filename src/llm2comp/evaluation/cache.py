"""`cached_evaluate`: evaluate once; reuse the saved results only when nothing that made them changed.

    from llm2comp.evaluation import EvalSettings, cached_evaluate
    results = cached_evaluate("runs/stage3/final/model", "offline", EvalSettings(max_items=100), "eval/trained")

The results are written (atomically: `report.write_report`) with a `cache_key` made of
- the model: a folder (or file) by its resolved path and a hash of the name, size and modification
  time of every file in it (the default alias: its converted folder; a Hub id: the id alone, which
  cannot tell a new revision); a model object by a hash of its weights and its config, or by the
  `model_identity` the caller gives;
- the suite: its name, seed, task names and a hash of the tasks' data after subsampling (a YAML
  suite also by its resolved path); an MTEB suite by its task names and the mteb version;
- every setting of `EvalSettings.key()` (all but the progress bar), the report name, and the
  llm2comp version (a new version may score differently).

A saved results.json is reused only when its `cache_key` equals the new one; anything else (another
setting, a retrained model, an edited suite file, results from an older llm2comp without a key, an
unreadable file) is evaluated again, with one line saying why.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ..errors import CorruptFile, InvalidSetting
from .report import RESULTS_NAME, load_results
from .settings import EvalSettings, check_settings
from .suites import MTEB_SUITE_NAMES, Suite, get_suite

CACHE_KEY_FIELD = "cache_key"
KEY_FORMAT = 1


def cached_evaluate(model, suite: str | Path | Suite, settings: EvalSettings | None, output_dir: str | Path, *,
                    name: str | None = None, model_identity=None) -> dict:
    """`evaluate(model, suite, settings, output_dir=output_dir, name=name)`, or the results.json already in
    `output_dir` when its key (module docstring) matches. `model_identity` (a str or JSON value) names a
    model object that has no weights to hash; it is refused for a model given by name or path."""
    from .runner import run_evaluation, write_outputs

    settings = check_settings(settings)
    output_dir = Path(output_dir)
    ready = suite if _is_mteb(suite) else get_suite(suite, settings.max_items, settings.seed)
    label = name if name is not None else (str(model) if isinstance(model, (str, os.PathLike)) else None)
    key = evaluation_key(model, suite, ready, settings, label, model_identity=model_identity, exclude=output_dir)
    saved = output_dir / RESULTS_NAME
    reason = _why_not_reusable(saved, key)
    if reason is None:
        tqdm.write(f"reusing {saved} (same model, suite and settings)")
        return load_results(saved)
    if saved.exists():
        tqdm.write(f"{saved}: {reason}; evaluating again")
    results = run_evaluation(model, ready, settings, output_dir=output_dir, name=name)
    results[CACHE_KEY_FIELD] = key
    write_outputs(results, None, output_dir)  # results.json and report.md, each written atomically
    return results


def evaluation_key(model, suite_spec, suite: str | Suite, settings: EvalSettings, name: str | None, *,
                   model_identity=None, exclude: Path | None = None) -> dict:
    """The cache key (module docstring) as plain JSON values; `suite` is `suite_spec` read by `get_suite`."""
    from .. import __version__

    key = {"format": KEY_FORMAT, "llm2comp_version": __version__,
           "model": describe_model_identity(model, model_identity, exclude), "suite": suite_identity(suite_spec, suite),
           "settings": settings.key(), "name": name}
    return json.loads(json.dumps(key, sort_keys=True, default=str))  # the form it takes once read back


def describe_model_identity(model, model_identity=None, exclude: Path | None = None) -> dict:
    """What identifies `model` for the cache: files for a name or path, weights and config for an object."""
    if isinstance(model, (str, os.PathLike)):
        if model_identity is not None:
            raise InvalidSetting(f"model_identity applies to a model object; {model} is identified by its files")
        return _reference_identity(model, exclude)
    if model_identity is not None:
        return {"given": model_identity}
    state_dict = getattr(model, "state_dict", None)
    if not callable(state_dict):
        raise InvalidSetting(f"cached_evaluate cannot tell whether saved results were made with this "
                             f"{type(model).__name__} (it has no weights to hash); pass model_identity='...' naming "
                             "it, or give the model as a folder")
    config = getattr(model, "config", None)
    config = dataclasses.asdict(config) if dataclasses.is_dataclass(config) else repr(config)
    return {"type": f"{type(model).__module__}.{type(model).__qualname__}", "config": config,
            "weights_sha256": _weights_hash(state_dict())}


def suite_identity(suite_spec, suite: str | Suite) -> dict:
    """Name, seed, task names and a hash of the tasks' data (an MTEB suite: task names and mteb version)."""
    if isinstance(suite, str):  # an MTEB suite
        from .mteb_adapter import MTEB_SUITES

        try:
            from importlib.metadata import version

            mteb_version = version("mteb")
        except Exception:  # not installed: evaluate says so
            mteb_version = None
        return {"name": suite, "tasks": list(MTEB_SUITES[suite]), "mteb": mteb_version}
    digest = hashlib.sha256()
    _feed(digest, suite.tasks)
    identity = {"name": suite.name, "seed": suite.seed, "tasks": [task.name for task in suite.tasks],
                "content_sha256": digest.hexdigest()}
    if isinstance(suite_spec, (str, os.PathLike)) and Path(suite_spec).is_file():
        identity["file"] = str(Path(suite_spec).resolve())
    return identity


def _is_mteb(suite) -> bool:
    return not isinstance(suite, Suite) and str(suite) in MTEB_SUITE_NAMES


def _reference_identity(reference, exclude: Path | None) -> dict:
    from ..models.default_model import is_default_model_name, resolve_default_model

    path = Path(reference).expanduser()
    if not path.exists() and isinstance(reference, str) and is_default_model_name(reference):
        path = resolve_default_model()  # its converted folder (made once; loading needs it anyway)
    if not path.exists():
        return {"reference": str(reference)}  # a Hub id: evaluate checks that it exists
    return {"path": str(path.resolve()), **_files_fingerprint(path, exclude)}


def _files_fingerprint(path: Path, exclude: Path | None) -> dict:
    """Hash of (relative name, size, mtime) of every visible file under `path` (or of `path` itself)."""
    excluded = exclude.resolve() if exclude is not None else None
    entries = []
    if path.is_file():
        stat = path.stat()
        entries.append([path.name, stat.st_size, stat.st_mtime_ns])
    for root, dirs, files in os.walk(path):  # nothing when `path` is a file
        here = Path(root)
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and (here / d).resolve() != excluded)
        for file in sorted(files):
            if file.startswith("."):  # hidden temporaries of atomic writes
                continue
            try:
                stat = (here / file).stat()
            except FileNotFoundError:  # a dangling link
                continue
            entries.append([(here / file).relative_to(path).as_posix(), stat.st_size, stat.st_mtime_ns])
    digest = hashlib.sha256(json.dumps(entries).encode()).hexdigest()
    return {"files": len(entries), "files_sha256": digest}


def _weights_hash(state_dict) -> str:
    import torch

    digest = hashlib.sha256()
    for name, tensor in state_dict.items():
        if not isinstance(tensor, torch.Tensor):
            continue
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}:".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _feed(digest, value) -> None:
    """Add `value` (tasks: dataclasses of lists, dicts, arrays, numbers, text) to `digest`, unambiguously."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        digest.update(f"<{type(value).__qualname__}>".encode())
        for item in dataclasses.fields(value):
            digest.update(f"{item.name}=".encode())
            _feed(digest, getattr(value, item.name))
    elif isinstance(value, np.ndarray) and value.dtype != object:
        digest.update(f"nd:{value.dtype}:{value.shape}:".encode())
        digest.update(np.ascontiguousarray(value).tobytes())
    elif isinstance(value, np.ndarray):
        _feed(digest, value.tolist())
    elif isinstance(value, dict):
        digest.update(f"{{{len(value)}:".encode())
        for k in sorted(value, key=repr):
            _feed(digest, k)
            _feed(digest, value[k])
    elif isinstance(value, (list, tuple)):
        digest.update(f"[{len(value)}:".encode())
        for item in value:
            _feed(digest, item)
    elif isinstance(value, (set, frozenset)):
        _feed(digest, sorted(value, key=repr))
    else:
        text = repr(value.item() if isinstance(value, np.generic) else value)
        digest.update(f"{type(value).__name__}:{len(text)}:{text}".encode())


def _why_not_reusable(saved: Path, key: dict) -> str | None:
    """None when `saved` holds results with this key; else what differs."""
    if not saved.is_file():
        return "no saved results"
    try:
        old = load_results(saved).get(CACHE_KEY_FIELD)
    except CorruptFile as error:
        return f"unreadable ({error})"
    if old == key:
        return None
    if not isinstance(old, dict):
        return "saved without a cache key (by an older llm2comp or by evaluate())"
    changed = [part for part in key if old.get(part) != key[part]]
    if "settings" in changed:
        settings = [name for name in key["settings"] if (old.get("settings") or {}).get(name) != key["settings"][name]]
        changed[changed.index("settings")] = f"settings ({', '.join(settings)})"
    return f"the saved results differ in: {', '.join(changed)}"
