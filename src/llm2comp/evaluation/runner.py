"""`evaluate()` runs a suite on a model, adds diagnostics and writes the report; `compare_models()` puts it
side by side with saved results or another model evaluated with the same settings."""

from __future__ import annotations

import dataclasses
import datetime
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ..atomic import ensure_writable_dir
from ..errors import InvalidSetting, InvalidType, LLM2CompError, MissingFile, UnknownName
from ..models.loading import load_for_use as load_model
from .base import Embedder, Task, finite_main_score
from .diagnostics import (
    correlation_summary,
    embedding_spectrum,
    memory_correlation,
    memory_states,
    plot_correlation,
    plot_spectra,
)
from .encoders import as_encoder
from .report import RESULTS_NAME, compare_results, load_results, model_label, write_report
from .settings import EvalSettings, check_settings
from .suites import MTEB_SUITE_NAMES, Suite, get_suite

MEMORY_DIAGNOSTIC_TEXTS = 64


def describe_model(model, name: str | None) -> dict:
    """The model's name and, for a model carrying an LLM2Comp config, its layout (backbone, pooling, k, ...)."""
    from ..models.config import LLM2CompConfig

    config = getattr(model, "config", None)
    if not isinstance(config, LLM2CompConfig):
        own = getattr(model, "model_description", None)  # e.g. a baseline's parameters (baselines.py)
        return {**(own() if callable(own) else {}), "name": name or type(model).__name__}
    info = {"name": name or str(config.backbone), "backbone": str(config.backbone), "pooling": config.pooling,
            "num_memory_tokens": config.num_memory_tokens, "attention": config.attention,
            "max_length": config.max_length, "embedding_dim": model.hidden_size,
            "dtype": getattr(model, "weights_dtype", None) or str(next(model.parameters()).dtype).removeprefix("torch."),
            "backend": getattr(model, "backend", "torch")}
    if config.backbone_note:  # saved in the model folder (e.g. the default backbone's 4-bit weights)
        info["note"] = config.backbone_note
    return info


def describe_machine(model) -> dict:
    device = getattr(model, "device", None)
    return {"platform": platform.platform(terse=True), "cpu_cores": os.cpu_count(), "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(), "device": str(device) if device is not None else "?",
            "load_average_at_start": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None}


def run_task(task: Task, embed: Embedder) -> dict:
    """Evaluate one task and return its MTEB-like record (a main score that is not a number is refused)."""
    start = time.perf_counter()
    metrics = task.evaluate(embed)
    main_score = finite_main_score(metrics["main_score"], task.name, task.main_metric, task.source)
    return {"task_name": task.name, "type": task.type, "main_metric": task.main_metric,
            "main_score": main_score, "n": task.n_items, "unit": task.unit,
            "description": task.description, "source": task.source, "instruction": task.instruction,
            "scores": {"test": [{**metrics, "hf_subset": "default", "languages": ["eng-Latn"]}]},
            "evaluation_time": round(time.perf_counter() - start, 2)}


def _diagnostics(model, embed: Embedder, output_dir: Path | None, seed: int, batch_size: int) -> dict:
    out: dict = {"plots": {}}
    embeddings = embed.plain_embeddings()
    if len(embeddings) >= 2:
        out["spectrum"] = embedding_spectrum(embeddings)
    if getattr(model, "num_memory_tokens", 0) >= 2 and hasattr(model, "memory_states"):
        texts = embed.plain_texts()
        chosen = np.random.default_rng(seed).permutation(len(texts))[:MEMORY_DIAGNOSTIC_TEXTS]
        sample = sorted((texts[i] for i in chosen), key=len)  # similar lengths per batch
        if len(sample) >= 2:
            summary = correlation_summary(memory_correlation(memory_states(model, sample, batch_size)))
            out["memory_correlation"] = {"n_texts": len(sample), **summary}
    if output_dir is not None and "memory_correlation" in out:
        matrix = np.asarray(out["memory_correlation"]["matrix"])
        out["plots"]["memory_correlation"] = plot_correlation(matrix, output_dir / "memory_correlation.png").name
    return out


