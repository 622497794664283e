"""AttMEMO (Feng et al., arXiv 2301.09262): memoising attention probabilities across inputs.

The paper's four parts, as built here for the real MiniLM encoder (``attnlib.models.load_encoder``):

* **Attention database** (`MemmapStore`, `AttentionDatabase`): the attention-probability matrices
  (H, L, L) of a population of real inputs, per memoised layer, in ONE raw float32 file that is
  memory-mapped read-only. A hit returns a numpy *view* of the mapping (no copy; the page cache is the
  "big memory"). The file comes with a JSON header (format name, version, the input key the database
  was built from, the offset/shape/dtype of every array, and the SHA-256 of the data file). Opening
  checks all of these; a corrupt, truncated or mismatched database raises `StoreError`, and
  `open_or_build` then rebuilds it with a message. Nothing is unpickled from disk.
* **Embedding and index** (`ChunkEmbedder`, `AttentionDatabase.lookup`): the embedding of a layer's
  input is computed from that layer's query tensor q = W_q x + b (an affine image of the layer
  input x, available inside the attention function, so no extra hook is needed): q is mean-pooled
  over ``n_chunks`` contiguous chunks of the valid tokens (a positional summary: where in the sequence
  each content sits), flattened (n_chunks * H * d values), centred with the mean of the database
  population (the only "trained" part, fitted offline) and reduced with a fixed Gaussian random
  projection (Johnson-Lindenstrauss, seeded) to ``dim`` values, then L2-normalised. The index is a
  faiss ``IndexFlatIP`` (exact inner-product = cosine search) per (layer, valid length); a hit needs
  cosine >= ``threshold`` AND the same valid length (the stored matrix must have the query's shape).
* **Selective memoisation** (`measure_layer_costs`, `decide_layers`): a per-layer performance model
  with costs MEASURED here with timers on the layer's real q/k/v: memoise layer l iff
  hit_rate(l) * (recompute - reuse) > lookup, where recompute = QK^T*scale + mask + softmax + PV,
  reuse = view + stored_probs @ V, lookup = embed + index search.
* **Online engine** (`MemoEngine`): an ``attn_fn(q, k, v, mask, scale, layer)`` for
  ``attnlib.models.replaced_attention``; for a memoised layer and a hit it returns
  ``stored_probs @ v`` (QK^T and softmax skipped), otherwise the exact eager attention.

Latency is measured with `interleaved_latency` (same process, same inputs, alternating order).
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

FORMAT = "attnlib-attmemo-store"
VERSION = 1
ALIGN = 64  # byte alignment of every array in the data file (cache-line aligned views)
_DTYPES = {"float32": np.float32, "int32": np.int32, "int64": np.int64, "float64": np.float64}

__all__ = [
    "StoreError", "MemmapStore", "open_or_build", "ChunkEmbedder", "AttentionDatabase", "build_database",
    "MemoEngine", "exact_attention", "valid_lengths", "measure_layer_costs", "decide_layers",
    "interleaved_latency", "reduction_stats", "machine_info", "edit_text", "input_key", "doc_windows",
    "Populations", "make_populations", "capture_rows", "query_similarities", "forward_fns",
    "words_in_window", "raw_embeddings", "best_similarity", "mix_reduction", "predicted_saving",
    "population_times", "average_reduction", "load_check",
]


# ============================================================================ the memory-mapped store
class StoreError(RuntimeError):
    """A database file that is missing, corrupt, truncated, of another version, or built from other inputs."""


def _sha256_file(path: Path, chunk: int = 1 << 24) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            buf = f.read(chunk)
            if not buf:
                break
            h.update(buf)
    return h.hexdigest()


def _paths(path) -> tuple[Path, Path]:
    path = Path(path)
    return path.with_suffix(".bin"), path.with_suffix(".json")


class MemmapStore:
    """Named numpy arrays in one raw file, read through a read-only memory map (views, never copies).

    ``<path>.bin`` holds the raw bytes (each array 64-byte aligned); ``<path>.json`` the header:
    ``{"format", "version", "meta", "arrays": {name: [offset, shape, dtype]}, "data_bytes", "sha256"}``.
    Write with `MemmapStore.write`, read with `MemmapStore.open` (checks everything, see `StoreError`).
    """

    def __init__(self, path: Path, header: dict, mm: np.memmap | None):
        self.path, self.header, self._mm = Path(path), header, mm
        self.meta = header["meta"]
        self._arrays = header["arrays"]

    # ---------------------------------------------------------------- writing
    @staticmethod
    def write(path, arrays, meta: dict) -> "MemmapStore":
        """Stream ``arrays`` (an iterable of (name, ndarray)) to ``path``.bin, then write the header.

        Both files go through temporary names and renames; the header (with the checksum) is renamed
        last, so an interrupted build leaves no valid-looking database behind.
        """
        bin_path, json_path = _paths(path)
        bin_path.parent.mkdir(parents=True, exist_ok=True)
        tmp_bin = bin_path.with_name(f".{bin_path.name}.tmp-{os.getpid()}")
        table, offset, h = {}, 0, hashlib.sha256()
        try:
            with open(tmp_bin, "wb") as f:
                for name, arr in arrays:
                    if name in table:
                        raise ValueError(f"array {name!r} written twice")
                    arr = np.ascontiguousarray(arr)
                    dt = arr.dtype.name
                    if dt not in _DTYPES:
                        raise ValueError(f"array {name!r}: dtype {dt} not storable (allowed: {sorted(_DTYPES)})")
                    pad = (-offset) % ALIGN
                    if pad:
                        f.write(b"\0" * pad)
                        h.update(b"\0" * pad)
                        offset += pad
                    data = arr.tobytes()
                    f.write(data)
                    h.update(data)
                    table[name] = [offset, list(arr.shape), dt]
                    offset += len(data)
            header = dict(format=FORMAT, version=VERSION, meta=meta, arrays=table, data_bytes=offset,
                          sha256=h.hexdigest())
            os.replace(tmp_bin, bin_path)
        finally:
            if tmp_bin.exists():
                tmp_bin.unlink()
        tmp_json = json_path.with_name(f".{json_path.name}.tmp-{os.getpid()}")
        tmp_json.write_text(json.dumps(header, indent=1, sort_keys=True))
        os.replace(tmp_json, json_path)
        return MemmapStore.open(path, meta=meta, verify=False)

    # ---------------------------------------------------------------- reading
    @classmethod
    def open(cls, path, *, meta: dict | None = None, verify: bool = True) -> "MemmapStore":
        """Open a store; raise `StoreError` (with the reason) if anything does not check out.

        Checks: both files exist; the header is JSON with this format and version; ``meta`` (if given)
        equals the stored meta (the input key); the data file has the declared size; every array lies
        inside it; and (``verify=True``) the SHA-256 of the data file matches the header.
        """
        bin_path, json_path = _paths(path)
        if not json_path.exists() or not bin_path.exists():
            raise StoreError(f"no database at {bin_path} (+ .json header)")
        try:
            header = json.loads(json_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise StoreError(f"header {json_path.name} is not valid JSON ({exc})") from None
        if not isinstance(header, dict) or header.get("format") != FORMAT:
            raise StoreError(f"header {json_path.name}: not an {FORMAT} file")
        if header.get("version") != VERSION:
            raise StoreError(f"header {json_path.name}: version {header.get('version')} != {VERSION}")
        if meta is not None and _canon(header.get("meta")) != _canon(meta):
            raise StoreError(f"database {bin_path.name} was built from other inputs (meta/key mismatch)")
        size = bin_path.stat().st_size
        if size != header.get("data_bytes"):
            raise StoreError(f"data file {bin_path.name} has {size} bytes, header says {header.get('data_bytes')}")
        for name, (off, shape, dt) in header["arrays"].items():
            if dt not in _DTYPES:
                raise StoreError(f"array {name!r}: unknown dtype {dt!r}")
            end = off + int(np.prod(shape, dtype=np.int64)) * np.dtype(_DTYPES[dt]).itemsize
            if off < 0 or end > size:
                raise StoreError(f"array {name!r} lies outside the data file")
        if verify:
            digest = _sha256_file(bin_path)
            if digest != header.get("sha256"):
                raise StoreError(f"checksum mismatch in {bin_path.name} (file corrupt or modified)")
        mm = np.memmap(bin_path, dtype=np.uint8, mode="r") if size else None
        return cls(path, header, mm)

    def __contains__(self, name: str) -> bool:
        return name in self._arrays

    def __getitem__(self, name: str) -> np.ndarray:
        """A read-only view into the memory map (shares memory with the file mapping, no copy)."""
        off, shape, dt = self._arrays[name]
        dtype = np.dtype(_DTYPES[dt])
        n = int(np.prod(shape, dtype=np.int64))
        return np.ndarray(tuple(shape), dtype=dtype, buffer=self._mm, offset=off) if n else np.zeros(shape, dtype)

    @property
    def names(self) -> list[str]:
        return list(self._arrays)

    @property
    def nbytes(self) -> int:
        return int(self.header["data_bytes"])

    @property
    def mapping(self):
        """The underlying read-only memory map (for `np.shares_memory` checks)."""
        return self._mm


def _canon(obj) -> str:
    return json.dumps(obj, sort_keys=True, default=str)


def input_key(*parts) -> str:
    """A short stable hash of the inputs a database is built from (texts, model, settings)."""
    h = hashlib.sha256()
    for p in parts:
        h.update(_canon(p).encode())
        h.update(b"\x1e")
    return h.hexdigest()[:20]


def open_or_build(path, meta: dict, build, *, log=print) -> tuple[MemmapStore, bool]:
    """Open the store at ``path`` if it is intact and was built from ``meta``; else rebuild it.

    ``build()`` returns the iterable of (name, array) to write. Returns (store, rebuilt).
    """
    try:
        return MemmapStore.open(path, meta=meta, verify=True), False
    except StoreError as exc:
        if Path(path).with_suffix(".json").exists() or Path(path).with_suffix(".bin").exists():
            log(f"attmemo: {exc}; rebuilding the database")
        else:
            log(f"attmemo: building the database {Path(path).name}")
    return MemmapStore.write(path, build(), meta), True


# ============================================================================ masks and exact attention
def valid_lengths(mask, batch: int, t_k: int) -> list[int] | None:
    """Valid (unpadded) key length per row from an additive mask, or None if it is not right padding.

    ``mask`` None -> every row has ``t_k`` valid keys. A mask with per-query structure (e.g. causal)
    returns None (the engine then falls back to exact attention).
    """
    if mask is None:
        return [t_k] * batch
    m = mask
    if m.dim() != 4 or m.shape[-1] != t_k:
        return None
    if m.shape[-2] != 1:  # per-query mask: accept only if every query row is the same
        if not torch.equal(m, m[..., :1, :].expand_as(m)):
            return None
    if m.shape[1] != 1:
        return None
    allowed = (m[:, 0, 0, :] > -1e3)  # (B or 1, Tk)
    lengths = allowed.sum(-1).tolist()
    for row, L in zip(allowed, lengths):
        if L == 0 or not bool(row[:L].all()):
            return None
    if len(lengths) == 1 and batch > 1:
        lengths = lengths * batch
    return [int(x) for x in lengths]


def exact_attention(q, k, v, mask, scale):
    """The eager attention of BERT-family models: softmax(QK^T*scale + mask) V (fp32)."""
    s = torch.matmul(q, k.transpose(-1, -2)) * scale
    if mask is not None:
        s = s + mask
    return torch.matmul(torch.softmax(s, dim=-1), v)


# ============================================================================ embedding
def _chunk_weights(length: int, n_chunks: int) -> torch.Tensor:
    """(n_chunks, length) averaging matrix over contiguous, nearly equal chunks of ``length`` tokens."""
    bounds = np.linspace(0, length, n_chunks + 1).round().astype(int)
    w = torch.zeros(n_chunks, length)
    for c in range(n_chunks):
        a, b = bounds[c], max(bounds[c + 1], bounds[c] + 1)
        b = min(b, length)
        a = min(a, b - 1)
        w[c, a:b] = 1.0 / (b - a)
    return w


@dataclass
class ChunkEmbedder:
    """Embedding of a layer input, computed from the layer's query tensor (see module docstring).

    raw(q)  = chunk means of q over the valid tokens: (n_chunks * H * d,)
    embed   = normalise((raw - centre[layer]) @ proj),  proj ~ N(0, 1/dim), fixed seed.
    ``centre`` is fitted offline on the database population (`fit`).
    """

    n_heads: int
    d_head: int
    n_chunks: int = 8
    dim: int = 128
    seed: int = 0
    centre: dict = field(default_factory=dict)
    _w_cache: dict = field(default_factory=dict, repr=False)

    def __post_init__(self):
        g = torch.Generator().manual_seed(self.seed)
        self.in_dim = self.n_chunks * self.n_heads * self.d_head
        self.proj = torch.randn(self.in_dim, self.dim, generator=g) / math.sqrt(self.dim)

    def _weights(self, length: int) -> torch.Tensor:
        w = self._w_cache.get(length)
        if w is None:
            w = self._w_cache[length] = _chunk_weights(length, self.n_chunks)
        return w

    def raw(self, q: torch.Tensor, lengths) -> torch.Tensor:
        """(B, n_chunks*H*d) chunk-pooled queries of each row over its first ``lengths[b]`` tokens."""
        B, T = q.shape[0], q.shape[2]
        if all(L == T for L in lengths):  # no padding: one batched matmul, (C, T) x (B, H, T, d) -> (B, H, C, d)
            return torch.matmul(self._weights(T), q.float()).transpose(1, 2).reshape(B, -1)
        out = torch.empty(B, self.in_dim)
        for b, L in enumerate(lengths):
            # (C, L) x (H, L, d) -> (H, C, d) -> (C, H, d)
            out[b] = torch.matmul(self._weights(L), q[b, :, :L].float()).transpose(0, 1).reshape(-1)
        return out

    def fit(self, layer: int, raw: np.ndarray | torch.Tensor) -> None:
        self.centre[layer] = torch.as_tensor(np.asarray(raw, dtype=np.float32).mean(0))

    def project(self, layer: int, raw: torch.Tensor) -> np.ndarray:
        z = (torch.as_tensor(raw) - self.centre[layer]) @ self.proj
        z = z / z.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        return np.ascontiguousarray(z.numpy(), dtype=np.float32)

    def embed(self, layer: int, q: torch.Tensor, lengths) -> np.ndarray:
        return self.project(layer, self.raw(q, lengths))


# ============================================================================ the attention database
class AttentionDatabase:
    """Stored attention probabilities + per-(layer, length) faiss indexes over their embeddings.

    Arrays in the store: ``p/<entry>/<layer>`` (H, L, L) float32, ``keys/<layer>`` (N, dim),
    ``centre/<layer>``, ``proj``, ``lengths`` (N,). Entries whose layer was not memoised have no
    ``p/<entry>/<layer>`` array (selective memoisation stores only the chosen layers).
    """

    def __init__(self, store: MemmapStore, *, index_layers=None):
        import faiss  # NB: never call faiss.omp_set_num_threads here: it shares OpenMP with torch

        self.store = store
        m = store.meta
        self.layers = list(m["prob_layers"])
        self.key_layers = list(m["key_layers"])
        self.n_entries = int(m["n_entries"])
        self.lengths = np.array(store["lengths"]) if self.n_entries else np.zeros(0, np.int64)
        self.embedder = ChunkEmbedder(m["n_heads"], m["d_head"], m["n_chunks"], m["dim"], m["seed"])
        if not torch.equal(self.embedder.proj, torch.from_numpy(np.array(store["proj"]))):
            raise StoreError("stored projection differs from the seeded one")
        self.index: dict[tuple[int, int], tuple] = {}
        for layer in (self.key_layers if index_layers is None else index_layers):
            self.embedder.centre[layer] = torch.from_numpy(np.array(store[f"centre/{layer}"]))
            keys = np.array(store[f"keys/{layer}"])
            for L in np.unique(self.lengths):
                rows = np.flatnonzero(self.lengths == L)
                idx = faiss.IndexFlatIP(keys.shape[1])
                idx.add(np.ascontiguousarray(keys[rows]))
                self.index[(layer, int(L))] = (idx, rows)

    def search(self, layer: int, emb: np.ndarray, length: int) -> tuple[float, int]:
        """(best cosine, entry id) for one embedding, among entries of the same valid length; (-inf, -1) if none."""
        hit = self.index.get((layer, int(length)))
        if hit is None:
            return -math.inf, -1
        idx, rows = hit
        d, i = idx.search(emb.reshape(1, -1), 1)
        return float(d[0, 0]), int(rows[i[0, 0]])

    def probs(self, entry: int, layer: int) -> np.ndarray:
        """(H, L, L) stored probabilities: a view of the memory map, no copy."""
        return self.store[f"p/{entry}/{layer}"]

    def has_probs(self, layer: int) -> bool:
        return layer in self.layers

    @property
    def nbytes(self) -> int:
        return self.store.nbytes


def build_database(path, meta: dict, captures, *, prob_layers, key_layers, n_heads, d_head, n_chunks=8,
                   dim=128, seed=0, log=print) -> tuple[AttentionDatabase, bool]:
    """Open or (re)build the database at ``path``.

    ``captures()`` yields, per input row, ``(length, {layer: (q (H,L,d), probs (H,L,L) or None)})``
    (the caller runs the real model with `attnlib.models.capture`). Probabilities are stored for
    ``prob_layers``; embeddings (keys) for ``key_layers``. ``meta`` must identify the inputs.
    """
    full_meta = dict(meta, prob_layers=list(prob_layers), key_layers=list(key_layers), n_heads=n_heads,
                     d_head=d_head, n_chunks=n_chunks, dim=dim, seed=seed)

    def arrays():
        emb = ChunkEmbedder(n_heads, d_head, n_chunks, dim, seed)
        raws = {layer: [] for layer in key_layers}
        lengths = []
        for i, (L, per_layer) in enumerate(captures()):
            lengths.append(L)
            for layer, (q, p) in per_layer.items():
                if layer in raws:
                    raws[layer].append(emb.raw(q[None], [L])[0])
                if layer in prob_layers:
                    yield f"p/{i}/{layer}", np.asarray(p[:, :L, :L], dtype=np.float32)
        yield "lengths", np.asarray(lengths, dtype=np.int64)
        yield "proj", emb.proj.numpy()
        for layer in key_layers:
            raw = torch.stack(raws[layer]) if raws[layer] else torch.zeros(0, emb.in_dim)
            emb.fit(layer, raw.numpy() if len(raw) else np.zeros((1, emb.in_dim), np.float32))
            yield f"centre/{layer}", emb.centre[layer].numpy()
            yield f"keys/{layer}", emb.project(layer, raw) if len(raw) else np.zeros((0, dim), np.float32)

    if "n_entries" not in full_meta:
        raise ValueError("meta must contain n_entries (the number of rows captures() yields)")
    store, rebuilt = open_or_build(Path(path), full_meta, arrays, log=log)
    db = AttentionDatabase(store)
    if len(db.lengths) != db.n_entries:
        raise StoreError(f"database holds {len(db.lengths)} entries, meta says {db.n_entries}")
    return db, rebuilt


# ============================================================================ online engine
class MemoEngine:
    """The online inference engine: an attn_fn for `attnlib.models.replaced_attention`.

    For a layer in ``memo_layers`` (and stored in the database): embed the layer input (from q),
    search the index; if cosine >= ``threshold`` (same valid length), output = stored_probs @ v
    (QK^T and softmax skipped); otherwise exact attention. Padded query rows of a hit row get zeros
    (they never influence valid tokens in an encoder). ``timing=True`` records a per-stage breakdown.
    """

    def __init__(self, db: AttentionDatabase, memo_layers, threshold: float, *, timing: bool = False):
        self.db, self.threshold, self.timing = db, float(threshold), timing
        self.memo_layers = {int(x) for x in memo_layers if db.has_probs(int(x))}
        self.reset()

    def reset(self):
        self.lookups = {layer: 0 for layer in self.memo_layers}
        self.hits = {layer: 0 for layer in self.memo_layers}
        self.similarities: list[tuple[int, float]] = []
        self.times = {"embed": 0.0, "search": 0.0, "fetch": 0.0, "reuse_pv": 0.0, "exact": 0.0}

    def hit_rate(self, layer=None) -> float:
        layers = self.memo_layers if layer is None else [layer]
        n = sum(self.lookups[x] for x in layers)
        return sum(self.hits[x] for x in layers) / n if n else 0.0

    def __call__(self, q, k, v, mask, scale, layer):
        if layer not in self.memo_layers:
            return exact_attention(q, k, v, mask, scale)
        B, H, T, d = q.shape
        lengths = valid_lengths(mask, B, k.shape[-2])
        if lengths is None or q.shape[-2] != k.shape[-2]:
            return exact_attention(q, k, v, mask, scale)
        clock = time.perf_counter if self.timing else None
        t0 = clock() if clock else 0.0
        emb = self.db.embedder.embed(layer, q, lengths)
        t1 = clock() if clock else 0.0
        found = [self.db.search(layer, emb[b], lengths[b]) for b in range(B)]
        t2 = clock() if clock else 0.0
        self.lookups[layer] += B
        for sim, _ in found:
            self.similarities.append((layer, sim))
        hit = [sim >= self.threshold for sim, _ in found]
        if clock:
            self.times["embed"] += t1 - t0
            self.times["search"] += t2 - t1
        if not any(hit):
            t3 = clock() if clock else 0.0
            out = exact_attention(q, k, v, mask, scale)
            if clock:
                self.times["exact"] += clock() - t3
            return out
        self.hits[layer] += sum(hit)
        if all(hit) and B == 1 and lengths[0] == T:
            t3 = clock() if clock else 0.0
            p = _as_tensor(self.db.probs(found[0][1], layer))
            t4 = clock() if clock else 0.0
            out = torch.matmul(p, v[0]).unsqueeze(0)
            if clock:
                self.times["fetch"] += t4 - t3
                self.times["reuse_pv"] += clock() - t4
            return out
        out = torch.zeros(B, H, T, v.shape[-1], dtype=v.dtype)
        miss = [b for b in range(B) if not hit[b]]
        if miss:
            sub_mask = None if mask is None else mask[miss] if mask.shape[0] == B else mask
            out[miss] = exact_attention(q[miss], k[miss], v[miss], sub_mask, scale)
        for b in range(B):
            if hit[b]:
                L = lengths[b]
                out[b, :, :L] = torch.matmul(_as_tensor(self.db.probs(found[b][1], layer)), v[b, :, :L])
        return out


def _as_tensor(arr: np.ndarray) -> torch.Tensor:
    """torch view of a read-only memmap view (no copy; torch warns about non-writability, harmless:
    nothing ever writes to it)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return torch.from_numpy(arr)


