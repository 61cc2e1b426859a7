"""Speech units: features, deduplication, k-means, the phonetic encoder, metrics, the artefact.

Everything here runs on CPU in seconds: the phonetic encoder is a micro model trained for a few
dozen steps on a handful of synthesised utterances. The real measurements (held-out voices,
minutes of training) are in bench/bench_units.py and docs/units.md.
"""

import itertools
import math

import numpy as np
import pytest
import torch

from minimost.speech.audio import audio_from_hf
from minimost.speech.corpus import synthesis_record
from minimost.speech.features import FeatureConfig, log_mel, mfcc, normalize_utterance, stack_frames
from minimost.speech.synth import TEST_VOICES, TRAIN_VOICES, synthesize
from minimost.speech.units import (
    SILENCE,
    PhoneticEncoder,
    UnitArtefactMismatch,
    UnitConfig,
    UnitSequence,
    UnitTokenizer,
    cluster_metrics,
    cross_voice_edit_rate,
    dedup,
    evaluate_units,
    expand,
    frame_phones,
    kmeans,
    smooth_path,
    smooth_paths,
    train_units,
)

SENTENCES = ["The old man found a red kite near the river.", "My sister painted the heavy box upstairs.",
             "A small child carried seven green apples.", "Nobody wanted the letter from London."]

# A micro encoder: one narrow layer, no augmentation or dropout, so that a few dozen steps learn.
MICRO = dict(d_model=64, n_layers=1, n_heads=2, ff_mult=2, dropout=0.0, max_steps=50, time_budget_s=None,
             batch_seconds=1000.0, lr=3e-3, warmup_steps=5, aug_warp=0.0, aug_speed=0.0, aug_tilt=0.0,
             aug_echo=0.0, aug_mask=False, threads=1)


@pytest.fixture(scope="module")
def rows():
    """8 training rows (4 sentences x 2 training voices), as the corpus stores them."""
    return [synthesis_record(f"u{i}-{j}", synthesize(s, TRAIN_VOICES[j]))
            for i, s in enumerate(SENTENCES) for j in (0, 9)]


@pytest.fixture(scope="module")
def eval_rows():
    """2 sentences read by 2 held-out voices."""
    return [synthesis_record(f"e{i}-{j}", synthesize(s, v))
            for i, s in enumerate(SENTENCES[:2]) for j, v in enumerate(TEST_VOICES[:2])]


@pytest.fixture(scope="module")
def micro(rows):
    logs = []
    tok = train_units(rows, UnitConfig(**MICRO), progress=False, log=logs.append, log_every=10)
    return tok, logs


# --- features ---------------------------------------------------------------------------------

def test_feature_shapes_and_rates():
    wav = np.random.default_rng(0).standard_normal(16_000).astype(np.float32) * 0.1     # 1 s
    lm = log_mel(wav)
    assert lm.shape == (101, 80) and lm.dtype == torch.float32                          # 100 Hz, centred
    assert FeatureConfig().frame_rate == 100.0 and FeatureConfig().num_frames(16_000) == 101
    assert torch.allclose(lm.mean(0), torch.zeros(80), atol=1e-4)                       # normalised
    assert torch.allclose(lm.std(0, unbiased=False), torch.ones(80), atol=1e-3)
    raw = log_mel(wav, normalize=False)
    assert torch.allclose(normalize_utterance(raw), lm, atol=1e-5)
    mf = mfcc(wav)
    assert mf.shape == (101, 39)
    assert FeatureConfig(kind="mfcc").dim == 39 and FeatureConfig(kind="mfcc", deltas=False).dim == 13
    st = stack_frames(lm, 4)                                                            # 25 Hz
    assert st.shape == (26, 320)
    assert torch.equal(st[0, 80:160], lm[1]) and torch.equal(st[-1, -80:], lm[-1])      # last group padded
    with pytest.raises(ValueError, match="mono"):
        log_mel(np.zeros((2, 100), np.float32))


