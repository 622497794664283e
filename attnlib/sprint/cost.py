"""SPRINT's cost model: survivor fetching through the on-chip buffer, the conventional baselines and
SPRINT's time and energy on the shared `attnlib.hw` primitives plus the crossbar model
`attnlib.hw.reram`, driven by keep statistics measured on real models."""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from ..hw import reram as rr
from ..hw.accelerator import Accelerator
from .algorithm import AnalogConfig, RowStats

__all__ = ["RESIDENCY", "fetch_rows", "CostBreakdown", "baseline_tile", "baseline_cost", "sprint_cost", "map_stats_to_shape",
           "compare", "compare_draws", "sprint_cost_draws", "ENERGY_PARTS", "CONFIGS",
           "CONFIG_SPEEDUPS", "sprint_hardware", "MACS_PER_CORELET", "MAIN_MEMORY_BANDWIDTH"]


# ----------------------------------------------------------------------------- data movement
def fetch_rows(kept: np.ndarray, overlap: np.ndarray, capacity_rows: float, *, reuse: bool = True,
               union: np.ndarray | None = None, n_keys: int | None = None) -> np.ndarray:
    """K/V rows fetched from off-chip memory for each query sequence: arrays (..., T) -> (...,).

    Without reuse every survivor is fetched. With adjacent-query reuse, of query i's survivors that
    query i-1 also kept, the fraction still resident is min(1, capacity / kept_{i-1}) (ASSUMPTION: the
    buffer holds the most recent ``capacity_rows`` K/V rows and the shared ones are spread uniformly
    among query i-1's survivors); those are not fetched again. When ``union`` (distinct keys kept by
    any query, (...,)) and ``n_keys`` are given and the buffer holds all ``n_keys`` K/V rows, each
    distinct survivor is fetched exactly once (nothing is ever evicted); otherwise at least once.
    """
    kept = np.asarray(kept, dtype=np.float64)
    if not reuse:
        return kept.sum(-1)
    overlap = np.asarray(overlap, dtype=np.float64)
    prev = np.concatenate([np.zeros_like(kept[..., :1]), kept[..., :-1]], axis=-1)
    resident = np.minimum(1.0, capacity_rows / np.maximum(prev, 1.0))
    out = (kept - overlap * resident).sum(-1)
    if union is not None:
        union = np.asarray(union, dtype=np.float64)
        out = union if (n_keys is not None and capacity_rows >= n_keys) else np.maximum(out, union)
    return out


@dataclass
class CostBreakdown:
    """Time (s) and energy (J) of the attention of one sequence through all layers of a model."""

    time_s: float
    energy: dict = field(default_factory=dict)  # component -> J
    traffic_bytes: float = 0.0
    macs: float = 0.0
    detail: dict = field(default_factory=dict)

    @property
    def energy_j(self) -> float:
        return float(sum(self.energy.values()))


def _kv_row_bytes(d_head: int, bpe: float) -> float:
    return 2 * d_head * bpe


