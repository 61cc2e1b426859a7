"""Offline speech synthesis with espeak-ng: many voices, 16 kHz audio, phoneme and word timings.

minimost needs speech to learn from and nothing may be downloaded at run time, so the speech kit
makes its own: espeak-ng, a small formant synthesiser, whose library and voice data ship inside
the `espeakng-loader` wheel. We drive `libespeak-ng.so` directly with ctypes (no system package,
no subprocess) in synchronous mode: a callback receives the samples and the events that say
when each word and phoneme starts, so every clip comes with its own alignment.

    from minimost.speech.synth import synthesize, TRAIN_VOICES
    syn = synthesize("the cat sat on the mat", TRAIN_VOICES[0])
    syn.wav, syn.sample_rate, syn.phonemes[:3]     # float32 (samples,), 16000, [Segment(...)]

Speakers. A `Voice` is an espeak accent (a voice file such as `en-us` or `en-gb-x-rp`), a voice
variant (`m1`..`m8`, `f1`..`f5`, ...: formants, breathiness, pitch range), a pitch (0-99) and a
rate (words per minute). `VOICES` declares 32 of them, split once and for all into 24
`TRAIN_VOICES` and 8 `TEST_VOICES`; every test voice is an (accent, variant) pair never seen in
training, half with a variant that no training voice uses, half with an accent no training voice
uses, so "unseen voice" scores mean something.

Three espeak-ng behaviours this module guards against (see units-feasibility.md, "Gotchas"):
- A failed voice change returns an error code and silently keeps the previous voice, and an
  unknown variant (`en-us+zz`) is ignored without any error: names are validated against
  espeak's own lists and every return code is checked.
- State carries over between utterances (the same text gives slightly different audio after a
  different sentence, even after `espeak_Terminate` + `espeak_Initialize`: static variables such
  as the pitch-flutter phase live in the library), and `espeak_Initialize` seeds the breath-noise
  generator from the clock. So the library itself is reloaded before every utterance (a private
  copy, `dlclose` + `dlopen`, under 1 ms) and its noise seeded, which makes synthesis exactly
  reproducible: the same text, voice and seed give bit-identical samples, in any order, in any
  process, at any time.
- espeak-ng is not thread-safe: one engine per process, every call under a lock.

Audio is resampled from espeak's 22 050 Hz to 16 kHz in torch and peak-normalised to 0.95. espeak
itself renders at amplitude 50 (its default, 100, clips some voices at int16 full scale).

Timings are in **seconds**. Phoneme segments exclude pauses, so the gaps between segments are
silence; a word spans its first to its last phoneme. `phonemize(text)` is espeak's G2P on its
own (text → phonemes, no audio), the same labels as the timed phonemes: it gives CTC targets
for real corpora that only have transcripts.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import difflib
import hashlib
import os
import re
import shutil
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from minimost.speech.audio import SAMPLE_RATE, resample

SYNTH_VERSION = 1            # bump when anything here changes audio or timings (corpus cache key)
PEAK = 0.95                  # output peak after normalisation: loud, never clipped
ESPEAK_VOLUME = 50           # espeak amplitude 0-200; 100 (its default) reaches int16 full scale
PITCH_RANGE = 50             # espeak's intonation range 0-100 (its default)
PAUSE = "_"                  # label of espeak's pause "phonemes" (they carry no name)


class SynthesisError(RuntimeError):
    """espeak-ng failed (could not load, could not synthesise, produced no audio)."""


class VoiceError(ValueError):
    """An unknown or invalid voice; the message lists what is valid."""


# --------------------------------------------------------------------------------------------
# Voices
# --------------------------------------------------------------------------------------------

_NAME_RE = re.compile(r"^(?P<accent>[^+:]+)(?:\+(?P<variant>[^:]+))?(?::p(?P<pitch>\d+))?(?::r(?P<rate>\d+))?$")


@dataclass(frozen=True)
class Voice:
    """One synthetic speaker: espeak accent + variant, with a pitch and a speaking rate."""

    accent: str = "en-us"    # espeak voice file name (case-insensitive), e.g. "en-us", "en-gb-x-rp"
    variant: str = ""        # espeak variant file name from espeak-ng-data/voices/!v, "" for none
    pitch: int = 50          # base pitch, 0-99 (espeak -p); 50 is the voice's own pitch
    rate: int = 175          # speaking rate in words per minute, 80-450 (espeak -s)

    def __post_init__(self):
        # Range checks only: checking names needs the library, see `validate()`.
        if not isinstance(self.accent, str) or not self.accent or any(c in self.accent for c in "+: "):
            raise VoiceError(f"accent={self.accent!r}: expected an espeak voice name such as 'en-us'.")
        if not isinstance(self.variant, str) or any(c in self.variant for c in "+:"):
            raise VoiceError(f"variant={self.variant!r}: expected a variant name such as 'm3' or ''.")
        if not isinstance(self.pitch, int) or not 0 <= self.pitch <= 99:
            raise VoiceError(f"pitch={self.pitch!r}: expected an integer in 0..99.")
        if not isinstance(self.rate, int) or not 80 <= self.rate <= 450:
            raise VoiceError(f"rate={self.rate!r}: expected an integer in 80..450 (words per minute).")

    @property
    def espeak_name(self) -> str:
        """What espeak's SetVoiceByName takes: "en-us" or "en-us+m3"."""
        return f"{self.accent}+{self.variant}" if self.variant else self.accent

    @property
    def name(self) -> str:
        """A stable, parseable id, e.g. "en-us+m3:p50:r175" (the corpus `voice` column)."""
        return f"{self.espeak_name}:p{self.pitch}:r{self.rate}"

    @classmethod
    def parse(cls, name: str) -> Voice:
        """Inverse of `.name`; pitch and rate may be left out ("en-us+m3" = pitch 50, rate 175)."""
        m = _NAME_RE.match(name.strip()) if isinstance(name, str) else None
        if m is None:
            raise VoiceError(f"voice name {name!r}: expected 'accent[+variant][:pPITCH][:rRATE]', "
                             f"e.g. 'en-us+m3:p50:r175'.")
        return cls(m["accent"], m["variant"] or "", int(m["pitch"] or 50), int(m["rate"] or 175))

    def validate(self) -> Voice:
        """Check the accent and variant exist in espeak's data; raise VoiceError listing valid names."""
        accents, variants = available_accents(), available_variants()
        if self.accent.lower() not in accents:
            raise VoiceError(_unknown("espeak voice (accent)", self.accent, accents))
        if self.variant and self.variant not in variants:
            raise VoiceError(_unknown("espeak voice variant", self.variant, variants))
        return self


