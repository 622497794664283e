"""FLAT (Kao et al., ASPLOS'23): fused Logit-Attend dataflow, modelled analytically.

What is modelled (one attention layer, all ``batch x heads`` heads; sizes in elements of
``acc.bytes_per_element`` bytes unless a name says bytes):

* ``baseline_cost`` -- the UNFUSED baseline, a "state-of-the-art accelerator without a customised
  attention dataflow". It runs three operators one after another, Logit = Q K^T, softmax,
  Attend = A V. Each GEMM is tiled well under the buffer: an output-stationary tile (tm, tn) is searched
  (powers of two, reduction streamed in chunks of one array width), minimising its off-chip traffic
  (A is re-read ceil(Nc/tn) times, B ceil(M/tm) times, C written once). It cannot fuse: the N x N
  logits L (and probabilities A) stay on chip only if the WHOLE tensor of the layer (B*H*N*N
  elements) fits next to the operator's tile; otherwise they go off chip between operators:
  write L, read L (softmax), write A, read A (Attend) = 4 passes over B*H*N^2 scores.
* ``flat_cost`` / ``search_flat`` -- FLAT's fused tile: ``heads_per_tile`` heads (1 = head/row
  granularity, H = batch granularity, i.e. all heads of one sequence) x ``rows`` query rows against
  all N keys. Per tile, on chip: Q rows and O rows (2*g*R*d), K and V (resident for the whole head,
  2*g*N*d, or streamed in chunks of one array width, 2*g*P*d, then re-read once per row tile) and
  the full logit rows g*R*N (softmax in place, no online softmax). The fixed part must fit (else the
  tile is illegal); logit rows that do not fit SPILL: the spilled fraction s costs the same 4 passes
  as the baseline, 4*s*B*H*N^2 elements. The search evaluates every candidate tile at once (numpy).
* Time: MACs on the PE array; a tile's query rows (g*R for FLAT, tm for a baseline GEMM) are spread
  along one side of the P x P array, so the utilisation is min(1, rows / P) (ASSUMPTION, both
  designs; P = sqrt(PEs)), softmax (3 ops per score,
  as attnlib.attention.attention_cost counts) on the vector unit, traffic at the DRAM bandwidth.
  Per operator latency = max(compute, memory) + (1 - overlap) * min(compute, memory); overlap = 1
  (ASSUMPTION, the Timeloop / MAESTRO convention of double-buffered tiles) is swept in the notebook.
  The baseline sums its three operators; FLAT's fused operator interleaves the array and the vector
  unit (compute = max of the two, FLAT's interleaved execution).
* Energy: MACs x MAC energy + softmax ops x vector-op energy + SRAM bytes x SRAM energy + DRAM bytes x
  DRAM energy, all from attnlib.hw's shared table. SRAM accesses = operand delivery to a P x P array
  (P = sqrt(PEs); A read ceil(Nc/P) times, B ceil(M/P) times, C written once, softmax reads and writes
  every score once; identical for both designs) + every DRAM byte once (filled into / drained from the
  buffer).

Constants that are not in attnlib.hw are defined here with their source or "ASSUMPTION".
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np

from .attention import attention_cost
from .hw import (GiB, KiB, MiB, Accelerator, make_accelerator,
                 preset)
from .workloads import FLAT_MODELS, workload

# ----------------------------------------------------------------------------- constants
#: Sequence lengths of FLAT's evaluation grid (paper / FuseMax artifact): 512 ... 64K.
FLAT_SEQS = tuple(512 * 2 ** i for i in range(8))
#: Batch of FLAT's grid (FuseMax artifact, column B).
FLAT_BATCH = 64
#: Softmax element-wise ops per score (max, exp, divide) -- as attnlib.attention.attention_cost counts.
SOFTMAX_OPS_PER_SCORE = attention_cost(1, 1, 1, 1, 1).softmax_ops
#: Clock of both FLAT platforms (FuseMax artifact): used by the FuseMax ideal-latency formula.
FUSEMAX_CLOCK_HZ = 940e6

#: Rows of the FuseMax MICRO'24 artifact's FLAT model (FPSG-UIUC/micro24-fusemax-artifact, commit
#: f543beb, workspace/outputs/pregenerated/results/flat_validation.csv), typed in (not copied):
#: (platform, model, seq) -> (granularity, P1 rows, proportion_spilled, mem_traffic bytes, ideal_latency s).
FUSEMAX_FLAT_ROWS = {
    ("cloud", "bert-base", 512): ("head", 256, 0.0, 352485376.00000006, 0.0004183148936170213),
    ("cloud", "bert-base", 8192): ("row", 1024, 0.0, 78114881536.00002, 0.10708861276595745),
    ("cloud", "trxl", 2048): ("head", 256, 0.0, 6711050240.000001, 0.008924051063829787),
    ("cloud", "xlm", 16384): ("row", 1024, 0.026615969581749055, 594926982817.5817, 1.1422785361702128),
    ("cloud", "t5", 65536): ("row", 256, 0.007751937984496138, 3379573389581.8916, 4.569114144680851),
    ("edge", "bert-base", 512): ("head", 32, 0.0, 1409490944.0, 0.026772153191489362),
    ("edge", "xlm", 4096): ("row", 128, 0.0, 242665715712.0, 4.569114144680851),
    ("edge", "bert-base", 8192): ("row", 128, 0.0, 413927520256.0, 6.853671217021277),
    ("edge", "trxl", 16384): ("row", 128, 0.0, 2203318269952.0, 36.55291315744681),
    ("edge", "t5", 32768): ("row", 128, 0.0, 4402341525504.0, 73.10582631489362),
    ("edge", "bert-base", 65536): ("row", 128, 0.0, 26401164015616.0, 438.6349578893617),
}

#: CPU-like configuration for the measured check: every number is an ASSUMPTION about this machine
#: (2 cores of an Intel Xeon @ 2.8 GHz with AVX-512 and FMA, lscpu; L2 2 x 1.25 MiB).
CPU_ASSUMPTIONS = {
    "pes": (2 * 2 * 16, "ASSUMPTION: 2 cores x 2 AVX-512 FMA units x 16 fp32 lanes"),
    "clock_hz": (2.8e9, "lscpu: Intel Xeon @ 2.80GHz (turbo ignored)"),
    "bits": (32, "fp32 tensors in the measurement"),
    "buffer_bytes": (2.5 * MiB, "ASSUMPTION: the two L2 caches (lscpu: 2.5 MiB) act as the on-chip buffer"),
    "dram_bandwidth": (10 * GiB, "ASSUMPTION: ~10 GiB/s sustained DRAM bandwidth for 2 cores of a cloud VM"),
}


# ----------------------------------------------------------------------------- shapes and platforms
@dataclass(frozen=True)
class AttentionShape:
    """One attention layer: ``batch`` sequences x ``heads`` heads, ``seq`` tokens, ``d_head`` wide."""

    batch: int
    heads: int
    seq: int
    d_head: int
    name: str = ""

    def __post_init__(self):
        for k in ("batch", "heads", "seq", "d_head"):
            v = getattr(self, k)
            if int(v) != v or v < 1:
                raise ValueError(f"{k} must be a positive integer, got {v}")

    @property
    def bh(self) -> int:
        return self.batch * self.heads

    @classmethod
    def from_model(cls, model: str, seq: int, batch: int = FLAT_BATCH) -> "AttentionShape":
        m = workload(model)
        return cls(batch, m.heads, seq, m.d_head, m.name)

    def ideal_latency_s(self, pes: int, clock_hz: float = FUSEMAX_CLOCK_HZ) -> float:
        """Compute-bound latency of the two GEMMs: 2*B*H*N^2*d MACs on ``pes`` MACs per cycle
        (the FuseMax artifact's ideal latency)."""
        return 2 * self.batch * self.heads * self.seq ** 2 * self.d_head / (pes * clock_hz)


def platform(name: str, *, buffer_bytes: float | None = None, dram_pj_per_bit: float | None = None,
             sram_scale: float = 1.0, node_nm: float = 45, alpha: float = 1.0,
             vector_lanes: int | None = None) -> Accelerator:
    """FLAT's ``"edge"`` or ``"cloud"`` platform from the shared presets ``flat-edge`` / ``flat-cloud``,
    optionally with another buffer size, DRAM energy, SRAM energy scale, node or node-scaling alpha."""
    if name not in ("edge", "cloud"):
        raise KeyError(f"unknown FLAT platform {name!r}; known: edge, cloud")
    p = preset(f"flat-{name}")
    return make_accelerator(p.name if buffer_bytes is None else f"{p.name} ({buffer_bytes / KiB:g} KiB)",
                            pes=p.compute.pes, clock_hz=p.compute.clock_hz, bits=p.compute.bits,
                            buffer_bytes=p.buffer.capacity_bytes if buffer_bytes is None else buffer_bytes,
                            dram_bandwidth=p.dram.bandwidth, node_nm=node_nm, alpha=alpha,
                            dram_pj_per_bit=p.dram.read_pj_per_bit if dram_pj_per_bit is None else dram_pj_per_bit,
                            sram_scale=sram_scale, vector_lanes=vector_lanes or p.vector.lanes, sources=p.sources)


def cpu_like_accelerator() -> Accelerator:
    """The CPU-like configuration of the measured check (all numbers: CPU_ASSUMPTIONS)."""
    a = {k: v for k, (v, _) in CPU_ASSUMPTIONS.items()}
    return make_accelerator("CPU-like (assumed)", dram_kind="dram_ddr",
                            sources={k: s for k, (_, s) in CPU_ASSUMPTIONS.items()}, **a)


def _array_side(acc: Accelerator) -> int:
    return max(1, int(round(math.sqrt(acc.compute.pes))))


def combine(compute_s, memory_s, overlap: float):
    """Latency of an operator: max(c, m) + (1 - overlap) * min(c, m); overlap=1 full, 0 serial."""
    if not 0 <= overlap <= 1:
        raise ValueError(f"overlap must lie in [0, 1], got {overlap}")
    c, m = np.asarray(compute_s, float), np.asarray(memory_s, float)
    return np.maximum(c, m) + (1 - overlap) * np.minimum(c, m)


# ----------------------------------------------------------------------------- results
@dataclass
class Cost:
    """Cost of one attention layer under one design and tile. Traffic in bytes per tensor."""

    design: str
    shape: AttentionShape
    accelerator: str
    tile: dict
    footprint_bytes: float
    spilled_fraction: float
    traffic: dict
    macs: float
    vector_ops: float
    compute_s: float
    memory_s: float
    latency_s: float
    energy: dict
    ops: list = field(default_factory=list)

    @property
    def traffic_bytes(self) -> float:
        return float(sum(self.traffic.values()))

    @property
    def energy_j(self) -> float:
        return float(sum(self.energy.values()))

    @property
    def bound(self) -> str:
        return "memory" if self.memory_s > self.compute_s else "compute"

    def row(self) -> dict:
        return dict(design=self.design, model=self.shape.name, seq=self.shape.seq, **self.tile,
                    footprint_KiB=self.footprint_bytes / KiB, spilled=self.spilled_fraction,
                    traffic_bytes=self.traffic_bytes, latency_s=self.latency_s, energy_j=self.energy_j,
                    bound=self.bound)


def _energy(acc: Accelerator, macs, vops, sram_bytes, dram_bytes) -> dict:
    return {"MAC": acc.compute.energy_j(macs), "vector": acc.vector.energy_j(vops),
            "SRAM": 8e-12 * sram_bytes * acc.buffer.read_pj_per_bit,
            "DRAM": 8e-12 * dram_bytes * acc.dram.read_pj_per_bit}


def _operand_delivery_elems(M, Nc, K, P):
    """Elements moved between buffer and a P x P array for C[M,Nc] = A[M,K] B[K,Nc]."""
    return M * K * math.ceil(Nc / P) + K * Nc * math.ceil(M / P) + M * Nc


def _pow2_upto(n: int) -> np.ndarray:
    vals = [2 ** i for i in range(int(math.log2(n)) + 1)]
    if vals[-1] != n:
        vals.append(n)
    return np.array(vals, dtype=float)


# ----------------------------------------------------------------------------- GEMM tiling (baseline)
def gemm_tile(M: int, Nc: int, K: int, capacity_elems: float, chunk: int):
    """Best output-stationary tile (tm, tn) for C[M,Nc] = A[M,K] B[K,Nc] under ``capacity_elems``:
    footprint tm*tk + tk*tn + tm*tn with the reduction streamed in chunks tk = min(K, chunk);
    off-chip elements A*ceil(Nc/tn) + B*ceil(M/tm) + C. Returns (tm, tn, footprint, (a, b, c) traffic)."""
    tk = min(K, chunk)
    tm, tn = np.meshgrid(_pow2_upto(M), _pow2_upto(Nc), indexing="ij")
    tm, tn = tm.ravel(), tn.ravel()
    fp = tm * tk + tk * tn + tm * tn
    a = M * K * np.ceil(Nc / tn)
    b = K * Nc * np.ceil(M / tm)
    tot = np.where(fp <= capacity_elems, a + b, np.inf)
    if not np.isfinite(tot).any():
        raise ValueError(f"buffer of {capacity_elems:g} elements is smaller than the smallest GEMM tile "
                         f"({fp.min():g} elements for a 1 x 1 output tile with a {tk}-deep reduction chunk)")
    i = int(np.argmin(tot + 1e-9 * fp))  # ties: the smaller footprint
    return int(tm[i]), int(tn[i]), float(fp[i]), (float(a[i]), float(b[i]), float(M * Nc))


def baseline_cost(shape: AttentionShape, acc: Accelerator, *, overlap: float = 1.0) -> Cost:
    """The unfused baseline (module docstring): Logit, softmax, Attend one after another."""
    N, d, bh = shape.seq, shape.d_head, shape.bh
    e = acc.bytes_per_element
    cap = acc.buffer.capacity_bytes / e
    P = _array_side(acc)
    tm1, tn1, fp1, (q1, k1, _) = gemm_tile(N, N, d, cap, P)        # Logit: L[N,N] = Q[N,d] K^T[d,N]
    tm3, tn3, fp3, (a3, v3, o3) = gemm_tile(N, d, N, cap, P)       # Attend: O[N,d] = A[N,N] V[N,d]
    scores = bh * N * N
    fits = scores + max(fp1, fp3, 2 * N) <= cap
    spill = 0.0 if fits else 1.0
    t_q, t_k = bh * q1 * e, bh * k1 * e
    t_v, t_o = bh * v3 * e, bh * o3 * e
    t_scores = 4 * spill * scores * e
    macs = 2 * bh * N * N * d
    vops = SOFTMAX_OPS_PER_SCORE * scores
    mt = acc.compute.time_s
    u1, u3 = min(1.0, tm1 / P), min(1.0, tm3 / P)
    ops = [  # (name, compute s, off-chip bytes)
        ("Logit", mt(bh * N * N * d) / u1, t_q + t_k + spill * scores * e),
        ("softmax", acc.vector.time_s(vops), 2 * spill * scores * e),
        ("Attend", mt(bh * N * N * d) / u3, bh * a3 * e * spill + t_v + t_o),
    ]
    lat = [float(combine(c, acc.dram.time_s(b), overlap)) for _, c, b in ops]
    dram_b = t_q + t_k + t_v + t_o + t_scores
    sram_b = e * bh * (_operand_delivery_elems(N, N, d, P) + _operand_delivery_elems(N, d, N, P) + 2 * N * N) + dram_b
    return Cost("unfused", shape, acc.name,
                dict(granularity="operator", heads_per_tile=bh, rows=N, kv_resident=False,
                     logit_tile=(tm1, tn1), attend_tile=(tm3, tn3)),
                footprint_bytes=e * max(fp1, fp3) + (e * scores if fits else 0), spilled_fraction=spill,
                traffic=dict(Q=t_q, K=t_k, V=t_v, O=t_o, scores=t_scores), macs=macs, vector_ops=vops,
                compute_s=sum(c for _, c, _ in ops), memory_s=acc.dram.time_s(dram_b), latency_s=sum(lat),
                energy=_energy(acc, macs, vops, sram_b, dram_b),
                ops=[dict(op=n, compute_s=c, memory_s=acc.dram.time_s(b), latency_s=l)
                     for (n, c, b), l in zip(ops, lat)])


# ----------------------------------------------------------------------------- FLAT fused tiles
def flat_candidates(shape: AttentionShape) -> dict:
    """Every FLAT tile of ``shape``: heads_per_tile in {1, H} x rows in powers of two up to N (and N)
    x K/V resident or streamed. rows == N with 1 head is head granularity, with H heads batch
    granularity; rows < N is row granularity."""
    R = _pow2_upto(shape.seq)
    g = np.array(sorted({1, shape.heads}), dtype=float)
    gg, rr, kk = np.meshgrid(g, R, np.array([0.0, 1.0]), indexing="ij")
    return dict(heads_per_tile=gg.ravel(), rows=rr.ravel(), kv_resident=kk.ravel().astype(bool))


def _flat_eval(shape: AttentionShape, acc: Accelerator, g, R, kv_res, overlap: float) -> dict:
    """Vectorised cost of FLAT tiles (arrays g, R, kv_res). Illegal tiles get latency inf."""
    N, d, bh = shape.seq, shape.d_head, shape.bh
    e = acc.bytes_per_element
    cap = acc.buffer.capacity_bytes / e
    P = _array_side(acc)
    chunk = min(N, P)
    g, R, kv_res = np.asarray(g, float), np.asarray(R, float), np.asarray(kv_res, bool)
    fixed = g * 2 * R * d + np.where(kv_res, 2 * g * N * d, 2 * g * chunk * d)
    logit = g * R * N
    legal = fixed <= cap
    buffered = np.clip((cap - fixed) / logit, 0.0, 1.0)
    spill = 1.0 - buffered
    passes = np.where(kv_res | (R >= N), 1.0, np.ceil(N / R))
    t_q = np.full_like(R, bh * N * d * e)
    t_o = t_q.copy()
    t_k = bh * N * d * e * passes
    t_v = t_k.copy()
    scores = bh * N * N
    t_s = 4 * spill * scores * e
    dram_b = t_q + t_k + t_v + t_o + t_s
    macs = 2.0 * scores * d
    vops = SOFTMAX_OPS_PER_SCORE * scores
    util = np.minimum(1.0, g * R / P)
    compute = np.maximum(acc.compute.time_s(macs) / util, acc.vector.time_s(vops))
    mem = dram_b / acc.dram.bandwidth
    lat = np.where(legal, combine(compute, mem, overlap), np.inf)
    sram_fixed = e * bh * (_operand_delivery_elems(N, N, d, P) + _operand_delivery_elems(N, d, N, P) + 2 * N * N)
    en = _energy(acc, macs, vops, sram_fixed + dram_b, dram_b)
    energy = sum(np.broadcast_to(v, R.shape) for v in en.values())
    return dict(heads_per_tile=g, rows=R, kv_resident=kv_res, legal=legal, footprint_bytes=e * np.minimum(fixed + logit, np.maximum(cap, fixed)),
                fixed_bytes=e * fixed, spilled=spill, Q=t_q, K=t_k, V=t_v, O=t_o, scores=t_s, traffic=dram_b,
                compute_s=compute, utilisation=util, memory_s=mem, latency_s=lat,
                energy_j=np.where(legal, energy, np.inf), energy_parts=en, macs=macs, vops=vops)


def _granularity(shape, g, R) -> str:
    if R < shape.seq:
        return "row"
    return "batch" if (g == shape.heads and shape.heads > 1) else "head"


def _cost_at(shape, acc, ev, i) -> Cost:
    g, R = float(ev["heads_per_tile"][i]), float(ev["rows"][i])
    parts = {k: float(np.broadcast_to(v, ev["rows"].shape)[i]) for k, v in ev["energy_parts"].items()}
    return Cost("flat", shape, acc.name,
                dict(granularity=_granularity(shape, g, R), heads_per_tile=int(g), rows=int(R),
                     kv_resident=bool(ev["kv_resident"][i]), utilisation=float(ev["utilisation"][i])),
                footprint_bytes=float(ev["footprint_bytes"][i]), spilled_fraction=float(ev["spilled"][i]),
                traffic={k: float(ev[k][i]) for k in ("Q", "K", "V", "O", "scores")}, macs=float(ev["macs"]),
                vector_ops=float(ev["vops"]), compute_s=float(ev["compute_s"][i]), memory_s=float(ev["memory_s"][i]),
                latency_s=float(ev["latency_s"][i]), energy=parts)


def flat_cost(shape: AttentionShape, acc: Accelerator, *, heads_per_tile: int = 1, rows: int | None = None,
              kv_resident: bool = False, overlap: float = 1.0) -> Cost:
    """Cost of one given FLAT tile; raises ValueError if its non-spillable part exceeds the buffer."""
    rows = shape.seq if rows is None else rows
    if not 1 <= rows <= shape.seq:
        raise ValueError(f"rows must lie in [1, {shape.seq}], got {rows}")
    ev = _flat_eval(shape, acc, [heads_per_tile], [rows], [kv_resident], overlap)
    if not ev["legal"][0]:
        raise ValueError(f"FLAT tile ({heads_per_tile} head(s) x {rows} rows, K/V "
                         f"{'resident' if kv_resident else 'streamed'}) needs {ev['fixed_bytes'][0]:.0f} bytes on "
                         f"chip before any logit, more than the {acc.buffer.capacity_bytes:.0f}-byte buffer of {acc.name}")
    return _cost_at(shape, acc, ev, 0)


@dataclass
class Search:
    """All candidate tiles of one workload (arrays) and the chosen one."""

    candidates: dict
    best: Cost
    seconds: float

    @property
    def n_legal(self) -> int:
        return int(self.candidates["legal"].sum())


def search_flat(shape: AttentionShape, acc: Accelerator, *, overlap: float = 1.0, objective: str = "latency") -> Search:
    """FLAT's tiling search: evaluate every candidate tile (vectorised) and return the legal one with the
    lowest latency (``objective="latency"``, ties by energy) or energy. Raises ValueError if the buffer
    is smaller than the smallest tile."""
    t0 = time.perf_counter()
    c = flat_candidates(shape)
    ev = _flat_eval(shape, acc, c["heads_per_tile"], c["rows"], c["kv_resident"], overlap)
    if not ev["legal"].any():
        raise ValueError(f"the {acc.buffer.capacity_bytes:.0f}-byte buffer of {acc.name} is smaller than the smallest "
                         f"FLAT tile (1 row of 1 head with K/V streamed: {ev['fixed_bytes'].min():.0f} bytes)")
    key1, key2 = (ev["latency_s"], ev["energy_j"]) if objective == "latency" else (ev["energy_j"], ev["latency_s"])
    order = np.lexsort((ev["fixed_bytes"], key2, key1))
    best = _cost_at(shape, acc, ev, int(order[0]))
    return Search(ev, best, time.perf_counter() - t0)


# ----------------------------------------------------------------------------- comparisons
def compare(shape: AttentionShape, acc: Accelerator, *, overlap: float = 1.0) -> dict:
    """Baseline vs FLAT's best tile: speedup, energy saving (%), traffic and the tile chosen."""
    b = baseline_cost(shape, acc, overlap=overlap)
    f = search_flat(shape, acc, overlap=overlap).best
    return dict(model=shape.name, seq=shape.seq, platform=acc.name, buffer_KiB=acc.buffer.capacity_bytes / KiB,
                speedup=b.latency_s / f.latency_s, energy_saving=100 * (1 - f.energy_j / b.energy_j),
                base_latency_s=b.latency_s, flat_latency_s=f.latency_s, base_energy_j=b.energy_j,
                flat_energy_j=f.energy_j, base_traffic=b.traffic_bytes, flat_traffic=f.traffic_bytes,
                granularity=f.tile["granularity"], rows=f.tile["rows"], heads_per_tile=f.tile["heads_per_tile"],
                kv_resident=f.tile["kv_resident"], flat_spilled=f.spilled_fraction, base_bound=b.bound,
                flat_bound=f.bound, ideal_latency_s=shape.ideal_latency_s(acc.compute.pes, acc.compute.clock_hz))


def grid(platform_name: str, *, models=FLAT_MODELS, seqs=FLAT_SEQS, batch: int = FLAT_BATCH, overlap: float = 1.0,
         **platform_kw) -> list[dict]:
    """``compare`` over models x sequence lengths on one platform (platform_kw: see ``platform``)."""
    acc = platform(platform_name, **platform_kw)
    out = []
    for m in models:
        for n in seqs:
            r = compare(AttentionShape.from_model(m, n, batch), acc, overlap=overlap)
            r["platform"] = platform_name
            out.append(r)
    return out


def geomean(x) -> float:
    x = np.asarray(list(x), float)
    return float(np.exp(np.mean(np.log(x))))


def headline(rows: list[dict]) -> dict:
    """The paper-style averages of a grid: geometric-mean speedup, arithmetic-mean energy saving (%)
    and, as an alternative, the saving of the geometric-mean energy ratio."""
    return dict(speedup=geomean(r["speedup"] for r in rows),
                energy_saving=float(np.mean([r["energy_saving"] for r in rows])),
                energy_saving_geo=100 * (1 - geomean(1 - r["energy_saving"] / 100 for r in rows)),
                speedup_mean=float(np.mean([r["speedup"] for r in rows])), n=len(rows))


# ----------------------------------------------------------------------------- end to end (scarce memory)
def layer_other_cost(model: str, seq: int, acc: Accelerator, *, batch: int = FLAT_BATCH, overlap: float = 1.0) -> dict:
    """Latency / energy of the non-attention GEMMs of one encoder layer (Q/K/V and output projections, the
    two FFN GEMMs), identical for both designs, each tiled with ``gemm_tile``. Element-wise layers
    (layer norm, activation, residual) are ignored (ASSUMPTION: small next to the GEMMs)."""
    m = workload(model)
    e = acc.bytes_per_element
    cap = acc.buffer.capacity_bytes / e
    P = _array_side(acc)
    rows = batch * seq
    lat = energy = 0.0
    for Nc, K in ((3 * m.d_model, m.d_model), (m.d_model, m.d_model), (m.ffn, m.d_model), (m.d_model, m.ffn)):
        _, _, _, (a, b, c) = gemm_tile(rows, Nc, K, cap, P)
        dram_b = (a + b + c) * e
        macs = rows * Nc * K
        tm = gemm_tile(rows, Nc, K, cap, P)[0]
        lat += float(combine(acc.compute.time_s(macs) / min(1.0, tm / P), acc.dram.time_s(dram_b), overlap))
        energy += sum(_energy(acc, macs, 0, dram_b + e * _operand_delivery_elems(rows, Nc, K, P), dram_b).values())
    return dict(latency_s=lat, energy_j=energy)


def end_to_end(model: str, seq: int, acc: Accelerator, *, batch: int = FLAT_BATCH, overlap: float = 1.0) -> dict:
    """One layer end to end (attention + projections + FFN), baseline vs FLAT: latency ratio."""
    shape = AttentionShape.from_model(model, seq, batch)
    other = layer_other_cost(model, seq, acc, batch=batch, overlap=overlap)
    c = compare(shape, acc, overlap=overlap)
    base, flat = other["latency_s"] + c["base_latency_s"], other["latency_s"] + c["flat_latency_s"]
    return dict(c, e2e_base_s=base, e2e_flat_s=flat, e2e_speedup=base / flat,
                attention_share_base=c["base_latency_s"] / base)


# ----------------------------------------------------------------------------- measured check (torch)
def _torch_unfused(q, k, v, scale):
    import torch
    s = torch.matmul(q, k.transpose(-1, -2)) * scale
    p = torch.softmax(s, dim=-1)
    return torch.matmul(p, v)


def _torch_fused(q, k, v, scale, rows):
    import torch
    out = torch.empty_like(q[..., : v.shape[-1]])
    kt = k.transpose(-1, -2)
    for i in range(0, q.shape[-2], rows):
        s = torch.matmul(q[..., i:i + rows, :], kt) * scale
        out[..., i:i + rows, :] = torch.matmul(torch.softmax(s, dim=-1), v)
    return out


def measure_fused_vs_unfused(seqs, *, batch_heads: int = 4, d_head: int = 64, rows: int = 128, repeats: int = 3,
                             device: str | None = None, dtype=None, seed: int = 0) -> list[dict]:
    """Wall clock of unfused attention (whole N x N scores and probabilities materialised) vs FLAT-style
    fused row tiles (``rows`` query rows at a time, full-row softmax) with torch on ``device`` (cuda when
    available by default). Peak memory is the bytes of the intermediate tensors each allocates, COMPUTED
    from their shapes (scores + probabilities: 2 x BH x rows_at_once x N elements), not measured.
    Both outputs are checked against attnlib.attention.attention_torch."""
    import torch

    from .attention import attention_torch

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = dtype or torch.float32
    esize = torch.tensor([], dtype=dtype).element_size()
    gen = torch.Generator().manual_seed(seed)
    out = []
    for n in seqs:
        q, k, v = (torch.randn(batch_heads, n, d_head, generator=gen, dtype=dtype).to(device) for _ in range(3))
        scale = 1.0 / math.sqrt(d_head)
        ref = attention_torch(q, k, v) if n <= 4096 else None
        times = {}
        for name, fn in (("unfused", lambda: _torch_unfused(q, k, v, scale)),
                         ("fused", lambda: _torch_fused(q, k, v, scale, rows))):
            res = fn()  # warm-up
            if ref is not None:
                err = float((res - ref).abs().max())
                if err > 1e-3:
                    raise AssertionError(f"{name} attention differs from the reference by {err:g}")
            best = math.inf
            for _ in range(repeats):
                if device.startswith("cuda"):
                    torch.cuda.synchronize()
                t0 = time.perf_counter()
                fn()
                if device.startswith("cuda"):
                    torch.cuda.synchronize()
                best = min(best, time.perf_counter() - t0)
            times[name] = best
        r = min(rows, n)
        out.append(dict(seq=n, batch_heads=batch_heads, d_head=d_head, rows=r, device=device,
                        unfused_s=times["unfused"], fused_s=times["fused"],
                        speedup=times["unfused"] / times["fused"],
                        unfused_intermediate_bytes=2 * batch_heads * n * n * esize,
                        fused_intermediate_bytes=2 * batch_heads * r * n * esize))
    return out


def predict_cpu(seqs, *, batch_heads: int = 4, d_head: int = 64, rows: int = 128, overlap: float = 1.0,
                acc: Accelerator | None = None) -> list[dict]:
    """What the model predicts for the measured configuration on the CPU-like accelerator: unfused baseline
    vs the FLAT tile actually run (1 head x ``rows`` rows, K/V streamed)."""
    acc = acc or cpu_like_accelerator()
    out = []
    for n in seqs:
        shape = AttentionShape(1, batch_heads, n, d_head, "measured")
        b = baseline_cost(shape, acc, overlap=overlap)
        f = flat_cost(shape, acc, rows=min(rows, n), overlap=overlap)
        out.append(dict(seq=n, predicted_speedup=b.latency_s / f.latency_s, base_bound=b.bound, flat_bound=f.bound,
                        base_spilled=b.spilled_fraction, flat_spilled=f.spilled_fraction))
    return out


def markdown_table(df, index: bool = False, digits: int = 3) -> str:
    """A pandas DataFrame as a Markdown table (no optional dependency such as tabulate)."""
    def fmt(v):
        if isinstance(v, (float, np.floating)):
            return f"{v:.{digits}g}"
        return str(v)
    cols = ([df.index.name or ""] if index else []) + [str(c) for c in df.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for idx, row in df.iterrows():
        cells = ([fmt(idx)] if index else []) + [fmt(v) for v in row.tolist()]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
