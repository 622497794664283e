"""A3 hardware: cost models of the base and approximate A3 pipelines (modelled) and the CPU baseline
(measured on this machine).

Pipeline model: the base A3 pipeline (dot-product, exponent, output modules) and the approximate
pipeline (plus the candidate selection module), as cycles and energy per query at a stated clock and
node, with energies from the shared table `attnlib.hw` (node 40 nm). Every function takes scalars or
numpy arrays of per-query counts (vectorised: a stream of thousands of real queries is one call).

CPU baseline: exact attention for the same shapes, timed one query at a time and batched, with every
repetition kept (for an interval), the BLAS thread count of each timing, and the machine's load
before and after (a load check).
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field

import numpy as np

from ..hw import energy_pj, mac_energy_pj, sram_energy_pj_per_bit

__all__ = [
    "A3Hardware", "ModuleCost", "PipelineCost", "base_pipeline", "approx_pipeline", "HW_CONSTANTS",
    "cpu_exact_single", "cpu_exact_batched", "measure_cpu", "CpuTiming", "stream_costs", "stream_arrays",
    "CPU_POWER_W", "machine_load", "SORT_OPTIONS", "cpu_busy_snapshot", "others_busy", "compiled_kernel",
    "cpu_exact_compiled", "CPU_MODES", "IDLE_LIMIT",
]

# ============================================================================ pipeline model
#: Constants of the A3 hardware model that are not in the shared energy table: value, unit, source.
HW_CONSTANTS = {
    "clock_hz": (1e9, "Hz", "paper card: about 1 GHz [unconfirmed] -> ASSUMPTION 1 GHz (cancels in A3-vs-A3 "
                 "ratios; enters only comparisons with the CPU)"),
    "node_nm": (40, "nm", "paper card: 40 nm test chip [secondary]"),
    "n_keys": (320, "keys", "paper card: key SRAM sized for n = 320 [secondary]"),
    "d": (64, "elements", "paper card: d = 64 [secondary]"),
    "bits": (8, "bit", "paper card: fixed point, likely 8-bit keys/values [unconfirmed] -> ASSUMPTION 8"),
    "score_bits": (16, "bit", "ASSUMPTION: greedy partial scores held as 16-bit fixed point"),
    "rows_per_cycle": (1, "row/cycle", "ASSUMPTION (paper card, base pipeline): dot-product and output "
                       "modules have d multipliers and handle one key/value row per cycle; exponent module one "
                       "score per cycle"),
    "select_iter_per_cycle": (1.0, "iter/cycle", "ASSUMPTION: one greedy iteration (one max and one min pick) "
                              "per cycle; swept 0.5-1"),
    "comparator_update": ("log2(d)", "compares/pick", "ASSUMPTION: after a pick only the advanced pointer's "
                          "head changes, so the comparator tree over the d heads is updated along one path "
                          "(log2 d compares), not rebuilt"),
    "sort": ("off the critical path", "-", "key sorting (d columns of n, one merge-sort comparator per column, "
             "n*log2(n) cycles per key matrix): a SCENARIO AXIS (SORT_OPTIONS). 'off the critical path' (the paper's "
             "reading [secondary]: keys are preprocessed before the query arrives): no cycles on the query's path; "
             "'log2 n per query': the sort's cycles shared by n queries (self-attention) on the selection module's path; "
             "'full sort per query': the key matrix is sorted for every query (MemN2N here: every hop has its own "
             "keys, queried once) as its own pipeline stage of n*log2(n) cycles"),
    "sort_queries": ("n", "queries", "queries sharing one sorted key matrix: the sort's energy (d*n*log2(n) compares "
                     "and sorted-SRAM writes) is divided among them; n (self-attention) by default, 1 for MemN2N "
                     "(every hop's key matrix is queried once)"),
    "pipeline_fill": (8, "cycles", "ASSUMPTION: adder-tree depth log2(d)=6 + 2 register stages per module "
                      "added to latency only; swept 4-16"),
    "exp_overlap": (0.0, "fraction", "ASSUMPTION: fraction of the output module's work that overlaps the "
                    "exponent module within one query (latency only); swept 0-1"),
    "exp_bits": (16, "bit", "ASSUMPTION: the exponent module is a fixed-point unit priced as 4 multiply-adds "
                 "at this width (the shared table's exp is 4 fp32 multiply-adds); swept 8/16/32 (32 = fp32)"),
    "compare_pj": ("int32_add", "table", "ASSUMPTION: a comparator costs one 32-bit add (upper bound for "
                   "16-bit compares)"),
    "static_w": (0.0, "W", "ASSUMPTION: dynamic energy only (leakage not modelled); swept in the notebook"),
}

#: CPU power charged to the measured CPU time, W PER CORE that ran the timing (the charged power is this
#: times the threads of the timing; the whole socket is a scenario: attnlib.a3.paper_claims.CPU_POWER):
#: the default and the range drawn in the sensitivity figure. Sources: see CPU_POWER_SOURCES.
CPU_POWER_W = dict(default=7.8, sweep=(5.0, 7.8, 15.0, 30.0, 65.0, 125.0))
CPU_POWER_SOURCES = {
    5.0: "ASSUMPTION: one busy core of a low-clocked many-core server part, uncore not charged",
    7.8: "per core (default): package TDP / cores of a Xeon-class server CPU (Intel Xeon Gold 6130: 125 W, 16 cores; "
         "Intel product specification) -- the paper card says only 'Xeon-class' [unconfirmed]",
    15.0: "ASSUMPTION: one core at turbo plus a share of the uncore",
    30.0: "ASSUMPTION: a quarter of a 125 W package",
    65.0: "a desktop-class CPU's package TDP (ASSUMPTION: whole package charged)",
    125.0: "whole socket: the package TDP of the Xeon-class part above (charging the whole chip to the timed threads)",
}


#: Where the key sort's cycles go (A3Hardware.sort; see HW_CONSTANTS["sort"]).
SORT_OPTIONS = ("off the critical path", "log2 n per query", "full sort per query")


@dataclass(frozen=True)
class A3Hardware:
    """Stated configuration of the A3 chip model (see HW_CONSTANTS for sources)."""

    clock_hz: float = 1e9
    node_nm: float = 40
    d: int = 64
    n_max: int = 320
    bits: int = 8
    score_bits: int = 16
    pipeline_fill: int = 8
    sort: str = "off the critical path"
    sort_queries: float | None = None
    static_w: float = 0.0
    alpha: float = 1.0  # node scaling exponent of the shared table
    select_iter_per_cycle: float = 1.0
    exp_overlap: float = 0.0
    exp_bits: int = 16

    def __post_init__(self):
        for name in ("clock_hz", "node_nm", "d", "n_max", "bits", "score_bits", "select_iter_per_cycle"):
            if not getattr(self, name) > 0:
                raise ValueError(f"A3Hardware.{name} must be positive, got {getattr(self, name)}")
        if not 0 <= self.exp_overlap <= 1:
            raise ValueError(f"A3Hardware.exp_overlap must lie in [0, 1], got {self.exp_overlap}")
        if self.exp_bits not in (8, 16, 32):
            raise ValueError(f"A3Hardware.exp_bits must be 8, 16 or 32, got {self.exp_bits}")
        if self.sort not in SORT_OPTIONS:
            raise ValueError(f"A3Hardware.sort must be one of {SORT_OPTIONS}, got {self.sort!r}")
        if self.sort_queries is not None and not self.sort_queries >= 1:
            raise ValueError(f"A3Hardware.sort_queries must be >= 1 (or None: n), got {self.sort_queries}")
        if self.static_w < 0 or self.pipeline_fill < 0:
            raise ValueError("A3Hardware.static_w and pipeline_fill must be >= 0")

    # per-action energies (pJ) at this node from the shared table
    def e(self) -> dict:
        node, a = self.node_nm, self.alpha
        kv_bytes = self.n_max * self.d * self.bits / 8
        idx_bits = max(1, math.ceil(math.log2(self.n_max)))
        sorted_bytes = self.n_max * self.d * (self.bits + idx_bits) / 8
        exp = (energy_pj("fp32_exp", node, alpha=a) if self.exp_bits == 32
               else 4 * mac_energy_pj(self.exp_bits, node, alpha=a))
        return dict(
            mac=mac_energy_pj(self.bits, node, alpha=a),
            mult=energy_pj("int8_mult", node, alpha=a) * (self.bits / 8) ** 2,
            add=energy_pj("int32_add", node, alpha=a),
            cmp=energy_pj("int32_add", node, alpha=a),
            exp=exp,
            fmul=energy_pj("fp32_mult", node, alpha=a),
            sram_kv_bit=sram_energy_pj_per_bit(kv_bytes, node, alpha=a),
            sram_sorted_bit=sram_energy_pj_per_bit(sorted_bytes, node, alpha=a),
            rf_bit=energy_pj("register_file", node, alpha=a),
            idx_bits=idx_bits,
            kv_bytes=kv_bytes,
            sorted_bytes=sorted_bytes,
        )


@dataclass(frozen=True)
class ModuleCost:
    """Cycles and energy (pJ) of one module for one query (scalars, or arrays over a stream of queries)."""

    name: str
    cycles: float
    energy_pj: float


def _f(x):
    """A 0-d array as a float; arrays unchanged."""
    return float(x) if np.ndim(x) == 0 else x


@dataclass(frozen=True)
class PipelineCost:
    """Cycles and energy of one query (or, with array counts, of each query of a stream) through a
    pipeline of modules. ``exp_overlap``: fraction of the output module overlapping the exponent module
    within one query (latency only)."""

    kind: str
    modules: tuple
    clock_hz: float
    pipeline_fill: int
    static_w: float = 0.0
    exp_overlap: float = 0.0

    def _cycles(self, name):
        return next(np.asarray(m.cycles, float) for m in self.modules if m.name == name)

    @property
    def interval_cycles(self):
        """Cycles between queries when the modules work on successive queries (the slowest module)."""
        return _f(np.max(np.stack([np.asarray(m.cycles, float) for m in self.modules]), axis=0))

    @property
    def latency_cycles(self):
        total = np.sum(np.stack([np.asarray(m.cycles, float) for m in self.modules]), axis=0)
        overlap = self.exp_overlap * np.minimum(self._cycles("exponent"), self._cycles("output"))
        return _f(total - overlap + self.pipeline_fill * len(self.modules))

    @property
    def throughput_qps(self):
        return _f(self.clock_hz / np.asarray(self.interval_cycles))

    @property
    def latency_s(self):
        return _f(np.asarray(self.latency_cycles) / self.clock_hz)

    @property
    def dynamic_energy_pj(self):
        return _f(np.sum(np.stack([np.asarray(m.energy_pj, float) for m in self.modules]), axis=0))

    @property
    def energy_pj(self):
        """Energy per query: dynamic + static power over the query interval."""
        return _f(np.asarray(self.dynamic_energy_pj) + self.static_w * np.asarray(self.interval_cycles)
                  / self.clock_hz * 1e12)

    def table(self) -> list[dict]:
        return [dict(module=m.name, cycles=m.cycles, time_ns=m.cycles / self.clock_hz * 1e9,
                     energy_pj=m.energy_pj) for m in self.modules]


def _check_counts(**kw):
    for name, val in kw.items():
        a = np.asarray(val, dtype=float)
        if not (np.all(a >= 0) and np.all(np.isfinite(a))):
            raise ValueError(f"{name} must be finite numbers >= 0, got {val}")


def _dot_module(hw, e, rows, d):
    # per row: d multiply-accumulates (adder tree) + read one key row (d x bits) from the key SRAM
    return ModuleCost("dot-product", rows, rows * (d * e["mac"] + d * hw.bits * e["sram_kv_bit"] + e["cmp"]))


def _exp_module(hw, e, scored, exps):
    # per scored row: subtract max + threshold compare; per kept row: exp + add to the running sum
    return ModuleCost("exponent", scored, scored * (e["add"] + e["cmp"]) + exps * (e["exp"] + e["add"]))


def _out_module(hw, e, rows, dv):
    # per kept row: dv MACs p_i * v_i + read one value row; then dv multiplies by 1/sum (+ one reciprocal)
    return ModuleCost("output", rows, rows * (dv * e["mac"] + dv * hw.bits * e["sram_kv_bit"])
                      + dv * e["fmul"] + e["exp"])


def base_pipeline(n, d: int | None = None, hw: A3Hardware | None = None) -> PipelineCost:
    """Base (exact) A3 for one query over n keys (or an array of key counts): dot-product, exponent and
    output modules, n rows each."""
    hw = hw or A3Hardware()
    d = hw.d if d is None else d
    _check_counts(n=n, d=d)
    n = _f(np.asarray(n, float))
    if np.any(np.asarray(n) < 1):
        raise ValueError(f"n must be >= 1 key, got {n}")
    e = hw.e()
    mods = (_dot_module(hw, e, n, d), _exp_module(hw, e, n, n), _out_module(hw, e, n, d))
    return PipelineCost("base", mods, hw.clock_hz, hw.pipeline_fill, hw.static_w, hw.exp_overlap)


def approx_pipeline(n, M, candidates, survivors, d: int | None = None, hw: A3Hardware | None = None, *,
                    max_picks=None, min_picks=None) -> PipelineCost:
    """Approximate A3 for one query (or arrays over a stream): candidate selection (M iterations), then
    dot products for the candidates, exponent over candidates (threshold) and output over survivors.

    ``M`` iterations granted (cycles of the selection module, / ``select_iter_per_cycle``);
    ``max_picks`` / ``min_picks`` the iterations that actually took a product on each side (default M;
    energy only). Per pick: one multiply (the advanced pointer's next head), a comparator-tree update
    along one path (log2 d compares), one add into the row's partial score (register-file read + write)
    and one sorted-SRAM entry read (value + row index)."""
    hw = hw or A3Hardware()
    d = hw.d if d is None else d
    _check_counts(n=n, M=M, candidates=candidates, survivors=survivors)
    n, M, candidates, survivors = (_f(np.asarray(x, float)) for x in (n, M, candidates, survivors))
    if np.any(np.asarray(n) < 1) or np.any(np.asarray(M) <= 0):
        raise ValueError(f"need n >= 1 and M > 0, got n={n}, M={M}")
    if not (np.all(np.asarray(survivors) <= candidates) and np.all(np.asarray(candidates) <= n)):
        raise ValueError(f"need survivors <= candidates <= n, got {survivors}, {candidates}, {n}")
    e = hw.e()
    hi = M if max_picks is None else _f(np.asarray(max_picks, float))
    lo = M if min_picks is None else _f(np.asarray(min_picks, float))
    log_n = np.log2(np.maximum(n, 2))
    per_pick = (e["mult"] + math.log2(max(d, 2)) * e["cmp"] + e["add"] + 2 * hw.score_bits * e["rf_bit"]
                + (hw.bits + e["idx_bits"]) * e["sram_sorted_bit"])
    # first heads: 2d products, sorted-SRAM reads and building the two comparator trees (d - 1 compares each)
    setup = 2 * d * (e["mult"] + (hw.bits + e["idx_bits"]) * e["sram_sorted_bit"]) + 2 * (d - 1) * e["cmp"]
    readout = n * hw.score_bits * e["rf_bit"] + n * e["cmp"]  # sign check of every partial score
    # the sort of one key matrix: d columns of n, n*log2(n) compare steps each (a compare and a read + write of
    # a sorted entry); its energy is shared by the queries of that key matrix (sort_queries, default n)
    share = n if hw.sort_queries is None else hw.sort_queries
    sort = d * n * log_n * (e["cmp"] + 2 * (hw.bits + e["idx_bits"]) * e["sram_sorted_bit"]) / share
    sel_cycles = M / hw.select_iter_per_cycle + (log_n if hw.sort == "log2 n per query" else 0.0)
    mods = (ModuleCost("candidate selection", _f(sel_cycles), _f((hi + lo) * per_pick + setup + readout + sort)),
            _dot_module(hw, e, candidates, d), _exp_module(hw, e, candidates, survivors),
            _out_module(hw, e, survivors, d))
    if hw.sort == "full sort per query":  # the sort as its own stage (energy already in the selection module)
        mods = (ModuleCost("key sort", _f(n * log_n), _f(n * 0.0)),) + mods
    return PipelineCost("approximate", mods, hw.clock_hz, hw.pipeline_fill, hw.static_w, hw.exp_overlap)


# ============================================================================ a stream of real queries
def stream_arrays(n_allowed, m, candidates, survivors, *, d: int | None = None, hw: A3Hardware | None = None,
                  max_picks=None, min_picks=None) -> dict:
    """Per-query arrays over a stream of queries (the units a bootstrap over queries resamples):
    base_interval, base_latency, base_energy, approx_interval, approx_latency, approx_energy (cycles,
    cycles, pJ), and per-module (cycles, pJ) arrays under "modules"."""
    hw = hw or A3Hardware()
    arrs = [np.asarray(x, dtype=float).reshape(-1) for x in (n_allowed, m, candidates, survivors)]
    if len({a.size for a in arrs}) != 1 or arrs[0].size == 0:
        raise ValueError("n_allowed, m, candidates and survivors must be non-empty arrays of equal length")
    n_a, m_a, c_a, s_a = arrs
    hi = None if max_picks is None else np.asarray(max_picks, float).reshape(-1)
    lo = None if min_picks is None else np.asarray(min_picks, float).reshape(-1)
    base = base_pipeline(n_a, d, hw)
    appr = approx_pipeline(n_a, m_a, c_a, s_a, d, hw, max_picks=hi, min_picks=lo)
    out = {}
    for kind, p in (("base", base), ("approx", appr)):
        out[f"{kind}_interval"] = np.broadcast_to(p.interval_cycles, n_a.shape).astype(float)
        out[f"{kind}_latency"] = np.broadcast_to(p.latency_cycles, n_a.shape).astype(float)
        out[f"{kind}_energy"] = np.broadcast_to(p.energy_pj, n_a.shape).astype(float)
        out[f"{kind}_modules"] = [(mod.name, np.broadcast_to(mod.cycles, n_a.shape).astype(float),
                                   np.broadcast_to(mod.energy_pj, n_a.shape).astype(float)) for mod in p.modules]
    return out


def stream_costs(n_allowed, m, candidates, survivors, *, d: int | None = None, hw: A3Hardware | None = None,
                 max_picks=None, min_picks=None) -> dict:
    """Base vs approximate A3 over a stream of queries with per-query counts (arrays of equal length,
    e.g. from `candidate_sweep` on captured attention). The queries follow each other through the
    pipeline, so a stream's time is the sum of its per-query intervals.

    Returns: queries; throughput_speedup = sum(base intervals) / sum(approx intervals);
    latency_speedup = mean base latency / mean approx latency; base / approx: mean cycles per query
    (interval, latency), mean energy per query (pJ) and per module [(name, mean cycles, mean pJ)]."""
    hw = hw or A3Hardware()
    a = stream_arrays(n_allowed, m, candidates, survivors, d=d, hw=hw, max_picks=max_picks, min_picks=min_picks)
    out = {"queries": int(a["base_interval"].size)}
    for kind in ("base", "approx"):
        out[kind] = dict(
            interval_cycles=float(a[f"{kind}_interval"].mean()),
            latency_cycles=float(a[f"{kind}_latency"].mean()),
            energy_pj=float(a[f"{kind}_energy"].mean()),
            throughput_qps=hw.clock_hz / float(a[f"{kind}_interval"].mean()),
            modules=[(nm, float(c.mean()), float(en.mean())) for nm, c, en in a[f"{kind}_modules"]])
    out["throughput_speedup"] = out["base"]["interval_cycles"] / out["approx"]["interval_cycles"]
    out["latency_speedup"] = out["base"]["latency_cycles"] / out["approx"]["latency_cycles"]
    out["energy_saving"] = out["base"]["energy_pj"] / out["approx"]["energy_pj"]
    return out


# ============================================================================ CPU baseline (measured)
from .cpu_timing import MODES as CPU_MODES  # noqa: E402
from .cpu_timing import (CompiledKernel, cpu_busy_snapshot, cpu_exact_batched, cpu_exact_single,  # noqa: E402,F401
                         others_busy, time_modes)

#: The idle check: other processes may use at most this fraction of the machine's CPU time during a timing.
IDLE_LIMIT = 0.10


def compiled_kernel():
    """Path of the compiled per-query kernel (built once under .cache/a3), or None without a C compiler."""
    from ..paths import cache_dir
    from .cpu_timing import build_kernel

    return build_kernel(cache_dir("a3"))


def cpu_exact_compiled(q: np.ndarray, k: np.ndarray, v: np.ndarray, scale: float) -> np.ndarray:
    """Exact attention of every query of ``q`` (Q, d), each on its own, with the compiled kernel."""
    lib = compiled_kernel()
    if lib is None:
        raise RuntimeError("no C compiler (cc) found: the compiled per-query kernel cannot be built")
    kern = CompiledKernel(lib)
    return kern.run(kern.prepare(q, k, v), scale).copy()


def machine_load() -> dict:
    """The 1-minute load average, the CPU count and the load per CPU (context only: it includes the
    notebook's own process; the idle check uses `others_busy`)."""
    cpus = os.cpu_count() or 1
    load1 = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return dict(load1=float(load1), cpus=int(cpus), per_cpu=float(load1) / cpus)


@dataclass(frozen=True)
class CpuTiming:
    """CPU timings of exact attention (seconds per query).

    runs: {blas_threads: {mode: (repeats,)}} every repetition of every process, mode in "single" (one
    numpy call chain per query), "batched" (one call for all queries), "compiled" (the compiled per-query
    kernel, one thread; absent without a C compiler); proc_runs: the same split per process (a list of
    arrays per mode; one entry when timed in this process); single_s / batched_s / compiled_s: the median
    at the faster thread setting of each mode; others_busy: per process, the fraction of the machine's CPU
    time other processes used during the timing (the idle check, `IDLE_LIMIT`); load_before / load_after:
    the 1-minute load average (context)."""

    n: int
    d: int
    single_s: float
    batched_s: float
    repeats: int
    threads: int
    runs: dict = field(default_factory=dict, repr=False)
    single_threads: int = 0
    batched_threads: int = 0
    load_before: dict = field(default_factory=dict)
    load_after: dict = field(default_factory=dict)
    proc_runs: dict = field(default_factory=dict, repr=False)
    others_busy: tuple = ()
    compiled_s: float | None = None

    @property
    def modes(self) -> tuple:
        return tuple(m for m in CPU_MODES if all(m in r for r in self.runs.values()))

    def threads_of(self, mode: str) -> int:
        """The BLAS thread setting whose median is fastest for ``mode``."""
        if mode not in self.modes:
            raise ValueError(f"mode {mode!r} was not timed; timed: {self.modes}")
        return min(self.runs, key=lambda t: np.median(self.runs[t][mode]))

    def cores(self, mode: str) -> int:
        """The threads that ran ``mode``'s timing (the cores to charge power for): the compiled kernel
        runs on one thread; numpy on its BLAS thread setting."""
        return 1 if mode == "compiled" else int(self.threads_of(mode))

    def reps(self, mode: str) -> np.ndarray:
        """Per-repetition seconds per query of ``mode`` at its faster thread setting (all processes)."""
        return np.asarray(self.runs[self.threads_of(mode)][mode])

    def proc_reps(self, mode: str) -> list:
        """Per-process arrays of ``mode``'s repetitions at its faster thread setting."""
        return [np.asarray(a) for a in self.proc_runs[self.threads_of(mode)][mode]]

    def median_s(self, mode: str) -> float:
        return float(np.median(self.reps(mode)))

    @property
    def idle_ok(self) -> bool:
        """Whether every timing process passed the idle check (NaN: /proc/stat unreadable -> not passed)."""
        return bool(self.others_busy) and all(b <= IDLE_LIMIT for b in self.others_busy)


def _timing(k, d, repeats, results, load_before) -> CpuTiming:
    threads = sorted({t for r in results for t in r["runs"]})
    proc_runs = {t: {m: [np.asarray(r["runs"][t][m]) for r in results if t in r["runs"]]
                     for m in results[0]["runs"][next(iter(results[0]["runs"]))]} for t in threads}
    runs = {t: {m: np.concatenate(v) for m, v in pr.items()} for t, pr in proc_runs.items()}
    best = lambda m: min(runs, key=lambda t: np.median(runs[t][m]))  # noqa: E731
    bs, bb = best("single"), best("batched")
    comp = float(np.median(runs[best("compiled")]["compiled"])) if "compiled" in runs[bs] else None
    return CpuTiming(k.shape[0], d, float(np.median(runs[bs]["single"])), float(np.median(runs[bb]["batched"])), repeats,
                     bs, runs, bs, bb, load_before, machine_load(), proc_runs,
                     tuple(float(r["others_busy"]) for r in results), comp)


def measure_cpu(n: int = 320, d: int = 64, *, n_queries: int = 320, repeats: int = 5, seed: int = 0,
                q=None, k=None, v=None, thread_counts=(1, None), processes: int = 0, compiled: bool = True) -> CpuTiming:
    """MEASURE exact attention on this machine's CPU (float32): per query one at a time (numpy), batched
    (numpy) and with the compiled per-query kernel (where a C compiler exists), for each BLAS thread limit in
    ``thread_counts`` (None = the library default), the repetitions interleaved. ``processes`` = 0 times in
    this process; k > 0 in k separate processes one after the other (each with its own idle check), so an
    interval can resample processes. Real tensors may be given (q (Q, d), k (n, d), v (n, d)); otherwise
    Gaussian ones of the same shape (timing does not depend on the values)."""
    if n < 1 or d < 1 or n_queries < 1 or repeats < 1 or processes < 0:
        raise ValueError("n, d, n_queries and repeats must be >= 1 and processes >= 0")
    rng = np.random.default_rng(seed)
    q = rng.standard_normal((n_queries, d)).astype(np.float32) if q is None else np.asarray(q, np.float32)
    k = rng.standard_normal((n, d)).astype(np.float32) if k is None else np.asarray(k, np.float32)
    v = rng.standard_normal((n, d)).astype(np.float32) if v is None else np.asarray(v, np.float32)
    if q.ndim != 2 or k.ndim != 2 or q.shape[-1] != k.shape[-1]:
        raise ValueError(f"need q (Q, d) and k (n, d) of the same width, got {q.shape} and {k.shape}")
    lib = compiled_kernel() if compiled else None
    load_before = machine_load()
    if processes == 0:
        return _timing(k, q.shape[-1], repeats, [time_modes(q, k, v, repeats=repeats, thread_counts=thread_counts,
                                                            lib_path=lib)], load_before)
    import json
    import subprocess
    import sys
    import tempfile
    from pathlib import Path

    from . import cpu_timing

    results = []
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "in.npz"
        np.savez(src, q=q, k=k, v=v)
        tc = ",".join("default" if t is None else str(int(t)) for t in thread_counts)
        for i in range(processes):
            dst = Path(tmp) / f"out{i}.json"
            subprocess.run([sys.executable, cpu_timing.__file__, str(src), str(dst), str(repeats), str(lib or "-"), tc],
                           check=True, capture_output=True, timeout=600)
            r = json.loads(dst.read_text())
            r["runs"] = {int(t): {m: np.asarray(x) for m, x in rr.items()} for t, rr in r["runs"].items()}
            results.append(r)
    return _timing(k, q.shape[-1], repeats, results, load_before)