def _unknown(kind: str, name: str, valid: list[str]) -> str:
    close = difflib.get_close_matches(name, valid, n=4, cutoff=0.5)
    hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
    return f"unknown {kind} {name!r}.{hint} Valid names ({len(valid)}): {', '.join(valid)}."


def as_voice(voice: Voice | str) -> Voice:
    """A validated Voice from a Voice or its name."""
    return (voice if isinstance(voice, Voice) else Voice.parse(voice)).validate()


# The declared speaker set. Four accents with different espeak phoneme tables (American,
# Received Pronunciation, Scottish, Caribbean) times six variants make the 24 training voices;
# pitch and rate step through a Latin square, so no variant is tied to one pitch or rate.
TRAIN_ACCENTS = ("en-us", "en-gb-x-rp", "en-gb-scotland", "en-029")
TRAIN_VARIANTS = ("m1", "m3", "m5", "f1", "f2", "f4")
_PITCHES = (35, 50, 65)                 # espeak pitch steps
_RATES = (145, 165, 185, 205)           # words per minute
TRAIN_VOICES: tuple[Voice, ...] = tuple(
    Voice(accent, variant, _PITCHES[(i + a) % 3], _RATES[(i + 2 * a) % 4])
    for a, accent in enumerate(TRAIN_ACCENTS)
    for i, variant in enumerate(TRAIN_VARIANTS)
)
# Held out: every (accent, variant) pair is new. The first four use variants no training voice
# uses (m2, m4, m6, f3) on training accents; the last four use training variants on accents no
# training voice uses (New York City, and espeak's default British "en"). Pitches and rates sit
# between the training steps.
TEST_VOICES: tuple[Voice, ...] = (
    Voice("en-us", "m2", 55, 175),
    Voice("en-gb-x-rp", "f3", 45, 155),
    Voice("en-gb-scotland", "m4", 40, 195),
    Voice("en-029", "m6", 60, 170),
    Voice("en-us-nyc", "m3", 50, 160),
    Voice("en-us-nyc", "f1", 60, 190),
    Voice("en", "m1", 45, 180),
    Voice("en", "f4", 55, 150),
)
VOICES: tuple[Voice, ...] = TRAIN_VOICES + TEST_VOICES
DEFAULT_VOICE = Voice("en-us", "", 50, 175)


