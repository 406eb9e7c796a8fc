"""A pure-Python re-creation of the tokenisation used by the COCO caption evaluation.

``pycocoevalcap`` tokenises captions with the Stanford PTBTokenizer (CoreNLP 3.4.1, run with
``-preserveLines -lowerCase``) and then drops the tokens in :data:`PUNCTUATIONS`.  That needs a
Java runtime.  This module reproduces the same output without Java, so BLEU / ROUGE-L / CIDEr-D
can be computed anywhere and still equal the published numbers.

How it works: a longest-match scanner in the style of the JFlex lexer the Java tokenizer is
generated from.  At each position every rule that can start with the current character is tried;
the longest match wins (trailing context counts towards the length, as in JFlex) and ties go to
the rule listed first.  The rules were reconstructed from the behaviour of the 3.4.1 jar that
pycocoevalcap ships (abbreviation lists, quote, dash, ellipsis and currency normalisation, URL /
e-mail / file-name tokens, ...) and checked against it on every BX caption, on template
captions and on a few hundred thousand random lines of words, punctuation and Unicode (see
``tests/test_evaluation_tokenizer.py`` for the part that runs in the test suite).

Like the Java side, a *batch* of captions is scanned as one text with one caption per line, so the
rare cases where the context crosses a line (a one-letter abbreviation such as ``a.`` at the end
of one caption and ``The`` at the start of the next) come out the same, and characters beyond
U+FFFF are scanned as UTF-16 surrogate pairs, as Java does.

Known approximations (none matters for English captions): Java's Unicode tables of 2014 against
Python's current ones, and combining marks of Indic and Thai scripts, which the Java lexer lists
range by range, taken from Unicode's mark categories.
"""
from __future__ import annotations

import bisect
import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable, Iterable, Sequence

# The tokens COCO removes after PTB tokenisation (pycocoevalcap/tokenizer/ptbtokenizer.py).
# Note that it lists the upper-case bracket tokens, which never survive ``-lowerCase``, so
# ``-lrb-`` / ``-rrb-`` stay in the output exactly as they do in pycocoevalcap.
PUNCTUATIONS: tuple[str, ...] = ("''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-",
                                 ".", "?", "!", ",", ":", "-", "--", "...", ";")
_PUNCT_SET = frozenset(PUNCTUATIONS)

# Characters the Java tokenizer treats as line breaks.  With one caption per line, a caption that
# contained one would shift every later caption, so they are replaced by spaces before tokenising
# (pycocoevalcap itself only replaces "\n").
LINE_BREAKS = "\n\r\u2028\u2029\u000b\u000c"
_LINE_BREAK_TABLE = str.maketrans({c: " " for c in LINE_BREAKS})


def one_line(text: str) -> str:
    """Replace every character the Java tokenizer would treat as a line break by a space."""
    return text.translate(_LINE_BREAK_TABLE)


# --------------------------------------------------------------------------------------------
# Character classes (Basic Multilingual Plane only: the Java lexer reads UTF-16 code units and
# deletes the halves of a surrogate pair as untokenizable, so letters beyond U+FFFF never count).
# --------------------------------------------------------------------------------------------
_EXTRA_LETTERS = [(0x00AD, 0x00AD), (0x0237, 0x024F), (0x02C2, 0x02C5), (0x02D2, 0x02DF),
                  (0x02E5, 0x02FF), (0x0300, 0x036F), (0x0370, 0x037D), (0x0384, 0x0385),
                  (0x03CF, 0x03CF), (0x03F6, 0x03F6), (0x03FC, 0x03FF), (0x0483, 0x0487),
                  (0x04CF, 0x04CF), (0x04F6, 0x04FF), (0x0510, 0x0525), (0x055A, 0x055F)]


_CATEGORY = [unicodedata.category(chr(cp)) for cp in range(0x10000)]
_EXTRA = set()
for _lo, _hi in _EXTRA_LETTERS:
    _EXTRA.update(range(_lo, _hi + 1))


def _is_alpha(cp: int) -> bool:
    """[:letter:] in the Java lexer."""
    return _CATEGORY[cp][0] == "L"


def _is_letter(cp: int) -> bool:
    """The lexer's LETTER: letters, the listed extra ranges and combining marks (outside
    Latin/Greek/Cyrillic the Java lexer lists marks range by range; Unicode's mark categories
    approximate those lists)."""
    cat = _CATEGORY[cp]
    return cat[0] == "L" or cp in _EXTRA or (cp >= 0x0591 and cat in ("Mn", "Mc"))


