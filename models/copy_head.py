"""A copy head for retrieval models: the decoder may copy tokens of the retrieved texts.

With ``model.retrieval.copy``, T5's next-token distribution becomes a pointer-generator mixture
(See et al. 2017, "Get To The Point"):

    p(w) = g * softmax(vocabulary logits)(w) + (1 - g) * sum over retrieved positions r with
           token w of a_r

where ``a`` is an attention of the decoder state over the T5 encoder's outputs at the retrieved
texts' tokens (padding masked out) and ``g = sigmoid(gate([h, context]))`` says how much to write
from the vocabulary rather than copy. On the 163 BX training clips a T5 trained from scratch
does not learn to copy a retrieved sentence through cross-attention alone (it wrote no training
caption verbatim, while copying the most central retrieved text scores 3x its CIDEr-D); the
explicit copy distribution makes copying one attention away and editing still possible.

The head works through two forward hooks, so T5 itself (its weights, LoRA wrapping,
``save_pretrained``, ``generate``) is untouched:

- on T5's encoder: keep its output at the last ``R`` positions, the retrieved tokens (the
  captioner places them last and announces their ids with :meth:`CopyHead.expect`);
- on T5's ``lm_head``: replace the logits by ``log p`` above. Log-probabilities are valid
  logits: softmax and log-softmax leave them unchanged, so teacher-forced loss, beam search,
  sampling, reranking and the self-critical stage all see the mixture.

``generate`` runs the encoder once for ``N`` clips and the decoder on ``N * beams`` rows
(``repeat_interleave`` order); the head repeats its memory the same way.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

PROB_FLOOR = 1e-12  # copy probabilities are floored before the log (no -inf, no NaN gradients)


class CopyHead(nn.Module):
    def __init__(self, d_model: int) -> None:
        super().__init__()
        self.attend = nn.Linear(d_model, d_model, bias=False)  # decoder state -> query over retrieved tokens
        self.gate = nn.Linear(2 * d_model, 1)  # [decoder state, copy context] -> generate-vs-copy logit
        self._ids: torch.Tensor | None = None  # (N, R) retrieved token ids
        self._mask: torch.Tensor | None = None  # (N, R) 1 for real tokens
        self._memory: torch.Tensor | None = None  # (N, R, D) T5 encoder outputs at those tokens
        self._handles: list[Any] = []

    # ----------------------------------------------------------------------------------------
    def attach(self, t5: Any) -> None:
        """Hook T5's encoder and output layer (a peft wrapper's base modules alike).

        The hooks are closures, not bound methods, so a deep copy of T5 (the export's merged
        copy) calls this same head instead of a stale copy of it."""
        for handle in self._handles:
            handle.remove()
        head = self

        def keep_memory(module: nn.Module, args: Any, output: Any) -> None:
            states = output[0] if isinstance(output, (tuple, list)) else output.last_hidden_state
            head._remember_states(states)

        def mix(module: nn.Module, args: Any, output: torch.Tensor) -> torch.Tensor:
            return head.log_probs(args[0], output)

        self._handles = [t5.get_encoder().register_forward_hook(keep_memory),
                         t5.get_output_embeddings().register_forward_hook(mix)]

    def expect(self, ids: torch.Tensor, mask: torch.Tensor) -> None:
        """The retrieved token ids (N, R) and mask (N, R) that end the next encoder input."""
        self._ids, self._mask, self._memory = ids, mask, None

    def _remember_states(self, states: torch.Tensor) -> None:
        """(N', L, D) encoder outputs -> the last R positions (N', R, D) as copy memory."""
        if self._ids is None:
            raise RuntimeError("copy head: the encoder ran without retrieved texts (call expect() first)")
        self._memory = states[:, -self._ids.shape[1]:]

    # ----------------------------------------------------------------------------------------
    @staticmethod
    def _rows(tensor: torch.Tensor, rows: int) -> torch.Tensor:
        """Repeat each row of ``tensor`` so it has ``rows`` rows (beams / samples of one clip together)."""
        if tensor.shape[0] == rows:
            return tensor
        if rows % tensor.shape[0]:
            raise RuntimeError(f"copy head: {rows} decoder rows for {tensor.shape[0]} encoder rows")
        return tensor.repeat_interleave(rows // tensor.shape[0], dim=0)

    def log_probs(self, hidden: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        """Decoder states (M, T, D) and vocabulary logits (M, T, V) -> log p of the mixture (M, T, V)."""
        if self._memory is None:
            raise RuntimeError("copy head: the decoder ran before the encoder saw retrieved texts")
        m = hidden.shape[0]
        memory = self._rows(self._memory, m).float()  # (M, R, D)
        ids = self._rows(self._ids, m)  # (M, R)
        mask = self._rows(self._mask, m).bool()  # (M, R)
        hidden = hidden.float()
        scores = torch.einsum("mtd,mrd->mtr", self.attend(hidden), memory) / memory.shape[-1] ** 0.5  # (M, T, R)
        scores = scores.masked_fill(~mask[:, None, :], torch.finfo(scores.dtype).min)
        attention = scores.softmax(dim=-1)  # (M, T, R)
        context = attention @ memory  # (M, T, D)
        gate = self.gate(torch.cat([hidden, context], dim=-1))  # (M, T, 1)
        copy = torch.zeros_like(logits, dtype=torch.float32)  # (M, T, V)
        copy.scatter_add_(-1, ids[:, None, :].expand(-1, hidden.shape[1], -1), attention * mask[:, None, :])
        write = F.logsigmoid(gate) + logits.float().log_softmax(dim=-1)  # log(g * p_vocab)
        paste = F.logsigmoid(-gate) + copy.clamp_min(PROB_FLOOR).log()  # log((1 - g) * p_copy)
        return torch.logaddexp(write, paste).to(logits.dtype)