# --- dedup ----------------------------------------------------------------------------------

def test_dedup_round_trip():
    frames = [5, 5, 7, 5, 5, 5, 0]
    units, durations = dedup(frames)
    assert (units, durations) == ([5, 7, 5, 0], [2, 1, 3, 1])
    assert expand(units, durations) == frames
    seq = UnitSequence.from_frames(frames, 25)
    assert seq.frames() == frames and len(seq) == 4 and seq.num_frames == 7
    assert seq.seconds == pytest.approx(7 / 25)
    assert dedup([]) == ([], [])
    with pytest.raises(ValueError, match="durations"):
        expand([1, 2], [1])


# --- k-means ----------------------------------------------------------------------------------

def test_kmeans_recovers_separable_clusters():
    g = torch.Generator().manual_seed(0)
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [10.0, 10.0]])
    truth = torch.arange(4).repeat_interleave(50)
    x = centres[truth] + 0.5 * torch.randn(200, 2, generator=g)
    c = kmeans(x, 4, seed=1)
    assign = ((x[:, None] - c[None]) ** 2).sum(-1).argmin(1)
    # The same partition up to renaming: each true cluster maps to one found cluster, and back.
    pairs = set(zip(truth.tolist(), assign.tolist()))
    assert len(pairs) == 4 and len({a for _, a in pairs}) == 4
    assert torch.equal(kmeans(x, 4, seed=1), c)                                         # seeded


def test_kmeans_units_train_and_encode(rows):
    tok = train_units(rows, UnitConfig(kind="kmeans_mfcc", codebook_size=16), progress=False)
    assert tok.tensors["codebook"].shape == (16, 4 * 39)
    units = tok.encode_frames(synthesize(SENTENCES[0], TRAIN_VOICES[0]).wav)
    assert units.min() >= 0 and units.max() < 16


# --- the phonetic encoder ---------------------------------------------------------------------

def _frame_accuracy(tok: UnitTokenizer, rows) -> tuple[float, float]:
    """(accuracy of the argmax, accuracy of always answering the most frequent class)."""
    from collections import Counter

    from minimost.speech.audio import audio_from_hf

    hits = total = 0
    counts: Counter = Counter()
    for row in rows:
        wav, _ = audio_from_hf(row["audio"])
        units = tok.encode_frames(wav).tolist()
        names = frame_phones(row["phonemes"], row["phoneme_start"], row["phoneme_end"], len(units), tok.rate_hz)
        hits += sum(tok.labels[u] == y for u, y in zip(units, names))
        total += len(units)
        counts.update(names)
    return hits / total, counts.most_common(1)[0][1] / total


def test_micro_phonetic_encoder_beats_chance(micro, rows):
    tok, logs = micro
    assert tok.labels[0] == SILENCE and len(tok.labels) <= tok.num_units
    acc, majority = _frame_accuracy(tok, rows)
    assert acc > majority + 0.25, (acc, majority)
    assert logs[-1]["loss"] < logs[0]["loss"]
    seq = tok.encode(synthesize(SENTENCES[0], TRAIN_VOICES[0]).wav)
    assert len(seq) < seq.num_frames and all(0 <= u < len(tok.labels) for u in seq.units_dedup)


@pytest.mark.parametrize("window", [None, 3])
def test_encoder_shapes_and_padding(window):
    # A clip padded inside a batch gets the same scores as the clip alone (training = inference).
    torch.manual_seed(0)
    # Two layers: PyTorch's eval fast path turned the padding rows of layer 1 into NaN, which layer 2
    # spread to the real frames (pytorch/pytorch#118628; `units._mha_fastpath`).
    enc = PhoneticEncoder(80, 10, d_model=32, n_layers=2, n_heads=2, dropout=0.0, window=window).eval()
    x = torch.randn(2, 41, 80)
    x[1, 17:] = 0.0
    lengths = torch.tensor([41, 17])
    with torch.no_grad():
        y = enc(x, lengths)
        assert y.shape == (2, 11, 10) and enc.out_lengths(lengths).tolist() == [11, 5]   # ceil(T / 4)
        assert torch.allclose(enc(x[1:, :17]), y[1:, :5], atol=1e-5)
    assert torch.allclose(enc(x, lengths), y, atol=1e-5)                 # with grad: the training path
    assert torch.backends.mha.get_fastpath_enabled()                    # the switch was restored
    half = PhoneticEncoder(80, 10, d_model=32, n_layers=1, n_heads=2, stride=2).eval()       # 50 Hz
    assert half(x).shape == (2, 21, 10)