# ============================================================================ performance model
def _median_time(fn, reps: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return float(np.median(ts))


def measure_layer_costs(db: AttentionDatabase, layer: int, q, k, v, mask, scale, *, reps: int = 20) -> dict:
    """Measured (seconds, median of ``reps``) costs for one layer on its real q/k/v (batch 1):

    recompute: QK^T*scale + mask + softmax + PV (what a miss costs, the unmodified computation);
    embed, search: the lookup (paid on every input of a memoised layer);
    fetch: the memmap view + tensor wrap; reuse_pv: stored_probs @ V (what a hit costs beyond lookup).
    Entry used for fetch/reuse: the nearest stored entry of the same length (any, if the layer has
    probabilities stored; else the freshly computed probabilities stand in).
    """
    lengths = valid_lengths(mask, 1, k.shape[-2])
    L = lengths[0]
    emb = db.embedder.embed(layer, q, lengths)
    _, entry = db.search(layer, emb[0], L)
    if db.has_probs(layer) and entry >= 0:
        pview = lambda: _as_tensor(db.probs(entry, layer))  # noqa: E731
    else:
        fresh = torch.softmax(torch.matmul(q, k.transpose(-1, -2)) * scale + (0 if mask is None else mask), -1)[0]
        arr = fresh.numpy()
        pview = lambda: torch.from_numpy(arr)  # noqa: E731
    p = pview()
    out = dict(
        recompute=_median_time(lambda: exact_attention(q, k, v, mask, scale), reps),
        scores_softmax=_median_time(lambda: torch.softmax(torch.matmul(q, k.transpose(-1, -2)) * scale
                                                          + (0 if mask is None else mask), -1), reps),
        embed=_median_time(lambda: db.embedder.embed(layer, q, lengths), reps),
        search=_median_time(lambda: db.search(layer, emb[0], L), reps),
        fetch=_median_time(pview, reps),
        reuse_pv=_median_time(lambda: torch.matmul(p, v[0]), reps),
    )
    out["lookup"] = out["embed"] + out["search"]
    out["hit_cost"] = out["lookup"] + out["fetch"] + out["reuse_pv"]
    out["miss_cost"] = out["lookup"] + out["recompute"]
    return out


def decide_layers(costs: dict, hit_rates: dict) -> dict:
    """Per-layer decision of the performance model: expected saving per input (s) and memoise or not.

    saving(l) = h_l * (recompute - fetch - reuse_pv) - lookup   (lookup is paid on hits and misses)
    """
    out = {}
    for layer, c in costs.items():
        h = float(hit_rates.get(layer, 0.0))
        gain = h * (c["recompute"] - c["fetch"] - c["reuse_pv"]) - c["lookup"]
        out[layer] = dict(hit_rate=h, expected_saving=gain, memoise=bool(gain > 0))
    return out


# ============================================================================ measurement
def interleaved_latency(fns: dict, inputs: list, reps: int, *, warmup: int = 1) -> dict:
    """Wall-clock latency of each fn in ``fns`` (name -> callable(input)) on every input.

    Repetitions are interleaved: in rep r, for every input, the functions run back to back in an
    order that alternates between reps (ABAB / BABA), so a slow phase of the machine hits both.
    Returns {name: array (reps, n_inputs) of wall-clock seconds} and, under ``name + "@cpu"``, the
    process CPU seconds of the same calls (with one torch thread this equals the latency on an idle core;
    unlike wall-clock it does not count the time other processes held the CPU).
    """
    names = list(fns)
    for x in inputs[:warmup] if warmup else []:
        for n in names:
            fns[n](x)
    out = {n: np.zeros((reps, len(inputs))) for n in names}
    out.update({f"{n}@cpu": np.zeros((reps, len(inputs))) for n in names})
    for r in range(reps):
        for i, x in enumerate(inputs):
            order = names if (r + i) % 2 == 0 else names[::-1]
            for n in order:
                c = time.process_time()
                t = time.perf_counter()
                fns[n](x)
                out[n][r, i] = time.perf_counter() - t
                out[f"{n}@cpu"][r, i] = time.process_time() - c
    return out


def reduction_stats(base: np.ndarray, memo: np.ndarray) -> dict:
    """Latency reduction in % per repetition (total over the inputs of that rep): median, IQR, all."""
    red = 100.0 * (1.0 - memo.sum(axis=1) / base.sum(axis=1))
    q1, med, q3 = np.percentile(red, [25, 50, 75])
    return dict(median=float(med), q1=float(q1), q3=float(q3), per_rep=red,
                base_ms=float(np.median(base.sum(1)) * 1e3 / base.shape[1]),
                memo_ms=float(np.median(memo.sum(1)) * 1e3 / memo.shape[1]))


def machine_info() -> dict:
    """CPU model, logical CPUs, torch threads and load average at the time of the call."""
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        load = os.getloadavg()
    except OSError:
        load = (float("nan"),) * 3
    return dict(cpu=cpu, logical_cpus=os.cpu_count(), torch_threads=torch.get_num_threads(),
                torch=torch.__version__, load_avg_1m=round(load[0], 2), python=platform.python_version())


# ============================================================================ populations
def edit_text(text: str, n_edits: int, rng: np.random.Generator, *, limit: int | None = None) -> str:
    """A near-duplicate re-query: ``n_edits`` small word-level edits, each chosen uniformly among: swap
    two adjacent words, replace a word by another word of the same text, delete a word. Edit positions
    lie in the first ``limit`` words (None: anywhere), e.g. inside the window a truncated model sees."""
    words = text.split()
    if len(words) < 4:
        return text
    for _ in range(n_edits):
        kind = int(rng.integers(3))
        hi = len(words) - 1 if limit is None else max(1, min(limit, len(words) - 1))
        i = int(rng.integers(hi))
        if kind == 0:
            words[i], words[i + 1] = words[i + 1], words[i]
        elif kind == 1:
            words[i] = words[int(rng.integers(len(words)))]
        elif len(words) > 4:
            del words[i]
    return " ".join(words)


def doc_windows(rm, docs: list[str], length: int, *, extra: int = 32) -> list[tuple[str, int]]:
    """For every document with at least ``length + extra`` tokens: (text of its first length-2+extra
    word-piece tokens, decoded; number of words of that text that fall inside the first ``length``
    tokens). Encoding such a text with max_length=length gives exactly ``length`` tokens (no padding),
    also after a few edits; edits within the returned word count change what the model sees."""
    tok = rm.tokenizer
    out = []
    for doc in docs:
        ids = tok(doc, add_special_tokens=False, truncation=False)["input_ids"]
        if len(ids) < length + extra:
            continue
        head = tok.decode(ids[:length - 2], clean_up_tokenization_spaces=False)
        text = tok.decode(ids[:length - 2 + extra], clean_up_tokenization_spaces=False)
        out.append((text, len(head.split())))
    return out


@dataclass
class Populations:
    """The inputs of one (task, length) experiment (all real text, from attnlib.data):

    db: the documents whose attention is stored (earlier queries); near: re-queries of db documents
    with ``n_edits`` small edits each (the near-duplicate population); fresh: held-out documents never
    stored (the fresh population); profile_near / profile_fresh: a separate sample of each kind (other
    edits, other documents) that the offline profiler uses to estimate per-layer hit rates, so the
    layer decision is not made on the measured inputs; repeat: exact re-queries of the db documents the
    near-duplicates come from (the same documents asked again, unchanged: the best case)."""

    task: str
    length: int
    db: list[str]
    near: list[str]
    fresh: list[str]
    profile_near: list[str]
    profile_fresh: list[str]
    repeat: list[str] = field(default_factory=list)


def make_populations(rm, task: str, docs: list[str], length: int, *, n_db: int, n_query: int, n_edits: int,
                     seed: int = 0) -> Populations:
    """Split the windows of ``docs`` (see `doc_windows`) into db / fresh / profile-fresh documents and
    make the edited re-queries; needs n_db + 2 * n_query documents of at least ``length`` tokens."""
    wins = doc_windows(rm, docs, length)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(wins))
    need = n_db + 2 * n_query
    if len(wins) < need or n_query > n_db:
        raise ValueError(f"{task}: {len(wins)} documents of >= {length} tokens, need {need} (and n_query <= n_db)")
    pick = [wins[i] for i in order[:need]]
    db = pick[:n_db]
    fresh = [t for t, _ in pick[n_db:n_db + n_query]]
    pfresh = [t for t, _ in pick[n_db + n_query:]]
    near = [edit_text(t, n_edits, rng, limit=lim) for t, lim in db[:n_query]]
    pnear = [edit_text(t, n_edits, rng, limit=lim) for t, lim in db[-n_query:]]
    return Populations(task, length, [t for t, _ in db], near, fresh, pnear, pfresh, [t for t, _ in db[:n_query]])