def _is_digit(cp: int) -> bool:
    return _CATEGORY[cp] == "Nd"


def _char_class(pred: Callable[[int], bool]) -> str:
    """A regex character class ``[...]`` for the BMP code points where ``pred`` holds
    (surrogates excluded)."""
    parts: list[str] = []
    start = None
    for cp in range(0x10000):
        inside = not 0xD800 <= cp <= 0xDFFF and pred(cp)
        if inside and start is None:
            start = cp
        elif not inside and start is not None:
            parts.append(_range(start, cp - 1))
            start = None
    if start is not None:
        parts.append(_range(start, 0xFFFF))
    return "[" + "".join(parts) + "]"


def _range(lo: int, hi: int) -> str:
    esc = lambda cp: "\\u%04x" % cp  # noqa: E731 - tiny local formatter
    return esc(lo) if lo == hi else f"{esc(lo)}-{esc(hi)}"


def ci(literal: str) -> str:
    """A case-insensitive regex for a literal (the Java lexer is ``%caseless`` for literals
    only; character classes stay case-sensitive, so ``re.IGNORECASE`` cannot be used)."""
    out = []
    for ch in literal:
        if ch.isalpha() and ch.lower() != ch.upper():
            out.append(f"[{ch.lower()}{ch.upper()}]")
        else:
            out.append(re.escape(ch))
    return "".join(out)


def alt(*literals: str) -> str:
    """Case-insensitive alternation of literals, longest first (so Python's first match is the
    longest one, as in JFlex)."""
    return "(?:" + "|".join(ci(x) for x in sorted(literals, key=len, reverse=True)) + ")"


_ALPHA = _char_class(_is_alpha)                  # [:letter:] in the Java lexer
_L = _char_class(_is_letter)                     # LETTER: letters + marks + soft hyphen
_D = _char_class(_is_digit)
_LD = _char_class(lambda cp: _is_alpha(cp) or _is_digit(cp))
_LD_WIDE = _char_class(lambda cp: _is_letter(cp) or _is_digit(cp))

SPLET = "&[aeiouAEIOU]" + alt("acute", "grave", "uml") + ";"
LETTER = f"(?:{_L}|{SPLET})"
SPACE = "[ \\t\\u00a0\\u2000-\\u200a\\u3000]"
# U+0085 counts as a line break in trailing contexts only: as a token it is an ellipsis.
NEWLINE = "(?:\\r\\n|[\\r\\n\\u2028\\u2029\\u000b\\u000c\\u0085])"
SPACENL = f"(?:{SPACE}|{NEWLINE})"
WORD = f"{LETTER}(?:{LETTER}|{_D})*(?:[.!?]{LETTER}(?:{LETTER}|{_D})*)*"
APOS = "(?:['\\u0092\\u2019]|&apos;)"
APOSETC = "(?:['`\\u0092\\u2019\\u0091\\u2018\\u201b]|&apos;)"
REDAUX = APOS + "(?:[msdMSD]|" + ci("re") + "|" + ci("ve") + "|" + ci("ll") + ")"
SWORD = "[A-Za-z\\u00ad]*[A-MO-Za-mo-z]\\u00ad*"
SREDAUX = ci("n") + APOSETC + ci("t")
APOWORD_ALTS = [
    f"{_ALPHA}+[aeiouyAEIOUY]{APOSETC}[aeiouA-Z]{_ALPHA}*",  # ma'am, Shi'ite
    f"[A-HJ-XZn]{APOSETC}{_ALPHA}{{2,}}",                    # O'Neil, d'Avignon
    ci("cont") + "'" + ci("d") + "\\.?",
    "'" + alt("twas"), alt("nor'easter", "s'mores", "c'mon", "e'er", "ev'ry", "li'l", "nat'l"),
    ci("dunkin") + APOS, ci("somethin") + APOS, ci("ol") + APOS,
    APOS + ci("cause"), APOS + ci("till") + "?", APOS + "[2-9]0" + ci("s"), APOS + ci("em"),
    APOS + ci("n") + APOS + "?", "[lLdDjJ]" + APOS, ci("o") + APOSETC + ci("o"),
]
# Alternatives are kept apart where Python's first-match alternation could miss the longest one.
ACRO_ALTS = ["[A-Za-z](?:\\.[A-Za-z])*",
             alt("canada", "sino", "korean", "eu", "japan", "non") + "-" + ci("u.s"),
             ci("u.s.-") + "(?:" + ci("u.s.s.r") + "|" + ci("u.k") + ")"]
