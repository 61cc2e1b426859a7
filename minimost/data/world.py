"""The mini-world: a seeded, deterministic generator of everything minimost learns from and is tested on.

MoST trains on LibriHeavy, Common Voice, a text-LM mix and instruction data, and is evaluated on
sWUGGY, sBLIMP, spoken StoryCloze and spoken QA (most-reference.md §6, §8.3). None of that can be
fetched here, and a model of a few million parameters needs a world small enough to learn, so
minimost generates one (DESIGN.md §4):

- a closed vocabulary of common English words (`lexicon.py`): ~700 (micro), ~1 k (tiny),
  ~1.3 k (small) words;
- people with facts about them (age, job, home, food, pet, colour, best friend, belongings);
- templated sentences with real syntactic variety: declaratives, negation, yes/no and wh-questions,
  relative clauses, past and future, reflexives, coordination, demonstratives, `there is/are`,
  ditransitives and generic knowledge ("birds can fly"), all with subject-verb agreement;
- coherent 5-sentence stories on 14 topics (`stories.py`);
- question-answer pairs about the facts (short answers) and text instructions (answer, repeat,
  count, compare, describe, reverse, category, opposite, next number, colour) (`instructions.py`);
- the spoken-LM test sets (`spoken_lm.py`) and spoken QA.

This module holds the configuration, the split registry, people and facts, the sentence grammar
and `generate_world`, which runs the other generators in the order the splits need.

    from minimost.data.world import generate_world, world_config
    world = generate_world(world_config("tiny"))
    world.corpus["train"][0]        # {"id": ..., "text": ..., "kind": ..., "topic": ...}
    world.stats()

Splits. Every sentence belongs to exactly one split (train / valid / test): a `SplitRegistry` owns
each sentence string, and generation runs facts (train) -> test items -> valid items -> train, so
a held-out sentence can never be generated into training (a candidate already owned by another
split is rejected and redrawn). Held out are: corpus sentences, questions, instruction prompts and
every spoken-LM stimulus. Short answers ("apples", "seven") are labels, not sentences: they recur
across splits by design. Facts are always train: the QA questions about them are held out, which is
what spoken QA measures (knowledge read in text, asked in speech).

Determinism: every random choice comes from `random.Random` seeded with a string
(`f"{seed}:{part}"`), which Python hashes with SHA-512, and nothing iterates over a set, so the
same config gives the identical world in any process (a test runs it under two PYTHONHASHSEEDs).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import random
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from minimost.data import lexicon as L

SPLITS = ("train", "valid", "test")
# The fixed instructions of the ASR and TTS examples (MoST's, lowercased: most-reference.md §6.1).
# They are world text: their words are in the vocabulary and the tokenizer learns them.
ASR_INSTRUCTION = "transcribe the following speech into text."
TTS_INSTRUCTION = "convert the following text into speech."
WORLD_VERSION = 1      # bump when the generator's output changes for the same config (cache key)


class WorldError(ValueError):
    """A world cannot be generated as configured; the message says what to change."""


# --------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class WorldConfig:
    """Sizes of one mini-world. Counts are totals over all splits unless the name says otherwise."""

    seed: int = 0
    # lexicon subsets (the first n of each list in lexicon.py: the most common words)
    n_people: int = 48
    n_animals: int = 36
    n_foods: int = 36
    n_objects: int = 80
    n_places: int = 24
    n_jobs: int = 24
    # text
    n_sentences: int = 20000         # single templated sentences (text-LM corpus)
    n_stories: int = 2000            # 5-sentence stories (text-LM corpus)
    n_instructions: int = 6000       # text instructions that are not QA
    valid_frac: float = 0.05         # of sentences, stories and instructions
    test_frac: float = 0.05
    qa_valid_frac: float = 0.1       # of (person, relation) questions
    qa_test_frac: float = 0.3        # these become spoken QA (and text QA test)
    # spoken-LM test sets (pairs)
    n_swuggy: int = 300
    n_sblimp_per_phenomenon: int = 40
    n_storycloze: int = 200          # each for sStoryCloze and tStoryCloze
    # speech: how many utterances the speech kit renders (train voices; held-out voices for tests)
    n_speech_train: int = 4000       # train sentences spoken for ASR/TTS
    n_speech_valid: int = 200
    n_speech_test: int = 300
    n_speech_instruct: int = 2000    # train instructions spoken for speech instruction tuning
    n_speech_stories: int = 1000     # train stories spoken whole for the speech-only LM (speech_lm)

    def __post_init__(self):
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name.endswith("_frac"):
                if not 0 <= value < 0.5:
                    raise WorldError(f"{f.name}={value}: expected a fraction in [0, 0.5).")
            elif f.name != "seed" and (not isinstance(value, int) or value < 0):
                raise WorldError(f"{f.name}={value!r}: expected a non-negative integer.")
        limits = {"n_people": len(L.NAMES), "n_animals": len(L.ANIMALS), "n_foods": len(L.FOODS),
                  "n_objects": len(L.OBJECTS), "n_places": len(L.PLACES), "n_jobs": len(L.JOBS)}
        for name, most in limits.items():
            if not 4 <= getattr(self, name) <= most:
                raise WorldError(f"{name}={getattr(self, name)}: expected 4..{most} (the lexicon's size).")
        if self.valid_frac + self.test_frac >= 0.5:
            raise WorldError("valid_frac + test_frac must stay below 0.5.")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def fingerprint(self) -> str:
        """SHA-256 of the config and WORLD_VERSION (part of the data cache key)."""
        blob = json.dumps({"world": self.to_dict(), "version": WORLD_VERSION}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()


# Sizes per preset (DESIGN.md §6): micro for unit tests (under a second), tiny for the CPU course,
# small for one GPU. `most` uses the small world: the world is a teaching device, not a corpus.
_WORLD_PRESETS: dict[str, dict[str, Any]] = {
    "micro": dict(n_people=12, n_animals=12, n_foods=12, n_objects=16, n_places=8, n_jobs=8,
                  n_sentences=1500, n_stories=150, n_instructions=600, valid_frac=0.1, test_frac=0.1,
                  n_swuggy=40, n_sblimp_per_phenomenon=6, n_storycloze=20,
                  n_speech_train=200, n_speech_valid=20, n_speech_test=20, n_speech_instruct=100,
                  n_speech_stories=10),
    "tiny": dict(),
    "small": dict(n_people=96, n_animals=len(L.ANIMALS), n_foods=len(L.FOODS), n_objects=len(L.OBJECTS),
                  n_places=len(L.PLACES), n_jobs=len(L.JOBS), n_sentences=200000, n_stories=20000,
                  n_instructions=50000, n_swuggy=600, n_sblimp_per_phenomenon=100, n_storycloze=1000,
                  n_speech_train=40000, n_speech_valid=1000, n_speech_test=1000, n_speech_instruct=20000,
                  n_speech_stories=10000),
}
_WORLD_PRESETS["most"] = _WORLD_PRESETS["small"]


def world_config(preset: str = "tiny", **overrides: Any) -> WorldConfig:
    """The `WorldConfig` of a preset (`micro`, `tiny`, `small`, `most`), with optional overrides."""
    if preset not in _WORLD_PRESETS:
        raise WorldError(f"unknown preset {preset!r}; available: {', '.join(_WORLD_PRESETS)}.")
    return WorldConfig(**(_WORLD_PRESETS[preset] | overrides))


# --------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------

def rng_for(seed: int, part: str) -> random.Random:
    """An independent, process-stable random stream per generator part (str seeds use SHA-512)."""
    return random.Random(f"minimost-world:{seed}:{part}")


def article(phrase: str) -> str:
    """'a' or 'an' for a phrase of this world (no word starts with a silent h or a 'you' sound)."""
    return "an" if phrase[0] in "aeiou" else "a"


def a(phrase: str) -> str:
    return f"{article(phrase)} {phrase}"


def words_of(text: str) -> list[str]:
    """The words of a world text, without punctuation."""
    return re.findall(r"[a-z]+", text)


_SENTENCE_END = re.compile(r"(?<=[.?])\s+")


def split_sentences(text: str) -> list[str]:
    """Sentences of a world text. Exact: the world has no abbreviations or decimal points."""
    return [s for s in _SENTENCE_END.split(text.strip()) if s]


class SplitRegistry:
    """Which split owns each sentence string. A sentence owned by one split is refused to the others."""

    def __init__(self) -> None:
        self.owner: dict[str, str] = {}
        self.refused = Counter()

    def free(self, sentences: list[str], split: str, unique: bool = True) -> bool:
        """True if every sentence may go to `split` (unowned, or owned by it and `unique` is False)."""
        for s in sentences:
            owner = self.owner.get(s)
            if owner is not None and (owner != split or unique):
                return False
        return True

    def claim(self, sentences: list[str], split: str, unique: bool = True) -> bool:
        """Give all sentences to `split` if `free(...)`; returns whether it did."""
        if len(set(sentences)) != len(sentences) and unique:
            return False
        if not self.free(sentences, split, unique):
            self.refused[split] += 1
            return False
        for s in sentences:
            self.owner[s] = split
        return True


def draw(rng: random.Random, n: int, make, registry: SplitRegistry, split: str, *,
         what: str, shared: bool = False, max_tries_per_item: int = 50) -> list:
    """Call `make(rng) -> (sentences, row)` until `n` rows whose sentences `split` could claim.

    `shared=False`: every sentence is new (single-sentence documents, prompts). `shared=True`: a
    sentence may recur in several rows of the same split (story openings such as "it was the
    birthday of anna."), but never in another split, and no two rows have the same sentences.
    """
    rows, tries, seen = [], 0, set()
    while len(rows) < n:
        tries += 1
        if tries > max_tries_per_item * max(n, 10):
            raise WorldError(f"could only make {len(rows)} of {n} unique {what} for split {split!r}: the world "
                             "is too small for that many; lower the count or raise the lexicon sizes.")
        sentences, row = make(rng)
        key = tuple(sentences)
        if key in seen:
            continue
        if registry.claim(sentences, split, unique=not shared):
            seen.add(key)
            rows.append(row)
    return rows


def split_counts(n: int, valid_frac: float, test_frac: float) -> dict[str, int]:
    """How many of n items go to each split (at least one held-out item when n > 0 and frac > 0)."""
    n_valid = max(1, round(n * valid_frac)) if valid_frac > 0 and n else 0
    n_test = max(1, round(n * test_frac)) if test_frac > 0 and n else 0
    return {"train": n - n_valid - n_test, "valid": n_valid, "test": n_test}


# --------------------------------------------------------------------------------------------
# Entities and facts
# --------------------------------------------------------------------------------------------

@dataclass
class Person:
    name: str
    gender: str           # "f" | "m"
    age: int
    job: str
    home: str             # "on a farm"
    food: str             # what they like, as said: "apples", "bread"
    pet_color: str
    pet: str              # animal, singular
    color: str            # favourite colour
    friend: str = ""      # best friend's name (a pairing: friendship is mutual)
    n_things: int = 2
    things: str = ""      # plural object: "anna has three kites"

    @property
    def he(self) -> str:
        return "she" if self.gender == "f" else "he"

    @property
    def his(self) -> str:
        return "her" if self.gender == "f" else "his"



# relation -> (statement templates, question templates, answer template). Statements are the
# text the model reads (always train); questions are asked in QA (train, or held out for QA eval).
RELATIONS: dict[str, tuple[tuple[str, ...], tuple[str, ...], str]] = {
    "age": (("{p} is {age} years old.", "{p} is a person of {age} years."),
            ("how old is {p}?", "what is the age of {p}?"), "{age}"),
    "job": (("{p} is {a_job}.", "{p} works as {a_job}."),
            ("what is the job of {p}?", "what does {p} do for work?"), "{a_job}"),
    "home": (("the home of {p} is {home}.", "{p} has a home {home}."),
             ("where is the home of {p}?", "where does {p} have a home?"), "{home}"),
    "food": (("{p} likes {food}.", "the favorite food of {p} is {food}."),
             ("what food does {p} like?", "what is the favorite food of {p}?"), "{food}"),
    "pet": (("{p} has {a_pet}.", "the pet of {p} is {a_pet}."),
            ("what pet does {p} have?", "what animal does {p} have as a pet?"), "{a_pet}"),
    "pet_color": ((), ("what color is the {pet} of {p}?",), "{pet_color}"),
    "color": (("the favorite color of {p} is {color}.", "{p} loves the color {color}."),
              ("what is the favorite color of {p}?", "which color does {p} love?"), "{color}"),
    "friend": (("the best friend of {p} is {friend}.", "{p} and {friend} are best friends."),
               ("who is the best friend of {p}?",), "{friend}"),
    "things": (("{p} has {n_things} {things}.",),
               ("how many {things} does {p} have?",), "{n_things}"),
    "owner": ((), ("who has {a_pet}?",), "{p}"),     # asked only when the pet is unique
}


def person_slots(p: Person) -> dict[str, str]:
    pet = f"{p.pet_color} {p.pet}"
    return {"p": p.name, "age": L.number_word(p.age), "a_job": a(p.job), "job": p.job, "home": p.home,
            "food": p.food, "a_pet": a(pet), "pet": p.pet, "pet_color": p.pet_color, "color": p.color,
            "friend": p.friend, "n_things": L.number_word(p.n_things), "things": p.things}


# --------------------------------------------------------------------------------------------
# Grammar: noun phrases, verbs, sentence kinds
# --------------------------------------------------------------------------------------------

@dataclass
class NP:
    """A noun phrase: its text, grammatical number ('sg'/'pl') and semantic class."""
    text: str
    number: str
    cls: str
    head: str = ""


ABILITIES = ("fly", "swim", "climb", "jump", "run", "sing")
FAMILY = ("mother", "father", "sister", "brother", "grandmother", "grandfather", "aunt", "uncle",
          "neighbor", "cousin")


class Grammar:
    """The world's lexicon subset plus one generator per sentence kind (each returns one sentence)."""

    def __init__(self, cfg: WorldConfig, people: list[Person]):
        self.cfg = cfg
        self.people = people
        self.names = [p.name for p in people]
        self.gender = {p.name: p.gender for p in people}
        self.animals = L.ANIMALS[:cfg.n_animals]
        self.foods = L.FOODS[:cfg.n_foods]
        self.objects = L.OBJECTS[:cfg.n_objects]
        self.places = L.PLACES[:cfg.n_places]
        self.jobs = L.JOBS[:cfg.n_jobs]
        obj_words = {o[0] for o in self.objects}
        self.toys = [o for o in self.objects if o[0] in L.TOYS] or list(self.objects[:3])
        self.containers = [o for o in self.objects if o[0] in L.CONTAINERS] or list(self.objects[:3])
        self.verbs_t = [v for v in L.TRANSITIVE_VERBS if self._has_objects(v[4], obj_words)]
        self.verbs_i = list(L.INTRANSITIVE_VERBS)
        self.can = {s: set(abilities) for s, _, _, _, abilities in self.animals}
        self.kinds = {
            "intransitive": self.s_intransitive, "transitive": self.s_transitive,
            "copula_adjective": self.s_copula_adjective, "location": self.s_location,
            "there_is": self.s_there_is, "negation": self.s_negation,
            "yes_no_question": self.s_yes_no_question, "wh_question": self.s_wh_question,
            "relative_clause": self.s_relative_clause, "past": self.s_past, "future": self.s_future,
            "reflexive": self.s_reflexive, "coordination": self.s_coordination,
            "demonstrative": self.s_demonstrative, "ditransitive": self.s_ditransitive,
            "generic": self.s_generic,
        }

    @staticmethod
    def _has_objects(classes: tuple[str, ...], obj_words: set[str]) -> bool:
        """Can this world fill the verb's object? (kick/throw need a toy, open needs a container)."""
        if any(c not in ("toy", "container") for c in classes):
            return True
        return any(w in obj_words for w in (L.TOYS if "toy" in classes else L.CONTAINERS))

    # ------------------------------------------------------------------ noun phrases
    def name(self, rng: random.Random) -> str:
        return rng.choice(self.names)

    def np(self, rng: random.Random, cls: str, number: str | None = None, det: str | None = None,
           adjective: bool | None = None) -> NP:
        """A noun phrase of class person / animal / object / toy / container / food / drink."""
        number = number or rng.choice(("sg", "sg", "pl"))
        if cls == "animate":
            cls = rng.choice(("person", "animal"))
        if cls == "person":
            r = rng.random()
            if number == "sg":
                if r < 0.75:
                    return NP(self.name(rng), "sg", "person", "")
                job = rng.choice(self.jobs)[0]
                d = det or rng.choice(("the", "the", "a", "this", "that"))
                return NP(f"{article(job) if d == 'a' else d} {job}", "sg", "person", job)
            if r < 0.6:
                x, y = rng.sample(self.names, 2)
                return NP(f"{x} and {y}", "pl", "person", "")
            job = rng.choice(self.jobs)[0]
            return NP(f"{det or rng.choice(('the', 'these', 'those', 'some'))} {job}s", "pl", "person", job)
        if cls in ("drink",):
            d = rng.choice(L.DRINKS)
            return NP(f"{det or rng.choice(('the', 'some', 'this', 'my'))} {d}", "sg", "drink", d)
        if cls == "food":
            f = rng.choice(self.foods)
            if f[1] is None:   # mass noun: singular agreement, no a/an
                adj = rng.choice(L.FOOD_ADJECTIVES) + " " if self._adjective(rng, adjective, 0.3) else ""
                return NP(f"{det or rng.choice(('the', 'some', 'this', 'that'))} {adj}{f[0]}", "sg", "food", f[0])
            pool = (self.foods, L.FOOD_ADJECTIVES)
        elif cls == "animal":
            pool = (self.animals, L.ANIMAL_ADJECTIVES + L.COLORS[:8])
        elif cls in ("object", "toy", "container"):
            items = {"object": self.objects, "toy": self.toys, "container": self.containers}[cls]
            pool = (items, L.OBJECT_ADJECTIVES + L.COLORS)
        else:
            raise WorldError(f"unknown noun class {cls!r}")
        item = rng.choice([i for i in pool[0] if i[1] is not None])     # countable: has a plural
        noun = item[0] if number == "sg" else item[1]
        adj = rng.choice(pool[1]) + " " if self._adjective(rng, adjective, 0.35) else ""
        if number == "sg":
            d = det or rng.choice(("the", "the", "a", "this", "that", "my", "his", "her", "their"))
            if d == "a":
                d = article(adj + noun)
        else:
            d = det or rng.choice(("the", "the", "these", "those", "some", "my", "two", "three", "four", ""))
        return NP(f"{d} {adj}{noun}".strip(), number, cls if cls != "toy" and cls != "container" else "object",
                  item[0])

    @staticmethod
    def _adjective(rng: random.Random, wanted: bool | None, p: float) -> bool:
        """Whether an NP gets an adjective: as asked, or with probability p when None."""
        return wanted if wanted is not None else rng.random() < p

    def obj_np(self, rng: random.Random, classes: tuple[str, ...], **kw) -> NP:
        cls = rng.choice(classes)
        if cls == "person":
            return NP(self.name(rng), "sg", "person")
        return self.np(rng, cls, **kw)

    # ------------------------------------------------------------------ verbs
    @staticmethod
    def present(verb: tuple, number: str) -> str:
        return verb[1] if number == "sg" else verb[0]

    def subject_ok(self, verb: tuple, subj: NP) -> bool:
        want = verb[3]
        if want == "animate":
            ok = subj.cls in ("person", "animal")
        else:
            ok = subj.cls == want
        if ok and subj.cls == "animal" and verb[0] in ABILITIES:
            ok = verb[0] in self.can.get(subj.head, ())
        return ok

    def subject_for(self, rng: random.Random, verb: tuple, number: str | None = None) -> NP:
        for _ in range(50):
            cls = verb[3] if verb[3] != "animate" else rng.choice(("person", "animal"))
            subj = self.np(rng, cls, number)
            if self.subject_ok(verb, subj):
                return subj
        return NP(self.name(rng), "sg", "person")

    def pp(self, rng: random.Random) -> str:
        place, prep = rng.choice(self.places)
        return f"{prep} the {place}"

    # ------------------------------------------------------------------ sentence kinds
    def s_intransitive(self, rng):
        v = rng.choice(self.verbs_i)
        s = self.subject_for(rng, v)
        tail = rng.choice(("", " " + rng.choice(L.ADVERBS[:10]), " " + self.pp(rng)))
        return f"{s.text} {self.present(v, s.number)}{tail}."

    def s_transitive(self, rng):
        v = rng.choice(self.verbs_t)
        s = self.subject_for(rng, v)
        o = self.obj_np(rng, v[4])
        tail = " " + self.pp(rng) if rng.random() < 0.3 else ""
        return f"{s.text} {self.present(v, s.number)} {o.text}{tail}."

    def s_copula_adjective(self, rng):
        cls = rng.choice(("person", "animal", "object", "food"))
        s = self.np(rng, cls, adjective=False)
        adj = rng.choice({"person": L.PERSON_ADJECTIVES, "animal": L.ANIMAL_ADJECTIVES,
                          "object": L.OBJECT_ADJECTIVES + L.COLORS, "food": L.FOOD_ADJECTIVES}[cls])
        very = "very " if rng.random() < 0.2 else ""
        return f"{s.text} {'is' if s.number == 'sg' else 'are'} {very}{adj}."

    def s_location(self, rng):
        s = self.np(rng, rng.choice(("person", "animal", "object")))
        return f"{s.text} {'is' if s.number == 'sg' else 'are'} {self.pp(rng)}."

    def s_there_is(self, rng):
        cls = rng.choice(("animal", "object"))
        n = rng.choice((1, 1, 2, 3, 4, 5))
        if n == 1:
            s = self.np(rng, cls, "sg", det="a")
            return f"there is {s.text} {self.pp(rng)}."
        s = self.np(rng, cls, "pl", det=L.number_word(n))
        return f"there are {s.text} {self.pp(rng)}."

    def s_negation(self, rng):
        r = rng.random()
        if r < 0.5:
            v = rng.choice(self.verbs_t)
            s = self.subject_for(rng, v)
            o = self.obj_np(rng, v[4])
            aux = rng.choice(("does", "did")) if s.number == "sg" else rng.choice(("do", "did"))
            return f"{s.text} {aux} not {v[0]} {o.text}."
        if r < 0.75:
            v = rng.choice(self.verbs_i)
            s = self.subject_for(rng, v)
            return f"{s.text} {'does' if s.number == 'sg' else 'do'} not {v[0]}."
        s = self.np(rng, "person")
        adj = rng.choice(L.PERSON_ADJECTIVES)
        return f"{s.text} {'is' if s.number == 'sg' else 'are'} not {adj}."

    def s_yes_no_question(self, rng):
        r = rng.random()
        if r < 0.45:
            v = rng.choice(self.verbs_t)
            s = self.subject_for(rng, v)
            o = self.obj_np(rng, v[4])
            aux = rng.choice(("does", "did")) if s.number == "sg" else rng.choice(("do", "did"))
            return f"{aux} {s.text} {v[0]} {o.text}?"
        if r < 0.7:
            s = self.np(rng, "animal")
            return f"{'is' if s.number == 'sg' else 'are'} {s.text} {rng.choice(L.ANIMAL_ADJECTIVES)}?"
        if r < 0.85:
            s = self.np(rng, "object")
            return f"{'is' if s.number == 'sg' else 'are'} {s.text} {self.pp(rng)}?"
        animal = rng.choice(self.animals)
        return f"can {a(animal[0])} {rng.choice(ABILITIES[:5])}?"

    def s_wh_question(self, rng):
        r = rng.random()
        if r < 0.35:
            v = rng.choice(self.verbs_t)
            s = self.subject_for(rng, v)
            return f"what {'does' if s.number == 'sg' else 'do'} {s.text} {v[0]}?"
        if r < 0.6:
            s = self.np(rng, rng.choice(("animal", "object")))
            return f"where {'is' if s.number == 'sg' else 'are'} {s.text}?"
        if r < 0.85:
            v = rng.choice([v for v in self.verbs_t if v[3] in ("person", "animate")])
            o = self.obj_np(rng, v[4])
            return f"who {v[1]} {o.text}?"
        s = self.np(rng, "animal", "pl", det="")
        return f"how many {s.text} are {self.pp(rng)}?"

    def relative(self, rng, head: NP) -> str:
        """'that/who' + a clause agreeing with `head` (subject relative) or with its own subject."""
        rel = "who" if head.cls == "person" else "that"
        if head.cls != "object" and rng.random() < 0.6:   # subject relative: the dog that chases the cats
            candidates = [v for v in self.verbs_t if self.subject_ok(v, head)]
            v = rng.choice(candidates or self.verbs_t)
            o = self.obj_np(rng, v[4])
            return f"{rel} {self.present(v, head.number)} {o.text}"
        # object relative: the ball that anna kicks
        candidates = [v for v in self.verbs_t if head.cls in v[4] or (head.cls == "object" and
                                                                         ("object" in v[4]))]
        v = rng.choice(candidates or self.verbs_t)
        s = self.subject_for(rng, v)
        return f"that {s.text} {self.present(v, s.number)}"

    def s_relative_clause(self, rng):
        cls = rng.choice(("person", "animal", "object"))
        head = self.np(rng, cls, det=rng.choice(("the", "the", "this", None)) if cls != "person" else "the",
                       adjective=False)
        if cls == "person" and not head.head:           # names do not take relative clauses here
            head = self.np(rng, "person", head.number, det="the")
            if not head.head:
                head = NP(f"the {rng.choice(self.jobs)[0]}", "sg", "person", "job")
        clause = self.relative(rng, head)
        be = "is" if head.number == "sg" else "are"
        if cls == "person":
            rest = rng.choice((f"{be} {rng.choice(L.PERSON_ADJECTIVES)}",
                               f"{self.present(rng.choice(self.verbs_i[:8]), head.number)}"))
        elif cls == "animal":
            v = rng.choice([v for v in self.verbs_i if v[3] != "person"])
            rest = rng.choice((f"{be} {rng.choice(L.ANIMAL_ADJECTIVES)}", f"{self.present(v, head.number)}"))
        else:
            rest = rng.choice((f"{be} {rng.choice(L.OBJECT_ADJECTIVES + L.COLORS)}", f"{be} {self.pp(rng)}"))
        return f"{head.text} {clause} {rest}."

    def s_past(self, rng):
        v = rng.choice(self.verbs_t)
        s = self.subject_for(rng, v)
        o = self.obj_np(rng, v[4])
        when = rng.choice(("yesterday", "last week", "this morning", "last night"))
        if rng.random() < 0.5:
            return f"{when} {s.text} {v[2]} {o.text}."
        return f"{s.text} {v[2]} {o.text} {when}."

    def s_future(self, rng):
        v = rng.choice(self.verbs_t + self.verbs_i)
        s = self.subject_for(rng, v)
        o = " " + self.obj_np(rng, v[4]).text if len(v) > 4 else ""   # transitive verbs carry object classes
        return f"tomorrow {s.text} will {v[0]}{o}."

    def s_reflexive(self, rng):
        v = rng.choice([v for v in self.verbs_t if v[0] in L.REFLEXIVE_VERBS])
        if rng.random() < 0.75:
            n = self.name(rng)
            pron = "herself" if self.gender[n] == "f" else "himself"
            verb = v[1] if rng.random() < 0.6 else v[2]
            tail = rng.choice(("", " in the mirror", " " + self.pp(rng)))
            return f"{n} {verb} {pron}{tail}."
        x, y = rng.sample(self.names, 2)
        return f"{x} and {y} {v[0]} themselves in the mirror."

    def s_coordination(self, rng):
        first = self.s_intransitive(rng)[:-1] if rng.random() < 0.5 else self.s_transitive(rng)[:-1]
        second = self.s_intransitive(rng)[:-1]
        return f"{first} {rng.choice(('and', 'but'))} {second}."

    def s_demonstrative(self, rng):
        cls = rng.choice(("animal", "object"))
        number = rng.choice(("sg", "pl"))
        det = rng.choice(("this", "that") if number == "sg" else ("these", "those"))
        s = self.np(rng, cls, number, det=det, adjective=False)
        adj = rng.choice(L.ANIMAL_ADJECTIVES if cls == "animal" else L.OBJECT_ADJECTIVES + L.COLORS)
        return f"{s.text} {'is' if number == 'sg' else 'are'} {adj}."

    def s_ditransitive(self, rng):
        x, y = rng.sample(self.names, 2)
        o = self.np(rng, rng.choice(("object", "food")), "sg", det=rng.choice(("a", "the", "his", "her", "my")))
        verb = rng.choice(("gives", "gave", "shows", "showed", "sends", "sent", "brings", "brought"))
        return f"{x} {verb} {y} {o.text}."

    def s_generic(self, rng):
        r = rng.random()
        animal = rng.choice(self.animals)
        sg, pl, size, legs, abilities = animal
        if r < 0.25 and abilities:
            return f"{pl} can {rng.choice(abilities)}."
        if r < 0.35:
            missing = [x for x in ABILITIES[:4] if x not in abilities]
            if missing:
                return f"{pl} can not {rng.choice(missing)}."
        if r < 0.5:
            return f"{a(sg)} has {L.number_word(legs)} legs." if legs else f"{a(sg)} has no legs."
        if r < 0.7:
            other = rng.choice([x for x in self.animals if abs(x[2] - size) >= 3] or [animal])
            if other is not animal:
                big, small = (animal, other) if size > other[2] else (other, animal)
                return rng.choice((f"{a(big[0])} is bigger than {a(small[0])}.",
                                   f"{a(small[0])} is smaller than {a(big[0])}."))
        if r < 0.85:
            colored = [f for f in self.foods if f[2]]
            if colored:
                f = rng.choice(colored)
                return f"{f[1] or f[0]} {'are' if f[1] else 'is'} {f[2]}."
        job, does = rng.choice([j for j in self.jobs if j[1]] or [("baker", "makes bread")])
        return f"{a(job)} {does}."


SENTENCE_KINDS = ("intransitive", "transitive", "copula_adjective", "location", "there_is", "negation",
                  "yes_no_question", "wh_question", "relative_clause", "past", "future", "reflexive",
                  "coordination", "demonstrative", "ditransitive", "generic")


# --------------------------------------------------------------------------------------------
# People
# --------------------------------------------------------------------------------------------

def make_people(cfg: WorldConfig) -> list[Person]:
    """n_people people with one value per relation; best friends are mutual pairs."""
    rng = rng_for(cfg.seed, "people")
    names = list(L.NAMES[:cfg.n_people])
    animals = [x[0] for x in L.ANIMALS[:cfg.n_animals] if x[2] <= 8 or x[0] in ("horse", "pony")]
    foods = [f[1] or f[0] for f in L.FOODS[:cfg.n_foods]]
    things = [o[1] for o in L.OBJECTS[:cfg.n_objects]]
    people = []
    for name, gender in names:
        people.append(Person(
            name=name, gender=gender, age=rng.randint(6, 89), job=rng.choice(L.JOBS[:cfg.n_jobs])[0],
            home=" ".join(rng.choice(L.HOMES)), food=rng.choice(foods), pet_color=rng.choice(L.COLORS[:10]),
            pet=rng.choice(animals), color=rng.choice(L.COLORS), n_things=rng.randint(2, 9),
            things=rng.choice(things)))
    order = list(range(len(people)))
    rng.shuffle(order)
    for i in range(0, len(order) - 1, 2):
        x, y = people[order[i]], people[order[i + 1]]
        x.friend, y.friend = y.name, x.name
    if len(order) % 2:   # odd one out befriends the first pair's first member (not mutual)
        people[order[-1]].friend = people[order[0]].name
    return people


def make_facts(people: list[Person]) -> list[dict]:
    """One row per (person, relation) with every statement of it (all go to the train text)."""
    facts = []
    for p in people:
        slots = person_slots(p)
        for rel, (statements, _, answer) in RELATIONS.items():
            if not statements:
                continue
            facts.append({"id": f"fact-{p.name}-{rel}", "person": p.name, "relation": rel,
                          "answer": answer.format(**slots),
                          "statements": [t.format(**slots) for t in statements]})
    return facts


def profile(p: Person, rng: random.Random) -> str:
    """A short paragraph about one person, with pronouns (a text-LM document; all train)."""
    s = person_slots(p)
    parts = [f"{p.name} is {s['age']} years old.", f"{p.he} is {s['a_job']}.",
             f"the home of {p.name} is {p.home}.", f"{p.he} likes {p.food}.",
             f"{p.he} has {s['a_pet']}.", f"the favorite color of {p.name} is {p.color}.",
             f"the best friend of {p.name} is {p.friend}.", f"{p.name} has {s['n_things']} {p.things}."]
    head, rest = parts[0], parts[1:]
    rng.shuffle(rest)
    return " ".join([head] + rest[:rng.randint(3, len(rest))])


# --------------------------------------------------------------------------------------------
# The world
# --------------------------------------------------------------------------------------------

@dataclass
class World:
    """Everything generated from one `WorldConfig`. Rows are plain dicts (they go straight to Arrow)."""

    config: WorldConfig
    people: list[Person]
    facts: list[dict]
    corpus: dict[str, list[dict]]          # split -> {id, text, kind, topic}: the text-LM documents
    qa: dict[str, list[dict]]              # split -> {id, question, answer, person, relation, fact_id}
    instructions: dict[str, list[dict]]    # split -> {id, prompt, answer, kind}; train includes QA
    swuggy: list[dict] = field(default_factory=list)
    sblimp: list[dict] = field(default_factory=list)
    sstorycloze: list[dict] = field(default_factory=list)
    tstorycloze: list[dict] = field(default_factory=list)
    registry: SplitRegistry | None = None

    @property
    def spoken_qa(self) -> list[dict]:
        """Held-out questions about facts stated in the train text (rendered with held-out voices)."""
        return self.qa["test"]

    def texts(self) -> list[str]:
        """Every text of the world (all splits; not sWUGGY non-words): defines the vocabulary."""
        out = [d["text"] for rows in self.corpus.values() for d in rows]
        out += [t for f in self.facts for t in f["statements"]]
        out += [x for rows in self.qa.values() for r in rows for x in (r["question"], r["answer"])]
        out += [x for rows in self.instructions.values() for r in rows for x in (r["prompt"], r["answer"])]
        out += [r["good"] for r in self.sblimp]
        for r in self.sstorycloze + self.tstorycloze:
            out += [r["context"], r["good_ending"], r["bad_ending"]]
        out += [r["word"] for r in self.swuggy] + [ASR_INSTRUCTION, TTS_INSTRUCTION]
        return out

    @property
    def vocabulary(self) -> list[str]:
        """The closed word list of this world (sorted)."""
        return sorted({w for t in self.texts() for w in words_of(t)})

    def sentences_by_split(self) -> dict[str, set[str]]:
        """Every held-out-able sentence per split: corpus sentences, questions, prompts, stimuli."""
        out: dict[str, set[str]] = {s: set() for s in SPLITS}
        for split in SPLITS:
            for d in self.corpus[split]:
                out[split].update(split_sentences(d["text"]))
            out[split].update(r["question"] for r in self.qa[split])
            out[split].update(r["prompt"] for r in self.instructions[split])
        out["train"].update(t for f in self.facts for t in f["statements"])
        for r in self.sblimp:
            out["test"].add(r["good"])
        for r in self.sstorycloze + self.tstorycloze:
            out["test"].update(split_sentences(r["context"]) + [r["good_ending"], r["bad_ending"]])
        return out

    def stats(self) -> dict[str, Any]:
        corpus_words = {s: sum(len(words_of(d["text"])) for d in rows) for s, rows in self.corpus.items()}
        return {
            "vocabulary": len(self.vocabulary), "people": len(self.people), "facts": len(self.facts),
            "corpus_docs": {s: len(v) for s, v in self.corpus.items()}, "corpus_words": corpus_words,
            "corpus_kinds": dict(sorted(Counter(d["kind"] for d in self.corpus["train"]).items())),
            "qa": {s: len(v) for s, v in self.qa.items()},
            "instructions": {s: len(v) for s, v in self.instructions.items()},
            "swuggy": len(self.swuggy), "sblimp": len(self.sblimp), "sstorycloze": len(self.sstorycloze),
            "tstorycloze": len(self.tstorycloze), "spoken_qa": len(self.spoken_qa),
            "refused_candidates": dict(self.registry.refused) if self.registry else {},
        }


def generate_world(cfg: WorldConfig | None = None) -> World:
    """Generate the whole mini-world for `cfg` (deterministic: same config, identical world)."""
    # These modules build on this one's grammar and helpers, hence the import here.
    from minimost.data import spoken_lm
    from minimost.data.instructions import make_instruction, make_qa
    from minimost.data.stories import make_story

    cfg = cfg or WorldConfig()
    registry = SplitRegistry()
    people = make_people(cfg)
    g = Grammar(cfg, people)

    # 1. Facts are train text, claimed first: no held-out item can ever be a fact statement.
    facts = make_facts(people)
    for f in facts:
        registry.claim(f["statements"], "train", unique=False)

    # 2. Held-out material before train, so held-out sentences are never generated into training.
    qa = make_qa(cfg, people, registry)
    swuggy = spoken_lm.make_swuggy(cfg, g)
    sblimp = spoken_lm.make_sblimp(cfg, g, registry)
    sstory, tstory = spoken_lm.make_storycloze(cfg, g, registry)

    n_sent = split_counts(cfg.n_sentences, cfg.valid_frac, cfg.test_frac)
    n_story = split_counts(cfg.n_stories, cfg.valid_frac, cfg.test_frac)
    n_inst = split_counts(cfg.n_instructions, cfg.valid_frac, cfg.test_frac)
    corpus: dict[str, list[dict]] = {s: [] for s in SPLITS}
    instructions: dict[str, list[dict]] = {s: [] for s in SPLITS}
    for split in ("test", "valid", "train"):
        rng = rng_for(cfg.seed, f"corpus:{split}")

        def sentence(r, split=split):
            kind = r.choice(SENTENCE_KINDS)
            text = g.kinds[kind](r)
            return [text], {"text": text, "kind": kind, "topic": ""}

        def story(r, split=split):
            st = make_story(g, r)
            return st["sentences"], {"text": " ".join(st["sentences"]), "kind": "story", "topic": st["topic"]}

        def instruction(r, split=split):
            ins = make_instruction(g, r)
            return [ins["prompt"]], ins

        docs = draw(rng, n_sent[split], sentence, registry, split, what="sentences")
        docs += draw(rng, n_story[split], story, registry, split, what="stories", shared=True)
        for i, d in enumerate(docs):
            d["id"] = f"{split}-{d['kind']}-{i:06d}"
        corpus[split] = docs
        ins = draw(rng, n_inst[split], instruction, registry, split, what="instructions")
        # QA about facts is instruction data too ("answer"); valid/test QA stay in `qa` only.
        if split == "train":
            ins += [{"kind": "answer", "prompt": q["question"], "answer": q["answer"]} for q in qa["train"]]
        rng.shuffle(ins)
        instructions[split] = [{"id": f"{split}-inst-{i:06d}", **x} for i, x in enumerate(ins)]

    # 3. Facts enter the train corpus twice over: single statements and person profiles.
    rng = rng_for(cfg.seed, "facts")
    fact_docs = [{"text": t, "kind": "fact", "topic": f["relation"]} for f in facts for t in f["statements"]]
    fact_docs += [{"text": profile(p, rng), "kind": "profile", "topic": p.name} for p in people for _ in range(2)]
    for i, d in enumerate(fact_docs):
        d["id"] = f"train-{d['kind']}-{i:06d}"
    corpus["train"] = corpus["train"] + fact_docs
    rng.shuffle(corpus["train"])

    world = World(cfg, people, facts, corpus, qa, instructions, [], sblimp, sstory, tstory, registry)
    # 4. sWUGGY keeps words the model reads in training, paired with non-words outside the vocabulary.
    train_words = {w for d in corpus["train"] for w in words_of(d["text"])}
    vocabulary = set(world.vocabulary)
    kept = [r for r in swuggy if r["word"] in train_words and r["nonword"] not in vocabulary]
    if len(kept) < cfg.n_swuggy:
        raise WorldError(f"only {len(kept)} sWUGGY pairs are possible with this lexicon (n_swuggy="
                         f"{cfg.n_swuggy}); lower n_swuggy or raise the lexicon sizes.")
    world.swuggy = [{**r, "id": f"swuggy-{i:05d}"} for i, r in enumerate(kept[:cfg.n_swuggy])]
    return world


def world_digest(world: World) -> str:
    """SHA-256 of everything a world generated (determinism tests compare these)."""
    blob = json.dumps({"people": [dataclasses.asdict(p) for p in world.people], "facts": world.facts,
                       "corpus": world.corpus, "qa": world.qa, "instructions": world.instructions,
                       "swuggy": world.swuggy, "sblimp": world.sblimp, "s": world.sstorycloze,
                       "t": world.tstorycloze}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()
