"""Mini versions of the four spoken-LM benchmarks MoST reports (most-reference.md §8.3), as text.

Each item is a pair (right, wrong); a model scores both with its log-likelihood over the speech
units of the stimulus and is right when the right one scores higher: chance is 50 %. The speech kit
speaks both members of a pair with the same held-out voice, so the voice cannot decide.

- mini-sWUGGY (lexical): a real word of the world vs a non-word of the same length, built the way
  Wuggy builds them: the word is cut into consonant and vowel groups and one or two groups are
  replaced by groups of the same kind, position and length taken from real words, so the non-word
  is phonotactically plausible. It is never a word of the lexicon or of a list of common English
  words (`_ENGLISH`).
- mini-sBLIMP (syntactic): a grammatical sentence vs a minimally different ungrammatical one (one
  word substituted, or two adjacent words swapped), 10 phenomena, each pair labelled.
- mini-sStoryCloze: a 4-sentence context, the right 5th sentence vs a wrong one that swaps one
  detail for another of the same kind (plausible ending, contradicts the context).
- mini-tStoryCloze: the same contexts, the right ending vs the ending of a story on another topic
  (TWIST's construction: topic alone decides).

Every stimulus sentence is claimed for the test split in the world's `SplitRegistry` before any
training text is generated, so none of them is ever seen in training.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import TYPE_CHECKING

from minimost.data import lexicon as L

if TYPE_CHECKING:  # world.py imports this module; only type names come back
    from minimost.data.world import Grammar, SplitRegistry, WorldConfig

SBLIMP_PHENOMENA = ("subject_verb_agreement", "agreement_across_relative_clause", "determiner_noun_agreement",
                    "verb_form_after_do", "be_agreement", "transitivity", "reflexive_agreement",
                    "question_word_order", "tense_agreement", "article_form")

# Common English words outside the lexicon that a substitution could produce by accident.
_ENGLISH_WORDS = """
able about above act add age ago aid aim air all also am an and any ape apt arc are area arm army art
ask ate away axe baby back bad bake ball band bank bar bare bark base bat bath bay bead beak beam bean
bear beat been beef beer bell belt bench bend best bet bib big bill bin bind bit bite blow blue boar
board body boil bold bolt bone boot born boss both bow bowl boy brag bran bred brew brim bud bug bun
burn bush bust busy but buy buzz cab cage calf call calm came camp can cane cap cape care cart case
cash cast cell cent chat chin chip chop cite city clap claw clay clip clot club clue coal coat cod code
coil cold come cone cook cool cop cope copy cord core cost cot cozy crew crop crow cub cue cure curl cut
dad dam damp dare date dawn dead deal dear debt deck deed deep den desk dial dice did die diet dig dim
dine dip dirt dish dive dock does dome done doom dose dot dove down doze drag draw drip drop drum dual
due dug dull dumb dump dune dusk dust duty each ear earn ease east echo edge eel else end epic even
ever evil exit eye face fact fade fail fair fall fame fan far fare farm fast fat fate fax fear feat fed
fee feel feet fell felt fern few fig file fill film find fine fir fire firm fist fit five flag flap
flat flaw flea fled flew flip flit flog flow foam foe fog foil fold folk fond font food fool foot
ford fore form fort foul four fowl free frog from fuel full fume fun fund fur fuse fuss gain gale game
gang gap gas gate gave gaze gear gem get gift gin girl give glad glow glue goal god goes gold golf gone
gown grab gram gray grew grid grin grip grow gulf gum gun gut guy had hail hair half hall halt ham hand
hang hare harm has hat hate haul have hay head heal heap heat heel held hell helm help hem her herb
herd here hero hide high hike hill him hint hip hire his hit hive hold hole holy home hood hook hope
horn hose host hot hour how hub hue hug huge hull hum hung hunt hurt hut ice icy idea idle inch ink inn
ion iron is isle it item jab jam jar jaw jazz jet job jog join joke jolt joy jug jump junk jury just
keen keep kept key kick kid kill kin kind king kiss kit knee knew knit knob knot know lab lace lack lad
lady laid lake lamb lame lamp land lane lap lard last late lawn law lay lazy leaf leak lean leap left
leg lend lens lent less let lid lie life lift like lime limp line link lint lion lip list load loaf
loan lock loft log lone long look loop lord lose loss lost lot loud love low luck lump lung lure lush
mad made maid mail main make male mall malt mane many mare mash mass mast mat mate maze meal mean meat
melt memo men mend menu mere mesh mess met mice mild mile milk mill mind mine mint miss mist mitt moan
moat mob mode mold mole mom monk mood moon moor mop more moss most moth move mow much mud mug mule
must mute nail name nap navy near neat neck need nest net new news next nice nine nod none noon norm
nose not note noun now nun nut oak oar oath odd off oil old once one only onto open oral oven over owe
own pace pack pad page paid pail pain pair pale palm pane park part pass past pat path pave paw pay
peak peal peel peer pest pet pick pier pile pill pine pink pint pipe pit pity plan plot plow plug plus
poem poet pole poll pond pool poor pop pore pork port pose post pour pray prey prod prop pub puck pull
pump pun pup pure push put quit quiz race rack raft rag rage raid rail rain ram ran rang rank rare rash
rat rate raw ray real rear red reef reel rely rent rest rib rice rich rid ride rim ring riot ripe rise
risk road roam roar rob robe rock rod rode role roll roof rook room root rope rose rot rub rug rule rum
run rung rush rust sack safe sag said sail sake sale salt same sand sane sang sank sap save saw say
scan scar seal seam seat see seed seek seem seen self sell send sent set sew shed shin ship shop shot
show shut sick side sigh sign silk sill sin sing sink sip sir sit site six size skid skin skip sky slab
slam slap sled slid slim slip slit slot slow slug snap snow soak soap sock soda sofa soft soil sold
sole some son song soon sore sort soul soup sour sow spa span spin spit spot spun spur stab star stay
stem step stew stir stop such suit sum sun sung sunk sure swan swap sway swim tab tack tag tail take
tale talk tall tame tan tank tap tape tar task team teen tell ten tend tent term test text than that
them then they thin this thus tick tide tidy tie tile till tilt time tin tiny tip tire toad toe told
toll tone too took tool top tore torn toss tour town toy trap tray tree trim trip trot tub tube tuck
tune turn tusk twig twin two type ugly unit upon urge use vain van vase vast veil vein vent verb very
vest vet view vine visa void vote wade wag wage wail wait wake walk wall wand want war ward warm warn
wash wasp wave wax way weak wear web wed weed week weep well went were west wet what when whip who
why wide wife wig wild will wilt win wine wing wink wipe wire wise wish wit woke wolf won wood wool
word wore work worm worn wrap yam yard yarn year yell yes yet yolk you zero zip zone zoom bin din fin
gin kin pin sin tin win ban can fan man pan tan van ben den hen men pen ten bun fun gun nun pun run sun
bet get jet let met net pet set vet wet bog cog dog fog hog jog log bat cat eat fat hat mat pat rat sat
vat bid hid kid lid rid bud cud mud bog bug dug hug jug lug mug rug tug cot dot got hot jot lot not
pot rot tot sod god nod pod rod cod bed fed led red wed bib fib jib rib sib dab cab jab lab nab tab
"""
_ENGLISH = set(_ENGLISH_WORDS.split())

_VOWELS = "aeiouy"


def segments(word: str) -> list[str]:
    """Alternating consonant / vowel letter groups; a word-initial y is a consonant."""
    parts = re.findall(r"[aeiouy]+|[^aeiouy]+", word)
    if parts and parts[0].startswith("y") and len(parts[0]) > 1 and parts[0][1] in "aeiou":
        parts = ["y", parts[0][1:]] + parts[1:]
    return parts


def _slot(parts: list[str], i: int) -> tuple[str, str, int]:
    """(kind, position, length) of segment i: kind C/V, position initial/medial/final."""
    kind = "V" if parts[i][0] in _VOWELS and not (i == 0 and parts[i] == "y") else "C"
    pos = "initial" if i == 0 else ("final" if i == len(parts) - 1 else "medial")
    return kind, pos, len(parts[i])


def segment_inventory(words: list[str]) -> dict[tuple[str, str, int], Counter]:
    """How often each letter group fills each (kind, position, length) slot in real words."""
    inv: dict[tuple[str, str, int], Counter] = {}
    for w in words:
        parts = segments(w)
        for i, seg in enumerate(parts):
            inv.setdefault(_slot(parts, i), Counter())[seg] += 1
    return inv


def all_lexicon_words() -> list[str]:
    """Every word any world could use (to keep non-words away from real ones)."""
    out = {n for n, _ in L.NAMES} | set(L.DRINKS) | set(L.COLORS) | set(L.ADVERBS) | set(L.NUMBER_WORDS)
    for x in L.ANIMALS:
        out.update(x[:2])
    for f in L.FOODS:
        out.update(w for w in f[:2] if w)
    for o in L.OBJECTS:
        out.update(o)
    out.update(p for p, _ in L.PLACES)
    for j, does in L.JOBS:
        out.add(j)
        out.update((does or "").split())
    for pair in L.OPPOSITES:
        out.update(pair)
    for lst in (L.PERSON_ADJECTIVES, L.ANIMAL_ADJECTIVES, L.OBJECT_ADJECTIVES, L.FOOD_ADJECTIVES):
        out.update(lst)
    for v in L.TRANSITIVE_VERBS + L.INTRANSITIVE_VERBS:
        out.update(v[:3])
    return sorted(out)


def make_nonword(word: str, inv, known: set[str], rng) -> str | None:
    """A Wuggy-style non-word for `word` (same letter count, same segment structure), or None."""
    parts = segments(word)
    n_swap = 1 if len(parts) <= 2 else 2
    for _ in range(30):
        idx = sorted(rng.sample(range(len(parts)), min(n_swap, len(parts))))
        new = list(parts)
        for i in idx:
            options = inv.get(_slot(parts, i), Counter())
            choices = sorted(seg for seg in options if seg != parts[i])
            if not choices:
                break
            new[i] = rng.choices(choices, weights=[options[c] for c in choices])[0]
        cand = "".join(new)
        if (cand != word and len(cand) == len(word) and cand not in known and segments(cand) == new
                and re.search(r"[aeiouy]", cand)):
            return cand
    return None


def make_swuggy(cfg: WorldConfig, g: Grammar) -> list[dict]:
    """mini-sWUGGY rows {id, word, nonword, length}: content words of the world, 3+ letters.

    Candidates are drawn twice over; `generate_world` keeps those whose word occurs in the train text.
    """
    from minimost.data.world import rng_for

    rng = rng_for(cfg.seed, "swuggy")
    content = sorted({w for x in g.animals for w in x[:2]} | {w for f in g.foods for w in f[:2] if w}
                     | {w for o in g.objects for w in o} | set(L.COLORS) | set(L.PERSON_ADJECTIVES)
                     | set(L.OBJECT_ADJECTIVES) | {w for v in g.verbs_t + g.verbs_i for w in v[:3]})
    content = [w for w in content if len(w) >= 3]
    lexicon = all_lexicon_words()
    inv = segment_inventory(lexicon)
    known = set(lexicon) | _ENGLISH
    rng.shuffle(content)
    rows, used = [], set()
    for w in content:
        if len(rows) >= 2 * cfg.n_swuggy:
            break
        nw = make_nonword(w, inv, known | used, rng)
        if nw is None:
            continue
        used.add(nw)
        rows.append({"id": f"swuggy-{len(rows):05d}", "word": w, "nonword": nw, "length": len(w)})
    return rows


# --------------------------------------------------------------------------------------------
# sBLIMP
# --------------------------------------------------------------------------------------------

def _swap_number(verb: tuple, number: str) -> str:
    return verb[0] if number == "sg" else verb[1]


def sblimp_pair(g: Grammar, rng, phenomenon: str) -> tuple[str, str]:
    """(grammatical, ungrammatical) for one phenomenon; they differ in one word or one adjacent swap."""
    from minimost.data.world import a, article

    if phenomenon == "subject_verb_agreement":
        v = rng.choice(g.verbs_i + g.verbs_t)
        s = g.subject_for(rng, v)
        obj = " " + g.obj_np(rng, v[4]).text if len(v) > 4 else ""
        return (f"{s.text} {g.present(v, s.number)}{obj}.", f"{s.text} {_swap_number(v, s.number)}{obj}.")
    if phenomenon == "agreement_across_relative_clause":
        number = rng.choice(("sg", "pl"))
        other = "pl" if number == "sg" else "sg"
        head = g.np(rng, "animal", number, det="the", adjective=False)
        tv = rng.choice([v for v in g.verbs_t if "animal" in v[4] and g.subject_ok(v, head)] or
                        [v for v in g.verbs_t if "animal" in v[4]])
        obj = g.np(rng, "animal", other, det="the", adjective=False)
        iv = rng.choice([v for v in g.verbs_i if g.subject_ok(v, head)] or g.verbs_i[:2])
        stem = f"{head.text} that {g.present(tv, number)} {obj.text}"
        return f"{stem} {g.present(iv, number)}.", f"{stem} {_swap_number(iv, number)}."
    if phenomenon == "determiner_noun_agreement":
        number = rng.choice(("sg", "pl"))
        det = rng.choice(("this", "that") if number == "sg" else ("these", "those"))
        wrong = {"this": "these", "that": "those", "these": "this", "those": "that"}[det]
        cls = rng.choice(("animal", "object"))
        s = g.np(rng, cls, number, det=det, adjective=False)
        noun = s.text.split(" ", 1)[1]
        adj = rng.choice(L.ANIMAL_ADJECTIVES if cls == "animal" else L.OBJECT_ADJECTIVES)
        be = "is" if number == "sg" else "are"
        return f"{det} {noun} {be} {adj}.", f"{wrong} {noun} {be} {adj}."
    if phenomenon == "verb_form_after_do":
        v = rng.choice(g.verbs_t)
        s = g.subject_for(rng, v, "sg")
        o = g.obj_np(rng, v[4]).text
        if rng.random() < 0.5:
            return f"{s.text} does not {v[0]} {o}.", f"{s.text} does not {v[1]} {o}."
        return f"does {s.text} {v[0]} {o}?", f"does {s.text} {v[1]} {o}?"
    if phenomenon == "be_agreement":
        if rng.random() < 0.6:
            s = g.np(rng, rng.choice(("animal", "object")), adjective=False)
            adj = rng.choice(L.OBJECT_ADJECTIVES[:10] + L.COLORS[:6])
            be, wrong = ("is", "are") if s.number == "sg" else ("are", "is")
            return f"{s.text} {be} {adj}.", f"{s.text} {wrong} {adj}."
        n = rng.randint(2, 5)
        s = g.np(rng, "animal", "pl", det=L.number_word(n), adjective=False)
        place = g.pp(rng)
        return f"there are {s.text} {place}.", f"there is {s.text} {place}."
    if phenomenon == "transitivity":
        v = rng.choice(g.verbs_t)
        s = g.subject_for(rng, v)
        o = g.obj_np(rng, v[4]).text
        iv = rng.choice([x for x in g.verbs_i if x[0] not in ("play", "climb", "run", "swim", "dream", "wave",
                                                              "sing", "dance", "walk", "jump", "hop")])
        return (f"{s.text} {g.present(v, s.number)} {o}.", f"{s.text} {g.present(iv, s.number)} {o}.")
    if phenomenon == "reflexive_agreement":
        v = rng.choice([v for v in g.verbs_t if v[0] in L.REFLEXIVE_VERBS])
        n = g.name(rng)
        right, wrong = ("herself", "himself") if g.gender[n] == "f" else ("himself", "herself")
        verb = rng.choice((v[1], v[2]))
        return f"{n} {verb} {right}.", f"{n} {verb} {wrong}."
    if phenomenon == "question_word_order":
        n = g.name(rng)
        if rng.random() < 0.5:
            v = rng.choice([v for v in g.verbs_t if v[3] in ("person", "animate")])
            aux = rng.choice(("does", "did"))
            return f"what {aux} {n} {v[0]}?", f"what {n} {aux} {v[0]}?"
        return f"where is {n}?", f"where {n} is?"
    if phenomenon == "tense_agreement":
        v = rng.choice(g.verbs_t)
        s = g.subject_for(rng, v, "sg")
        o = g.obj_np(rng, v[4]).text
        when = rng.choice(("yesterday", "last week", "last night"))
        return f"{when} {s.text} {v[2]} {o}.", f"{when} {s.text} {v[1]} {o}."
    if phenomenon == "article_form":
        noun = rng.choice([x[0] for x in g.animals] + [o[0] for o in g.objects] + [f[0] for f in g.foods if f[1]])
        name = g.name(rng)
        verb = rng.choice(("has", "wants", "sees", "finds", "likes"))
        wrong = "a" if article(noun) == "an" else "an"
        return f"{name} {verb} {a(noun)}.", f"{name} {verb} {wrong} {noun}."
    raise ValueError(f"unknown sBLIMP phenomenon {phenomenon!r}; known: {', '.join(SBLIMP_PHENOMENA)}")


def make_sblimp(cfg: WorldConfig, g: Grammar, registry: SplitRegistry) -> list[dict]:
    """mini-sBLIMP rows {id, phenomenon, good, bad}: n_sblimp_per_phenomenon of each phenomenon."""
    from minimost.data.world import draw, rng_for

    rows = []
    for ph in SBLIMP_PHENOMENA:
        rng = rng_for(cfg.seed, f"sblimp:{ph}")

        def make(r, ph=ph):
            good, bad = sblimp_pair(g, r, ph)
            return [good, bad], {"phenomenon": ph, "good": good, "bad": bad}

        for row in draw(rng, cfg.n_sblimp_per_phenomenon, make, registry, "test", what=f"sBLIMP {ph} pairs"):
            rows.append({"id": f"sblimp-{len(rows):05d}", **row})
    return rows


# --------------------------------------------------------------------------------------------
# StoryCloze
# --------------------------------------------------------------------------------------------

def make_storycloze(cfg: WorldConfig, g: Grammar, registry: SplitRegistry) -> tuple[list[dict], list[dict]]:
    """(sStoryCloze rows, tStoryCloze rows), each {id, topic, context, good_ending, bad_ending}.

    Both sets share the stories and right endings (as in TWIST); they differ in the wrong ending.
    """
    from minimost.data.stories import make_story
    from minimost.data.world import draw, rng_for

    rng = rng_for(cfg.seed, "storycloze")

    def make(r):
        st = make_story(g, r)
        return st["sentences"] + [st["wrong_ending"]], st

    stories = draw(rng, cfg.n_storycloze, make, registry, "test", what="StoryCloze stories", shared=True)
    s_rows, t_rows = [], []
    for i, st in enumerate(stories):
        context, good = " ".join(st["sentences"][:4]), st["sentences"][4]
        s_rows.append({"id": f"sstorycloze-{i:05d}", "topic": st["topic"], "context": context,
                       "good_ending": good, "bad_ending": st["wrong_ending"]})
        others = [o for o in stories if o["topic"] != st["topic"]]
        foreign = rng.choice(others)["sentences"][4] if others else st["wrong_ending"]
        t_rows.append({"id": f"tstorycloze-{i:05d}", "topic": st["topic"], "context": context,
                       "good_ending": good, "bad_ending": foreign})
    return s_rows, t_rows