# ============================================================================ running the real model
def capture_rows(rm, texts: list[str], max_length: int, *, batch_size: int = 4, layers=None):
    """Generator for `build_database`: per text, (valid length, {layer: (q (H,L,d), probs (H,L,L))}) from
    the real model (`attnlib.models.capture`), texts batched ``batch_size`` at a time."""
    from .. import models

    def gen():
        for s in range(0, len(texts), batch_size):
            batch = models.encode(rm, texts[s:s + batch_size], max_length)
            caps = models.capture(rm, batch, layers=layers)
            lengths = batch["attention_mask"].sum(1).tolist()
            for b, L in enumerate(lengths):
                yield int(L), {c.layer: (c.q[b, :, :L], c.probs[b, :, :L, :L].numpy()) for c in caps}
    return gen


def query_similarities(rm, db: AttentionDatabase, texts: list[str], max_length: int, *,
                       batch_size: int = 4) -> np.ndarray:
    """(n_texts, n_layers) best cosine similarity of each text's layer inputs (exact forward) to the
    database entries of the same valid length, for every layer with keys (-inf: no same-length entry)."""
    from .. import models

    layers = db.key_layers
    out = np.full((len(texts), max(layers) + 1), -np.inf)
    for s in range(0, len(texts), batch_size):
        batch = models.encode(rm, texts[s:s + batch_size], max_length)
        lengths = batch["attention_mask"].sum(1).tolist()
        for c in models.capture(rm, batch, layers=layers):
            emb = db.embedder.embed(c.layer, c.q, lengths)
            for b, L in enumerate(lengths):
                out[s + b, c.layer] = db.search(c.layer, emb[b], L)[0]
    return out