def _prepare_compare(compare, compare_pooling: str | None, trust_remote_code: bool):
    """Check `compare` before any work: saved results are loaded now; a model reference is checked to exist.

    Returns the loaded results dict, or the model (name, path or object) to evaluate after the main one.
    """
    if compare is None or isinstance(compare, dict):
        if compare_pooling is not None:
            why = ", not saved results" if compare is not None else "; compare is not set"
            raise InvalidSetting(f"compare_pooling={compare_pooling!r} applies only when compare names a model to "
                                 f"evaluate{why}")
        return compare
    if not isinstance(compare, (str, os.PathLike)):
        return compare  # a model object
    path = Path(compare).expanduser()
    if path.suffix == ".json" or (path.is_dir() and (path / RESULTS_NAME).exists()):
        if compare_pooling is not None:
            raise InvalidSetting(f"compare_pooling={compare_pooling!r} applies only when compare names a model to "
                                 f"evaluate; {compare} holds saved results")
        return load_results(path)
    _check_model_reference(compare, compare_pooling, trust_remote_code)
    return compare


def _check_model_reference(reference, pooling: str | None, trust_remote_code: bool) -> None:
    """Raise unless `reference` can be loaded as a model: an LLM2Comp folder, a backbone folder, the default
    alias or a Hub id (whose config is fetched; no weights are read)."""
    from ..models.backbone import load_backbone_config, resolve_backbone_path
    from ..models.config import is_llm2comp_folder

    if is_llm2comp_folder(reference):
        if pooling in ("mean", "last"):
            raise InvalidSetting(f"compare_pooling {pooling!r} is for plain backbones; {reference} is a trained "
                                 "LLM2Comp model")
        return
    try:
        resolved = resolve_backbone_path(reference)
        if not os.path.exists(resolved):  # a Hub id
            load_backbone_config(resolved, trust_remote_code=trust_remote_code)
    except MissingFile as error:
        raise MissingFile(f"compare {reference}: not a saved {RESULTS_NAME}, a folder holding one, or a model "
                          f"({error})") from error


def _check_shared_tasks(other: dict, task_names: list[str], suite_name: str) -> None:
    """Refuse saved results that share no task with the suite: the comparison would compare nothing."""
    theirs = [record["task_name"] for record in other["tasks"]]
    if not set(theirs) & set(task_names):
        raise InvalidSetting(f"compare: the saved results ({model_label(other)}, suite {other.get('suite', '?')}) "
                             f"share no task with the {suite_name} suite: they hold {theirs[:8]}, the suite has "
                             f"{task_names[:8]}; compare results of the same suite")


def _check_instructions(instructions: dict[str, str] | None, task_names: list[str], suite_name: str) -> None:
    """Refuse instructions for tasks that are not in the suite (a typo would silently change nothing)."""
    unknown = sorted(set(instructions or {}) - set(task_names))
    if unknown:
        raise UnknownName(f"instructions name task(s) not in the {suite_name} suite: {unknown}; its tasks are "
                          f"{task_names}")


@dataclass
class PreparedSuite:
    """A suite read and checked once (before any model loads), shared by the models of a comparison."""

    name: str
    description: str
    task_names: list[str]
    seed: int  # resolved: the settings' seed, else the suite's, else 0
    suite: Suite | None = None  # an offline / YAML suite
    mteb_tasks: list | None = None  # an MTEB suite (paper14, longembed)


def prepare_suite(suite: str | Path | Suite, settings: EvalSettings) -> PreparedSuite:
    """Read `suite` (an MTEB suite checks the Hub now) and check the settings' instructions against it."""
    if not isinstance(suite, Suite) and str(suite) in MTEB_SUITE_NAMES:
        from .mteb_adapter import MTEB_SUITE_DESCRIPTIONS, load_mteb_suite

        if settings.long_texts == "multivector":
            raise InvalidSetting(f"the {suite} suite runs in MTEB, which scores one vector per text: use long_texts "
                                 "'segments' or 'truncate' (multivector works on the offline task types)")
        tasks = load_mteb_suite(str(suite))  # before loading the model: fail fast without the Hub
        prepared = PreparedSuite(str(suite), MTEB_SUITE_DESCRIPTIONS[str(suite)],
                                 [task.metadata.name for task in tasks], settings.seed or 0, mteb_tasks=tasks)
    else:
        suite_object = get_suite(suite, settings.max_items, settings.seed)
        seed = suite_object.seed if settings.seed is None else settings.seed
        prepared = PreparedSuite(suite_object.name, suite_object.description,
                                 [task.name for task in suite_object.tasks], seed or 0, suite=suite_object)
    _check_instructions(settings.instructions, prepared.task_names, prepared.name)
    return prepared


def _check_model(model, settings: EvalSettings, what: str = "model") -> None:
    """Before any work: a model object must be an encoder, and `pooling` needs a name or path to load."""
    if isinstance(model, (str, os.PathLike)):
        return
    if settings.pooling is not None:
        key = "pooling" if what == "model" else "compare_pooling"
        raise InvalidSetting(f"{key} applies only when {what} is a name or path to load")
    try:
        as_encoder(model)
    except InvalidType as error:
        raise InvalidType(f"{what}: {error}") from None


