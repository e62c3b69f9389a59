"""`evaluate()`: run a suite on a model, add diagnostics, write the report, compare with another model."""

from __future__ import annotations

import dataclasses
import datetime
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ..atomic import ensure_writable_dir
from ..errors import InvalidSetting, LLM2CompError, MissingFile, UnknownName
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
from .report import RESULTS_NAME, compare_results, load_results, model_label, write_report
from .suites import MTEB_SUITE_NAMES, Suite, get_suite

MEMORY_DIAGNOSTIC_TEXTS = 64


def describe_model(model, name: str | None) -> dict:
    from ..models.encoder import LLM2Comp

    if not isinstance(model, LLM2Comp):
        return {"name": name or type(model).__name__}
    config = model.config
    info = {"name": name or str(config.backbone), "backbone": str(config.backbone), "pooling": config.pooling,
            "num_memory_tokens": config.num_memory_tokens, "attention": config.attention,
            "max_length": config.max_length, "embedding_dim": model.hidden_size,
            "dtype": str(next(model.parameters()).dtype).removeprefix("torch.")}
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


def _check_settings(*, batch_size, max_items, seed, overlap, long_texts, instructions) -> None:
    """The plain settings of `evaluate`, checked before anything is read or loaded."""
    from ..errors import InvalidType
    from ..models.long_texts import check_long_texts

    for key, value, minimum, optional in (("batch_size", batch_size, 1, False), ("max_items", max_items, 1, True),
                                          ("seed", seed, 0, True), ("overlap", overlap, 0, True)):
        if value is None and optional:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
            raise InvalidSetting(f"{key} must be a whole number >= {minimum}" + (" or None" if optional else "")
                                 + f", got {value!r}")
    if long_texts is not None:
        check_long_texts(long_texts)
    if instructions is not None and not (isinstance(instructions, dict)
                                         and all(isinstance(v, str) for v in instructions.values())):
        raise InvalidType("instructions must be a dict of task name -> instruction text ('' = none), got "
                          f"{type(instructions).__name__}")


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