def get_voice(name: str) -> Voice:
    """The declared voice with this name (see `Voice.name`), or a validated ad-hoc one."""
    for v in VOICES:
        if v.name == name:
            return v
    return as_voice(name)


# --------------------------------------------------------------------------------------------
# The espeak-ng library through ctypes
# --------------------------------------------------------------------------------------------
# Constants from espeak-ng's speak_lib.h.
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INIT_PHONEME_EVENTS = 0x0001          # send a PHONEME event for every phoneme
_INIT_PHONEME_IPA = 0x0002             # ... named in IPA
_INIT_DONT_EXIT = 0x8000               # return an error instead of calling exit() on failure
_CHARS_UTF8 = 1
_EVENT_LIST_TERMINATED, _EVENT_WORD, _EVENT_PHONEME = 0, 1, 7
_PHONEMES_IPA = 0x02                   # espeak_TextToPhonemes: IPA instead of ASCII mnemonics
_G2P_SEP = "\x1f"                      # ASCII unit separator between phonemes in G2P output
_RATE, _VOLUME, _PITCH, _RANGE, _WORDGAP = 1, 2, 3, 4, 7     # espeak_PARAMETER


class _EventId(ctypes.Union):
    _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p), ("string", ctypes.c_char * 8)]


class _Event(ctypes.Structure):        # espeak_EVENT
    _fields_ = [("type", ctypes.c_int), ("unique_identifier", ctypes.c_uint),
                ("text_position", ctypes.c_int),   # 1-based, in characters
                ("length", ctypes.c_int),          # word length in characters
                ("audio_position", ctypes.c_int),  # milliseconds (rounded)
                ("sample", ctypes.c_int),          # exact sample index at espeak's rate
                ("user_data", ctypes.c_void_p), ("id", _EventId)]


class _VoiceInfo(ctypes.Structure):    # espeak_VOICE
    _fields_ = [("name", ctypes.c_char_p), ("languages", ctypes.c_char_p),
                ("identifier", ctypes.c_char_p), ("gender", ctypes.c_ubyte), ("age", ctypes.c_ubyte),
                ("variant", ctypes.c_ubyte), ("xx1", ctypes.c_ubyte), ("score", ctypes.c_int),
                ("spare", ctypes.c_void_p)]


_SynthCallback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int,
                                  ctypes.POINTER(_Event))


def _libc_srand(seed: int) -> None:
    # Nothing in Python or numpy uses libc's rand(), so reseeding it has no effect outside espeak.
    # Without a libc symbol table (e.g. Windows) only the speechPlayer voices stay unseeded.
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).srand(ctypes.c_uint(seed))


def _dlclose(handle: int) -> None:
    import _ctypes

    close = getattr(_ctypes, "dlclose", None) or getattr(_ctypes, "FreeLibrary", None)
    if close is not None:
        close(handle)


def _private_copy(lib: str) -> str:
    """A copy of the library that only minimost's engine loads (see `_Engine`), made once per user.

    It lives in the user's cache folder, named by a hash of the library, and is shared by all
    processes: dlopen counts handles per process, so other processes loading it do not matter.
    Without a writable home, a temporary folder for this process is used instead.
    """
    data = Path(lib).read_bytes()
    name = f"{hashlib.sha256(data).hexdigest()[:16]}-{Path(lib).name}"
    folder = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "minimost" / "espeak"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        folder = Path(tempfile.mkdtemp(prefix="minimost-espeak-"))
        owner = os.getpid()     # remove it at exit, in the process that made it (not forked children)
        atexit.register(lambda: os.getpid() == owner and shutil.rmtree(folder, ignore_errors=True))
    path = folder / name
    if not path.exists():
        tmp = folder / f".{name}.{os.getpid()}.tmp"
        tmp.write_bytes(data)
        os.replace(tmp, path)   # atomic: a concurrent process sees no copy or a whole one
    return str(path)


