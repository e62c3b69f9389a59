"""Stages 2 and 3 on a tiny model, and the three-stage pipeline from one config."""

import json

import numpy as np
import pytest
import yaml

from llm2comp import LLM2Comp
from llm2comp.data.instructions import E5_INSTRUCTIONS
from llm2comp.recipes.pipeline import load_pipeline, run_pipeline
from llm2comp.recipes.supervised import load_pair_set

from .training_helpers import write_corpus, write_pairs, write_sentences

TEXTS = ["river city music", "a garden in winter", "the planet and the ocean"]


@pytest.fixture
def pipeline_file(tiny_llama_dir, tmp_path):
    config = {
        "model": str(tiny_llama_dir), "output_dir": str(tmp_path / "run"), "num_memory_tokens": 2,
        "max_length": 64, "lora": {"r": 4, "alpha": 8, "dropout": 0.0}, "batch_size": 4, "warmup_steps": 0,
        "max_steps": 2, "save_every": 0, "seed": 0,
        "stages": {
            "pretrain": {"data": {"type": "text", "path": str(write_corpus(tmp_path / "c.txt"))}, "max_tokens": 60,
                         "lr": 5e-3},
            "unsupervised": {"data": {"type": "text", "path": str(write_sentences(tmp_path / "s.txt"))},
                             "attention_dropout": 0.2, "lr": 1e-3},
            "supervised": {"data": {"type": "pairs", "path": str(write_pairs(tmp_path / "p.jsonl"))},
                           "cache_chunk_size": 3, "lr": 1e-3},
        },
    }
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_pipeline_chains_three_stages_and_reuses_finished_ones(pipeline_file, tmp_path):
    configs = load_pipeline(pipeline_file, ["--supervised.max_steps", "3"])
    assert [c.stage for c in configs] == ["pretrain", "unsupervised", "supervised"]
    assert configs[1].model == str(tmp_path / "run" / "pretrain" / "model") and configs[2].loop.max_steps == 3
    final = run_pipeline(configs)
    assert final == tmp_path / "run" / "supervised" / "model"
    saved = json.loads((final / "llm2comp_config.json").read_text())
    assert saved["adapters"] == ["adapters/00", "adapters/01", "adapters/02"]
    # every training query had msmarco's instruction: it is saved as the default query prompt
    assert saved["prompts"] == {"query": E5_INSTRUCTIONS["msmarco_passage"]}
    assert json.loads((final / "config_sentence_transformers.json").read_text())["prompts"]["query"] == \
        E5_INSTRUCTIONS["msmarco_passage"]
    embeddings = {stage: LLM2Comp.from_pretrained(tmp_path / "run" / stage / "model").encode(TEXTS)
                  for stage in ("pretrain", "unsupervised", "supervised")}
    assert np.abs(embeddings["pretrain"] - embeddings["unsupervised"]).max() > 1e-4
    assert np.abs(embeddings["unsupervised"] - embeddings["supervised"]).max() > 1e-4
    logs = {stage: (tmp_path / "run" / stage / "metrics.jsonl").read_text() for stage in embeddings}
    assert len(logs["supervised"].splitlines()) == 3
    run_pipeline(load_pipeline(pipeline_file, ["--supervised.max_steps", "3"]))  # finished: reused, not retrained
    assert {stage: (tmp_path / "run" / stage / "metrics.jsonl").read_text() for stage in embeddings} == logs


def test_attention_dropout_makes_views_in_training_only(pipeline_file, tmp_path):
    from llm2comp.models.backbone import attention_dropout_override

    configs = load_pipeline(pipeline_file)
    run_pipeline(configs[:1])
    folder = tmp_path / "run" / "pretrain" / "model"
    override = attention_dropout_override(folder, 0.2)
    assert override == {"attention_dropout": 0.2}
    model = LLM2Comp.from_pretrained(folder, **override)
    np.testing.assert_array_equal(model.encode(TEXTS), model.encode(TEXTS))  # encode runs in eval mode
    batch = model.collate(model.tokenize(TEXTS)[0])
    model.train()
    first, second = model(batch), model(batch)
    assert (first - second).abs().max() > 1e-4  # two dropout views differ


def test_pair_sources_and_errors(tmp_path):
    pairs = load_pair_set({"type": "pairs", "path": str(write_pairs(tmp_path / "p.jsonl"))})
    assert len(pairs) == 24 and pairs.examples[0].instruction
    assert len(load_pair_set({"type": "wiki_demo"})) > 50
    cloze = load_pair_set({"type": "wiki_cloze"})
    assert len(cloze) > 50 and cloze.examples[0].task == "wiki_sentence_paragraph"
    with pytest.raises(ValueError, match="unknown key.*'path'"):
        load_pair_set({"type": "wiki_cloze", "path": "x"})
    with pytest.raises(ValueError, match="supervised data type"):
        load_pair_set({"type": "text", "path": "x"})
    (tmp_path / "bad.jsonl").write_text('{"query": "q", "positive": "p"}\n{"query": "q2"}\n')
    with pytest.raises(ValueError, match="bad.jsonl.*2"):
        load_pair_set({"type": "pairs", "path": str(tmp_path / "bad.jsonl")})


def test_pipeline_file_errors(tmp_path):
    (tmp_path / "p.yaml").write_text(yaml.safe_dump({"stages": {"supervised": {}, "pretrain": {}}}))
    assert [c.stage for c in load_pipeline(tmp_path / "p.yaml")] == ["pretrain", "supervised"]
    (tmp_path / "q.yaml").write_text(yaml.safe_dump({"stages": {"finetune": {}}}))
    with pytest.raises(ValueError, match="unknown stage"):
        load_pipeline(tmp_path / "q.yaml")
