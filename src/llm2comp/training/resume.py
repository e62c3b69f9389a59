"""A resumed run must be the run that was started.

A checkpoint (and a finished stage's `model/training_config.yaml`) records the settings that made
it. Resuming, or reusing a finished stage, compares them with the settings given now, key by key
(`config.resume_kind`):

- "meaning" settings (learning rate, batch size, objective, seed, data, model, ... and the number
  of processes, which sets the global batch) change what is trained: any difference stops the run
  before a step is taken, listing the differences and the way out (another `output_dir`, or
  `--no-resume` to start this one over);
- "harmless" ones (`max_steps` to extend a run, `save_every`, `keep_last`, `log_every`, ...) may
  differ only when the caller says so (`--accept-resume-changes`); they are then logged;
- "free" ones (`output_dir`, the flag itself) are never compared.

A key missing from what was saved (a setting added in a later version) counts as its default, and
values are compared as the current version writes them (a `lora:` block saved without `dropout`
equals one with the default dropout). What each key means comes from the stage config classes,
which declare their settings here (`declare_settings`, recipes/stage_config.py).
"""

from __future__ import annotations

import logging
from pathlib import Path

from ..errors import ResumeMismatch
from ..typed_settings import flat_specs, normalized

log = logging.getLogger("llm2comp")

WAY_OUT = ("start a new run with another output_dir, or rerun with --no-resume to train this one from "
           "scratch (its checkpoints are then removed, and its finished model moved aside to model.previous-<time>/)")


# key -> (resume kind, default, the settings class that reads it), from every declared stage config
_DECLARED: dict[str, tuple[str, object, type]] = {}


def declare_settings(cls) -> None:
    """Record the flat keys of settings class `cls`: their resume kind and default."""
    for key, (spec, default) in flat_specs(cls).items():
        _DECLARED.setdefault(key, (spec.metadata.get("on_resume", "meaning"), default, cls))


def resume_kind(key: str) -> str:
    """"meaning", "harmless" or "free" (module docstring); unknown keys count as "meaning"."""
    return _DECLARED[key][0] if key in _DECLARED else "meaning"


def _value(settings: dict, key: str):
    if key not in _DECLARED:
        return settings.get(key)
    _, default, cls = _DECLARED[key]
    return normalized(cls, key, settings[key]) if key in settings else default


def setting_differences(saved: dict, current: dict) -> list[tuple[str, object, object]]:
    """(key, saved value, current value) for every compared key of `current` that differs."""
    keys = [key for key in current if resume_kind(key) != "free"]
    return [(key, _value(saved, key), _value(current, key)) for key in keys
            if _value(saved, key) != _value(current, key)]


def _describe(differences) -> str:
    return "; ".join(f"{key}: {old!r} then, {new!r} now" for key, old, new in differences)


def check_resume(saved: dict, current: dict, where: str | Path, *, accept_harmless: bool = False) -> list:
    """Raise `ResumeMismatch` unless `current` may continue what was `saved` at `where` (module docstring).

    Returns the accepted harmless differences (empty when nothing changed).
    """
    differences = setting_differences(saved, current)
    meaning = [d for d in differences if resume_kind(d[0]) == "meaning"]
    harmless = [d for d in differences if resume_kind(d[0]) == "harmless"]
    if meaning:
        raise ResumeMismatch(f"{where} was made with other settings ({_describe(meaning)}); these change what is "
                             f"trained, so it is not continued or reused. To go on: {WAY_OUT}")
    if harmless and not accept_harmless:
        raise ResumeMismatch(f"{where} was made with other settings ({_describe(harmless)}). These do not change "
                             "what is trained: to continue with them pass --accept-resume-changes "
                             f"(accept_resume_changes: true); otherwise {WAY_OUT}")
    if harmless:
        log.info("resuming %s with changed settings: %s", where, _describe(harmless))
    return harmless
