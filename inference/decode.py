"""Running a trained model: load a run or an export, and decode captions, through one function.

:func:`decode_batch` is the only place a batch is captioned: training's evaluation
(:mod:`training.evaluate`), ``caption.py`` and the web page (:mod:`inference.page`) call it, so a
run's test captions, ``caption.py``'s and the page's agree (the pictures decode greedily with
T5's attention outputs, which they draw). With ``eval.rerank`` it
keeps, of that many beam candidates (and ``eval.rerank_samples`` sampled ones, drawn from each
clip's own seed), the one with the highest CIDEr-D against the clip's retrieved training texts.
:func:`caption_records` captions records read by :mod:`inference.inputs`.
"""
from __future__ import annotations

import logging
import zlib
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from dataloaders import retrieval
from inference.inputs import UsageError, build_dataset, collator_for, iter_batches

__all__ = ["load_model", "clip_seed", "decode_batch", "reranked_captions", "generation_kwargs", "caption_records"]

log = logging.getLogger("motion2text.inference")


# ============================================================================ the model ======
def load_model(run: str | Path | None = None, ckpt: str | Path | None = None,
               device: str = "auto") -> tuple[Any, Any, Path]:
    """(captioner in eval mode on ``device``, its config, the checkpoint path) from a run or a file;
    ``run`` may also be an export folder (``python -m models.export``), whose path is returned."""
    from models import export
    from models.build import checkpoint_of_run, load_trained

    if (run is None) == (ckpt is None):
        raise UsageError("give exactly one of --run RUN_DIR and --ckpt FILE")
    if run is not None and export.is_export(run):
        path = Path(run)
        model, cfg = export.load_export(path)
    else:
        path = Path(ckpt) if ckpt is not None else checkpoint_of_run(run)
        model, cfg = load_trained(path)
    target = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else
                          "cpu" if device == "auto" else device)
    return model.to(target).eval(), cfg, path


# ============================================================================ generation =====
def clip_seed(seed: int, name: str) -> int:
    """A clip's own random seed, from the run's seed and the clip's name (not its batch or rank)."""
    return zlib.crc32(f"{int(seed)}:{name}".encode("utf-8"))


def clip_slice(batch: Mapping[str, Any], i: int) -> dict[str, Any]:
    """Clip ``i`` of a collated batch as a batch of one (per-clip tensors and lists cut, the rest kept)."""
    n = len(batch["video_names"])
    out = {}
    for key, value in batch.items():
        if (torch.is_tensor(value) and value.dim() and value.shape[0] == n) or \
                (isinstance(value, list) and len(value) == n):
            out[key] = value[i:i + 1]
        else:
            out[key] = value
    return out


def decode_batch(model: Any, batch: Mapping[str, Any], cfg: Any, *, rerank: int | None = None,
                 **generate: Any) -> list[list[str]]:
    """The captions of one collated batch, one list per clip, decoded as the run decodes.

    ``rerank`` (default: the run's ``eval.rerank``): with a value above 0, one caption per clip,
    chosen by :func:`reranked_captions` with the run's ``eval.rerank_*`` keys and seed; otherwise
    ``model.generate(batch, **generate)``'s ``num_return_sequences`` texts per clip. ``generate``
    defaults to the run's ``eval.num_beams`` and ``eval.max_new_tokens``; reranking reads only
    ``num_beams`` and ``max_new_tokens`` of it.
    """
    rerank = cfg.eval.rerank if rerank is None else rerank
    generate = {"num_beams": cfg.eval.num_beams, "max_new_tokens": cfg.eval.max_new_tokens, **generate}
    if rerank:
        if getattr(model, "retriever", None) is None:
            raise UsageError("--rerank needs a run trained with retrieval (model.retrieval.k or eval.rerank)")
        best = reranked_captions(model, batch, candidates=rerank, samples=cfg.eval.rerank_samples,
                                 temperature=cfg.eval.rerank_temperature, num_beams=int(generate["num_beams"]),
                                 max_new_tokens=int(generate["max_new_tokens"]), seed=cfg.seed,
                                 source=cfg.eval.rerank_candidates, logprob_weight=cfg.eval.rerank_logprob)
        return [[text] for text in best]
    per_clip = int(generate.get("num_return_sequences", 1))
    texts = model.generate(dict(batch), **generate)  # (N * per_clip,) texts, each clip's together
    return [texts[i * per_clip:(i + 1) * per_clip] for i in range(len(batch["video_names"]))]


