"""Chapter 3 exercises (minimost/exercises/ch03.py) checked against minimost.speech.units."""

import random

import pytest

from minimost.speech.units import cluster_metrics, cross_voice_edit_rate, dedup, expand, frame_phones

PHONES = ["ð", "ˈæ", "t", "ɪ", "ˌs", "k", "ə"]


@pytest.fixture
def ex(ex_kind, load):
    return load(ex_kind, "ch03")


def test_dedup_units_examples(ex):
    assert ex.dedup_units([5, 5, 7, 5, 5, 5]) == ([5, 7, 5], [2, 1, 3])
    assert ex.dedup_units([]) == ([], [])
    assert ex.dedup_units([3]) == ([3], [1])


@pytest.mark.parametrize("seed", range(5))
def test_dedup_units_matches_package(ex, seed):
    rng = random.Random(seed)
    frames = [rng.choice([0, 1, 2, 2, 2, 9]) for _ in range(rng.randint(1, 80))]
    units, durations = ex.dedup_units(frames)
    assert (units, durations) == dedup(frames)
    assert expand(units, durations) == frames
    assert all(type(u) is int for u in units + durations)


def _random_segments(rng):
    """Sorted, non-overlapping phoneme segments with gaps (pauses) between some of them."""
    t, phonemes, starts, ends = rng.uniform(0.0, 0.2), [], [], []
    for _ in range(rng.randint(1, 12)):
        length = rng.uniform(0.02, 0.15)
        phonemes.append(rng.choice(PHONES))
        starts.append(t)
        ends.append(t + length)
        t += length + (rng.uniform(0.0, 0.1) if rng.random() < 0.3 else 0.0)
    return phonemes, starts, ends, t


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("rate", [25, 50])
def test_frame_labels_match_package(ex, seed, rate):
    rng = random.Random(seed)
    phonemes, starts, ends, t_end = _random_segments(rng)
    n = int((t_end + 0.3) * rate)
    got = ex.frame_labels(phonemes, starts, ends, n, rate)
    assert got == frame_phones(phonemes, starts, ends, n, rate)
    assert "sil" in got and not any("ˈ" in g or "ˌ" in g for g in got)


@pytest.mark.parametrize("seed", range(5))
def test_purity_and_pnmi_match_package(ex, seed):
    rng = random.Random(seed)
    labels = [rng.choice(["sil", "a", "b", "c", "d"]) for _ in range(300)]
    noisy = {"sil": 0, "a": 1, "b": 2, "c": 2, "d": 3}
    units = [noisy[y] if rng.random() < 0.7 else rng.randrange(6) for y in labels]
    got = ex.purity_and_pnmi(labels, units)
    want = cluster_metrics(labels, units)
    for key in ("phone_purity", "cluster_purity", "pnmi"):
        assert got[key] == pytest.approx(want[key], abs=1e-9), key


def test_purity_and_pnmi_extremes(ex):
    labels = ["a", "b", "c", "a", "b", "c"]
    perfect = ex.purity_and_pnmi(labels, [7, 8, 9, 7, 8, 9])
    assert perfect["pnmi"] == pytest.approx(1.0) and perfect["phone_purity"] == pytest.approx(1.0)
    useless = ex.purity_and_pnmi(labels, [0] * 6)
    assert useless["pnmi"] == pytest.approx(0.0, abs=1e-12) and useless["cluster_purity"] == pytest.approx(1.0)


@pytest.mark.parametrize("seed", range(6))
def test_pair_edit_rate_matches_package(ex, seed):
    rng = random.Random(seed)
    a = [rng.randrange(10) for _ in range(rng.randint(1, 25))]
    b = [u if rng.random() < 0.7 else rng.randrange(10) for u in a][: rng.randint(1, len(a))] + [3, 4]
    want = cross_voice_edit_rate({"sentence": {"voice A": a, "voice B": b}})["edit_rate"]
    assert ex.pair_edit_rate(a, b) == pytest.approx(want)
    assert ex.pair_edit_rate(a, a) == 0.0
