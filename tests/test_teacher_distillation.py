"""Distillation from a teacher embedder: the backbone teacher is today's alignment term, the
similarity-distribution term is width-free, teacher vectors are read from files and cached per text,
and stages 1 and 2 train and save with an external teacher."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml

from llm2comp.data.compression_examples import make_example
from llm2comp.errors import ConfigError
from llm2comp.losses.compression import CompressionObjective, CompressionTerms
from llm2comp.losses.embedding_alignment import embedding_alignment_loss
from llm2comp.losses.teacher_alignment import (
    TeacherAlignment,
    check_distillation,
    cross_similarity_loss,
    similarity_distribution_loss,
)
from llm2comp.models.teachers import CachedTeacher, TeacherSettings, TeacherTextMissing, VectorsTeacher
from llm2comp.recipes.stage_config import stage_config

from .test_compression import IDS  # the `encoder` fixture lives in conftest.py
from .training_helpers import (
    memory_and_backbone_targets,
    tiny_stage_config,
    write_corpus,
    write_pairs,
    write_sentences,
)


class CountingTeacher:
    """A stub teacher of width 7: a fixed random vector per text; counts how often each text is embedded."""

    def __init__(self, width: int = 7):
        self.width, self.calls = width, {}

    def embed(self, texts):
        rows = []
        for text in texts:
            self.calls[text] = self.calls.get(text, 0) + 1
            seed = sum(map(ord, text)) % (2 ** 31)
            rows.append(torch.randn(self.width, generator=torch.Generator().manual_seed(seed)))
        return torch.stack(rows)


# ---------------------------------------------------------------------------------- (1) backbone teacher
def test_the_backbone_teacher_is_todays_alignment_term(encoder):
    examples = [make_example(ids, "kl", seed=3, index=i) for i, ids in enumerate(IDS)]
    base = CompressionObjective(encoder, "kl")(examples)
    memory, targets = memory_and_backbone_targets(encoder, examples)
    for teacher in ("backbone", {"type": "backbone"}, TeacherSettings()):
        terms = CompressionTerms(alignment_weight=1.0, teacher=teacher)
        assert terms.teacher == TeacherSettings()
        cosine = CompressionObjective(encoder, "kl", terms=terms)(examples)
        torch.testing.assert_close(cosine, base + embedding_alignment_loss(memory, targets), atol=1e-5, rtol=1e-5)
        nce_terms = CompressionTerms(alignment_weight=1.0, alignment_temperature=0.1, teacher=teacher)
        nce = CompressionObjective(encoder, "kl", terms=nce_terms)(examples)
        logits = F.normalize(memory, dim=-1) @ F.normalize(targets, dim=-1).T / 0.1
        torch.testing.assert_close(nce, base + F.cross_entropy(logits, torch.arange(len(examples))),
                                   atol=1e-5, rtol=1e-5)
    # exactly today's value: the default terms and the explicit backbone teacher give the same loss
    same = CompressionObjective(encoder, "kl", terms=CompressionTerms(alignment_weight=0.5))(examples)
    explicit = CompressionObjective(encoder, "kl", terms=CompressionTerms(alignment_weight=0.5, teacher="backbone"))
    assert torch.equal(same, explicit(examples))


def test_configs_without_a_teacher_keep_their_old_keys_and_values():
    cfg = stage_config(stage="pretrain", model="m", output_dir="/tmp/out", alignment_weight=1.0)
    saved = cfg.to_dict()
    assert saved["teacher"] == {"type": "backbone", "model": None, "path": None, "temperature": 0.05}
    again = stage_config(**{k: v for k, v in saved.items()})  # what a resume reads back builds the same config
    assert again.to_dict() == saved
    for stage in ("unsupervised", "supervised"):
        saved = stage_config(stage=stage, model="m", output_dir="/tmp/out").to_dict()
        assert saved["teacher_weight"] == 0.0 and saved["teacher"]["type"] == "backbone"


# ---------------------------------------------------------------------------------- (2) the width-free loss
def test_similarity_distribution_loss_is_zero_only_when_the_similarities_agree():
    torch.manual_seed(0)
    student = torch.randn(6, 8, requires_grad=True)
    assert similarity_distribution_loss(student, 3.0 * student.detach()).abs() < 1e-6  # up to scale
    rotation, _ = torch.linalg.qr(torch.randn(12, 12))
    wider = student.detach() @ rotation[:8]  # (6, 12): another width, the same cosines
    assert similarity_distribution_loss(student, wider).abs() < 1e-5
    other = torch.randn(6, 3)  # another width, other similarities
    loss = similarity_distribution_loss(student, other, temperature=0.1)
    assert loss > 1e-3
    loss.backward()
    assert student.grad.abs().sum() > 0
    # the formula: mean over rows of KL(p_i || q_i) over the other texts
    s, t = F.normalize(student.detach(), dim=-1), F.normalize(other, dim=-1)
    expected = 0.0
    for i in range(6):
        keep = [j for j in range(6) if j != i]
        p = torch.softmax(t[i] @ t[keep].T / 0.1, -1)
        q = torch.softmax(s[i] @ s[keep].T / 0.1, -1)
        expected += (p * (p.log() - q.log())).sum() / 6
    torch.testing.assert_close(loss.detach(), expected, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="same B"):
        similarity_distribution_loss(student, other[:5])


def test_an_external_teacher_of_another_width_replaces_the_backbone_alignment(encoder):
    examples = [make_example(ids, "kl", seed=3, index=i) for i, ids in enumerate(IDS)]
    base = CompressionObjective(encoder, "kl")(examples)
    stub = CountingTeacher(width=7)  # the student is 64 wide
    terms = CompressionTerms(alignment_weight=2.0, teacher={"type": "vectors", "path": "unused.npz"})
    objective = CompressionObjective(encoder, "kl", terms=terms, teacher=TeacherAlignment(stub, temperature=0.2))
    loss = objective(examples)
    with torch.no_grad():
        memory = encoder.memory_states(encoder.collate([e.context for e in examples])).mean(1)
    texts = [encoder.tokenizer.decode(e.context, skip_special_tokens=True) for e in examples]
    expected = base + 2.0 * similarity_distribution_loss(memory, CountingTeacher(7).embed(texts), 0.2)
    torch.testing.assert_close(loss, expected, atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------------------------- (3) vectors files
def test_teacher_vectors_from_jsonl_and_npz_name_a_missing_text(tmp_path):
    jsonl = tmp_path / "v.jsonl"
    jsonl.write_text(json.dumps({"text": "a cat", "vector": [1.0, 0.0, 2.0]}) + "\n"
                     + json.dumps({"text": "a dog", "vector": [0.0, 1.0, 0.0]}) + "\n")
    npz = tmp_path / "v.npz"
    np.savez(npz, texts=np.array(["a cat", "a dog"]), vectors=np.array([[1.0, 0.0, 2.0], [0.0, 1.0, 0.0]]))
    for path in (jsonl, npz):
        teacher = VectorsTeacher(path)
        torch.testing.assert_close(teacher.embed(["a dog", "a cat"]), torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 2.0]]))
        with pytest.raises(TeacherTextMissing, match=r"v\.(jsonl|npz): no teacher vector for the text 'a bird'"):
            teacher.embed(["a cat", "a bird"])
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"text": "x", "vector": [1.0]}) + "\n{\"text\": 3}\n")
    with pytest.raises(Exception, match=r"bad\.jsonl:2"):
        VectorsTeacher(bad)


# ---------------------------------------------------------------------------------- (4) caching
def test_each_texts_teacher_embedding_is_computed_once_across_epochs(encoder):
    examples = [make_example(ids, "kl", seed=3, index=i) for i, ids in enumerate(IDS)]
    stub = CountingTeacher()
    terms = CompressionTerms(alignment_weight=1.0, teacher={"type": "wordllama"})
    objective = CompressionObjective(encoder, "kl", terms=terms, teacher=TeacherAlignment(stub))
    first = [objective(examples[:2]), objective(examples[2:])]  # epoch 1, two batches
    second = [objective(examples[2:]), objective(examples[:2])]  # epoch 2, another order
    assert len(stub.calls) == len(examples) and set(stub.calls.values()) == {1}
    torch.testing.assert_close(torch.stack(first), torch.stack(second[::-1]))
    cached = CachedTeacher(CountingTeacher())
    cached.precompute(["x", "y", "x"])
    cached.embed(["y", "x", "z"])
    assert cached.teacher.calls == {"x": 1, "y": 1, "z": 1}


# ---------------------------------------------------------------------------------- (5) tiny runs
def _tiny_sentence_transformer(tiny_llama_dir, folder):
    from sentence_transformers import SentenceTransformer, models

    body = models.Transformer(str(tiny_llama_dir), max_seq_length=64)
    if body.tokenizer.pad_token is None:
        body.tokenizer.pad_token = body.tokenizer.eos_token
    model = SentenceTransformer(modules=[body, models.Pooling(body.auto_model.config.hidden_size, "mean")],
                                device="cpu")
    model.save(str(folder))
    return folder


def _losses(folder):
    return [json.loads(line)["loss"] for line in (folder / "metrics.jsonl").read_text().splitlines()]


def test_tiny_stage1_run_with_a_sentence_transformers_teacher_trains_and_saves(tiny_llama_dir, tmp_path):
    from llm2comp.models.config import is_llm2comp_folder
    from llm2comp.recipes.pretrain import run_pretrain

    st_folder = _tiny_sentence_transformer(tiny_llama_dir, tmp_path / "st")
    corpus = write_corpus(tmp_path / "c.txt", n=16)
    common = dict(max_steps=2, save_every=0, alignment_weight=1.0)
    plain = run_pretrain(tiny_stage_config(tiny_llama_dir, corpus, tmp_path / "plain", **common))
    cfg = tiny_stage_config(tiny_llama_dir, corpus, tmp_path / "run",
                            teacher={"type": "sentence_transformers", "model": str(st_folder)}, **common)
    model = run_pretrain(cfg)
    assert is_llm2comp_folder(model)
    record = yaml.safe_load((model / "training_config.yaml").read_text())
    assert record["teacher"]["type"] == "sentence_transformers"
    with_teacher, without = _losses(tmp_path / "run"), _losses(tmp_path / "plain")
    assert all(np.isfinite(with_teacher)) and with_teacher[0] != pytest.approx(without[0], abs=1e-6)
    assert sorted(p.name for p in model.iterdir()) == sorted(p.name for p in plain.iterdir())  # nothing extra saved


def test_tiny_stage2_run_with_a_vectors_teacher_trains_and_saves(tiny_llama_dir, tmp_path):
    from llm2comp.data.sentences import load_sentences
    from llm2comp.models.config import is_llm2comp_folder
    from llm2comp.recipes.unsupervised import run_unsupervised

    sentences = write_sentences(tmp_path / "s.txt", n=8)
    data = {"type": "text", "path": str(sentences)}
    texts = load_sentences(data, seed=0).texts
    rng = np.random.default_rng(0)
    vectors = tmp_path / "teacher.npz"
    np.savez(vectors, texts=np.array(texts), vectors=rng.normal(size=(len(texts), 5)))  # 5-d teacher, 64-d student
    common = dict(stage="unsupervised", data=data, max_steps=2, save_every=0, lr=1e-3)
    cfg = tiny_stage_config(tiny_llama_dir, sentences, tmp_path / "run", teacher_weight=1.0,
                            teacher={"type": "vectors", "path": str(vectors)}, **common)
    model = run_unsupervised(cfg)
    assert is_llm2comp_folder(model)
    run_unsupervised(tiny_stage_config(tiny_llama_dir, sentences, tmp_path / "plain", **common))
    with_teacher, without = _losses(tmp_path / "run"), _losses(tmp_path / "plain")
    assert all(np.isfinite(with_teacher)) and with_teacher[0] > without[0] + 1e-4  # the term adds a KL >= 0


def test_tiny_stage3_run_distils_the_bare_queries(tiny_llama_dir, tmp_path):
    from llm2comp.recipes.supervised import run_supervised

    pairs = write_pairs(tmp_path / "p.jsonl", n=8)
    queries = [json.loads(line)["query"] for line in pairs.read_text().splitlines()]
    vectors = tmp_path / "teacher.jsonl"  # keyed by the query as written, without its instruction
    vectors.write_text("".join(json.dumps({"text": q, "vector": [float(i), 1.0, -1.0]}) + "\n"
                               for i, q in enumerate(queries)))
    cfg = tiny_stage_config(tiny_llama_dir, pairs, tmp_path / "run", stage="supervised", max_steps=2, save_every=0,
                            lr=1e-3, data={"type": "pairs", "path": str(pairs)}, teacher_weight=0.5,
                            teacher={"type": "vectors", "path": str(vectors)})
    model = run_supervised(cfg)
    assert (model / "training_config.yaml").is_file() and all(np.isfinite(_losses(tmp_path / "run")))


def test_query_document_scores_distil_the_teachers_ranking_of_documents():
    """L = 1/B sum_i KL(softmax_j cos(t(q_i), t(d_j))/tau || softmax_j cos(s(q_i), s(d_j))/tau), by hand."""
    g = torch.Generator().manual_seed(0)
    sq, sd = torch.randn(3, 8, generator=g, requires_grad=True), torch.randn(6, 8, generator=g)
    tq, td = torch.randn(3, 5, generator=g), torch.randn(6, 5, generator=g)  # another width
    got = cross_similarity_loss(sq, sd, tq, td, temperature=0.1)
    s_scores = F.normalize(sq, dim=-1) @ F.normalize(sd, dim=-1).T / 0.1
    t_scores = F.normalize(tq, dim=-1) @ F.normalize(td, dim=-1).T / 0.1
    p, log_q = t_scores.softmax(-1), s_scores.log_softmax(-1)
    expected = (p * (p.log() - log_q)).sum(-1).mean()
    torch.testing.assert_close(got, expected)
    got.backward()
    assert sq.grad is not None and sq.grad.abs().sum() > 0
    # zero when the student scores as the teacher does (here: the teacher itself, rescaled)
    same = cross_similarity_loss(3 * tq, 2 * td, tq, td, temperature=0.1)
    assert same.item() == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="must embed the same texts"):
        cross_similarity_loss(sq, sd, tq, td[:4])


def test_tiny_stage3_run_distils_query_document_scores(tiny_llama_dir, tmp_path):
    from llm2comp.recipes.supervised import run_supervised
    from llm2comp.recipes.unsupervised import run_unsupervised

    pairs = write_pairs(tmp_path / "p.jsonl", n=8)
    stub = tmp_path / "stub"
    common = dict(stage="supervised", max_steps=2, save_every=0, lr=1e-3, data={"type": "pairs", "path": str(pairs)})
    teacher = {"type": "sentence_transformers", "model": str(_tiny_sentence_transformer(tiny_llama_dir, stub))}
    losses = {}
    for scores in ("within", "query_documents"):
        cfg = tiny_stage_config(tiny_llama_dir, pairs, tmp_path / scores, teacher_weight=1.0, teacher=teacher,
                                teacher_scores=scores, **common)
        model = run_supervised(cfg)
        assert yaml.safe_load((model / "training_config.yaml").read_text())["teacher_scores"] == scores
        losses[scores] = _losses(tmp_path / scores)
    assert all(np.isfinite(losses["query_documents"]))
    assert losses["query_documents"][0] != pytest.approx(losses["within"][0], abs=1e-6)  # another term
    sentences = write_sentences(tmp_path / "s.txt", n=8)
    cfg = tiny_stage_config(tiny_llama_dir, sentences, tmp_path / "s2", stage="unsupervised", max_steps=1,
                            save_every=0, data={"type": "text", "path": str(sentences)}, teacher_weight=1.0,
                            teacher=teacher, teacher_scores="query_documents")
    with pytest.raises(ConfigError, match="query_documents needs queries and documents"):
        run_unsupervised(cfg)


# ---------------------------------------------------------------------------------- (6) config errors
@pytest.mark.parametrize("values, message", [
    (dict(alignment_weight=1.0, teacher="nope"),
     "teacher.type must be one of backbone, sentence_transformers, wordllama, vectors, got 'nope'"),
    (dict(alignment_weight=1.0, teacher={"type": "sentence_transformers"}), "teacher.model is required"),
    (dict(alignment_weight=1.0, teacher={"type": "vectors"}), "teacher.path is required"),
    (dict(alignment_weight=1.0, teacher={"type": "wordllama", "model": "x"}), "teacher.model is not read"),
    (dict(alignment_weight=1.0, teacher={"type": "wordllama", "size": 3}), r"unknown key\(s\) \['size'\]"),
    (dict(teacher={"type": "wordllama"}), "alignment_weight is 0"),
    (dict(alignment_weight=1.0, alignment_temperature=0.1, teacher="wordllama"), "teacher.temperature"),
    (dict(stage="unsupervised", teacher_weight=1.0), "needs an external teacher"),
    (dict(stage="supervised", teacher="wordllama"), "teacher_weight is 0"),
])
def test_teacher_config_errors_are_named(values, message):
    with pytest.raises(ConfigError, match=message):
        stage_config(**{"model": "m", "output_dir": "/tmp/out", **values})


def test_gradcache_with_a_teacher_is_refused():
    cfg = stage_config(stage="supervised", model="m", output_dir="/tmp/out", cache_chunk_size=2, teacher_weight=0.5,
                       teacher="wordllama")
    with pytest.raises(ConfigError, match="does not combine with cache_chunk_size=2"):
        check_distillation(cfg)
    check_distillation(stage_config(stage="supervised", model="m", output_dir="/tmp/out", cache_chunk_size=2))


def test_a_missing_sentence_transformers_model_is_named(tmp_path):
    from llm2comp.errors import MissingFile
    from llm2comp.models.teachers import load_teacher

    with pytest.raises(MissingFile, match="no/such/teacher"):
        load_teacher(TeacherSettings(type="sentence_transformers", model="no/such/teacher"))
