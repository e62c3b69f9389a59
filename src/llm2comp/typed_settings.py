"""Typed settings: dataclasses whose fields say their type, range and meaning on resume, built once
from plain mappings (YAML, command-line overrides) with errors that name the key.

    @dataclass
    class LoopSettings:
        lr: float = setting(1e-4, above=0)
        max_steps: int = setting(32000, minimum=1, on_resume="harmless")

    build(LoopSettings, {"lr": "3e-5"}, where="loop")    # -> LoopSettings(lr=3e-05, ...)

What a field accepts comes from its annotation: `int` (not bool, not 2.7), `float` (an int or a
YAML string such as "3e-5", which YAML 1.1 reads as text), `bool`, `str`, `dict`, `X | None`,
`list[T]` / `tuple[T, ...]` (every element checked and named, `snapshot_steps[1]`) and a nested
settings dataclass (a mapping built recursively, errors named `lora.r`). No number anywhere may be
NaN or infinite. `choices`, `minimum` (<=), `above` (<) and `below` bound a value; for a list they
apply to each element.

A field marked `flat=True` holds a component whose own fields are written at the top level of the
mapping (a stage config's `lr` belongs to its `loop` component); `flat_fields(cls)` lists the keys
a class reads that way, and `to_flat_dict` writes them back. A field with `config=False` is a
runtime option (a progress bar, a callback), never read from or written to a file.

`on_resume` says what a changed value means when a run resumes (training/resume.py): "meaning"
(the default: it changes what is trained), "harmless" (may change with `accept_resume_changes`) or
"free" (never compared).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import MISSING, field, fields

from .errors import ConfigError

RESUME_KINDS = ("meaning", "harmless", "free")


def setting(default=MISSING, *, factory=MISSING, on_resume: str = "meaning", choices: tuple | None = None,
            minimum: float | None = None, above: float | None = None, below: float | None = None,
            flat: bool = False, config: bool = True):
    """A settings field: `default` (or `factory` for a mutable one), what a change means on resume, the
    allowed values (`choices`, `minimum` <= v, `above` < v, v < `below`), whether it is a component
    written flat at the top level, and whether it is read from config files at all."""
    assert on_resume in RESUME_KINDS
    metadata = {"on_resume": on_resume, "choices": choices, "minimum": minimum, "above": above, "below": below,
                "flat": flat, "config": config}
    if factory is not MISSING:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


_TYPE_NAMES = {bool: "true or false", int: "a whole number", float: "a number", str: "a string",
               dict: "a mapping ({key: value, ...})", list: "a list", tuple: "a list"}


def config_fields(cls) -> list[dataclasses.Field]:
    """The fields of `cls` read from files (runtime-only fields left out), in declaration order."""
    return [spec for spec in fields(cls) if spec.metadata.get("config", True)]


def _hints(cls) -> dict:
    return typing.get_type_hints(cls)


def _type_name(hint) -> str:
    origin = typing.get_origin(hint) or hint
    if dataclasses.is_dataclass(origin):
        return "a mapping ({key: value, ...})"
    return _TYPE_NAMES.get(origin, str(hint))


class _Mismatch(Exception):
    """A value of the wrong type: `.expected` says what the field takes, `.where` the element (`[1]`)."""

    def __init__(self, expected: str, where: str = "", value=None):
        super().__init__(expected)
        self.expected, self.where, self.value = expected, where, value


def _converted(value, hint, meta: Mapping, where: str):
    """`value` as type `hint` (module docstring), or raise `_Mismatch`; nested settings are built."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        members = [arg for arg in typing.get_args(hint) if arg is not type(None)]
        if value is None and len(members) < len(typing.get_args(hint)):
            return None
        for member in members:
            try:
                return _converted(value, member, meta, where)
            except _Mismatch as mismatch:
                if mismatch.where:  # the right kind of container, a wrong element: name the element
                    raise
        optional = len(members) < len(typing.get_args(hint))
        names = list(dict.fromkeys(_type_name(m) for m in members if not (m is int and float in members)))
        raise _Mismatch(" or ".join(names) + (" or null" if optional else ""), value=value)
    kind = origin or hint
    if dataclasses.is_dataclass(kind):
        if isinstance(value, kind):
            return value
        if not isinstance(value, Mapping):
            raise _Mismatch(_type_name(kind), value=value)
        return build(kind, value, where=where)
    if kind in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise _Mismatch(_TYPE_NAMES[list], value=value)
        element = (typing.get_args(hint) or (typing.Any,))[0]
        items = [_element(item, element, meta, f"{where}[{index}]") for index, item in enumerate(value)]
        return tuple(items) if kind is tuple else items
    if kind is float:
        if isinstance(value, str):  # YAML 1.1 reads "3e-5" (no dot) as a string
            try:
                return float(value)
            except ValueError:
                raise _Mismatch(_TYPE_NAMES[float], value=value) from None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise _Mismatch(_TYPE_NAMES[float], value=value)
    if kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise _Mismatch(_TYPE_NAMES[int], value=value)
    if kind in (bool, str):
        if isinstance(value, kind):
            return value
        raise _Mismatch(_TYPE_NAMES[kind], value=value)
    if kind is dict:
        if isinstance(value, Mapping):
            return dict(value)
        raise _Mismatch(_TYPE_NAMES[dict], value=value)
    return value  # typing.Any or another annotation: not checked here


