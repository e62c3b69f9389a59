"""Evaluation's interface: EvalSettings, compare_models, the TextEncoder protocol and cached_evaluate.

Most tests run stub encoders (hash-seeded random vectors, no model): each takes well under a second.
"""

import dataclasses
import hashlib
import json
import os
import re

import numpy as np
import pytest

from llm2comp.errors import InvalidSetting, InvalidType
from llm2comp.evaluation import (
    Embedder,
    EvalSettings,
    SentenceEncoder,
    TextEncoder,
    as_encoder,
    cached_evaluate,
    compare_models,
    compare_results,
    evaluate,
    load_results,
)

QUIET = EvalSettings(max_items=12, show_progress_bar=False)


class HashEncoder:
    """A sentence-transformers-like stub: a fixed random vector per (text, salt); counts what it encodes."""

    def __init__(self, salt: str = "", dim: int = 16):
        self.salt, self.dim = salt, dim
        self.calls, self.texts = 0, []

    def encode(self, texts, batch_size=32, show_progress_bar=None, convert_to_numpy=True):
        self.calls += 1
        self.texts += list(texts)
        rows = []
        for text in texts:
            seed = int.from_bytes(hashlib.sha256((self.salt + text).encode()).digest()[:8], "little")
            rows.append(np.random.default_rng(seed).standard_normal(self.dim))
        return np.asarray(rows, dtype=np.float32).reshape(len(texts), self.dim)


class PlainEncoder:
    """The smallest encoder: `encode(texts)` and nothing else (a TF-IDF baseline would look like this)."""

    def encode(self, texts):
        return np.asarray([[len(text), sum(map(ord, text)) % 17 + 1.0] for text in texts])


@pytest.fixture
def sts_suite(tmp_path):
    rows = "\n".join(f"text number {i}\tanother text {i * 7 % 5}\t{i}" for i in range(6))
    (tmp_path / "pairs.tsv").write_text("sentence1\tsentence2\tscore\n" + rows + "\n")
    (tmp_path / "suite.yaml").write_text("name: tiny\ntasks:\n  - type: sts\n    name: TinySTS\n    path: pairs.tsv\n")
    return tmp_path / "suite.yaml"


# ------------------------------------------------------------------------------------------------ EvalSettings
@pytest.mark.parametrize(("values", "error", "message"), [
    ({"batch_size": True}, InvalidSetting, "batch_size must be a whole number >= 1, got True"),
    ({"max_items": 0}, InvalidSetting, "max_items must be a whole number >= 1 or None, got 0"),
    ({"pooling": "max"}, InvalidSetting, "pooling must be one of ('memory_mean', 'mean', 'last'), got 'max'"),
    ({"dtype": "float8"}, InvalidSetting, "unknown dtype 'float8'"),
    ({"device": "gpu0"}, InvalidSetting, "device 'gpu0' is not a device torch knows"),
    ({"diagnostics": "no"}, InvalidType, "diagnostics must be True or False, got 'no'"),
    ({"trust_remote_code": 1}, InvalidType, "trust_remote_code must be True or False, got 1"),
    ({"instructions": {"LeeDocSim": 3}}, InvalidType, "instructions must be a dict of task name -> instruction"),
])
def test_settings_name_the_field_they_refuse(values, error, message):
    with pytest.raises(error) as raised:
        EvalSettings(**values)
    assert message in str(raised.value)


def test_settings_are_frozen_copied_and_keyed_without_display_options():
    instructions = {"LeeDocSim": "Find similar documents"}
    settings = EvalSettings(seed=np.int64(3), instructions=instructions)
    instructions["LeeDocSim"] = "changed later"
    assert settings.instructions == {"LeeDocSim": "Find similar documents"}  # the caller's dict was copied
    assert type(settings.seed) is int and settings.seed == 3
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.batch_size = 4
    assert "show_progress_bar" not in settings.key() and settings.key()["seed"] == 3
    assert settings.replace(show_progress_bar=False).key() == settings.key()
    assert settings.replace(batch_size=4).key() != settings.key()
    with pytest.raises(InvalidSetting, match="batch_size must be a whole number >= 1, got 0"):
        settings.replace(batch_size=0)  # a copy is checked again


def test_evaluate_refuses_settings_that_are_not_evalsettings(tmp_path):
    with pytest.raises(InvalidType, match=r"settings must be an EvalSettings .*got PosixPath"):
        evaluate(HashEncoder(), "offline", tmp_path)  # the old positional output_dir
    with pytest.raises(InvalidType, match="settings must be an EvalSettings"):
        evaluate(HashEncoder(), "offline", {"max_items": 4})


# ------------------------------------------------------------------------------------------------ the protocol
def test_llm2comp_is_a_text_encoder_and_passes_through(tiny_encoder):
    assert isinstance(tiny_encoder, TextEncoder)
    assert as_encoder(tiny_encoder) is tiny_encoder
    embed = Embedder(tiny_encoder, show_progress_bar=False)
    assert embed.encoder is tiny_encoder and embed.long_texts == tiny_encoder.config.long_texts


