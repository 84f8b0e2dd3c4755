"""A small generative grammar for synthetic read sentences with broad phonetic coverage.

The vocabulary is chosen so that every English phoneme espeak-ng produces occurs often, including
the rare ones TIMIT cares about (zh in "measure", oy in "noise", syllabic l/n in "bottle",
"button", flaps in "water", ng, th/dh, ch/jh, glides). Deterministic for a ``random.Random``.
"""
from __future__ import annotations

import random

NAMES = ("George", "Judith", "Thomas", "Heather", "Joyce", "Ruth", "Vivian", "Zachary", "Oliver",
         "Sheila", "Charles", "Angela", "Howard", "Eugene", "Yvonne", "Bertha", "Douglas", "Nathan",
         "Marjorie", "Walter", "Katherine", "Lloyd", "Agnes", "Timothy")
ADJ = ("yellow", "brown", "bright", "smooth", "rough", "thick", "thin", "quiet", "noisy", "little",
       "usual", "beige", "gentle", "cheap", "huge", "young", "ancient", "frozen", "wooden", "purple",
       "golden", "shiny", "curious", "loyal", "awkward", "tidy", "heavy", "oily", "narrow", "sharp",
       "pleasant", "foolish", "ugly", "crooked", "hollow", "cozy", "greasy", "dirty", "fresh", "calm")
NOUN = ("bottle", "button", "cotton", "garage", "treasure", "measure", "vision", "voice", "choice",
        "boy", "toy", "coin", "mouse", "house", "cloud", "town", "church", "cheese", "chair",
        "watch", "judge", "bridge", "giant", "jelly", "thumb", "bath", "path", "mother", "father",
        "feather", "leather", "ring", "song", "king", "book", "wood", "foot", "cook", "nurse",
        "bird", "shirt", "water", "butter", "ladder", "kitten", "mountain", "apple", "pencil",
        "whistle", "rhythm", "doctor", "zebra", "yacht", "fortune", "orange", "island", "engine",
        "village", "pillow", "window", "shadow", "rabbit", "ocean", "pleasure", "cushion", "oyster",
        "tissue", "puzzle", "dolphin", "hunger", "thunder", "anchor", "wagon", "violin", "collar")
VERB_PAST = ("bought", "found", "pushed", "pulled", "dropped", "fixed", "washed", "watched",
             "judged", "measured", "borrowed", "carried", "painted", "hugged", "grabbed",
             "thanked", "showed", "chose", "threw", "brought", "caught", "taught", "wrapped",
             "hid", "tossed", "sold", "loaded", "shook", "shaved", "noticed", "enjoyed", "avoided")
VERB = ("bring", "take", "wash", "catch", "push", "hold", "join", "judge", "measure", "check",
        "throw", "fetch", "share", "sing", "leave", "choose", "move", "fix", "cover", "hang")
ADV = ("quickly", "slowly", "usually", "gently", "rarely", "often", "early", "yesterday",
       "together", "anyway", "nearly", "eagerly", "boldly", "happily", "thoroughly", "loudly")
PLACE = ("the garage", "the village", "the mountain", "the kitchen", "the bridge", "the church",
         "the station", "the hallway", "the harbor", "the meadow", "the theater", "the jungle",
         "the office", "the pharmacy", "the university", "the zoo")
PREP = ("under", "behind", "beside", "near", "inside", "above", "across", "toward", "without", "with")
NUM = ("two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "twelve", "thirty")
TIME = ("on Thursday", "at noon", "in June", "last autumn", "every evening", "at dawn",
        "this year", "in the morning", "after the show", "before the storm")

TEMPLATES = (
    "The {adj} {noun} was {prep} the {noun2}.",
    "{name} {vpast} a {adj} {noun} {time}.",
    "Did the {noun} {verb} the {adj} {noun2}?",
    "Please {verb} the {noun} to {place} {adv}.",
    "{name} and {name2} {vpast} {num} {adj} {noun}s.",
    "A {adj} {noun} {vpast} the {noun2} {prep} {place}.",
    "Why would {name} {verb} the {noun} {time}?",
    "The {noun} {vpast} {adv}, but the {noun2} stayed {prep} {place}.",
    "We {vpast} {num} {noun}s and a {adj} {noun2}.",
    "{name} {adv} {vpast} the {adj} {noun} {time}.",
    "Her {noun} {vpast} {prep} the {adj} {noun2} {time}.",
    "Those {adj} {noun}s {vpast} the {noun2} {adv}.",
)


def sentence(rng: random.Random) -> str:
    """One random sentence (uses ``rng`` only, so a seeded Random gives a fixed sequence)."""
    template = rng.choice(TEMPLATES)
    name, name2 = rng.sample(NAMES, 2)
    noun, noun2 = rng.sample(NOUN, 2)
    return template.format(adj=rng.choice(ADJ), noun=noun, noun2=noun2, name=name, name2=name2,
                           vpast=rng.choice(VERB_PAST), verb=rng.choice(VERB), adv=rng.choice(ADV),
                           place=rng.choice(PLACE), prep=rng.choice(PREP), num=rng.choice(NUM),
                           time=rng.choice(TIME))