def forward_fns(rm, engine: "MemoEngine") -> dict:
    """The two timed callables of the latency comparison, each taking an encoded batch:
    ``base`` = the unmodified model (its own eager attention), ``memo`` = the model with the engine
    plugged in through `attnlib.models.replaced_attention` (all overheads included)."""
    from .. import models

    def base(batch):
        with torch.no_grad():
            rm.model(**batch)

    def memo(batch):
        if not engine.memo_layers:  # nothing memoised: the engine is not plugged in at all
            return base(batch)
        with torch.no_grad(), models.replaced_attention(rm, engine, layers=sorted(engine.memo_layers)):
            rm.model(**batch)

    return dict(base=base, memo=memo)


def words_in_window(rm, text: str, max_length: int) -> int:
    """How many whitespace words of ``text`` fall inside the first ``max_length`` tokens (with [CLS]/[SEP])."""
    ids = rm.tokenizer(text, add_special_tokens=False, truncation=False)["input_ids"][:max_length - 2]
    return len(rm.tokenizer.decode(ids).split())


def raw_embeddings(rm, texts: list[str], max_length: int, embedder: ChunkEmbedder, *, layers=None,
                   batch_size: int = 8) -> tuple[dict, np.ndarray]:
    """Un-centred chunk-pooled queries of ``texts`` from exact forwards: ({layer: (N, in_dim)}, lengths)."""
    from .. import models

    out, lengths = {}, []
    for s in range(0, len(texts), batch_size):
        batch = models.encode(rm, texts[s:s + batch_size], max_length)
        ls = batch["attention_mask"].sum(1).tolist()
        lengths += ls
        for c in models.capture(rm, batch, layers=layers):
            out.setdefault(c.layer, []).append(embedder.raw(c.q, ls).numpy())
    return {k: np.concatenate(v) for k, v in out.items()}, np.asarray(lengths)


