"""The pure-Python COCO tokenizer against pycocoevalcap's Java PTBTokenizer.

Java-dependent comparisons skip without Java; the golden table below (recorded from the Java
tokenizer) checks the Python tokenizer everywhere.
"""
from __future__ import annotations

import json
import random
import shutil

import pytest

from tests.caption_templates import template_captions
from evaluation.metrics import java_ptb_tokenize, tokenize
from core.ptb_tokenizer import (LINE_BREAKS, PUNCTUATIONS, coco_tokenize_python, one_line,
                                      ptb_tokenize, ptb_tokenize_lines)

needs_java = pytest.mark.skipif(shutil.which("java") is None, reason="Java runtime not installed")

# (input, output of pycocoevalcap's PTBTokenizer + punctuation removal), recorded with Java 17.
GOLDEN = [
    ("Don't drop your guard.", "do n't drop your guard"),
    ("You can't rotate like that!", "you ca n't rotate like that"),
    ("It isn't fully extended.", "it is n't fully extended"),
    ("You're leaning too far forward.", "you 're leaning too far forward"),
    ("He's late; they've left, we'll see and I'd go.", "he 's late they 've left we 'll see and i 'd go"),
    ("WON'T SHAN'T AIN'T", "wo n't sha n't ai n't"),
    ("Your hips aren't turning.", "your hips are n't turning"),
    ("It’s the athlete’s fault; you’re not using your legs.",
     "it 's the athlete 's fault you 're not using your legs"),
    ("Don’t lock your knee.", "do n't lock your knee"),
    ("The boxers’ stance", "the boxers stance"),
    ("A well-known left-hook from a right-handed boxer", "a well-known left-hook from a right-handed boxer"),
    ("Rotate -- then punch", "rotate then punch"),
    ("Step back - now!", "step back now"),
    ("a---b", "a b"),
    ('He said "keep your chin down" twice.', "he said keep your chin down twice"),
    ("The so-called 'power punch'", "the so-called power punch"),
    ("“Curly quotes” and ‘single ones’", "curly quotes and single ones"),
    ("Raise it 3.5 cm, 1,000 times, by 90 degrees at 12:30.", "raise it 3.5 cm 1,000 times by 90 degrees at 12:30"),
    ("Turn 1/2 way, then 1 1/2 turns, ½ turn", "turn 1/2 way then 1\xa01/2 turns 1/2 turn"),
    ("-5 +5 5% 3x 2nd 10-15 reps", "-5 +5 5 % 3x 2nd 10-15 reps"),
    ("(left arm) [right arm] {both}", "-lrb- left arm -rrb- -lsb- right arm -rsb- -lcb- both -rcb-"),
    ("Wait... then punch…", "wait then punch"),
    ("Hmm.... ok", "hmm ok"),
    ("What?! No!!", "what ?! no !!"),
    ("U.S. style, e.g. the jab, etc.", "u.s. style e.g. the jab etc."),
    ("Mr. Smith vs. Dr. Who", "mr. smith vs. dr. who"),
    ("Keep arm A. The other arm", "keep arm a the other arm"),
    ("rock'n'roll o'clock y'all 'em '90s", "rock 'n' roll o'clock y' all 'em '90s"),
    ("gonna wanna gotta cannot", "gon na wan na got ta can not"),
    ("AT&T R&D a&b", "at&t r&d a & b"),
    ("$10 £5 €3 ¢ #1", "$ 10 # 5 $ 3 cents # 1"),
    ("left/right and/or", "left/right and/or"),
    ("x*y = z", "x * y = z"),
    ("<b>bold</b> text", "<b> bold </b> text"),
    ("http://example.com/x. www.example.org", "http://example.com/x www.example.org"),
    ("email me@example.com.", "email me@example.com"),
    ("@coach #boxing", "@coach #boxing"),
    (":) :( ;-)", ":-rrb- :-lrb- ;--rrb-"),
    ("naïve café Straße", "naïve café straße"),
    ("tab\tseparated", "tab separated"),
    ("  spaced   out  ", "spaced out"),
]

# Words and fragments for the seeded fuzz (joined with and without spaces).
_ATOMS = """don't can't isn't you're won't it's I'm he'd we'll they've O'Neil's o'clock y'all rock'n'roll
ma'am 'em '90s 90's players' 'quoted' "double" “curly” ‘single’ it’s can’t don’t you’re isn’t
well-known self-aware left- -right 3-point 10-15 -5 +5 5% 3.5 1,000 .5 12:30 1st 3/4 1 1/2 ½ ⅔
( ) [ ] { } ... … .. .... -- --- - — – ; : , . ? ! ?! !! & AT&T a&b $10 £5 €3 # @user #tag
e.g. i.e. etc. U.S. Mr. Dr. St. vs. a. A. I. x. Jan. No. fig. ca. Inc. Co. Ph.D. The He It This
gonna wanna cannot 'tis 'twas left/right km/h a*b * = + ~ | < > <b> :) :D http://x.com/a www.x.org
john@x.com arm.The a.b a!b abc123 123abc 3abc.x naïve café Ωmega straße İstanbul 👍 ° ² ™ © • _ x_y
arm leg knee jab cross punch hips shoulders Keep Rotate""".split()
_CHARS = (list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789") + [" "] * 15
          + list(".,;:!?'\"-_/\\()[]{}<>@#$%&*+=~^|`") * 2
          + list("’‘“”…—–½¼⅔£€¥¢°´«»éüñßΩжЖ中²™©§•·‹›„‚¡¿×")
          + list("\u00a0\u00ad\u200b\ufeff\x00\x7f\u0301\u2009\u3000\u2010\u0085\u0092")
          + ["😀", "&amp;", "&lt;", "&quot;", "&apos;", "&nbsp;", "&mdash;", "n't", "'s", "www.", ".com",
             "http://", "...", "--", "1/2", "3.5", "1,000", "U.S.", "e.g.", "Mr.", "a.", "The ", "He "])


