"""Matryoshka InfoNCE (losses/matryoshka.py): the sum over prefixes against a hand-written loop, dims
[] == today's loss, cached == plain, the sizes checked, recorded in the model folder by stage 2, and
the warnings of `encode(truncate_dim=)`, the sentence-transformers door and the server's `dimensions`."""

from __future__ import annotations

import json
import logging
import warnings

import pytest
import torch

from llm2comp import LLM2Comp, LoraSettings
from llm2comp.errors import ConfigError, InvalidSetting
from llm2comp.losses.cached_info_nce import CachedInfoNCE
from llm2comp.losses.info_nce import InfoNCE, SimCSE, info_nce
from llm2comp.losses.matryoshka import check_matryoshka_dims, matryoshka_info_nce
from llm2comp.models.config import CONFIG_NAME, LLM2CompConfig
from llm2comp.recipes.stage_config import stage_config_from

from .conftest import randomize_lora
from .training_helpers import CONTRASTIVE_TEXTS, reference_info_nce, write_sentences

TEXTS = CONTRASTIVE_TEXTS
pytestmark = pytest.mark.usefixtures("one_thread")

DIMS = [8, 32]  # the tiny backbone's hidden size is 64



# ---------------------------------------------------------------------------- the maths



def test_loss_is_the_sum_of_infonce_over_every_prefix_and_the_full_size():
    generator = torch.Generator().manual_seed(0)
    q, p, h = (torch.randn(n, 16, generator=generator, dtype=torch.float64) for n in (5, 5, 7))
    leaves = [t.clone().requires_grad_(True) for t in (q, p, h)]
    loss = matryoshka_info_nce(*leaves, dims=[3, 8], temperature=0.1)
    by_hand = [t.clone().requires_grad_(True) for t in (q, p, h)]
    reference = sum(reference_info_nce(*(t[:, :d] for t in by_hand), 0.1) for d in (3, 8, 16))
    torch.testing.assert_close(loss, reference, rtol=1e-12, atol=1e-12)
    loss.backward()
    reference.backward()
    for mine, theirs in zip(leaves, by_hand):
        torch.testing.assert_close(mine.grad, theirs.grad, rtol=1e-10, atol=1e-12)
    # the components past the largest prefix get only the full-size gradient; the leading ones more
    full_only = [t.clone().requires_grad_(True) for t in (q, p, h)]
    info_nce(*full_only, temperature=0.1).backward()
    torch.testing.assert_close(leaves[0].grad[:, 8:], full_only[0].grad[:, 8:], rtol=1e-10, atol=1e-12)
    assert (leaves[0].grad[:, :8] - full_only[0].grad[:, :8]).abs().max() > 1e-3
    # each prefix is re-normalised: scaling the first components changes nothing for them
    scaled = q.clone()
    scaled[:, :3] *= 7.0
    assert not torch.allclose(info_nce(scaled, p, h), info_nce(q, p, h))
    torch.testing.assert_close(info_nce(scaled[:, :3], p[:, :3], h[:, :3]), info_nce(q[:, :3], p[:, :3], h[:, :3]))


def test_no_dims_is_exactly_the_plain_loss():
    generator = torch.Generator().manual_seed(1)
    q, p = (torch.randn(4, 16, generator=generator) for _ in range(2))
    assert torch.equal(matryoshka_info_nce(q, p, dims=[]), info_nce(q, p))
    assert torch.equal(matryoshka_info_nce(q, p, None, dims=()), info_nce(q, p, None))


def test_dims_checks_name_the_problem():
    assert check_matryoshka_dims([]) == [] and check_matryoshka_dims(None) == []
    assert check_matryoshka_dims((8, 16), hidden_size=64) == [8, 16]
    with pytest.raises(InvalidSetting, match=r"matryoshka_dims\[1\] must be a whole number > 0, got 0"):
        check_matryoshka_dims([8, 0])
    with pytest.raises(InvalidSetting, match=r"strictly increasing.*matryoshka_dims\[1\] = 8 after 16"):
        check_matryoshka_dims([16, 8])
    with pytest.raises(InvalidSetting, match="strictly increasing"):
        check_matryoshka_dims([8, 8])
    with pytest.raises(InvalidSetting, match="smaller than the model's hidden size 64"):
        check_matryoshka_dims([8, 64], hidden_size=64)
    with pytest.raises(InvalidSetting, match="list of whole numbers"):
        check_matryoshka_dims(8)