def best_similarity(embedder: ChunkEmbedder, layer: int, raw_db: np.ndarray, raw_q: np.ndarray) -> np.ndarray:
    """Best cosine of each query against a database population (centre fitted on that population);
    same computation as the engine's index search, done in bulk for offline analysis (equal lengths)."""
    embedder.fit(layer, raw_db)
    keys = embedder.project(layer, torch.from_numpy(raw_db))
    q = embedder.project(layer, torch.from_numpy(raw_q))
    return (q @ keys.T).max(axis=1)


def mix_reduction(base: np.ndarray, memo: np.ndarray, is_near: np.ndarray, near_fraction: float) -> dict:
    """Latency reduction (%) per repetition for a population mix: mean latency of the near-duplicate
    inputs weighted ``near_fraction``, fresh inputs ``1 - near_fraction``; median and IQR over reps."""
    is_near = np.asarray(is_near, bool)
    w = float(near_fraction)

    def mean(x):
        return w * x[:, is_near].mean(1) + (1 - w) * x[:, ~is_near].mean(1)

    red = 100.0 * (1.0 - mean(memo) / mean(base))
    q1, med, q3 = np.percentile(red, [25, 50, 75])
    return dict(median=float(med), q1=float(q1), q3=float(q3), per_rep=red)


def predicted_saving(costs: dict, hit_rates: dict, layers) -> float:
    """Seconds saved per input by memoising ``layers`` (performance model, see `decide_layers`)."""
    dec = decide_layers({k: costs[k] for k in layers}, hit_rates)
    return float(sum(d["expected_saving"] for d in dec.values()))


