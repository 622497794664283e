"""Finding a stored record whose attention maps are close to the current input's: keys, faiss index,
total-variation distance, the calibration of the hit threshold, and the map store.

* `tv_distance`: mean total-variation distance between two inputs' attention maps (per layer: the mean
  over heads and query rows of 0.5 * sum_k |p - q|; 0 = identical, 1 = disjoint).
* `InputIndex`: the per-input key (chunk means of the embedding output over 8 contiguous chunks of the
  valid tokens, centred on the database, Gaussian random projection to 128, L2-normalised, see
  `perlayer.ChunkEmbedder`), a faiss ``IndexFlatIP`` per valid length, and the hit rule: the PREDICTED
  TV distance (a monotone calibration of 1 - cosine, `TVCalibration`, fitted on held-out pairs with
  their measured TV) must be <= ``tau``. `LayerIndex`: the same per layer, from each layer's input.
* `SiameseKeys`: a small MLP trained (Siamese, shared weights) so that the Euclidean distance of two
  inputs' embeddings regresses onto their measured TV distance (the authors' later design); searched
  with a faiss ``IndexFlatL2``; its distance IS the predicted TV.
* `MapStore`: the attention maps (all layers) of the database entries that a query can ever be matched
  to, in one read-only memory-mapped file (`perlayer.MemmapStore`, checked, rebuilt when stale).
"""
from __future__ import annotations

import numpy as np
import torch

from .perlayer import ChunkEmbedder, open_or_build, AttentionDatabase  # noqa: F401  (re-used pieces)

__all__ = ["tv_distance", "pooled_raw", "TVCalibration", "InputIndex", "LayerIndex", "MapStore", "SiameseKeys"]


def tv_distance(p, q) -> float:
    """Mean TV distance between attention maps p, q of shape (..., H, L, L) (same shape): mean over every
    leading axis, head and query row of 0.5 * sum over keys |p - q|."""
    p, q = torch.as_tensor(p), torch.as_tensor(q)
    if p.shape != q.shape:
        raise ValueError(f"maps of different shapes {tuple(p.shape)} and {tuple(q.shape)}: no TV distance")
    return float(0.5 * (p.double() - q.double()).abs().sum(-1).mean())


def pooled_raw(embedder: ChunkEmbedder, x: torch.Tensor, lengths) -> torch.Tensor:
    """Chunk-pooled features (B, n_chunks * D) of hidden states x (B, T, D) over each row's valid tokens."""
    return embedder.raw(x.unsqueeze(1), lengths)


class TVCalibration:
    """Monotone (isotonic, increasing) map from cosine distance 1 - cos to the measured TV distance,
    fitted on (query, nearest entry) pairs; ``cos_threshold(tau)``: the smallest cosine whose predicted
    TV is <= tau (inf when no fitted distance predicts <= tau: then nothing ever hits)."""

    def __init__(self, cos_dist, tv):
        from sklearn.isotonic import IsotonicRegression

        x, y = np.asarray(cos_dist, float), np.asarray(tv, float)
        if x.shape != y.shape or x.ndim != 1 or len(x) < 3:
            raise ValueError("calibration needs >= 3 (cosine distance, TV) pairs of equal length")
        if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
            raise ValueError("calibration pairs must be finite")
        self.iso = IsotonicRegression(increasing=True, out_of_bounds="clip").fit(x, y)
        self.x, self.y = x, y

    def predict(self, cos_dist) -> np.ndarray:
        return self.iso.predict(np.atleast_1d(np.asarray(cos_dist, float)))

    def cos_threshold(self, tau: float) -> float:
        grid = np.unique(np.concatenate([[0.0], self.x, np.linspace(0, max(self.x.max(), 1e-9), 2001)]))
        ok = grid[self.predict(grid) <= tau]
        return float(1.0 - ok.max()) if len(ok) else float("inf")


class _Keys:
    """faiss inner-product indexes of L2-normalised keys, one per valid length (a hit needs the same
    shape of maps); ``entry_ids`` maps index rows to database entry ids."""

    def __init__(self, keys: np.ndarray, lengths, entry_ids=None):
        import faiss  # NB: never faiss.omp_set_num_threads here (it shares OpenMP with torch)

        keys = np.ascontiguousarray(keys, dtype=np.float32)
        lengths = np.asarray(lengths, np.int64)
        ids = np.arange(len(keys)) if entry_ids is None else np.asarray(entry_ids, np.int64)
        if not (len(keys) == len(lengths) == len(ids)):
            raise ValueError("keys, lengths and entry ids must have one row per entry")
        self.by_len = {}
        for L in np.unique(lengths):
            rows = np.flatnonzero(lengths == L)
            idx = faiss.IndexFlatIP(keys.shape[1])
            idx.add(keys[rows])
            self.by_len[int(L)] = (idx, ids[rows])

    def search(self, emb: np.ndarray, lengths) -> tuple[np.ndarray, np.ndarray]:
        """(best cosine, entry id) per row; (-inf, -1) where no entry has the row's length."""
        emb = np.ascontiguousarray(emb, dtype=np.float32)
        cos, ent = np.full(len(emb), -np.inf), np.full(len(emb), -1, np.int64)
        lengths = np.asarray(lengths)
        for L in np.unique(lengths):
            hit = self.by_len.get(int(L))
            if hit is None:
                continue
            rows = np.flatnonzero(lengths == L)
            d, i = hit[0].search(emb[rows], 1)
            cos[rows], ent[rows] = d[:, 0], hit[1][i[:, 0]]
        return cos, ent


