"""Batching: pad clips to the longest in the batch, build the frame mask, tokenise the targets.

``Collator`` is a plain ``collate_fn``, so it works with any sampler (``DistributedSampler``
included) and with worker processes (it is picklable as long as its tokenizer is).

Every epoch brings the same target texts back, so the Collator keeps each text's token ids once
computed (up to ``cache_limit`` distinct texts) and pads them itself: the labels are exactly what
``tokenizer(texts, padding="longest", truncation=True, max_length=...)`` gives, at a fraction of
the cost (the tokenizer call dominates a collate without it; ``python -m bench.data`` measures it).
"""
from __future__ import annotations

from typing import Any, Sequence

import torch

__all__ = ["Collator", "IGNORE_INDEX", "pad_features"]

IGNORE_INDEX = -100  # label value the cross-entropy loss ignores


def pad_features(features: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack ``(C, T_i, V)`` tensors into ``(N, C, T_max, V)`` zero-padded at the end of time,
    with the bool frame mask ``(N, T_max)`` (True on real frames)."""
    lengths = torch.tensor([f.shape[1] for f in features], dtype=torch.long)  # (N,)
    channels, _, joints = features[0].shape
    t_max = int(lengths.max())
    x = features[0].new_zeros((len(features), channels, t_max, joints))  # (N, C, T, V)
    for i, f in enumerate(features):
        x[i, :, : f.shape[1]] = f
    mask = torch.arange(t_max)[None, :] < lengths[:, None]  # (N, T)
    return x, mask


class Collator:
    """``collate_fn`` for :class:`dataloaders.dataset.MotionTextDataset` items.

    Returns a dict with ``x`` (N, 6, T, V) float, ``mask`` (N, T) bool, ``std_x`` (N, 6, T, V) or
    ``None`` (when no item carries a standard), ``labels`` (N, L) long with -100 on padding (or
    ``None`` without a tokenizer), ``lengths`` (N,) long, ``video_names``, ``texts``,
    ``references``, ``motion_types``. ``T`` is the longest clip in this batch.
    """

    def __init__(self, tokenizer: Any = None, max_target_len: int = 128, cache_limit: int = 200_000,
                 retrieved_texts: int = 0, retrieved_max_tokens: int = 40) -> None:
        self.tokenizer = tokenizer
        self.max_target_len = max_target_len
        self.retrieved_texts = retrieved_texts  # retrieved texts per clip placed on the encoder side
        self.retrieved_max_tokens = retrieved_max_tokens  # tokens kept of each
        self.cache_limit = cache_limit
        self._ids: dict[str, list[int]] = {}  # text -> token ids (truncated, with eos, unpadded)

    def __call__(self, items: Sequence[dict[str, Any]]) -> dict[str, Any]:
        if not items:
            raise ValueError("Collator: cannot collate an empty batch")
        x, mask = pad_features([item["features"] for item in items])
        texts = [item["text"] for item in items]
        return {
            "x": x,
            "mask": mask,
            "std_x": self._standards(items, x.shape[2]),
            "labels": self._labels(texts),
            "lengths": mask.sum(dim=1),
            "video_names": [item["video_name"] for item in items],
            "texts": texts,
            "references": [item["references"] for item in items],
            "motion_types": [item.get("motion_type") for item in items],
            "pools": [item.get("pool") for item in items],
            "familiar": [item.get("familiar") for item in items],
            **self._retrieved([item.get("retrieved") for item in items]),
        }

    def _retrieved(self, per_item: Sequence[Sequence[str] | None]) -> dict[str, torch.Tensor]:
        """``retrieved_ids`` (N, R) and ``retrieved_mask`` (N, R): the first ``retrieved_texts``
        retrieved texts of each clip, each cut to ``retrieved_max_tokens`` tokens and ended by
        the end-of-sequence token, one after another; zero-padded (mask 0). Empty without a
        tokenizer or when the items carry no retrieved texts."""
        if self.tokenizer is None or not self.retrieved_texts or per_item[0] is None:
            return {}
        eos = self.tokenizer.eos_token_id
        rows = []
        for texts in per_item:
            texts = (texts or [])[:self.retrieved_texts]
            bodies = [ids[:-1] if ids and ids[-1] == eos else ids for ids in self._token_ids(texts)]
            row = [i for body in bodies for i in body[:self.retrieved_max_tokens - 1] + [eos]]
            rows.append(row or [eos])
        longest = max(len(r) for r in rows)
        ids = torch.tensor([r + [0] * (longest - len(r)) for r in rows], dtype=torch.long)  # (N, R)
        mask = torch.tensor([[1] * len(r) + [0] * (longest - len(r)) for r in rows], dtype=torch.long)
        return {"retrieved_ids": ids, "retrieved_mask": mask}

    @staticmethod
    def _standards(items: Sequence[dict[str, Any]], t_max: int) -> torch.Tensor | None:
        """The standards padded like ``x``; all items must carry one, or none."""
        standards = [item.get("standard") for item in items]
        present = [s is not None for s in standards]
        if not any(present):
            return None
        if not all(present):
            missing = [item["video_name"] for item, p in zip(items, present) if not p]
            raise ValueError(f"Collator: items {missing[:3]} carry no standard while others do; "
                             f"a batch needs a standard for every clip or for none")
        for item, std in zip(items, standards):
            if std.shape != item["features"].shape:
                raise ValueError(f"Collator: {item['video_name']!r}: standard shape "
                                 f"{tuple(std.shape)} != features shape "
                                 f"{tuple(item['features'].shape)}")
        std_x, _ = pad_features(standards)  # (N, C, T, V)
        return std_x

    def _labels(self, texts: list[str]) -> torch.Tensor | None:
        """Token ids (N, L) with -100 wherever the tokenizer would have padded (L: longest row)."""
        if self.tokenizer is None:
            return None
        rows = self._token_ids(texts)
        longest = max(len(r) for r in rows)
        left = getattr(self.tokenizer, "padding_side", "right") == "left"
        fill = [[IGNORE_INDEX] * (longest - len(r)) for r in rows]
        padded = [f + r if left else r + f for f, r in zip(fill, rows)]
        return torch.tensor(padded, dtype=torch.long)  # (N, L)

    def _token_ids(self, texts: list[str]) -> list[list[int]]:
        """Each text's ids, truncated to ``max_target_len``; unseen texts tokenised in one call."""
        missing = list(dict.fromkeys(t for t in texts if t not in self._ids))
        fresh = {}
        if missing:
            enc = self.tokenizer(missing, truncation=True, max_length=self.max_target_len)
            fresh = dict(zip(missing, (list(ids) for ids in enc["input_ids"])))
            room = self.cache_limit - len(self._ids)
            self._ids.update(list(fresh.items())[:max(room, 0)])
        return [self._ids[t] if t in self._ids else fresh[t] for t in texts]
