"""Template captions for tests and benchmarks of the metrics (no data files needed).

The texts imitate motion descriptions and coaching instructions: contractions, hyphenated
words, numbers with decimals and thousands separators, quotes, brackets, ellipses and the
punctuation COCO's tokenisation removes.
"""
from __future__ import annotations

import random

_SUBJECTS = ["A person", "The athlete", "Someone", "The boxer", "A man", "A woman", "The skater", "He", "She"]
_ACTIONS = ["raises", "lowers", "swings", "extends", "bends", "rotates", "kicks with", "punches with",
            "lifts", "waves"]
_SIDES = ["left", "right", "front", "back", "other"]
_PARTS = ["arm", "leg", "hand", "foot", "knee", "elbow", "shoulder", "hip", "wrist"]
_MANNERS = ["slowly", "quickly", "twice", "3 times", "about 1.5 seconds", "by 90 degrees", "1,000 times",
            "half-way", "in a well-timed motion", "without stopping"]
_ENDINGS = [".", "!", "...", "", " again.", ", then stops.", "; then turns around.", " (twice).",
            " -- then steps back.", "?"]
_COACHING = ["Don't drop your guard", "You're not rotating your hips", "Your back foot isn't lifted",
             "Keep your chin down", "It's too stiff", "Can't you turn faster", "The punch's power comes "
             "from the legs", "Your elbow’s flaring out", "You aren't using your lower body",
             "Let's keep the \"guard\" up", "Stay on the balls of your feet", "The 'jab' is too slow"]
_CONNECTORS = [" and", ",", ";", " while", " but", " -"]


def template_caption(rng: random.Random) -> str:
    """One description or coaching sentence drawn from the templates."""
    if rng.random() < 0.4:
        text = rng.choice(_COACHING) + rng.choice([".", "!", "?", "...", ""])
        if rng.random() < 0.5:
            text += " " + _description(rng)
        return text
    return _description(rng)


def _description(rng: random.Random) -> str:
    text = f"{rng.choice(_SUBJECTS)} {rng.choice(_ACTIONS)} the {rng.choice(_SIDES)} {rng.choice(_PARTS)}"
    if rng.random() < 0.5:
        text += f" {rng.choice(_MANNERS)}"
    if rng.random() < 0.4:
        text += f"{rng.choice(_CONNECTORS)} {rng.choice(_ACTIONS)} the {rng.choice(_SIDES)}-side {rng.choice(_PARTS)}"
    return text + rng.choice(_ENDINGS)


def template_captions(seed: int, n: int) -> list[str]:
    """``n`` template captions from a seed."""
    rng = random.Random(seed)
    return [template_caption(rng) for _ in range(n)]


def synthetic_case(seed: int, n_clips: int, n_refs: int = 3) -> tuple[dict[str, str], dict[str, list[str]]]:
    """Predictions ``{clip: text}`` and references ``{clip: [n_refs texts]}``; a prediction is
    often a light edit of one of its references, so the scores are neither 0 nor 1."""
    rng = random.Random(seed)
    predictions, references = {}, {}
    for k in range(n_clips):
        clip = f"clip_{k:05d}"
        refs = [template_caption(rng) for _ in range(n_refs)]
        references[clip] = refs
        predictions[clip] = _edit(rng, rng.choice(refs)) if rng.random() < 0.7 else template_caption(rng)
    return predictions, references


def _edit(rng: random.Random, text: str) -> str:
    words = text.split()
    if len(words) > 2 and rng.random() < 0.5:
        del words[rng.randrange(len(words))]
    if rng.random() < 0.5:
        words.insert(rng.randrange(len(words) + 1), rng.choice(_MANNERS))
    return " ".join(words) or text