class InputIndex:
    """Per-input lookup: key from the embedding output, faiss search, hit iff predicted TV <= tau."""

    def __init__(self, d_model: int, raw_db: np.ndarray, lengths_db, *, n_chunks: int = 8, dim: int = 128,
                 seed: int = 0, entry_ids=None):
        self.embedder = ChunkEmbedder(1, d_model, n_chunks, dim, seed)
        self.embedder.fit(0, raw_db)
        self.keys = _Keys(self.embedder.project(0, torch.as_tensor(raw_db)), lengths_db, entry_ids)
        self.cos_min = float("inf")   # set by `set_threshold`; inf: nothing hits
        self.calibration: TVCalibration | None = None

    def raw(self, x0, lengths) -> torch.Tensor:
        return pooled_raw(self.embedder, x0, lengths)

    def embed(self, x0, lengths) -> np.ndarray:
        return self.embedder.project(0, self.raw(x0, lengths))

    def embed_raw(self, raw) -> np.ndarray:
        return self.embedder.project(0, torch.as_tensor(raw))

    def search(self, emb, lengths):
        return self.keys.search(emb, lengths)

    def set_threshold(self, calibration: TVCalibration, tau: float) -> float:
        self.calibration, self.tau = calibration, float(tau)
        self.cos_min = calibration.cos_threshold(tau)
        return self.cos_min

    def match(self, emb, lengths) -> list[int]:
        cos, ent = self.search(emb, lengths)
        return [int(e) if c >= self.cos_min else -1 for c, e in zip(cos, ent)]


class LayerIndex:
    """Per-layer lookup: keys from each memoised layer's input, one calibration per layer."""

    def __init__(self, d_model: int, raw_db: dict, lengths_db, *, n_chunks: int = 8, dim: int = 128, seed: int = 0,
                 entry_ids=None):
        self.embedder = ChunkEmbedder(1, d_model, n_chunks, dim, seed)
        self.keys, self.cos_min = {}, {}
        for layer, raw in raw_db.items():
            self.embedder.fit(layer, raw)
            self.keys[layer] = _Keys(self.embedder.project(layer, torch.as_tensor(raw)), lengths_db, entry_ids)
            self.cos_min[layer] = float("inf")

    def embed(self, layer, x, lengths) -> np.ndarray:
        return self.embedder.project(layer, pooled_raw(self.embedder, x, lengths))

    def search(self, layer, emb, lengths):
        return self.keys[layer].search(emb, lengths)

    def set_threshold(self, layer, calibration: TVCalibration, tau: float) -> float:
        self.cos_min[layer] = calibration.cos_threshold(tau)
        return self.cos_min[layer]

    def match(self, layer, emb, lengths) -> list[int]:
        cos, ent = self.search(layer, emb, lengths)
        return [int(e) if c >= self.cos_min[layer] else -1 for c, e in zip(cos, ent)]


class MapStore:
    """Attention maps of selected database entries (all layers), memory-mapped read-only.

    ``build(path, meta, entries, maps_of)``: ``maps_of(entry_ids)`` returns, per entry, a list with one
    (H, L, L) float32 array per layer. Opening checks the header and checksum (`perlayer.MemmapStore`).
    ``fallback`` (usually ``maps_of``) materialises, in memory, an entry that was not stored."""

    def __init__(self, store, fallback=None):
        self.store, self.fallback = store, fallback
        self.entries = set(int(e) for e in store.meta["entries"])
        self.extra: dict[int, list] = {}

    @classmethod
    def build(cls, path, meta: dict, entries, maps_of, *, chunk: int = 8, fallback=None,
              log=print) -> tuple["MapStore", bool]:
        entries = sorted({int(e) for e in entries})
        full = dict(meta, entries=entries)

        def arrays():
            for s in range(0, len(entries), chunk):
                part = entries[s:s + chunk]
                for e, maps in zip(part, maps_of(part)):
                    for layer, p in enumerate(maps):
                        yield f"p/{e}/{layer}", np.asarray(p, dtype=np.float32)
            yield "entries", np.asarray(entries, np.int64)

        store, rebuilt = open_or_build(path, full, arrays, log=log)
        return cls(store, fallback), rebuilt

    def probs(self, entry: int, layer: int) -> np.ndarray:
        """(H, L, L) maps of ``entry`` at ``layer``: a view of the memory map (no copy). An entry that
        was not materialised is computed once with ``fallback([entry])`` and kept in memory (a lookup
        policy may match rows nobody predicted; warm-up runs materialise them before timing)."""
        e = int(entry)
        if e in self.entries:
            return self.store[f"p/{e}/{layer}"]
        if e not in self.extra:
            if self.fallback is None:
                raise KeyError(f"entry {e} is not in the map store and no fallback was given")
            self.extra[e] = [np.asarray(p, np.float32) for p in self.fallback([e])[0]]
        return self.extra[e][layer]

    def __contains__(self, entry) -> bool:
        return int(entry) in self.entries

    @property
    def nbytes(self) -> int:
        return self.store.nbytes


