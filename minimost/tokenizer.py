"""The minimost tokenizer: declared special tokens, a text BPE, and one token per speech unit.

Id layout (every range is declared in the saved JSON, never hard-coded elsewhere):

    0 .. S-1        special tokens, in the declared order of SPECIAL_TOKENS, padded with
                    <|reserved_k|> up to S = 16 slots, so adding a marker later moves no id
    S .. S+T-1      text BPE pieces (Hugging Face `tokenizers`, trained on the mini-world text)
    S+T .. V-1      speech units <|unit_0|> .. <|unit_{n-1}|> (deduplicated k-means ids), on top

`with_units(n)` is the MoST transformation (most-reference.md §4.1): a text-only tokenizer gains
n unit tokens above its text ids and every existing id keeps its meaning. The total stays within
the preset's `vocab_size` because training leaves `unit_budget` ids free.

Special tokens are real single ids. MoST's data writes ASCII `<|begin_of_audio|>` while its
tokenizer registers the full-width `<｜begin▁of▁audio｜>`, so its markers are split into ordinary
text pieces and never become the special ids (most-reference.md §6.1). Here markers never pass
through text at all: task templates put the ids in directly (`minimost.data.tasks`), and text may
only contain the world's characters (`CHARSET`), so no text can ever spell a special token.

Modality map (DESIGN.md §2, most-reference.md §2.5): text pieces -> TEXT, units -> AUDIO, each
special token -> the mark it declares. Begin/end-of-audio are declared AUDIO: they belong to the
audio span, as in MoST (its 502 "audio" ids are the 500 units plus the two audio brackets), so the
position that reads <|begin_of_audio|> and predicts the first unit goes to the audio experts, and
results stay comparable with MoST's routing. Every other special token is SPECIAL and routed by
`ModelConfig.special_token_route`.

    tok = Tokenizer.train(texts, vocab_size=2048, unit_budget=256)   # text only
    tok = tok.with_units(256)                                         # + <|unit_0..255|>
    ids = [tok.special("bos")] + tok.encode_text("the dog runs.") + tok.encode_audio([3, 17, 5])
    tok.marks(ids)          # LongTensor of TEXT / AUDIO / SPECIAL, from the declared map
    tok.save(run_dir / "tokenizer"); Tokenizer.load(run_dir / "tokenizer")
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch

from minimost.config import AUDIO, MARK_NAMES, SPECIAL, TEXT

FORMAT_VERSION = 1
LAYOUT_FILE = "minimost_tokenizer.json"
HF_FILE = "tokenizer.json"
SPACE = "\u2581"      # the visible space of whitespace-aware BPE (SentencePiece's "▁")
DEFAULT_CHARSET = "abcdefghijklmnopqrstuvwxyz .,?"   # minimost.data.lexicon.CHARSET
N_SPECIAL_SLOTS = 16

# (name, token string, mark). The order is the id order. Marks are declared here, as data.
SPECIAL_TOKENS: tuple[tuple[str, str, int], ...] = (
    ("pad", "<|pad|>", SPECIAL),                  # padding (never attended, never scored)
    ("bos", "<|bos|>", SPECIAL),                  # start of every sequence
    ("eos", "<|eos|>", SPECIAL),                  # end of a response / document: generation stops
    ("boa", "<|begin_of_audio|>", AUDIO),         # opens a span of speech units
    ("eoa", "<|end_of_audio|>", AUDIO),           # closes it
    ("user", "<|user|>", SPECIAL),                # turn markers of the prompt / response format
    ("assistant", "<|assistant|>", SPECIAL),
    ("asr", "<|asr|>", SPECIAL),                  # task markers: speech -> text
    ("tts", "<|tts|>", SPECIAL),                  # text -> speech
    ("text_reply", "<|text_reply|>", SPECIAL),    # instruction, answer in text
    ("speech_reply", "<|speech_reply|>", SPECIAL),  # instruction, answer in speech
)
_MARK_BY_NAME = {v: k for k, v in MARK_NAMES.items()}


class TokenizerError(ValueError):
    """Text or ids the tokenizer cannot handle; the message says which and what to do."""


def normalize_text(text: str, charset: str = DEFAULT_CHARSET) -> str:
    """Lowercase, map ! ; : to sentence punctuation, drop other characters, single spaces."""
    text = text.lower().replace("!", ".").replace(";", ",").replace(":", ",")
    text = "".join(c if c in charset else " " for c in text)
    return re.sub(r"\s+", " ", text).strip()


def unit_token(u: int) -> str:
    return f"<|unit_{u}|>"


class Tokenizer:
    """Text BPE + units + specials, with the declared id -> modality map. See the module docstring."""

    def __init__(self, hf, layout: dict[str, Any]):
        self.hf = hf                      # tokenizers.Tokenizer: specials + text BPE
        self.layout = layout
        self.charset: str = layout["charset"]
        self._chars = frozenset(self.charset)
        self._special = {s["name"]: s["id"] for s in layout["specials"]}
        self.text_start, self.text_stop = layout["text"]["start"], layout["text"]["stop"]
        self.unit_start, self.n_units = layout["units"]["start"], layout["units"]["count"]
        self.unit_artefact: str = layout["units"].get("artefact", "")
        self.max_vocab_size: int | None = layout.get("max_vocab_size")
        self.check()

    # ------------------------------------------------------------------ training
    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int, n_units: int = 0, unit_budget: int | None = None,
              charset: str = DEFAULT_CHARSET, min_frequency: int = 2) -> Tokenizer:
        """Train the text BPE so that specials + text + `unit_budget` units fit in `vocab_size`.

        `unit_budget` (default `n_units`) is the room left for units; `n_units` of them are added
        now (0 = a text-only tokenizer, extended later with `with_units`). The BPE may stop below
        its budget when the corpus has no more merges to offer.
        """
        from tokenizers import Tokenizer as HFTokenizer
        from tokenizers import decoders, models, pre_tokenizers, trainers

        unit_budget = n_units if unit_budget is None else unit_budget
        if n_units > unit_budget:
            raise TokenizerError(f"n_units={n_units} is larger than unit_budget={unit_budget}.")
        alphabet = sorted(set(charset) - {" "}) + [SPACE]
        text_budget = vocab_size - N_SPECIAL_SLOTS - unit_budget
        if text_budget < len(alphabet):
            raise TokenizerError(
                f"vocab_size={vocab_size} leaves {text_budget} text ids after {N_SPECIAL_SLOTS} special slots "
                f"and {unit_budget} units; the text alphabet alone needs {len(alphabet)}. Use fewer units or "
                "a larger vocabulary.")
        hf = HFTokenizer(models.BPE())
        # Whitespace-aware BPE: a space becomes "▁" glued to the next word, punctuation stands alone,
        # merges never cross words, and decoding restores the spaces exactly.
        hf.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Metaspace(replacement=SPACE, prepend_scheme="always"), pre_tokenizers.Punctuation()])
        hf.decoder = decoders.Metaspace(replacement=SPACE, prepend_scheme="always")
        trainer = trainers.BpeTrainer(vocab_size=N_SPECIAL_SLOTS + text_budget, special_tokens=_slot_tokens(),
                                      initial_alphabet=alphabet, min_frequency=min_frequency,
                                      show_progress=False)
        texts = list(texts)
        for i, t in enumerate(texts):
            _check_chars(t, frozenset(charset), f"training text {i}")
        hf.train_from_iterator(texts, trainer)
        layout = {
            "format_version": FORMAT_VERSION, "charset": charset,
            "specials": [{"name": n, "token": t, "id": i, "mark": MARK_NAMES[m]}
                         for i, (n, t, m) in enumerate(_slots())],
            "text": {"start": N_SPECIAL_SLOTS, "stop": hf.get_vocab_size()},
            "units": {"start": hf.get_vocab_size(), "count": 0},
            "max_vocab_size": vocab_size,
        }
        tok = cls(hf, layout)
        return tok.with_units(n_units) if n_units else tok

    def with_units(self, n_units: int, artefact: str = "") -> Tokenizer:
        """The MoST transformation: a copy with `n_units` unit tokens on top; every existing id unchanged.

        `artefact` names the unit encoder that defines the ids (`minimost.speech.units`
        `UnitTokenizer.artefact_id`); it is saved in the layout so a checkpoint says which units it reads.
        """
        if not isinstance(n_units, int) or n_units <= 0:
            raise TokenizerError(f"n_units must be a positive integer, got {n_units!r}.")
        if self.n_units:
            if n_units == self.n_units and artefact in ("", self.unit_artefact):
                return self
            if n_units == self.n_units:
                raise TokenizerError(f"this tokenizer's units come from {self.unit_artefact!r}, not {artefact!r}.")
            raise TokenizerError(f"this tokenizer already has {self.n_units} unit tokens; with_units({n_units}) "
                                 "would change their meaning. Start from the text-only tokenizer.")
        if self.max_vocab_size is not None and self.vocab_size + n_units > self.max_vocab_size:
            raise TokenizerError(
                f"{self.vocab_size} ids + {n_units} units = {self.vocab_size + n_units} exceeds the "
                f"vocabulary budget {self.max_vocab_size}; train with unit_budget >= {n_units}.")
        layout = json.loads(json.dumps(self.layout))
        layout["units"] = {"start": self.text_stop, "count": n_units, "artefact": artefact}
        return Tokenizer(self.hf, layout)

    # ------------------------------------------------------------------ sizes and groups
    @property
    def vocab_size(self) -> int:
        return self.unit_start + self.n_units

    @property
    def n_text(self) -> int:
        return self.text_stop - self.text_start

    def special(self, name: str) -> int:
        """Id of a declared special token ("bos", "eos", "pad", "boa", "eoa", "user", "asr", ...)."""
        if name not in self._special:
            names = [s["name"] for s in self.layout["specials"] if not s["name"].startswith("reserved")]
            raise TokenizerError(f"unknown special token {name!r}; declared: {', '.join(names)}.")
        return self._special[name]

    @property
    def pad_id(self) -> int:
        return self.special("pad")

    def groups(self) -> list[tuple[str, int, int, int]]:
        """(name, start, stop, mark) for every declared id range; together they tile [0, vocab_size)."""
        out = [(f"special:{s['name']}", s["id"], s["id"] + 1, _MARK_BY_NAME[s["mark"]])
               for s in self.layout["specials"]]
        out.append(("text", self.text_start, self.text_stop, TEXT))
        if self.n_units:
            out.append(("units", self.unit_start, self.unit_start + self.n_units, AUDIO))
        return sorted(out, key=lambda g: g[1])

    def check(self) -> None:
        """Assert the layout: groups disjoint, covering [0, V), specials as declared in the BPE file."""
        pos = 0
        for name, start, stop, mark in self.groups():
            if start != pos:
                raise TokenizerError(f"id layout broken at {name}: starts at {start}, expected {pos} "
                                     "(groups must be disjoint and cover the vocabulary).")
            if stop <= start or mark not in MARK_NAMES:
                raise TokenizerError(f"id layout broken at {name}: empty range or unknown mark {mark}.")
            pos = stop
        if pos != self.vocab_size:
            raise TokenizerError(f"id groups cover {pos} ids, vocab_size is {self.vocab_size}.")
        if self.unit_start != self.text_stop:
            raise TokenizerError("unit ids must start right after the text ids.")
        for s in self.layout["specials"]:
            if self.hf.token_to_id(s["token"]) != s["id"]:
                raise TokenizerError(f"special token {s['token']} has id {self.hf.token_to_id(s['token'])} in "
                                     f"the BPE file but {s['id']} in the layout: mismatched tokenizer files.")
        if self.hf.get_vocab_size() != self.text_stop:
            raise TokenizerError(f"the BPE file has {self.hf.get_vocab_size()} ids, the layout says "
                                 f"text ends at {self.text_stop}: mismatched tokenizer files.")

    def kind(self, i: int) -> str:
        """'text', 'unit', 'special:<name>', or 'out of range'."""
        if self.text_start <= i < self.text_stop:
            return "text"
        if self.unit_start <= i < self.vocab_size:
            return "unit"
        for s in self.layout["specials"]:
            if s["id"] == i:
                return f"special:{s['name']}"
        return "out of range"

    # ------------------------------------------------------------------ text
    def encode_text(self, text: str) -> list[int]:
        """Text -> BPE ids. Only characters of `charset`; canonical text (single spaces, no leading
        or trailing space) round-trips exactly through `decode_text`."""
        _check_chars(text, self._chars, "text")
        return self.hf.encode(text, add_special_tokens=False).ids if text else []

    def decode_text(self, ids: Sequence[int], skip_special: bool = False) -> str:
        """BPE ids -> text. Special and unit ids raise, unless `skip_special` drops them."""
        ids = _as_list(ids)
        bad = [i for i in ids if not self.text_start <= i < self.text_stop]
        if bad and not skip_special:
            raise TokenizerError(f"decode_text got non-text ids {bad[:5]} ({', '.join(self.kind(i) for i in bad[:5])}); "
                                 "use decode() for mixed sequences or skip_special=True to drop them.")
        return self.hf.decode([i for i in ids if self.text_start <= i < self.text_stop], skip_special_tokens=False)

    # ------------------------------------------------------------------ units
    def encode_units(self, units: Sequence[int]) -> list[int]:
        """Deduplicated unit ids (0 <= u < n_units) -> token ids."""
        units = _as_list(units)
        if not self.n_units:
            raise TokenizerError("this tokenizer has no unit tokens (text only); use tok.with_units(n_units).")
        bad = [u for u in units if not (isinstance(u, int) and 0 <= u < self.n_units)]
        if bad:
            raise TokenizerError(f"unit ids {bad[:5]} are out of range for this tokenizer's {self.n_units} units "
                                 f"(valid: 0..{self.n_units - 1}); were these units made with a different "
                                 "codebook size?")
        return [self.unit_start + u for u in units]

    def decode_units(self, ids: Sequence[int]) -> list[int]:
        """Unit token ids -> unit ids. Any other id raises."""
        ids = _as_list(ids)
        bad = [i for i in ids if not self.unit_start <= i < self.vocab_size]
        if bad:
            raise TokenizerError(f"decode_units got non-unit ids {bad[:5]} ({', '.join(self.kind(i) for i in bad[:5])}).")
        return [i - self.unit_start for i in ids]

    def encode_audio(self, units: Sequence[int]) -> list[int]:
        """<|begin_of_audio|> units <|end_of_audio|>."""
        return [self.special("boa")] + self.encode_units(units) + [self.special("eoa")]

    # ------------------------------------------------------------------ mixed sequences
    def token(self, i: int) -> str:
        """The printable piece of one id: '▁dog', '<|bos|>', '<|unit_12|>'."""
        if self.unit_start <= i < self.vocab_size:
            return unit_token(i - self.unit_start)
        if not 0 <= i < self.text_stop:
            raise TokenizerError(f"id {i} is out of range (vocab_size {self.vocab_size}).")
        return self.hf.id_to_token(i)

    def tokens(self, ids: Sequence[int]) -> list[str]:
        return [self.token(i) for i in _as_list(ids)]

    def decode(self, ids: Sequence[int]) -> str:
        """Any ids -> a readable string: text decoded, specials and units written as their tokens."""
        out, run = [], []
        for i in _as_list(ids):
            if self.text_start <= i < self.text_stop:
                run.append(i)
                continue
            if run:
                out.append(self.hf.decode(run, skip_special_tokens=False))
                run = []
            out.append(self.token(i))
        if run:
            out.append(self.hf.decode(run, skip_special_tokens=False))
        return "".join(out)

    # ------------------------------------------------------------------ modality marks
    def modality_map(self, vocab_size: int | None = None) -> torch.Tensor:
        """LongTensor (V,) id -> TEXT / AUDIO / SPECIAL from the declared groups; rows beyond the
        tokenizer up to a larger model `vocab_size` are SPECIAL (INTERFACES.md)."""
        size = self.vocab_size if vocab_size is None else vocab_size
        if size < self.vocab_size:
            raise TokenizerError(f"vocab_size={size} is smaller than the tokenizer's {self.vocab_size} ids.")
        out = torch.full((size,), SPECIAL, dtype=torch.long)
        for _, start, stop, mark in self.groups():
            out[start:stop] = mark
        return out

    def marks(self, ids) -> torch.Tensor:
        """Marks of `ids` (list or LongTensor of any shape), same shape; out-of-range ids raise."""
        t = torch.as_tensor(ids, dtype=torch.long)
        if t.numel() and (t.min() < 0 or t.max() >= self.vocab_size):
            raise TokenizerError(f"ids out of range 0..{self.vocab_size - 1}: min {int(t.min())}, max {int(t.max())}.")
        return self.modality_map()[t]

    # ------------------------------------------------------------------ files
    def save(self, directory: str | os.PathLike) -> Path:
        """Write tokenizer.json (the BPE, Hugging Face format) and minimost_tokenizer.json (layout)."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        self.hf.save(str(d / HF_FILE))
        tmp = d / (LAYOUT_FILE + ".tmp")
        tmp.write_text(json.dumps(self.layout, indent=2))
        os.replace(tmp, d / LAYOUT_FILE)
        return d

    @classmethod
    def load(cls, directory: str | os.PathLike) -> Tokenizer:
        from tokenizers import Tokenizer as HFTokenizer

        d = Path(directory)
        for f in (HF_FILE, LAYOUT_FILE):
            if not (d / f).is_file():
                raise FileNotFoundError(f"{d / f} is missing: expected a folder written by Tokenizer.save().")
        layout = json.loads((d / LAYOUT_FILE).read_text())
        if layout.get("format_version") != FORMAT_VERSION:
            raise TokenizerError(f"{d / LAYOUT_FILE}: format_version {layout.get('format_version')}, "
                                 f"this code reads {FORMAT_VERSION}.")
        return cls(HFTokenizer.from_file(str(d / HF_FILE)), layout)

    def __repr__(self) -> str:
        return (f"Tokenizer(vocab_size={self.vocab_size}: {N_SPECIAL_SLOTS} special slots, {self.n_text} text, "
                f"{self.n_units} units)")


def _slots() -> list[tuple[str, str, int]]:
    extra = [(f"reserved_{k}", f"<|reserved_{k}|>", SPECIAL) for k in range(N_SPECIAL_SLOTS - len(SPECIAL_TOKENS))]
    return list(SPECIAL_TOKENS) + extra


def _slot_tokens() -> list[str]:
    return [t for _, t, _ in _slots()]


def _as_list(ids) -> list[int]:
    if isinstance(ids, torch.Tensor):
        return ids.flatten().tolist()
    return [int(i) for i in ids]


def _check_chars(text: str, chars: frozenset, what: str) -> None:
    if not isinstance(text, str):
        raise TokenizerError(f"{what}: expected a string, got {type(text).__name__}.")
    bad = sorted(set(text) - chars)
    if bad:
        where = min(text.index(c) for c in bad)
        raise TokenizerError(
            f"{what} contains characters the tokenizer cannot encode: {', '.join(repr(c) for c in bad)} "
            f"(first at position {where}: {text[max(0, where - 15):where + 15]!r}). Allowed: "
            f"{''.join(sorted(chars))!r}; minimost.tokenizer.normalize_text() lowercases and cleans text.")