ACRO2 = "[A-Za-z](?:\\.[A-Za-z])+"
NUM = f"(?:{_D}*(?:[.:,\\u00ad\\u066b\\u066c]{_D}+)+|{_D}+)"
NUMBER = f"[-+]?{NUM}"
HYPHEN = "[-_\\u058a\\u2010\\u2011]"
THING_PART = f"(?:[dDoOlL]{APOSETC}{_LD})?{_LD}+"
THING = f"{THING_PART}(?:{HYPHEN}{THING_PART})*"
THINGA = "[A-Z]+(?:(?:[+&]|" + ci("&amp;") + ")[A-Z]+)+"
THING3 = "[A-Za-z0-9]+(?:-[A-Za-z]+){0,2}(?:\\\\?/[A-Za-z0-9]+(?:-[A-Za-z]+){0,2}){1,2}"
HTHING = f"[A-Za-z0-9][A-Za-z0-9.,\\u00ad]*(?:-(?:{ACRO2}\\.|[A-Za-z0-9\\u00ad]+))+"
INSENTP = "[,;:\\u3001]"
FILENAME_EXT = alt("bat", "bmp", "bz2", "c", "class", "cgi", "cpp", "dll", "doc", "docx", "exe", "gif",
                   "gz", "h", "htm", "html", "jar", "java", "jpeg", "jpg", "mov", "mp3", "pdf", "php",
                   "pl", "png", "ppt", "ps", "py", "sql", "tar", "txt", "wav", "x", "xml", "zip", "3gp",
                   "wmv", "wma", "avi", "flv", "mp4", "mpg")
FILENAME = f"{_LD_WIDE}+(?:\\.{_LD_WIDE}+)*\\." + FILENAME_EXT
_NAME = "[A-Za-z][A-Za-z0-9_:.-]*"
SGML = ("<(?:[!?][A-Za-z-][^>\\r\\n]*|" + _NAME + "(?: +(?:" + _NAME + " *= *(?:'[^']*'|\"[^\"]*\")|"
        + _NAME + "))* */?|/" + _NAME + ") *>")
QUOTES_ALTS = ["''", APOS, "[`\\u2018\\u2019\\u201a\\u201b\\u201c\\u201d\\u0091\\u0092\\u0093\\u0094"
          "\\u201e\\u201f\\u2039\\u203a\\u00ab\\u00bb]{1,2}"]
DBLQUOT = '(?:"|' + ci("&quot;") + ")"

ABMONTH = ["jan", "feb", "mar", "apr", "jun", "jul", "aug", "sep", "sept", "oct", "nov", "dec"]
ABDAYS = ["mon", "tue", "tues", "wed", "thu", "thurs", "fri"]
# States that are also common words only count when capitalised: the first letter is a
# (case-sensitive) character class in the Java lexer.
ABSTATE = ["ala", "ariz", "calif", "colo", "conn", "ct", "dak", "fla", "ga", "ind", "kan", "kans",
           "ky", "md", "mich", "minn", "mo", "mont", "neb", "nev", "okla", "penn", "tenn", "va",
           "vt", "wis", "wisc", "wyo"]
ABSTATE_CAPITAL = ["Az", "Ark", "Del", "Ill", "La", "Mass", "Miss", "Ore", "Pa", "Tex", "Wash"]
ABCOMP = ["inc", "co", "cos", "corp", "ltd", "plc", "rt", "bancorp", "dept", "bhd", "assn", "univ",
          "intl", "sys"]
ABOTHER1 = ["tel", "est", "ext", "sq", "jr", "sr", "bros", "ph.d", "ed.d", "blvd", "rd", "esq",
            "etc", "al", "seq", "bldg"]
ABTITLE = ["mr", "mrs", "ms", "dr", "drs", "prof", "profs", "sen", "sens", "rep", "reps", "atty",
           "attys", "lt", "col", "gen", "messrs", "gov", "govs", "adm", "rev", "maj", "sgt", "cpl",
           "pvt", "mt", "capt", "st", "ste", "ave", "pres", "lieut", "hon", "brig", "cmdr", "comdr",
           "pfc", "spc", "supt", "supts", "det", "ft", "adj", "adv", "asst", "assoc", "ens", "insp",
           "mlle", "mme", "msgr", "sfc", "vs", "alex", "wm", "jos", "cie", "a.k.a", "cf", "treas",
           "invt", "elec", "natl"]


