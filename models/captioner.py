"""The captioner: STA-GCN encoder -> (optional reference branch) -> projection -> T5.

The skeleton features become T5 encoder inputs through ``inputs_embeds``; T5's decoder writes
the text. With ``reference="subtract"`` the standard performance (already cropped to the aligned
segment and resampled to the learner's length by the dataset) goes through the same encoder, in
the same batch as the learner (one normalisation for both) but without gradient (no autograd
graph, no backward pass: it costs a forward pass), and the difference of the two feature maps is
concatenated to the learner's features before projection. Where no standard exists (pretraining), the learner's first frame
repeated over time stands in, so the branch sees "how far the pose moved from the start".

An optional text ``prompt`` (``model.prompt``, e.g. "Motion Instruction : ") is a task prompt on
the encoder side: its token embeddings (buffer ``prefix_ids``) are placed before the motion tokens,
as T5's task prefixes are. Target texts are never changed.

With retrieval (``model.retrieval.k > 0``, :mod:`dataloaders.retrieval`), the texts of the
nearest training clips arrive as ``retrieved_ids`` / ``retrieved_mask``; their token embeddings
follow the motion tokens on the encoder side, so the decoder can copy from them and edit them.
``retriever`` (set by training and by :func:`models.build.load_trained`) finds those texts for
new clips.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from configs.schema import REFERENCE_MODES



class Captioner(nn.Module):
    def __init__(self, encoder: nn.Module, projection: nn.Module, t5: nn.Module, tokenizer: Any,
                 reference: str = "none", prompt: str = "") -> None:
        super().__init__()
        if reference not in REFERENCE_MODES:
            raise ValueError(f"reference must be one of {REFERENCE_MODES}, got {reference!r}")
        self.encoder = encoder
        self.projection = projection
        self.t5 = t5
        self.tokenizer = tokenizer
        self.reference = reference
        self.last_attention: dict[str, torch.Tensor] = {}
        self.retriever: Any = None  # dataloaders.retrieval.Retriever of a retrieval model
        self.label_smoothing = 0.0  # training's train.label_smoothing (set by the trainer)
        ids = tokenizer(prompt, add_special_tokens=False)["input_ids"] if prompt else []
        self.register_buffer("prefix_ids", torch.tensor(ids, dtype=torch.long), persistent=False)

    # ----------------------------------------------------------------------------------------
    def standard_input(self, batch: dict) -> torch.Tensor:
        """The standard's input features (N, C, T, V); the first frame repeated when absent."""
        x = batch["x"]  # (N, C, T, V)
        std = batch.get("std_x")
        if std is not None:
            return std
        return x[:, :, :1].expand_as(x)  # (N, C, 1, V) -> (N, C, T, V)

    def encode(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """Skeletons -> T5 encoder inputs: (inputs_embeds (N, L, D), attention_mask (N, L)).

        With the reference branch, the learner and the standard go through the encoder as one
        batch: BatchNorm normalises both with the same statistics (the joint batch's in
        training, the running ones, which track that joint batch, at inference), so the
        difference of their features means the same in training and inference. The standard's
        rows run without gradient (``no_grad_rows``): no gradient reaches the encoder through
        them, neither through their features nor through their share of BatchNorm's statistics,
        and the backward pass does the learner's convolutions only.
        """
        x, mask = batch["x"], batch["mask"]  # (N, C, T, V), (N, T)
        n = x.shape[0]
        if self.reference == "subtract":
            both = torch.cat([x, self.standard_input(batch)], dim=0)  # (2N, C, T, V)
            feats, feat_mask, attention = self.encoder(both, torch.cat([mask, mask], dim=0), no_grad_rows=n)  # (2N, T', V, C')
            feats, std_feats, feat_mask = feats[:n], feats[n:].detach(), feat_mask[:n]  # (N, T', V, C') x 2
            attention = {k: v[:n] for k, v in attention.items()}
            feats = torch.cat([feats, feats - std_feats], dim=-1)  # (N, T', V, 2C')
        else:
            feats, feat_mask, attention = self.encoder(x, mask)  # (N, T', V, C'), (N, T')
        self.last_attention = attention
        tokens, token_mask = self.projection(feats, feat_mask)  # (N, L, D), (N, L)
        token_mask = token_mask.long()
        if self.prefix_ids.numel():
            n = tokens.shape[0]
            prompt = self.t5.get_input_embeddings()(self.prefix_ids)  # (P, D)
            prompt = prompt.to(tokens.dtype).unsqueeze(0).expand(n, -1, -1)  # (N, P, D)
            tokens = torch.cat([prompt, tokens], dim=1)  # (N, P + L, D)
            token_mask = torch.cat([token_mask.new_ones(n, prompt.shape[1]), token_mask], dim=1)  # (N, P + L)
        if batch.get("retrieved_ids") is not None:
            texts = self.t5.get_input_embeddings()(batch["retrieved_ids"]).to(tokens.dtype)  # (N, R, D)
            tokens = torch.cat([tokens, texts], dim=1)  # (N, L' + R, D)
            token_mask = torch.cat([token_mask, batch["retrieved_mask"].to(token_mask.dtype)], dim=1)
        return tokens, token_mask

    def forward(self, batch: dict) -> torch.Tensor:
        """Teacher-forced cross-entropy of the target texts (labels padded with -100).

        ``use_cache=False``: teacher forcing needs no key/value cache; T5's decoder would otherwise
        build one per call from a deep copy of its config, a new object every step that makes
        ``torch.compile`` recompile the forward at every step (``python -m bench.train_step --compile``).
        """
        embeds, attn = self.encode(batch)
        if batch.get("sampled_ids") is not None:
            return self.self_critical_loss(embeds, attn, batch["sampled_ids"], batch["advantages"])
        out = self.t5(inputs_embeds=embeds, attention_mask=attn, labels=batch["labels"], use_cache=False)
        if not self.label_smoothing:
            return out.loss
        logits = out.logits.float()  # (N, T, V)
        return nn.functional.cross_entropy(logits.flatten(0, 1), batch["labels"].flatten(), ignore_index=-100,
                                           label_smoothing=self.label_smoothing)

    def sequence_log_probs(self, embeds: torch.Tensor, attn: torch.Tensor, sampled: torch.Tensor) -> torch.Tensor:
        """Summed log-probabilities (N * K,) of sampled captions (N * K, 1 + T) (the decoder start
        token first, as ``generate`` returns them), through each one's first end-of-sequence token."""
        k = sampled.shape[0] // embeds.shape[0]
        embeds, attn = embeds.repeat_interleave(k, dim=0), attn.repeat_interleave(k, dim=0)  # (N * K, L, D)
        targets = sampled[:, 1:]  # (N * K, T)
        logits = self.t5(inputs_embeds=embeds, attention_mask=attn, decoder_input_ids=sampled[:, :-1],
                         use_cache=False).logits  # (N * K, T, V)
        token = torch.log_softmax(logits.float(), dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)  # (N * K, T)
        is_eos = (targets == self.t5.config.eos_token_id).long()
        before_end = (is_eos.cumsum(dim=1) - is_eos) == 0  # tokens up to and including the first EOS
        return (token * before_end).sum(dim=1)

    def self_critical_loss(self, embeds: torch.Tensor, attn: torch.Tensor, sampled: torch.Tensor,
                           advantages: torch.Tensor) -> torch.Tensor:
        """``-mean((r - b) * log p(sample))`` (training/scst.py)."""
        return -(advantages * self.sequence_log_probs(embeds, attn, sampled)).mean()

    @torch.no_grad()
    def text_log_probs(self, batch: dict, texts: list[list[str]]) -> list[torch.Tensor]:
        """The model's log-probability of given texts: ``texts[i]`` are clip i's, and each gets its
        summed token log-probability (nats, its end-of-sequence token included) given clip i,
        as teacher forcing reads it. Returns one (len(texts[i]),) float tensor per clip."""
        embeds, attn = self.encode(batch)  # (N, L, D), (N, L)
        out = []
        for i, clip_texts in enumerate(texts):
            if not clip_texts:
                out.append(torch.zeros(0))
                continue
            ids = self.tokenizer(list(clip_texts), padding=True, return_tensors="pt")["input_ids"]  # (C, T), EOS-ended
            start = ids.new_full((ids.shape[0], 1), self.t5.config.decoder_start_token_id)
            sequences = torch.cat([start, ids], dim=1).to(embeds.device)  # (C, 1 + T), as generate returns them
            out.append(self.sequence_log_probs(embeds[i:i + 1], attn[i:i + 1], sequences).cpu())
        return out

    @torch.no_grad()
    def generate(self, batch: dict, **generation: Any) -> list[str]:
        """Captions for a batch; ``generation`` goes to ``T5.generate`` (num_beams, do_sample, ...)."""
        embeds, attn = self.encode(batch)
        generation.setdefault("max_new_tokens", 64)
        ids = self.t5.generate(inputs_embeds=embeds, attention_mask=attn, **generation)
        return [t.strip() for t in self.tokenizer.batch_decode(ids, skip_special_tokens=True)]
