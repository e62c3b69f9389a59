"""Teacher embedders for distillation: which model's embeddings the student is aligned to.

    teacher: backbone                                         the frozen backbone's own mean pooling
    teacher: {type: sentence_transformers, model: NAME_OR_PATH}   any sentence-transformers model (local)
    teacher: {type: wordllama}                                WordLlama l2_supercat 256-d (installed wheel)
    teacher: {type: vectors, path: FILE}                      precomputed vectors keyed by text

`TeacherSettings` is the typed `teacher:` block (a plain string is read as `{type: STRING}`);
`load_teacher(settings)` returns an object whose `embed(texts) -> (n, D)` float32 tensor gives the
teacher's vectors (D need not be the student's width). The backbone teacher has no such object:
stage 1 computes it in its frozen teacher pass (losses/compression.py).

`CachedTeacher` wraps a teacher so that each distinct text is embedded once per run: an in-memory
dict text -> vector, filled lazily (the texts of a batch that are not in it yet, in one call) or
before training with `precompute(texts)`; later epochs read the dict.

Vectors files: `.jsonl`, one `{"text": ..., "vector": [...]}` per line, or `.npz` with arrays
`texts` (n,) and `vectors` (n, D). A text asked for that the file lacks is `TeacherTextMissing`,
naming the file and the text.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import ConfigError, CorruptFile, MissingDependency, MissingFile, UnknownName
from ..typed_settings import setting, validate

TEACHER_TYPES = ("backbone", "sentence_transformers", "wordllama", "vectors")


class TeacherTextMissing(UnknownName):
    """A text that the teacher's vectors file has no vector for."""

    def __str__(self) -> str:  # KeyError's str would quote the whole message
        return str(self.args[0])


@dataclass(frozen=True)
class TeacherSettings:
    """The `teacher:` block. `model` (sentence_transformers) and `path` (vectors) are required by
    their type and refused by the others; `temperature` is the similarity-distribution term's
    (losses/teacher_alignment.py), used by every teacher but the backbone."""

    type: str = setting("backbone", choices=TEACHER_TYPES)
    model: str | None = setting(None)  # sentence_transformers: a local folder or a cached model name
    path: str | None = setting(None)  # vectors: a .jsonl or .npz file
    temperature: float = setting(0.05, above=0)

    def __post_init__(self):
        validate(self)
        needs = {"sentence_transformers": "model", "vectors": "path"}.get(self.type)
        for key in ("model", "path"):
            given = getattr(self, key) is not None
            if key == needs and not given:
                raise ConfigError(f"teacher.{key} is required for teacher type {self.type!r}")
            if key != needs and given:
                raise ConfigError(f"teacher.{key} is not read by teacher type {self.type!r} (only "
                                  f"{'teacher.' + needs if needs else 'teacher.type'} is)")

    @property
    def external(self) -> bool:
        """Another model than the backbone itself (a loaded or precomputed teacher)."""
        return self.type != "backbone"


def teacher_settings(value) -> TeacherSettings:
    """A `teacher:` value (a type name, a mapping, or `TeacherSettings`) as `TeacherSettings`."""
    from ..typed_settings import build

    if isinstance(value, TeacherSettings):
        return value
    return build(TeacherSettings, {"type": value} if isinstance(value, str) else value, where="teacher")


class SentenceTransformerTeacher:
    """Any sentence-transformers model, loaded locally (no Hub access): its `encode` output."""

    def __init__(self, model: str, device: str | None = None):
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError:
            raise MissingDependency("teacher type sentence_transformers needs: pip install sentence-transformers") \
                from None
        if not Path(model).expanduser().exists():
            try:
                self.model = SentenceTransformer(model, device=device, local_files_only=True)
            except (OSError, ValueError) as error:  # the Hub's "not in the local cache" errors are both
                raise MissingFile(f"teacher.model {model!r}: neither a folder nor a model in the local cache "
                                  f"({error})") from None
        else:
            self.model = SentenceTransformer(str(Path(model).expanduser()), device=device)
        self.model.eval()

    def embed(self, texts: list[str]) -> torch.Tensor:
        vectors = self.model.encode(list(texts), convert_to_numpy=True, show_progress_bar=False)
        return torch.from_numpy(np.asarray(vectors, dtype=np.float32))


class WordLlamaTeacher:
    """WordLlama l2_supercat (256-d) from the installed wheel's files (evaluation/baselines.py)."""

    def __init__(self):
        from ..evaluation.baselines import WordLlamaBaseline

        self.baseline = WordLlamaBaseline()

    def embed(self, texts: list[str]) -> torch.Tensor:
        return torch.from_numpy(self.baseline.embed(list(texts)))