def _first_capital(words: Iterable[str]) -> str:
    return "(?:" + "|".join(f"[{w[0]}]{ci(w[1:])}" for w in sorted(words, key=len, reverse=True)) + ")"


ABBREV1 = ("(?:" + alt(*ABMONTH, *ABDAYS, *ABSTATE, *ABCOMP, *ABOTHER1) + "|"
           + _first_capital(ABSTATE_CAPITAL) + "|" + _first_capital(["Miss"]) + "|"
           + ci("p") + "p?" + ci("t") + "[ye]" + ci("s") + "?)\\.")
ABBREV4_ALTS = [alt(*ABTITLE), _first_capital(["Miss"]), ci("m") + "[ft]" + ci("g"), *ACRO_ALTS]
ABBREV3 = "(?:" + alt("ca", "fig", "figs", "prop", "no", "nos", "art", "bldg", "pp", "op") + ")\\."
# Capitalised words after which a one-letter abbreviation ("a.") is taken as a sentence end.
SENTENCE_STARTERS = ["About", "According", "Additionally", "After", "An", "A", "As", "At", "But",
                     "Earlier", "He", "Her", "Here", "However", "If", "In", "It", "Last", "Many",
                     "More", "Mr.", "Ms.", "Now", "Once", "One", "Other", "Our", "She", "Since",
                     "So", "Some", "Such", "That", "The", "Their", "Then", "There", "These",
                     "They", "This", "We", "When", "While", "What", "Yet", "You"]
PHONE = ("(?:(?:\\([0-9]{2,3}\\)[ \\u00a0]?|(?:\\+\\+?)?(?:[0-9]{2,4}[- \\u00a0])?[0-9]{2,4}"
         "[- \\u00a0])[0-9]{3,4}[- \\u00a0]?[0-9]{3,5}|(?:(?:\\+\\+?)?[0-9]{2,4}\\.)?[0-9]{2,4}\\."
         "[0-9]{3,4}\\.[0-9]{3,5})")
MISCSYMBOL = ("[+%&~^|\\\\\\u00a6\\u00a7\\u00a8\\u00a9\\u00ac\\u00ae\\u00af\\u00b0-\\u00b3"
              "\\u00b4-\\u00ba\\u00d7\\u00f7\\u0387\\u05be\\u05c0\\u05c3\\u05c6\\u05f3\\u05f4"
              "\\u0600-\\u0603\\u0606-\\u060a\\u060c\\u0614\\u061b\\u061e\\u066a\\u066d"
              "\\u0703-\\u070d\\u07f6\\u07f7\\u07f8\\u0964\\u0965\\u0e4f\\u1fbd\\u2016\\u2017"
              "\\u2020-\\u2023\\u2030-\\u2038\\u203b\\u203e-\\u2042\\u2044\\u207a-\\u207f"
              "\\u208a-\\u208e\\u2100-\\u214f\\u2190-\\u21ff\\u2200-\\u2bff\\u3012\\u30fb"
              "\\uff01-\\uff0f\\uff1a-\\uff20\\uff3b-\\uff40\\uff5b-\\uff65]")
DOLSIGN2 = ("[\\u00a2\\u00a3\\u00a4\\u00a5\\u0080\\u20a0\\u20ac\\u060b\\u0e3f\\u20a4\\uffe0\\uffe1"
            "\\uffe5\\uffe6]")


# --------------------------------------------------------------------------------------------
# Token normalisations (what the Java lexer does to a matched token)
# --------------------------------------------------------------------------------------------
def _latex_quotes(tok: str, probably_left: bool) -> str:
    """Quote characters to the LaTeX / PTB forms `` ` ' ''."""
    if probably_left:
        tok = tok.replace("&apos;", "`").replace("'", "`")
        tok = re.sub(r'"|&quot;', "``", tok)
    else:
        tok = tok.replace("&apos;", "'")
        tok = re.sub(r'"|&quot;', "''", tok)
    tok = re.sub("[\u0091\u2018\u201b\u2039]", "`", tok)
    tok = re.sub("[\u0092\u2019\u203a]", "'", tok)
    tok = re.sub("[\u0093\u201c\u00ab]", "``", tok)
    return re.sub("[\u0094\u201d\u00bb]", "''", tok)


def _no_soft_hyphens(tok: str) -> str:
    out = tok.replace("\u00ad", "")
    return out if out else "-"


