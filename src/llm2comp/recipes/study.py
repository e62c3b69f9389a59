"""The pretext study: stage-1 objectives trained on the same texts, scored against samples seen.

    llm2comp study --config configs/study_pretext.yaml

For every arm (an objective, or an objective with extra terms) and seed, one stage-1 run on the
same corpus, the same held-out texts, batch size, steps and seed; model folders saved at fractions
of the run (e.g. 25 / 50 / 100 % of the samples). Then, per saved model:
- the offline suite with the arm's natural pooling (memory mean; mean for MNTP), next to the floors
  (the untrained backbone with mean and last-token pooling);
- the memory gap on the held texts (own memory vs another text's memory, logged during training;
  see training/memory_probe.py), effective dimension and k x k memory-token correlation;
- the decoding probe: what the frozen decoder writes from the memory of a few held contexts.
Every run is resumable and reused when finished; every evaluation is reused when its results.json
was made with the same model, suite and settings (evaluation/cache.py). Output: OUTPUT_DIR/report.md (tables + probe), results.json, score_vs_samples.png.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import yaml

from ..atomic import atomic_write_bytes
from ..errors import ConfigError
from ..yaml_files import read_yaml
from .packaged import resolve_recipe
from .stage_config import StageConfig, apply_overrides, load_stage_config

log = logging.getLogger("llm2comp")


@dataclass
class StudyConfig:
    output_dir: str = "runs/study_pretext"
    base: dict = field(default_factory=dict)  # stage-1 keys shared by every arm
    arms: dict = field(default_factory=dict)  # arm name -> stage-1 keys of that arm
    seeds: list = field(default_factory=lambda: [42])  # seeds of the arms in `repeat`
    repeat: list = field(default_factory=list)  # arms trained with every seed; the others with seeds[0]
    fractions: list = field(default_factory=lambda: [0.25, 0.5, 1.0])  # of max_steps, scored
    suite: str = "offline"
    max_items: int | None = None
    floors: list = field(default_factory=lambda: ["mean", "last"])  # untrained backbone poolings
    probe_texts: int = 3
    probe_tokens: int = 24

    def __post_init__(self):
        if not self.arms:
            raise ConfigError("a study needs at least one arm (`arms: {name: {objective: kl}}`)")
        unknown = [name for name in self.repeat if name not in self.arms]
        if unknown:
            raise ConfigError(f"repeat names unknown arm(s) {unknown}; arms: {sorted(self.arms)}")
        if not self.seeds or any(not isinstance(s, int) for s in self.seeds):
            raise ConfigError(f"seeds must be a non-empty list of ints, got {self.seeds!r}")
        if any(not (0 < float(f) <= 1) for f in self.fractions):
            raise ConfigError(f"fractions must lie in (0, 1], got {self.fractions!r}")


def load_study_config(path, overrides: list[str] = ()) -> StudyConfig:
    path = resolve_recipe(path)  # a bare name (`study_pretext`) is the packaged recipe
    data = read_yaml(path, "study config") or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping")
    data = apply_overrides(data, list(overrides))
    known = {f.name for f in fields(StudyConfig)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"{path}: unknown study key(s) {unknown}; known: {sorted(known)}")
    return StudyConfig(**data)


@dataclass
class Run:
    name: str  # arm-s<seed>
    arm: str
    seed: int
    config: StageConfig

    @property
    def snapshot_steps(self) -> list[int]:
        return self.config.snapshot_steps + [self.config.loop.max_steps]

    def model_dir(self, step: int) -> Path:
        from .pretrain import snapshot_dir

        return Path(self.config.output_dir) / "model" if step == self.config.loop.max_steps else snapshot_dir(
            self.config, step)


def plan_runs(study: StudyConfig) -> list[Run]:
    """Every (arm, seed) run with its resolved stage-1 config; fails before any training on a bad key."""
    runs = []
    for arm, keys in study.arms.items():
        for seed in (study.seeds if arm in study.repeat else study.seeds[:1]):
            values = {**study.base, **(keys or {}), "stage": "pretrain", "seed": seed,
                      "output_dir": str(Path(study.output_dir) / "arms" / f"{arm}-s{seed}")}
            config = load_stage_config(None, [], **values)
            steps = sorted({max(1, math.ceil(float(f) * config.loop.max_steps)) for f in study.fractions})
            config.snapshot_steps = [s for s in steps if s < config.loop.max_steps]
            if not config.held_out_texts:
                config.gap_every = 0  # the gap needs held texts; with them it is also logged at every snapshot
            runs.append(Run(f"{arm}-s{seed}", arm, seed, config))
    return runs


def _memory_gaps(run: Run) -> dict[int, dict]:
    """step -> the memory-gap fields logged in metrics.jsonl at that step."""
    path = Path(run.config.output_dir) / "metrics.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []
    return {row["step"]: {k.removeprefix("memory_"): v for k, v in row.items() if k.startswith("memory_")}
            for row in rows if "memory_gap" in row}


def _evaluate(model, output_dir: Path, study: StudyConfig, **kwargs) -> dict:
    """Evaluate, or reuse `output_dir/results.json` when it was made for the same model, suite and settings."""
    from ..evaluation import EvalSettings, cached_evaluate

    settings = EvalSettings(max_items=study.max_items, show_progress_bar=False, **kwargs)
    return cached_evaluate(model, study.suite, settings, output_dir)


def _summary(results: dict) -> dict:
    diagnostics = results.get("diagnostics") or {}
    correlation = diagnostics.get("memory_correlation") or {}
    return {"average": results["average"], "tasks": {t["task_name"]: t["main_score"] for t in results["tasks"]},
            "effective_dim": (diagnostics.get("spectrum") or {}).get("effective_dim"),
            "memory_corr_offdiag": correlation.get("mean_offdiag")}


def _untrained_gap(study: StudyConfig, run: Run, held: list[str]) -> dict:
    """The memory gap of the untrained model (fresh LoRA-free encoder, random memory): the gap's floor."""
    from ..losses.compression import CompressionObjective
    from ..models.encoder import LLM2Comp
    from ..training.memory_probe import memory_gap

    cfg = run.config
    model = LLM2Comp.from_pretrained(cfg.model, num_memory_tokens=cfg.encoder.num_memory_tokens or 8,
                                     max_length=cfg.encoder.max_length, seed=cfg.seed)
    objective = CompressionObjective(model, "kl")
    return memory_gap(objective, held, seed=cfg.seed, batch_size=cfg.batch_size)


