"""Every module imports; one batch planner; provenance saved with the model; compressed reranking lists."""

import gzip
import importlib
import json
import pkgutil
import shutil

import pytest

import llm2comp
from llm2comp import LLM2Comp
from llm2comp.evaluation.base import Embedder
from llm2comp.evaluation.reranking import load_reranking
from llm2comp.evaluation.runner import describe_model
from llm2comp.losses.info_nce import plan_chunks
from llm2comp.models.default_model import QUANTISED_NOTE


def test_every_module_imports():
    names = [info.name for info in pkgutil.walk_packages(llm2comp.__path__, prefix="llm2comp.")
             if not info.name.endswith("__main__")]  # that one runs the command line
    assert len(names) > 60
    for name in names:
        importlib.import_module(name)


def test_reranking_reads_a_compressed_list_layout_file(tmp_path):
    rows = [{"query": "q1", "positive": ["a"], "negative": ["b", "c"]}, {"query": "q2", "positive": ["d"],
                                                                         "negative": ["e"]}]
    with gzip.open(tmp_path / "rerank.jsonl.gz", "wt") as handle:  # before: read as rows, "column 'document' is missing"
        handle.write("\n".join(json.dumps(row) for row in rows))
    task = load_reranking(tmp_path / "rerank.jsonl.gz")
    assert [(item.query, item.positives, item.negatives) for item in task.items] == [
        ("q1", ["a"], ["b", "c"]), ("q2", ["d"], ["e"])]


def test_the_backbone_note_travels_in_the_model_folder(tiny_llama_dir, tmp_path):
    """The quantisation note comes from the converted backbone's own marker, saved into every model
    folder built on it; before, it was attached to any backbone whose name held 'SmolLM2-135M-Instruct'."""
    lookalike = shutil.copytree(tiny_llama_dir, tmp_path / "SmolLM2-135M-Instruct-finetuned")
    plain = LLM2Comp.from_pretrained(lookalike, num_memory_tokens=2)
    assert plain.config.backbone_note is None and "note" not in describe_model(plain, None)

    converted = shutil.copytree(tiny_llama_dir, tmp_path / "cache" / "any-name")
    (converted / "llm2comp_conversion.json").write_text(json.dumps({"version": 1, "files": [], "note": QUANTISED_NOTE}))
    LLM2Comp.from_pretrained(converted, num_memory_tokens=2).save(tmp_path / "model")
    reloaded = LLM2Comp.from_pretrained(tmp_path / "model")
    assert describe_model(reloaded, "mine")["note"] == QUANTISED_NOTE
    saved = json.loads((tmp_path / "model" / "llm2comp_config.json").read_text())
    assert saved["backbone_note"] == QUANTISED_NOTE and saved["format_version"] == 3


def test_evaluation_lets_encode_plan_its_batches(tiny_encoder):
    """One long and 15 short texts at batch size 2: `encode`'s planner puts up to 8 short texts in a
    batch (within the memory of 2 long rows); before, the evaluation loop handed it 2 texts at a time."""
    calls = []
    hook = tiny_encoder.register_forward_hook(lambda module, args, output: calls.append(output.shape[0]))
    texts = ["a much longer text " * 8] + [f"text number {i}" for i in range(15)]
    try:
        Embedder(tiny_encoder, batch_size=2, show_progress_bar=False)(texts)
    finally:
        hook.remove()
    assert sum(calls) == 16 and len(calls) <= 4 and max(calls) > 2


@pytest.mark.parametrize("chunk_size", [1, 2, 3])
def test_cache_chunks_use_the_planner_and_never_exceed_the_chunk_size(chunk_size):
    lengths = (3, 9, 1, 5, 7, 2, 2, 8)
    chunks = plan_chunks([[1] * n for n in lengths], chunk_size)
    assert sorted(i for chunk in chunks for i in chunk) == list(range(len(lengths)))
    assert max(len(chunk) for chunk in chunks) <= chunk_size
    assert [lengths[i] for chunk in chunks for i in chunk] == sorted(lengths, reverse=True)  # longest first
