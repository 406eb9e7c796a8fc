"""docs/configuration.md is what ``python -m configs --markdown`` prints, and every key has a meaning."""
from __future__ import annotations

import difflib
from pathlib import Path

from configs import schema
from configs.__main__ import REGENERATE, field_comments, keys, main, markdown

REPO_ROOT = Path(__file__).resolve().parents[1]
PAGE = REPO_ROOT / "docs" / "configuration.md"


def test_committed_page_is_what_the_command_prints():
    printed, committed = markdown(), PAGE.read_text(encoding="utf-8")
    if printed != committed:
        diff = "".join(list(difflib.unified_diff(committed.splitlines(True), printed.splitlines(True),
                                                 "docs/configuration.md (committed)", "python -m configs --markdown"))[:40])
        raise AssertionError(f"docs/configuration.md is out of date with configs/schema.py; regenerate it "
                             f"with `{REGENERATE}`\n{diff}")


def test_every_key_is_on_the_page_with_its_meaning():
    rows = keys()
    assert [key for key, *_ in rows] == [line.split(" = ")[0].strip() for line in schema.describe_keys().splitlines()]
    unexplained = [key for key, _, _, meaning in rows if not meaning]
    assert not unexplained, (f"config keys without a comment beside their field in configs/schema.py (the "
                             f"meaning on docs/configuration.md): {', '.join(unexplained)}")
    page = PAGE.read_text(encoding="utf-8")
    assert all(f"| `{key}` |" in page for key, *_ in rows)


def test_comments_beside_or_above_a_field():
    source = ("class A:\n"
              "    x: int = 1  # beside x\n"
              "    # above y,\n"
              "    # two lines\n"
              "    y: str = '#not a comment'\n"
              "\n"
              "    z: int = 0\n")
    assert field_comments(source) == {("A", "x"): "beside x", ("A", "y"): "above y, two lines", ("A", "z"): ""}


def test_command_prints_the_page(capsys):
    main(["--markdown"])
    assert capsys.readouterr().out == markdown()