class _Engine:
    """The process's one espeak-ng: a private copy of the library, reloaded per utterance.

    A private copy of the library file makes sure nothing else in this process holds a handle to
    it (check-env, or another package, may load the wheel's own file), so `dlclose` really unloads
    it and the next `dlopen` starts from clean static state. All calls go through `self.lock`:
    espeak-ng keeps global state and is not thread-safe.
    """

    def __init__(self):
        import espeakng_loader

        self.lock = threading.Lock()
        self.data_path = str(espeakng_loader.get_data_path())
        self.lib_path = _private_copy(espeakng_loader.get_library_path())
        self.lib = None
        self.sample_rate = 0
        self._chunks: list[np.ndarray] = []
        self._events: list[tuple] = []
        self._callback = _SynthCallback(self._on_audio)   # keep a reference, ctypes does not
        self._load()
        info = ctypes.c_char_p()
        self.version = self.lib.espeak_Info(ctypes.byref(info)).decode()

    def _load(self) -> None:
        """(Re)load the library and initialise it: fresh static state for the next utterance."""
        if self.lib is not None:
            self.lib.espeak_Terminate()
            _dlclose(self.lib._handle)
        lib = ctypes.CDLL(self.lib_path)
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_Info.restype = ctypes.c_char_p
        lib.espeak_SetSynthCallback.argtypes = [_SynthCallback]
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_Synth.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
                                     ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
        lib.espeak_ListVoices.argtypes = [ctypes.POINTER(_VoiceInfo)]
        lib.espeak_ListVoices.restype = ctypes.POINTER(ctypes.POINTER(_VoiceInfo))
        lib.espeak_TextToPhonemes.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_int, ctypes.c_int]
        lib.espeak_TextToPhonemes.restype = ctypes.c_char_p
        lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
        flags = _INIT_PHONEME_EVENTS | _INIT_PHONEME_IPA | _INIT_DONT_EXIT
        rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, self.data_path.encode(), flags)
        if rate <= 0:
            raise SynthesisError(f"espeak_Initialize failed ({rate}) with data at {self.data_path}; "
                                 f"reinstall the espeakng-loader wheel.")
        lib.espeak_SetSynthCallback(self._callback)
        self.lib, self.sample_rate = lib, rate

    def _on_audio(self, wav, n, events) -> int:
        # Called by espeak (inside espeak_Synth, same thread) with a chunk of int16 samples and
        # a list of events terminated by type 0. Return 0 to continue.
        if n > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
        i = 0
        while events[i].type != _EVENT_LIST_TERMINATED:
            e = events[i]
            if e.type == _EVENT_WORD:
                self._events.append(("word", e.sample, e.text_position, e.length))
            elif e.type == _EVENT_PHONEME:
                self._events.append(("phoneme", e.sample, e.id.string.decode("utf-8", "replace")))
            i += 1
        return 0

    def _set_voice(self, voice: Voice) -> None:
        rc = self.lib.espeak_SetVoiceByName(voice.espeak_name.encode())
        if rc != 0:     # the previous voice would silently stay in place
            raise VoiceError(f"espeak refused voice {voice.espeak_name!r} (error {rc}).")
        # Every numeric parameter explicitly, so nothing depends on what ran before. (Punctuation
        # and capitals modes reject being set to their defaults with -1 in this build; a freshly
        # loaded library has them at their defaults anyway.)
        for param, value in ((_RATE, voice.rate), (_VOLUME, ESPEAK_VOLUME), (_PITCH, voice.pitch),
                             (_RANGE, PITCH_RANGE), (_WORDGAP, 0)):
            rc = self.lib.espeak_SetParameter(param, value, 0)
            if rc != 0:
                raise SynthesisError(f"espeak_SetParameter({param}, {value}) failed (error {rc}).")

    def synth(self, text: str, voice: Voice, seed: int = 0) -> tuple[np.ndarray, list[tuple]]:
        """int16 samples at `self.sample_rate` and the word/phoneme events, in output order."""
        with self.lock:
            self._load()
            # espeak_Initialize seeds espeak's noise generator (breathy variants such as f2, f3)
            # from the clock; the speechPlayer voices draw from libc's rand() when created.
            self.lib.espeak_ng_SetRandSeed(seed)
            _libc_srand(seed)
            self._set_voice(voice)
            self._chunks, self._events = [], []
            data = text.encode("utf-8") + b"\0"
            rc = self.lib.espeak_Synth(data, len(data), 0, 0, 0, _CHARS_UTF8, None, None)
            if rc != 0 or self.lib.espeak_Synchronize() != 0:
                raise SynthesisError(f"espeak_Synth failed (error {rc}) on {text[:60]!r}.")
            samples = np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.int16)
            return samples, self._events

    def text_to_phonemes(self, text: str, voice: Voice, ipa: bool) -> list[list[str]]:
        """Words of phonemes, from espeak's translator (one clause per call of the C function)."""
        with self.lock:
            self._set_voice(voice)        # required: with no voice set, the C call crashes
            buf = ctypes.create_string_buffer(text.encode("utf-8"))
            ptr = ctypes.c_void_p(ctypes.addressof(buf))
            mode = (_PHONEMES_IPA if ipa else 0) | (ord(_G2P_SEP) << 8)
            words = []
            while ptr.value:              # espeak advances ptr clause by clause, NULL at the end
                clause = self.lib.espeak_TextToPhonemes(ctypes.byref(ptr), _CHARS_UTF8, mode)
                # split(" "), not split(): str.split() also splits on the \x1f separator
                for word in (clause or b"").decode("utf-8", "replace").split(" "):
                    phones = [p for p in word.split(_G2P_SEP) if p]
                    if phones:
                        words.append(phones)
            return words

    def list_voices(self, variants: bool) -> list[str]:
        """Voice file names (lower-case) or variant file names, as espeak lists them."""
        with self.lock:
            spec = _VoiceInfo(languages=b"variant") if variants else None
            arr = self.lib.espeak_ListVoices(ctypes.byref(spec) if spec else None)
            names, i = set(), 0
            while arr[i]:
                ident = arr[i].contents.identifier.decode()
                if not ident.startswith("mb/"):            # mbrola voices need a missing binary
                    base = ident.rsplit("/", 1)[-1]
                    names.add(base if variants else base.lower())
                i += 1
            return sorted(names)