_CURRENCY = {"\u00a2": "cents", "\u00a3": "#", "\u0080": "$", "\u00a4": "$", "\u20a0": "$", "\u20ac": "$"}
_FRACTIONS = {"\u00bc": "1/4", "\u00bd": "1/2", "\u00be": "3/4", "\u2153": "1/3", "\u2154": "2/3"}
_BRACKETS = {"(": "-LRB-", ")": "-RRB-", "[": "-LSB-", "]": "-RSB-", "{": "-LCB-", "}": "-RCB-"}


def _parens(tok: str) -> str:
    return tok.replace("(", "-LRB-").replace(")", "-RRB-")


# An action turns the matched token text into (tokens to emit, characters consumed); consuming
# fewer characters than matched is JFlex's ``yypushback``.
Action = Callable[[str], "tuple[list[str], int]"]


def _keep(tok: str) -> tuple[list[str], int]:
    return [tok], len(tok)


def _emit(fn: Callable[[str], str]) -> Action:
    return lambda tok: ([fn(tok)], len(tok))


def _skip(tok: str) -> tuple[list[str], int]:
    return [], len(tok)


def _push_back(n: int) -> Action:
    return lambda tok: ([tok[:-n]], len(tok) - n)


def _abbrev_then_period(tok: str) -> tuple[list[str], int]:
    """An abbreviation that also ends a sentence: the token keeps its period and the period is
    scanned again as a token of its own."""
    return [tok], len(tok) - 1


def _acronym_at_sentence_end(tok: str) -> tuple[list[str], int]:
    """"A." before "The": a one-letter acronym loses its period; a longer one keeps it and the
    period is also returned as a token."""
    if len(tok) == 2:
        return [tok[0]], 1
    return [tok], len(tok) - 1


@dataclass(frozen=True)
class _Rule:
    name: str
    first: re.Pattern        # characters a match can start with (a superset is fine)
    patterns: tuple[re.Pattern, ...]  # main part + trailing context; group "tok" is the token
    action: Action


def _rule(name: str, first: str, main: "str | list[str]", action: Action = _keep,
          trail: str = "", suffix: str = "") -> _Rule:
    """A rule; ``main`` may be a list of alternatives, of which the longest match counts."""
    alts = [main] if isinstance(main, str) else main
    pats = tuple(re.compile(f"(?P<tok>(?:{a}){suffix}){trail}", re.DOTALL) for a in alts)
    return _Rule(name, re.compile(first), pats, action)


