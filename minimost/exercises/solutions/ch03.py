"""Reference solutions to `minimost.exercises.ch03` (notebooks/03_speech_units.ipynb)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from minimost.speech.synth import strip_stress


def dedup_units(frame_units: Sequence[int]) -> tuple[list[int], list[int]]:
    """One pass: extend the current run, or start a new one when the unit changes."""
    units: list[int] = []
    durations: list[int] = []
    for u in frame_units:
        u = int(u)
        if units and units[-1] == u:
            durations[-1] += 1
        else:
            units.append(u)
            durations.append(1)
    return units, durations


def frame_labels(phonemes, starts, ends, num_frames: int, rate_hz: float) -> list[str]:
    """For each frame centre, the (stress-stripped) phoneme whose segment holds it, else "sil"."""
    out = []
    for i in range(num_frames):
        t = (i + 0.5) / rate_hz
        label = "sil"
        for p, s, e in zip(phonemes, starts, ends):
            if s <= t < e:
                label = strip_stress(p)
                break
        out.append(label)
    return out


def purity_and_pnmi(labels, units) -> dict[str, float]:
    """From the joint count table of (phone, unit): the two purities and I(y; z) / H(y)."""
    _, yi = np.unique(np.asarray(labels, dtype=str), return_inverse=True)
    _, zi = np.unique(np.asarray(units), return_inverse=True)
    joint = np.zeros((yi.max() + 1, zi.max() + 1))
    np.add.at(joint, (yi, zi), 1.0)
    p_yz = joint / joint.sum()
    p_y, p_z = p_yz.sum(1), p_yz.sum(0)
    mi = sum(p_yz[y, z] * math.log(p_yz[y, z] / (p_y[y] * p_z[z]))
             for y, z in zip(*np.nonzero(p_yz)))
    h_y = -sum(p * math.log(p) for p in p_y if p > 0)
    return {"phone_purity": float(p_yz.max(0).sum()), "cluster_purity": float(p_yz.max(1).sum()),
            "pnmi": float(mi / h_y) if h_y > 0 else 1.0}


def pair_edit_rate(a, b) -> float:
    """Levenshtein distance by dynamic programming, normalised by each length and averaged."""
    prev = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        cur = [i]
        for j, y in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y)))
        prev = cur
    d = prev[-1]
    return 0.5 * (d / max(len(a), 1) + d / max(len(b), 1))