def _probe(run: Run, held: list[str], study: StudyConfig, decoder) -> list[dict]:
    """Decode the final model's memory of a few held texts (their training-style context for KL/NLL)."""
    from ..models.encoder import LLM2Comp
    from ..training.memory_probe import held_examples

    model = LLM2Comp.from_pretrained(run.model_dir(run.config.loop.max_steps))
    if not model.num_memory_tokens:
        return []
    examples = held_examples(model, held, run.config.objective, run.config.seed)[:study.probe_texts]
    contexts = [model.tokenizer.decode(e.context) for e in examples]
    written = model.decode_memory(contexts, max_new_tokens=study.probe_tokens, decoder=decoder)
    rows = []
    for example, context, output in zip(examples, contexts, written):
        expected = example.context if run.config.objective == "reconstruction" else example.target
        rows.append({"context": context, "expected": model.tokenizer.decode(expected[:study.probe_tokens]),
                     "decoded": output})
    return rows


def run_study(study: StudyConfig, *, resume: bool = True) -> dict:
    from .pretrain import held_texts, run_pretrain

    root = Path(study.output_dir)
    runs = plan_runs(study)
    for run in runs:
        log.info("study: training %s", run.name)
        run_pretrain(run.config, resume=resume)
    first = runs[0].config
    floors = {pooling: _summary(_evaluate(first.model, root / "eval" / f"floor-{pooling}", study, pooling=pooling))
              for pooling in study.floors}
    held = held_texts(first)
    report = {"study": asdict(study), "floors": floors, "runs": {}}
    if held:
        report["untrained_memory_gap"] = _untrained_gap(study, runs[0], held)
    decoder = None
    for run in runs:
        gaps = _memory_gaps(run)
        points = []
        for step in run.snapshot_steps:
            model_dir = run.model_dir(step)
            summary = _summary(_evaluate(str(model_dir), root / "eval" / run.name / f"step-{step:06d}", study))
            points.append({"step": step, "samples": step * run.config.batch_size * run.config.loop.grad_accum,
                           **summary, "memory_gap": gaps.get(step)})
        entry = {"arm": run.arm, "seed": run.seed, "objective": run.config.objective, "points": points,
                 "data_stats": _data_stats(run)}
        if held and run.config.encoder.num_memory_tokens:
            if decoder is None:
                from ..models.backbone import load_causal_lm

                decoder = load_causal_lm(first.model)[0].eval().requires_grad_(False)
            entry["probe"] = _probe(run, held, study, decoder)
        report["runs"][run.name] = entry
    atomic_write_bytes(root / "results.json", json.dumps(report, indent=1).encode())
    markdown = study_markdown(report)
    atomic_write_bytes(root / "report.md", markdown.encode())
    _plot(report, root / "score_vs_samples.png")
    return report


