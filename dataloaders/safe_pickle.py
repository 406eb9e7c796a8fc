"""A restricted unpickler for dataset files.

Pickle can run arbitrary code while loading: every ``GLOBAL`` / ``STACK_GLOBAL`` / ``INST`` opcode
imports a callable that ``REDUCE`` / ``BUILD`` / ``OBJ`` may then call. Dataset pickles only need
plain containers, numbers, strings, numpy arrays and torch tensors, so :func:`safe_load` allows
exactly those globals and refuses everything else with :class:`UnsafePickleError`.

The check runs twice:

1. **Before anything runs**, a static scan of the opcode stream (``pickletools.genops`` with a small
   stack and memo simulation) collects every global the file names. One refused global and the
   whole file is refused; nothing has been unpickled yet.
2. While loading, ``find_class`` only hands out allowlisted objects (defence in depth: a global
   the scan could not resolve is refused here too, before it can be called).

Released BX pickles hold torch tensors pickled with plain ``pickle``; their storages are rebuilt by
``torch.storage._load_from_bytes``, which calls ``torch.load(weights_only=False)``. That global is
replaced by :func:`_load_storage_from_bytes`, which uses ``torch.load(..., weights_only=True)``.
"""
from __future__ import annotations

import codecs
import collections
import io
import os
import pickle
import pickletools
from typing import Any

import numpy as np
import torch

__all__ = ["UnsafePickleError", "safe_load", "safe_loads", "scan_globals", "ALLOWED_GLOBALS"]


class UnsafePickleError(Exception):
    """A pickle names a global outside the allowlist; the message names the file and the global."""

    def __init__(self, source: str, global_name: str, detail: str = "") -> None:
        self.source = source
        self.global_name = global_name
        msg = (f"{source}: refused to unpickle global '{global_name}': dataset pickles may only hold "
               f"plain containers, numbers, strings, numpy arrays and torch tensors")
        if detail:
            msg += f" ({detail})"
        super().__init__(msg + "; nothing from the file was executed")


# ---------------------------------------------------------------------------------------------
# The allowlist: (module, name) -> the object handed to the unpickler.

def _load_storage_from_bytes(data: bytes) -> Any:
    """Replacement for ``torch.storage._load_from_bytes`` that never runs arbitrary code."""
    return torch.load(io.BytesIO(data), weights_only=True)


def _latin1_encode(text: str, encoding: str = "utf-8", errors: str = "strict") -> bytes:
    """``_codecs.encode`` as used by protocol-2 pickles for raw bytes (always latin-1)."""
    if encoding.lower().replace("_", "-") not in ("latin1", "latin-1", "iso-8859-1"):
        raise pickle.UnpicklingError(f"_codecs.encode with encoding {encoding!r} is not allowed")
    return codecs.encode(text, "latin-1", errors)


def _numpy_module(name: str) -> Any:
    """``numpy._core.<name>`` (numpy 2) or ``numpy.core.<name>`` (numpy 1)."""
    import importlib

    try:
        return importlib.import_module(f"numpy._core.{name}")
    except ImportError:  # numpy 1.x
        return importlib.import_module(f"numpy.core.{name}")


def _build_allowlist() -> dict[tuple[str, str], Any]:
    allowed: dict[tuple[str, str], Any] = {}
    for mod in ("builtins", "__builtin__"):  # protocol <= 2 writes __builtin__
        for obj in (set, frozenset, list, dict, tuple, int, float, complex, bool, str, bytes,
                    bytearray):
            allowed[(mod, obj.__name__)] = obj
    allowed[("_codecs", "encode")] = _latin1_encode
    allowed[("collections", "OrderedDict")] = collections.OrderedDict

    multiarray = _numpy_module("multiarray")
    numeric = _numpy_module("numeric")
    for prefix in ("numpy._core", "numpy.core"):  # numpy 2.x and numpy 1.x file names
        allowed[(f"{prefix}.multiarray", "_reconstruct")] = multiarray._reconstruct
        allowed[(f"{prefix}.multiarray", "scalar")] = multiarray.scalar
        allowed[(f"{prefix}.numeric", "_frombuffer")] = numeric._frombuffer
    allowed[("numpy", "ndarray")] = np.ndarray
    allowed[("numpy", "dtype")] = np.dtype

    allowed[("torch._utils", "_rebuild_tensor_v2")] = torch._utils._rebuild_tensor_v2
    allowed[("torch._utils", "_rebuild_parameter")] = torch._utils._rebuild_parameter
    allowed[("torch.storage", "_load_from_bytes")] = _load_storage_from_bytes
    allowed[("torch", "Size")] = torch.Size
    for name in dir(torch):
        if isinstance(getattr(torch, name, None), torch.dtype):
            allowed[("torch", name)] = getattr(torch, name)  # dtypes pickle as `torch.float32`
    return allowed


