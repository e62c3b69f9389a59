"""ContrastiveBatchSampler: no clashes in a batch, determinism, resume, shards, groups."""

from __future__ import annotations

import random

import pytest

from llm2comp.data import ContrastiveBatchSampler, PairExample, pair_keys, text_key


def make_pairs(n=300, seed=0):
    """Pairs with many repeated queries and positives, and negatives that are other rows' positives."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        query = f"query {rng.randrange(n // 3)}"
        positive = f"doc {rng.randrange(n // 2)}"
        rows.append(PairExample(query, positive, (f"doc {rng.randrange(n // 2)}",), task=f"t{i % 3}"))
    return rows


def clashes(batch, examples):
    """Pairs (i, j) in one batch where i's query/positive meets j's query/positive/negative."""
    found = []
    for i in batch:
        own = {text_key(examples[i].query), text_key(examples[i].positive)}
        for j in batch:
            if i == j:
                continue
            theirs = {text_key(examples[j].query), text_key(examples[j].positive)}
            theirs |= {text_key(n) for n in examples[j].negatives}
            if own & theirs:
                found.append((i, j))
    return found


def test_batches_hold_no_duplicate_sources():
    examples = make_pairs()
    keys, soft = pair_keys(examples)
    sampler = ContrastiveBatchSampler(keys, 16, soft_keys=soft, seed=1)
    batches = list(sampler)
    assert batches and all(len(b) == 16 for b in batches)
    assert all(not clashes(b, examples) for b in batches)
    flat = [i for b in batches for i in b]
    assert len(flat) == len(set(flat)) == len(examples) - sampler.dropped
    # negative control: plain consecutive batches of the same data do clash
    assert any(clashes(list(range(s, s + 16)), examples) for s in range(0, 288, 16))


def test_whitespace_variants_count_as_the_same_text():
    assert text_key("a  b\n") == text_key("a b")
    sampler = ContrastiveBatchSampler([[text_key("a b")], [text_key(" a  b")], [text_key("c")]], 2, drop_last=False)
    assert all(not {0, 1} <= set(b) for b in sampler)


def test_deterministic_per_seed_and_epoch():
    keys, soft = pair_keys(make_pairs())
    one = ContrastiveBatchSampler(keys, 8, soft_keys=soft, seed=5)
    two = ContrastiveBatchSampler(keys, 8, soft_keys=soft, seed=5)
    assert list(one) == list(two)
    one.set_epoch(1)
    two.set_epoch(1)
    epoch1 = list(one)
    assert epoch1 == list(two)
    two.set_epoch(0)
    assert epoch1 != list(two)
    assert list(ContrastiveBatchSampler(keys, 8, soft_keys=soft, seed=6)) != list(two.plan(0))


def test_resume_equals_uninterrupted():
    keys, soft = pair_keys(make_pairs())
    full = ContrastiveBatchSampler(keys, 8, soft_keys=soft, seed=2)
    full.set_epoch(3)
    uninterrupted = list(full)

    first = ContrastiveBatchSampler(keys, 8, soft_keys=soft, seed=2)
    first.set_epoch(3)
    iterator = iter(first)
    seen = [next(iterator) for _ in range(5)]
    state = first.state_dict()
    assert state["position"] == 5 and state["epoch"] == 3

    resumed = ContrastiveBatchSampler(keys, 8, soft_keys=soft, seed=2)
    resumed.load_state_dict(state)
    assert seen + list(resumed) == uninterrupted
    with pytest.raises(ValueError, match="cannot resume: the checkpoint's sampler had seed=2"):
        ContrastiveBatchSampler(keys, 8, seed=9).load_state_dict(state)


def test_shards_partition_the_global_batch():
    keys, soft = pair_keys(make_pairs())
    whole = list(ContrastiveBatchSampler(keys, 12, soft_keys=soft, seed=4))
    shards = [list(ContrastiveBatchSampler(keys, 12, soft_keys=soft, seed=4, num_replicas=3, rank=r))
              for r in range(3)]
    assert all(len(s) == len(whole) for s in shards)
    for step, batch in enumerate(whole):
        parts = [shard[step] for shard in shards]
        assert all(len(p) == 4 for p in parts)
        assert parts[0] + parts[1] + parts[2] == batch
    with pytest.raises(ValueError, match="must be divisible by num_replicas"):
        ContrastiveBatchSampler(keys, 10, num_replicas=3, rank=0)


def test_groups_give_single_task_batches_and_drop_last():
    examples = make_pairs()
    keys, soft = pair_keys(examples)
    groups = [e.task for e in examples]
    sampler = ContrastiveBatchSampler(keys, 8, soft_keys=soft, groups=groups, seed=0)
    batches = list(sampler)
    assert all(len({groups[i] for i in b}) == 1 for b in batches)
    assert len({groups[b[0]] for b in batches}) == 3
    kept = ContrastiveBatchSampler(keys, 8, soft_keys=soft, seed=0, drop_last=False)
    assert sorted(i for b in kept for i in b) == list(range(len(examples)))
    assert len(kept) == len(kept.plan(0))


def test_simple_sentence_keys_and_bad_arguments():
    sentences = ["a", "b", "a", "c", "d", "b"]
    sampler = ContrastiveBatchSampler([[text_key(s)] for s in sentences], 2, drop_last=False)
    for batch in sampler:
        assert len({sentences[i] for i in batch}) == len(batch)
    with pytest.raises(ValueError, match="soft_keys has 1 entries for 6 samples"):
        ContrastiveBatchSampler([[1]] * 6, 2, soft_keys=[[1]])
    with pytest.raises(ValueError, match="no full batch of 5 clash-free samples can be formed from 6 samples"):
        len(ContrastiveBatchSampler([[text_key(s)] for s in sentences], 5))
    with pytest.raises(ValueError, match="rank < num_replicas"):
        ContrastiveBatchSampler([[1]], 2, num_replicas=2, rank=2)
