"""Trained, non-LLM baselines to put beside a model in every report: TF-IDF + truncated SVD, and WordLlama.

    llm2comp eval --model runs/stage3/final --output eval/trained --baselines tfidf,wordllama

    from llm2comp.evaluation.baselines import evaluate_baselines, make_baseline
    tfidf = make_baseline("tfidf")             # a TextEncoder: evaluate(tfidf, "offline") runs it unchanged
    rows = evaluate_baselines(["tfidf"], "offline", EvalSettings(), "eval/trained/baselines")

| name        | report label                | what it is                                                     |
|-------------|-----------------------------|----------------------------------------------------------------|
| `tfidf`     | TF-IDF+SVD (256)            | TF-IDF (sublinear tf, word 1-2 grams, min_df 2) + SVD + L2     |
| `wordllama` | WordLlama (l2_supercat_256) | the mean of a text's WordLlama token embeddings (256-d) + L2   |

Both read every text whole (no token limit, so `long_texts` / `overlap` do not apply to them) and
ignore instructions: a retrieval instruction added to every query would only add the same words to
each of them. Both are deterministic, and a text's embedding depends on that text alone, never on
the other texts of a call or their order.

TF-IDF is fit once, lazily (at the first `encode`), on a fixed corpus that ships offline: the
paragraphs of the bundled Wikipedia excerpt (`{"type": "wiki_default"}`, data/wikipedia.py; 4,571
paragraphs). Fitting on the texts being encoded (the usual transductive practice for unsupervised
TF-IDF) would make an embedding depend on the batch and the suite; the Wikipedia paragraphs are
disjoint from every evaluation text, so neither the suite's texts nor its labels reach the fit. The
SVD uses a fixed `random_state`. `TfidfSvdBaseline(corpus=[...])` fits on texts of your own.

WordLlama (MIT, `pip install wordllama==0.4.0.post1`, or `pip install 'llm2comp[baselines]'`) is read
from the two files its wheel ships: `weights/l2_supercat_256.safetensors` (the token embedding
matrix, 32,000 x 256) and `tokenizers/l2_supercat_tokenizer_config.json` (the Llama 2 tokenizer as a
`tokenizers` JSON). The package itself is never imported: its `WordLlama.load()` looks for the
tokenizer in a folder the wheel does not have (`tokenizer/`) and then downloads from the Hugging
Face Hub, and importing it reconfigures logging. The model is what its `WordLlamaInference.embed`
computes: the tokens of a text (no special tokens, no truncation) looked up in the matrix and
averaged; here the mean is L2-normalised. Weights are read with safetensors only; nothing touches
the network.

`evaluate_baselines` evaluates each with the model's suite and settings through `cached_evaluate`
(one folder per baseline, so a rerun reuses them); `attach_baselines` adds their rows to a model's
results (`results["baselines"]`, and a Baselines table in report.md via `report.baselines_markdown`).
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from ..errors import InvalidSetting, InvalidType, MissingDependency, MissingFile, UnknownName

BASELINE_NAMES = ("tfidf", "wordllama")
BASELINES_FOLDER = "baselines"  # OUTPUT/baselines/<name>/results.json
WORDLLAMA_REQUIREMENT = "wordllama==0.4.0.post1"
WORDLLAMA_PIP = f"pip install {WORDLLAMA_REQUIREMENT}"
WORDLLAMA_CONFIG = "l2_supercat"
WORDLLAMA_DIM = 256
WORDLLAMA_WEIGHTS = ("weights", f"{WORDLLAMA_CONFIG}_{WORDLLAMA_DIM}.safetensors")
WORDLLAMA_TOKENIZER = ("tokenizers", f"{WORDLLAMA_CONFIG}_tokenizer_config.json")
WORDLLAMA_TENSOR = "embedding.weight"
INSTRUCTIONS_NOTE = "instructions ignored; texts read whole"


class Baseline:
    """A `TextEncoder` (encoders.py) around `embed(list[str]) -> (n, d) float32`, for the evaluation.

    `encode` takes str or `(instruction, text)` items and drops the instructions; `long_texts` other
    than `truncate` (the evaluation's default for encoders without windows) and `overlap` raise
    `InvalidSetting`, and so does `encode_windows`: a baseline reads each text whole.
    """

    name = "baseline"  # the --baselines name
    label = "baseline"  # the name in reports
    long_text_modes = ("truncate",)
    device = "cpu"

    def encode(self, texts, *, batch_size: int = 32, show_progress_bar: bool | None = None,
               convert_to_numpy: bool = True, instruction: str | None = None, long_texts: str | None = None,
               overlap: int | None = None) -> np.ndarray:
        """float32 (n, d) unit vectors (a text with no known token: zeros); instructions are ignored."""
        if long_texts not in (None, "truncate"):
            raise InvalidSetting(f"long_texts={long_texts!r} needs an encoder that reads long texts in windows (an "
                                 f"LLM2Comp model); the {self.label} baseline reads each text whole")
        if overlap is not None:
            raise InvalidSetting(f"overlap={overlap!r} needs an encoder that reads long texts in windows (an "
                                 f"LLM2Comp model); the {self.label} baseline reads each text whole")
        if isinstance(texts, str):
            raise InvalidType("texts must be a list of str or (instruction, text) pairs, not one str")
        plain = [_text_of(item, index) for index, item in enumerate(texts)]
        if not plain:
            return np.zeros((0, self.dimension), dtype=np.float32)
        out = np.asarray(self.embed(plain, batch_size=batch_size), dtype=np.float32)
        return _unit_rows(out)

    def encode_windows(self, texts, *, batch_size: int = 32, show_progress_bar: bool | None = None,
                       overlap: int | None = None):
        raise InvalidSetting(f"long_texts='multivector' needs an encoder that reads long texts in windows (an "
                             f"LLM2Comp model); the {self.label} baseline reads each text whole")

    def embed(self, texts: list[str], *, batch_size: int = 32) -> np.ndarray:
        """(n, d) vectors of plain texts, before the L2 norm."""
        raise NotImplementedError

    @property
    def dimension(self) -> int:
        raise NotImplementedError

    def get_sentence_embedding_dimension(self) -> int:
        return self.dimension

    def identity(self) -> dict:
        """What decides this baseline's embeddings (its parameters and the files it reads): the cache key."""
        raise NotImplementedError

    def model_description(self) -> dict:
        """The `model` entry of its results (runner.describe_model): label, parameters, what it ignores."""
        return {"name": self.label, "baseline": self.name, "embedding_dim": self.dimension, "note": INSTRUCTIONS_NOTE}


def _text_of(item, index: int) -> str:
    if isinstance(item, str):
        return item
    if isinstance(item, (tuple, list)) and len(item) == 2 and all(isinstance(p, str) or p is None for p in item) \
            and isinstance(item[1], str):
        return item[1]
    raise InvalidType(f"texts[{index}] must be str or an (instruction, text) pair, got {type(item).__name__} "
                      f"{item!r:.60}")


def _unit_rows(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)


def _file_identity(path: Path) -> dict:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return {"file": path.name, "size": path.stat().st_size, "sha256": digest.hexdigest()}


def _package_version(package: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None


# ---------------------------------------------------------------------------------------------- TF-IDF
class TfidfSvdBaseline(Baseline):
    """TF-IDF (sublinear tf, word n-grams) + `TruncatedSVD(dim, random_state=seed)` + L2 norm.

    corpus: `"wiki_default"` (the bundled Wikipedia paragraphs, module docstring) or a list of texts to
        fit on. It is fit at the first `encode` (or `fit()`), once per process for the bundled corpus.
    dim: output dimension (must be below the fitted vocabulary size and the number of fit texts).
    ngram_range / min_df: the vectorizer's word n-grams and minimum document frequency.
    """

    name = "tfidf"

    def __init__(self, dim: int = 256, *, corpus: str | list[str] = "wiki_default", ngram_range=(1, 2),
                 min_df: int = 2, seed: int = 0):
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
            raise InvalidSetting(f"TF-IDF baseline: dim must be a whole number >= 1, got {dim!r}")
        if isinstance(corpus, str):
            if corpus != "wiki_default":
                raise InvalidSetting(f"TF-IDF baseline: corpus must be 'wiki_default' or a list of texts, got "
                                     f"{corpus!r}")
        elif not (isinstance(corpus, (list, tuple)) and corpus and all(isinstance(t, str) for t in corpus)):
            raise InvalidType("TF-IDF baseline: corpus must be 'wiki_default' or a non-empty list of texts")
        self.dim, self.ngram_range, self.min_df, self.seed = dim, tuple(ngram_range), min_df, seed
        self.corpus = corpus if isinstance(corpus, str) else list(corpus)
        self.label = f"TF-IDF+SVD ({dim})"
        self._fitted = None

    @property
    def dimension(self) -> int:
        return self.dim

    def fit(self):
        """The fitted (vectorizer, svd), fitting them now if needed."""
        if self._fitted is None:
            if self.corpus == "wiki_default":
                self._fitted = _fit_on_wikipedia(self.dim, self.ngram_range, self.min_df, self.seed)
            else:
                self._fitted = _fit_tfidf_svd(self.corpus, self.dim, self.ngram_range, self.min_df, self.seed,
                                              "the given corpus")
        return self._fitted

    def embed(self, texts: list[str], *, batch_size: int = 32) -> np.ndarray:
        vectorizer, svd = self.fit()
        return svd.transform(vectorizer.transform(texts)).astype(np.float32)

    def identity(self) -> dict:
        if self.corpus == "wiki_default":
            from ..data.wikipedia import DEFAULT_MIN_PARAGRAPH_CHARS, wiki_dump_path

            corpus = {"source": "wiki_default", "min_chars": DEFAULT_MIN_PARAGRAPH_CHARS,
                      **_file_identity(wiki_dump_path())}
        else:
            digest = hashlib.sha256("\0".join(self.corpus).encode()).hexdigest()
            corpus = {"source": "texts", "count": len(self.corpus), "sha256": digest}
        return {"baseline": self.name, "dim": self.dim, "ngram_range": list(self.ngram_range), "min_df": self.min_df,
                "seed": self.seed, "corpus": corpus, "scikit-learn": _package_version("scikit-learn")}

    def model_description(self) -> dict:
        corpus = ("bundled Wikipedia paragraphs (wiki_default)" if self.corpus == "wiki_default"
                  else f"{len(self.corpus)} given texts")
        return {**super().model_description(), "fit_on": corpus, "ngram_range": list(self.ngram_range),
                "min_df": self.min_df, "sublinear_tf": True, "seed": self.seed}


@functools.lru_cache(maxsize=4)
def _fit_on_wikipedia(dim: int, ngram_range: tuple, min_df: int, seed: int):
    from ..data.sources import load_documents

    return _fit_tfidf_svd(load_documents("wiki_default"), dim, ngram_range, min_df, seed,
                          "the bundled Wikipedia excerpt")


def _fit_tfidf_svd(texts: list[str], dim: int, ngram_range: tuple, min_df: int, seed: int, what: str):
    from .base import require_sklearn, single_threaded

    require_sklearn()
    from sklearn.decomposition import TruncatedSVD
    from sklearn.feature_extraction.text import TfidfVectorizer

    vectorizer = TfidfVectorizer(sublinear_tf=True, ngram_range=ngram_range, min_df=min_df, strip_accents="unicode",
                                 dtype=np.float64)
    try:
        matrix = vectorizer.fit_transform(texts)
    except ValueError as error:  # "empty vocabulary" or min_df above the number of texts
        raise InvalidSetting(f"TF-IDF baseline: cannot fit on {what} ({len(texts)} texts): {error}") from None
    limit = min(matrix.shape) - 1
    if dim > limit:
        raise InvalidSetting(f"TF-IDF baseline: dim={dim} must be below the number of fit texts and of terms; {what} "
                             f"has {matrix.shape[0]} texts and {matrix.shape[1]} terms (dim <= {limit})")
    svd = TruncatedSVD(n_components=dim, algorithm="randomized", n_iter=7, random_state=seed)
    with single_threaded():
        svd.fit(matrix)
    return vectorizer, svd


# ---------------------------------------------------------------------------------------------- WordLlama
def wordllama_files() -> tuple[Path, Path]:
    """The weights and tokenizer files inside the installed wordllama wheel, found without importing it.

    `MissingDependency` with the pip command when wordllama is not installed; `MissingFile` naming the
    file when the installed package lacks one.
    """
    spec = importlib.util.find_spec("wordllama")
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependency(f"the WordLlama baseline needs the wordllama package: {WORDLLAMA_PIP}  (or: pip "
                                "install 'llm2comp[baselines]')")
    found = []
    for parts in (WORDLLAMA_WEIGHTS, WORDLLAMA_TOKENIZER):
        paths = [Path(folder).joinpath(*parts) for folder in spec.submodule_search_locations]
        path = next((p for p in paths if p.is_file()), None)
        if path is None:
            raise MissingFile(f"{paths[0]} is missing from the installed wordllama (the WordLlama baseline reads "
                              f"it); reinstall with: pip install --force-reinstall {WORDLLAMA_REQUIREMENT}")
        found.append(path)
    return found[0], found[1]


class WordLlamaBaseline(Baseline):
    """WordLlama l2_supercat, 256-d: the mean of a text's token embeddings, L2-normalised (module docstring).

    The files are found at construction (`MissingDependency` when wordllama is absent) and read at the
    first `encode`. A text with no token (the empty text) embeds to zeros.
    """

    name = "wordllama"
    label = f"WordLlama ({WORDLLAMA_CONFIG}_{WORDLLAMA_DIM})"

    def __init__(self):
        self.weights_path, self.tokenizer_path = wordllama_files()
        self._loaded = None

    @property
    def dimension(self) -> int:
        return WORDLLAMA_DIM

    def load(self):
        """(embedding matrix float32 (vocab, 256), tokenizer), read from the wheel's files once."""
        if self._loaded is None:
            self._loaded = _load_wordllama(str(self.weights_path), str(self.tokenizer_path))
        return self._loaded

    def embed(self, texts: list[str], *, batch_size: int = 32) -> np.ndarray:
        matrix, tokenizer = self.load()
        out = np.zeros((len(texts), matrix.shape[1]), dtype=np.float32)
        for start in range(0, len(texts), max(1, batch_size)):
            encodings = tokenizer.encode_batch(texts[start:start + batch_size], add_special_tokens=False)
            for row, encoding in enumerate(encodings, start=start):
                if encoding.ids:  # ids beyond the matrix are clipped to its last row, as wordllama does
                    ids = np.clip(np.asarray(encoding.ids, dtype=np.int64), 0, matrix.shape[0] - 1)
                    out[row] = matrix[ids].mean(axis=0, dtype=np.float32)
        return out

    def identity(self) -> dict:
        return {"baseline": self.name, "wordllama": _package_version("wordllama"),
                "weights": _file_identity(self.weights_path), "tokenizer": _file_identity(self.tokenizer_path)}

    def model_description(self) -> dict:
        return {**super().model_description(), "weights": self.weights_path.name, "method": "mean of token embeddings",
                "wordllama": _package_version("wordllama")}


@functools.lru_cache(maxsize=2)
def _load_wordllama(weights_path: str, tokenizer_path: str):
    from safetensors import SafetensorError
    from safetensors.numpy import load_file
    from tokenizers import Tokenizer

    from ..errors import CorruptFile

    try:
        tensors = load_file(weights_path)
    except (SafetensorError, OSError) as error:
        raise CorruptFile(f"{weights_path}: cannot read the WordLlama weights: {error}") from error
    if WORDLLAMA_TENSOR not in tensors or tensors[WORDLLAMA_TENSOR].ndim != 2:
        raise CorruptFile(f"{weights_path}: no 2-d {WORDLLAMA_TENSOR!r} tensor (holds {sorted(tensors)})")
    matrix = np.ascontiguousarray(tensors[WORDLLAMA_TENSOR], dtype=np.float32)
    try:
        tokenizer = Tokenizer.from_file(tokenizer_path)
    except Exception as error:  # tokenizers raises a plain Exception for a malformed file
        raise CorruptFile(f"{tokenizer_path}: cannot read the WordLlama tokenizer: {error}") from error
    tokenizer.no_padding()
    tokenizer.no_truncation()
    return matrix, tokenizer


# ---------------------------------------------------------------------------------------------- by name
def parse_baselines(value: str | Iterable[str] | None) -> list[str]:
    """`"tfidf,wordllama"` (or a list) -> known names in order, duplicates dropped; None / "" / "none" -> [].

    An unknown name raises `UnknownName` listing the known ones. Nothing is loaded.
    """
    if value is None:
        return []
    parts = value.split(",") if isinstance(value, str) else list(value)
    names = [str(part).strip().lower() for part in parts if str(part).strip()]
    if names == ["none"]:
        return []
    unknown = [name for name in names if name not in BASELINE_NAMES]
    if unknown:
        raise UnknownName(f"unknown baseline(s) {', '.join(map(repr, unknown))}; known baselines: "
                          f"{', '.join(BASELINE_NAMES)} (or none)")
    return list(dict.fromkeys(names))


def check_baselines(names: list[str]) -> None:
    """Before any work: the packages and files each named baseline reads are installed."""
    for name in names:
        if name == "wordllama":
            wordllama_files()
        elif name == "tfidf":
            from .base import require_sklearn

            require_sklearn()
            from ..data.wikipedia import wiki_dump_path

            wiki_dump_path()


def make_baseline(name: str) -> Baseline:
    """The baseline called `name` (`BASELINE_NAMES`), with its default parameters; nothing is fit or read yet."""
    names = parse_baselines([name])
    if names == ["tfidf"]:
        return TfidfSvdBaseline()
    if names == ["wordllama"]:
        return WordLlamaBaseline()
    raise UnknownName(f"{name!r} names no baseline; known baselines: {', '.join(BASELINE_NAMES)}")


def baseline_settings(settings):
    """The model's settings as they apply to a baseline: same suite subsample, seed, batch size and diagnostics;
    no pooling / dtype / device / long_texts / overlap / instructions (a baseline has none of them)."""
    from .settings import EvalSettings, check_settings

    settings = check_settings(settings)
    return EvalSettings(max_items=settings.max_items, seed=settings.seed, batch_size=settings.batch_size,
                        diagnostics=settings.diagnostics, show_progress_bar=settings.show_progress_bar)


def evaluate_baseline(name: str, suite, settings, output_dir: str | Path | None) -> dict:
    """Evaluate one baseline on `suite` with `baseline_settings(settings)`: through `cached_evaluate` into
    `output_dir` (reused when nothing changed), or without writing anything when `output_dir` is None."""
    from .cache import cached_evaluate
    from .runner import evaluate

    baseline = make_baseline(name)
    settings = baseline_settings(settings)
    if output_dir is None:
        results = evaluate(baseline, suite, settings, name=baseline.label)
    else:
        results = cached_evaluate(baseline, suite, settings, output_dir, name=baseline.label,
                                  model_identity=baseline.identity())
    return results


def evaluate_baselines(names: Iterable[str], suite, settings, output_dir: str | Path | None) -> list[dict]:
    """`evaluate_baseline` for each name, into `output_dir/<name>` (None: nothing written); their results."""
    return [evaluate_baseline(name, suite, settings, None if output_dir is None else Path(output_dir) / name)
            for name in parse_baselines(list(names))]


def baseline_entry(name: str, results: dict, folder: Path | None, relative_to: Path | None) -> dict:
    """The compact record of a baseline kept in the model's results.json (`baselines` key)."""
    saved = None
    if folder is not None:
        from .report import RESULTS_NAME

        path = folder / RESULTS_NAME
        saved = os.path.relpath(path, relative_to) if relative_to is not None else str(path)
    return {"name": name, "label": results["model"]["name"], "model": results["model"],
            "settings": results.get("settings"), "average": results.get("average"),
            "tasks": [{key: record.get(key) for key in ("task_name", "type", "main_metric", "main_score", "n", "unit")}
                      for record in results["tasks"]],
            "results": saved}


def attach_baselines(results: dict, names: Iterable[str], suite, settings, output_dir: str | Path | None) -> dict:
    """Evaluate the named baselines like the model (`evaluate_baselines`, saved under
    `output_dir/baselines/<name>/`), add `results["baselines"]` and rewrite the model's results.json and
    report.md (which then holds the Baselines table). Returns `results`."""
    from .report import write_report

    names = parse_baselines(list(names))
    if not names:
        return results
    folder = None if output_dir is None else Path(output_dir) / BASELINES_FOLDER
    entries = []
    for name, baseline_results in zip(names, evaluate_baselines(names, suite, settings, folder)):
        entries.append(baseline_entry(name, baseline_results, None if folder is None else folder / name,
                                      None if output_dir is None else Path(output_dir)))
    results["baselines"] = entries
    if output_dir is not None:
        write_report(results, output_dir)
    return results
