"""What every stage config holds, and how a YAML file plus command-line overrides become one.

    llm2comp train --config configs/pretrain_quickstart.yaml --max_steps 50 --lora.r 8

Each stage has its own typed config (`PretrainConfig` in recipes/pretrain.py, `MntpConfig` in
recipes/mntp.py, `UnsupervisedConfig`, `SupervisedConfig`), made of the fields below (the run, the
data, the batch) and the components' own settings: the encoder (models/encoder_settings.py), the
LoRA (models/lora.py, the nested `lora:` block), the loop (training/loop.py) and the stage's
objective terms. The YAML a user writes stays flat: `lr: 1e-4` is read into the loop's settings.
Before any data or model loads (typed_settings.py checks every value once):

- a key no stage knows, or one the chosen stage does not read (`objective` in stage 2), is an error
  naming the stage and the key;
- every value must have its declared type (`max_steps: "ten"` or `2.7` is an error, a float field
  takes an int) and range; nested blocks (`lora`) and list elements are checked one by one; no
  number anywhere may be NaN or infinite (`lr: .inf`); a key written twice in one file is an error
  (yaml_files.py);
- errors name where the value came from: ``run.yaml:7`` or the ``--lr`` override.

Resume (`on_resume` of each field, training/resume.py): "meaning" settings change what is trained,
so a checkpoint or a finished model made with other values is never continued or reused;
"harmless" ones (`max_steps` to extend a run, `save_every`, `keep_last`, logging) may change when
`accept_resume_changes` is set; "free" ones are never compared. The resolved config (`to_dict()`,
flat) is saved with every checkpoint and next to the trained model.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError
from ..models.encoder_settings import EncoderSettings
from ..models.lora import LoraSettings
from ..training.loop import LoopSettings
from ..training.resume import declare_settings
from ..typed_settings import build, flat_keys, setting, to_flat_dict
from ..yaml_files import read_yaml_with_lines

STAGES = ("pretrain", "unsupervised", "supervised")
MNTP = "mntp"
STAGE1_OBJECTIVES = ("kl", "nll", "reconstruction", MNTP)  # mntp: LLM2Vec's, its own recipe (recipes/mntp.py)
# bundled, offline: Wikipedia paragraphs (stage 1), their sentences (stage 2), title -> paragraph pairs (stage 3)
DEFAULT_DATA = {"pretrain": {"type": "wiki_default"}, "unsupervised": {"type": "wiki_default"},
                "supervised": {"type": "wiki_demo"}}


def _stage_loop() -> LoopSettings:
    """The loop defaults of a stage config: the paper's stage-1 schedule (32k steps, 3.2k warm-up)."""
    return LoopSettings(max_steps=32000, warmup_steps=3200, save_every=1000, log_every=10)


@dataclass
class StageConfig:
    """The settings every stage reads; a stage's own config adds its objective's (see module docstring)."""

    stage: str = setting("pretrain", choices=STAGES)
    # backbone (Hub id / folder / default) or the previous stage's model folder
    model: str = setting("smollm2-135m")
    output_dir: str = setting("runs/pretrain", on_resume="free")  # checkpoints/, metrics.jsonl, loss_curve.png, model/
    encoder: EncoderSettings = setting(factory=EncoderSettings, flat=True)
    lora: LoraSettings = setting(factory=LoraSettings)
    loop: LoopSettings = setting(factory=_stage_loop, flat=True)
    data: dict | None = setting(None)  # None: the stage's offline default (DEFAULT_DATA); see docs/pretrain.md
    max_samples: int | None = setting(None, minimum=1)  # after the seeded shuffle
    batch_size: int = setting(4, minimum=1)  # per process
    mixed_precision: str = setting("no", choices=("no", "bf16", "fp16"))
    seed: int = setting(42)
    # resume even though harmless settings changed (`--accept-resume-changes`)
    accept_resume_changes: bool = setting(False, on_resume="free")

    def __post_init__(self):
        if self.data is None:
            self.data = dict(DEFAULT_DATA[self.stage])
        self.check_memory_tokens()
        k = self.encoder.num_memory_tokens
        if self.encoder.max_length <= k + 1:
            raise ConfigError(f"max_length ({self.encoder.max_length}) must leave room for BOS, text and {k} "
                              "memory tokens")
        check_data_block(self.stage, self.data)

    def check_memory_tokens(self) -> None:
        if self.encoder.num_memory_tokens < 1:
            objective = f" for objective {self.objective!r}" if hasattr(self, "objective") else ""
            raise ConfigError(f"num_memory_tokens must be >= 1{objective}, got {self.encoder.num_memory_tokens} "
                              "(only stage-1 objective mntp trains without memory tokens)")

    def to_dict(self) -> dict:
        """The settings this stage reads, flat (what checkpoints and `training_config.yaml` record)."""
        return to_flat_dict(self)