class SiameseKeys:
    """An MLP embedding f trained so that ||f(a) - f(b)||_2 regresses onto the measured TV distance of a
    pair (Siamese: one network, both inputs), searched with faiss ``IndexFlatL2`` (its distance IS the
    predicted TV). f(x) = A x + g(x): a linear metric plus a small MLP g (Linear(in, hidden) - ReLU -
    Linear(hidden, dim), last layer zero at the start), so the untrained f is a scaled Euclidean key
    distance and training bends it toward TV. (The authors' later projector is Linear - BatchNorm -
    Linear [secondary: AttnCache]; batch statistics are left out so one input embeds the same alone
    or in a batch.) Inputs are centred and scaled by one global standard deviation."""

    def __init__(self, in_dim: int, *, hidden: int = 64, dim: int = 32, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.lin = torch.nn.Linear(in_dim, dim, bias=False)
        self.mlp = torch.nn.Sequential(torch.nn.Linear(in_dim, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, dim))
        with torch.no_grad():
            # initial distances of unrelated standardised inputs ~ 0.5 (the far end of the TV range)
            self.lin.weight.copy_(torch.randn(dim, in_dim, generator=g) * 0.5 / np.sqrt(2.0 * dim * in_dim))
            self.mlp[0].weight.copy_(torch.randn(hidden, in_dim, generator=g) / np.sqrt(in_dim))
            self.mlp[0].bias.zero_()
            self.mlp[2].weight.zero_()
            self.mlp[2].bias.zero_()
        self.mu = self.sd = None
        self.seed = seed

    def net(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x) + self.mlp(x)

    def parameters(self):
        return list(self.lin.parameters()) + list(self.mlp.parameters())

    def _std(self, raw) -> torch.Tensor:
        return (torch.as_tensor(np.asarray(raw, np.float32)) - self.mu) / self.sd

    def fit(self, raw: np.ndarray, pairs: np.ndarray, tv: np.ndarray, *, epochs: int = 300, lr: float = 3e-3,
            weight_decay: float = 1e-3) -> list[float]:
        """Train on pairs (P, 2) of row indices into ``raw`` with measured TV (P,); full-batch Adam.
        Returns the loss per epoch (mean squared error of the predicted TV)."""
        raw = np.asarray(raw, np.float32)
        pairs, tv = np.asarray(pairs), torch.as_tensor(np.asarray(tv, np.float32))
        if pairs.ndim != 2 or pairs.shape[1] != 2 or len(pairs) != len(tv):
            raise ValueError("pairs must be (P, 2) row indices with one TV value each")
        self.mu = torch.as_tensor(raw.mean(0))
        self.sd = torch.as_tensor(float(raw.std()) + 1e-6)
        X = self._std(raw)
        torch.manual_seed(self.seed)
        opt = torch.optim.Adam(self.parameters(), lr=lr, weight_decay=weight_decay)
        a, b = torch.as_tensor(pairs[:, 0]), torch.as_tensor(pairs[:, 1])
        losses = []
        for _ in range(epochs):
            z = self.net(X)
            d = ((z[a] - z[b]) ** 2).sum(-1).add(1e-9).sqrt()
            loss = ((d - tv) ** 2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        return losses

    def embed(self, raw) -> np.ndarray:
        with torch.no_grad():
            return np.ascontiguousarray(self.net(self._std(raw)).numpy(), dtype=np.float32)

    def predict_tv(self, raw_a, raw_b) -> np.ndarray:
        ea, eb = self.embed(raw_a), self.embed(raw_b)
        return np.sqrt(((ea - eb) ** 2).sum(-1))

    def index(self, raw_db, lengths_db):
        """faiss ``IndexFlatL2`` per length over the database embeddings; search -> (predicted TV, entry)."""
        import faiss

        emb = self.embed(raw_db)
        lengths_db = np.asarray(lengths_db)
        out = {}
        for L in np.unique(lengths_db):
            rows = np.flatnonzero(lengths_db == L)
            idx = faiss.IndexFlatL2(emb.shape[1])
            idx.add(emb[rows])
            out[int(L)] = (idx, rows)

        def search(raw_q, lengths_q):
            e = self.embed(raw_q)
            d, ent = np.full(len(e), np.inf), np.full(len(e), -1, np.int64)
            lengths_q = np.asarray(lengths_q)
            for L in np.unique(lengths_q):
                if int(L) not in out:
                    continue
                rows = np.flatnonzero(lengths_q == L)
                dd, ii = out[int(L)][0].search(e[rows], 1)
                d[rows], ent[rows] = np.sqrt(np.maximum(dd[:, 0], 0)), out[int(L)][1][ii[:, 0]]
            return d, ent
        return search