ALLOWED_GLOBALS: dict[tuple[str, str], Any] = _build_allowlist()


# ---------------------------------------------------------------------------------------------
# Static scan: which globals does the opcode stream name?

_MARK = object()  # a MARK on the simulated stack
_OPAQUE = object()  # any value the scan does not track
_STRING_OPS = {"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE", "STRING", "BINSTRING",
               "SHORT_BINSTRING"}
_GET_OPS = {"GET", "BINGET", "LONG_BINGET"}
_PUT_OPS = {"PUT", "BINPUT", "LONG_BINPUT"}
_EXT_OPS = {"EXT1", "EXT2", "EXT4"}


def _pop(stack: list, n: int) -> list:
    """Pop ``n`` items (opaque where a malformed stream underflows)."""
    items = [stack.pop() if stack else _OPAQUE for _ in range(n)]
    return items[::-1]


def scan_globals(data: bytes, source: str = "<bytes>") -> list[tuple[str, str]]:
    """Every global ``(module, name)`` the pickle ``data`` would import, in order, without loading it.

    Raises :class:`UnsafePickleError` for a global whose name is built dynamically (the operands
    of ``STACK_GLOBAL`` are not literal strings) or for extension-registry opcodes.
    """
    stack: list = []
    memo: dict[int, Any] = {}
    found: list[tuple[str, str]] = []
    try:
        for op, arg, _pos in pickletools.genops(data):
            name = op.name
            if name in _PUT_OPS:
                memo[arg] = stack[-1] if stack else _OPAQUE
                continue
            if name == "MEMOIZE":
                memo[len(memo)] = stack[-1] if stack else _OPAQUE
                continue
            if name in _GET_OPS:
                stack.append(memo.get(arg, _OPAQUE))
                continue
            if name == "DUP":
                stack.append(stack[-1] if stack else _OPAQUE)
                continue
            if name in _EXT_OPS:
                raise UnsafePickleError(source, f"<extension code {arg}>",
                                        "copyreg extension codes are not allowed")
            before = op.stack_before
            if pickletools.markobject in before:
                while stack and stack.pop() is not _MARK:
                    pass
                operands = _pop(stack, before.index(pickletools.markobject))
            else:
                operands = _pop(stack, len(before))
            if name in ("GLOBAL", "INST"):
                module, qualname = str(arg).split(" ", 1)
                found.append((module, qualname))
            elif name == "STACK_GLOBAL":
                module, qualname = operands
                if not (isinstance(module, str) and isinstance(qualname, str)):
                    raise UnsafePickleError(source, "<dynamic STACK_GLOBAL>",
                                            "the global's name is not a literal string")
                found.append((module, qualname))
            if name == "MARK":
                stack.append(_MARK)
            elif name in _STRING_OPS:
                stack.append(arg if isinstance(arg, str) else _OPAQUE)
            else:
                stack.extend(_OPAQUE for _ in op.stack_after)
    except UnsafePickleError:
        raise
    except Exception as exc:  # truncated / corrupt stream: pickletools raises ValueError
        raise pickle.UnpicklingError(f"{source}: not a readable pickle ({exc})") from exc
    return found


# ---------------------------------------------------------------------------------------------

class _RestrictedUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` whose ``find_class`` only returns allowlisted objects."""

    def __init__(self, file: Any, source: str) -> None:
        super().__init__(file)
        self._source = source

    def find_class(self, module: str, name: str) -> Any:  # noqa: D401 (pickle API)
        try:
            return ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise UnsafePickleError(self._source, f"{module}.{name}") from None

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError(self._source, "<persistent id>", "persistent ids are not allowed")


def safe_loads(data: bytes, source: str = "<bytes>") -> Any:
    """Unpickle ``data`` allowing only containers, numbers, strings, numpy arrays, torch tensors."""
    for module, name in scan_globals(data, source):
        if (module, name) not in ALLOWED_GLOBALS:
            raise UnsafePickleError(source, f"{module}.{name}")
    return _RestrictedUnpickler(io.BytesIO(data), source).load()


def safe_load(path: str | os.PathLike) -> Any:
    """Read and safely unpickle the file at ``path`` (see :func:`safe_loads`)."""
    with open(path, "rb") as fh:
        data = fh.read()
    return safe_loads(data, source=str(path))
