"""Stage 1 with LLM2Vec's MNTP: masking, the i-1 shift, the loss on a tiny model, and a full run."""

import json

import pytest
import torch
import torch.nn.functional as F
import yaml
from safetensors.torch import load_file

from llm2comp import LLM2Comp, LoraSettings
from llm2comp.cli.main import main
from llm2comp.data.masking import MaskingSpec, mask_text, mask_token_id
from llm2comp.evaluation.runner import load_model
from llm2comp.losses.masked_next_token import (
    MaskedNextTokenObjective,
    masked_next_token_loss,
    states_before_masked,
)
from llm2comp.models.saving import MEMORY_FILE
from llm2comp.recipes.mntp import run_mntp
from llm2comp.recipes.stage_config import stage_config as StageConfig
from llm2comp.training.checkpoint import list_checkpoints

from .conftest import randomize_lora
from .training_helpers import tiny_stage_config, write_corpus

SPEC = MaskingSpec(mask_ratio=0.2, mask_id=7, vocab_size=1000, special_ids=frozenset({0, 1, 2}), first_maskable=0)
TEXTS = [list(range(100, 140)), list(range(300, 317)), list(range(500, 560))]
PINNED_LOSS = 10.836872100830078  # tiny Llama (conftest, seed 0), LoRA randomised with seed 1, masks seed 3


def word_level_tokenizer(**special):
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    vocab = {"a": 0, "b": 1, "<unk>": 2, "[MASK]": 3}
    return PreTrainedTokenizerFast(tokenizer_object=Tokenizer(WordLevel(vocab, unk_token="<unk>")),
                                   unk_token="<unk>", **special)


def test_masking_ratio_specials_first_position_and_reproducibility():
    ids = [1, 50, 60, 2, 70, 80, 90, 0, 95, 96, 97, 98, 99]  # 0, 1, 2 special: never masked
    maskable = [i for i, t in enumerate(ids) if t not in SPEC.special_ids]
    for index in range(200):
        example = mask_text(ids, SPEC, seed=0, index=index)
        assert len(example.positions) == round(0.2 * len(maskable)) == 2
        assert set(example.positions) <= set(maskable) and example.positions == sorted(set(example.positions))
        assert example.labels == [ids[p] for p in example.positions]
        assert all(example.input_ids[i] == ids[i] for i in range(len(ids)) if i not in example.positions)
    long = list(range(100, 400))
    assert len(mask_text(long, SPEC, 0, 0).positions) == 60  # 20% of 300
    assert len(mask_text([100, 101], SPEC, 0, 0).positions) == 1  # at least one per text
    assert mask_text([0, 1, 2], SPEC, 0, 0) is None  # nothing maskable: the text is skipped
    no_bos = MaskingSpec(0.2, 7, 1000, frozenset(), first_maskable=1)  # no BOS: position 0 has no predecessor
    assert all(0 not in mask_text([100, 101, 102], no_bos, 0, i).positions for i in range(50))
    draws = [mask_text(long, SPEC, seed=3, index=i) for i in range(20)]
    assert draws == [mask_text(long, SPEC, seed=3, index=i) for i in range(20)]  # per (seed, index)
    assert draws != [mask_text(long, SPEC, seed=4, index=i) for i in range(20)]
    assert len({tuple(d.positions) for d in draws}) == 20  # each sample index draws its own mask


def test_replacements_are_80_mask_10_random_10_unchanged():
    spec = MaskingSpec(0.2, mask_id=7, vocab_size=50_000, special_ids=frozenset(), first_maskable=0)
    kinds = {"mask": 0, "random": 0, "kept": 0}
    for index in range(300):
        text = list(range(10_000 + index * 100, 10_100 + index * 100))
        example = mask_text(text, spec, seed=0, index=index)
        for position, label in zip(example.positions, example.labels):
            new = example.input_ids[position]
            kinds["mask" if new == 7 else "kept" if new == label else "random"] += 1
    total = sum(kinds.values())
    assert total == 300 * 20
    assert kinds["mask"] / total == pytest.approx(0.8, abs=0.02)  # 3 sigma at n = 6,000 is 0.016
    assert kinds["random"] / total == pytest.approx(0.1, abs=0.015)
    assert kinds["kept"] / total == pytest.approx(0.1, abs=0.015)


