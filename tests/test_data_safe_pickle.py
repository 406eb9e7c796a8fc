"""The restricted unpickler: allowed types round-trip; anything else is refused before it runs."""
from __future__ import annotations

import builtins
import collections
import io
import os
import pickle
import subprocess

import numpy as np
import pytest
import torch

from dataloaders import safe_pickle
from dataloaders.safe_pickle import UnsafePickleError, safe_load, safe_loads, scan_globals


def _allowed_payload() -> list:
    return [
        {"video_name": "a", "coordinates": torch.arange(12.0).reshape(2, 6)[:, ::2],  # a view
         "labels": ["x", "y"], "n": 3, "f": 2.5, "ok": True, "none": None},
        np.arange(6, dtype=np.float32).reshape(2, 3),
        np.array([1, 2], dtype=np.int64), np.float32(1.5), np.int64(7), np.dtype("f8"),
        collections.OrderedDict(b=1), {1, 2}, frozenset({3}), (1, "t"), b"raw", bytearray(b"ba"),
        1 + 2j, torch.zeros(2, dtype=torch.bfloat16), torch.float16, torch.Size([2, 3]),
    ]


def _assert_same(a, b) -> None:
    assert type(a) is type(b)
    if isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and torch.equal(a, b)
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and np.array_equal(a, b)
    elif isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            _assert_same(a[k], b[k])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            _assert_same(x, y)
    else:
        assert a == b


@pytest.mark.parametrize("protocol", range(0, pickle.HIGHEST_PROTOCOL + 1))
def test_allowed_types_round_trip_every_protocol(protocol):
    payload = _allowed_payload()
    _assert_same(payload, safe_loads(pickle.dumps(payload, protocol=protocol)))


@pytest.mark.skipif(int(np.__version__.split(".")[0]) < 2,
                    reason="numpy 1.x writes numpy.core.* itself, so every other pickle test reads those names")
def test_numpy_1x_module_names_are_accepted():
    """Files written by numpy 1.x name numpy.core.* instead of numpy._core.* (numpy 2)."""
    data = pickle.dumps([np.arange(3.0), np.float64(2.0)], protocol=2)
    assert b"numpy._core.multiarray" in data
    old = data.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    assert ("numpy.core.multiarray", "_reconstruct") in scan_globals(old)
    out = safe_loads(old)
    assert np.array_equal(out[0], np.arange(3.0)) and out[1] == 2.0
    data5 = pickle.dumps(np.arange(4), protocol=5)  # protocol 5 uses numeric._frombuffer
    name, old_name = b"numpy._core.numeric", b"numpy.core.numeric"
    assert data5[2] == 0x95  # FRAME: 8-byte length follows; the renamed string is 1 byte shorter
    frame = int.from_bytes(data5[3:11], "little") - (len(name) - len(old_name))
    old5 = (data5[:3] + frame.to_bytes(8, "little") + data5[11:]).replace(
        b"\x8c" + bytes([len(name)]) + name, b"\x8c" + bytes([len(old_name)]) + old_name)
    assert ("numpy.core.numeric", "_frombuffer") in scan_globals(old5)
    assert np.array_equal(safe_loads(old5), np.arange(4))