def reranked_captions(model: Any, batch: Mapping[str, Any], *, candidates: int, samples: int = 0,
                      temperature: float = 1.0, num_beams: int = 1, max_new_tokens: int = 64,
                      seed: int = 0, source: str = "generated", logprob_weight: float = 0.0) -> list[str]:
    """One caption per clip: of ``candidates`` beam candidates and ``samples`` sampled ones, the
    one with the highest CIDEr-D against the clip's pool of retrieved training texts
    (``eval.rerank``, ``eval.rerank_samples``). Each clip's samples are drawn from
    :func:`clip_seed` (pure sampling at ``temperature``), so neither the batch a clip falls in
    nor the rank that captions it changes them; training's evaluation and ``caption.py`` agree.

    ``source`` (``eval.rerank_candidates``): ``"generated"`` (the above), ``"both"`` (the pool's
    texts are candidates too, each scored against the others), ``"retrieved"`` (the pool's texts
    alone: nothing is generated, the model only scores) or ``"gated"`` (``"retrieved"`` for the
    clips the batch marks ``familiar``, whose nearest training clip is likely of their own learner,
    ``"generated"`` for the others; see :meth:`dataloaders.retrieval.Retriever.familiar`).
    ``logprob_weight`` (``eval.rerank_logprob``): each candidate's score gains that weight times
    the model's log-probability of it given the clip
    (:meth:`models.captioner.Captioner.text_log_probs`); under ``"gated"`` only the familiar
    clips' retrieved texts are so scored.
    The global random state is changed; callers that care fork it."""
    n = len(batch["video_names"])
    retrieved = retrieved_flags(batch, source)  # (N,): which clips rerank their pool's texts alone or too
    groups: list[list[str]] = [[] for _ in range(n)]
    if source != "retrieved":
        written = dict(batch)  # every clip's beams, so that a clip's candidates do not depend on the gate
        texts = model.generate(written, num_beams=max(candidates, num_beams), num_return_sequences=candidates,
                               max_new_tokens=max_new_tokens)  # (N * candidates,), each clip's together
        for i, name in enumerate(batch["video_names"]):
            if source == "gated" and retrieved[i]:
                continue  # a familiar clip: its pool's texts alone
            groups[i] += texts[i * candidates:(i + 1) * candidates]
            if samples:
                torch.manual_seed(clip_seed(seed, name))
                groups[i] += model.generate(clip_slice(written, i), do_sample=True, top_k=0, temperature=temperature,
                                            num_return_sequences=samples, max_new_tokens=max_new_tokens)
    log_probs = None
    if logprob_weight:
        lists = retrieval.candidate_lists(groups, batch["pools"], retrieved)
        if source == "gated":  # the weight scores familiar clips' retrieved texts; the others decode as generated
            scored = model.text_log_probs(dict(batch), [c if f else [] for c, f in zip(lists, retrieved)])
            log_probs = [s if f else np.zeros(len(c)) for s, c, f in zip(scored, lists, retrieved)]
        else:
            log_probs = model.text_log_probs(dict(batch), lists)
    return retrieval.rerank(groups, batch["pools"], model.retriever.df, retrieved=retrieved, log_probs=log_probs,
                  weight=logprob_weight)