_WORD_START = f"(?:{_L}|&)"
_RULES: list[_Rule] = [
    _rule("programming_language", "[cCfF]", ci("c") + "\\+\\+|[cCfF]#"),
    _rule("assimilation3", "[cC']", f"{ci('cannot')}|'{ci('twas')}", _push_back(3)),
    _rule("assimilation2", "[gGlLwW']", alt("gonna", "gotta", "lemme", "gimme", "wanna", "'tis"),
          _push_back(2)),
    _rule("sgml", "<", SGML, _emit(lambda t: t.replace(" ", "\u00a0"))),
    _rule("dash", "[&\u0096\u0097\u2013\u2014\u2015]",
          "&" + alt("md", "mdash", "ndash") + ";|[\u0096\u0097\u2013\u2014\u2015]",
          _emit(lambda t: "--")),
    _rule("amp", "&", ci("&amp;"), _emit(lambda t: "&")),
    _rule("sgml_punct", "&", "&(?:" + alt("ht", "tl", "ur", "lr", "qc", "ql", "qr", "odq", "cdq")
          + "|#[0-9]+);"),
    _rule("word_before_aux", _WORD_START, WORD, _emit(_no_soft_hyphens), trail=REDAUX),
    _rule("word_before_nt", "[A-Za-z\u00ad]", SWORD, _emit(_no_soft_hyphens), trail=SREDAUX),
    _rule("word", _WORD_START, WORD, _emit(_no_soft_hyphens)),
    _rule("apostrophe_word", f"(?:{_ALPHA}|['\u0092\u2019&])", APOWORD_ALTS),
    _rule("y_apostrophe", "[yY]", "[yY]" + APOS, trail=_ALPHA),
    _rule("url", "[hH]", ci("http") + ci("s") + "?://[^ \\t\\n\\f\\r\"<>|(){}]+[^ \\t\\n\\f\\r\"<>|.!?(){},-]"),
    _rule("likely_url", "[^ \\t\\n\\f\\r\"`'<>|.!?(){},-_$]",
          "(?:" + ci("www.") + "(?:[^ \\t\\n\\f\\r\"<>|.!?(){},]+\\.)+[a-zA-Z]{2,4}"
          "|(?:[^ \\t\\n\\f\\r\"`'<>|.!?(){},-_$]+\\.)+" + alt("com", "net", "org", "edu") + ")"
          "(?:/[^ \\t\\n\\f\\r\"<>|()]+[^ \\t\\n\\f\\r\"<>|.!?(){},-])?"),
    _rule("email", "[a-zA-Z0-9<&]",
          "(?:<|" + ci("&lt;") + ")?[a-zA-Z0-9][^ \\t\\n\\f\\r\"<>|(){}\\u00a0]*@"
          "(?:[^ \\t\\n\\f\\r\"<>|(){}.\\u00a0]+\\.)*[^ \\t\\n\\f\\r\"<>|(){}.\\u00a0]+"
          "(?:>|" + ci("&gt;") + ")?"),
    _rule("twitter", "[@#]", f"@[a-zA-Z_][a-zA-Z_0-9]*|#{LETTER}+"),
    _rule("aux_before_nonletter", "['\u0092\u2019&]", REDAUX,
          _emit(lambda t: _latex_quotes(t, False)), trail="[^A-Za-z]"),
    _rule("nt", "[nN]", SREDAUX, _emit(lambda t: _latex_quotes(t, False))),
    _rule("date", _D, f"{_D}{{1,2}}[-/]{_D}{{1,2}}[-/]{_D}{{2,4}}"),
    _rule("number", f"(?:{_D}|[-+.:,\u00ad\u066b\u066c])", NUMBER, _emit(_no_soft_hyphens)),
    _rule("sub_sup_number", "[\u207a\u207b\u208a\u208b\u2070\u00b9\u00b2\u00b3\u2074-\u2079\u2080-\u2089]",
          "[\u207a\u207b\u208a\u208b]?(?:[\u2070\u00b9\u00b2\u00b3\u2074-\u2079]+|[\u2080-\u2089]+)"),
    _rule("fraction", _D, f"(?:{_D}{{1,4}}[- \\u00a0])?{_D}{{1,4}}(?:\\\\?/|\\u2044){_D}{{1,4}}",
          _emit(lambda t: t.replace(" ", "\u00a0"))),
    _rule("fraction_char", "[\u00bc\u00bd\u00be\u2153-\u215e]", "[\u00bc\u00bd\u00be\u2153-\u215e]",
          _emit(lambda t: _FRACTIONS.get(t, t))),
    _rule("treebank_special", "[-cCsSaApP]",
          "-(?:RRB|LRB|RCB|LCB|RSB|LSB)-|" + alt("c.d.s", "pro-", "anti-") + "|[sS](?:&|"
          + ci("&amp;") + ")(?:[pP]-500|[lL][sS])|" + ci("cap") + APOS + ci("n") + "|" + ci("c")
          + APOS + ci("est"), _emit(lambda t: re.sub("(?i)&amp;", "&", t))),
    _rule("slash_thing", "[A-Za-z0-9]", THING3),
    _rule("dollar", "[A-Z$#]", "[A-Z]*\\$|#"),
    _rule("currency", DOLSIGN2, DOLSIGN2, _emit(lambda t: _CURRENCY.get(t, t))),
    _rule("acronym_sentence_end", "[A-Za-z]", ACRO_ALTS, _acronym_at_sentence_end, suffix="\\.",
          trail=f"{SPACENL}+(?:{_first_capital(SENTENCE_STARTERS)}|{SGML}){SPACENL}"),
    _rule("abbrev_before_number", "[a-zA-Z]", ABBREV3, trail=f"{SPACENL}?{_D}"),
    _rule("abbrev_company", "[pPcC]", "(?:[pP][tT][eyEY]|" + ci("co") + ")\\.",
          trail=f"{SPACE}" + alt("ltd", "lim")),
    _rule("abbrev_sentence_end", "[a-zA-Z]", ABBREV1, _abbrev_then_period,
          trail=f"{SPACENL}(?:{SPACENL}|[A-Z]|{SGML})"),
    _rule("abbrev_mid_text", "[a-zA-Z]", ABBREV1, trail="[\\s\\S]{2}"),
    _rule("abbrev_at_end", "[a-zA-Z]", ABBREV1, _abbrev_then_period),
    _rule("abbrev_title", "[a-zA-Z]", ABBREV4_ALTS, suffix="\\."),
    _rule("abbrev_no_period", "[a-zA-Z]", ABBREV4_ALTS, trail=SPACE),
    _rule("acronym", "[a-zA-Z]", ACRO_ALTS, trail=SPACENL),
    _rule("year", "['\u0092\u2019&]", APOS + "[0-9][0-9]", trail=SPACENL),
    _rule("word_period_comma", _WORD_START, WORD + "\\.", _emit(_no_soft_hyphens), trail=INSENTP),
    _rule("phone", "[(+0-9]", PHONE, _emit(lambda t: _parens(t.replace(" ", "\u00a0")))),
    _rule("open_double_quote", '["&]', DBLQUOT, _emit(lambda t: _latex_quotes(t, True)),
          trail="[A-Za-z0-9$]"),
    _rule("double_quote", '["&]', DBLQUOT, _emit(lambda t: _latex_quotes(t, False))),
    _rule("delete_char", "\x7f", "\x7f", _skip),
    _rule("less_than", "[<&]", "<|" + ci("&lt;"), _emit(lambda t: "<")),
    _rule("greater_than", "[>&]", ">|" + ci("&gt;"), _emit(lambda t: ">")),
    _rule("smiley", "[<>:;=]", "[<>]?[:;=][-o*']?[()DPdpO\\\\{@|\\[\\]]", _emit(_parens),
          trail="[^A-Za-z0-9]"),
    _rule("asian_smiley", "[-^x=~<>'(]",
          ["[-^x=~<>']_[-^x=~<>']", "\\([-^x=~<>'][_.]?[-^x=~<>']\\)", "\\([\\^x=~<>']-[\\^x=~<>'`]\\)"],
          _emit(_parens)),
    _rule("bracket", "[()\\[\\]{}]", "[()\\[\\]{}]", _emit(lambda t: _BRACKETS[t])),
    _rule("hyphens", "-", "-+", _emit(lambda t: "--" if 3 <= len(t) <= 4 else t)),
    _rule("ellipsis", "[.\u0085\u2026]", "\\.{3,5}|(?:\\.[ \\u00a0]){2,4}\\.|[\\u0085\\u2026]",
          _emit(lambda t: "...")),
    _rule("footnote_marks", "[@#_]", "@+|#+|_+"),
    _rule("asterisks", "[*\\\\]", "\\*+|(?:\\\\\\*){1,3}"),
    _rule("in_sentence_punct", INSENTP, INSENTP),
    _rule("question_exclamation", "[?!]", "[?!]+"),
    _rule("sentence_punct", "[.\u00a1\u00bf\u037e\u0589\u061f\u06d4\u0700-\u0702\u07fa\u3002]",
          "[.\u00a1\u00bf\u037e\u0589\u061f\u06d4\u0700-\u0702\u07fa\u3002]"),
    _rule("equals", "=", "="),
    _rule("slash", "/", "/"),
    _rule("hyphenated_period_comma", "[A-Za-z0-9]", HTHING + "\\.", _emit(_no_soft_hyphens),
          trail=INSENTP),
    _rule("hyphenated", "[A-Za-z0-9]", HTHING, _emit(_no_soft_hyphens)),
    _rule("thing_period_comma", f"(?:{_LD})", THING + "\\.", trail=INSENTP),
    _rule("thing", f"(?:{_LD})", THING),
    _rule("filename", _LD_WIDE, FILENAME, trail=f"(?:{SPACENL}|[.?!,])"),
    _rule("caps_amp_period_comma", "[A-Z]", THINGA + "\\.", _emit(lambda t: re.sub("(?i)&amp;", "&", t)),
          trail=INSENTP),
    _rule("caps_amp", "[A-Z]", THINGA, _emit(lambda t: re.sub("(?i)&amp;", "&", t))),
    _rule("open_single_quote", "'", "'", _emit(lambda t: "`"), trail="[A-Za-z][^ \\t\\n\\r\\u00a0]"),
    _rule("aux", "['\u0092\u2019&]", REDAUX, _emit(lambda t: _latex_quotes(t, False))),
    _rule("quotes", "['\u0092\u2019&`\u2018-\u201f\u0091-\u0094\u2039\u203a\u00ab\u00bb]", QUOTES_ALTS,
          _emit(lambda t: _latex_quotes(t, False))),
    _rule("duck_feet", "[<>]", "<<|>>"),
    _rule("symbol", MISCSYMBOL, MISCSYMBOL),
    _rule("space", "[\x00 \\t\u00a0\u2000-\u200b\u200e\u200f\u3000\ufeff]",
          f"\\x00|{SPACE}+|[\\u200b\\u200e\\u200f\\ufeff]", _skip),
    _rule("newline", "[\r\n\u2028\u2029\u000b\u000c]", NEWLINE, _skip),
    _rule("nbsp_entity", "&", ci("&nbsp;"), _skip),
]