def baseline_tile(buffer_bytes: float, d_head: int, bpe: float) -> int:
    """Most query rows a conventional accelerator can keep on chip: Q row + O accumulator row each, next
    to a double-buffered K/V staging area of 2 rows (ASSUMPTION: online softmax, no score matrix spills)."""
    stage = 2 * _kv_row_bytes(d_head, bpe)
    rows = int((buffer_bytes - stage) // (2 * d_head * bpe))
    if rows < 1:
        raise ValueError(f"a {buffer_bytes:g}-byte buffer cannot hold one query row next to the K/V staging")
    return rows


def _baseline_streamed_rows(T: int, bq: int, resident: int, causal: bool) -> float:
    """K/V rows fetched per head with query tiles of ``bq`` rows and ``resident`` K/V rows that stay on
    chip across tiles (the first tile fetches everything it needs)."""
    ends = np.minimum(np.arange(bq, T + bq, bq), T)
    need = ends.astype(np.float64) if causal else np.full(len(ends), float(T))
    fetched = np.maximum(0.0, need - resident)
    fetched[0] = need[0]
    return float(fetched.sum())


RESIDENCY = ("none", "rows", "query-tiled")


def baseline_cost(acc: Accelerator, *, layers: int, heads: int, seq_len: int, d_head: int, causal: bool = False,
                  bpe: float | None = None, query_tile: int | None = None,
                  keep_fraction: float | None = None, residency: str = "rows", fixed_traffic: bool = True,
                  memory_pj_per_bit: tuple[float, float] | None = None) -> CostBreakdown:
    """A conventional digital accelerator (same buffer) computing exact attention for one sequence.

    Per head: Q read once, O written once, K and V written once after projection (compulsory, as in
    SPRINT) and streamed through the buffer once per tile of ``query_tile`` query rows; buffer space
    left after the tile's Q/O rows and the K/V staging holds K/V rows that stay resident across tiles.
    ``query_tile=None`` picks the tile that minimises traffic (the strongest baseline); ``query_tile=1``
    is a query-at-a-time dataflow (every query streams every K/V row it cannot keep resident). All T x T
    scores (causal: lower triangle) are computed. Heads and layers run one after another; compute and
    transfers overlap (roofline). Main-memory energy counts K/V and O as writes, the rest as reads.

    ``keep_fraction``: runtime pruning AFTER the fetch (LeOPArd / SpAtten-style accelerators, the
    paper's motivation): every K/V row is still fetched and every score computed, but softmax and the
    weighted sum of values run over the kept fraction only (one compare per score is added).

    ``residency``: "rows" (buffer space left after the tile's Q/O rows and the staging holds K/V rows
    that stay on chip across tiles: pinned rows, which for a full scan fetch as few rows as optimal
    replacement), "none" (nothing stays on chip across tiles: every tile streams every K/V row it
    needs, as the paper describes earlier runtime-pruning accelerators that fetch all keys and values),
    or "query-tiled" (rows resident AND the traffic-minimising query tile; ``query_tile`` must be None).
    ``fixed_traffic=False`` drops the compulsory main-memory traffic both designs pay (K/V written once
    after projection, Q read, O written) from bytes, time and energy (an accounting choice).
    ``memory_pj_per_bit`` (read, write): the baseline's main memory on another technology (e.g. DRAM),
    energy only (the same bandwidth).
    """
    if residency not in RESIDENCY:
        raise ValueError(f"unknown residency {residency!r}; known: {', '.join(RESIDENCY)}")
    label = residency
    if residency == "query-tiled":
        if query_tile is not None:
            raise ValueError("residency 'query-tiled' picks its own query tile (query_tile must be None)")
        residency = "rows"
    elif query_tile is None and residency == "none":
        query_tile = 1
    bpe = acc.bytes_per_element if bpe is None else bpe
    if keep_fraction is not None and not 0 < keep_fraction <= 1:
        raise ValueError(f"keep_fraction must lie in (0, 1], got {keep_fraction}")
    T = seq_len
    kv_row = _kv_row_bytes(d_head, bpe)
    cap = acc.buffer.capacity_bytes
    max_bq = baseline_tile(cap, d_head, bpe)
    resident_of = lambda b: 0 if residency == "none" else int(max(0.0, cap - 2 * kv_row - b * 2 * d_head * bpe) // kv_row)
    if query_tile is None:
        cands = sorted(set([1, 2, 4, 8, 16, 32, 64, 128, 256, 512, max_bq, min(max_bq, T)]))
        cands = [b for b in cands if 1 <= b <= min(max_bq, T)]
        bq = min(cands, key=lambda b: (_baseline_streamed_rows(T, b, resident_of(b), causal), -b))
    else:
        bq = int(query_tile)
        if not 1 <= bq <= max_bq:
            raise ValueError(f"query_tile must lie in [1, {max_bq}] for this buffer, got {query_tile}")
    bq = min(bq, T)
    resident = resident_of(bq)
    streamed = _baseline_streamed_rows(T, bq, resident, causal)
    scores = T * (T + 1) / 2 if causal else float(T * T)
    fixed = (T * kv_row + 2 * T * d_head * bpe) if fixed_traffic else 0.0   # K/V write + Q read/O write
    dram_bytes = streamed * kv_row + fixed
    dram_writes = (T * kv_row + T * d_head * bpe) if fixed_traffic else 0.0
    kf = 1.0 if keep_fraction is None else float(keep_fraction)
    macs = scores * d_head * (1 + kf)
    vec = 3 * scores * kf + (scores if keep_fraction is not None else 0.0)
    sram_bytes = streamed * kv_row + macs * bpe  # fills + one operand per MAC
    per_head_t = max(acc.compute.time_s(macs), acc.vector.time_s(vec), acc.dram.time_s(dram_bytes))
    n = layers * heads
    if memory_pj_per_bit is None:
        e_mem = acc.dram.energy_j(dram_bytes - dram_writes, dram_writes)
    else:
        rd, wr = (float(x) for x in memory_pj_per_bit)
        if rd <= 0 or wr <= 0:
            raise ValueError(f"memory_pj_per_bit needs positive (read, write) energies, got {memory_pj_per_bit}")
        e_mem = 8e-12 * (rd * (dram_bytes - dram_writes) + wr * dram_writes)
    energy = {
        "DRAM": n * e_mem,
        "SRAM": n * acc.buffer.energy_j(sram_bytes),
        "digital compute": n * (acc.compute.energy_j(macs) + acc.vector.energy_j(vec)),
        "in-memory thresholding": 0.0,
    }
    return CostBreakdown(time_s=n * per_head_t, energy=energy, traffic_bytes=n * dram_bytes, macs=n * macs,
                         detail=dict(query_tile=bq, resident_rows=resident, streamed_rows=streamed, scores=n * scores,
                                     residency=label))


def _unit_weights(n_units: int, heads: int, n_resamples: int | None, seed) -> np.ndarray:
    """(B, U) weights of the measured (sequence, head) units, each row summing to ``heads``: uniform
    (B = 1) without resampling, else bootstrap counts of U units drawn with replacement."""
    if not n_resamples:
        return np.full((1, n_units), heads / n_units)
    idx = np.random.default_rng(seed).integers(0, n_units, size=(int(n_resamples), n_units))
    counts = np.zeros((int(n_resamples), n_units))
    np.add.at(counts, (np.arange(int(n_resamples))[:, None], idx), 1.0)
    return counts * (heads / n_units)


def _sprint_totals(acc: Accelerator, stats: list[RowStats], W: np.ndarray, *, heads: int, d_head: int,
                   xbar: rr.CrossbarSpec, cfg: AnalogConfig, bpe: float, reuse: bool, include_writes: bool,
                   readout: str, parallel_queries: int, fetched_of=None, fixed_traffic: bool = True) -> dict:
    """Time, energy components, traffic, MACs, kept and allowed pairs of every layer for each row of
    the unit weights ``W`` (B, U): arrays (B,). Energies and digital times are linear in the per-unit
    counts, so a weighted sum over units is exact; per layer the time is the max of crossbar, digital
    and transfer time (pipelined)."""
    kv_row = _kv_row_bytes(d_head, bpe)
    cap_rows = max(0.0, (acc.buffer.capacity_bytes - 2 * d_head * bpe) // kv_row)
    B = W.shape[0]
    out = {k: np.zeros(B) for k in ("time", "DRAM", "SRAM", "digital compute", "traffic", "macs", "kept", "allowed")}
    out["in-memory thresholding"] = np.zeros(B)
    s_dram, s_write, s_sram = acc.dram.energy_j(1.0), acc.dram.energy_j(0.0, 1.0), acc.buffer.energy_j(1.0)
    t_byte = acc.dram.time_s(1.0)
    for st in stats:
        n_seq, h_real, T = st.kept.shape
        if n_seq * h_real != W.shape[1]:
            raise ValueError(f"layer {st.layer}: {n_seq * h_real} (sequence, head) units, weights for {W.shape[1]}")
        kept_rows = st.kept.astype(np.float64)
        if fetched_of is not None:
            fetched = np.asarray(fetched_of(st, cap_rows), dtype=np.float64).reshape(-1)
        else:
            fetched = fetch_rows(kept_rows, st.overlap, cap_rows, reuse=reuse, union=st.union, n_keys=T).reshape(-1)
        kept = kept_rows.sum(-1).reshape(-1)                    # (U,)
        allowed = st.allowed.astype(np.float64).sum(-1).reshape(-1)
        t_dig_u = np.maximum(acc.compute.time_s(2 * kept * d_head), acc.vector.time_s(3 * kept))
        F, K, A = W @ fetched, W @ kept, W @ allowed
        # the keys' `key_bits` MSBs are written once, as crossbar cells (charged in "in-memory thresholding"),
        # so main memory gets the rest of each key, the values, Q (read) and O (written)
        msb = d_head * cfg.key_bits / 8.0
        fixed_w = heads * (T * (kv_row - msb) + T * d_head * bpe) if fixed_traffic else 0.0
        fixed = fixed_w + (heads * T * d_head * bpe if fixed_traffic else 0.0)
        dram_bytes = F * kv_row + fixed                                           # survivors + fixed traffic
        macs = 2 * K * d_head
        sram_bytes = F * kv_row + macs * bpe
        sc = rr.scoring_cost(T, float(allowed.mean()), d_head, key_bits=cfg.key_bits, query_bits=cfg.query_bits,
                             spec=xbar, readout=readout, parallel_queries=parallel_queries)
        e_xbar = heads * sc.energy_j + (heads * rr.write_energy_j(T, d_head, key_bits=cfg.key_bits, spec=xbar,
                                                                   copies=parallel_queries) if include_writes else 0.0)
        out["time"] += np.maximum(np.maximum(sc.time_s, W @ t_dig_u), t_byte * dram_bytes)
        writes = fixed_w                                                  # K LSBs and V written once, O written
        out["DRAM"] += s_dram * (dram_bytes - writes) + s_write * writes
        out["SRAM"] += s_sram * sram_bytes
        out["digital compute"] += acc.compute.energy_j(1.0) * macs + acc.vector.energy_j(1.0) * 3 * K
        out["in-memory thresholding"] += e_xbar
        out["traffic"] += dram_bytes
        out["macs"] += macs
        out["kept"] += K
        out["allowed"] += A
    out["capacity_rows"] = cap_rows
    return out


ENERGY_PARTS = ("DRAM", "SRAM", "digital compute", "in-memory thresholding")


def sprint_cost(acc: Accelerator, stats: list[RowStats], *, heads: int, d_head: int,
                xbar: rr.CrossbarSpec, cfg: AnalogConfig = AnalogConfig(), causal: bool = False,
                bpe: float | None = None, reuse: bool = True, include_writes: bool = True,
                readout: str = "comparator", parallel_queries: int = 1, fetched_of=None,
                fixed_traffic: bool = True) -> CostBreakdown:
    """SPRINT on the same digital datapath and buffer, driven by MEASURED per-query keep statistics.

    stats: one `RowStats` per layer (arrays (N, H_real, T)). Each of the target model's ``heads`` heads
    costs the MEAN over the N x H_real measured (sequence, head) units of its layer (see
    `map_stats_to_shape` for other depths). Per head: the crossbar scores every allowed (query, key)
    pair (energy: `hw.reram.scoring_cost`); survivors' K/V rows are fetched (`fetch_rows`, with the
    buffer left after one Q row and one O row as K/V capacity; ``fetched_of(stats, capacity_rows)`` ->
    (N, H_real) replaces that model, e.g. a simulated buffer policy); survivors are recomputed exactly
    (2 x kept x d MACs, 3 softmax ops per survivor). The crossbars of every head of a layer work in
    parallel with the digital side (pipelined: per layer the time is the max of crossbar, compute and
    transfer time). `sprint_cost_draws` gives the same quantities over bootstrap resamples of the units.
    Main-memory writes: each key's ``cfg.key_bits`` MSBs are programmed into the crossbar (cell writes,
    charged once there), the key's other bits, V and O go to main memory; ``fixed_traffic=False`` drops
    that compulsory main-memory traffic (and the Q reads), as `baseline_cost` does.
    """
    bpe = acc.bytes_per_element if bpe is None else bpe
    if not stats:
        raise ValueError("no layer statistics")
    n_seq, h_real, _ = stats[0].kept.shape
    W = _unit_weights(n_seq * h_real, heads, None, None)
    t = _sprint_totals(acc, stats, W, heads=heads, d_head=d_head, xbar=xbar, cfg=cfg, bpe=bpe, reuse=reuse,
                       include_writes=include_writes, readout=readout, parallel_queries=parallel_queries,
                       fetched_of=fetched_of, fixed_traffic=fixed_traffic)
    return CostBreakdown(time_s=float(t["time"][0]), energy={k: float(t[k][0]) for k in ENERGY_PARTS},
                         traffic_bytes=float(t["traffic"][0]), macs=float(t["macs"][0]),
                         detail=dict(keep_fraction=float(t["kept"][0] / max(1.0, t["allowed"][0])),
                                     capacity_rows=t["capacity_rows"]))


def sprint_cost_draws(acc: Accelerator, stats: list[RowStats], *, heads: int, d_head: int, xbar: rr.CrossbarSpec,
                      cfg: AnalogConfig = AnalogConfig(), n_resamples: int = 2000, seed=0, bpe: float | None = None,
                      reuse: bool = True, include_writes: bool = True, readout: str = "comparator",
                      parallel_queries: int = 1, fetched_of=None, fixed_traffic: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(time_s, energy_j), arrays (n_resamples,), of `sprint_cost` over bootstrap resamples of the
    measured (sequence, head) units. A unit is one (sequence, head) pair; the SAME resampled units are
    used in every layer (a sequence or head position that prunes little does so in every layer it
    appears in), and the draws depend only on (seed, number of units), so two target shapes that reuse
    one model's masks get identical draws (they are not independent measurements)."""
    bpe = acc.bytes_per_element if bpe is None else bpe
    if not stats:
        raise ValueError("no layer statistics")
    if int(n_resamples) != n_resamples or n_resamples < 100:
        raise ValueError(f"n_resamples must be an integer >= 100, got {n_resamples}")
    n_seq, h_real, _ = stats[0].kept.shape
    W = _unit_weights(n_seq * h_real, heads, n_resamples, seed)
    t = _sprint_totals(acc, stats, W, heads=heads, d_head=d_head, xbar=xbar, cfg=cfg, bpe=bpe, reuse=reuse,
                       include_writes=include_writes, readout=readout, parallel_queries=parallel_queries,
                       fetched_of=fetched_of, fixed_traffic=fixed_traffic)
    return t["time"], sum(t[k] for k in ENERGY_PARTS)


def map_stats_to_shape(stats: list[RowStats], layers: int) -> list[RowStats]:
    """Per-layer statistics for a model with ``layers`` layers from a measured model with fewer or more:
    layer l uses measured layer floor(l * L_measured / layers) (same relative depth). A SUBSTITUTION,
    stated wherever it is used (e.g. BERT-base shapes with MiniLM's measured masks)."""
    L = len(stats)
    return [stats[min(L - 1, (l * L) // layers)] for l in range(layers)]


def compare(acc: Accelerator, xbar: rr.CrossbarSpec, cfg: AnalogConfig, shape, stats: list[RowStats], *,
            causal: bool, baseline_kw: dict | None = None, **sprint_kw) -> tuple[CostBreakdown, CostBreakdown]:
    """(baseline, SPRINT) cost of one sequence through every layer of ``shape`` (a `workloads.ModelShape`)
    with per-layer keep statistics ``stats`` measured on a real model (mapped by relative depth when
    the layer counts differ: `map_stats_to_shape`)."""
    st = map_stats_to_shape(stats, shape.layers)
    T = st[0].kept.shape[-1]
    base = baseline_cost(acc, layers=shape.layers, heads=shape.heads, seq_len=T, d_head=shape.d_head, causal=causal,
                         **(baseline_kw or {}))
    spr = sprint_cost(acc, st, heads=shape.heads, d_head=shape.d_head, xbar=xbar, cfg=cfg, causal=causal, **sprint_kw)
    return base, spr


def compare_draws(acc: Accelerator, xbar: rr.CrossbarSpec, cfg: AnalogConfig, shape, stats: list[RowStats], *,
                  causal: bool, baseline_kw: dict | None = None, n_resamples: int = 2000, seed=0,
                  **sprint_kw) -> tuple[np.ndarray, np.ndarray]:
    """(speedup, energy reduction) draws, arrays (n_resamples,), of SPRINT against the baseline over
    bootstrap resamples of the measured (sequence, head) units (`sprint_cost_draws`; the baseline does
    not depend on the masks). Seeded by (seed, T, units): shapes sharing one model's masks share draws."""
    st = map_stats_to_shape(stats, shape.layers)
    n_seq, h_real, T = st[0].kept.shape
    base = baseline_cost(acc, layers=shape.layers, heads=shape.heads, seq_len=T, d_head=shape.d_head, causal=causal,
                         **(baseline_kw or {}))
    t, e = sprint_cost_draws(acc, st, heads=shape.heads, d_head=shape.d_head, xbar=xbar, cfg=cfg,
                             n_resamples=n_resamples, seed=[int(seed), T, n_seq * h_real], **sprint_kw)
    return base.time_s / t, base.energy_j / e


# ----------------------------------------------------------------------------- the paper's hardware setting
#: S/M/L-SPRINT: (total on-chip memory in KiB, CORELETs) -- secondary: S2 (per-configuration speedups).
CONFIGS = {"S": (16, 1), "M": (32, 2), "L": (64, 4)}
#: Paper's average speedups per configuration (secondary: S2).
CONFIG_SPEEDUPS = {"S": 7.5, "M": 7.4, "L": 7.1}
#: ASSUMPTIONS of the paper setting (not published), swept in the notebook.
MACS_PER_CORELET = 128          # a 64-MAC QK-PU (one 64-element dot product per cycle) + a 64-MAC V-PU
MAIN_MEMORY_BANDWIDTH = 50 * 1024 ** 3   # bytes/s, the same for both designs


def sprint_hardware(config: str = "S", *, macs_per_corelet: int = MACS_PER_CORELET,
                    bandwidth: float = MAIN_MEMORY_BANDWIDTH, read_pj_per_bit: float | None = None,
                    write_pj_per_bit: float | None = None, threshold_cycles: float | None = None,
                    mac_pj: float | None = None, bits: int = 16) -> tuple[Accelerator, rr.CrossbarSpec]:
    """(digital accelerator, crossbar) of S/M/L-SPRINT with the paper's constants [secondary: S1, S2]:
    65 nm, 1 GHz, K/V in ReRAM main memory (3.1 pJ/bit read, 24.4 pJ/bit write), 0.10 pJ per
    in-memory MAC, 4-bit MSB keys, a 1-bit comparator per bit line, thresholding in < 8 cycles (8 used),
    16 / 32 / 64 KB of on-chip memory with 1 / 2 / 4 CORELETs. The baseline gets the same accelerator
    (datapath, buffer, main memory) without the in-memory pruning.

    ASSUMPTIONS (not published): ``macs_per_corelet`` digital MACs per CORELET, the main-memory
    ``bandwidth``, ``bits``-bit K/V and datapath; digital energies from the shared table scaled to
    65 nm. Keyword overrides serve the assumption sweeps."""
    from ..hw.accelerator import make_accelerator

    if config not in CONFIGS:
        raise ValueError(f"unknown SPRINT configuration {config!r}; known: {', '.join(CONFIGS)}")
    kib, corelets = CONFIGS[config]
    read = rr.SPRINT_READ_PJ_PER_BIT if read_pj_per_bit is None else read_pj_per_bit
    write = rr.SPRINT_WRITE_PJ_PER_BIT if write_pj_per_bit is None else write_pj_per_bit
    acc = make_accelerator(f"{config}-SPRINT datapath", pes=macs_per_corelet * corelets, clock_hz=rr.SPRINT_CLOCK_HZ,
                           bits=bits, buffer_bytes=kib * 1024, dram_bandwidth=bandwidth, node_nm=rr.SPRINT_NODE_NM,
                           dram_pj_per_bit=read, sources={
                               "node/clock": rr.SPRINT_S1 + ": TSMC 65 nm, 1 GHz",
                               "on-chip memory / CORELETs": "secondary: S2: S/M/L = 16/32/64 KB with 1/2/4 CORELETs",
                               "main memory": rr.SPRINT_S1 + ": K/V in ReRAM, 3.1 pJ/bit read, 24.4 pJ/bit write",
                               "MACs per CORELET": f"ASSUMPTION: {macs_per_corelet} (not published)",
                               "bandwidth": f"ASSUMPTION: {bandwidth / 1024 ** 3:g} GiB/s (not published)"})
    acc = replace(acc, dram=replace(acc.dram, name="ReRAM main memory", write_pj_per_bit=write))
    kw = {} if threshold_cycles is None else dict(threshold_cycles=threshold_cycles)
    if mac_pj is not None:
        kw["mac_pj"] = mac_pj
    return acc, rr.sprint_crossbar(**kw)