def retrieved_flags(batch: Mapping[str, Any], source: str) -> list[bool]:
    """For each clip of the batch, whether its pool's texts are candidates under ``source``
    (``eval.rerank_candidates``): all clips for ``both`` and ``retrieved``, none for ``generated``,
    the batch's ``familiar`` clips for ``gated``."""
    n = len(batch["video_names"])
    if source != "gated":
        return [source != "generated"] * n
    familiar = batch.get("familiar")
    if familiar is None or any(f is None for f in familiar):
        raise UsageError("eval.rerank_candidates=gated needs each clip's familiar flag in the batch "
                         "(set with the pools by dataloaders.build.retrieval_fields)")
    return [bool(f) for f in familiar]


def generation_kwargs(num_beams: int = 1, sample: bool = False, temperature: float | None = None,
                      top_p: float | None = None, num_return_sequences: int = 1,
                      max_new_tokens: int = 64) -> dict[str, Any]:
    """Checked keyword arguments for ``T5.generate``."""
    if num_beams < 1 or num_return_sequences < 1 or max_new_tokens < 1:
        raise UsageError("--num_beams, --num_return_sequences and --max_new_tokens must be >= 1")
    if not sample and num_return_sequences > num_beams:
        raise UsageError(f"--num_return_sequences {num_return_sequences} needs --sample or "
                         f"--num_beams >= {num_return_sequences} (greedy/beam search keeps "
                         f"{num_beams} hypothesis(es))")
    if not sample and (temperature is not None or top_p is not None):
        raise UsageError("--temperature and --top_p only apply with --sample")
    if temperature is not None and temperature <= 0:
        raise UsageError(f"--temperature must be > 0, got {temperature}")
    if top_p is not None and not 0 < top_p <= 1:
        raise UsageError(f"--top_p must be in (0, 1], got {top_p}")
    kwargs: dict[str, Any] = dict(num_beams=num_beams, do_sample=sample,
                                  num_return_sequences=num_return_sequences, max_new_tokens=max_new_tokens)
    if temperature is not None:
        kwargs["temperature"] = temperature
    if top_p is not None:
        kwargs["top_p"] = top_p
    return kwargs


@torch.no_grad()
def caption_records(model: Any, cfg: Any, records: Sequence[dict],
                    standards: Mapping[str, np.ndarray] | None = None, *, batch_size: int = 16,
                    segment: str = "auto", seed: int = 0, progress: bool = False,
                    source: str = "<inputs>", rerank: int = 0, **generate: Any) -> dict[str, list[str]]:
    """``{video_name: [texts]}``: ``num_return_sequences`` texts per clip, clips in input order.

    ``records`` carry their standard's name in ``motion_type`` (see
    :func:`inference.inputs.pair_with_standards`). ``generate`` are ``T5.generate`` arguments,
    e.g. from :func:`generation_kwargs` (default: greedy, 64 new tokens). ``seed`` makes sampling
    repeatable (reranking draws from the run's own seed instead). ``source`` names the inputs in
    error messages (e.g. the files the records came from). ``rerank`` (a retrieval run's
    ``eval.rerank``): one caption per clip, see :func:`decode_batch`.
    """
    from tqdm import tqdm

    generate = {"num_beams": 1, "max_new_tokens": 64, **generate}
    dataset = build_dataset(model, cfg, records, standards, segment, source)
    device = next(model.parameters()).device
    torch.manual_seed(seed)
    model.eval()
    if rerank and getattr(model, "retriever", None) is None:
        raise UsageError("--rerank needs a run trained with retrieval (model.retrieval.k or eval.rerank)")
    captions: dict[str, list[str]] = {}
    batches = iter_batches(dataset, batch_size, device, collator_for(model, cfg))
    for batch in tqdm(batches, total=-(-len(dataset) // batch_size), desc="captioning",
                      disable=not progress, leave=False):
        captions.update(zip(batch["video_names"], decode_batch(model, batch, cfg, rerank=rerank, **generate)))
    return captions