def _path_score(logp_UC, path, penalty):
    return float(sum(logp_UC[t, c] for t, c in enumerate(path))) - penalty * sum(a != b for a, b in zip(path, path[1:]))


def test_smooth_path_is_the_best_path():
    """Against brute force over all C ** U paths: the Viterbi path scores as high as the best one."""
    g = torch.Generator().manual_seed(0)
    for trial in range(20):
        logp = torch.randn(6, 3, generator=g).log_softmax(-1)
        for penalty in (0.0, 0.7, 3.0):
            path = smooth_path(logp, penalty).tolist()
            best = max(_path_score(logp, p, penalty) for p in itertools.product(range(3), repeat=6))
            assert _path_score(logp, path, penalty) == pytest.approx(best, abs=1e-5), (trial, penalty)
    flicker = torch.tensor([[0.0, -9], [0.0, -9], [-0.9, -0.5], [0.0, -9], [0.0, -9]])
    assert smooth_path(flicker, 0.0).tolist() == [0, 0, 1, 0, 0]      # the argmax
    assert smooth_path(flicker, 2.0).tolist() == [0, 0, 0, 0, 0]      # a weak one-frame switch absorbed


def test_smooth_paths_batch_equals_one_by_one():
    g = torch.Generator().manual_seed(1)
    lengths = [7, 1, 12, 4]
    clips = [torch.randn(n, 5, generator=g).log_softmax(-1) for n in lengths]
    padded = torch.nn.utils.rnn.pad_sequence(clips, batch_first=True, padding_value=3.0)   # junk past the ends
    for got, clip in zip(smooth_paths(padded.numpy(), lengths, 1.5), clips):
        assert got.tolist() == smooth_path(clip, 1.5).tolist()


def test_encode_batch_matches_encode(micro, rows, eval_rows):
    tok, _ = micro
    wavs = [r["audio"] for r in rows + eval_rows]
    wavs = [audio_from_hf(w)[0] for w in wavs]
    one_by_one = [tok.encode(w) for w in wavs]
    for batch_seconds in (1.0, 6.0, 1000.0):                  # one clip per batch, a few, all at once
        batched = tok.encode_batch(wavs, batch_seconds=batch_seconds)
        frames = [(a.frames(), b.frames()) for a, b in zip(one_by_one, batched)]
        assert all(len(a) == len(b) for a, b in frames)
        same = sum(x == y for a, b in frames for x, y in zip(a, b)) / sum(len(a) for a, _ in frames)
        assert same >= 0.995, (batch_seconds, same)           # float rounding may flip a tie, rarely
    assert tok.encode_batch([]) == []


def test_frame_phones_centres_and_silence():
    names = frame_phones(["h", "ˈaɪ"], [0.04, 0.10], [0.10, 0.16], 5, 25)
    # frame centres 0.02, 0.06, 0.10, 0.14, 0.18 s
    assert names == [SILENCE, "h", "aɪ", "aɪ", SILENCE]
    assert frame_phones(["ˈaɪ"], [0.0], [0.08], 2, 25, classes="phone_stress") == ["ˈaɪ", "ˈaɪ"]
    assert frame_phones(["a"], [0.0], [0.08], 2, 25, positions=True) == ["a.1", "a.2"]