@pytest.mark.parametrize("stage", ["unsupervised", "supervised"])
def test_stage_configs_read_and_check_matryoshka_dims(stage):
    assert stage_config_from({"stage": stage}).matryoshka_dims == []  # off by default
    assert stage_config_from({"stage": stage}).to_dict()["matryoshka_dims"] == []
    assert stage_config_from({"stage": stage, "matryoshka_dims": [16, 32]}).matryoshka_dims == [16, 32]
    with pytest.raises(ConfigError, match=r"matryoshka_dims\[0\] must be >= 1"):
        stage_config_from({"stage": stage, "matryoshka_dims": [0, 8]})
    with pytest.raises(ConfigError, match=r"matryoshka_dims\[1\] must be a whole number"):
        stage_config_from({"stage": stage, "matryoshka_dims": [8, 1.5]})
    with pytest.raises(ConfigError, match=f"{stage} config: matryoshka_dims must be strictly increasing"):
        stage_config_from({"stage": stage, "matryoshka_dims": [32, 16]})


# ---------------------------------------------------------------------------- model level
@pytest.fixture
def lora_model(tiny_llama_dir):
    """float64 (as in test_losses_contrastive.py): "equal" means equal, not up to float32 reordering."""
    model = LLM2Comp.from_pretrained(tiny_llama_dir, num_memory_tokens=4, max_length=64,
                                     attention_dropout=0.2, dtype=torch.float64)
    model.add_lora(LoraSettings(r=4, alpha=8, dropout=0.1))
    randomize_lora(model.model, scale=0.1)
    model.memory.to(torch.float64)
    return model


def tokenized(model):
    return [model.tokenize(texts)[0] for texts in (TEXTS[0:4], TEXTS[4:8], TEXTS[8:12])]


def run(objective, batch, seed=0):
    model = objective.encoder
    model.zero_grad(set_to_none=True)
    torch.manual_seed(seed)
    value = objective(batch)
    value.backward()
    return value.detach(), {name: p.grad.clone() for name, p in model.named_parameters() if p.requires_grad}


def assert_same(first, second, atol=1e-5):
    (loss_a, grads_a), (loss_b, grads_b) = first, second
    torch.testing.assert_close(loss_a, loss_b, atol=atol, rtol=0)
    assert grads_a.keys() == grads_b.keys()
    for name in grads_a:
        torch.testing.assert_close(grads_a[name], grads_b[name], atol=atol, rtol=0, msg=lambda m, n=name: f"{n}: {m}")


def test_model_level_no_dims_is_exactly_todays_loss(lora_model):
    lora_model.eval()
    batch = tokenized(lora_model)
    today = run(InfoNCE(lora_model), batch)
    off = run(InfoNCE(lora_model, matryoshka_dims=[]), batch)
    assert torch.equal(today[0], off[0])
    assert all(torch.equal(today[1][name], off[1][name]) for name in today[1])
    # the Matryoshka loss on the same embeddings is the sum over prefixes, by the tensor-level function
    on = run(InfoNCE(lora_model, matryoshka_dims=DIMS), batch)
    with torch.no_grad():
        q, p, h = (lora_model(lora_model.collate(ids)) for ids in batch)
    torch.testing.assert_close(on[0], sum(info_nce(q[:, :d], p[:, :d], h[:, :d]) for d in DIMS + [64]),
                               atol=1e-10, rtol=0)
    assert on[0] > today[0] + 1e-3  # the prefixes add their losses


@pytest.mark.parametrize("chunk_size, keep_graphs", [(3, 0), (3, 1), (100, 1)])
def test_cached_matryoshka_equals_plain_matryoshka(lora_model, chunk_size, keep_graphs):
    lora_model.train()  # dropout on: the cache must replay it
    batch = tokenized(lora_model)
    plain = run(InfoNCE(lora_model, chunk_size=chunk_size, matryoshka_dims=DIMS), batch, seed=7)
    cached = run(CachedInfoNCE(lora_model, chunk_size=chunk_size, keep_graphs=keep_graphs, matryoshka_dims=DIMS),
                 batch, seed=7)
    assert_same(plain, cached)
    without = run(InfoNCE(lora_model, chunk_size=chunk_size), batch, seed=7)
    assert max((plain[1][n] - without[1][n]).abs().max().item() for n in plain[1]) > 1e-4  # it changes training


def test_simcse_matryoshka_cached_equals_plain(lora_model):
    lora_model.train()
    sentences = lora_model.tokenize(TEXTS[:6])[0]
    plain = run(SimCSE(InfoNCE(lora_model, chunk_size=4, matryoshka_dims=DIMS)), sentences, seed=3)
    assert_same(plain, run(SimCSE(CachedInfoNCE(lora_model, chunk_size=4, matryoshka_dims=DIMS)), sentences, seed=3))


