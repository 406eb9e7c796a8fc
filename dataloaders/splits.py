"""Validation splits and learner-disjoint folds.

The learner of a clip is its ``learner`` field when the record has one, else the video name's
prefix before the first ``_`` (BX: ``"2_back_5"`` is learner ``"2"``). A split by learner puts
every clip of a learner on one side, so a model chosen on validation has not seen that learner's
body proportions or the coach's instructions for them.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from configs.schema import GROUP_BY



def learner_of(record: Mapping[str, Any]) -> str:
    learner = record.get("learner")
    if learner is not None and str(learner) != "":
        return str(learner)
    return str(record["video_name"]).split("_", 1)[0]


def _groups(records: Sequence[Mapping[str, Any]], group_by: str) -> dict[str, list[int]]:
    """Group key -> record indices, in first-seen order."""
    if group_by not in GROUP_BY:
        raise ValueError(f"group_by: expected one of {', '.join(GROUP_BY)}, found {group_by!r}")
    groups: dict[str, list[int]] = {}
    for i, rec in enumerate(records):
        key = learner_of(rec) if group_by == "learner" else str(rec["video_name"])
        groups.setdefault(key, []).append(i)
    return groups


def split_off(records: Sequence[Mapping[str, Any]], fraction: float, group_by: str = "none",
              seed: int = 0) -> tuple[list, list]:
    """``(rest, held_out)``: about ``fraction`` of the clips held out, whole groups at a time.

    Groups are taken in a seeded random order until the held-out part has at least
    ``round(fraction * n)`` clips (at least one group; never every group). Both parts keep the
    records' original order.
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction: expected a number between 0 and 1, found {fraction!r}")
    groups = _groups(records, group_by)
    if len(groups) < 2:
        raise ValueError(f"cannot hold out a part of {len(records)} clip(s) in {len(groups)} "
                         f"group(s) (group_by={group_by}): at least 2 groups are needed")
    order = list(groups)
    np.random.default_rng(seed).shuffle(order)
    target = max(1, round(fraction * len(records)))
    held: set[int] = set()
    for key in order[:-1]:
        if len(held) >= target:
            break
        held.update(groups[key])
    rest = [r for i, r in enumerate(records) if i not in held]
    return rest, [r for i, r in enumerate(records) if i in held]


def learner_folds(records: Sequence[Mapping[str, Any]], k: int, seed: int = 0) -> list[list[str]]:
    """``k`` disjoint lists of learners covering every learner, in a seeded random order, sizes
    differing by at most one (BX: 10 learners, 5 folds of 2)."""
    learners = list(_groups(records, "learner"))
    if not 2 <= k <= len(learners):
        raise ValueError(f"folds: expected 2 <= k <= {len(learners)} (the number of learners), found {k}")
    np.random.default_rng(seed).shuffle(learners)
    return [sorted(learners[i::k]) for i in range(k)]
