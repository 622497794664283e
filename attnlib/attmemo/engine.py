"""The lean per-input engine (issue 26): the cheapest lookup this CPU allows, and the lookup-free ceiling.

* `LeanIndex`: the per-input key of `lookup.InputIndex` (chunk means of the embedding output x0, which the
  model computes anyway; centred; Gaussian projection; L2-normalised) computed in a few fused torch ops
  (the centre folded into the projection: (raw - c) P = raw P - cP), and an exact nearest-neighbour search
  per valid length with the backend that is cheapest for the database measured (`choose_backend` times a
  plain matrix-vector product against faiss ``IndexFlatIP`` on the real keys). Same keys, same hits as
  `InputIndex` (tested).
* `WarmMaps`: every stored entry's maps as torch views of the memory map, made once (no header lookups,
  no warnings context per load) and paged in (``touch``), so a hit costs a dict lookup.
* `LeanMemo`: one lookup per input (``begin``), the matched record's views reused in every layer. Combined
  with `FastEncoder.layer`, a batch is computed row by row on the views (``out=`` slices of one context
  tensor): no zero-filled (B, H, T, T) tensor and no per-row copies of the maps.
* `CeilingMemo`: the same hit path with the maps handed over directly (no key, no search, no load): what a
  hit could save at most with this forward -- the lookup-free ceiling.
* `MissMemo`: the lean lookup whose every result is rejected (the full key and search run): what a miss costs.
"""
from __future__ import annotations

import time
import warnings

import numpy as np
import torch

__all__ = ["LeanIndex", "WarmMaps", "LeanMemo", "CeilingMemo", "choose_backend", "BACKENDS"]

BACKENDS = ("matmul", "faiss")


def choose_backend(keys: np.ndarray, queries: np.ndarray, *, trials: int = 200, flush_mb: float = 16.0) -> tuple[str, dict]:
    """The exact-search backend with the lower median time per single-query search over ``keys`` (n, d)
    (normalised) for the ``queries`` given: returns (name, {backend: median microseconds}). Before every
    timed search ``flush_mb`` MB are read (0: none), as the engine searches right after a forward pass
    has evicted the keys from the caches (measured: a warm loop favours faiss, a cold one does not)."""
    import faiss

    keys = np.ascontiguousarray(keys, np.float32)
    queries = np.ascontiguousarray(np.atleast_2d(queries), np.float32)
    if keys.ndim != 2 or queries.shape[1] != keys.shape[1] or not len(keys):
        raise ValueError(f"need keys (n >= 1, d) and queries (m, d), got {keys.shape}, {queries.shape}")
    idx = faiss.IndexFlatIP(keys.shape[1])
    idx.add(keys)
    kt = torch.from_numpy(keys)
    fns = {"faiss": lambda q: idx.search(q.numpy()[None], 1)[1][0, 0],
           "matmul": lambda q: int(torch.argmax(kt @ q))}
    qs = [torch.from_numpy(q.copy()) for q in queries]
    flush = np.ones(int(flush_mb * 2 ** 18), np.float32) if flush_mb > 0 else None
    out = {}
    for name, fn in fns.items():
        for q in qs[:5]:
            fn(q)
        ts = []
        for r in range(trials):
            q = qs[r % len(qs)]
            if flush is not None:
                flush.sum()
            t = time.perf_counter()
            fn(q)
            ts.append(time.perf_counter() - t)
        out[name] = float(np.median(ts) * 1e6)
    return min(out, key=out.get), out


class LeanIndex:
    """Exact per-length search over normalised keys, key from the embedding output (see module docstring).

    ``embedder``: a `perlayer.ChunkEmbedder` fitted at layer 0 (its centre and projection are used);
    ``keys`` (N, dim) normalised database keys, ``lengths`` (N,), ``entry_ids`` (N,); ``cos_min``: hit
    iff best cosine >= cos_min; ``backend``: "matmul", "faiss" or a {length: backend} dict."""

    def __init__(self, embedder, keys, lengths, entry_ids=None, *, cos_min: float = float("inf"),
                 backend="matmul"):
        keys = np.ascontiguousarray(keys, np.float32)
        lengths = np.asarray(lengths, np.int64)
        ids = np.arange(len(keys)) if entry_ids is None else np.asarray(entry_ids, np.int64)
        if not (len(keys) == len(lengths) == len(ids)):
            raise ValueError("keys, lengths and entry ids must have one row per entry")
        self.n_chunks, self.proj = embedder.n_chunks, embedder.proj.contiguous()
        self.cproj = (embedder.centre[0] @ self.proj).contiguous()
        self._weights = embedder._weights
        self.cos_min = float(cos_min)
        self.by_len = {}
        for L in np.unique(lengths):
            rows = np.flatnonzero(lengths == L)
            b = backend.get(int(L), "matmul") if isinstance(backend, dict) else backend
            if b not in BACKENDS:
                raise ValueError(f"backend must be one of {BACKENDS}, got {b!r}")
            k = np.ascontiguousarray(keys[rows])
            if b == "faiss":
                import faiss

                idx = faiss.IndexFlatIP(k.shape[1])
                idx.add(k)
                self.by_len[int(L)] = ("faiss", idx, ids[rows])
            else:
                self.by_len[int(L)] = ("matmul", torch.from_numpy(k), ids[rows])

    def embed(self, x0: torch.Tensor, lengths) -> torch.Tensor:
        """(B, dim) normalised keys of x0 (B, T, D) over each row's valid tokens."""
        B, T, D = x0.shape
        if all(L == T for L in lengths):
            raw = torch.matmul(self._weights(T), x0).reshape(B, -1)
        else:
            raw = torch.stack([torch.matmul(self._weights(L), x0[b, :L]).reshape(-1) for b, L in enumerate(lengths)])
        z = torch.addmm(self.cproj, raw, self.proj, beta=-1)
        return z / z.norm(dim=1, keepdim=True).clamp_min(1e-12)

    def search(self, emb: torch.Tensor, lengths) -> tuple[np.ndarray, np.ndarray]:
        """(best cosine, entry id) per row; (-inf, -1) where no entry has the row's length."""
        B = emb.shape[0]
        cos, ent = np.full(B, -np.inf), np.full(B, -1, np.int64)
        for b, L in enumerate(lengths):
            hit = self.by_len.get(int(L))
            if hit is None:
                continue
            kind, idx, ids = hit
            if kind == "matmul":
                s = idx @ emb[b]
                j = int(torch.argmax(s))
                cos[b], ent[b] = float(s[j]), ids[j]
            else:
                d, i = idx.search(emb[b:b + 1].numpy(), 1)
                cos[b], ent[b] = float(d[0, 0]), ids[int(i[0, 0])]
        return cos, ent

    def match(self, x0, lengths) -> list[int]:
        cos, ent = self.search(self.embed(x0, lengths), lengths)
        return [int(e) if c >= self.cos_min else -1 for c, e in zip(cos, ent)]


