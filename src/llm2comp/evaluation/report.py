"""Writing and comparing evaluation results: `results.json` (MTEB-like) and `report.md`.

`results.json` holds the model and machine description, the settings, one record per task
(`task_name`, `type`, `main_metric`, `main_score`, `n` + `unit`, and MTEB-style
`scores: {"test": [{metric: value, ..., "main_score", "hf_subset"}]}`), the plain mean of the main
scores (`average`, as the paper averages), the diagnostics, and an optional comparison. Scores are
fractions (0-1) like MTEB's; the report shows them x 100 like the paper. The file is strict JSON: a
secondary metric or diagnostic that is undefined on the data (NaN) is written as null, and a
non-finite main score or average is an error (`results_json`).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from ..atomic import atomic_write_bytes
from ..errors import CorruptFile, LLM2CompError, MissingFile

RESULTS_NAME = "results.json"
REPORT_NAME = "report.md"


class NonFiniteResult(LLM2CompError, ValueError):
    """A result holds NaN or infinity, which JSON cannot hold (and a mean of which means nothing)."""


def model_label(results: dict) -> str:
    model = results.get("model", {})
    label = str(model.get("name", "model"))
    pooling = model.get("pooling")
    return f"{label} ({pooling})" if pooling else label


def load_results(path: str | Path) -> dict:
    """Read a `results.json` (or the folder holding one)."""
    path = Path(path).expanduser()
    if path.is_dir():
        path = path / RESULTS_NAME
    if not path.exists() or path.is_dir():
        raise MissingFile(f"no saved results at {path}")
    try:
        results = json.loads(path.read_bytes().decode("utf-8"), parse_constant=_refuse_constant)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CorruptFile(f"{path} is not valid JSON: {error}") from error
    except ValueError as error:  # NaN / Infinity
        raise CorruptFile(f"{path}: {error}; it is not a results file written by llm2comp") from error
    except OSError as error:
        raise CorruptFile(f"{path} cannot be read: {error.strerror or error}") from error
    if not isinstance(results, dict) or not isinstance(results.get("tasks"), list):
        raise CorruptFile(f"{path} is not an llm2comp results file (no 'tasks' list)")
    for index, record in enumerate(results["tasks"]):
        _check_record(record, f"{path}: tasks[{index}]")
    return results


def _check_record(record, where: str) -> None:
    """A saved task record has what comparing needs: `task_name`, `main_metric` and a finite `main_score`."""
    if not isinstance(record, dict):
        raise CorruptFile(f"{where} must be a mapping, got {type(record).__name__}")
    for key, kind in (("task_name", str), ("main_metric", str), ("main_score", (int, float))):
        value = record.get(key)
        if key not in record or not isinstance(value, kind) or isinstance(value, bool):
            raise CorruptFile(f"{where}: {key!r} is {'missing' if key not in record else repr(value)}; "
                              "not a results file written by llm2comp eval")
    if not math.isfinite(record["main_score"]):
        raise CorruptFile(f"{where}: main_score is {record['main_score']}")


def compare_results(current: dict, other: dict) -> dict:
    """Side-by-side main scores, matched by task name (current's order, then other's extra tasks)."""
    mine = {record["task_name"]: record for record in current["tasks"]}
    theirs = {record["task_name"]: record for record in other["tasks"]}
    names = list(mine) + [name for name in theirs if name not in mine]
    rows = []
    for name in names:
        a, b = mine.get(name), theirs.get(name)
        ref = a or b
        score_a = a["main_score"] if a else None
        score_b = b["main_score"] if b else None
        rows.append({"task_name": name, "main_metric": ref["main_metric"], "n": ref.get("n"),
                     "unit": ref.get("unit", ""), "a": score_a, "b": score_b,
                     "delta": score_a - score_b if score_a is not None and score_b is not None else None})
    shared = [row for row in rows if row["delta"] is not None]
    mean = (lambda key: sum(row[key] for row in shared) / len(shared)) if shared else (lambda key: None)
    return {"label_a": model_label(current), "label_b": model_label(other), "rows": rows,
            "shared_tasks": len(shared), "average_a": mean("a"), "average_b": mean("b")}


def _pct(value) -> str:
    return "—" if value is None else f"{100 * value:.2f}"


def _n(record) -> str:
    n = record.get("n")
    return "—" if n is None else f"{n:,} {record.get('unit', '')}".strip()


def render_markdown(results: dict) -> str:
    model, machine = results.get("model", {}), results.get("machine", {})
    lines = [f"# Evaluation: {model_label(results)}", ""]
    lines.append(f"- date: {results.get('date', '?')}; suite: `{results.get('suite', '?')}`"
                 f" ({results.get('suite_description', '')})")
    lines.append(f"- model: {', '.join(f'{k}={v}' for k, v in model.items() if k != 'note')}")
    if model.get("note"):
        lines.append(f"- note: {model['note']}")
    lines.append(f"- machine: {', '.join(f'{k}={v}' for k, v in machine.items())}")
    settings = results.get("settings", {})
    lines.append(f"- settings: {', '.join(f'{k}={v}' for k, v in settings.items())}")
    load = machine.get("load_average_at_start")
    lines.append(f"- run time: {results.get('elapsed_s', 0):.0f} s wall, {results.get('cpu_time_s', 0):.0f} s CPU"
                 f"{f' (load average {load} at start)' if load is not None else ''}; "
                 f"texts encoded: {results.get('texts_encoded', '?')}")
    lines += ["", "| task | type | metric | n | score |", "|---|---|---|---|---|"]
    for record in results["tasks"]:
        lines.append(f"| {record['task_name']} | {record.get('type', '')} | {record['main_metric']} | "
                     f"{_n(record)} | {_pct(record['main_score'])} |")
    lines.append(f"| **average** | | | {len(results['tasks'])} tasks | **{_pct(results.get('average'))}** |")
    lines += ["", "Scores x 100; the average is the plain mean of the main scores (as in the paper).", ""]
    lines += _diagnostics_markdown(results.get("diagnostics") or {})
    if results.get("comparison"):
        lines += comparison_markdown(results["comparison"])
    if results.get("baselines"):
        lines += baselines_markdown(results)
    return "\n".join(lines) + "\n"


def _diagnostics_markdown(diagnostics: dict) -> list[str]:
    lines = []
    spectrum = diagnostics.get("spectrum")
    if spectrum:
        lines += ["## Diagnostics", "",
                  f"Embedding spectrum over {spectrum['n_texts']} texts (d = {spectrum['dimension']}, "
                  "L2-normalised, mean-centred): effective dimension (participation ratio) "
                  f"**{spectrum['effective_dim']:.1f}**, entropy effective rank {spectrum['effective_rank']:.1f}; "
                  f"{spectrum['dims_90']} / {spectrum['dims_99']} directions hold 90% / 99% of the variance.", ""]
        if diagnostics.get("plots", {}).get("spectrum"):
            lines += [f"![singular-value spectrum]({diagnostics['plots']['spectrum']})", ""]
    memory = diagnostics.get("memory_correlation")
    if memory:
        lines += [f"Memory-token correlation over {memory.get('n_texts', '?')} texts (k = {memory['k']}): mean "
                  f"off-diagonal {memory['mean_offdiag']:.3f}; {memory['redundant_pairs']} token pair(s) above 0.95 "
                  "(redundant memory).", ""]
        if diagnostics.get("plots", {}).get("memory_correlation"):
            lines += [f"![memory-token correlation]({diagnostics['plots']['memory_correlation']})", ""]
    elif spectrum:
        lines += ["Memory-token correlation: not applicable (no memory tokens).", ""]
    return lines


def comparison_markdown(comparison: dict) -> list[str]:
    """The side-by-side table (task | metric | n | a | b | delta) of a `compare_results` dict, as lines."""
    a, b = comparison["label_a"], comparison["label_b"]
    lines = [f"## Comparison: {a} vs {b}", "", f"| task | metric | n | {a} | {b} | Δ |", "|---|---|---|---|---|---|"]
    for row in comparison["rows"]:
        delta = "—" if row["delta"] is None else f"{100 * row['delta']:+.2f}"
        lines.append(f"| {row['task_name']} | {row['main_metric']} | {_n(row)} | {_pct(row['a'])} | "
                     f"{_pct(row['b'])} | {delta} |")
    average_delta = (None if comparison["average_a"] is None
                     else comparison["average_a"] - comparison["average_b"])
    lines.append(f"| **average** ({comparison['shared_tasks']} shared tasks) | | | {_pct(comparison['average_a'])} | "
                 f"{_pct(comparison['average_b'])} | {'—' if average_delta is None else f'{100 * average_delta:+.2f}'} |")
    return lines + [""]


def stages_markdown(columns: list[tuple[str, dict]], *, delta: bool = True) -> list[str]:
    """One row per task (those every column has), one column per evaluated model (e.g. backbone, stage 1,
    stage 2, or a model and its baselines) and, with `delta`, the change of the last column against the
    first; scores x 100. A column is (label, anything with a `tasks` list of records)."""
    if not columns:
        return []
    first = columns[0][1]
    scores = [{t["task_name"]: t for t in results["tasks"]} for _, results in columns]
    names = [t["task_name"] for t in first["tasks"] if all(t["task_name"] in s for s in scores)]
    labels = " | ".join(label for label, _ in columns)
    last = " Δ last - first |" if delta else ""
    lines = [f"| task | metric | {labels} |{last}", "|---|---|" + "---:|" * (len(columns) + delta)]
    for name in names:
        values = [s[name]["main_score"] for s in scores]
        lines.append(f"| {name} | {scores[0][name]['main_metric']} | " + " | ".join(_pct(v) for v in values)
                     + (f" | {100 * (values[-1] - values[0]):+.2f} |" if delta else " |"))
    averages = [sum(s[n]["main_score"] for n in names) / len(names) if names else None for s in scores]
    change = "—" if None in averages else f"{100 * (averages[-1] - averages[0]):+.2f}"
    lines.append(f"| **average** ({len(names)} tasks) | | " + " | ".join(f"**{_pct(a)}**" for a in averages)
                 + (f" | **{change}** |" if delta else " |"))
    return lines + [""]


def baselines_markdown(results: dict) -> list[str]:
    """The model beside its baselines (`results["baselines"]`, evaluation/baselines.py): one column each."""
    entries = results.get("baselines") or []
    if not entries:
        return []
    columns = [(model_label(results), results), *((entry["label"], entry) for entry in entries)]
    saved = [f"`{entry['results']}`" for entry in entries if entry.get("results")]
    return (["## Baselines", "", "Trained non-LLM baselines on the same suite and subsample (they ignore "
             "instructions and read texts whole); scores x 100.", ""]
            + stages_markdown(columns, delta=False)
            + ([f"Their own results: {', '.join(saved)}.", ""] if saved else []))


def write_report(results: dict, output_dir: str | Path) -> tuple[Path, Path]:
    """Write `results.json` and `report.md` into `output_dir` (atomically); return both paths."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path = output_dir / RESULTS_NAME, output_dir / REPORT_NAME
    atomic_write_bytes(json_path, (results_json(results) + "\n").encode())
    atomic_write_bytes(md_path, render_markdown(results).encode())
    return json_path, md_path


