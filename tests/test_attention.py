"""Bidirectional vs causal attention through public 4-D masks, on several architectures."""

import pytest
import torch

from llm2comp.models.attention import attention_allowed, model_attention_mask, position_ids_for
from llm2comp.models.backbone import body_of, load_causal_lm

from .conftest import TINY_ARCHES


def run(body, ids, valid, mode):
    embeds = body.get_input_embeddings()(ids)
    mask = model_attention_mask(valid, mode, embeds.dtype)
    out = body(inputs_embeds=embeds, attention_mask=mask, position_ids=position_ids_for(valid), use_cache=False)
    return out.last_hidden_state


@pytest.fixture(scope="module", params=TINY_ARCHES)
def body(request, tiny_model_dirs):
    model, _, _ = load_causal_lm(tiny_model_dirs[request.param])
    return body_of(model.eval())


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


def test_bidirectional_mask_equals_explicit_all_visible_mask(body):
    ids = torch.tensor([[5, 17, 300, 41, 9]])
    embeds = body.get_input_embeddings()(ids)
    explicit = torch.zeros(1, 1, 5, 5)  # every position visible to every position
    with torch.no_grad():
        ours = run(body, ids, torch.ones_like(ids), "bidirectional")
        theirs = body(inputs_embeds=embeds, attention_mask=explicit, position_ids=torch.arange(5)[None],
                      use_cache=False).last_hidden_state
        default_causal = body(inputs_embeds=embeds, use_cache=False).last_hidden_state
        ours_causal = run(body, ids, torch.ones_like(ids), "causal")
    torch.testing.assert_close(ours, theirs, atol=1e-6, rtol=0)
    torch.testing.assert_close(ours_causal, default_causal, atol=1e-5, rtol=0)
    assert (ours - default_causal).abs().max() > 1e-4


def test_mask_rules():
    valid = torch.tensor([[1, 1, 0]])
    bi = attention_allowed(valid, "bidirectional")[0, 0]
    ca = attention_allowed(valid, "causal")[0, 0]
    assert bi.tolist() == [[True, True, False], [True, True, False], [False, False, True]]
    assert ca.tolist() == [[True, False, False], [True, True, False], [False, False, True]]
    assert position_ids_for(torch.tensor([[0, 0, 1, 1]])).tolist() == [[0, 0, 0, 1]]
    with pytest.raises(ValueError, match="attention mode"):
        attention_allowed(valid, "sideways")
