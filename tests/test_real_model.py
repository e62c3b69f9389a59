"""Checks on the real SmolLM2-135M weights (slow; run with `make test-real`)."""

import numpy as np
import pytest

from llm2comp import LLM2Comp

pytestmark = pytest.mark.real_model

TEXTS = [
    "A man is playing a guitar on stage.",
    "Someone performs music with a guitar in front of an audience.",
    "The stock market fell sharply after the announcement.",
    "Photosynthesis converts sunlight into chemical energy in plants.",
]


@pytest.fixture(scope="module")
def baseline():
    return LLM2Comp.from_pretrained("smollm2-135m", num_memory_tokens=0, pooling="mean", attention="causal")


def test_paraphrases_are_closer_than_unrelated_texts(baseline):
    sims = baseline.similarity(baseline.encode(TEXTS), baseline.encode(TEXTS))
    assert sims[0, 1] > sims[0, 2] and sims[0, 1] > sims[0, 3]


def test_memory_encoder_is_invariant_to_batching_and_padding_on_real_weights(tmp_path):
    model = LLM2Comp.from_pretrained("smollm2-135m")
    reference = model.encode(TEXTS, batch_size=4)
    np.testing.assert_allclose(model.encode(TEXTS, batch_size=1), reference, atol=1e-4, rtol=0)
    np.testing.assert_allclose(model.encode(TEXTS, padding_side="left"), reference, atol=1e-4, rtol=0)
    model.save(tmp_path / "m")
    np.testing.assert_allclose(LLM2Comp.from_pretrained(tmp_path / "m").encode(TEXTS), reference, atol=1e-5)