def test_dims_must_fit_the_model(lora_model):
    with pytest.raises(InvalidSetting, match="smaller than the model's hidden size 64"):
        InfoNCE(lora_model, matryoshka_dims=[16, 64])
    with pytest.raises(InvalidSetting, match="strictly increasing"):
        CachedInfoNCE(lora_model, matryoshka_dims=[16, 16])


# ---------------------------------------------------------------------------- the model folder
def test_config_records_dims_and_older_folders_load_as_none(tmp_path):
    LLM2CompConfig(backbone="b", embedding_dim=64, matryoshka_dims=[8, 32]).save(tmp_path)
    assert LLM2CompConfig.load(tmp_path).matryoshka_dims == [8, 32]
    data = json.loads((tmp_path / CONFIG_NAME).read_text())
    del data["matryoshka_dims"]  # written before the field existed
    (tmp_path / CONFIG_NAME).write_text(json.dumps(data))
    assert LLM2CompConfig.load(tmp_path).matryoshka_dims == []
    LLM2CompConfig(backbone="b", embedding_dim=64).save(tmp_path)  # none trained: the file has no such key
    assert "matryoshka_dims" not in json.loads((tmp_path / CONFIG_NAME).read_text())
    assert LLM2CompConfig.load(tmp_path).matryoshka_dims == []
    for bad in ([8, 8], [0], "8", [8.0], None, [True]):
        (tmp_path / CONFIG_NAME).write_text(json.dumps({**data, "matryoshka_dims": bad}))
        with pytest.raises(ConfigError, match=r"field 'matryoshka_dims' must be a strictly increasing list"):
            LLM2CompConfig.load(tmp_path)
    (tmp_path / CONFIG_NAME).write_text(json.dumps({**data, "matryoshka_dims": [8, 64]}))
    with pytest.raises(ConfigError, match=r"'matryoshka_dims' \(\[8, 64\]\) must all be smaller than 'embedding_dim'"):
        LLM2CompConfig.load(tmp_path)


@pytest.fixture(scope="module")
def trained_dir(tiny_llama_dir, tmp_path_factory):
    """A tiny stage-2 (SimCSE, GradCache) run with matryoshka_dims [8, 32]: its model folder."""
    from llm2comp.recipes.unsupervised import run_unsupervised

    tmp = tmp_path_factory.mktemp("matryoshka")
    cfg = stage_config_from({
        "stage": "unsupervised", "model": str(tiny_llama_dir), "output_dir": str(tmp / "run"),
        "data": {"type": "text", "path": str(write_sentences(tmp / "s.txt"))}, "num_memory_tokens": 2,
        "max_length": 64, "lora": {"r": 4, "alpha": 8, "dropout": 0.0}, "batch_size": 4, "warmup_steps": 0,
        "max_steps": 2, "save_every": 0, "seed": 0, "attention_dropout": 0.2, "lr": 1e-3, "cache_chunk_size": 2,
        "matryoshka_dims": DIMS})
    return run_unsupervised(cfg)


def test_stage_two_saves_its_dims_and_they_reload(trained_dir):
    assert json.loads((trained_dir / CONFIG_NAME).read_text())["matryoshka_dims"] == DIMS
    assert LLM2Comp.from_pretrained(trained_dir).config.matryoshka_dims == DIMS
    metrics = [json.loads(line) for line in (trained_dir.parent / "metrics.jsonl").read_text().splitlines()]
    assert len(metrics) == 2 and all(row["loss"] > 0 for row in metrics)


def untrained_warnings(caught) -> list[str]:
    return [str(w.message) for w in caught if "never trained" in str(w.message)]