class _Evil:
    """A payload whose unpickling calls ``func(*args)``."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def _marker_payloads(marker) -> dict:
    return {
        "os.system": _Evil(os.system, f"touch {marker}"),
        "builtins.exec": _Evil(builtins.exec, f"open({str(marker)!r}, 'w').close()"),
        "builtins.eval": _Evil(builtins.eval, f"open({str(marker)!r}, 'w').close()"),
        "subprocess.call": _Evil(subprocess.call, ["touch", str(marker)]),
    }


@pytest.mark.reliability
@pytest.mark.parametrize("kind", ["os.system", "builtins.exec", "builtins.eval", "subprocess.call"])
@pytest.mark.parametrize("protocol", [0, 2, 4, 5])
def test_code_execution_payload_is_refused_and_never_runs(tmp_path, kind, protocol):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps([{"video_name": "x"}, _marker_payloads(marker)[kind]],
                                  protocol=protocol))
    with pytest.raises(UnsafePickleError) as info:
        safe_load(path)
    message = str(info.value)
    assert str(path) in message
    func = _marker_payloads(marker)[kind].func
    # named as written in the file: posix.system, builtins.exec (or __builtin__.exec in protocol
    # <= 2, whose Python-2 name mapping also turns subprocess.call into commands.call)
    assert f".{func.__name__}'" in message
    assert not marker.exists()


@pytest.mark.reliability
def test_refused_global_nested_inside_allowed_containers(tmp_path):
    marker = tmp_path / "pwned"
    nested = collections.OrderedDict(
        ok=[1, 2, {"deeper": (np.arange(2), {"labels": [_Evil(os.system, f"touch {marker}")]})}])
    path = tmp_path / "nested.pkl"
    path.write_bytes(pickle.dumps([torch.zeros(2), nested], protocol=4))
    with pytest.raises(UnsafePickleError, match=r"nested\.pkl.*'posix\.system'|nested\.pkl.*'nt\.system'"):
        safe_load(path)
    assert not marker.exists()


@pytest.mark.reliability
def test_refusal_happens_in_the_scan_before_any_unpickling(tmp_path, monkeypatch):
    """Allowed tensors come first in the file; still nothing is rebuilt before the refusal."""

    class Boom:
        def __init__(self, *a, **k):
            raise AssertionError("the unpickler ran although the scan should have refused")

    monkeypatch.setattr(safe_pickle, "_RestrictedUnpickler", Boom)
    data = pickle.dumps([torch.ones(3), np.ones(2), _Evil(os.system, "true")], protocol=4)
    with pytest.raises(UnsafePickleError, match="system"):
        safe_loads(data, source="scan.pkl")


def test_scan_lists_globals_without_running_them():
    data = pickle.dumps([torch.ones(1), _Evil(os.system, "true")], protocol=4)
    found = scan_globals(data)
    assert ("torch._utils", "_rebuild_tensor_v2") in found
    assert ("posix", "system") in found or ("nt", "system") in found


@pytest.mark.reliability
def test_dynamically_built_global_name_is_refused(tmp_path):
    """STACK_GLOBAL whose module name comes from a call (not a literal) is refused unseen."""
    marker = tmp_path / "pwned"
    data = (b"\x80\x04"
            b"\x8c\x08builtins\x94\x8c\x03str\x94\x93\x94"  # builtins.str
            b"\x8c\x02os\x94\x85\x94R\x94"  # str("os") -> "os" built at run time
            b"\x8c\x06system\x94\x93\x94"  # STACK_GLOBAL(<dynamic>, "system")
            + b"\x8c" + bytes([len(f"touch {marker}")]) + f"touch {marker}".encode()
            + b"\x85R.")
    with pytest.raises(UnsafePickleError, match="dynamic"):
        safe_loads(data, source="dyn.pkl")
    assert not marker.exists()


def test_persistent_ids_and_extension_codes_are_refused():
    class P(pickle.Pickler):
        def persistent_id(self, obj):
            return "pid" if obj == "secret" else None

    buf = io.BytesIO()
    P(buf, protocol=2).dump(["secret"])
    with pytest.raises(UnsafePickleError, match="persistent"):
        safe_loads(buf.getvalue())
    with pytest.raises(UnsafePickleError, match="extension"):
        safe_loads(b"\x80\x02\x82\x01.")  # EXT1 code 1


def test_storages_are_loaded_with_weights_only(monkeypatch):
    calls = []
    real_load = torch.load

    def spy(*args, **kwargs):
        calls.append(kwargs.get("weights_only"))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(safe_pickle.torch, "load", spy)
    out = safe_loads(pickle.dumps(torch.arange(4.0)))
    assert torch.equal(out, torch.arange(4.0)) and calls == [True]


def test_codecs_encode_only_latin1():
    assert safe_loads(pickle.dumps(b"\xff\x00ab", protocol=2)) == b"\xff\x00ab"
    bad = b"\x80\x02c_codecs\nencode\nX\x03\x00\x00\x00abcX\x05\x00\x00\x00rot13\x86R."
    with pytest.raises(pickle.UnpicklingError, match="rot13"):
        safe_loads(bad)


def test_truncated_file_is_an_unpickling_error_naming_it(tmp_path):
    path = tmp_path / "cut.pkl"
    path.write_bytes(pickle.dumps([np.arange(100)], protocol=4)[:-20])
    with pytest.raises(pickle.UnpicklingError, match="cut.pkl"):
        safe_load(path)
