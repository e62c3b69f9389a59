"""Several stages from one config: pretrain -> unsupervised -> supervised, each resumable.

    # configs/quickstart.yaml (shortened)
    model: smollm2-135m            # keys at the top apply to every stage that reads them ...
    output_dir: runs/quickstart    # ... each stage writes to <output_dir>/<stage>
    stages:
      pretrain: {objective: kl, alignment_weight: 1.0, alignment_temperature: 0.05, max_steps: 60}
      unsupervised: {attention_dropout: 0.2, lr: 1.0e-3, max_steps: 75}

Stage n+1 starts from stage n's saved model. Overrides address a stage by name
(`--unsupervised.max_steps 10`) or every stage (`--seed 1`). A finished stage is reused, an
interrupted one resumes from its last checkpoint. A key under a stage must be one that stage
reads; a key at the top must be read by at least one of the stages (errors name file and line).
"""

from __future__ import annotations

from pathlib import Path

from ..errors import ConfigError
from ..yaml_files import read_yaml, read_yaml_with_lines
from .packaged import resolve_recipe
from .stage_config import STAGES, StageConfig, apply_overrides, known_keys, locator, stage_config_from


def is_pipeline_file(path) -> bool:
    if path is None or not Path(path).is_file():
        return False
    data = read_yaml(path)
    return isinstance(data, dict) and "stages" in data


def load_pipeline(path, overrides: list[str] = ()) -> list[StageConfig]:
    path = Path(resolve_recipe(path))  # a bare name (`quickstart`) is the packaged recipe
    prefixes = tuple(f"--{stage}." for stage in STAGES)
    routed = [f"--stages.{token[2:]}" if token.startswith(prefixes) else token for token in overrides]
    raw, lines = read_yaml_with_lines(path)
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping with a `stages` section, got {type(raw).__name__}")
    data = apply_overrides(raw, routed)
    stages = data.pop("stages")
    where = f"{path}:{lines.get(('stages',), '?')}"
    if not isinstance(stages, dict) or not stages:
        raise ConfigError(f"{where}: `stages` must map stage names ({', '.join(STAGES)}) to their settings")
    unknown = [name for name in stages if name not in STAGES]
    if unknown:
        raise ConfigError(f"{where}: unknown stage(s) {unknown}; known: {list(STAGES)}")
    order = [name for name in STAGES if name in stages]  # always pretrain -> unsupervised -> supervised
    root = data.pop("output_dir", "runs/pipeline")
    shared_locate = locator(path, lines, list(overrides))
    readers = known_keys()
    for key in data:
        if key == "stage":
            raise ConfigError(f"{shared_locate(key)}: a pipeline names its stages under `stages:`; remove `stage`")
        if key not in readers:
            raise ConfigError(f"{shared_locate(key)}: unknown config key {key!r}; known keys: {sorted(readers)}")
        if not set(order) & set(readers[key]):
            raise ConfigError(f"{shared_locate(key)}: no stage of this pipeline ({', '.join(order)}) reads {key!r} "
                              f"(only {', '.join(readers[key])}); remove it")
    configs, previous = [], None
    for name in order:
        own = stages[name] if stages[name] is not None else {}
        if not isinstance(own, dict):
            raise ConfigError(f"{path}:{lines.get(('stages', name), '?')}: stage {name!r} must map keys to values, "
                              f"got {own!r}")
        fixed = ["stage", "output_dir"] + (["model"] if previous is not None else [])
        clash = [key for key in fixed if key in own]
        if clash:
            raise ConfigError(f"{path}:{lines.get(('stages', name, clash[0]), '?')}: stage {name!r} sets {clash[0]!r}, "
                              "which the pipeline decides (<output_dir>/<stage>; each stage starts from the previous "
                              "stage's model); remove it")
        shared = {key: value for key, value in data.items() if name in readers[key]}
        values = {**shared, **own, "stage": name, "output_dir": f"{root}/{name}"}
        if previous is not None:
            values["model"] = str(Path(previous.output_dir) / "model")
        config = stage_config_from(values, locator(path, lines, list(overrides), prefix=("stages", name)),
                                   stage_label=name)
        configs.append(config)
        previous = config
    return configs


def run_pipeline(configs: list[StageConfig], *, resume: bool = True, trust_remote_code: bool = False) -> Path:
    from . import run_stage

    path = None
    for config in configs:
        path = run_stage(config, resume=resume, trust_remote_code=trust_remote_code)
    return path