class VectorsTeacher:
    """Precomputed vectors keyed by text, read from a .jsonl or .npz file (module docstring)."""

    def __init__(self, path: str | Path):
        self.path = Path(path).expanduser()
        if not self.path.is_file():
            raise MissingFile(f"teacher.path {self.path}: no such file")
        self.vectors = read_vectors(self.path)

    def embed(self, texts: list[str]) -> torch.Tensor:
        rows = []
        for text in texts:
            if text not in self.vectors:
                shown = text if len(text) <= 80 else text[:77] + "..."
                raise TeacherTextMissing(f"{self.path}: no teacher vector for the text {shown!r} "
                                         f"({len(self.vectors)} texts in the file)")
            rows.append(self.vectors[text])
        return torch.from_numpy(np.stack(rows))


def read_vectors(path: Path) -> dict[str, np.ndarray]:
    """text -> float32 vector from a .jsonl or .npz vectors file; every vector the same width."""
    out: dict[str, np.ndarray] = {}
    if path.suffix == ".npz":
        try:
            with np.load(path, allow_pickle=False) as data:
                texts, vectors = data["texts"], data["vectors"]
        except (KeyError, ValueError, OSError) as error:
            raise CorruptFile(f"{path}: not an .npz with arrays `texts` and `vectors` ({error})") from None
        if vectors.ndim != 2 or len(texts) != len(vectors):
            raise CorruptFile(f"{path}: `vectors` must be (n, D) with n = len(texts) = {len(texts)}, "
                              f"got {vectors.shape}")
        out = {str(t): np.asarray(v, dtype=np.float32) for t, v in zip(texts.tolist(), vectors)}
    elif path.suffix == ".jsonl":
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                text, vector = row["text"], np.asarray(row["vector"], dtype=np.float32)
            except (ValueError, KeyError, TypeError) as error:
                raise CorruptFile(f"{path}:{number}: expected {{\"text\": ..., \"vector\": [...]}} ({error})") \
                    from None
            if not isinstance(text, str) or vector.ndim != 1:
                raise CorruptFile(f"{path}:{number}: `text` must be a string and `vector` a list of numbers")
            out[text] = vector
    else:
        raise ConfigError(f"teacher.path {path}: a vectors file ends in .jsonl or .npz")
    widths = {v.shape[0] for v in out.values()}
    if len(widths) > 1:
        raise CorruptFile(f"{path}: vectors of several widths {sorted(widths)}")
    if not out:
        raise CorruptFile(f"{path}: holds no vector")
    return out


def load_teacher(settings: TeacherSettings):
    """The teacher object of an external `TeacherSettings` (one with `embed(texts)`)."""
    settings = teacher_settings(settings)
    if settings.type == "sentence_transformers":
        return SentenceTransformerTeacher(settings.model)
    if settings.type == "wordllama":
        return WordLlamaTeacher()
    if settings.type == "vectors":
        return VectorsTeacher(settings.path)
    raise ConfigError(f"teacher type {settings.type!r} has no loaded model: the backbone teacher is computed by "
                      "stage 1's frozen pass")


class CachedTeacher:
    """A teacher whose vectors are computed once per distinct text and kept in memory (module docstring)."""

    def __init__(self, teacher):
        self.teacher = teacher
        self.cache: dict[str, torch.Tensor] = {}

    def precompute(self, texts, batch_size: int = 64) -> None:
        """Fill the cache for `texts` before training, `batch_size` texts per teacher call."""
        todo = list(dict.fromkeys(t for t in texts if t not in self.cache))
        for start in range(0, len(todo), batch_size):
            self._fill(todo[start:start + batch_size])

    def _fill(self, texts: list[str]) -> None:
        vectors = self.teacher.embed(texts)
        if len(vectors) != len(texts):
            raise CorruptFile(f"the teacher returned {len(vectors)} vectors for {len(texts)} texts")
        for text, vector in zip(texts, vectors):
            self.cache[text] = vector.detach().float().cpu()

    @torch.no_grad()
    def embed(self, texts: list[str]) -> torch.Tensor:
        """(n, D) float32 teacher vectors of `texts` (CPU), embedding only the texts not cached yet."""
        todo = list(dict.fromkeys(t for t in texts if t not in self.cache))
        if todo:
            self._fill(todo)
        return torch.stack([self.cache[t] for t in texts])