# Assimilations are the only pure-letter words that do not come out whole.
_ASSIMILATIONS = frozenset({"cannot", "gonna", "gotta", "lemme", "gimme", "wanna"})
_PLAIN_WORD = re.compile("[A-Za-z]+(?=[ \n]|$)")


@lru_cache(maxsize=4096)
def _candidates(ch: str) -> tuple[_Rule, ...]:
    """The rules whose match can start with ``ch`` (in rule order, for JFlex's tie-break)."""
    return tuple(r for r in _RULES if r.first.match(ch))


def _to_utf16_units(text: str) -> str:
    """Characters beyond U+FFFF as surrogate pairs, i.e. the UTF-16 code units the Java lexer
    scans (so a URL may end inside an emoji's pair exactly as in Java)."""
    if not text or max(text) <= "\uffff":
        return text
    return "".join(ch if ch <= "\uffff" else chr(0xD800 + ((ord(ch) - 0x10000) >> 10))
                   + chr(0xDC00 + ((ord(ch) - 0x10000) & 0x3FF)) for ch in text)


def _from_utf16_units(token: str) -> str:
    """Join surrogate pairs back into characters (lone halves are dropped, as Java's UTF-8
    output would write them as '?')."""
    if not any("\ud800" <= ch <= "\udfff" for ch in token):
        return token
    return token.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace").replace("\ufffd", "?")


