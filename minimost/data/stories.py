"""Stories: 14 topics of coherent 5-sentence stories, each with a wrong ending for sStoryCloze.

Every sentence names a character (or two), so two stories rarely share a sentence; when they
would, the world's `SplitRegistry` refuses the one that would cross splits and a new story is drawn.
Stories never state the facts of `world.RELATIONS` (jobs, homes, pets of the protagonist), so they
never contradict the facts the QA asks about.
"""

from __future__ import annotations

import random

from minimost.data import lexicon as L
from minimost.data.world import FAMILY, Grammar, WorldError, a

STORY_TOPICS = ("lost_pet", "baking", "rainy_day", "beach_trip", "birthday", "garden", "snow_day",
                "market", "school_day", "fishing", "sick_day", "cooking", "broken_toy", "forest_walk")


def _story_places(g: Grammar) -> list[tuple[str, str]]:
    inside = [p for p in g.places if p[1] == "in"]
    return inside if len(inside) >= 3 else list(g.places)


def make_story(g: Grammar, rng: random.Random, topic: str | None = None) -> dict:
    """One story: {topic, sentences (5), wrong_ending} where the wrong ending contradicts the context.

    The wrong ending is the right ending with one detail swapped for another of the same kind that
    the context never mentions (another animal, colour, food, place, number): plausible as an
    ending of *some* story on this topic, wrong for this one (the sStoryCloze construction).
    """
    topic = topic or rng.choice(STORY_TOPICS)
    p, q = rng.sample(g.people, 2)
    P, Q, he, his = p.name, q.name, p.he, p.his
    fam = rng.choice(FAMILY)
    colors = rng.sample(L.COLORS[:10], 2)
    c, c2 = colors
    places = _story_places(g)

    def pick(options, k=2):
        return rng.sample(list(options), k)

    if topic == "lost_pet":
        A, A2 = pick([x[0] for x in g.animals if x[2] <= 6])
        (p1, pr1), (p2, pr2), (p3, pr3) = pick(places, 3)
        s = [f"{P} was looking after the {c} {A} of {his} {fam}.",
             rng.choice((f"one morning the {A} of {P} was gone.", f"one day the {A} ran away from {P}.")),
             f"{P} looked for the {A} {pr1} the {p1}.",
             f"then {P} asked {Q} to look {pr2} the {p2}.",
             f"at last {P} found the {A} {pr3} the {p3}."]
        wrong = f"at last {P} found the {A2} {pr3} the {p3}."
    elif topic == "baking":
        cake, cake2 = pick(("cake", "pie", "muffin", "pancake", "cookie"))
        fruit = rng.choice([f[1] for f in g.foods if f[1] and f[2]] or ["apples"])
        s = [f"{P} wanted to bake a {cake} for {Q}.",
             f"{P} bought {fruit} and butter at the market.",
             f"{P} mixed the {fruit} with sugar in a big bowl.",
             f"then {P} put the {cake} in the oven for {L.number_word(rng.randint(2, 6) * 10)} minutes.",
             f"soon the {cake} was ready and {Q} ate it happily."]
        wrong = f"soon the {cake2} was ready and {Q} ate it happily."
    elif topic == "rainy_day":
        toy = rng.choice(g.toys)[0]
        place = rng.choice(("park", "garden", "yard"))
        s = [f"it was raining all day, so {P} stayed inside.",
             f"{P} wanted to play in the {place} with {Q}.",
             f"instead {P} played with {his} {toy} in the {rng.choice(('kitchen', 'bedroom', 'attic'))}.",
             f"in the evening the rain stopped and {P} saw the sun.",
             f"{P} ran outside to play with {Q} in the {place}."]
        wrong = f"{P} took an umbrella because it was still raining on {Q}."
    elif topic == "beach_trip":
        food = rng.choice([f[1] or f[0] for f in g.foods])
        drink = rng.choice(L.DRINKS)
        s = [f"on a hot day {P} went to the beach with {his} {fam}.",
             f"{P} swam in the sea and built a castle of sand.",
             f"the {fam} of {P} brought {food} and {drink} for lunch.",
             f"after lunch {P} found {a(c + ' shell')} near the water.",
             f"{P} took the {c} shell home to show {Q}."]
        wrong = f"{P} took the {c2} shell home to show {Q}."
    elif topic == "birthday":
        X, X2 = pick([o[0] for o in g.objects])
        s = [f"it was the birthday of {P}.",
             f"the friends of {P} came to {his} house for a party.",
             f"{Q} gave {P} {a(c + ' ' + X)} as a gift.",
             f"{P} and {Q} ate cake and sang songs together.",
             f"{P} said thank you to {Q} for the {c} {X}."]
        wrong = f"{P} said thank you to {Q} for the {c} {X2}."
    elif topic == "garden":
        plants = [f for f in g.foods if f[1] and f[2]] or [("carrot", "carrots", "orange")]
        F, F2 = pick(plants) if len(plants) > 1 else (plants[0], ("bean", "beans", "green"))
        s = [f"{P} planted {F[0]} seeds in the garden in the spring.",
             f"every morning {P} gave the seeds water.",
             f"the sun was warm and the plants of {P} grew tall.",
             f"in the summer the {F[1]} of {P} were big and {F[2]}.",
             f"{P} picked the {F[1]} and shared them with {Q}."]
        wrong = f"{P} picked the {F2[1]} and shared them with {Q}."
    elif topic == "snow_day":
        X, X2 = pick(("hat", "scarf", "crown", "bucket", "carrot", "flag", "feather", "ribbon"))
        place = rng.choice(("yard", "garden", "park"))
        s = [f"one winter morning {P} saw snow outside the window.",
             f"{P} put on {a(c + ' coat')} and warm boots.",
             f"{P} made a big snowman in the {place} with {Q}.",
             f"{Q} put a {X} on the head of the snowman.",
             f"{P} and {Q} laughed at the snowman with the {X}."]
        wrong = f"{P} and {Q} laughed at the snowman with the {X2}."
    elif topic == "market":
        foods = [f for f in g.foods if f[1]]
        F, F2 = pick(foods)
        n = rng.randint(2, 9)
        seller = rng.choice(("farmer", "baker", "cook"))
        s = [f"{P} went to the market to buy {F[1]}.",
             f"at the market {P} met {Q}.",
             f"{P} asked a {seller} for {L.number_word(n)} {F[1]}.",
             f"the {seller} gave {P} the {F[1]} in {a(c + ' bag')}.",
             f"{P} carried the {F[1]} home in the {c} bag."]
        wrong = f"{P} carried the {F2[1]} home in the {c} bag."
    elif topic == "school_day":
        A, A2 = pick([x[0] for x in g.animals])
        day = rng.choice(("monday", "tuesday", "friday"))
        s = [f"on {day} {P} went to school with {Q}.",
             f"the teacher told {P} and {Q} a story about {a(A)}.",
             f"after the story {P} drew a picture of the {A}.",
             f"{P} used {c} crayons for the picture.",
             f"the teacher put the picture of {P} with the {c} {A} on the wall."]
        wrong = f"the teacher put the picture of {P} with the {c} {A2} on the wall."
    elif topic == "fishing":
        W, W2 = pick(("lake", "river", "pond", "sea"))
        n = rng.randint(2, 6)
        s = [f"early in the morning {P} and {Q} went to the {W}.",
             f"{P} and {Q} sat by the {W} with {a(c + ' bucket')}.",
             f"{P} caught a big fish and {Q} caught {L.number_word(n)} small fish.",
             f"{Q} put all the fish in the {c} bucket.",
             f"then {P} and {Q} walked home from the {W} with the bucket."]
        wrong = f"then {P} and {Q} walked home from the {W2} with the bucket."
    elif topic == "sick_day":
        n, n2 = pick(range(2, 8))
        drink = rng.choice(("tea", "milk", "water", "juice", "cocoa"))
        s = [f"{P} woke up with a cold and a bad cough.",
             f"the {fam} of {P} called the doctor.",
             f"the doctor told {P} to rest in bed and drink warm {drink}.",
             f"{P} stayed in bed for {L.number_word(n)} days and {Q} came to visit.",
             f"after {L.number_word(n)} days in bed {P} felt better."]
        wrong = f"after {L.number_word(n2)} days in bed {P} felt better."
    elif topic == "cooking":
        veg = [f[1] or f[0] for f in g.foods]
        F1, F2, F3 = rng.sample(veg, 3)
        s = [f"{P} wanted to cook dinner for {Q}.",
             f"{P} cut some {F1} and {F2} in the kitchen.",
             f"then {P} cooked the food in a big pot with rice.",
             f"{Q} came home hungry in the evening.",
             f"{Q} ate the {F1} and the {F2} and thanked {P}."]
        wrong = f"{Q} ate the {F1} and the {F3} and thanked {P}."
    elif topic == "broken_toy":
        toy = rng.choice(g.toys)[0]
        s = [f"{P} had {a(c + ' ' + toy)} that {he} loved.",
             f"one day {P} dropped the {toy} and it broke.",
             f"{P} was very sad and started to cry.",
             f"{Q} took the {toy} of {P} and fixed it.",
             f"now {P} plays with the {c} {toy} every day."]
        wrong = f"now {P} plays with the {c2} {toy} every day."
    elif topic == "forest_walk":
        wild = [x[0] for x in g.animals if x[0] in ("fox", "deer", "rabbit", "squirrel", "wolf", "bear", "owl",
                                                   "snake", "frog", "mouse", "lizard", "goat")]
        A, A2 = pick(wild if len(wild) >= 2 else [x[0] for x in g.animals])
        s = [f"{P} went for a walk in the forest with {Q}.",
             f"{P} and {Q} saw tall trees and many birds.",
             f"suddenly {a(A)} ran across the path in front of {P}.",
             f"the {A} stopped and looked at {P} and {Q}.",
             f"then the {A} ran back into the trees away from {P}."]
        wrong = f"then the {A2} ran back into the trees away from {P}."
    else:
        raise WorldError(f"unknown story topic {topic!r}; topics: {', '.join(STORY_TOPICS)}")
    return {"topic": topic, "sentences": s, "wrong_ending": wrong}
