"""A motion-text embedding beside the captioner: what a clip's texts are about, as a direction.

Two small heads put a clip and a text into one unit-length space (``model.embedding.dim``):

- the motion head pools the STA-GCN features the projection reads (a masked mean over frames and
  joints) and maps them with one linear layer;
- the text head is a bag of the captioner's own token ids (a mean of learnt token vectors, the
  end-of-sequence token left out), then one linear layer. It embeds any text the tokenizer reads,
  so generated captions can be scored against a clip as well as the training texts.

Training adds ``model.embedding.weight`` times the symmetric InfoNCE loss of the batch
(:func:`info_nce`) to the captioner's cross-entropy: each sample's motion must pick out its own
text among the batch's texts, and each text its motion. Samples whose texts are identical (BX
repeats coaching texts across clips) are positives of one another, not negatives.

At inference the cosine of a clip and a text is one more term of the reranking score
(``eval.rerank_embedding``), and the test split's motion-to-text retrieval (R@1, R@3) measures the
embedding itself (:func:`retrieval_scores`).
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["MotionTextEmbedding", "info_nce", "same_text", "token_bags"]


def same_text(texts: Sequence[str]) -> torch.Tensor:
    """(N, N) bool: samples i and j carry the same text (the diagonal is True)."""
    index = {t: i for i, t in enumerate(dict.fromkeys(texts))}
    ids = torch.tensor([index[t] for t in texts])
    return ids[:, None] == ids[None, :]


def info_nce(motion: torch.Tensor, text: torch.Tensor, positives: torch.Tensor, temperature: float) -> torch.Tensor:
    """Symmetric InfoNCE of unit vectors ``motion`` (N, D) and ``text`` (N, D).

    ``positives`` (N, N) bool marks the texts that are right for each motion (at least the
    diagonal). Motion i's loss is ``-log(sum_{j in P_i} exp(s_ij) / sum_j exp(s_ij))`` with
    ``s = motion @ text.T / temperature``; text j's loss is the same over the column. The result
    is the mean of the two directions' means.
    """
    logits = motion.float() @ text.float().T / temperature  # (N, N), in float32 under autocast too
    neg_inf = torch.finfo(logits.dtype).min
    kept = logits.masked_fill(~positives, neg_inf)
    to_text = torch.logsumexp(logits, dim=1) - torch.logsumexp(kept, dim=1)  # (N,)
    to_motion = torch.logsumexp(logits, dim=0) - torch.logsumexp(kept, dim=0)  # (N,)
    return 0.5 * (to_text.mean() + to_motion.mean())


def token_bags(tokenizer: Any, texts: Sequence[str], device: torch.device | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids (N, L) of ``texts`` and their mask (N, L), end-of-sequence and padding masked out."""
    ids = tokenizer(list(texts), padding=True, return_tensors="pt")["input_ids"]  # (N, L)
    mask = (ids != tokenizer.pad_token_id) & (ids != tokenizer.eos_token_id)
    return ids.to(device), mask.to(device)


class MotionTextEmbedding(nn.Module):
    """The motion head and the text head; see the module docstring."""

    def __init__(self, motion_width: int, vocab_size: int, dim: int, temperature: float = 0.1,
                 weight: float = 1.0) -> None:
        super().__init__()
        self.motion_head = nn.Linear(motion_width, dim)
        self.token_vectors = nn.Embedding(vocab_size, dim)
        self.text_head = nn.Linear(dim, dim)
        self.temperature = temperature
        self.weight = weight

    def motion(self, feats: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Unit vectors (N, D) of encoder features (N, T', V, C) with their frame mask (N, T')."""
        w = mask.to(feats.dtype)[:, :, None, None]  # (N, T', 1, 1)
        count = mask.to(feats.dtype).sum(dim=1, keepdim=True) * feats.shape[2]  # (N, 1) frames x joints
        pooled = (feats * w).sum(dim=(1, 2)) / count.clamp_min(1.0)  # (N, C)
        return F.normalize(self.motion_head(pooled.float()), dim=-1)

    def text(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Unit vectors (N, D) of token ids (N, L) (``mask`` (N, L): the tokens that count)."""
        w = mask.to(self.token_vectors.weight.dtype).unsqueeze(-1)  # (N, L, 1)
        bag = (self.token_vectors(ids.clamp_min(0)) * w).sum(dim=1) / w.sum(dim=1).clamp_min(1.0)  # (N, D)
        return F.normalize(self.text_head(bag), dim=-1)

    def loss(self, motion: torch.Tensor, labels: torch.Tensor, texts: Sequence[str], eos_id: int) -> torch.Tensor:
        """The weighted InfoNCE of a training batch: ``labels`` (N, L) are the target token ids
        (-100 on padding), ``texts`` the target strings (which say which samples share a text)."""
        mask = (labels >= 0) & (labels != eos_id)
        text = self.text(labels, mask)  # (N, D)
        positives = same_text(texts).to(motion.device)
        return self.weight * info_nce(motion, text, positives, self.temperature)
