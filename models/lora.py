"""LoRA adapters on T5 (``model.t5.lora``) with ``peft``, and the one way they are merged.

With ``model.t5.lora.r > 0`` the captioner's T5 is wrapped by ``peft`` (``PeftModelForSeq2SeqLM``):
the linear layers named in ``target_modules`` get low-rank adapters ``B @ A`` scaled by
``alpha / r``, T5's own weights stop training, and the STA-GCN encoder and the projection train as
before (unless ``train.freeze`` names them). The wrapping renames T5's tensors in the captioner's
state dict::

    plain:   t5.encoder.block.0.layer.0.SelfAttention.q.weight
    wrapped: t5.base_model.model.encoder.block.0.layer.0.SelfAttention.q.base_layer.weight
             t5.base_model.model.encoder.block.0.layer.0.SelfAttention.q.lora_A.default.weight
             t5.base_model.model.encoder.block.0.layer.0.SelfAttention.q.lora_B.default.weight

Rules that keep adapters from being dropped or merged twice:

* A checkpoint stores the wrapped state as is, with the config (``model.t5.lora``) and a record
  :func:`t5_record` (T5's architecture and the LoRA settings). Loading builds the same wrapping
  from them and loads strictly: a missing or unexpected adapter tensor is an error, never skipped.
* Merging (``W + alpha / r * B @ A``) happens only in :func:`merged_t5` / :func:`plain_state_dict`,
  always on a deep copy: the live, wrapped model is never changed. What comes out has plain names
  and no adapters, so there is nothing left to merge again.
* Finetuning from a checkpoint with adapters merges them once into plain weights first; a LoRA
  finetuning run then puts fresh adapters (``B = 0``, so the model starts equal to its source) over
  those weights (:mod:`training.finetune`).

``peft`` is imported only when LoRA is used.
"""
from __future__ import annotations

import copy
import json
import warnings
from typing import Any, Mapping

from configs.schema import LORA_TARGETS

__all__ = ["LORA_TARGETS", "ADAPTER_MARK", "lora_settings", "wrap", "is_wrapped", "base_t5", "merged_t5",
           "plain_state_dict", "plain_name", "has_adapters", "t5_record", "t5_config_dict"]

# T5's linear layers: attention (q, k, v, o) and feed-forward (wi, wo; wi_0 / wi_1 in gated T5 v1.1).
ADAPTER_MARK = ".lora_"  # every adapter tensor of peft's LoRA has this in its name
WRAPPED_PREFIX = "base_model.model."  # what peft puts before the wrapped model's own names
BASE_LAYER = ".base_layer"  # what peft puts between a targeted layer's name and its weight


def lora_settings(section: Any) -> dict | None:
    """``{"r", "alpha", "dropout", "target_modules"}`` of ``model.t5.lora``, or None when off (r == 0)."""
    if section is None:
        return None
    get = section.get if isinstance(section, Mapping) else lambda k: getattr(section, k)
    if not get("r"):
        return None
    return {"r": int(get("r")), "alpha": float(get("alpha")), "dropout": float(get("dropout")),
            "target_modules": sorted(get("target_modules"))}


def wrap(t5: Any, settings: dict | None) -> Any:
    """``t5`` with fresh LoRA adapters (``B = 0``: the output is unchanged) when ``settings`` is
    not None; ``t5`` itself otherwise. Only the adapters of the returned T5 require gradients."""
    if settings is None:
        return t5
    if is_wrapped(t5):
        raise ValueError("this T5 already carries LoRA adapters; wrap the plain model (merge first)")
    from peft import LoraConfig, TaskType, get_peft_model

    config = LoraConfig(task_type=TaskType.SEQ_2_SEQ_LM, r=settings["r"], lora_alpha=settings["alpha"],
                        lora_dropout=settings["dropout"], target_modules=list(settings["target_modules"]),
                        bias="none")
    try:
        with warnings.catch_warnings():  # peft calls a transformers method deprecated in 5.x
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
            return get_peft_model(t5, config)
    except ValueError as exc:  # e.g. wi_0 on a T5 without gated feed-forward layers
        raise ValueError(f"model.t5.lora.target_modules={settings['target_modules']}: "
                         f"{str(exc).splitlines()[0][:300]}") from None


def is_wrapped(t5: Any) -> bool:
    """True for a T5 wrapped by peft (adapters not merged)."""
    return hasattr(t5, "peft_config") and hasattr(t5, "merge_and_unload")


def base_t5(t5: Any) -> Any:
    """The ``T5ForConditionalGeneration`` inside a peft wrapper (the modules themselves, with any
    adapter layers in place), or ``t5`` when it is plain."""
    return t5.get_base_model() if is_wrapped(t5) else t5


def merged_t5(t5: Any) -> Any:
    """A plain T5 equal in output to ``t5``: a deep copy with the adapters merged into its weights
    and removed. ``t5`` itself is left as it was (still wrapped, adapters separate)."""
    if not is_wrapped(t5):
        return copy.deepcopy(t5)
    return copy.deepcopy(t5).merge_and_unload()


def plain_state_dict(model: Any) -> dict:
    """The captioner's state dict with plain T5 names and the adapters merged (on a copy)."""
    if not is_wrapped(model.t5):
        return dict(model.state_dict())
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("t5.")}
    state.update({f"t5.{k}": v for k, v in merged_t5(model.t5).state_dict().items()})
    return state


def plain_name(key: str) -> str | None:
    """A wrapped captioner key -> its plain name; None for an adapter tensor (no plain name).

    ``t5.base_model.model.X.q.base_layer.weight`` -> ``t5.X.q.weight``; other keys are unchanged.
    """
    if ADAPTER_MARK in key:
        return None
    if key.startswith("t5." + WRAPPED_PREFIX):
        key = "t5." + key[len("t5." + WRAPPED_PREFIX):]
    return key.replace(BASE_LAYER + ".", ".")


def has_adapters(state: Mapping[str, Any]) -> bool:
    """True when a state dict holds LoRA adapter tensors (unmerged)."""
    return any(ADAPTER_MARK in k for k in state)


def t5_config_dict(t5: Any) -> dict:
    """T5's ``config.json`` as a plain dict (JSON types only, safe in a weights-only checkpoint)."""
    return json.loads(base_t5(t5).config.to_json_string(use_diff=False))


def t5_record(model: Any) -> dict:
    """What a checkpoint stores about its T5 beyond the weights: the architecture (so that loading
    needs neither the hub nor the pretrained folder) and the LoRA settings (None: plain)."""
    t5 = model.t5
    settings = None
    if is_wrapped(t5):
        cfg = t5.peft_config["default"]
        settings = {"r": int(cfg.r), "alpha": float(cfg.lora_alpha), "dropout": float(cfg.lora_dropout),
                    "target_modules": sorted(cfg.target_modules)}
    return {"config": t5_config_dict(t5), "lora": settings}