def _data_stats(run: Run) -> dict:
    path = Path(run.config.output_dir) / "model" / "training_config.yaml"
    return (yaml.safe_load(path.read_text()) or {}).get("data_stats", {}) if path.is_file() else {}


def _fmt(value, scale: float = 1.0, digits: int = 2) -> str:
    return "" if value is None else f"{value * scale:.{digits}f}"


def study_markdown(report: dict) -> str:
    """The study's tables: score against samples per run, then per-task scores and the decoding probe."""
    floors = report["floors"]
    lines = ["# Pretext study", "", "## Offline-suite average (x 100) against samples seen, with the memory gap",
             "", "| run | objective | step | samples | average | memory gap | gap, first 4 tokens | "
             "effective dim | memory corr (off-diag) |", "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for pooling, floor in floors.items():
        lines.append(f"| untrained backbone, {pooling} pooling | - | 0 | 0 | {_fmt(floor['average'], 100)} | | | "
                     f"{_fmt(floor['effective_dim'], 1, 1)} | |")
    gap0 = report.get("untrained_memory_gap")
    if gap0:
        lines.append(f"| untrained, random memory (gap floor) | kl | 0 | 0 | | {_fmt(gap0['gap'], 1, 3)} | "
                     f"{_fmt(gap0['gap_first'], 1, 3)} | | |")
    for name, run in report["runs"].items():
        for p in run["points"]:
            gap = p.get("memory_gap") or {}
            lines.append(f"| {name} | {run['objective']} | {p['step']} | {p['samples']} | {_fmt(p['average'], 100)} | "
                         f"{_fmt(gap.get('gap'), 1, 3)} | {_fmt(gap.get('gap_first'), 1, 3)} | "
                         f"{_fmt(p['effective_dim'], 1, 1)} | {_fmt(p['memory_corr_offdiag'], 1, 3)} |")
    tasks = list(next(iter(floors.values()))["tasks"]) if floors else []
    lines += ["", "## Per task, final models (x 100)", "",
              "| model | " + " | ".join(tasks) + " | average |", "|---|" + "---:|" * (len(tasks) + 1)]
    rows = [(f"untrained, {k}", v) for k, v in floors.items()]
    rows += [(name, run["points"][-1]) for name, run in report["runs"].items()]
    for label, summary in rows:
        lines.append(f"| {label} | " + " | ".join(_fmt(summary["tasks"].get(t), 100) for t in tasks)
                     + f" | {_fmt(summary['average'], 100)} |")
    probes = [(name, run["probe"]) for name, run in report["runs"].items() if run.get("probe")]
    if probes:
        lines += ["", "## Decoding probe (frozen decoder, greedy, from the k memory states of held texts)", ""]
        for name, rows in probes:
            lines.append(f"**{name}**")
            lines.append("")
            for row in rows:
                lines.append(f"- context: ...{row['context'][-90:]!r}")
                lines.append(f"  - expected: {row['expected']!r}")
                lines.append(f"  - decoded: {row['decoded']!r}")
            lines.append("")
    return "\n".join(lines) + "\n"


def _plot(report: dict, path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    figure, axis = plt.subplots(figsize=(6.5, 4))
    for name, run in report["runs"].items():
        axis.plot([p["samples"] for p in run["points"]], [100 * p["average"] for p in run["points"]], marker="o",
                  label=name)
    for pooling, floor in report["floors"].items():
        axis.axhline(100 * floor["average"], linestyle="--", linewidth=1, label=f"untrained, {pooling}")
    axis.set_xlabel("training samples")
    axis.set_ylabel("offline suite average (x 100)")
    axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
