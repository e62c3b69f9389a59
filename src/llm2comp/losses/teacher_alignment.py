"""Distillation from a teacher embedder: the student's in-batch similarities follow the teacher's.

For a batch of B texts with student embeddings s_b (B, d) and teacher embeddings t_b (B, D), d and D
any widths:

    S_ij = cos(s_i, s_j) / tau,   T_ij = cos(t_i, t_j) / tau        for j != i (the diagonal left out)
    p_i  = softmax_j(T_ij),       q_i  = softmax_j(S_ij)            over the B - 1 other texts
    L_teacher = 1/B sum_i KL(p_i || q_i) = 1/B sum_i sum_{j != i} p_ij (log p_ij - log q_ij)

tau is `teacher.temperature` (default 0.05, the contrastive stages' temperature). The teacher side
carries no gradient. L = 0 exactly when every row of similarities agrees (e.g. s = c * t, c > 0: the
cosines are scale-free), and L > 0 otherwise; with B = 1 there is no other text and L = 0.

Which loss for which teacher, and why:
- `teacher: backbone` (stage 1): today's alignment term (losses/compression.py), the cosine of the
  memory mean to the frozen backbone's mean-pooled context states, or in-batch InfoNCE with
  `alignment_temperature` > 0. The memory lives in the backbone's own hidden space, so comparing the
  two vectors coordinate by coordinate is meaningful -- and the cosine needs equal widths.
- every other teacher (sentence_transformers, wordllama, vectors): the similarity-distribution term
  above. A teacher's space is not the student's, even when the widths happen to agree, and its width
  usually does not: matching which texts are close to which needs neither equal widths nor a trained
  projection, so nothing extra is trained or saved with the embedder.

Stage 3 can instead distil the teacher's *query-document* scores (`teacher_scores: query_documents`),
the retrieval-shaped variant (in-batch knowledge distillation of a bi-encoder): over the batch's
queries q_i and documents d_j (every positive and hard negative, 2B of them with one negative each)

    S_ij = cos(s(q_i), s(d_j)) / tau,   T_ij = cos(t(q_i), t(d_j)) / tau      all j, positive included
    L_teacher = 1/B sum_i KL(softmax_j T_ij || softmax_j S_ij)

so the student ranks the documents for each query as the teacher does, not only the queries
among themselves (`teacher_scores: within`, the default).

Where: stage 1 adds `alignment_weight * L_teacher` on the memory means (in place of the backbone
alignment, `CompressionObjective(teacher=...)`); stages 2-3 add `teacher_weight * L_teacher` on the
query (stage 3) or first-view sentence (stage 2) embeddings, beside InfoNCE (`TeacherDistillation`).
Teacher vectors come from a `CachedTeacher` (models/teachers.py): each text is embedded once per run.

GradCache (`cache_chunk_size` > 0) with `teacher_weight` > 0 is refused (`check_distillation`):
the cached loss returns a detached leaf whose gradient it computes with respect to the step-1
embeddings alone; adding a term outside it would get no gradient into the encoder. Supporting it
means computing the teacher term inside GradCache's step 2, on the cached embeddings.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from ..models.teachers import CachedTeacher, TeacherSettings, load_teacher, teacher_settings
from ..typed_settings import setting, validate


def similarity_distribution_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float = 0.05,
                                 ) -> torch.Tensor:
    """student (B, d) with gradient, teacher (B, D) (detached here) -> scalar L_teacher (module docstring)."""
    if student.dim() != 2 or teacher.dim() != 2 or student.shape[0] != teacher.shape[0]:
        raise ValueError(f"student {tuple(student.shape)} and teacher {tuple(teacher.shape)} must be (B, d) and "
                         "(B, D) with the same B")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    n = student.shape[0]
    if n < 2:
        return student.sum() * 0.0  # no other text to compare with; keeps the graph
    with torch.autocast(student.device.type, enabled=False):
        off = ~torch.eye(n, dtype=torch.bool, device=student.device)

        def log_distribution(x):
            x = F.normalize(x.float(), dim=-1)
            return F.log_softmax((x @ x.T)[off].view(n, n - 1) / temperature, dim=-1)

        log_q = log_distribution(student)
        log_p = log_distribution(teacher.detach().to(student.device))
        return F.kl_div(log_q, log_p, log_target=True, reduction="batchmean")


def cross_similarity_loss(student_queries: torch.Tensor, student_documents: torch.Tensor,
                          teacher_queries: torch.Tensor, teacher_documents: torch.Tensor,
                          temperature: float = 0.05) -> torch.Tensor:
    """Query-document score distillation (module docstring): students (B, d), (N, d); teachers (B, D), (N, D)."""
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if student_queries.shape[0] != teacher_queries.shape[0] or student_documents.shape[0] != teacher_documents.shape[0]:
        raise ValueError(f"student ({student_queries.shape[0]} queries, {student_documents.shape[0]} documents) and "
                         f"teacher ({teacher_queries.shape[0]}, {teacher_documents.shape[0]}) must embed the same texts")
    with torch.autocast(student_queries.device.type, enabled=False):
        def log_scores(queries, documents):
            queries, documents = F.normalize(queries.float(), dim=-1), F.normalize(documents.float(), dim=-1)
            return F.log_softmax(queries @ documents.T / temperature, dim=-1)

        log_q = log_scores(student_queries, student_documents)
        device = student_queries.device
        log_p = log_scores(teacher_queries.detach().to(device), teacher_documents.detach().to(device))
        return F.kl_div(log_q, log_p, log_target=True, reduction="batchmean")


class TeacherAlignment:
    """L_teacher of student embeddings against a (cached) teacher's embeddings of the same texts."""

    def __init__(self, teacher, temperature: float = 0.05):
        self.teacher = teacher if isinstance(teacher, CachedTeacher) else CachedTeacher(teacher)
        self.temperature = float(temperature)

    @classmethod
    def from_settings(cls, settings: TeacherSettings) -> TeacherAlignment:
        settings = teacher_settings(settings)
        return cls(load_teacher(settings), settings.temperature)

    def __call__(self, student: torch.Tensor, texts: list[str]) -> torch.Tensor:
        target = self.teacher.embed(list(texts)).to(student.device)
        return similarity_distribution_loss(student, target, self.temperature)

    def cross(self, queries: torch.Tensor, query_texts: list[str], documents: torch.Tensor,
              document_texts: list[str]) -> torch.Tensor:
        return cross_similarity_loss(queries, documents, self.teacher.embed(list(query_texts)),
                                     self.teacher.embed(list(document_texts)), self.temperature)