def test_encode_truncate_dim_cuts_and_warns_only_for_untrained_sizes(trained_dir):
    model = LLM2Comp.from_pretrained(trained_dir)
    full = model.encode(TEXTS[:3], convert_to_tensor=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cut = model.encode(TEXTS[:3], convert_to_tensor=True, truncate_dim=8, normalize_embeddings=True)
        model.encode(TEXTS[:3], truncate_dim=64)  # the full size
        assert untrained_warnings(caught) == []
        raw = model.encode(TEXTS[:3], convert_to_tensor=True, truncate_dim=16)
        assert untrained_warnings(caught) == [
            "truncate_dim 16: this model was trained for Matryoshka sizes [8, 32] and the full 64, not 16: its "
            "first 16 components were never trained to be an embedding of their own (train with "
            "matryoshka_dims: [..., 16, ...])"]
    torch.testing.assert_close(cut, torch.nn.functional.normalize(full[:, :8], dim=-1), atol=1e-6, rtol=0)
    torch.testing.assert_close(raw, full[:, :16], atol=1e-6, rtol=0)  # not normalised unless asked
    assert model.encode("one text", truncate_dim=8).shape == (8,)
    for bad in (0, 65, 8.0, True):
        with pytest.raises(InvalidSetting, match=r"truncate_dim must be a whole number in \[1, 64\]"):
            model.encode(TEXTS[:1], truncate_dim=bad)


def test_sentence_transformers_truncate_dim_warns_for_untrained_sizes(trained_dir):
    pytest.importorskip("sentence_transformers")
    from llm2comp.sentence_transformers_module import to_sentence_transformer

    model = LLM2Comp.from_pretrained(trained_dir)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        st = to_sentence_transformer(model, truncate_dim=32)
        assert untrained_warnings(caught) == []
        to_sentence_transformer(model, truncate_dim=20)
        assert len(untrained_warnings(caught)) == 1 and "truncate_dim 20" in untrained_warnings(caught)[0]
    vectors = st.encode(TEXTS[:2], convert_to_tensor=True)
    assert vectors.shape == (2, 32)
    torch.testing.assert_close(vectors.cpu(), model.encode(TEXTS[:2], convert_to_tensor=True, truncate_dim=32),
                               atol=1e-5, rtol=0)


def test_untrained_model_warns_for_any_cut_but_not_the_full_size(tiny_encoder):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tiny_encoder.encode(TEXTS[:1], truncate_dim=64)
        assert untrained_warnings(caught) == []
        tiny_encoder.encode(TEXTS[:1], truncate_dim=32)
        assert "trained for only its full size 64, not 32" in untrained_warnings(caught)[0]


# ---------------------------------------------------------------------------- the server
class Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def test_server_warns_once_per_untrained_dimensions(tiny_llama_dir):
    pytest.importorskip("fastapi")
    pytest.importorskip("uvicorn")
    from llm2comp.server.app import create_app
    from llm2comp.server.settings import ServerSettings

    from .server_helpers import RunningServer, call

    model = LLM2Comp.from_pretrained(tiny_llama_dir, num_memory_tokens=4, max_length=64)
    model.config.matryoshka_dims = [16]
    records = Records()
    logger = logging.getLogger("llm2comp.server")
    logger.addHandler(records)
    try:
        with RunningServer(create_app(ServerSettings(model="unused", served_model_name="tiny"), model=model)) as server:
            def embed(dimensions):
                body = {"model": "tiny", "input": TEXTS[:2], **({"dimensions": dimensions} if dimensions else {})}
                status, _, answer = call(server.port, "POST", "/v1/embeddings", body)
                assert status == 200, answer
                return answer["data"][0]["embedding"]

            assert len(embed(16)) == 16 and len(embed(64)) == 64 and len(embed(None)) == 64
            assert [m for m in records.messages if "never trained" in m] == []
            assert len(embed(8)) == 8 and len(embed(8)) == 8 and len(embed(12)) == 12
    finally:
        logger.removeHandler(records)
    untrained = [m for m in records.messages if "never trained" in m]
    assert len(untrained) == 2  # once per size
    assert untrained[0].startswith("dimensions 8: this model was trained for Matryoshka sizes [16] and the full 64")
    assert untrained[1].startswith("dimensions 12:")


def test_evaluation_scores_the_first_n_components(trained_dir):
    import numpy as np

    from llm2comp.evaluation.base import Embedder
    from llm2comp.evaluation.settings import EvalSettings

    model = LLM2Comp.from_pretrained(trained_dir)
    full = Embedder(model, show_progress_bar=False)(TEXTS[:3])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cut = Embedder(model, show_progress_bar=False, truncate_dim=8)
        assert untrained_warnings(caught) == []  # 8 is a trained size
        Embedder(model, show_progress_bar=False, truncate_dim=16)
        assert len(untrained_warnings(caught)) == 1
    np.testing.assert_array_equal(cut(TEXTS[:3]), full[:, :8])
    assert cut.dimension == 8 and cut.plain_embeddings().shape == (3, 8)
    with pytest.raises(InvalidSetting, match="truncate_dim must be a whole number >= 1"):
        EvalSettings(truncate_dim=0)
    assert EvalSettings(truncate_dim=8).key() != EvalSettings().key()
