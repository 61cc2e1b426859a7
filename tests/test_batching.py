"""Batching: dynamic padding, length buckets, packing, the mixture sampler and its exact resume."""

import json
import random

import pytest
import torch

from minimost.config import DEFAULT_MIXTURES, TASKS
from minimost.data.batching import (
    IGNORE_INDEX,
    LengthBucketSampler,
    MixtureSampler,
    SamplerError,
    collate,
    eval_batches,
    pack,
    padding_fraction,
)

PAD = 0


def example(task: str, n: int, rng: random.Random, prompt: int = 2) -> dict:
    """A made-up rendered example: n ids, the first `prompt` of them not scored."""
    ids = [1] + [rng.randint(20, 99) for _ in range(n - 1)]
    return {"input_ids": ids, "labels": [IGNORE_INDEX] * prompt + ids[prompt:], "task": task}


def pools(sizes=None, seed=0) -> dict[str, list[dict]]:
    rng = random.Random(seed)
    lengths = {"text_lm": (5, 40), "asr": (20, 60), "tts": (30, 90), "text_instruct": (8, 25),
               "speech_instruct": (25, 70), "speech_lm": (15, 50)}
    sizes = sizes or {t: 300 for t in TASKS}
    return {t: [example(t, rng.randint(*lengths[t]), rng) for _ in range(n)] for t, n in sizes.items()}


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_collate_pads_to_the_batch_not_to_max_len():
    rng = random.Random(0)
    exs = [example("text_lm", n, rng) for n in (3, 7, 5)]
    b = collate(exs, PAD)
    assert b["input_ids"].shape == (3, 7) and b["input_ids"].dtype == torch.long
    assert b["attention_mask"].dtype == torch.bool and b["attention_mask"].sum(1).tolist() == [3, 7, 5]
    assert (b["input_ids"][~b["attention_mask"]] == PAD).all()
    assert (b["labels"][~b["attention_mask"]] == IGNORE_INDEX).all()
    assert b["task_ids"].tolist() == [TASKS.index("text_lm")] * 3
    assert padding_fraction(b) == pytest.approx(1 - 15 / 21)


def test_length_buckets_cut_padding():
    rng = random.Random(0)
    lengths = [rng.randint(5, 120) for _ in range(2000)]
    bucketed = LengthBucketSampler(lengths, 16, seed=0, bucket_batches=32)
    random_batches = LengthBucketSampler(lengths, 16, seed=0, bucket_batches=1)
    assert bucketed.padding_fraction() < 0.05 < 0.3 < random_batches.padding_fraction()
    seen = sorted(i for b in bucketed for i in b)
    assert seen == list(range(2000))                      # every example once per epoch
    assert bucketed.batches() == LengthBucketSampler(lengths, 16, seed=0, bucket_batches=32).batches()
    bucketed.set_epoch(1)
    assert bucketed.batches() != random_batches.batches()


def test_packing_has_doc_ids_and_never_scores_across_documents():
    rng = random.Random(1)
    exs = [example("text_lm", n, rng) for n in (10, 20, 15, 30, 12)]
    b = pack(exs, max_len=40, pad_id=PAD, task_id=0)
    assert b["input_ids"].shape[1] <= 40
    assert b["doc_ids"].tolist()[0][:30] == [0] * 10 + [1] * 20
    assert (b["doc_ids"][~b["attention_mask"]] == -1).all()
    starts = torch.zeros_like(b["doc_ids"], dtype=torch.bool)
    starts[:, 0] = True
    starts[:, 1:] = b["doc_ids"][:, 1:] != b["doc_ids"][:, :-1]
    # the first token of every document is <bos> and carries no label: nothing predicts across a boundary
    assert (b["labels"][starts & b["attention_mask"]] == IGNORE_INDEX).all()
    assert b["attention_mask"].sum(1).tolist() == [10 + 20, 15, 30, 12]     # greedy, in order
    assert int(b["attention_mask"].sum()) == 10 + 20 + 15 + 30 + 12


def test_mixture_is_realised():
    mix = DEFAULT_MIXTURES["posttrain"]                     # asr 0.4 / tts 0.4 / text_lm 0.2
    s = MixtureSampler(pools(), mix, batch_size=8, max_len=128, seed=0, bucket_batches=4)
    counts = {t: 0 for t in TASKS}
    for _ in range(100):
        for t in s.next_batch()["task_ids"].tolist():
            counts[TASKS[t]] += 1
    total = sum(counts.values())
    for task, w in mix.items():
        assert abs(counts[task] / total - w) < 0.01, counts
    assert counts["text_instruct"] == counts["speech_instruct"] == counts["speech_lm"] == 0
    assert s.realised_mixture() == pytest.approx(mix, abs=0.01)


