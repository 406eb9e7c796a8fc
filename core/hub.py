"""Loading a model or tokenizer by hub name or local folder, with one clear error when it cannot be
had (typically: offline and not cached)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

OFFLINE_HINT = ("No model can be downloaded here. Either put the files in a local folder and give "
                "its path, or train from scratch: leave `model.t5.name` and `model.tokenizer.name` "
                "empty so the tokenizer is trained on the training texts and T5 is built from "
                "`model.t5.config`.")


class ModelSourceError(RuntimeError):
    """A hub name or folder could not be loaded (typically: offline and not cached)."""


def from_pretrained(cls: Any, name: str, what: str, **kwargs: Any) -> Any:
    try:
        return cls.from_pretrained(name, **kwargs)
    except (OSError, ValueError) as exc:
        where = "local folder" if Path(name).exists() else "hub name"
        raise ModelSourceError(
            f"could not load {what} from {where} {name!r}: {str(exc).splitlines()[0][:300]}. "
            f"{OFFLINE_HINT}") from None