def test_mask_token_is_the_tokenizers_else_the_blank_token(tokenizer_dir):
    from llm2comp.models.backbone import load_tokenizer

    smollm = load_tokenizer(tokenizer_dir)  # no mask token in its vocabulary: "_" as LLM2Vec's blank
    assert smollm.mask_token_id is None
    assert mask_token_id(smollm) == smollm.convert_tokens_to_ids("_") != smollm.unk_token_id
    assert mask_token_id(word_level_tokenizer(mask_token="[MASK]")) == 3
    with pytest.raises(ValueError, match="neither a mask token nor a '_' token"):
        mask_token_id(word_level_tokenizer())
    spec = MaskingSpec.from_tokenizer(smollm)
    assert spec.first_maskable == 0 and smollm.bos_token_id in spec.special_ids and spec.vocab_size == len(smollm)
    with pytest.raises(ValueError, match="mask_ratio must be in"):
        MaskingSpec.from_tokenizer(smollm, mask_ratio=1.5)


def test_states_before_masked_is_the_shift_by_one():
    hidden = torch.arange(2 * 5 * 3, dtype=torch.float).view(2, 5, 3)
    masked = torch.zeros(2, 5, dtype=torch.bool)
    masked[0, 2] = masked[0, 4] = masked[1, 1] = True
    torch.testing.assert_close(states_before_masked(hidden, masked), hidden[[0, 0, 1], [1, 3, 0]])
    masked[1, 0] = True
    with pytest.raises(ValueError, match="position 0 cannot be masked"):
        states_before_masked(hidden, masked)
    with pytest.raises(ValueError, match="at least one"):
        masked_next_token_loss(torch.zeros(0, 4), torch.zeros(0, dtype=torch.long))


@pytest.fixture
def mntp_encoder(tiny_llama_dir):
    model = LLM2Comp.from_pretrained(tiny_llama_dir, num_memory_tokens=0, pooling="mean", max_length=128)
    model.add_lora(LoraSettings(r=4, alpha=8, dropout=0.0))
    randomize_lora(model.model, seed=1)
    return model


def tiny_examples(encoder, seed=3):
    spec = MaskingSpec.from_tokenizer(encoder.tokenizer)
    return [mask_text(ids, spec, seed=seed, index=i) for i, ids in enumerate(TEXTS)]


def test_loss_equals_a_hand_computation_with_full_logits(mntp_encoder):
    """Per text, unbatched, full (T, V) logits: masked token p is scored by the logits at p - 1."""
    encoder = mntp_encoder.eval()
    examples = tiny_examples(encoder)
    loss = MaskedNextTokenObjective(encoder)(examples)
    shifted, unshifted, labels = [], [], []
    with torch.no_grad():
        for example in examples:
            hidden = encoder.hidden_states(encoder.collate([example.input_ids]))[0]  # (1 + n, d): BOS first
            logits = encoder.model.get_output_embeddings()(hidden)  # (1 + n, V)
            sequence_positions = torch.tensor(example.positions) + 1  # after BOS
            shifted.append(logits[sequence_positions - 1])
            unshifted.append(logits[sequence_positions])
            labels.append(torch.tensor(example.labels))
    expected = F.cross_entropy(torch.cat(shifted), torch.cat(labels))  # mean over all masked tokens
    torch.testing.assert_close(loss, expected, atol=1e-5, rtol=1e-5)
    per_text_mean = torch.stack([F.cross_entropy(s, y) for s, y in zip(shifted, labels)]).mean()
    assert abs(per_text_mean - expected) > 1e-4  # the reduction is over tokens, not per text first
    assert abs(F.cross_entropy(torch.cat(unshifted), torch.cat(labels)) - expected) > 1e-3  # the shift matters


def test_loss_value_is_pinned_and_only_lora_gets_gradient(mntp_encoder):
    encoder = mntp_encoder.train()  # dropout 0: the same value in train mode
    loss = MaskedNextTokenObjective(encoder)(tiny_examples(encoder))
    assert loss.item() == pytest.approx(PINNED_LOSS, rel=1e-4)
    loss.backward()
    trainable = {n: p for n, p in encoder.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in trainable.values())
    assert all(p.grad is None for p in encoder.parameters() if not p.requires_grad)
    with torch.no_grad(), encoder.frozen():  # the adapter is on in the objective: switching it off changes it
        assert abs(MaskedNextTokenObjective(encoder)(tiny_examples(encoder)).item() - loss.item()) > 1e-3


