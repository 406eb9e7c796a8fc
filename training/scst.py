"""Self-critical sequence training (Rennie et al. 2017) with the "new self-critical" baseline
(Luo 2020): the reward of a sampled caption is its CIDEr-D against the clip's references, and its
baseline the mean reward of the clip's other K - 1 samples, so no greedy decode is needed and the
advantages of a clip sum to zero.

The end of the caption counts: a caption that ended (its end-of-sequence token was sampled) and
every reference get the word :data:`EOS_WORD` appended before scoring, so stopping at the right
place earns n-grams and a caption cut off by the length limit does not (Rennie et al. score the
end token too). Document frequencies come from the training references (with that word), as
CIDEr-D's "corpus" should when the test clips are unseen. The reward is
:func:`evaluation.quality.cider_d_matrix`, vectorised and equal to pycocoevalcap's CIDEr-D.

The loss (``Captioner.forward`` with ``sampled_ids``) is ``-mean_i (r_i - b_i) * log p(sample_i)``
with ``log p`` summed over the sampled tokens through the first end-of-sequence token.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from configs import schema
from core.io import load_checkpoint
from dataloaders.build import Data
from dataloaders.sampler import length_grouped_batches
from training import distributed
from training.trainer import Trainer

__all__ = ["EOS_WORD", "reward_corpus", "rewards", "leave_one_out_advantages", "sample_batch", "begin_scst",
           "scst_batches"]

log = logging.getLogger("motion2text")

EOS_WORD = "endofcaption"


def _with_end(text: str) -> str:
    return f"{text} {EOS_WORD}"


def reward_corpus(references: Sequence[Sequence[str]]) -> Any:
    """Document frequencies of the training references (one document per clip, ends marked)."""
    from core.cider import document_frequency

    return document_frequency([[_with_end(t) for t in refs] for refs in references])


def rewards(texts: Sequence[str], ended: Sequence[bool], references: Sequence[Sequence[str]], samples: int,
            df: Any) -> np.ndarray:
    """CIDEr-D of each sampled caption against its clip's references: ``(N, samples)`` for N
    clips whose ``samples`` captions come one clip after another in ``texts``."""
    from core.cider import cider_d_matrix

    cands = [_with_end(t) if end else t for t, end in zip(texts, ended)]
    refs = [[_with_end(t) for t in r] for r in references]
    scores = cider_d_matrix(cands, refs, df)  # (N * samples, N)
    own = np.repeat(np.arange(len(refs)), samples)
    return scores[np.arange(len(cands)), own].reshape(len(refs), samples)


def leave_one_out_advantages(reward: np.ndarray) -> np.ndarray:
    """``r_ik - mean_{j != k} r_ij``: each sample against the mean of its clip's other samples."""
    k = reward.shape[1]
    baseline = (reward.sum(axis=1, keepdims=True) - reward) / (k - 1)
    return reward - baseline


@torch.no_grad()
def sample_batch(model: Any, batch: dict, samples: int, max_new_tokens: int, df: Any) -> np.ndarray:
    """Sample ``samples`` captions per clip (eval mode, so BatchNorm statistics stay untouched) and
    add ``sampled_ids`` (N * samples, L) and ``advantages`` (N * samples,) to ``batch``; returns
    the rewards (N, samples)."""
    was_training = model.training
    model.eval()
    try:
        embeds, mask = model.encode(batch)  # (N, L, D)
        ids = model.t5.generate(inputs_embeds=embeds, attention_mask=mask, do_sample=True, top_k=0,
                                num_return_sequences=samples, max_new_tokens=max_new_tokens)  # (N * K, 1 + T)
    finally:
        model.train(was_training)
    eos = model.t5.config.eos_token_id
    texts = [t.strip() for t in model.tokenizer.batch_decode(ids, skip_special_tokens=True)]
    ended = (ids[:, 1:] == eos).any(dim=1).tolist()
    reward = rewards(texts, ended, batch["references"], samples, df)
    batch["sampled_ids"] = ids
    batch["advantages"] = torch.tensor(leave_one_out_advantages(reward).ravel(), dtype=torch.float32,
                                       device=ids.device)
    return reward


def begin_scst(trainer: Trainer, run_dir: Path, data: Data) -> None:
    """Enter the self-critical stage: from best.pt (the cross-entropy model validation chose) when
    there is one, with a fresh optimizer at ``train.scst.lr``."""
    p = trainer.progress
    best = run_dir / "checkpoints" / "best.pt"
    if data.val is not None and best.is_file():
        trainer.model.load_state_dict(load_checkpoint(best)["model"])
        log.info("self-critical stage starts from best.pt (validation %s %.4f at epoch %d)",
                 trainer.cfg.eval.metric, p.best_score, p.best_epoch)
    trainer.use_scst_optimizer()
    p.stage, p.scst_start, p.batch_in_epoch = "scst", p.epoch, 0
    s = trainer.cfg.train.scst
    log.info("self-critical stage: %d epochs, %d samples per clip, lr %g, reward CIDEr-D", s.epochs, s.samples, s.lr)


def scst_batches(data: Data, cfg: schema.Config, dist: distributed.Dist, epoch: int) -> list[list[int]]:
    """This rank's self-critical batches of one epoch: every training clip once (its first sample)."""
    clips = data.train.clip_sample_indices()
    lengths = data.train.sample_lengths()
    local = length_grouped_batches([lengths[i] for i in clips], cfg.train.scst.batch_size, world=dist.world,
                                   rank=dist.rank, seed=cfg.seed, epoch=epoch)
    return [[clips[j] for j in batch] for batch in local]