# ============================================================================ intervals and load (claims v2)
def population_times(times: np.ndarray, is_near, near_fraction: float) -> np.ndarray:
    """Per-repetition mean latency (R,) of a population mix: mean over the near-duplicate inputs weighted
    ``near_fraction``, mean over the fresh inputs ``1 - near_fraction`` (a weight of 0 ignores that side)."""
    times = np.asarray(times, dtype=np.float64)
    is_near = np.asarray(is_near, bool)
    w = float(near_fraction)
    if not 0.0 <= w <= 1.0:
        raise ValueError(f"near_fraction must lie in [0, 1], got {near_fraction}")
    if times.ndim != 2 or times.shape[1] != len(is_near):
        raise ValueError(f"times must be (reps, n_inputs) with n_inputs = len(is_near) = {len(is_near)}, got {times.shape}")
    parts = []
    if w > 0:
        if not is_near.any():
            raise ValueError("near_fraction > 0 but no near-duplicate input")
        parts.append(w * times[:, is_near].mean(1))
    if w < 1:
        if is_near.all():
            raise ValueError("near_fraction < 1 but no fresh input")
        parts.append((1 - w) * times[:, ~is_near].mean(1))
    return np.sum(parts, axis=0)


def average_reduction(cells: list[tuple[np.ndarray, np.ndarray]], **kw):
    """Mean over cells of each cell's latency reduction in %, 100 * (1 - mean memo / mean base), with a
    paired bootstrap over interleaved repetitions (repetition r of every cell resampled together).

    cells: list of (t_base, t_memo), each of shape (R,) (per-repetition latency of that cell; the same R
    in every cell). Returns (point, `attnlib.stats.Interval`). One cell = `stats.latency_ratio`."""
    from .. import stats

    if not cells:
        raise ValueError("average_reduction needs at least one cell")
    reps = {np.shape(b)[0] for b, _ in cells} | {np.shape(m)[0] for _, m in cells}
    if len(reps) != 1:
        raise ValueError(f"every cell needs the same number of repetitions, got {sorted(reps)}")
    units = np.stack([np.stack([np.asarray(b, float).reshape(-1), np.asarray(m, float).reshape(-1)], -1)
                      for b, m in cells], axis=1)   # (R, C, 2)
    if np.any(units <= 0) or not np.all(np.isfinite(units)):
        raise ValueError("latencies must be positive finite seconds")

    def stat(u):   # u: (n_resamples, R, C, 2)
        return (100.0 * (1.0 - u[..., 1].mean(-2) / u[..., 0].mean(-2))).mean(-1)

    return stats.bootstrap(units, stat, method="paired bootstrap over interleaved repetitions "
                           f"(cells resampled together; mean over {len(cells)} cells)", **kw)