@pytest.mark.parametrize("packing", [False, True])
def test_sampler_resumes_exactly(packing):
    mix = DEFAULT_MIXTURES["instruct"]
    kw = dict(batch_size=4, max_len=128, seed=7, bucket_batches=3, packing=packing)
    s = MixtureSampler(pools({t: 40 for t in TASKS}), mix, **kw)     # small pools: epochs roll over
    batches, state = [], None
    for k in range(10):
        if k == 4:
            state = json.loads(json.dumps(s.state_dict()))           # plain values: checkpointable
        batches.append(s.next_batch())
    fresh = MixtureSampler(pools({t: 40 for t in TASKS}), mix, **kw)
    fresh.load_state_dict(state)
    for k in range(4, 10):
        assert same(fresh.next_batch(), batches[k]), k
    # same seed, same stream; another seed, another stream
    again = MixtureSampler(pools({t: 40 for t in TASKS}), mix, **kw)
    assert all(same(again.next_batch(), batches[k]) for k in range(10))
    other = MixtureSampler(pools({t: 40 for t in TASKS}), mix, **(kw | {"seed": 8}))
    assert not all(same(other.next_batch(), batches[k]) for k in range(10))


def test_packed_batches_fill_rows_with_one_task():
    s = MixtureSampler(pools(), {"text_lm": 0.5, "text_instruct": 0.5}, batch_size=4, max_len=128, packing=True)
    for _ in range(20):
        b = s.next_batch()
        assert "doc_ids" in b and b["input_ids"].shape[1] <= 128
    assert s.padding_fraction < 0.1


def test_sampler_pads_dynamically_and_reports_padding():
    s = MixtureSampler(pools(), {"text_lm": 1.0}, batch_size=8, max_len=512, seed=0)
    widths = [s.next_batch()["input_ids"].shape[1] for _ in range(30)]
    assert max(widths) <= 40 < 512 and len(set(widths)) > 3
    assert 0 <= s.padding_fraction < 0.1


def test_sampler_reads_hf_datasets_like_lists():
    from datasets import Dataset

    data = pools({"text_lm": 50, "asr": 50})
    hf = {t: Dataset.from_list([{**e, "length": len(e["input_ids"])} for e in v]) for t, v in data.items()}
    mix = {"text_lm": 0.5, "asr": 0.5}
    a = MixtureSampler(data, mix, 4, 50, seed=3)
    b = MixtureSampler(hf, mix, 4, 50, seed=3)
    assert all(same(a.next_batch(), b.next_batch()) for _ in range(8))
    assert a.skipped == b.skipped and a.skipped["asr"] > 0          # longer than max_len: left out, counted


def test_eval_batches_cover_everything_once():
    rng = random.Random(2)
    exs = [example("text_lm", rng.randint(3, 30), rng) for _ in range(50)]
    batches = list(eval_batches(exs, 8, PAD))
    assert sum(int(b["attention_mask"].sum()) for b in batches) == sum(len(e["input_ids"]) for e in exs)


def test_sampler_errors():
    p = pools({"text_lm": 10, "asr": 10})
    with pytest.raises(SamplerError, match="unknown task"):
        MixtureSampler(p, {"translation": 1.0}, 4, 64)
    with pytest.raises(SamplerError, match="sum to 1"):
        MixtureSampler(p, {"text_lm": 0.5, "asr": 0.4}, 4, 64)
    with pytest.raises(SamplerError, match="no data for it"):
        MixtureSampler(p, {"text_lm": 0.5, "tts": 0.5}, 4, 64)
    with pytest.raises(SamplerError, match="no data for it"):
        MixtureSampler({"text_lm": [], "asr": p["asr"]}, {"text_lm": 0.5, "asr": 0.5}, 4, 64)
    with pytest.raises(SamplerError, match="longer than max_len"):
        MixtureSampler(p, {"asr": 1.0}, 4, 8)
    with pytest.raises(SamplerError, match="empty dataset"):
        LengthBucketSampler([], 4)
    s = MixtureSampler(p, {"text_lm": 1.0}, 4, 64)
    with pytest.raises(SamplerError, match="different configuration"):
        MixtureSampler(p, {"text_lm": 1.0}, 8, 64).load_state_dict(s.state_dict())