def _start(settings, output_dir) -> tuple[EvalSettings, Path | None]:
    settings = check_settings(settings)
    return settings, Path(output_dir) if output_dir is not None else None


def _check_output(output_dir: Path | None) -> None:
    if output_dir is not None:  # before the model loads: a result that cannot be written is lost
        ensure_writable_dir(output_dir, "evaluation output folder")


def evaluate(model, suite: str | Path | Suite = "offline", settings: EvalSettings | None = None, *,
             output_dir: str | Path | None = None, name: str | None = None) -> dict:
    """Evaluate `model` on a suite; return the results dict (and write results.json/report.md/plots).

    model: a `TextEncoder` such as an `LLM2Comp`, any sentence-transformers-like encoder (encoders.py),
        or a name/path loaded with `load_model(model, settings.pooling)` (`pooling` mean/last = the
        untrained token-pooling baselines).
    suite: "offline" / "longdoc" (packaged data), "paper14" / "longembed" (MTEB, need the Hub), a suite
        YAML path, or a `Suite`.
    settings: an `EvalSettings` (None: the defaults), checked when it was made.
    output_dir: where to write results.json, report.md and the diagnostic PNGs (None: write nothing).
    name: the model's name in the report (default: the name/path it was loaded from).

    Everything is checked before the model loads: the model argument, the suite, the instructions and
    the output folder. To compare two models use `compare_models`; to reuse saved results made with
    the same model, suite and settings use `cache.cached_evaluate`.
    """
    results = run_evaluation(model, suite, settings, output_dir=output_dir, name=name)
    if output_dir is not None:
        write_outputs(results, None, Path(output_dir))
    return results


def run_evaluation(model, suite: str | Path | Suite = "offline", settings: EvalSettings | None = None, *,
                   output_dir: str | Path | None = None, name: str | None = None) -> dict:
    """`evaluate` without writing results.json and report.md (the memory-correlation PNG is written)."""
    clock = _Clock()
    settings, output_dir = _start(settings, output_dir)
    _check_model(model, settings)
    prepared = prepare_suite(suite, settings)
    _check_output(output_dir)
    return _evaluate_prepared(model, prepared, settings, output_dir, name, clock)


def compare_models(model, compare, suite: str | Path | Suite = "offline", settings: EvalSettings | None = None, *,
                   compare_pooling: str | None = None, output_dir: str | Path | None = None,
                   name: str | None = None) -> dict:
    """Evaluate `model` and put it side by side with `compare`; return (and write) `model`'s results with a
    `comparison` (`report.compare_results`) and `compared_with`.

    compare: a results dict, a saved results.json (or its folder), or another model (name, path or
        object), then evaluated on the same suite with the same settings, its pooling `compare_pooling`
        (None: its own). Saved results must share a task with the suite.
    Everything about both models is checked before the first loads. When `compare` is a model, the main
    results are written to `output_dir` before it is evaluated, so a failure there loses nothing.
    """
    clock = _Clock()
    settings, output_dir = _start(settings, output_dir)
    if compare is None:
        if compare_pooling is not None:
            raise InvalidSetting(f"compare_pooling={compare_pooling!r} applies only when compare names a model to "
                                 "evaluate; compare is not set")
        raise InvalidSetting("compare is not set: give saved results or a model to compare with (evaluate() runs "
                             "one model)")
    other_settings = settings.replace(pooling=compare_pooling)
    _check_model(model, settings)
    if not isinstance(compare, (dict, str, os.PathLike)):  # a model object
        _check_model(compare, other_settings, "compare")
    prepared = prepare_suite(suite, settings)
    _check_output(output_dir)
    other = _prepare_compare(compare, compare_pooling, settings.trust_remote_code)  # results loaded, or a model
    if isinstance(other, dict):
        _check_shared_tasks(other, prepared.task_names, prepared.name)
    results = _evaluate_prepared(model, prepared, settings, output_dir, name, clock)
    if not isinstance(other, dict):
        if output_dir is not None:  # the main results are safe even if the other model fails
            write_outputs(results, None, output_dir)
            tqdm.write(f"wrote {output_dir / RESULTS_NAME}; now evaluating {compare} to compare")
        try:
            other = _evaluate_prepared(other, prepared, other_settings, None, None, _Clock())
        except LLM2CompError:
            if output_dir is not None:
                tqdm.write(f"the comparison failed; {output_dir / RESULTS_NAME} holds the results without it")
            raise
    results["comparison"] = compare_results(results, other)
    results["compared_with"] = {key: other.get(key) for key in ("model", "suite", "date", "average")}
    if output_dir is not None:
        write_outputs(results, other, output_dir)
    return results