def _atom_line(rng: random.Random) -> str:
    seps = [" ", " ", " ", "", "  ", "\t"]
    return "".join(rng.choice(_ATOMS) + rng.choice(seps) for _ in range(rng.randint(1, 10))).strip() or "x"


def _char_line(rng: random.Random) -> str:
    return "".join(rng.choice(_CHARS) for _ in range(rng.randint(1, 30))).strip(" ") or "x"


def java_tokenize(lines: list[str]) -> list[str]:
    """pycocoevalcap's PTBTokenizer run directly, one line per caption, in order."""
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    out = PTBTokenizer().tokenize({k: [{"caption": line}] for k, line in enumerate(lines)})
    return [out[k][0] for k in range(len(lines))]


def assert_same_tokens(lines: list[str]) -> None:
    expected = java_tokenize(lines)
    got = coco_tokenize_python(lines)
    bad = [(line, e, g) for line, e, g in zip(lines, expected, got) if e != g]
    assert not bad, f"{len(bad)} of {len(lines)} differ, first: {bad[:3]}"


def bx_texts(bx_dir) -> list[str]:
    texts = []
    for split in ("train", "test"):
        for rec in json.loads((bx_dir / f"BX_{split}.json").read_text(encoding="utf-8")):
            texts += list(rec["labels"]) + list(rec.get("augmented_labels", []))
    return texts


# ---------------------------------------------------------------------------- no Java needed
def test_punctuation_list_is_cocos():
    from pycocoevalcap.tokenizer.ptbtokenizer import PUNCTUATIONS as COCO_PUNCTUATIONS

    assert list(PUNCTUATIONS) == list(COCO_PUNCTUATIONS)


@pytest.mark.parametrize("text, expected", GOLDEN)
def test_golden_cases(text, expected):
    # Recorded with a caption following each text (as inside a batch), hence the extra line.
    assert coco_tokenize_python([text, "next"]) == [expected, "next"]


def test_end_of_batch_context_like_java():
    # A smiley needs a following character: at the very end of the batch it is split up.
    assert coco_tokenize_python([";-)", ";-)"]) == [";--rrb-", "-rrb-"]


def test_raw_ptb_tokens_keep_case_and_punctuation():
    assert ptb_tokenize("Don't (go) now...") == ["Do", "n't", "-LRB-", "go", "-RRB-", "now", "..."]


def test_context_crosses_caption_boundaries_like_java():
    # "a." ends a sentence when the next caption starts with "The" (the Java lexer sees one text).
    assert ptb_tokenize_lines(["x a.", "The y"]) == [["x", "a", "."], ["The", "y"]]
    assert ptb_tokenize_lines(["x a.", "the y"]) == [["x", "a."], ["the", "y"]]


def test_line_breaks_inside_a_caption_do_not_shift_later_captions():
    texts = [f"left{c}arm" for c in LINE_BREAKS] + ["last one"]
    assert coco_tokenize_python(texts) == ["left arm"] * len(LINE_BREAKS) + ["last one"]
    assert one_line("a\r\nb\u2028c") == "a  b c"


def test_python_tokenizer_is_deterministic_and_handles_empty_text():
    assert coco_tokenize_python(["", "...", "ok"]) == ["", "", "ok"]


# ---------------------------------------------------------------------------- against Java
@pytest.mark.java
@needs_java
def test_golden_table_and_batch_end_still_match_java():
    assert java_tokenize([t for t, _ in GOLDEN] + ["next"]) == [e for _, e in GOLDEN] + ["next"]
    assert java_tokenize([";-)", ";-)"]) == [";--rrb-", "-rrb-"]


@pytest.mark.java
@needs_java
def test_equals_java_on_every_bx_text(bx_dir):
    texts = bx_texts(bx_dir)
    assert len(texts) > 1000
    assert_same_tokens(texts)


@pytest.mark.java
@needs_java
def test_equals_java_on_template_captions():
    assert_same_tokens(template_captions(seed=0, n=1500))


@pytest.mark.java
@needs_java
def test_equals_java_on_seeded_fuzz():
    rng = random.Random(20240601)
    lines = [_atom_line(rng) for _ in range(1500)] + [_char_line(rng) for _ in range(1500)]
    assert_same_tokens(lines)


@pytest.mark.java
@needs_java
def test_java_and_python_paths_of_tokenize_agree_with_line_breaks():
    captions = {"a": ["Keep\nyour\rguard up.", "Don't\u2028drop it"], "b": ["Fine (really)..."]}
    assert tokenize(captions, use_java=True) == tokenize(captions, use_java=False) == {
        "a": ["keep your guard up", "do n't drop it"], "b": ["fine -lrb- really -rrb-"]}


@pytest.mark.java
@needs_java
def test_our_java_call_equals_pycocoevalcaps_ptbtokenizer():
    # evaluation.metrics runs the jar itself (to keep its progress line off the console): same
    # options, same punctuation removal, so the same tokens, empty and one-token lines included.
    texts = [t for t, _ in GOLDEN] + ["", "...", "  ", "Hands UP!"] + template_captions(seed=1, n=300) + ["last"]
    lines = [one_line(t) for t in texts]         # as evaluation.metrics.tokenize passes them
    assert java_ptb_tokenize(lines) == java_tokenize(lines)
