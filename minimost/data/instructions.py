"""Question answering about the facts, and text instructions (answer, repeat, count, compare, ...).

QA questions are split by (person, relation): a held-out question is never asked in training, in
text or in speech, while its fact is always stated in the train text (`world.make_facts`). That is
what spoken QA measures: knowledge read in text, asked in speech (DESIGN.md §4).
"""

from __future__ import annotations

import random
from collections import Counter

from minimost.data import lexicon as L
from minimost.data.world import (
    RELATIONS,
    SPLITS,
    Grammar,
    Person,
    SplitRegistry,
    WorldConfig,
    WorldError,
    a,
    person_slots,
    rng_for,
    split_counts,
)

INSTRUCTION_KINDS = ("repeat", "count", "compare", "describe", "reverse", "category", "opposite",
                     "next_number", "color")


def make_qa(cfg: WorldConfig, people: list[Person], registry: SplitRegistry) -> dict[str, list[dict]]:
    """QA pairs about the facts, split by (person, relation): held-out questions are never asked in training.

    Each (person, relation) goes to one split; its question is one of the relation's templates. The
    fact itself is stated in the train text whatever the question's split (`make_facts`).
    """
    rng = rng_for(cfg.seed, "qa")
    pets = Counter(f"{p.pet_color} {p.pet}" for p in people)
    items = []
    for p in people:
        slots = person_slots(p)
        for rel, (_, questions, answer) in RELATIONS.items():
            if rel == "owner" and pets[f"{p.pet_color} {p.pet}"] > 1:
                continue       # "who has a brown dog?" must have one answer
            items.append((p, rel, rng.choice(questions).format(**slots), answer.format(**slots)))
    rng.shuffle(items)
    counts = split_counts(len(items), cfg.qa_valid_frac, cfg.qa_test_frac)
    out: dict[str, list[dict]] = {s: [] for s in SPLITS}
    order = ("test", "valid", "train")
    start = {"test": 0, "valid": counts["test"], "train": counts["test"] + counts["valid"]}
    for split in order:
        for p, rel, question, answer in items[start[split]:start[split] + counts[split]]:
            if not registry.claim([question], split):
                continue       # the same question string already belongs to another split
            fact = "owner" if rel == "owner" else rel
            out[split].append({"id": f"qa-{p.name}-{rel}", "question": question, "answer": answer,
                               "person": p.name, "relation": rel,
                               "fact_id": f"fact-{p.name}-{'pet' if fact in ('owner', 'pet_color') else fact}"})
    return out