def check_stage1_teacher(terms) -> TeacherSettings:
    """Stage 1's `teacher` (of `CompressionTerms`) as `TeacherSettings`, checked against the alignment's
    other settings: an external teacher needs `alignment_weight` > 0 and uses its own temperature."""
    teacher = teacher_settings(terms.teacher)
    if teacher.external and terms.alignment_weight == 0:
        raise ConfigError(f"teacher type {teacher.type!r} is set but alignment_weight is 0 (the teacher is what "
                          "the alignment term aligns to): set alignment_weight > 0, or leave the teacher out")
    if teacher.external and terms.alignment_temperature > 0:
        raise ConfigError(f"alignment_temperature applies to the backbone teacher only; teacher type "
                          f"{teacher.type!r} uses teacher.temperature (the similarity-distribution term)")
    return teacher


TEACHER_SCORES = ("within", "query_documents")


@dataclass(frozen=True)
class DistillationSettings:
    """Stages 2-3: `loss = InfoNCE + teacher_weight * L_teacher` (0 = off), with the `teacher:` block."""

    teacher_weight: float = setting(0.0, minimum=0)
    teacher: TeacherSettings | str = setting(factory=TeacherSettings)
    teacher_scores: str = setting("within", choices=TEACHER_SCORES)  # stage 3 only: or query_documents

    def __post_init__(self):
        validate(self)
        object.__setattr__(self, "teacher", teacher_settings(self.teacher))
        if self.teacher_weight > 0 and not self.teacher.external:
            raise ConfigError("teacher_weight > 0 needs an external teacher (teacher: {type: sentence_transformers, "
                              "model: ...}, {type: wordllama} or {type: vectors, path: ...}); the backbone teacher "
                              "is stage 1's alignment term")
        if self.teacher.external and self.teacher_weight == 0:
            raise ConfigError(f"teacher type {self.teacher.type!r} is set but teacher_weight is 0: set "
                              "teacher_weight > 0, or leave the teacher out")