def evaluate(model, suite: str | Path | Suite = "offline", output_dir: str | Path | None = None, *,
             pooling: str | None = None, max_items: int | None = None, seed: int | None = None, batch_size: int = 16,
             diagnostics: bool = True, compare=None, compare_pooling: str | None = None,
             instructions: dict[str, str] | None = None, name: str | None = None,
             show_progress_bar: bool = True, dtype: str = "float32", device: str | None = None,
             long_texts: str | None = None, overlap: int | None = None, trust_remote_code: bool = False) -> dict:
    """Evaluate `model` on a suite; return the results dict (and write results.json/report.md/plots).

    model: an `LLM2Comp` (or any sentence-transformers-like encoder), or a name/path loaded with
        `load_model(model, pooling)` (`pooling` mean/last = the untrained token-pooling baselines).
    suite: "offline" / "longdoc" (packaged data), "paper14" / "longembed" (MTEB, need the Hub), a suite
        YAML path, or a `Suite`.
    output_dir: where to write results.json, report.md and the diagnostic PNGs (None: write nothing).
    max_items / seed: per-task cap and the seed of every subsample (None: a suite file's `seed:`, else 0).
        batch_size: encoding batch size.
    compare: a results dict, a saved results.json (or its folder), or another model name/path (then
        evaluated on the same suite, with `compare_pooling`); adds a side-by-side table.
    instructions: task name -> instruction, overriding the suite's / the MTEB defaults ("" = none).
    dtype / device / trust_remote_code: how a model given by name is loaded.
    long_texts: truncate | segments | multivector for texts beyond max_length (None: the model's
        default; models/long_texts.py); multivector scores retrieval and reranking by MaxSim.
        overlap: tokens shared by consecutive windows (None: the model's `long_text_overlap`).
    """
    start, cpu_start = time.perf_counter(), time.process_time()
    _check_settings(batch_size=batch_size, max_items=max_items, seed=seed, overlap=overlap, long_texts=long_texts,
                    instructions=instructions)
    output_dir = Path(output_dir) if output_dir is not None else None
    mteb_tasks = suite_object = None
    if str(suite) in MTEB_SUITE_NAMES:
        from .mteb_adapter import load_mteb_suite

        if long_texts == "multivector":
            raise InvalidSetting(f"the {suite} suite runs in MTEB, which scores one vector per text: use long_texts "
                             "'segments' or 'truncate' (multivector works on the offline task types)")

        mteb_tasks = load_mteb_suite(str(suite))  # before loading the model: fail fast without the Hub
        task_names, suite_label = [task.metadata.name for task in mteb_tasks], str(suite)
    else:
        suite_object = get_suite(suite, max_items, seed)
        seed = suite_object.seed if seed is None else seed
        task_names, suite_label = [task.name for task in suite_object.tasks], suite_object.name
    _check_instructions(instructions, task_names, suite_label)
    seed = seed or 0
    if output_dir is not None:  # before the model loads: a result that cannot be written is lost
        ensure_writable_dir(output_dir, "evaluation output folder")
    compare = _prepare_compare(compare, compare_pooling, trust_remote_code)  # results loaded, or the model checked
    if isinstance(compare, dict):
        _check_shared_tasks(compare, task_names, suite_label)
    if isinstance(model, (str, os.PathLike)):
        name = name or str(model)
        model = load_model(model, pooling, dtype=dtype, device=device, trust_remote_code=trust_remote_code)
    elif pooling is not None:
        raise InvalidSetting("pooling applies only when model is a name or path to load")
    if output_dir is not None:
        output_dir.mkdir(parents=True, exist_ok=True)

    machine = describe_machine(model)  # before the work, so the load average is the background load
    embed = Embedder(model, batch_size=batch_size, show_progress_bar=show_progress_bar, long_texts=long_texts,
                     overlap=overlap)
    if mteb_tasks is not None:
        from .mteb_adapter import MTEB_SUITE_DESCRIPTIONS, MTEBEncoder, run_mteb

        encoder = MTEBEncoder(model, instructions=instructions, batch_size=batch_size, name=name,
                              long_texts=long_texts, overlap=overlap)
        suite_name = str(suite)
        records = run_mteb(encoder, mteb_tasks, show_progress_bar=show_progress_bar, suite=suite_name)
        suite_description = MTEB_SUITE_DESCRIPTIONS[suite_name]
    else:
        records = _run_suite(suite_object, embed, instructions)
        suite_name, suite_description = suite_object.name, suite_object.description

    results = {
        "llm2comp_version": _version(), "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "suite": suite_name, "suite_description": suite_description,
        "model": describe_model(model, name), "machine": machine,
        "settings": {"max_items": max_items, "seed": seed, "batch_size": batch_size,
                     "long_texts": embed.long_texts, "overlap": _overlap_used(model, overlap)},
        "tasks": records, "average": float(np.mean([r["main_score"] for r in records])) if records else None,
        "texts_encoded": embed.num_encoded,
    }
    results["diagnostics"] = _diagnostics(model, embed, output_dir, seed, batch_size) if diagnostics else {}
    results["elapsed_s"] = round(time.perf_counter() - start, 1)
    results["cpu_time_s"] = round(time.process_time() - cpu_start, 1)  # all threads; ~2x wall on 2 idle cores
    other = compare if isinstance(compare, dict) else None
    if compare is not None and other is None:
        if output_dir is not None:  # the main results are safe even if the other model fails
            _write_outputs(results, None, output_dir)
            tqdm.write(f"wrote {output_dir / RESULTS_NAME}; now evaluating {compare} to compare")
        try:
            other = evaluate(compare, suite_object or suite, max_items=max_items, seed=seed, batch_size=batch_size,
                             pooling=compare_pooling, diagnostics=diagnostics, instructions=instructions,
                             show_progress_bar=show_progress_bar, dtype=dtype, device=device, long_texts=long_texts,
                             overlap=overlap, trust_remote_code=trust_remote_code)
        except LLM2CompError:
            if output_dir is not None:
                tqdm.write(f"the comparison failed; {output_dir / RESULTS_NAME} holds the results without it")
            raise
    if other is not None:
        results["comparison"] = compare_results(results, other)
        results["compared_with"] = {key: other.get(key) for key in ("model", "suite", "date", "average")}
    if output_dir is not None:
        _write_outputs(results, other, output_dir)
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


def _write_outputs(results: dict, other: dict | None, output_dir: Path) -> None:
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
