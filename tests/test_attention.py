"""Bidirectional vs causal attention through public 4-D masks, on several architectures.

Sliding-window layers get a symmetric window (|p_i - p_j| < w), global layers the full text
(models/attention.py); tested on every layer of every tiny architecture.
"""

from types import SimpleNamespace

import pytest
import torch

from llm2comp.errors import UnsupportedModel
from llm2comp.models.attention import (
    attention_allowed,
    attention_layout,
    model_attention_mask,
    position_ids_for,
)
from llm2comp.models.backbone import body_of, load_causal_lm

from .conftest import TINY_ARCHES, WINDOW


def run(body, ids, valid, mode):
    embeds = body.get_input_embeddings()(ids)
    mask = model_attention_mask(valid, mode, embeds.dtype, attention_layout(body.config))
    out = body(inputs_embeds=embeds, attention_mask=mask, position_ids=position_ids_for(valid), use_cache=False)
    return out.last_hidden_state


@pytest.fixture(scope="module", params=TINY_ARCHES)
def body(request, tiny_model_dirs):
    model, _, _ = load_causal_lm(tiny_model_dirs[request.param])
    return body_of(model.eval())


def layer_kinds(config) -> list[str]:
    """What each layer is, read from the config independently of the code under test."""
    if getattr(config, "layer_types", None) is not None:
        return list(config.layer_types)
    kind = "sliding_attention" if getattr(config, "sliding_window", None) else "full_attention"
    return [kind] * config.num_hidden_layers


def expected_allowed(length: int, kind: str) -> torch.Tensor:
    """Bidirectional, no padding: every pair on a global layer; |i - j| < WINDOW on a sliding one."""
    return torch.tensor([[kind == "full_attention" or abs(i - j) < WINDOW for j in range(length)]
                         for i in range(length)])


def test_bidirectional_sees_later_tokens_and_causal_does_not(body):
    ids = torch.tensor([[5, 17, 300, 41, 9, 77]])
    changed = ids.clone()
    changed[0, -1] = 1234
    valid = torch.ones_like(ids)
    with torch.no_grad():
        bi, bi_changed = run(body, ids, valid, "bidirectional"), run(body, changed, valid, "bidirectional")
        ca, ca_changed = run(body, ids, valid, "causal"), run(body, changed, valid, "causal")
    assert (bi[0, 0] - bi_changed[0, 0]).abs().max() > 1e-4  # position 0 sees the last token
    torch.testing.assert_close(ca[0, :-1], ca_changed[0, :-1], atol=1e-6, rtol=0)
    assert (ca[0, -1] - ca_changed[0, -1]).abs().max() > 1e-4  # negative control


@pytest.mark.parametrize("mode", ["bidirectional", "causal"])
@pytest.mark.parametrize("side", ["right", "left"])
def test_padding_never_changes_real_states(body, mode, side):
    ids = torch.tensor([[5, 17, 300, 41]])
    with torch.no_grad():
        reference = run(body, ids, torch.ones_like(ids), mode)[0]
        for pad_token in (2, 999):
            pad = torch.full((1, 3), pad_token)
            padded = torch.cat([ids, pad], 1) if side == "right" else torch.cat([pad, ids], 1)
            valid = torch.tensor([[1, 1, 1, 1, 0, 0, 0]]) if side == "right" else torch.tensor([[0, 0, 0, 1, 1, 1, 1]])
            out = run(body, padded, valid, mode)[0]
            real = out[:4] if side == "right" else out[3:]
            torch.testing.assert_close(real, reference, atol=1e-5, rtol=0)


def test_bidirectional_mask_equals_explicit_mask_of_each_layer_kind(body):
    ids = torch.tensor([[5, 17, 300, 41, 9, 77, 8]])
    embeds = body.get_input_embeddings()(ids)
    kinds = layer_kinds(body.config)
    explicit = {kind: torch.zeros(1, 1, 7, 7).masked_fill(~expected_allowed(7, kind), torch.finfo(torch.float32).min)
                for kind in set(kinds)}
    if getattr(body.config, "layer_types", None) is None:  # one mask for every layer
        (explicit,) = explicit.values()
    with torch.no_grad():
        ours = run(body, ids, torch.ones_like(ids), "bidirectional")
        theirs = body(inputs_embeds=embeds, attention_mask=explicit, position_ids=torch.arange(7)[None],
                      use_cache=False).last_hidden_state
        default_causal = body(inputs_embeds=embeds, use_cache=False).last_hidden_state
        ours_causal = run(body, ids, torch.ones_like(ids), "causal")
    torch.testing.assert_close(ours, theirs, atol=1e-6, rtol=0)
    torch.testing.assert_close(ours_causal, default_causal, atol=1e-5, rtol=0)
    assert (ours - default_causal).abs().max() > 1e-4