def check_distillation(cfg) -> None:
    """Refuse `teacher_weight` > 0 together with GradCache (module docstring says why)."""
    distill = cfg.distillation
    if distill.teacher_weight > 0 and getattr(cfg, "cache_chunk_size", 0) > 0:
        raise ConfigError(f"teacher_weight={distill.teacher_weight:g} does not combine with cache_chunk_size="
                          f"{cfg.cache_chunk_size} (GradCache): the cached loss takes its gradient from the "
                          "cached embeddings alone; set cache_chunk_size: 0 or teacher_weight: 0")


class TeacherDistillation(nn.Module):
    """A contrastive objective plus `weight * L_teacher` on the embeddings of its first text group.

    `loss` is the stage's objective (`InfoNCE`, or `SimCSE` around it); its value is unchanged. The
    first forward of its encoder in a step embeds the queries (stage 3) or view 1 (stage 2, the
    sentences); a forward hook on the encoder keeps that output, with its graph, and the teacher term
    is computed on it -- no extra embedding pass. `queries_of(batch)` gives those texts' token ids and
    `text_of` maps a row's ids to the text the teacher reads (else the tokenizer decodes them).
    """

    def __init__(self, loss: nn.Module, alignment: TeacherAlignment, weight: float, queries_of,
                 text_of: dict | None = None, documents_of=None):
        super().__init__()
        if getattr(loss, "chunk_size", None) is not None or getattr(getattr(loss, "loss", None), "chunk_size", None):
            raise ConfigError("teacher distillation needs the queries embedded in one forward (chunk_size None)")
        self.loss = loss
        self.alignment, self.weight = alignment, float(weight)
        self.queries_of, self.text_of = queries_of, text_of or {}
        self.documents_of = documents_of  # set: distil query-document scores (`teacher_scores: query_documents`)

    @property
    def encoder(self):
        return self.loss.encoder

    def forward_through(self, wrapper) -> None:
        self.loss.forward_through(wrapper)

    def texts(self, rows) -> list[str]:
        tokenizer = self.encoder.tokenizer
        return [self.text_of.get(tuple(ids)) or tokenizer.decode(ids, skip_special_tokens=True) for ids in rows]

    def forward(self, batch) -> torch.Tensor:
        captured = []

        def keep(module, inputs, output):
            if not captured or self.documents_of is not None:
                captured.append(output)

        handle = self.encoder.register_forward_hook(keep)
        try:
            contrastive = self.loss(batch)
        finally:
            handle.remove()
        rows = self.queries_of(batch)
        student = captured[0]
        if student.shape[0] != len(rows):
            raise RuntimeError(f"the first encoder pass embedded {student.shape[0]} texts, not the {len(rows)} queries")
        if self.documents_of is None:
            return contrastive + self.weight * self.alignment(student, self.texts(rows))
        documents = self.documents_of(batch)
        student_documents = torch.cat(captured[1:]) if len(captured) > 1 else student[:0]
        if student_documents.shape[0] != len(documents):
            raise RuntimeError(f"the document passes embedded {student_documents.shape[0]} texts, not the "
                               f"{len(documents)} documents")
        return contrastive + self.weight * self.alignment.cross(student, self.texts(rows), student_documents,
                                                                self.texts(documents))


def with_teacher(objective: nn.Module, cfg, queries_of, text_of: dict | None = None, documents_of=None) -> nn.Module:
    """`objective` itself when the stage's `teacher_weight` is 0, else wrapped in `TeacherDistillation`
    with the configured teacher (loaded here, cached per text). `documents_of(batch)` (stage 3) gives
    the documents' token ids, positives then negatives, for `teacher_scores: query_documents`."""
    check_distillation(cfg)
    distill = cfg.distillation
    if distill.teacher_weight == 0:
        return objective
    if distill.teacher_scores == "query_documents" and documents_of is None:
        raise ConfigError("teacher_scores: query_documents needs queries and documents (stage 3, supervised); this "
                          "stage has none: use teacher_scores: within")
    return TeacherDistillation(objective, TeacherAlignment.from_settings(distill.teacher), distill.teacher_weight,
                               queries_of, text_of,
                               documents_of if distill.teacher_scores == "query_documents" else None)
