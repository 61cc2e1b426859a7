"""Word error rate (WER), corpus-level, with a documented text normaliser.

    WER = (S + D + I) / N

S, D, I are the substitutions, deletions and insertions of the cheapest word alignment of each
hypothesis against its reference, N the number of reference words. **Corpus-level** means the
counts are summed over all utterances before dividing (the convention of sclite, Kaldi, jiwer
and the LibriSpeech literature), not the mean of per-utterance WERs, which would let short
utterances weigh as much as long ones. WER can exceed 1 (many insertions).

Both sides go through `normalize_text` first:
1. Unicode NFKC (full-width letters, ligatures, compatibility forms fold to plain ones), and
   typographic apostrophes (’ ‘ ʼ) become "'";
2. lower-case;
3. punctuation becomes a space, except an apostrophe *inside* a word ("don't", "o'clock" stay
   one word) and "." or "," *inside* a number ("3.5", "1,000");
4. numbers stay as written: "42" and "forty two" are different words (no number expansion, no
   spelling normalisation as Whisper's English normaliser does; apply one to both sides yourself
   if you want it);
5. whitespace collapses to single spaces, so words are what `split()` gives.

Word boundaries are kept on purpose. MoST's evaluation script (most-reference.md §8.1) runs
jiwer's `RemoveWhitespace()` with its defaults, which deletes every space: each sentence becomes
one "word", and the number it reports is a *sentence* error rate, not a WER.

The edit distance is the textbook dynamic programme (Levenshtein over words), written out so it
can be read; `tests/test_wer.py` cross-checks it against jiwer and
`torchaudio.functional.edit_distance`.
"""

from __future__ import annotations

import math
import re
import unicodedata
from dataclasses import dataclass, field

_APOSTROPHES = str.maketrans({"’": "'", "‘": "'", "ʼ": "'"})
# A token is a run of letters/digits, joined by an apostrophe between word characters or by "."
# / "," between digits. Everything else (punctuation, symbols, "_") separates words.
_WORD = re.compile(r"[^\W_]+(?:(?:'|(?<=\d)[.,](?=\d))[^\W_]+)*")


def normalize_text(text: str) -> str:
    """Normalise one transcript for scoring (see the module docstring for the exact rules)."""
    text = unicodedata.normalize("NFKC", text).translate(_APOSTROPHES).lower()
    return " ".join(_WORD.findall(text))


def edit_ops(ref: list[str], hyp: list[str]) -> tuple[int, int, int]:
    """(substitutions, deletions, insertions) of a cheapest alignment of `hyp` to `ref`.

    cost[i][j] is the edit distance between ref[:i] and hyp[:j]; each cell also remembers how
    many S, D, I its best path used. Several alignments can share the lowest cost ("a b" vs
    "b c": two substitutions, or a deletion and an insertion around a hit); among them we keep
    the one with the fewest substitutions, i.e. the most hits (sclite's weights lean the same
    way). That fixes S, and with it D and I (I - D = len(hyp) - len(ref) on every alignment), so
    the counts are unique. jiwer breaks such ties differently: same WER, its S can be higher.
    """
    # Row by row: prev holds (cost, S, D, I) for ref[:i-1], cur for ref[:i].
    prev = [(j, 0, 0, j) for j in range(len(hyp) + 1)]          # ref empty: j insertions
    for i in range(1, len(ref) + 1):
        cur = [(i, 0, i, 0)]                                     # hyp empty: i deletions
        for j in range(1, len(hyp) + 1):
            c, s, d, n = prev[j - 1]
            diag = (c, s, d, n) if ref[i - 1] == hyp[j - 1] else (c + 1, s + 1, d, n)
            c, s, d, n = prev[j]
            dele = (c + 1, s, d + 1, n)
            c, s, d, n = cur[j - 1]
            ins = (c + 1, s, d, n + 1)
            cur.append(min((diag, dele, ins), key=lambda t: (t[0], t[1])))
        prev = cur
    _, s, d, n = prev[-1]
    return s, d, n


@dataclass
class UtteranceErrors:
    """Alignment counts of one (reference, hypothesis) pair, after normalisation."""

    ref: str
    hyp: str
    substitutions: int
    deletions: int
    insertions: int
    ref_words: int

    @property
    def errors(self) -> int:
        return self.substitutions + self.deletions + self.insertions

    @property
    def wer(self) -> float:
        """This utterance's WER; inf if the reference is empty but words were inserted."""
        if self.ref_words == 0:
            return 0.0 if self.errors == 0 else math.inf
        return self.errors / self.ref_words


@dataclass
class WerReport:
    """Corpus-level WER and its parts; `utterances` has the per-utterance details."""

    wer: float
    substitutions: int
    deletions: int
    insertions: int
    ref_words: int
    hyp_words: int
    utterances: list[UtteranceErrors] = field(repr=False)

    @property
    def hits(self) -> int:
        return self.ref_words - self.substitutions - self.deletions

    def __str__(self) -> str:
        return (f"WER {100 * self.wer:.2f}% ({self.substitutions} sub, {self.deletions} del, "
                f"{self.insertions} ins over {self.ref_words} reference words, {len(self.utterances)} utterances)")


def wer_report(refs: list[str] | str, hyps: list[str] | str, *, normalize: bool = True) -> WerReport:
    """Corpus-level WER with S/D/I counts and per-utterance details.

    `refs` and `hyps` are parallel lists of transcripts (or two strings: one utterance).
    `normalize=False` scores the strings as given, split on whitespace.
    """
    if isinstance(refs, str) and isinstance(hyps, str):
        refs, hyps = [refs], [hyps]
    refs, hyps = list(refs), list(hyps)
    if len(refs) != len(hyps):
        raise ValueError(f"{len(refs)} references but {len(hyps)} hypotheses; expected one hypothesis each.")
    prep = normalize_text if normalize else (lambda t: " ".join(t.split()))
    utts = []
    for r, h in zip(refs, hyps):
        r, h = prep(r), prep(h)
        rw, hw = r.split(), h.split()
        s, d, n = edit_ops(rw, hw)
        utts.append(UtteranceErrors(r, h, s, d, n, len(rw)))
    total = sum(u.ref_words for u in utts)
    if total == 0:
        raise ValueError("the references contain no words (after normalisation): WER is undefined.")
    S, D, I = (sum(getattr(u, k) for u in utts) for k in ("substitutions", "deletions", "insertions"))
    return WerReport((S + D + I) / total, S, D, I, total, sum(len(u.hyp.split()) for u in utts), utts)


def wer(refs: list[str] | str, hyps: list[str] | str, *, normalize: bool = True) -> float:
    """Corpus-level word error rate: total (S + D + I) / total reference words."""
    return wer_report(refs, hyps, normalize=normalize).wer


def cer(refs: list[str], hyps: list[str]) -> float:
    """Corpus-level character error rate after `normalize_text` (spaces count as characters)."""
    errors = total = 0
    for r, h in zip(refs, hyps):
        r, h = normalize_text(r), normalize_text(h)
        errors += sum(edit_ops(list(r), list(h)))
        total += len(r)
    return errors / max(total, 1)