def check_data_block(stage: str, data: dict) -> None:
    """The `data:` block's keys, for the reader of `stage` (nothing is read yet)."""
    if stage == "supervised":
        from ..data.pairs import check_pair_source

        check_pair_source(data)
    else:
        from ..data.sources import SourceSpec

        try:
            SourceSpec.from_config(data)
        except ConfigError as error:
            raise ConfigError(f"data: {error}") from None


# ---------------------------------------------------------------------------------------------- the stages
@functools.cache
def stage_classes() -> dict[str, type]:
    """stage name (`mntp` for stage 1 with objective mntp) -> its config class."""
    from .mntp import MntpConfig
    from .pretrain import PretrainConfig
    from .supervised import SupervisedConfig
    from .unsupervised import UnsupervisedConfig

    classes = {"pretrain": PretrainConfig, MNTP: MntpConfig, "unsupervised": UnsupervisedConfig,
               "supervised": SupervisedConfig}
    for cls in classes.values():
        declare_settings(cls)  # what resume needs to know of each key (its kind, its default)
    return classes


def config_class(stage: str, objective=None) -> type:
    """The config class of `stage` (stage 1 with `objective: mntp` is LLM2Vec's MNTP, its own recipe)."""
    classes = stage_classes()
    if stage == "pretrain" and objective == MNTP:
        return classes[MNTP]
    return classes[stage]


def known_keys() -> dict[str, list[str]]:
    """key -> the stages that read it."""
    readers: dict[str, list[str]] = {}
    for name, cls in stage_classes().items():
        stage = "pretrain" if name == MNTP else name
        for key in flat_keys(cls):
            if stage not in readers.setdefault(key, []):
                readers[key].append(stage)
    return readers


Locate = Callable[[str], str]  # key (dotted) -> "file.yaml:7" or "--key (command line)"


def stage_config_from(values: dict, locate: Locate = lambda key: key, *, stage_label: str | None = None):
    """The stage's config from explicit flat `values`; every error names where the offending key was set."""
    stage = values.get("stage", "pretrain")
    readers = known_keys()
    unknown = sorted(set(values) - set(readers))
    if unknown:
        raise ConfigError(f"{locate(unknown[0])}: unknown config key {unknown[0]!r}"
                          + (f" (also unknown: {unknown[1:]})" if unknown[1:] else "")
                          + f"; known keys: {sorted(readers)}")
    if stage not in STAGES:
        raise ConfigError(f"{locate('stage')}: stage must be one of {', '.join(STAGES)}, got {stage!r}")
    objective = values.get("objective")
    if stage == "pretrain" and objective is not None and objective not in STAGE1_OBJECTIVES:
        raise ConfigError(f"{locate('objective')}: objective must be one of {', '.join(STAGE1_OBJECTIVES)}, got "
                          f"{objective!r}")
    cls = config_class(stage, objective)
    own = set(flat_keys(cls))
    for key in values:
        if key not in own:
            label = stage_label or stage
            if cls.__name__ == "MntpConfig" and "pretrain" in readers[key]:
                raise ConfigError(f"{locate(key)}: objective mntp (stage {label!r}) does not read {key!r} (the "
                                  "compression objectives do); remove it")
            stages = readers[key]
            raise ConfigError(f"{locate(key)}: stage {label!r} does not read {key!r} (only "
                              f"{', '.join(stages)} {'does' if len(stages) == 1 else 'do'}); remove it")
    if values.get("data") is not None:  # checked here, where its line is known; `__post_init__` checks it again
        try:
            check_data_block(stage, values["data"])
        except ConfigError as error:
            raise ConfigError(f"{locate('data')}: {error}") from None
    return build(cls, values, locate=locate, label=f"{stage_label or stage} config")


