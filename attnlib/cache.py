"""Input-keyed cache of expensive results, stored without pickle.

``cached(namespace, name, key, compute)`` returns ``compute()`` and stores it under
``paths.cache_dir(namespace)/<name>-<hash of key>.npz``; later calls with the same key load it. The
value may nest dicts (str or int keys), lists, tuples, numpy arrays, numbers, strings and None. It is
written as one ``.npz``: the arrays, plus a JSON description of the structure, and read back with
``allow_pickle=False``, so a cache file can never execute code. An unreadable file is recomputed.
"""
from __future__ import annotations

import hashlib
import io
import json
import zipfile

import numpy as np

from .paths import atomic_write_bytes, cache_dir


def _encode(obj, arrays: dict):
    if obj is None:
        return {"none": True}
    if isinstance(obj, dict):
        for k in obj:
            if not isinstance(k, (str, int)):
                raise TypeError(f"cache keys must be str or int, got {type(k).__name__}")
        return {"dict": [[k, _encode(v, arrays)] for k, v in obj.items()]}
    if isinstance(obj, (list, tuple)):
        return {"list" if isinstance(obj, list) else "tuple": [_encode(v, arrays) for v in obj]}
    if isinstance(obj, str):
        return {"str": obj}
    if isinstance(obj, (bool, int, float)):
        return {"num": obj}
    arr = np.asarray(obj)
    if arr.dtype == object:
        raise TypeError(f"cannot cache an object array ({type(obj).__name__})")
    name = f"a{len(arrays)}"
    arrays[name] = arr
    return {"array": name, "scalar": arr.ndim == 0 and not isinstance(obj, np.ndarray)}


def _decode(spec, arrays):
    if "none" in spec:
        return None
    if "dict" in spec:
        return {k: _decode(v, arrays) for k, v in spec["dict"]}
    if "list" in spec:
        return [_decode(v, arrays) for v in spec["list"]]
    if "tuple" in spec:
        return tuple(_decode(v, arrays) for v in spec["tuple"])
    if "str" in spec:
        return spec["str"]
    if "num" in spec:
        return spec["num"]
    arr = arrays[spec["array"]]
    return arr[()] if spec["scalar"] else arr


def dumps(value) -> bytes:
    """Serialise ``value`` (see the module docstring) to .npz bytes."""
    arrays: dict = {}
    spec = _encode(value, arrays)
    buf = io.BytesIO()
    np.savez(buf, __structure__=np.array(json.dumps(spec)), **arrays)
    return buf.getvalue()


def loads(payload: bytes):
    """Inverse of `dumps`; never unpickles."""
    with np.load(io.BytesIO(payload), allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    return _decode(json.loads(str(arrays.pop("__structure__"))), arrays)


def cached(namespace: str, name: str, key: dict, compute):
    """``compute()`` cached under ``cache_dir(namespace)`` by the JSON of ``key`` (see module docstring)."""
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:24]
    path = cache_dir(namespace) / f"{name}-{digest}.npz"
    if path.exists():
        try:
            return loads(path.read_bytes())
        except (OSError, ValueError, KeyError, zipfile.BadZipFile, json.JSONDecodeError):
            pass  # unreadable or truncated: recompute and overwrite
    value = compute()
    atomic_write_bytes(path, dumps(value))
    return value