def test_ctc_spikes_become_segments():
    from minimost.speech.units import _nearest_spike

    blank = 9
    ids = torch.tensor([9, 9, 9, 9, 9, 3, 9, 9, 9, 5, 9, 9, 9, 9, 9, 9])
    # nearest spike (ties to the earlier one); silence beyond 3 frames from the first/last spike
    assert _nearest_spike(ids, blank, 3).tolist() == [0, 0, 3, 3, 3, 3, 3, 3, 5, 5, 5, 5, 5, 0, 0, 0]
    assert _nearest_spike(torch.tensor([9, 9]), blank, 3).tolist() == [0, 0]


def test_frame_objective_needs_timings(rows):
    untimed = [{**r, "phoneme_start": [], "phoneme_end": []} for r in rows[:2]]
    with pytest.raises(ValueError, match="ctc"):
        train_units(untimed, UnitConfig(**{**MICRO, "max_steps": 1}), progress=False)


def test_ctc_reduces_its_loss(rows):
    # Real corpora have transcripts only: rows without timings, phonemes from G2P.
    untimed = [{**r, "phoneme_start": [], "phoneme_end": []} for r in rows]
    logs = []
    cfg = UnitConfig(**{**MICRO, "objective": "ctc", "max_steps": 40, "lr": 5e-3})
    tok = train_units(untimed, cfg, progress=False, log=logs.append, log_every=1)
    first = np.mean([d["batch_loss"] for d in logs[:3]])
    last = np.mean([d["batch_loss"] for d in logs[-3:]])
    assert last < 0.7 * first, (first, last)
    units = tok.encode_frames(synthesize(SENTENCES[1], TRAIN_VOICES[0]).wav)
    assert units.max() < len(tok.labels)                    # blanks never come out as units


# --- metrics ----------------------------------------------------------------------------------

def test_cluster_metrics_hand_computed():
    perfect = cluster_metrics(list("aabb"), [1, 1, 2, 2])
    assert perfect["phone_purity"] == perfect["cluster_purity"] == pytest.approx(1.0)
    assert perfect["pnmi"] == pytest.approx(1.0)
    one = cluster_metrics(list("aabb"), [1, 1, 1, 1])
    assert (one["phone_purity"], one["cluster_purity"], one["pnmi"]) == pytest.approx((0.5, 1.0, 0.0))
    # labels a a a b, units 1 1 2 2: p(a,1) = 1/2, p(a,2) = 1/4, p(b,2) = 1/4.
    m = cluster_metrics(list("aaab"), [1, 1, 2, 2])
    assert m["phone_purity"] == pytest.approx(0.5 + 0.25)        # unit 1 -> a (1/2), unit 2 -> a or b (1/4)
    assert m["cluster_purity"] == pytest.approx(0.5 + 0.25)      # a -> unit 1 (1/2), b -> unit 2 (1/4)
    mi = 0.5 * math.log(0.5 / (0.75 * 0.5)) + 0.25 * math.log(0.25 / (0.75 * 0.5)) + 0.25 * math.log(0.25 / (0.25 * 0.5))
    h = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    assert m["pnmi"] == pytest.approx(mi / h) and m["pnmi"] == pytest.approx(0.38369, abs=1e-5)
    assert m["frames"] == 4


def test_cross_voice_edit_rate_toy():
    strings = {"s1": {"v1": [1, 2, 3], "v2": [1, 3]},           # one deletion: (1/3 + 1/2) / 2
               "s2": {"v1": [4, 5], "v2": [4, 5]},              # identical: 0
               "s3": {"v1": [7]}}                               # one voice: no pair
    r = cross_voice_edit_rate(strings)
    assert r["pairs"] == 2
    assert r["edit_rate"] == pytest.approx(((1 / 3 + 1 / 2) / 2 + 0.0) / 2)
    with pytest.raises(ValueError, match="two voices"):
        cross_voice_edit_rate({"s": {"v": [1]}})