def _parse_value(text: str):
    import yaml

    return yaml.safe_load(text) if text != "" else ""


def parse_overrides(overrides: list[str]) -> list[tuple[str, object]]:
    """`["--lr", "3e-5", "--lora.r", "8", "--name=value"]` -> [("lr", 3e-05), ("lora.r", 8), ...]."""
    tokens, parsed = list(overrides), []
    while tokens:
        key = tokens.pop(0)
        if not key.startswith("--"):
            raise ConfigError(f"expected --key value, got {key!r}")
        key = key[2:]
        if "=" in key:
            key, value = key.split("=", 1)
        elif tokens and not tokens[0].startswith("--"):
            value = tokens.pop(0)
        else:
            raise ConfigError(f"--{key} needs a value")
        parsed.append((key.replace("-", "_"), _parse_value(value)))
    return parsed


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """`["--lr", "3e-5", "--lora.r", "8", "--name=value"]` -> nested updates of `data` (a copy)."""
    data = copy.deepcopy(data)
    for key, value in parse_overrides(overrides):
        target = data
        *parents, leaf = key.split(".")
        for parent in parents:
            target = target.setdefault(parent, {})
            if not isinstance(target, dict):
                raise ConfigError(f"--{key}: {parent} is not a section")
        target[leaf] = value
    return data


def locator(path: Path | None, lines: dict, overrides: list[str], prefix: tuple[str, ...] = ()) -> Locate:
    """Where a key was set: the last `--key` override that names it, else its line in the file."""
    overridden = {key for key, _ in parse_overrides(overrides)}

    def locate(key: str) -> str:
        for name in (key, *(f"{'.'.join(prefix[i:])}.{key}" for i in range(len(prefix)))):
            if name in overridden or any(o.startswith(name + ".") for o in overridden):
                return f"--{name} (command line)"
        for candidate in (prefix + tuple(key.split(".")), tuple(key.split("."))):
            if candidate in lines:
                return f"{path}:{lines[candidate]}"
        return str(path) if path else f"config key {key!r}"

    return locate


def load_stage_config(path: str | Path | None = None, overrides: list[str] = (), **defaults):
    """A single-stage config from a YAML file, `--key value` overrides and keyword defaults.

    A `stage` given as a default (`--stage` on the command line) must agree with the file's.
    """
    data: dict = dict(defaults)
    lines: dict = {}
    if path is not None:
        path = Path(path)
        loaded, lines = read_yaml_with_lines(path)
        if loaded is None or loaded == {}:  # never the large built-in defaults by accident
            raise ConfigError(f"{path}: the file holds no settings (it is empty or only comments), so it "
                              "would run the large built-in defaults; write the settings the run needs, or start "
                              "from a shipped config such as configs/pretrain_quickstart.yaml")
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: expected a mapping of keys to values, got {type(loaded).__name__}")
        if "stage" in defaults and "stage" in loaded and loaded["stage"] != defaults["stage"]:
            raise ConfigError(f"{path}:{lines.get(('stage',), '?')}: the file is a {loaded['stage']!r} config but "
                              f"--stage {defaults['stage']} was given; drop --stage or use a "
                              f"{defaults['stage']} config")
        data.update(loaded)
    data = apply_overrides(data, list(overrides))
    return stage_config_from(data, locator(path, lines, list(overrides)))


def stage_config(**values):
    """`stage_config(stage="pretrain", lr=5e-3, ...)`: the stage's config from flat keyword values, as a
    YAML file with those keys would give it (for Python callers and tests)."""
    return stage_config_from(values)