_engine: _Engine | None = None
_engine_lock = threading.Lock()


def engine() -> _Engine:
    """This process's espeak-ng engine (created on first use)."""
    global _engine
    with _engine_lock:
        if _engine is None:
            _engine = _Engine()
        return _engine


def _after_fork_in_child() -> None:
    # A lock held by another thread at fork time would stay locked forever in the child.
    global _engine_lock
    _engine_lock = threading.Lock()
    if _engine is not None:
        _engine.lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)

_lists: dict[bool, list[str]] = {}


def available_accents() -> list[str]:
    """espeak voice (accent/language) names that `Voice.accent` accepts, lower-case, sorted."""
    if False not in _lists:
        _lists[False] = engine().list_voices(variants=False)
    return _lists[False]


def available_variants() -> list[str]:
    """espeak voice variant names that `Voice.variant` accepts (case-sensitive), sorted."""
    if True not in _lists:
        _lists[True] = engine().list_voices(variants=True)
    return _lists[True]


def espeak_version() -> str:
    return engine().version


# --------------------------------------------------------------------------------------------
# Synthesis
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Segment:
    """A labelled stretch of audio; times in seconds from the start of the clip."""

    label: str
    start: float
    end: float


@dataclass
class Synthesis:
    """One synthesised utterance."""

    wav: np.ndarray               # (samples,) float32, peak PEAK, at sample_rate
    sample_rate: int              # Hz
    text: str
    voice: Voice
    phonemes: list[Segment]       # IPA phonemes in order, pauses left out (gaps are silence)
    words: list[Segment]          # words as spelled in `text`, first to last phoneme

    @property
    def duration(self) -> float:
        """Seconds."""
        return len(self.wav) / self.sample_rate