def _element(item, hint, meta: Mapping, where: str):
    try:
        item = _converted(item, hint, meta, where)
    except _Mismatch as mismatch:
        raise _Mismatch(mismatch.expected, mismatch.where or where, item) from None
    _check_bounds(item, meta, where)
    return item


def _non_finite(value, where: str = "") -> tuple[str, object] | None:
    """(where, value) of the first NaN or infinite float in `value` ("" for the value itself), else None."""
    if isinstance(value, float):
        return None if math.isfinite(value) else (where, value)
    if isinstance(value, Mapping):
        items = ((f"{where}.{key}", item) for key, item in value.items())
    elif isinstance(value, (list, tuple)):
        items = ((f"{where}[{index}]", item) for index, item in enumerate(value))
    else:
        return None
    return next((found for inner, item in items if (found := _non_finite(item, inner)) is not None), None)


def _check_bounds(value, meta: Mapping, where: str) -> None:
    if value is None or isinstance(value, (list, tuple)):
        return
    if meta.get("choices") and value not in meta["choices"]:
        raise ConfigError(f"{where} must be one of {', '.join(map(str, meta['choices']))}, got {value!r}")
    bounds = [(meta.get("minimum"), lambda v, b: v >= b, ">="), (meta.get("above"), lambda v, b: v > b, ">"),
              (meta.get("below"), lambda v, b: v < b, "<")]
    for bound, holds, sign in bounds:
        if bound is not None and isinstance(value, (int, float)) and not holds(value, bound):
            raise ConfigError(f"{where} must be {sign} {bound:g}, got {value!r}")


def check_field(spec: dataclasses.Field, value, hint, where: str | None = None):
    """`value` converted to field `spec`'s type (`hint`) and checked against its choices and bounds."""
    where = where or spec.name
    meta = spec.metadata
    try:
        value = _converted(value, hint, meta, where)
    except _Mismatch as mismatch:
        shown = mismatch.value if mismatch.where else value
        raise ConfigError(f"{mismatch.where or where} must be {mismatch.expected}, got {shown!r} "
                          f"({type(shown).__name__})") from None
    if value is None:
        return value
    bad = _non_finite(value) if not dataclasses.is_dataclass(value) else None
    if bad is not None:
        raise ConfigError(f"{where}{bad[0]} must be a finite number, got {bad[1]!r}")
    _check_bounds(value, meta, where)
    return value


def build(cls, values: Mapping, *, where: str = "", locate: Callable[[str], str] | None = None,
          label: str | None = None):
    """An instance of settings dataclass `cls` from `values` (its keys, flat components' keys included).

    Unknown keys are an error listing the known ones; every value is converted and checked once
    (`check_field`); missing keys take their defaults. `where` prefixes key names in messages
    (`lora` -> "lora.r must be ..."); `locate(key)`, when given, prefixes each message with where
    the key was set ("run.yaml:7: ..."); `label` prefixes the errors of the class's own cross-field
    checks (its `__post_init__`), which no single key owns ("pretrain config: ...").
    """
    if not isinstance(values, Mapping):
        raise ConfigError(f"{where or cls.__name__} must be a mapping, got {values!r}")
    known = flat_keys(cls)
    unknown = sorted(set(values) - set(known))
    if unknown:
        label = f"{where}: unknown key(s)" if where else "unknown key(s)"
        message = f"{label} {unknown}; known: {sorted(known)}"
        raise ConfigError(f"{locate(unknown[0])}: {message}" if locate else message)
    return _build(cls, values, where, locate, label)


