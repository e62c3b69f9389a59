"""Suites: named lists of tasks. `offline` and `longdoc` (packaged data), `paper14` and `longembed`
(MTEB, need the Hub), or a YAML file.

A YAML suite lists tasks on local files and/or packaged tasks; paths are relative to the YAML file:

    # my_suite.yaml -- run with: llm2comp eval --model MODEL --suite my_suite.yaml
    name: my-suite
    seed: 0                 # optional, for every subsample
    max_items: 1000         # optional cap per task (the --max-items flag wins)
    tasks:
      - type: sts
        path: data/sts.tsv
        columns: {text1: s1, text2: s2, score: gold}
      - type: classification
        name: Intents
        path: data/intents.csv
        instruction: Classify the intent of the given banking question
      - type: retrieval
        queries: data/queries.jsonl
        corpus: data/corpus.jsonl
        qrels: data/qrels.tsv
      - builtin: LeeDocSim  # one packaged task by name, or `builtin: offline` for all of them
      - builtin: WikiLongDocRetrieval  # the `longdoc` task (long_documents.py)

Keys of a file task: `type`, the file key(s) (`path`, or `queries`/`corpus`/`qrels` for retrieval),
`name`, `columns` (role -> column name; roles per type in `COLUMN_ROLES`), `instruction`,
`max_items`, `seed`, and `n_folds` (classification) / `n_runs` (clustering).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InvalidSetting
from ..yaml_files import read_yaml
from .base import EvalDataError, Task
from .classification import load_classification
from .clustering import load_clustering
from .long_documents import long_document_task
from .offline_suite import OFFLINE_TASK_NAMES, offline_tasks
from .pair_classification import load_pair_classification
from .reranking import load_reranking
from .retrieval import load_retrieval
from .sts import load_sts

LOADERS = {"sts": load_sts, "classification": load_classification, "clustering": load_clustering,
           "pair_classification": load_pair_classification, "retrieval": load_retrieval,
           "reranking": load_reranking}
FILE_KEYS = {"retrieval": ("queries", "corpus", "qrels")}
COLUMN_ROLES = {
    "sts": ("text1", "text2", "score"),
    "classification": ("text", "label", "split"),
    "clustering": ("text", "label"),
    "pair_classification": ("text1", "text2", "label"),
    "retrieval": ("id", "text", "title", "query_id", "corpus_id", "score"),
    "reranking": ("query", "positive", "negative", "document", "label"),
}
EXTRA_OPTIONS = {"classification": ("n_folds",), "clustering": ("n_runs",)}
COMMON_OPTIONS = ("type", "name", "columns", "instruction", "max_items", "seed")
BUILTIN_SUITES = ("offline", "longdoc", "paper14", "longembed")
MTEB_SUITE_NAMES = ("paper14", "longembed")  # run through mteb_adapter, not get_suite
LONG_DOC_TASK = "WikiLongDocRetrieval"


@dataclass
class Suite:
    name: str
    tasks: list[Task] = field(default_factory=list)
    description: str = ""
    seed: int | None = None  # the seed of its subsamples, where it chose one (a YAML file's `seed:`)


OPTION_MINIMUMS = {"max_items": 1, "seed": 0, "n_folds": 2, "n_runs": 1}


def _whole_number(value, where: str, key: str):
    """`value` of option `key` as an int >= its minimum (None stays None), or an EvalDataError naming it."""
    if value is None:
        return None
    minimum = OPTION_MINIMUMS[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise EvalDataError(f"{where}: {key} must be a whole number >= {minimum}, got {value!r}")
    return value


def offline_suite(max_items: int | None = None, seed: int = 0) -> Suite:
    """Eight tasks on packaged data (offline_suite.py); ~4 min for a 135M model on 2 CPU cores."""
    return Suite("offline", offline_tasks(max_items, seed),
                 "packaged data: Lee document similarity, Pang & Lee polarity, Rotten Tomatoes tasks", seed)


def longdoc_suite(max_items: int | None = None, seed: int = 0) -> Suite:
    """One task, WikiLongDocRetrieval (long_documents.py): whole Wikipedia articles from deep sentences."""
    return Suite("longdoc", [long_document_task(max_items, seed)],
                 "packaged data: whole Wikipedia articles retrieved from sentences past their first 512 words", seed)


def _task_from_entry(entry: dict, where: str, base: Path, max_items: int | None, seed: int) -> list[Task]:
    entry = {**entry, **{key: _whole_number(entry[key], where, key) for key in OPTION_MINIMUMS if key in entry}}
    for key in ("name", "instruction"):
        if entry.get(key) is not None and not isinstance(entry[key], str):
            raise EvalDataError(f"{where}: {key} must be text, got {type(entry[key]).__name__} {entry[key]!r}")
    if "builtin" in entry:
        wanted = str(entry["builtin"])
        extra = set(entry) - {"builtin", "max_items", "seed"}
        if extra:
            raise EvalDataError(f"{where}: unknown key(s) {sorted(extra)} next to 'builtin'")
        if wanted == LONG_DOC_TASK:
            return [long_document_task(entry.get("max_items", max_items), entry.get("seed", seed))]
        tasks = offline_tasks(entry.get("max_items", max_items), entry.get("seed", seed))
        if wanted == "offline":
            return tasks
        if wanted not in OFFLINE_TASK_NAMES:
            raise EvalDataError(f"{where}: builtin {wanted!r} is not a packaged task; choose 'offline' or one of "
                                f"{[*OFFLINE_TASK_NAMES, LONG_DOC_TASK]}")
        return [task for task in tasks if task.name == wanted]
    kind = str(entry.get("type", "")).lower().replace("-", "_")
    if kind not in LOADERS:
        raise EvalDataError(f"{where}: 'type' must be one of {sorted(LOADERS)} (or use 'builtin'), got {kind!r}")
    file_keys = FILE_KEYS.get(kind, ("path",))
    allowed = set(COMMON_OPTIONS) | set(file_keys) | set(EXTRA_OPTIONS.get(kind, ()))
    unknown = set(entry) - allowed
    if unknown:
        raise EvalDataError(f"{where}: unknown key(s) {sorted(unknown)} for type {kind!r}; allowed: {sorted(allowed)}")
    missing = [key for key in file_keys if key not in entry]
    if missing:
        raise EvalDataError(f"{where}: type {kind!r} needs file key(s) {missing}")
    columns = entry.get("columns") or {}
    if not isinstance(columns, dict):
        raise EvalDataError(f"{where}: 'columns' must map roles to column names")
    bad_roles = set(columns) - set(COLUMN_ROLES[kind])
    if bad_roles:
        raise EvalDataError(f"{where}: unknown column role(s) {sorted(bad_roles)} for {kind!r}; roles: "
                            f"{list(COLUMN_ROLES[kind])}")
    files = [base / str(entry[key]) for key in file_keys]
    options = {key: entry[key] for key in ("name", "instruction", *EXTRA_OPTIONS.get(kind, ())) if key in entry}
    options.update({role: str(column) for role, column in columns.items()})
    task = LOADERS[kind](*files, max_items=entry.get("max_items", max_items), seed=entry.get("seed", seed),
                         **options)
    return [task]


def load_suite_file(path: str | Path, max_items: int | None = None, seed: int | None = None) -> Suite:
    """Build a suite from a YAML file (module docstring); `max_items`/`seed` override the file's."""
    path = Path(path)
    spec = read_yaml(path, "suite file")  # errors name the file and line
    if not isinstance(spec, dict) or not isinstance(spec.get("tasks"), list) or not spec["tasks"]:
        raise EvalDataError(f"{path}: expected a mapping with a non-empty 'tasks' list")
    cap = max_items if max_items is not None else _whole_number(spec.get("max_items"), str(path), "max_items")
    chosen_seed = seed if seed is not None else _whole_number(spec.get("seed", 0), str(path), "seed")
    tasks: list[Task] = []
    for index, entry in enumerate(spec["tasks"]):
        where = f"{path}: tasks[{index}]"
        if not isinstance(entry, dict):
            raise EvalDataError(f"{where}: expected a mapping, got {type(entry).__name__}")
        tasks += _task_from_entry(entry, where, path.parent, cap, chosen_seed)
    names = [task.name for task in tasks]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise EvalDataError(f"{path}: task names must be unique; repeated: {duplicates} (set 'name:')")
    return Suite(str(spec.get("name") or path.stem), tasks, str(spec.get("description") or ""), chosen_seed)


def get_suite(spec: str | Path | Suite, max_items: int | None = None, seed: int | None = None) -> Suite:
    """`offline`, `longdoc`, a YAML file path, or a ready `Suite` (paper14 and longembed run through
    mteb_adapter instead)."""
    if isinstance(spec, Suite):
        return spec
    if str(spec) == "offline":
        return offline_suite(max_items, seed or 0)
    if str(spec) == "longdoc":
        return longdoc_suite(max_items, seed or 0)
    if str(spec) in MTEB_SUITE_NAMES:
        raise InvalidSetting(f"the {spec} suite runs through mteb: use evaluate(..., suite={str(spec)!r})")
    if Path(spec).is_dir():
        raise InvalidSetting(f"suite {spec} is a folder; give a suite .yaml file, or one of {list(BUILTIN_SUITES)}")
    if Path(spec).suffix.lower() in (".yaml", ".yml") or Path(spec).exists():
        return load_suite_file(spec, max_items, seed)
    raise InvalidSetting(f"unknown suite {spec!r}: use one of {list(BUILTIN_SUITES)} or a suite .yaml file")