def synthesize(text: str, voice: Voice | str = DEFAULT_VOICE, sample_rate: int = SAMPLE_RATE,
               seed: int = 0) -> Synthesis:
    """Speak `text` with `voice`: mono float32 audio at `sample_rate` plus phoneme and word timings.

    Deterministic: the same text, voice and seed give bit-identical samples. The seed only moves
    the breath noise of breathy variants (f2, f3, f5, whisper, ...). Raises VoiceError for an
    unknown voice and SynthesisError when espeak produces no audio (e.g. only punctuation).
    """
    voice = as_voice(voice)
    if not isinstance(text, str) or not text.strip():
        raise SynthesisError(f"text={text!r}: expected a non-empty string to speak.")
    eng = engine()
    raw, events = eng.synth(text, voice, seed)
    if raw.size == 0 or not np.any(raw):
        raise SynthesisError(f"espeak produced no audio for {text!r} (voice {voice.name}).")
    wav = resample(raw.astype(np.float32) / 32768.0, eng.sample_rate, sample_rate)
    wav *= PEAK / float(np.abs(wav).max())
    phonemes, words = _timings(events, text, eng.sample_rate, len(wav) / sample_rate)
    return Synthesis(wav, sample_rate, text, voice, phonemes, words)


def _timings(events: list[tuple], text: str, rate: int, duration: float) -> tuple[list[Segment], list[Segment]]:
    """Phoneme and word segments (seconds) from espeak's events (sample positions at `rate`).

    A phoneme lasts until the next phoneme event (pauses included, then dropped), the last one
    until the end of the clip. A word spans its phonemes: those between its WORD event and the
    next one. Two espeak habits are folded back onto the words of `text`: a number expands to
    several WORD events inside one written token ("42" -> "forty" "two"), merged into one word;
    and a dictionary phrase gets one event for several words ("on the"), labelled with all of them.
    """
    phones: list[list] = []              # [label, start, end, word-event index]
    word_events: list[tuple[int, int, float]] = []   # (first char, end char, time)
    for ev in events:
        t = min(ev[1] / rate, duration)
        if ev[0] == "word":
            word_events.append((ev[2] - 1, ev[2] - 1 + ev[3], t))   # text_position is 1-based
        else:
            phones.append([ev[2] or PAUSE, t, duration, len(word_events) - 1])
    for this, nxt in zip(phones, phones[1:]):
        this[2] = max(this[1], nxt[1])
    phonemes = [Segment(label, s, e) for label, s, e, _ in phones if label != PAUSE]

    spans: list[list] = []               # [first char, end char, time, event indices]
    for k, (c0, c1, t) in enumerate(word_events):
        if spans and c0 < spans[-1][1]:  # inside the previous token: a number's next word
            spans[-1][1] = max(spans[-1][1], c1)
            spans[-1][3].append(k)
        else:
            spans.append([c0, c1, t, [k]])
    for this, nxt in zip(spans, spans[1:] + [[len(text)]]):
        if any(ch.isalnum() for ch in text[this[1]:nxt[0]]):   # words espeak spoke as one phrase
            this[1] = nxt[0]
    words = []
    for c0, c1, t, ks in spans:
        own = [(s, e) for label, s, e, k in phones if k in ks and label != PAUSE]
        start, end = (own[0][0], own[-1][1]) if own else (t, t)
        words.append(Segment(text[c0:c1].strip(), start, end))
    return phonemes, words


def phonemize(text: str, accent: Voice | str = "en-us", *, ipa: bool = True,
              word_sep: str | None = None) -> list[str]:
    """espeak's G2P: the phoneme sequence of `text` (no audio), e.g. for CTC targets.

    The labels are the ones `synthesize` times (IPA with stress marks attached to the vowel,
    "ˈæ"); `ipa=False` gives espeak's ASCII mnemonics instead. `word_sep`, if given, is inserted
    between words. `accent` is a voice or accent name; only its accent matters.
    """
    voice = as_voice(accent)
    words = engine().text_to_phonemes(text, Voice(voice.accent), ipa)
    out: list[str] = []
    for i, w in enumerate(words):
        if word_sep is not None and i:
            out.append(word_sep)
        out.extend(w)
    return out


def strip_stress(label: str) -> str:
    """A phoneme label without espeak's stress marks ("ˈæ" → "æ", "'a" → "a")."""
    return label.translate({ord(c): None for c in "ˈˌ',%="}) or label