def _build(cls, values: Mapping, where: str, locate, label: str | None = None):
    hints = _hints(cls)
    arguments = {}
    for spec in config_fields(cls):
        if spec.metadata.get("flat"):
            component = typing.get_origin(hints[spec.name]) or hints[spec.name]
            mine = {key: values[key] for key in flat_keys(component) if key in values}
            default = spec.default_factory() if spec.default_factory is not MISSING else None
            arguments[spec.name] = _build_component(component, mine, default, where, locate)
        elif spec.name in values:
            name = f"{where}.{spec.name}" if where else spec.name
            try:
                arguments[spec.name] = check_field(spec, values[spec.name], hints[spec.name], name)
            except ConfigError as error:
                raise ConfigError(f"{locate(spec.name)}: {error}") if locate else error from None
    if label is None:
        return cls(**arguments)
    try:
        return cls(**arguments)
    except ConfigError as error:
        raise ConfigError(f"{label}: {error}") from None


def _build_component(component, values: Mapping, default, where: str, locate):
    """A flat component from its keys, on top of the owner's default instance of it (if any)."""
    built = _build(component, values, where, locate)
    if default is None:
        return built
    given = {key for key in values}
    updates = {spec.name: getattr(built, spec.name) for spec in config_fields(component)
               if spec.name in given or spec.metadata.get("flat")}
    return dataclasses.replace(default, **updates)


def flat_keys(cls) -> list[str]:
    """The keys a mapping for `cls` may hold: its own config fields, flat components' keys inlined."""
    hints = _hints(cls)
    keys = []
    for spec in config_fields(cls):
        if spec.metadata.get("flat"):
            keys.extend(flat_keys(typing.get_origin(hints[spec.name]) or hints[spec.name]))
        else:
            keys.append(spec.name)
    return keys


@functools.cache
def flat_specs(cls) -> dict[str, tuple[dataclasses.Field, object]]:
    """key -> (field, default value) for every key of `flat_keys(cls)`, defaults as `cls()` gives them
    (built once per class; callers must not modify it)."""
    return _flat_specs(cls, cls())


def _flat_specs(cls, instance) -> dict:
    out = {}
    for spec in config_fields(cls):
        value = getattr(instance, spec.name)
        if spec.metadata.get("flat"):
            out.update(_flat_specs(type(value), value))
        else:
            out[spec.name] = (spec, plain(value))
    return out


def plain(value):
    """A settings value as YAML-ready data: dataclasses -> dicts, tuples -> lists."""
    if dataclasses.is_dataclass(value):
        return {spec.name: plain(getattr(value, spec.name)) for spec in config_fields(type(value))}
    if isinstance(value, (list, tuple)):
        return [plain(item) for item in value]
    if isinstance(value, Mapping):
        return {key: plain(item) for key, item in value.items()}
    return value


def to_flat_dict(settings) -> dict:
    """The settings as one flat mapping (flat components inlined): what `build` reads back."""
    out = {}
    for spec in config_fields(type(settings)):
        value = getattr(settings, spec.name)
        if spec.metadata.get("flat"):
            out.update(to_flat_dict(value))
        else:
            out[spec.name] = plain(value)
    return out


def normalized(cls, key: str, value):
    """`value` of flat key `key` of `cls` as `to_flat_dict` would write it (a partial `lora` block gets
    its defaults), for comparing what was saved by another version with what is given now; a value
    that does not convert is returned as is."""
    specs = flat_specs(cls)
    if key not in specs or value is None:
        return value
    spec = specs[key][0]
    owner = _owner_of(cls, key)
    try:
        return plain(check_field(spec, value, _hints(owner)[key]))
    except ConfigError:
        return value


def _owner_of(cls, key: str):
    hints = _hints(cls)
    for spec in config_fields(cls):
        if spec.metadata.get("flat"):
            component = typing.get_origin(hints[spec.name]) or hints[spec.name]
            if key in flat_keys(component):
                return _owner_of(component, key)
        elif spec.name == key:
            return cls
    raise KeyError(key)


def validate(settings) -> None:
    """Check every config field of a settings instance made directly in Python (`Terms(weight=-1)`)
    against its declaration, as `build` checks values read from files; call it from `__post_init__`."""
    hints = _hints(type(settings))
    for spec in config_fields(type(settings)):
        if not spec.metadata.get("flat"):
            object.__setattr__(settings, spec.name, check_field(spec, getattr(settings, spec.name), hints[spec.name]))