def test_the_encoder_learns_to_fill_the_masks_of_one_batch(mntp_encoder):
    encoder = mntp_encoder.train()
    objective, examples = MaskedNextTokenObjective(encoder), tiny_examples(encoder)
    optimizer = torch.optim.AdamW([p for p in encoder.parameters() if p.requires_grad], lr=1e-2)
    losses = []
    for _ in range(25):
        loss = objective(examples)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    # 10.84 -> 9.74 measured: a tiny random model's small tied embeddings cap its logits (|h| |e| ~ 1),
    # so the loss cannot fall far; a drop of half a nat is well outside the noise of a fixed batch
    assert losses[-1] < losses[0] - 0.5


def test_objective_and_config_refuse_memory_tokens(tiny_encoder, tmp_path):
    with pytest.raises(ValueError, match="without memory tokens"):
        MaskedNextTokenObjective(tiny_encoder)
    with pytest.raises(ValueError, match="set num_memory_tokens: 0"):
        StageConfig(objective="mntp", num_memory_tokens=4)
    assert StageConfig(objective="mntp").encoder.num_memory_tokens == 0  # MNTP's own default
    with pytest.raises(ValueError, match="num_memory_tokens must be >= 1 for objective 'kl'"):
        StageConfig(objective="kl", num_memory_tokens=0)


def mntp_config(model_dir, tmp_path, name, **overrides):
    return tiny_stage_config(model_dir, write_corpus(tmp_path / "c.txt"), tmp_path / name, objective="mntp",
                             num_memory_tokens=0, lora={"r": 4, "alpha": 8, "dropout": 0.1}, **overrides)


def test_train_command_end_to_end_saves_a_mean_pooling_model(tiny_llama_dir, tmp_path):
    values = mntp_config(tiny_llama_dir, tmp_path, "run").to_dict()
    (tmp_path / "mntp.yaml").write_text(yaml.safe_dump(values))
    assert main(["train", "--config", str(tmp_path / "mntp.yaml")]) == 0
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6] and all(r["grad_norm"] > 0 for r in rows)
    folder = tmp_path / "run" / "model"
    saved = json.loads((folder / "llm2comp_config.json").read_text())
    assert (saved["num_memory_tokens"], saved["pooling"], saved["attention"]) == (0, "mean", "bidirectional")
    assert not (folder / MEMORY_FILE).exists()
    stats = yaml.safe_load((folder / "training_config.yaml").read_text())["data_stats"]
    assert stats["examples"] == 40 and stats["skipped_nothing_to_mask"] == 0
    model = load_model(str(folder))  # what `llm2comp eval` loads
    assert model.config.pooling == "mean"
    text = "river city music"
    hidden = model.hidden_states(model.collate(model.tokenize([text])[0]))[0]
    torch.testing.assert_close(torch.from_numpy(model.encode(text)), hidden.mean(0), atol=1e-5, rtol=1e-5)
    untrained = LLM2Comp.from_pretrained(tiny_llama_dir, num_memory_tokens=0, pooling="mean")
    assert abs(model.encode(text) - untrained.encode(text)).max() > 1e-4  # training changed the encoder


def test_interrupted_run_resumes_to_the_same_weights(tiny_llama_dir, tmp_path):
    class Interrupt(Exception):
        pass

    def interrupt_at_3(step, row):
        if step == 3:
            raise Interrupt

    run_mntp(mntp_config(tiny_llama_dir, tmp_path, "straight"))
    interrupted = mntp_config(tiny_llama_dir, tmp_path, "interrupted")
    with pytest.raises(Interrupt):
        run_mntp(interrupted, callbacks=[interrupt_at_3])
    assert [p.name for p in list_checkpoints(tmp_path / "interrupted" / "checkpoints")] == ["step-000002"]
    run_mntp(interrupted)  # resumes from step 2: its masks must be the ones the straight run drew
    straight, resumed = (load_file(str(list_checkpoints(tmp_path / name / "checkpoints")[-1] /
                                       "trainable.safetensors")) for name in ("straight", "interrupted"))
    assert straight.keys() == resumed.keys() and straight
    for name in straight:
        torch.testing.assert_close(straight[name], resumed[name], atol=0, rtol=0)