def test_every_layer_receives_the_mask_of_its_kind(body):
    """The mask each attention layer actually gets: the window on sliding layers, all on global ones."""
    received = []
    hooks = [module.register_forward_pre_hook(lambda mod, args, kwargs: received.append(kwargs["attention_mask"]),
                                              with_kwargs=True)
             for module in body.modules() if type(module).__name__.endswith("Attention")]
    ids = torch.tensor([[5, 17, 300, 41, 9, 77, 8]])
    try:
        with torch.no_grad():
            run(body, ids, torch.ones_like(ids), "bidirectional")
    finally:
        for hook in hooks:
            hook.remove()
    kinds = layer_kinds(body.config)
    assert len(received) == len(kinds) == body.config.num_hidden_layers
    for kind, mask in zip(kinds, received):
        assert torch.equal(mask[0, 0] == 0, expected_allowed(7, kind)), kind


@pytest.mark.parametrize("arch, far_token_reaches_first", [("mistral", False), ("gemma3", True)])
def test_sliding_window_layers_keep_their_reach(tiny_model_dirs, arch, far_token_reaches_first):
    """Two layers of window 4 carry a token at most 2 x 3 positions; Gemma 3's global layer carries it all
    the way. (A single all-visible 4-D mask, the old behaviour, let Mistral see everything.)"""
    model, _, _ = load_causal_lm(tiny_model_dirs[arch])
    body = body_of(model.eval())
    ids = torch.tensor([[5, 17, 300, 41, 9, 77, 8, 123, 61]])
    valid = torch.ones_like(ids)
    with torch.no_grad():
        reference = run(body, ids, valid, "bidirectional")[0, 0]
        near, far = ids.clone(), ids.clone()
        near[0, 3], far[0, 8] = 1234, 1234  # distance 3: within one window; distance 8: beyond two
        near_change = (run(body, near, valid, "bidirectional")[0, 0] - reference).abs().max()
        far_change = (run(body, far, valid, "bidirectional")[0, 0] - reference).abs().max()
    assert near_change > 1e-4
    assert (far_change > 1e-4) == far_token_reaches_first, far_change


def test_families_that_cannot_be_bidirectional_are_refused_by_name():
    for config in (SimpleNamespace(model_type="mamba"), SimpleNamespace(model_type="rwkv")):
        with pytest.raises(UnsupportedModel, match="recurrent, not attention"):
            attention_layout(config)
    hybrid = SimpleNamespace(model_type="qwen3_next", layer_types=["linear_attention", "full_attention"])
    with pytest.raises(UnsupportedModel, match="model_type 'qwen3_next'.*linear_attention"):
        attention_layout(hybrid)
    assert attention_layout(SimpleNamespace(model_type="llama")).kinds == ("full_attention",)


def test_a_recurrent_model_folder_is_refused_before_its_weights_load(tmp_path):
    from transformers import MambaConfig

    MambaConfig(hidden_size=16, num_hidden_layers=1, vocab_size=100).save_pretrained(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"not weights")  # never read: refused from the config
    with pytest.raises(UnsupportedModel, match=r"Mamba \(model_type 'mamba'\)"):
        load_causal_lm(tmp_path)


def test_mask_rules():
    valid = torch.tensor([[1, 1, 0]])
    bi = attention_allowed(valid, "bidirectional")[0, 0]
    ca = attention_allowed(valid, "causal")[0, 0]
    assert bi.tolist() == [[True, True, False], [True, True, False], [False, False, True]]
    assert ca.tolist() == [[True, False, False], [True, True, False], [False, False, True]]
    # a window counts positions of real tokens: left padding moves nothing
    left = attention_allowed(torch.tensor([[0, 1, 1, 1]]), "bidirectional", window=2)[0, 0]
    assert left.tolist() == [[True, False, False, False], [False, True, True, False],
                             [False, True, True, True], [False, False, True, True]]
    assert position_ids_for(torch.tensor([[0, 0, 1, 1]])).tolist() == [[0, 0, 0, 1]]
    with pytest.raises(ValueError, match="attention mode"):
        attention_allowed(valid, "sideways")
