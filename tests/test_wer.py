"""WER: the normaliser, hand-checked alignments, corpus-level pooling, and cross-checks with jiwer/torchaudio."""

import random

import pytest

from minimost.wer import edit_ops, normalize_text, wer, wer_report


@pytest.mark.parametrize("text, expected", [
    ("Hello, World!", "hello world"),
    ("Don't STOP me now.", "don't stop me now"),                 # intra-word apostrophe kept
    ("’Tis rock’n’roll", "tis rock'n'roll"),                       # typographic apostrophes folded
    ("'quoted' words", "quoted words"),
    ("3.5 km, 1,000 people; 42", "3.5 km 1,000 people 42"),        # numbers as written
    ("ｆｕｌｌ-width — ﬁne?", "full width fine"),                  # NFKC; punctuation splits
    ("  many\t spaces\n", "many spaces"),
    ("snake_case", "snake case"),
    ("", ""),
])
def test_normalize_text(text, expected):
    assert normalize_text(text) == expected


@pytest.mark.parametrize("ref, hyp, sdi", [
    ("a b c", "a b c", (0, 0, 0)),
    ("a b c", "a x c", (1, 0, 0)),
    ("a b c", "a c", (0, 1, 0)),
    ("a b c", "a b b c", (0, 0, 1)),
    ("a b c", "", (0, 3, 0)),
    ("", "a b", (0, 0, 2)),
    ("the cat sat on the mat", "cat sat on a mat today", (1, 1, 1)),
    ("a b", "b c", (0, 1, 1)),                     # a tie: fewest substitutions (most hits) wins
])
def test_edit_ops_by_hand(ref, hyp, sdi):
    assert edit_ops(ref.split(), hyp.split()) == sdi


def test_corpus_level_not_mean_of_utterances():
    refs, hyps = ["hello", "the quick brown fox"], ["yellow", "the quick brown fox"]
    report = wer_report(refs, hyps)
    assert report.wer == pytest.approx(1 / 5)                      # the mean of utterances would be 0.5
    assert [u.wer for u in report.utterances] == [1.0, 0.0]
    assert (report.substitutions, report.hits, report.ref_words) == (1, 4, 5)
    assert wer("Hello, world!", "hello world") == 0.0              # normalised on both sides
    assert wer("Hello, world!", "hello world", normalize=False) == 1.0
    assert wer(["a"], ["a b c"]) == 2.0                            # insertions can push WER past 1
    assert "WER 20.00%" in str(report)


def test_errors():
    with pytest.raises(ValueError, match="2 references but 1 hypotheses"):
        wer(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="no words"):
        wer(["", "!!"], ["a", "b"])


def _random_pairs(n, seed=0):
    rng = random.Random(seed)
    vocab = ["a", "b", "c", "d", "e", "f", "g"]
    pairs = []
    for _ in range(n):
        ref = [rng.choice(vocab) for _ in range(rng.randint(1, 12))]
        hyp = [w for w in ref if rng.random() > 0.2]                 # deletions
        hyp = [rng.choice(vocab) if rng.random() < 0.2 else w for w in hyp]   # substitutions
        for _ in range(rng.randint(0, 3)):                           # insertions
            hyp.insert(rng.randint(0, len(hyp)), rng.choice(vocab))
        pairs.append((" ".join(ref), " ".join(hyp)))
    return pairs


def test_matches_torchaudio_edit_distance():
    F = pytest.importorskip("torchaudio.functional")
    for ref, hyp in _random_pairs(200, seed=1):
        assert sum(edit_ops(ref.split(), hyp.split())) == F.edit_distance(ref.split(), hyp.split())


def test_matches_jiwer():
    jiwer = pytest.importorskip("jiwer")
    pairs = _random_pairs(200, seed=2)
    refs, hyps = [r for r, _ in pairs], [h for _, h in pairs]
    ours = wer_report(refs, hyps, normalize=False)
    theirs = jiwer.process_words(refs, hyps)
    assert ours.wer == pytest.approx(theirs.wer)
    assert ours.substitutions + ours.deletions + ours.insertions == \
        theirs.substitutions + theirs.deletions + theirs.insertions
    # Same cost, but ties split differently: we keep the most hits among the cheapest alignments,
    # jiwer (rapidfuzz's backtrace) does not always, so our S is never above its S.
    assert ours.hits >= theirs.hits and ours.substitutions <= theirs.substitutions
    for (ref, hyp), utt in zip(pairs, ours.utterances):
        one = jiwer.process_words(ref, hyp)
        assert utt.errors == one.substitutions + one.deletions + one.insertions


def test_cer_counts_characters_of_the_normalised_text():
    from minimost.wer import cer
    assert cer(["Ab c"], ["ab d"]) == pytest.approx(1 / 4)   # "ab c" vs "ab d": one substitution in 4
    assert cer(["abc"], ["abc"]) == 0