class WarmMaps:
    """Torch views of a `lookup.MapStore`'s maps, made once per entry: ``maps(entry)`` -> [per layer
    (H, L, L) view]. ``touch()`` reads every page once (a warm page cache)."""

    def __init__(self, store, n_layers: int, entries=None):
        self.store, self.n_layers = store, int(n_layers)
        self.views: dict[int, list] = {}
        with warnings.catch_warnings():   # read-only memmap views: nothing writes to them
            warnings.simplefilter("ignore", UserWarning)
            for e in sorted(store.entries if entries is None else entries):
                self.views[int(e)] = [torch.from_numpy(store.probs(int(e), l)) for l in range(self.n_layers)]

    def maps(self, entry: int) -> list:
        v = self.views.get(int(entry))
        if v is None:   # not prepared: made now (a cold load) and kept
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                v = self.views[int(entry)] = [torch.as_tensor(self.store.probs(int(entry), l)) for l in range(self.n_layers)]
        return v

    def touch(self) -> float:
        """Read every prepared view once; returns the checksum-free sum (so nothing is optimised away)."""
        s = 0.0
        for v in self.views.values():
            for p in v:
                s += float(p[..., 0].sum())
        return s


class _Lean:
    memo_layers = None

    def _rows(self, layer, T):
        if self.memo_layers is not None and layer not in self.memo_layers:
            return None
        rows = self.rows
        if not any(r is not None for r in rows):
            return None
        if len(rows) == 1 and rows[0][layer].shape[-1] == T:
            return rows[0][layer]          # batch 1, unpadded: the view itself
        return [None if r is None else r[layer] for r in rows]


class LeanMemo(_Lean):
    """One lookup per input with a `LeanIndex` and `WarmMaps`; every memoised layer reuses the match.
    ``reject=True``: the lookup runs in full but every result is discarded (the cost of a miss)."""

    def __init__(self, index: LeanIndex, maps: WarmMaps, memo_layers=None, *, reject: bool = False,
                 timing: bool = False):
        self.index, self.maps, self.reject, self.timing = index, maps, reject, timing
        self.memo_layers = None if memo_layers is None else set(int(l) for l in memo_layers)
        self.n_inputs = self.n_hits = 0
        self.times = {"embed": 0.0, "search": 0.0, "load": 0.0}

    def begin(self, x0, lengths):
        if self.timing:
            t0 = time.perf_counter()
            emb = self.index.embed(x0, lengths)
            t1 = time.perf_counter()
            cos, ent = self.index.search(emb, lengths)
            t2 = time.perf_counter()
        else:
            cos, ent = self.index.search(self.index.embed(x0, lengths), lengths)
        hits = [int(e) if (c >= self.index.cos_min and not self.reject) else -1 for c, e in zip(cos, ent)]
        self.rows = [self.maps.maps(e) if e >= 0 else None for e in hits]
        if self.timing:
            t3 = time.perf_counter()
            self.times["embed"] += t1 - t0
            self.times["search"] += t2 - t1
            self.times["load"] += t3 - t2
        self.n_inputs += len(lengths)
        self.n_hits += sum(e >= 0 for e in hits)

    def probs(self, layer, x, lengths):
        return self._rows(layer, x.shape[1])

    def hit_rate(self) -> float:
        return self.n_hits / self.n_inputs if self.n_inputs else 0.0


class CeilingMemo(_Lean):
    """The hit path with no lookup: ``set_rows(rows)`` gives, per batch row, its maps (list per layer, or
    None); ``begin`` does nothing else. Used to time the lookup-free ceiling of a hit."""

    def __init__(self, memo_layers=None):
        self.memo_layers = None if memo_layers is None else set(int(l) for l in memo_layers)
        self.rows = []

    def set_rows(self, rows):
        self.rows = list(rows)
        return self

    def begin(self, x0, lengths):
        if len(self.rows) != len(lengths):
            raise ValueError(f"ceiling rows set for a batch of {len(self.rows)}, got a batch of {len(lengths)}")

    def probs(self, layer, x, lengths):
        return self._rows(layer, x.shape[1])