def results_json(results: dict) -> str:
    """`results` as strict JSON: never a bare NaN / Infinity.

    A secondary metric or a diagnostic that is undefined on the data (NaN; e.g. MTEB's nAUC scores on
    a few queries) is written as null. A non-finite value anywhere else (a main score, the average)
    raises `NonFiniteResult` naming it.
    """
    plain = json.loads(json.dumps(results, default=_jsonable))  # numpy values -> Python, NaN kept
    for record in plain.get("tasks") or []:
        if isinstance(record, dict) and "scores" in record:
            record["scores"] = _nulls_for_non_finite(record["scores"])
    if "diagnostics" in plain:
        plain["diagnostics"] = _nulls_for_non_finite(plain["diagnostics"])
    try:
        return json.dumps(plain, indent=2, allow_nan=False)
    except ValueError as error:
        bad = non_finite_paths(plain)
        where = ", ".join(f"{key} = {value}" for key, value in bad[:5]) or str(error)
        raise NonFiniteResult(f"the results hold values that are not numbers ({where}); JSON cannot hold them, "
                              "so results.json was not written. A NaN score comes from data or embeddings that "
                              "do not vary (all equal)") from error


def _nulls_for_non_finite(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _nulls_for_non_finite(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_nulls_for_non_finite(item) for item in value]
    return value


def non_finite_paths(value, path: str = "") -> list[tuple[str, float]]:
    """`[(path, value)]` of every NaN / infinite float in nested dicts and lists, e.g. `tasks[0].main_score`."""
    if isinstance(value, float):
        return [] if math.isfinite(value) else [(path or "value", value)]
    if isinstance(value, dict):
        return [found for key, item in value.items()
                for found in non_finite_paths(item, f"{path}.{key}" if path else str(key))]
    if isinstance(value, (list, tuple)):
        return [found for index, item in enumerate(value) for found in non_finite_paths(item, f"{path}[{index}]")]
    return []


def _refuse_constant(name: str):
    raise ValueError(f"holds {name}, which is not a number")


def _jsonable(value):
    if hasattr(value, "tolist"):
        return value.tolist()
    if hasattr(value, "value"):  # enums
        return value.value
    return str(value)
