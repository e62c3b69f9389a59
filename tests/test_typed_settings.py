"""The typed-settings engine: one build from a flat mapping, every value checked once, errors named."""

from dataclasses import dataclass

import pytest

from llm2comp.errors import ConfigError
from llm2comp.recipes.stage_config import stage_config, stage_config_from
from llm2comp.training.resume import check_resume
from llm2comp.typed_settings import build, flat_keys, normalized, setting, to_flat_dict


@dataclass
class Inner:
    r: int = setting(4, minimum=1)
    names: tuple[str, ...] = setting(("a",), choices=("a", "b"))


@dataclass
class Part:
    rate: float = setting(0.5, above=0, below=1)
    steps: list[int] = setting(factory=list, minimum=1)


@dataclass
class Outer:
    name: str = setting("x")
    inner: Inner = setting(factory=Inner)
    part: Part = setting(factory=lambda: Part(rate=0.25), flat=True)
    shown: bool = setting(True, config=False)


def test_flat_components_nested_blocks_and_runtime_fields():
    assert flat_keys(Outer) == ["name", "inner", "rate", "steps"]  # `shown` is runtime-only
    built = build(Outer, {"rate": "3e-1", "inner": {"r": 2}, "steps": [3, 5]})
    assert built.part == Part(rate=0.3, steps=[3, 5]) and built.inner == Inner(r=2)
    assert build(Outer, {}).part.rate == 0.25  # the owner's default of its component
    assert to_flat_dict(built) == {"name": "x", "inner": {"r": 2, "names": ["a"]}, "rate": 0.3, "steps": [3, 5]}
    assert build(Outer, to_flat_dict(built)) == built


@pytest.mark.parametrize("values, message", [
    ({"steps": [1, "two"]}, r"steps\[1\] must be a whole number, got 'two' \(str\)"),
    ({"steps": [1, 0]}, r"steps\[1\] must be >= 1, got 0"),
    ({"steps": 3}, r"steps must be a list, got 3"),
    ({"inner": {"names": ["a", "c"]}}, r"inner.names\[1\] must be one of a, b, got 'c'"),
    ({"inner": {"r": True}}, r"inner.r must be a whole number, got True \(bool\)"),
    ({"inner": {"q": 1}}, r"inner: unknown key\(s\) \['q'\]"),
    ({"inner": 5}, r"inner must be a mapping"),
    ({"rate": float("nan")}, r"rate must be a finite number, got nan"),
    ({"rate": 1.0}, r"rate must be < 1, got 1.0"),
    ({"shown": False}, r"unknown key\(s\) \['shown'\]"),
])
def test_every_value_is_checked_and_named(values, message):
    with pytest.raises(ConfigError, match=message):
        build(Outer, values)


def test_errors_carry_where_the_key_was_set():
    with pytest.raises(ConfigError, match=r"^run.yaml:7: steps\[0\] must be a whole number"):
        build(Outer, {"steps": ["a"]}, locate=lambda key: f"run.yaml:{7 if key == 'steps' else 1}")


def test_stage_configs_are_typed_per_stage():
    pretrain = stage_config(lr=5e-3, snapshot_steps=[2, 4], alignment_weight=1.0)
    assert type(pretrain).__name__ == "PretrainConfig"
    assert (pretrain.loop.lr, pretrain.terms.alignment_weight, pretrain.snapshot_steps) == (5e-3, 1.0, [2, 4])
    assert type(stage_config(objective="mntp")).__name__ == "MntpConfig"
    assert type(stage_config(stage="supervised")).__name__ == "SupervisedConfig"
    with pytest.raises(ConfigError, match=r"snapshot_steps: snapshot_steps\[0\] must be a whole number"):
        stage_config_from({"snapshot_steps": ["a"]})  # before: accepted, failed after the model loaded
    with pytest.raises(ConfigError, match=r"objective mntp \(stage 'pretrain'\) does not read 'alignment_weight'"):
        stage_config_from({"objective": "mntp", "alignment_weight": 1.0})


def test_a_saved_config_of_an_older_version_still_resumes():
    """Older versions saved `lora` as written (`{r: 4, alpha: 8}`) and no key added since: equal settings."""
    current = stage_config(lora={"r": 4, "alpha": 8}).to_dict()
    saved = {key: value for key, value in current.items() if key != "alignment_temperature"}
    saved["lora"] = {"r": 4, "alpha": 8}
    assert normalized(type(stage_config()), "lora", saved["lora"]) == current["lora"]
    assert check_resume(saved, current, "old-run") == []
    changed = dict(saved, lora={"r": 8, "alpha": 8})
    with pytest.raises(ConfigError, match=r"lora: .*'r': 8.* then, .*'r': 4.* now"):
        check_resume(changed, current, "old-run")
