"""End-to-end memory network (MemN2N, Sukhbaatar et al., NeurIPS 2015) trained here on generated
bAbI-style stories (`attnlib.a3.babi`), with exact or A3 attention over its memory.

The model (the paper's bAbI configuration, smaller than nothing it needs): every sentence x_i of a story is
one memory slot, embedded as a bag of words with position encoding (PE) plus a temporal encoding;
the question is embedded the same way as u. Each of ``hops`` hops attends with the query u over the
memory keys m_i = sum_j l_j * A x_ij + T_A(i): p = softmax(u . m_i) (unscaled dot products, as in the
paper), o = sum_i p_i c_i with the output embeddings c_i, then u <- u + o. The answer is softmax(W u).
Adjacent weight tying (A^{k+1} = C^k). Width ``d`` = 64: the A3 chip's d.

A3 attention replaces the softmax over the memory at every hop (`evaluate` with ``M`` / ``m_frac``
and ``T``): that is how A3 ran MemN2N, one query (a hop of one question) at a time against the story's
memory. Training runs once per configuration and is cached by its inputs (`train_cached`).
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from ..cache import cached
from ..threads import torch_threads
from .algorithm import ALGORITHM_VERSION, a3_attention
from .babi import generate

__all__ = ["MemN2N", "train", "train_cached", "evaluate", "MEMN2N_DEFAULTS", "MEMN2N_VERSION"]

#: Training configuration (Sukhbaatar et al. 2015, section 4.2, bAbI: 3 hops, adjacent tying, PE,
#: temporal encoding, SGD->Adam here; d = 64 is A3's key width instead of the paper's 20).
MEMN2N_DEFAULTS = dict(d=64, hops=3, epochs=20, batch=32, lr=0.01, n_train=2000, n_test=1000, n_min=10, n_max=50,
                       seed=0)
MEMN2N_VERSION = "memn2n-1"


def position_encoding(J: int, d: int) -> torch.Tensor:
    """(J, d) position-encoding weights l_kj = (1 - j/J) - (k/d)(1 - 2j/J) (1-based j, k; paper eq. in sec. 4.1)."""
    j = torch.arange(1, J + 1, dtype=torch.float32)[:, None]
    k = torch.arange(1, d + 1, dtype=torch.float32)[None, :]
    return (1 - j / J) - (k / d) * (1 - 2 * j / J)


class MemN2N(nn.Module):
    """MemN2N with ``hops`` hops, adjacent tying, PE and temporal encoding; vocabulary V, slots n_max."""

    def __init__(self, V: int, n_max: int, J: int, d: int = 64, hops: int = 3):
        super().__init__()
        if min(V, n_max, J, d, hops) < 1:
            raise ValueError("V, n_max, J, d and hops must be >= 1")
        self.d, self.hops, self.n_max, self.J = d, hops, n_max, J
        self.emb = nn.ModuleList([nn.Embedding(V, d, padding_idx=0) for _ in range(hops + 1)])
        self.temporal = nn.ParameterList([nn.Parameter(torch.randn(n_max, d) * 0.1) for _ in range(hops + 1)])
        self.out = nn.Linear(d, V, bias=False)
        for e in self.emb:
            nn.init.normal_(e.weight, std=0.1)
            with torch.no_grad():
                e.weight[0].zero_()
        self.register_buffer("pe", position_encoding(J, d))

    def _bag(self, k: int, x: torch.Tensor) -> torch.Tensor:
        # sum_j l_j * E[x_j]: fold the position weights into the table first ((J, V, d), cheap: V is small)
        w = torch.einsum("vd,jd->jvd", self.emb[k].weight, self.pe)
        return sum(w[j][x[..., j]] for j in range(x.shape[-1]))

    def forward(self, story, n_mem, question, attn=None, record=None):
        """Answer logits (B, V). story (B, n_max, J) word ids, n_mem (B,) sentences, question (B, J).
        ``attn(u (B, 1, d), m (B, n, d), c (B, n, d), allowed (B, 1, n) bool) -> o (B, 1, d)`` replaces
        the exact softmax attention; ``record(hop, result)`` receives what ``attn`` returns besides o."""
        n = story.shape[1]
        # memory slot i holds the i-th sentence; the temporal encoding counts from the most recent one
        slot = (n_mem[:, None] - 1 - torch.arange(n)[None, :]).clamp(min=0)
        allowed = (torch.arange(n)[None, :] < n_mem[:, None])[:, None, :]
        u = self._bag(0, question)
        for h in range(self.hops):
            m = self._bag(h, story) + self.temporal[h][slot]
            c = self._bag(h + 1, story) + self.temporal[h + 1][slot]
            if attn is None:
                s = torch.einsum("bd,bnd->bn", u, m).masked_fill(~allowed[:, 0], -math.inf)
                o = torch.einsum("bn,bnd->bd", torch.softmax(s, -1), c)
            else:
                o = attn(u[:, None], m, c, allowed, h)[:, 0]
            u = u + o
        return self.out(u)


def _tensors(data):
    return (torch.from_numpy(data["story"]), torch.from_numpy(data["n_mem"]), torch.from_numpy(data["question"]),
            torch.from_numpy(data["answer"]))


def train(train_set, *, d=64, hops=3, epochs=20, batch=32, lr=0.01, seed=0, progress=False) -> MemN2N:
    """Train a MemN2N on a `babi.generate` set (Adam, lr halved every 10 epochs, gradient norm clipped
    at 40 as in the paper). Deterministic for a seed on one thread."""
    torch.manual_seed(seed)
    story, n_mem, q, a = _tensors(train_set)
    model = MemN2N(len(train_set["vocab"]), story.shape[1], story.shape[2], d=d, hops=hops)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=10, gamma=0.5)
    g = torch.Generator().manual_seed(seed)
    from tqdm.auto import tqdm

    for _ in tqdm(range(epochs), desc="MemN2N epochs", disable=not progress, leave=False):
        perm = torch.randperm(len(a), generator=g)
        for s in range(0, len(a), batch):
            i = perm[s:s + batch]
            loss = nn.functional.cross_entropy(model(story[i], n_mem[i], q[i]), a[i])
            opt.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 40.0)
            opt.step()
        sched.step()
    return model.eval()


def train_cached(config: dict | None = None, *, progress=False):
    """(model, train_set, test_set) for ``config`` (defaults `MEMN2N_DEFAULTS`): the stories are
    generated (train and test from different seeds), the model trained once and its weights cached
    under .cache/a3 by the whole configuration and the code version."""
    cfg = {**MEMN2N_DEFAULTS, **(config or {})}
    unknown = set(cfg) - set(MEMN2N_DEFAULTS)
    if unknown:
        raise ValueError(f"unknown MemN2N settings {sorted(unknown)}")
    tr = generate(cfg["n_train"], n_min=cfg["n_min"], n_max=cfg["n_max"], seed=2 * cfg["seed"])
    te = generate(cfg["n_test"], n_min=cfg["n_min"], n_max=cfg["n_max"], seed=2 * cfg["seed"] + 1, vocab=tr["vocab"])
    J = max(tr["story"].shape[2], te["story"].shape[2])
    for s in (tr, te):  # one sentence width for both sets
        pad = J - s["story"].shape[2]
        s["story"] = np.pad(s["story"], ((0, 0), (0, 0), (0, pad)))
        s["question"] = np.pad(s["question"], ((0, 0), (0, J - s["question"].shape[1])))

    def fit():
        with torch_threads(1):
            m = train(tr, d=cfg["d"], hops=cfg["hops"], epochs=cfg["epochs"], batch=cfg["batch"], lr=cfg["lr"],
                      seed=cfg["seed"], progress=progress)
        return {k: v.detach().numpy() for k, v in m.state_dict().items()}

    state = cached("a3", "memn2n", dict(cfg=cfg, version=MEMN2N_VERSION, J=J), fit)
    model = MemN2N(len(tr["vocab"]), tr["story"].shape[1], J, d=cfg["d"], hops=cfg["hops"])
    model.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in state.items()})
    return model.eval(), tr, te


def evaluate(model: MemN2N, data, *, M=None, m_frac=None, T=math.inf, use_cache: bool = True, chunk: int = 250) -> dict:
    """Per-question correctness of ``model`` on ``data`` with exact attention (neither M nor m_frac)
    or A3 attention over the memory at every hop (M iterations, or ceil(m_frac * sentences); T a logit
    margin, math.inf keeps every candidate). Returns correct (N,) bool, task (N,), and for A3 the
    per-query counts over (question, hop) pairs that `speedups` takes: n_allowed, m, candidates,
    survivors, max_picks, min_picks (arrays of N*hops). A3 runs are cached by the model's weights,
    the data and the settings unless ``use_cache=False``."""
    exact = M is None and m_frac is None
    if use_cache and not exact:
        import hashlib

        h = hashlib.sha256()
        for v in model.state_dict().values():
            h.update(v.detach().numpy().tobytes())
        for x in ("story", "n_mem", "question", "answer"):
            h.update(np.ascontiguousarray(data[x]).tobytes())
        key = dict(model=h.hexdigest(), M=M, m_frac=m_frac, T=float(T), version=[ALGORITHM_VERSION, MEMN2N_VERSION])
        return cached("a3", "memn2n_eval", key, lambda: evaluate(model, data, M=M, m_frac=m_frac, T=T, use_cache=False))
    story, n_mem, q, a = _tensors(data)
    rec = {k: [] for k in ("n_allowed", "m", "candidates", "survivors", "max_picks", "min_picks")}

    def attn(u, m, c, allowed, hop):
        r = a3_attention(u, m, c, M=M, m_frac=m_frac, T=T, scale=1.0, mask=allowed)
        for k, attr in (("n_allowed", "n_allowed"), ("m", "m"), ("candidates", "n_candidates"),
                        ("survivors", "n_survivors"), ("max_picks", "max_picks"), ("min_picks", "min_picks")):
            rec[k].append(getattr(r, attr)[:, 0].numpy().astype(float))
        return r.out

    correct = []
    with torch.no_grad(), torch_threads(1):
        for s in range(0, len(a), chunk):  # chunks keep the (chunk, n, J, d) embeddings in cache
            sl = slice(s, s + chunk)
            logits = model(story[sl], n_mem[sl], q[sl], attn=None if exact else attn)
            correct.append((logits.argmax(-1) == a[sl]).numpy())
    out = dict(correct=np.concatenate(correct), task=np.asarray(data["task"]))
    if not exact:
        hops = model.hops
        for k, v in rec.items():  # per chunk (hops, chunk) -> question-major (N * hops)
            out[k] = np.concatenate([np.stack(v[i:i + hops], axis=1).reshape(-1) for i in range(0, len(v), hops)])
    return out