def make_instruction(g: Grammar, rng: random.Random, kind: str | None = None) -> dict:
    """One text instruction {kind, prompt, answer}. Answers are short; `describe` answers are sentences."""
    kind = kind or rng.choice(INSTRUCTION_KINDS)
    content = [x[0] for x in g.animals] + [o[0] for o in g.objects] + list(L.COLORS)
    if kind == "repeat":
        r = rng.random()
        if r < 0.5:
            ws = rng.sample(content, rng.randint(2, 4))
            return {"kind": kind, "prompt": f"repeat the words {' '.join(ws)}.", "answer": " ".join(ws)}
        w = rng.choice(content)
        times = rng.choice(("twice", "three times"))
        return {"kind": kind, "prompt": f"say the word {w} {times}.",
                "answer": " ".join([w] * (2 if times == "twice" else 3))}
    if kind == "count":
        r = rng.random()
        if r < 0.5:
            lo = rng.randint(1, 12)
            hi = lo + rng.randint(2, 5)
            return {"kind": kind, "prompt": f"count from {L.number_word(lo)} to {L.number_word(hi)}.",
                    "answer": " ".join(L.number_word(i) for i in range(lo, hi + 1))}
        cat, pool, other = rng.choice((("animals", [x[0] for x in g.animals], [o[0] for o in g.objects]),
                                       ("colors", list(L.COLORS), [x[0] for x in g.animals]),
                                       ("foods", [f[0] for f in g.foods], [o[0] for o in g.objects])))
        k = rng.randint(1, 4)
        items = rng.sample(pool, k) + rng.sample(other, rng.randint(1, 3))
        rng.shuffle(items)
        return {"kind": kind, "prompt": f"how many {cat} are in the list {', '.join(items)}?",
                "answer": L.number_word(k)}
    if kind == "compare":
        r = rng.random()
        if r < 0.4:
            x = rng.choice(g.animals)
            others = [y for y in g.animals if abs(y[2] - x[2]) >= 3]
            if others:
                y = rng.choice(others)
                word = rng.choice(("bigger", "smaller"))
                pair = [x, y]
                rng.shuffle(pair)
                win = max(pair, key=lambda t: t[2]) if word == "bigger" else min(pair, key=lambda t: t[2])
                return {"kind": kind, "prompt": f"which is {word}, {a(pair[0][0])} or {a(pair[1][0])}?",
                        "answer": a(win[0])}
        if r < 0.7:
            p, q = rng.sample(g.people, 2)
            if p.age != q.age:
                word = rng.choice(("older", "younger"))
                win = max((p, q), key=lambda t: t.age) if word == "older" else min((p, q), key=lambda t: t.age)
                return {"kind": kind, "prompt": f"who is {word}, {p.name} or {q.name}?", "answer": win.name}
        n, m = rng.sample(range(0, 20), 2)
        word = rng.choice(("bigger", "smaller"))
        win = max(n, m) if word == "bigger" else min(n, m)
        return {"kind": kind, "prompt": f"which number is {word}, {L.number_word(n)} or {L.number_word(m)}?",
                "answer": L.number_word(win)}
    if kind == "describe":
        if rng.random() < 0.6:
            p = rng.choice(g.people)
            s = person_slots(p)
            said = [f"is {s['age']} years old.", f"is {s['a_job']}.", f"likes {p.food}.", f"has {s['a_pet']}."]
            picked = rng.sample(said, 3)
            answer = " ".join(f"{p.name if i == 0 else p.he} {x}" for i, x in enumerate(picked))
            prompt = rng.choice((f"describe {p.name}.", f"tell me about {p.name}."))
            return {"kind": kind, "prompt": prompt, "answer": answer}
        sg, pl, size, legs, abilities = rng.choice(g.animals)
        parts = [f"{a(sg)} has {L.number_word(legs)} legs." if legs else f"{a(sg)} has no legs."]
        if abilities:
            parts.append(f"it can {rng.choice(abilities)}.")
        return {"kind": kind, "prompt": rng.choice((f"describe {a(sg)}.", f"tell me about {pl}.")),
                "answer": " ".join(parts)}
    if kind == "reverse":
        ws = rng.sample(content, rng.randint(2, 4))
        return {"kind": kind, "prompt": f"say the words {' '.join(ws)} in reverse order.",
                "answer": " ".join(reversed(ws))}
    if kind == "category":
        cat, pool, others = rng.choice((
            ("an animal", [x[0] for x in g.animals], [o[0] for o in g.objects] + [f[0] for f in g.foods]),
            ("a color", list(L.COLORS), [x[0] for x in g.animals] + [o[0] for o in g.objects]),
            ("a food", [f[0] for f in g.foods], [x[0] for x in g.animals] + [o[0] for o in g.objects])))
        right = rng.choice(pool)
        wrong = rng.sample(others, 2)
        opts = [right] + wrong
        rng.shuffle(opts)
        return {"kind": kind, "prompt": f"which word is {cat}, {opts[0]}, {opts[1]} or {opts[2]}?", "answer": right}
    if kind == "opposite":
        firsts = Counter(w for pair in L.OPPOSITES for w in pair)
        x, y = rng.choice(L.OPPOSITES)
        if rng.random() < 0.5:
            x, y = y, x
        if firsts[x] > 1:
            x, y = y, x
        return {"kind": kind, "prompt": f"what is the opposite of {x}?", "answer": y}
    if kind == "next_number":
        n = rng.randint(1, 18)
        if rng.random() < 0.5:
            return {"kind": kind, "prompt": f"what number comes after {L.number_word(n)}?",
                    "answer": L.number_word(n + 1)}
        return {"kind": kind, "prompt": f"what number comes before {L.number_word(n)}?",
                "answer": L.number_word(n - 1)}
    if kind == "color":
        colored = [f for f in g.foods if f[2]]
        f = rng.choice(colored)
        return {"kind": kind, "prompt": f"what color {'are' if f[1] else 'is'} {f[1] or f[0]}?", "answer": f[2]}
    raise WorldError(f"unknown instruction kind {kind!r}; kinds: {', '.join(INSTRUCTION_KINDS)}")