def test_sentence_transformers_like_models_are_wrapped(sts_suite):
    stub = HashEncoder()
    assert not isinstance(stub, TextEncoder)  # no encode_windows: not run natively
    wrapped = as_encoder(stub)
    assert isinstance(wrapped, SentenceEncoder) and isinstance(wrapped, TextEncoder)
    out = Embedder(stub, show_progress_bar=False)(["a text", "another"], instruction="Find it")
    assert out.shape == (2, 16) and out.dtype == np.float32
    assert stub.texts == ["Find it: a text", "Find it: another"]  # the instruction written into the text
    plain = Embedder(PlainEncoder(), show_progress_bar=False)(["one two", "three"])  # encode(texts) alone
    np.testing.assert_allclose(plain, [[7, sum(map(ord, "one two")) % 17 + 1], [5, sum(map(ord, "three")) % 17 + 1]])
    with pytest.raises(InvalidSetting, match="long_texts='segments' needs an encoder that reads long texts in "
                                             "windows .*HashEncoder truncates"):
        Embedder(stub, long_texts="segments")
    results = evaluate(PlainEncoder(), sts_suite, EvalSettings(show_progress_bar=False))
    assert results["model"]["name"] == "PlainEncoder" and results["tasks"][0]["task_name"] == "TinySTS"


def test_a_custom_text_encoder_gets_instruction_pairs_unchanged():
    class PairEncoder:  # satisfies TextEncoder without being an LLM2Comp
        def __init__(self):
            self.seen = []

        def encode(self, texts, *, batch_size=32, show_progress_bar=None, convert_to_numpy=True, instruction=None,
                   long_texts=None, overlap=None):
            self.seen += list(texts)
            return np.ones((len(texts), 3), dtype=np.float32)

        def encode_windows(self, texts, *, batch_size=32, show_progress_bar=None, overlap=None):
            raise AssertionError("not used in truncate mode")

    encoder = PairEncoder()
    assert isinstance(encoder, TextEncoder) and as_encoder(encoder) is encoder
    Embedder(encoder, show_progress_bar=False)(["doc"], instruction="Query me")
    assert encoder.seen == [("Query me", "doc")]  # the encoder applies the instruction its own way


@pytest.mark.parametrize("thing", [{"tasks": []}, object(), 3])
def test_something_that_is_not_an_encoder_is_refused_before_any_work(thing, monkeypatch):
    import llm2comp.evaluation.runner as runner

    monkeypatch.setattr(runner, "get_suite", lambda *a, **k: pytest.fail("the suite was read first"))
    with pytest.raises(InvalidType, match=f"model is a {type(thing).__name__}, not a text encoder"):
        evaluate(thing, "offline")
    with pytest.raises(InvalidType, match="not a text encoder"):
        Embedder(thing)
    with pytest.raises(InvalidType, match="compare: model is a"):
        compare_models(HashEncoder(), thing if not isinstance(thing, dict) else object(), "offline")


# ------------------------------------------------------------------------------------------------ compare_models
def test_compare_models_equals_two_separate_evaluations(tmp_path):
    a, b = HashEncoder("a"), HashEncoder("b")
    compared = compare_models(a, b, "offline", QUIET, output_dir=tmp_path / "ab", name="A")
    alone_a = evaluate(HashEncoder("a"), "offline", QUIET, name="A")
    alone_b = evaluate(HashEncoder("b"), "offline", QUIET)
    assert [r["main_score"] for r in compared["tasks"]] == [r["main_score"] for r in alone_a["tasks"]]
    assert compared["comparison"] == compare_results(alone_a, alone_b)
    assert compared["compared_with"]["average"] == alone_b["average"]
    assert compared["comparison"]["average_a"] != compared["comparison"]["average_b"]
    saved = load_results(tmp_path / "ab")
    assert saved["comparison"] == compared["comparison"] and saved["settings"] == alone_a["settings"]
    assert "## Comparison: A vs HashEncoder" in (tmp_path / "ab" / "report.md").read_text()
    again = compare_models(HashEncoder("a"), tmp_path / "ab" / "results.json", "offline", QUIET, name="A")
    assert [row["b"] for row in again["comparison"]["rows"]] == [r["main_score"] for r in alone_a["tasks"]]


def test_compare_models_checks_compare_before_the_main_model_runs(tmp_path):
    first = HashEncoder()
    with pytest.raises(InvalidSetting, match="compare is not set"):
        compare_models(first, None, "offline", QUIET)
    with pytest.raises(InvalidSetting, match="compare_pooling='mean' applies only when compare names a model"):
        compare_models(first, {"model": {"name": "x"}, "tasks": [{"task_name": "LeeDocSim"}]}, "offline", QUIET,
                       compare_pooling="mean")
    with pytest.raises(InvalidSetting, match="share no task with the offline suite"):
        compare_models(first, {"model": {"name": "x"}, "tasks": [{"task_name": "Other"}]}, "offline", QUIET)
    with pytest.raises(InvalidSetting, match="compare_pooling applies only when compare is a name or path"):
        compare_models(first, HashEncoder("b"), "offline", QUIET, compare_pooling="mean")
    assert first.calls == 0