def _scan(text: str) -> list[tuple[int, str]]:
    """Tokenise ``text``: a list of (start offset, raw PTB token); ``text`` is in UTF-16 code
    units (see :func:`_to_utf16_units`)."""
    out: list[tuple[int, str]] = []
    pos, n = 0, len(text)
    while pos < n:
        plain = _PLAIN_WORD.match(text, pos)
        if plain is not None and plain.group().lower() not in _ASSIMILATIONS:
            out.append((pos, plain.group()))
            pos = plain.end()
            continue
        best: tuple[int, _Rule, re.Match] | None = None
        for rule in _candidates(text[pos]):
            for pattern in rule.patterns:
                m = pattern.match(text, pos)
                if m is not None and (best is None or m.end() - pos > best[0]):
                    best = (m.end() - pos, rule, m)
        if best is None:          # untokenizable character: the Java tokenizer deletes it
            pos += 1
            continue
        tokens, consumed = best[1].action(best[2].group("tok"))
        out.extend((pos, t) for t in tokens)
        pos += max(consumed, 1)
    return out


def ptb_tokenize_lines(lines: Sequence[str]) -> list[list[str]]:
    """Raw PTB tokens (before lower-casing), one list per line, scanning the lines joined by
    newlines as the Java tokenizer does with ``-preserveLines``.  Lines must not contain line
    breaks (see :func:`one_line`)."""
    result: list[list[str]] = [[] for _ in lines]
    units = [_to_utf16_units(line) for line in lines]
    starts, offset = [], 0
    for line in units:
        starts.append(offset)
        offset += len(line) + 1
    for start, tok in _scan("\n".join(units)):
        result[bisect.bisect_right(starts, start) - 1].append(_from_utf16_units(tok))
    return result


def ptb_tokenize(text: str) -> list[str]:
    """Raw PTB tokens of one text (as if it were a file of one line)."""
    return ptb_tokenize_lines([one_line(text)])[0]


def coco_clean(tokens: Iterable[str]) -> str:
    """COCO's post-processing of one tokenised line: lower-case it (``-lowerCase`` in Java),
    strip trailing white space (``str.rstrip``, which also strips Unicode spaces a token may end
    with), split on single spaces and drop punctuation tokens."""
    return coco_clean_line(" ".join(tok.lower() for tok in tokens))


def coco_clean_line(line: str) -> str:
    """COCO's post-processing of one line of the Java tokenizer's output (already lower-cased):
    strip trailing white space, split on single spaces, drop the :data:`PUNCTUATIONS` tokens."""
    return " ".join(w for w in line.rstrip().split(" ") if w not in _PUNCT_SET)


def coco_tokenize_python(texts: Sequence[str]) -> list[str]:
    """COCO-tokenised form of each text, computed without Java.  Equals
    ``pycocoevalcap``'s PTBTokenizer run on the same texts in the same order."""
    return [coco_clean(toks) for toks in ptb_tokenize_lines([one_line(t) for t in texts])]