class _Clock:
    """Wall and CPU time since an evaluation started."""

    def __init__(self):
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def elapsed(self) -> tuple[float, float]:
        return round(time.perf_counter() - self.wall, 1), round(time.process_time() - self.cpu, 1)


def _evaluate_prepared(model, prepared: PreparedSuite, settings: EvalSettings, output_dir: Path | None,
                       name: str | None, clock: _Clock) -> dict:
    """Load `model` if it is a name or path, run the prepared suite on it, add the diagnostics."""
    if isinstance(model, (str, os.PathLike)):
        name = name or str(model)
        model = load_model(model, settings.pooling, dtype=settings.dtype, device=settings.device,
                           trust_remote_code=settings.trust_remote_code, backend=settings.backend)
    if output_dir is not None:
        output_dir.mkdir(parents=True, exist_ok=True)

    machine = describe_machine(model)  # before the work, so the load average is the background load
    embed = Embedder(model, batch_size=settings.batch_size, show_progress_bar=settings.show_progress_bar,
                     long_texts=settings.long_texts, overlap=settings.overlap, precision=settings.precision,
                     rescore_multiplier=settings.rescore_multiplier, truncate_dim=settings.truncate_dim)
    if prepared.mteb_tasks is not None:
        if settings.precision != "float32":
            raise InvalidSetting(f"precision {settings.precision!r} applies to the offline suites; the MTEB suites "
                                 "score float32 embeddings")
        from .mteb_adapter import MTEBEncoder, run_mteb

        encoder = MTEBEncoder(model, instructions=settings.instructions, batch_size=settings.batch_size, name=name,
                              long_texts=settings.long_texts, overlap=settings.overlap)
        records = run_mteb(encoder, prepared.mteb_tasks, show_progress_bar=settings.show_progress_bar,
                           suite=prepared.name)
    else:
        records = _run_suite(prepared.suite, embed, settings.instructions)

    results = {
        "llm2comp_version": _version(), "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "suite": prepared.name, "suite_description": prepared.description,
        "model": describe_model(model, name), "machine": machine,
        "settings": {"max_items": settings.max_items, "seed": prepared.seed, "batch_size": settings.batch_size,
                     "long_texts": embed.long_texts, "overlap": _overlap_used(model, settings.overlap),
                     **({"precision": settings.precision, "rescore_multiplier": settings.rescore_multiplier}
                        if settings.precision != "float32" else {})},
        "tasks": records, "average": float(np.mean([r["main_score"] for r in records])) if records else None,
        "texts_encoded": embed.num_encoded,
    }
    results["diagnostics"] = (_diagnostics(model, embed, output_dir, prepared.seed, settings.batch_size)
                              if settings.diagnostics else {})
    results["elapsed_s"], results["cpu_time_s"] = clock.elapsed()  # CPU: all threads; ~2x wall on 2 idle cores
    return results


def _overlap_used(model, overlap: int | None) -> int | None:
    return overlap if overlap is not None else getattr(getattr(model, "config", None), "long_text_overlap", None)


def _run_suite(suite: Suite, embed: Embedder, instructions: dict[str, str] | None) -> list[dict]:
    records = []
    for task in suite.tasks:
        if instructions and task.name in instructions:  # a copy: a caller's Suite stays as it was
            task = dataclasses.replace(task, instruction=instructions[task.name] or None)
        records.append(record := run_task(task, embed))
        tqdm.write(f"{task.name:<24} {task.main_metric:<16} {100 * record['main_score']:6.2f}  "
                   f"(n={task.n_items} {task.unit}, {record['evaluation_time']:.1f} s)")
    return records


def write_outputs(results: dict, other: dict | None, output_dir: Path) -> None:
    """The spectrum plot (both models when comparing), results.json and report.md."""
    spectrum = results["diagnostics"].get("spectrum")
    if spectrum:
        spectra = {model_label(results): spectrum}
        other_spectrum = ((other or {}).get("diagnostics") or {}).get("spectrum")
        if other_spectrum:
            label_b = results["comparison"]["label_b"]
            spectra[label_b if label_b not in spectra else f"{label_b} (compared)"] = other_spectrum
        results["diagnostics"]["plots"]["spectrum"] = plot_spectra(spectra, output_dir / "spectrum.png").name
    write_report(results, output_dir)


def _version() -> str:
    from .. import __version__

    return __version__
