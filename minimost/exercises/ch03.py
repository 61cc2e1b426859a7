"""Chapter 3 exercises: speech units (notebooks/03_speech_units.ipynb).

Fill in each function, then run `MINIMOST_EXERCISES=student pytest tests/exercises/test_ch03.py`.
The tests compare your result with `minimost.speech.units` on random and hand-made inputs.
Times: a "frame" is a unit frame at `rate_hz` (25 per second, MoST's rate).
"""

from __future__ import annotations

from collections.abc import Sequence


def dedup_units(frame_units: Sequence[int]) -> tuple[list[int], list[int]]:
    """Exercise 1 - remove consecutive duplicates and keep the run lengths.

    [5, 5, 7, 5, 5, 5] -> ([5, 7, 5], [2, 1, 3]). The units are what MoST's LM reads; the run lengths
    (durations, in frames) are what the vocoder's duration predictor must put back. An empty input
    gives ([], []). Return plain Python ints. Checked against `minimost.speech.units.dedup` and
    round-tripped through `minimost.speech.units.expand`.
    """
    raise NotImplementedError("exercise 1 of chapter 3: write dedup_units")


def frame_labels(phonemes: Sequence[str], starts: Sequence[float], ends: Sequence[float], num_frames: int,
                 rate_hz: float) -> list[str]:
    """Exercise 2 - the reference phone of every unit frame, from espeak's phoneme timings.

    Frame i covers [i, i + 1) / rate_hz seconds; its label is the phoneme whose segment
    [start, end) contains the frame's *centre* (i + 0.5) / rate_hz, with espeak's stress marks removed
    (`minimost.speech.synth.strip_stress`: "ˈæ" -> "æ"). A centre in no segment (leading or trailing
    silence, pauses) gets "sil". Segments are sorted and do not overlap. Checked against
    `minimost.speech.units.frame_phones`.
    """
    raise NotImplementedError("exercise 2 of chapter 3: write frame_labels")


def purity_and_pnmi(labels: Sequence[str], units: Sequence[int]) -> dict[str, float]:
    """Exercise 3 - the HuBERT paper's unit-quality metrics from frame-aligned (phone, unit) pairs.

    Count the joint distribution p(y, z) of phone y and unit z over frames, then
        phone_purity   = sum_z p(z) max_y p(y | z)  = sum_z max_y p(y, z)
        cluster_purity = sum_y p(y) max_z p(z | y)  = sum_y max_z p(y, z)
        pnmi           = I(y; z) / H(y)  (natural logs; define it as 1.0 when H(y) = 0)
    Return {"phone_purity": ..., "cluster_purity": ..., "pnmi": ...} as floats.
    Checked against `minimost.speech.units.cluster_metrics`.
    Hint: `np.unique(..., return_inverse=True)` and `np.add.at` build the count table.
    """
    raise NotImplementedError("exercise 3 of chapter 3: write purity_and_pnmi")


def pair_edit_rate(a: Sequence[int], b: Sequence[int]) -> float:
    """Exercise 4 - how different are two voices' unit strings for the same sentence?

    d = Levenshtein distance between the two deduplicated unit strings (substitution, insertion and
    deletion each cost 1). Normalise by each string's length and average both ways round:
    0.5 * (d / max(len(a), 1) + d / max(len(b), 1)). Checked against
    `minimost.speech.units.cross_voice_edit_rate` on one sentence read by two voices.
    """
    raise NotImplementedError("exercise 4 of chapter 3: write pair_edit_rate")