# ------------------------------------------------------------------------------------------------ cached_evaluate
def test_cache_reuses_only_an_identical_key(tmp_path, capsys):
    stub, out = HashEncoder(), tmp_path / "eval"
    first = cached_evaluate(stub, "offline", QUIET, out, model_identity="stub-v1")
    calls = stub.calls
    assert calls > 0 and load_results(out)["cache_key"]["settings"]["max_items"] == 12
    again = cached_evaluate(stub, "offline", QUIET.replace(show_progress_bar=True), out, model_identity="stub-v1")
    assert stub.calls == calls and again["average"] == first["average"]  # display only: reused
    assert "reusing" in capsys.readouterr().out
    for changed in ({"max_items": 10}, {"batch_size": 4}, {"seed": 1}, {"diagnostics": False},
                    {"instructions": {"RTPlotReviewRetrieval": ""}}):
        before = stub.calls
        cached_evaluate(stub, "offline", QUIET.replace(**changed), out, model_identity="stub-v1")
        assert stub.calls > before, f"{changed} should be evaluated again"
        assert re.search(rf"differ in: settings \([^)]*{next(iter(changed))}", capsys.readouterr().out)
    before = stub.calls
    cached_evaluate(stub, "offline", QUIET, out, model_identity="stub-v2")  # another model
    assert stub.calls > before and "differ in: model" in capsys.readouterr().out
    before = stub.calls
    cached_evaluate(stub, "offline", QUIET, out, model_identity="stub-v2", name="renamed")
    assert stub.calls > before  # the name is written into the results


def test_cache_sees_a_changed_suite_file_and_refuses_old_or_broken_results(sts_suite, tmp_path, capsys):
    stub, out = HashEncoder(), tmp_path / "eval"
    settings = EvalSettings(show_progress_bar=False)
    cached_evaluate(stub, sts_suite, settings, out, model_identity="stub")
    before = stub.calls
    cached_evaluate(stub, sts_suite, settings, out, model_identity="stub")
    assert stub.calls == before
    pairs = sts_suite.parent / "pairs.tsv"
    pairs.write_text(pairs.read_text().replace("text number 3", "text number three"))
    cached_evaluate(stub, sts_suite, settings, out, model_identity="stub")
    assert stub.calls > before and "differ in: suite" in capsys.readouterr().out
    evaluate(stub, sts_suite, settings, output_dir=out)  # plain evaluate: no key
    before = stub.calls
    cached_evaluate(stub, sts_suite, settings, out, model_identity="stub")
    assert stub.calls > before and "saved without a cache key" in capsys.readouterr().out
    (out / "results.json").write_text("{not json")
    before = stub.calls
    cached_evaluate(stub, sts_suite, settings, out, model_identity="stub")
    assert stub.calls > before and json.loads((out / "results.json").read_text())["cache_key"]


def test_cache_identifies_a_model_folder_by_its_files(sts_suite, tmp_path, monkeypatch):
    import llm2comp.evaluation.runner as runner

    stub, folder, out = HashEncoder(), tmp_path / "model", tmp_path / "eval"
    folder.mkdir()
    (folder / "weights.bin").write_bytes(b"1234")
    (folder / ".weights.bin.tmp").write_bytes(b"a temporary")  # hidden: not part of the model
    loads = []
    monkeypatch.setattr(runner, "load_model", lambda ref, pooling, **kw: loads.append((ref, pooling)) or stub)
    settings = EvalSettings(show_progress_bar=False)
    cached_evaluate(str(folder), sts_suite, settings, out)
    cached_evaluate(str(folder), sts_suite, settings, out)
    (folder / ".weights.bin.tmp").unlink()
    cached_evaluate(str(folder), sts_suite, settings, out)
    assert len(loads) == 1 and load_results(out)["model"]["name"] == str(folder)
    (folder / "weights.bin").write_bytes(b"12345")  # retrained
    cached_evaluate(str(folder), sts_suite, settings, out)
    cached_evaluate(str(folder), sts_suite, settings.replace(pooling="mean"), out)
    assert loads[1:] == [(str(folder), None), (str(folder), "mean")]
    with pytest.raises(InvalidSetting, match="model_identity applies to a model object"):
        cached_evaluate(str(folder), sts_suite, settings, out, model_identity="x")


def test_cache_hashes_the_weights_of_a_model_object(tiny_encoder, tmp_path):
    from llm2comp.evaluation.cache import describe_model_identity

    before = describe_model_identity(tiny_encoder)
    assert before == describe_model_identity(tiny_encoder) and before["config"]["num_memory_tokens"] == 4
    parameter = next(tiny_encoder.parameters())
    original = parameter.data.clone()
    parameter.data.add_(1.0)
    try:
        assert describe_model_identity(tiny_encoder)["weights_sha256"] != before["weights_sha256"]
    finally:
        parameter.data.copy_(original)
    with pytest.raises(InvalidSetting, match="cannot tell whether saved results were made with this HashEncoder"):
        cached_evaluate(HashEncoder(), "offline", QUIET, tmp_path / "x")
    assert not os.path.exists(tmp_path / "x")