def _cpu_busy(interval: float) -> float:
    """Fraction of all CPUs busy (user+system+...) over ``interval`` seconds, from /proc/stat."""
    def read():
        f = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        idle = f[3] + (f[4] if len(f) > 4 else 0)
        return sum(f), idle
    t0, i0 = read()
    time.sleep(interval)
    t1, i1 = read()
    return float(1.0 - (i1 - i0) / max(t1 - t0, 1))


def load_check(*, sample_s: float = 1.0, max_busy: float = 0.25, wait_s: float = 0.0, log=print) -> dict:
    """The machine's load just before a timing run, while this process sleeps: the share of all CPUs
    that OTHER processes keep busy (sampled from /proc/stat over ``sample_s``) and the 1-minute load
    average. ``loaded`` is True when the busy share exceeds ``max_busy``; then a loud warning is logged (numbers timed now are flagged, not trusted).
    ``wait_s`` > 0: resample until the machine is idle, for at most that long (``waited_s`` says how long).
    The load average (reported, not judged) counts this process's own recent work too; the busy share
    does not (this process sleeps while it is sampled)."""
    if not 0 < max_busy < 1:
        raise ValueError(f"max_busy must lie in (0, 1), got {max_busy}")
    if sample_s <= 0 or wait_s < 0:
        raise ValueError(f"sample_s must be > 0 and wait_s >= 0, got {sample_s}, {wait_s}")
    deadline = time.monotonic() + wait_s
    while True:   # with wait_s: keep sampling until the machine is idle or the wait is over
        out = _load_sample(sample_s, max_busy)
        if not out["loaded"] or time.monotonic() >= deadline:
            break
    out["waited_s"] = round(max(0.0, wait_s - (deadline - time.monotonic())), 1)
    if out["loaded"]:
        log(f"!!! WARNING: LOADED MACHINE before timing: other processes keep {out['busy_other']:.0%} of the "
            f"{out['logical_cpus']} CPUs busy (1-min load {out['load_avg_1m']:.2f}). Latencies measured now are "
            "FLAGGED as measured under load. !!!")
    return out


def _load_sample(sample_s: float, max_busy: float) -> dict:
    try:
        busy = _cpu_busy(sample_s)
    except (OSError, ValueError, IndexError):
        busy = float("nan")
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = float("nan")
    ncpu = os.cpu_count() or 1
    loaded = bool(np.isfinite(busy) and busy > max_busy)
    return dict(busy_other=round(busy, 3), load_avg_1m=round(load, 2), logical_cpus=ncpu, loaded=loaded)
