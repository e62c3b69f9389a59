"""Several stages from one config: pretrain -> unsupervised -> supervised, each resumable.

    # configs/quickstart.yaml
    model: smollm2-135m            # keys at the top apply to every stage ...
    output_dir: runs/quickstart    # ... each stage writes to <output_dir>/<stage>
    stages:
      pretrain: {objective: kl, max_steps: 40}
      unsupervised: {lr: 3.0e-5, max_steps: 30}

Stage n+1 starts from stage n's saved model. Overrides address a stage by name
(`--unsupervised.max_steps 10`) or every stage (`--seed 1`). A finished stage is reused, an
interrupted one resumes from its last checkpoint.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from ..training.config import STAGES, StageConfig, apply_overrides, load_stage_config


def is_pipeline_file(path) -> bool:
    if path is None or not Path(path).is_file():
        return False
    data = yaml.safe_load(Path(path).read_text())
    return isinstance(data, dict) and "stages" in data


def load_pipeline(path, overrides: list[str] = ()) -> list[StageConfig]:
    path = Path(path)
    prefixes = tuple(f"--{stage}." for stage in STAGES)
    routed = [f"--stages.{token[2:]}" if token.startswith(prefixes) else token for token in overrides]
    data = apply_overrides(yaml.safe_load(path.read_text()), routed)
    stages = data.pop("stages")
    if not isinstance(stages, dict) or not stages:
        raise ValueError(f"{path}: `stages` must map stage names ({', '.join(STAGES)}) to their settings")
    unknown = [name for name in stages if name not in STAGES]
    if unknown:
        raise ValueError(f"{path}: unknown stage(s) {unknown}; known: {list(STAGES)}")
    order = [name for name in STAGES if name in stages]  # always pretrain -> unsupervised -> supervised
    root = data.pop("output_dir", "runs/pipeline")
    configs, previous = [], None
    for name in order:
        values = {**data, **(stages[name] or {}), "stage": name, "output_dir": f"{root}/{name}"}
        if previous is not None:
            values["model"] = str(Path(previous.output_dir) / "model")
        config = load_stage_config(None, [], **values)
        configs.append(config)
        previous = config
    return configs


def run_pipeline(configs: list[StageConfig], *, resume: bool = True) -> Path:
    from . import run_stage

    path = None
    for config in configs:
        path = run_stage(config, resume=resume)
    return path
