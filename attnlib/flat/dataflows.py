"""The three dataflows of FLAT's v7 Table 3, each a (vectorised) search over the same hardware.

* **Naive** -- intra-operator, weight-stationary, fixed tiles (one array width, P, in every dimension),
  unfused: Logit, softmax, Attend one after another.
* **FLEX-Opt** -- intra-operator search per operator: buffer tile (tm, tn, tk) in powers of two and
  stationarity (output / weight / input), unfused. The N x N logits are produced by one operator and
  consumed by the next, so they stay on chip only if the WHOLE tensor of the layer (B*H*N^2 scores)
  fits next to the operators' tiles; otherwise they go off chip.
* **FLAT-Opt** -- joint search over the inter-operator choice (fuse or not: FLEX-Opt's mapping is part of
  the space) and the fused L-A tile: granularity M (all B*H heads), B (the H heads of
  one sequence), H (one head), R (R query rows of one head); K/V resident for the head (Table 1's 4Nd
  term) or streamed per row tile in array-wide chunks (what the FuseMax replica does), re-read once per
  row tile; logits on chip (partial spilling: what does not fit goes off chip) or off chip; each
  product's stationarity on the array.

GEMM conventions, C[M, Nc] = A[M, K] B[K, Nc] (elements):

* Buffer level (DRAM traffic) for a tile (tm, tn, tk): output-stationary reads A ceil(Nc/tn) times and
  B ceil(M/tm) times and writes C once; weight-stationary (B stays) reads B once, A ceil(Nc/tn) times,
  and writes C's partial sums ceil(K/tk) times (reading them back ceil(K/tk) - 1 times);
  input-stationary (A stays) symmetrically. Footprint 2 (tm tk + tk tn + tm tn): double buffered,
  consistent with overlapping compute and memory.
* Array level (P x P PEs): the stationarity picks the two spatial dimensions -- output (M, Nc), weight
  (K, Nc), input (M, K); a spatial extent x < P uses x / P of that side (tiles narrower than the array
  waste PEs). SRAM operand delivery is counted per array tile the same way as DRAM traffic per buffer tile.

Convention (`conventions`): FLAT's (softmax free; spilled logits: write L + read A; energy = DRAM traffic
of the two products) or full accounting (softmax passes on the 1D array; 4 passes over spilled logits;
energy over DRAM, SRAM, MAC and vector work). Latency of an operator: `combine(compute, memory, overlap)`;
the unfused designs sum their operators, FLAT's fused tile runs the 2D products and the 1D softmax
interleaved (compute = the larger of the two).

Every search returns the legal mapping with the lowest latency (ties: lower energy in the same
convention, then smaller footprint).
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np

from .conventions import (SOFTMAX_EXP_OPS, SOFTMAX_PASSES, SOFTMAX_SIMPLE_OPS, SOFTMAX_SRAM_ACCESSES,
                          AttentionShape, Hardware, as_hardware, combine, convention, energy_j)

STATIONARITIES = ("output", "weight", "input")
_S = {s: i for i, s in enumerate(STATIONARITIES)}
GRANULARITIES = ("M", "B", "H", "R")
DATAFLOWS = ("naive", "flex", "flat")
#: FLAT-Opt's map spaces: "full" searches every (QK, AV) stationarity pair; "replica" only the two pairs the
#: evaluated FLAT uses, as the FuseMax replica maps it (flat_validation.csv: QK/AV "output/output" and
#: "weight/weight" in Timeloop's labels, here QK output + AV weight and QK input + AV output): d_head
#: stays on one side of the array in A.V (or in Q.K^T), so a 256-wide array runs that product at d/256.
MAP_SPACES = {"full": None, "replica": (("output", "weight"), ("input", "output"))}
#: FLEX-Opt's logit residency: "layer" (the logits stay on chip only if the whole layer's B*H*N^2 scores
#: fit: FLEX-Opt is intra-operator, one operator is the whole layer's product), "head" (the operators run
#: head by head, so one head's N^2 scores must fit: an inter-operator schedule FLEX-Opt's map space does
#: not have), "off chip" (the logits always go to DRAM, as v7 Table 3's description of FLEX-Opt reads).
RESIDENCIES = ("layer", "head", "off chip")
COUNT_KEYS = ("dram_bytes", "sram_bytes", "macs", "exp_ops", "simple_ops")


def pow2_upto(n: int) -> np.ndarray:
    """Powers of two up to ``n`` (and ``n`` itself if it is not one)."""
    n = int(n)
    vals = [2 ** i for i in range(int(math.log2(n)) + 1)]
    if vals[-1] != n:
        vals.append(n)
    return np.array(vals, dtype=float)


def _eff(x, P):
    """Fraction of one array side of P used by a spatial extent x (folded in ceil(x / P) passes)."""
    x = np.asarray(x, float)
    return x / (P * np.ceil(x / P))


def _stat_index(stat) -> np.ndarray:
    s = np.asarray(stat)
    if s.dtype.kind in "US":
        bad = set(np.unique(s)) - set(STATIONARITIES)
        if bad:
            raise ValueError(f"unknown stationarity {sorted(bad)}; known: {', '.join(STATIONARITIES)}")
        return np.vectorize(_S.get)(s).astype(int)
    return s.astype(int)


def check_map_space(map_space: str) -> tuple | None:
    """The allowed (QK, AV) stationarity pairs of ``map_space`` (None: all)."""
    if map_space not in MAP_SPACES:
        raise ValueError(f"unknown FLAT map space {map_space!r}; known: {', '.join(MAP_SPACES)}")
    return MAP_SPACES[map_space]


def check_residency(residency: str) -> str:
    if residency not in RESIDENCIES:
        raise ValueError(f"unknown FLEX-Opt logit residency {residency!r}; known: {', '.join(RESIDENCIES)}")
    return residency


def buffer_traffic(M, Nc, K, tm, tn, tk, stat):
    """DRAM elements (A, B, C) of C[M,Nc] = A[M,K] B[K,Nc] with buffer tiles (tm, tn, tk) and stationarity
    index ``stat`` (0 output, 1 weight, 2 input); arrays broadcast."""
    st = _stat_index(stat)
    nm, nn, nk = np.ceil(M / np.asarray(tm, float)), np.ceil(Nc / np.asarray(tn, float)), np.ceil(K / np.asarray(tk, float))
    M, Nc, K = (np.asarray(x, float) for x in (M, Nc, K))
    A, B, C = M * K, K * Nc, M * Nc
    a = np.where(st == 2, A, A * nn)
    b = np.where(st == 1, B, B * nm)
    c = np.where(st == 0, C, C * (2 * nk - 1))
    return a, b, c


def array_work(M, Nc, K, xm, xn, xk, stat, P):
    """(cycles, SRAM delivery elements) of C[M,Nc] = A[M,K] B[K,Nc] on a P x P array when the tile being
    computed spans (xm, xn, xk) and the stationarity index ``stat`` picks the spatial dimensions."""
    st = _stat_index(stat)
    M, Nc, K = (np.asarray(x, float) for x in (M, Nc, K))
    em, en, ek = _eff(np.minimum(xm, M), P), _eff(np.minimum(xn, Nc), P), _eff(np.minimum(xk, K), P)
    util = np.where(st == 0, em * en, np.where(st == 1, ek * en, em * ek))
    cycles = M * Nc * K / (P * P * util)
    pm, pn, pk = np.minimum(P, np.minimum(xm, M)), np.minimum(P, np.minimum(xn, Nc)), np.minimum(P, np.minimum(xk, K))
    sram = np.sum(buffer_traffic(M, Nc, K, pm, pn, pk, st), axis=0)
    return cycles, sram, util


def _counts(**kw) -> dict:
    out = {k: 0.0 for k in COUNT_KEYS}
    out.update(kw)
    return out


def _add(*dicts) -> dict:
    return {k: sum(d[k] for d in dicts) for k in COUNT_KEYS}


# ----------------------------------------------------------------------------- one GEMM operator
def gemm_candidates(M, Nc, K) -> dict:
    """Every FLEX-Opt candidate of one GEMM: tile sizes in powers of two x stationarity."""
    tm, tn, tk, st = np.meshgrid(pow2_upto(M), pow2_upto(Nc), pow2_upto(K), np.arange(3), indexing="ij")
    return dict(tm=tm.ravel(), tn=tn.ravel(), tk=tk.ravel(), stat=st.ravel())


def naive_tile(M, Nc, K, P, capacity: float = np.inf) -> dict:
    """Naive's fixed mapping: weight-stationary, one array width P in every dimension (clipped to the GEMM;
    halved until the double-buffered tile fits ``capacity`` elements, for buffers smaller than the array)."""
    while P > 1 and 2 * 3 * P * P > capacity:
        P //= 2
    return dict(tm=np.array([float(min(P, M))]), tn=np.array([float(min(P, Nc))]), tk=np.array([float(min(P, K))]),
                stat=np.array([_S["weight"]]))


def gemm_eval(M, Nc, K, tiles: dict, hw: Hardware, *, count: float = 1.0, offchip=(True, True, True),
              capacity: float | None = None, overlap: float = 1.0) -> dict:
    """Vectorised cost of ``count`` independent GEMMs C[M,Nc] = A[M,K] B[K,Nc] over candidate ``tiles``.
    ``offchip`` says which of A, B, C live in DRAM (an on-chip tensor costs no DRAM traffic). Tiles whose
    footprint exceeds ``capacity`` (elements; default the buffer) are illegal (latency inf)."""
    cap = hw.capacity if capacity is None else capacity
    tm, tn, tk, st = (np.asarray(tiles[k], float) for k in ("tm", "tn", "tk", "stat"))
    fp = 2 * (tm * tk + tk * tn + tm * tn)
    a, b, c = buffer_traffic(M, Nc, K, tm, tn, tk, st)
    dram = count * (a * offchip[0] + b * offchip[1] + c * offchip[2]) * hw.elem_bytes
    cycles, sram, util = array_work(M, Nc, K, tm, tn, tk, st, hw.side)
    compute = count * cycles / hw.clock_hz
    memory = dram / hw.dram_bw
    legal = fp <= cap
    lat = np.where(legal, combine(compute, memory, overlap), np.inf)
    counts = _counts(dram_bytes=dram, sram_bytes=count * sram * hw.elem_bytes + dram, macs=count * float(M) * Nc * K)
    return dict(tm=tm, tn=tn, tk=tk, stat=st, footprint=fp, legal=legal, compute_s=compute, memory_s=memory,
                latency_s=lat, util=util, counts=counts)


def _pick(ev: dict, hw: Hardware, conv) -> int:
    en = energy_j(ev["counts"], hw, conv)
    en = np.broadcast_to(en, ev["latency_s"].shape)
    order = np.lexsort((ev["footprint"], en, ev["latency_s"]))
    return int(order[0])


def _take(ev: dict, i: int) -> dict:
    out = {}
    for k, v in ev.items():
        if k == "counts":
            out[k] = {kk: float(np.broadcast_to(vv, ev["latency_s"].shape)[i]) for kk, vv in v.items()}
        elif isinstance(v, np.ndarray) and v.shape == ev["latency_s"].shape:
            out[k] = v[i].item()
        else:
            out[k] = v
    return out


def best_gemm(M, Nc, K, hw, *, dataflow: str = "flex", count=1.0, offchip=(True, True, True), capacity=None,
              overlap=1.0, conv="flat") -> dict | None:
    """The chosen mapping of one GEMM operator (``dataflow`` "flex": searched; "naive": fixed), or None
    when no tile fits ``capacity``."""
    cap = hw.capacity if capacity is None else capacity
    tiles = naive_tile(M, Nc, K, hw.side, cap) if dataflow == "naive" else gemm_candidates(M, Nc, K)
    ev = gemm_eval(M, Nc, K, tiles, hw, count=count, offchip=offchip, capacity=capacity, overlap=overlap)
    i = _pick(ev, hw, conv)
    if not ev["legal"][i]:
        return None
    r = _take(ev, i)
    r["stat"] = STATIONARITIES[int(r["stat"])]
    return r


# ----------------------------------------------------------------------------- unfused attention (Naive, FLEX-Opt)
def _softmax_op(shape: AttentionShape, hw: Hardware, resident: bool, conv, overlap: float) -> dict:
    conv = convention(conv)
    if conv.softmax_free:
        return dict(latency_s=0.0, compute_s=0.0, memory_s=0.0, counts=_counts())
    s = float(shape.scores)
    dram = 0.0 if resident else 2 * s * hw.elem_bytes          # read L, write A
    compute = SOFTMAX_PASSES * s / (hw.lanes * hw.clock_hz)
    memory = dram / hw.dram_bw
    return dict(latency_s=float(combine(compute, memory, overlap)), compute_s=compute, memory_s=memory,
                counts=_counts(dram_bytes=dram, sram_bytes=SOFTMAX_SRAM_ACCESSES * s * hw.elem_bytes + dram,
                               exp_ops=SOFTMAX_EXP_OPS * s, simple_ops=SOFTMAX_SIMPLE_OPS * s))


@dataclass
class Mapping:
    """The chosen mapping of one attention layer under one dataflow and convention."""

    dataflow: str
    convention: str
    shape: AttentionShape
    hardware: str
    latency_s: float
    compute_s: float
    memory_s: float
    counts: dict
    energy_j: float
    tile: dict

    @property
    def traffic_bytes(self) -> float:
        return self.counts["dram_bytes"]

    @property
    def bound(self) -> str:
        return "memory" if self.memory_s > self.compute_s else "compute"

    def row(self) -> dict:
        return dict(dataflow=self.dataflow, convention=self.convention, model=self.shape.name, seq=self.shape.seq,
                    latency_s=self.latency_s, energy_j=self.energy_j, traffic_bytes=self.traffic_bytes,
                    bound=self.bound, **{k: v for k, v in self.tile.items() if not isinstance(v, dict)})


def unfused_cost(shape: AttentionShape, acc, *, qk: dict, av: dict, resident: bool, conv="flat",
                 overlap: float = 1.0, dataflow: str = "flex") -> Mapping | None:
    """Cost of the unfused attention with given operator tiles ``qk`` / ``av`` (dicts tm, tn, tk, stat)
    and logits ``resident`` on chip or not; None if a tile (or the resident logits) does not fit."""
    hw = as_hardware(acc)
    N, d, bh = shape.seq, shape.d_head, shape.bh
    cap = hw.capacity - (shape.scores if resident else 0)
    one = lambda t: {k: np.array([t[k] if k != "stat" else _S.get(t[k], t[k])], dtype=float) for k in ("tm", "tn", "tk", "stat")}  # noqa: E731
    e1 = gemm_eval(N, N, d, one(qk), hw, count=bh, offchip=(True, True, not resident), capacity=cap, overlap=overlap)
    e3 = gemm_eval(N, d, N, one(av), hw, count=bh, offchip=(not resident, True, True), capacity=cap, overlap=overlap)
    if not (e1["legal"][0] and e3["legal"][0]):
        return None
    return _assemble(shape, hw, _take(e1, 0), _take(e3, 0), resident, conv, overlap, dataflow)


def _assemble(shape, hw, o1, o3, resident, conv, overlap, dataflow) -> Mapping:
    sm = _softmax_op(shape, hw, resident, conv, overlap)
    counts = _add(o1["counts"], sm["counts"], o3["counts"])
    tile = dict(granularity="operator", logits="on chip" if resident else "off chip",
                qk=dict(tm=int(o1["tm"]), tn=int(o1["tn"]), tk=int(o1["tk"]), stat=STATIONARITIES[int(o1["stat"])]),
                av=dict(tm=int(o3["tm"]), tn=int(o3["tn"]), tk=int(o3["tk"]), stat=STATIONARITIES[int(o3["stat"])]),
                qk_stat=STATIONARITIES[int(o1["stat"])], av_stat=STATIONARITIES[int(o3["stat"])], rows=shape.seq,
                spilled=0.0 if resident else 1.0)
    return Mapping(dataflow, convention(conv).name, shape, hw.name,
                   latency_s=float(o1["latency_s"] + sm["latency_s"] + o3["latency_s"]),
                   compute_s=float(o1["compute_s"] + sm["compute_s"] + o3["compute_s"]),
                   memory_s=float(o1["memory_s"] + sm["memory_s"] + o3["memory_s"]),
                   counts=counts, energy_j=float(energy_j(counts, hw, conv)), tile=tile)


def search_unfused(shape: AttentionShape, acc, *, dataflow: str = "flex", conv="flat", overlap: float = 1.0,
                   residency: str = "layer") -> Mapping:
    """Naive (fixed weight-stationary tiles) or FLEX-Opt (searched per operator) for the unfused attention.
    Both try the logits resident on chip and off chip; ``residency`` (`RESIDENCIES`) says what must fit
    for them to stay: the whole layer's scores ("layer"), one head's ("head"), or nothing ("off chip":
    always spilled)."""
    if dataflow not in ("naive", "flex"):
        raise ValueError(f"unfused dataflow must be 'naive' or 'flex', got {dataflow!r}")
    check_residency(residency)
    hw = as_hardware(acc)
    N, d, bh = shape.seq, shape.d_head, shape.bh
    held = {"layer": shape.scores, "head": N * N, "off chip": None}[residency]
    best = None
    for resident in ((True, False) if held is not None else (False,)):
        cap = hw.capacity - (held if resident else 0)
        if cap <= 0:
            continue
        o1 = best_gemm(N, N, d, hw, dataflow=dataflow, count=bh, offchip=(True, True, not resident), capacity=cap,
                       overlap=overlap, conv=conv)
        o3 = best_gemm(N, d, N, hw, dataflow=dataflow, count=bh, offchip=(not resident, True, True), capacity=cap,
                       overlap=overlap, conv=conv)
        if o1 is None or o3 is None:
            continue
        o1["stat"], o3["stat"] = _S[o1["stat"]], _S[o3["stat"]]
        m = _assemble(shape, hw, o1, o3, resident, conv, overlap, dataflow)
        if best is None or (m.latency_s, m.energy_j) < (best.latency_s, best.energy_j):
            best = m
    if best is None:
        raise ValueError(f"the {hw.capacity * hw.elem_bytes:.0f}-byte buffer of {hw.name} is smaller than the smallest "
                         f"{dataflow} tile of {shape}")
    return best


# ----------------------------------------------------------------------------- FLAT-Opt (fused)
def flat_candidates(shape: AttentionShape, side: int, map_space: str = "full") -> dict:
    """Every FLAT-Opt candidate: granularity (M: all B*H heads, B: H heads, H: one head, R: R < N rows of
    one head) x K/V resident / streamed in chunks of c keys (powers of two up to the array side ``side``)
    x logits on / off chip x QK and AV stationarity (every pair, or the pairs of ``map_space``)."""
    allowed = check_map_space(map_space)
    pairs = [(a, b) for a in range(3) for b in range(3)] if allowed is None else [(_S[a], _S[b]) for a, b in allowed]
    N, H, bh = shape.seq, shape.heads, shape.bh
    gr = [(float(bh), float(N)), (float(H), float(N)), (1.0, float(N))] + [(1.0, r) for r in pow2_upto(N) if r < N]
    gr = list(dict.fromkeys(gr))
    kvs = [(1.0, float(N))] + [(0.0, c) for c in pow2_upto(min(N, side))]
    rows = []
    for (g, R), (kv, c), on, (sq, sa) in itertools.product(gr, kvs, (1.0, 0.0), pairs):
        rows.append((g, R, kv, c, on, sq, sa))
    a = np.array(rows, dtype=float)
    return dict(g=a[:, 0], rows=a[:, 1], kv_resident=a[:, 2].astype(bool), chunk=a[:, 3],
                logits_on_chip=a[:, 4].astype(bool), qk_stat=a[:, 5].astype(int), av_stat=a[:, 6].astype(int))


def granularity_of(shape: AttentionShape, g, R) -> np.ndarray:
    g, R = np.asarray(g, float), np.asarray(R, float)
    return np.where(R < shape.seq, "R", np.where(g >= shape.bh, "M", np.where(g > 1, "B", "H")))


def flat_eval(shape: AttentionShape, acc, cand: dict, *, conv="flat", overlap: float = 1.0) -> dict:
    """Vectorised cost of FLAT fused tiles ``cand`` (see `flat_candidates`). Buffer need (Table 1, double
    buffering included): g (4 R d + 4 N d + R N) with K/V resident, g (4 R d + 4 c d + R N) with K/V streamed
    in chunks of c keys (re-read once per row tile); the logit rows R N may spill (partial), the rest must
    fit. A streamed chunk of c keys also bounds the key extent the array uses at once."""
    conv = convention(conv)
    hw = as_hardware(acc)
    N, d, bh = shape.seq, shape.d_head, shape.bh
    P, e = hw.side, hw.elem_bytes
    g, R = np.asarray(cand["g"], float), np.asarray(cand["rows"], float)
    kv, on = np.asarray(cand["kv_resident"], bool), np.asarray(cand["logits_on_chip"], bool)
    sq, sa = np.asarray(cand["qk_stat"], int), np.asarray(cand["av_stat"], int)
    chunk = np.where(kv, float(N), np.asarray(cand.get("chunk", min(N, P)), float))
    fixed = g * (4 * R * d + 4 * chunk * d)
    logit = g * R * N
    legal = fixed <= hw.capacity
    buffered = np.where(on, np.clip((hw.capacity - fixed) / logit, 0.0, 1.0), 0.0)
    spill = 1.0 - buffered
    scores = float(shape.scores)
    kv_passes = np.where(kv | (R >= N), 1.0, np.ceil(N / R))
    qkvo = bh * N * d * e
    t_q = np.full_like(R, qkvo)
    t_kv = 2 * qkvo * kv_passes
    # off-chip logits bypass the buffer: a QK stationarity with the reduction (d) spatial writes partial
    # sums of L ceil(d / P) times and reads them back once less (output-stationary: written once)
    nk = np.where(sq == _S["output"], 1.0, np.ceil(d / min(P, d)))
    t_s = spill * scores * e * ((2 * nk - 1) + (conv.spill_passes - 1))
    dram = t_q * 2 + t_kv + t_s
    tiles = bh * N / R                      # head-row tiles over the layer
    # a streamed K/V chunk of c keys bounds the key extent the array can use at once
    c1, s1, u1 = array_work(R, N, d, R, chunk, d, sq, P)      # L[R,N] = Q[R,d] K^T[d,N]
    c3, s3, u3 = array_work(R, d, N, R, d, chunk, sa, P)      # O[R,d] = A[R,N] V[N,d]
    c2d = tiles * (c1 + c3) / hw.clock_hz
    if conv.softmax_free:
        c1d, sm_sram, exp_ops, simple_ops = 0.0, 0.0, 0.0, 0.0
    else:
        c1d = SOFTMAX_PASSES * scores / (hw.lanes * hw.clock_hz)
        sm_sram, exp_ops, simple_ops = SOFTMAX_SRAM_ACCESSES * scores, SOFTMAX_EXP_OPS * scores, SOFTMAX_SIMPLE_OPS * scores
    compute = np.maximum(c2d, c1d)
    memory = dram / hw.dram_bw
    lat = np.where(legal, combine(compute, memory, overlap), np.inf)
    counts = _counts(dram_bytes=dram, sram_bytes=(tiles * (s1 + s3) + sm_sram) * e + dram, macs=2.0 * scores * d,
                     exp_ops=exp_ops, simple_ops=simple_ops)
    en = np.where(legal, energy_j(counts, hw, conv), np.inf)
    return dict(g=g, rows=R, kv_resident=kv, chunk=chunk, logits_on_chip=on, qk_stat=sq, av_stat=sa,
                granularity=granularity_of(shape, g, R), legal=legal, fixed_bytes=fixed * e,
                footprint=np.minimum(fixed + logit * on, np.maximum(hw.capacity, fixed)) * e, spilled=spill,
                Q=t_q, O=t_q, KV=t_kv, scores=t_s, traffic=dram, compute_2d_s=c2d,
                compute_1d_s=np.broadcast_to(c1d, R.shape), compute_s=compute, memory_s=memory, latency_s=lat,
                counts=counts, energy_j=en, util_qk=u1, util_av=u3)


def _flat_mapping(shape, hw, conv, ev, i) -> Mapping:
    r = _take(ev, i)
    tile = dict(granularity=str(r["granularity"]), heads_per_tile=int(r["g"]), rows=int(r["rows"]),
                kv_resident=bool(r["kv_resident"]), kv_chunk=int(r["chunk"]), logits="on chip" if r["logits_on_chip"] else "off chip",
                qk_stat=STATIONARITIES[int(r["qk_stat"])], av_stat=STATIONARITIES[int(r["av_stat"])],
                spilled=float(r["spilled"]), footprint_bytes=float(r["footprint"]),
                util_qk=float(r["util_qk"]), util_av=float(r["util_av"]))
    return Mapping("flat", convention(conv).name, shape, hw.name, latency_s=float(r["latency_s"]),
                   compute_s=float(r["compute_s"]), memory_s=float(r["memory_s"]), counts=r["counts"],
                   energy_j=float(r["energy_j"]), tile=tile)


def search_flat(shape: AttentionShape, acc, *, conv="flat", overlap: float = 1.0, map_space: str = "full") -> Mapping:
    """FLAT-Opt: every candidate of `flat_candidates` (in ``map_space``) evaluated at once; the legal one
    with the lowest latency (ties: energy, then footprint). Raises ValueError if none fits."""
    hw = as_hardware(acc)
    ev = flat_eval(shape, hw, flat_candidates(shape, hw.side, map_space), conv=conv, overlap=overlap)
    if not ev["legal"].any():
        raise ValueError(f"the {hw.capacity * hw.elem_bytes:.0f}-byte buffer of {hw.name} is smaller than the smallest "
                         f"FLAT tile ({ev['fixed_bytes'].min():.0f} bytes: 1 row of 1 head with K/V streamed)")
    order = np.lexsort((ev["footprint"], ev["energy_j"], ev["latency_s"]))
    return _flat_mapping(shape, hw, conv, ev, int(order[0]))


def flat_cost(shape: AttentionShape, acc, *, granularity: str = "R", rows: int | None = None, kv_resident: bool = False,
              kv_chunk: int | None = None, logits_on_chip: bool = True, qk_stat: str = "output", av_stat: str = "input", conv="flat",
              overlap: float = 1.0) -> Mapping:
    """Cost of one given FLAT tile; raises ValueError if its non-spillable part exceeds the buffer."""
    hw = as_hardware(acc)
    if granularity not in GRANULARITIES:
        raise ValueError(f"unknown granularity {granularity!r}; known: {', '.join(GRANULARITIES)}")
    g = {"M": shape.bh, "B": shape.heads, "H": 1, "R": 1}[granularity]
    R = shape.seq if granularity != "R" else (rows if rows is not None else min(shape.seq, hw.side))
    if not 1 <= R <= shape.seq:
        raise ValueError(f"rows must lie in [1, {shape.seq}], got {R}")
    c = min(shape.seq, hw.side) if kv_chunk is None else kv_chunk
    if not 1 <= c <= shape.seq:
        raise ValueError(f"kv_chunk must lie in [1, {shape.seq}], got {c}")
    cand = dict(g=np.array([g], float), rows=np.array([R], float), kv_resident=np.array([kv_resident]), chunk=np.array([c], float),
                logits_on_chip=np.array([logits_on_chip]), qk_stat=_stat_index([qk_stat]), av_stat=_stat_index([av_stat]))
    ev = flat_eval(shape, hw, cand, conv=conv, overlap=overlap)
    if not ev["legal"][0]:
        raise ValueError(f"FLAT tile ({granularity}, {R} rows, K/V {'resident' if kv_resident else 'streamed'}) needs "
                         f"{ev['fixed_bytes'][0]:.0f} bytes on chip before any logit, more than the "
                         f"{hw.capacity * hw.elem_bytes:.0f}-byte buffer of {hw.name}")
    return _flat_mapping(shape, hw, conv, ev, 0)


def search_flat_opt(shape: AttentionShape, acc, *, conv="flat", overlap: float = 1.0, map_space: str = "full",
                    residency: str = "layer") -> Mapping:
    """FLAT-Opt: the inter-operator choice (fuse L and A, or not) searched together with the intra-operator
    one -- the better of the best fused tile (`search_flat` in ``map_space``) and FLEX-Opt's unfused mapping
    (with its logit ``residency``; granularity "unfused"; the fused tile can lose where the buffer is too
    small for a useful row tile)."""
    hw = as_hardware(acc)
    try:
        fused = search_flat(shape, hw, conv=conv, overlap=overlap, map_space=map_space)
    except ValueError:
        fused = None
    unf = search_unfused(shape, hw, dataflow="flex", conv=conv, overlap=overlap, residency=residency)
    if fused is not None and (fused.latency_s, fused.energy_j) <= (unf.latency_s, unf.energy_j):
        return fused
    tile = dict(unf.tile, granularity="unfused")
    return Mapping("flat", unf.convention, shape, hw.name, unf.latency_s, unf.compute_s, unf.memory_s, unf.counts,
                   unf.energy_j, tile)


def search(dataflow: str, shape: AttentionShape, acc, *, conv="flat", overlap: float = 1.0, map_space: str = "full",
           residency: str = "layer") -> Mapping:
    """The chosen mapping of ``dataflow`` ("naive", "flex", "flat") for one attention layer ("flat" is
    FLAT-Opt, `search_flat_opt`, in ``map_space``; FLEX-Opt and FLAT-Opt's unfused fallback keep the
    logits on chip by ``residency``; Naive keeps them by the layer rule)."""
    check_map_space(map_space)
    check_residency(residency)
    if dataflow == "flat":
        return search_flat_opt(shape, acc, conv=conv, overlap=overlap, map_space=map_space, residency=residency)
    if dataflow in ("naive", "flex"):
        return search_unfused(shape, acc, dataflow=dataflow, conv=conv, overlap=overlap,
                              residency=residency if dataflow == "flex" else "layer")
    raise ValueError(f"unknown dataflow {dataflow!r}; known: {', '.join(DATAFLOWS)}")


# ----------------------------------------------------------------------------- the other layers (end to end)
def other_layers(model_shape, batch: int, seq: int, acc, *, dataflow: str = "flex", conv="flat",
                 overlap: float = 1.0) -> dict:
    """Latency and counts of one layer's unfused GEMMs besides L and A: the Q/K/V and output projections
    and the two FFN GEMMs, each mapped by ``dataflow`` ("naive" fixed tiles; "flex" or "flat": the FLEX-Opt
    search, as FLAT's §8.1 runs them). Element-wise layers are ignored (ASSUMPTION: small next to the GEMMs)."""
    hw = as_hardware(acc)
    df = "naive" if dataflow == "naive" else "flex"
    D, S, rows = model_shape.d_model, model_shape.ffn, batch * seq
    lat, counts = 0.0, _counts()
    for Nc, K in ((3 * D, D), (D, D), (S, D), (D, S)):
        o = best_gemm(rows, Nc, K, hw, dataflow=df, overlap=overlap, conv=conv)
        if o is None:
            raise ValueError(f"no {df} tile of a {rows}x{Nc}x{K} GEMM fits the buffer of {hw.name}")
        lat += o["latency_s"]
        counts = _add(counts, o["counts"])
    return dict(latency_s=lat, counts=counts)