def test_evaluate_oracle_and_encoder(micro, eval_rows):
    oracle = evaluate_units(None, eval_rows)                   # espeak's labels as units
    assert oracle["pnmi"] == pytest.approx(1.0) and oracle["phone_purity"] == pytest.approx(1.0)
    assert oracle["units_per_s"] == pytest.approx(25, rel=0.05)
    assert oracle["units_per_s_dedup"] < oracle["units_per_s"]
    assert oracle["cross_voice_pairs"] == 2 and 0 <= oracle["cross_voice_edit_rate"] < 1
    m = evaluate_units(micro[0], eval_rows)
    assert 0 < m["pnmi"] < 1 and m["utterances"] == 4


# --- the artefact -----------------------------------------------------------------------------

def test_artefact_round_trip_gives_identical_units(micro, tmp_path):
    tok = micro[0]
    wav = synthesize(SENTENCES[2], TEST_VOICES[0]).wav
    tok.save(tmp_path / "units")
    again = UnitTokenizer.load(tmp_path / "units")
    assert again.artefact_id == tok.artefact_id and again.labels == tok.labels
    assert torch.equal(again.encode_frames(wav), tok.encode_frames(wav))
    assert again.encode(wav) == tok.encode(wav)
    tok.save(tmp_path / "units")                              # overwriting is atomic and fine
    assert UnitTokenizer.load(tmp_path / "units").artefact_id == tok.artefact_id


def test_hash_changes_with_config_and_weights():
    codebook = {"codebook": torch.randn(8, 320, generator=torch.Generator().manual_seed(0))}
    base = UnitTokenizer(UnitConfig(kind="kmeans_mel", codebook_size=8), [], codebook)
    same = UnitTokenizer(UnitConfig(kind="kmeans_mel", codebook_size=8, threads=2), [], codebook)
    assert base.artefact_id == same.artefact_id                  # run-time knobs are not identity
    unused = UnitTokenizer(UnitConfig(kind="kmeans_mel", codebook_size=8, d_model=64), [], codebook)
    assert unused.artefact_id == base.artefact_id                # nor encoder settings, for k-means
    other_cfg = UnitTokenizer(UnitConfig(kind="kmeans_mel", codebook_size=8, kmeans_iters=3), [], codebook)
    other_w = UnitTokenizer(UnitConfig(kind="kmeans_mel", codebook_size=8), [], {"codebook": codebook["codebook"] + 1})
    assert len({base.hash, other_cfg.hash, other_w.hash}) == 3
    assert base.artefact_id.startswith("units-kmeans_mel-k8-25hz-")


def test_mismatched_artefacts_fail_loudly(micro, tmp_path):
    tok = micro[0]
    tok.check_compatible(tok.artefact_id)                        # the same artefact: fine
    with pytest.raises(UnitArtefactMismatch, match=tok.artefact_id):
        tok.check_compatible("units-phonetic-k100-25hz-000000000000")
    # An artefact whose files were edited no longer matches its stored hash.
    import json

    path = tok.save(tmp_path / "units")
    meta = json.loads((path / "units.json").read_text())
    meta["labels"][1] = "zz"
    (path / "units.json").write_text(json.dumps(meta))
    with pytest.raises(UnitArtefactMismatch, match="corrupted"):
        UnitTokenizer.load(path)


def test_train_units_is_cached(rows, tmp_path):
    cfg = UnitConfig(kind="kmeans_mel", codebook_size=8, kmeans_iters=5)
    a = train_units(rows, cfg, cache_dir=tmp_path, progress=False)
    assert len(list(tmp_path.iterdir())) == 1
    b = train_units(iter(rows), cfg, cache_dir=tmp_path, progress=False)      # any iterable of rows
    assert b.artefact_id == a.artefact_id and b.info == a.info
    c = train_units(rows, UnitConfig(kind="kmeans_mel", codebook_size=8, kmeans_iters=5, seed=1),
                    cache_dir=tmp_path, progress=False)
    assert len(list(tmp_path.iterdir())) == 2 and c.artefact_id != a.artefact_id
