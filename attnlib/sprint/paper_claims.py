"""SPRINT's paper claims: paper values with their source labels, direction, the scenario axes that can
decide each headline (with the option the paper describes), the rule for the headline scenario, and
the scenario grid computed from CACHED keep masks (an accounting change never re-runs a model).

Sources (docs/papers/sprint.md): [paper] the abstract; S1 a structured summary of the full
paper; S2 a blog note (per-configuration speedups, the results sections' figures).

Headline axes (`speedup_axes`, `energy_axes`):

- **baseline residency** -- "none" (every query streams every key and value: S1 describes the earlier
  runtime-pruning accelerators, SPRINT's motivation, as fetching ALL keys/values with on-chip memory at
  about a fifth of the need), "resident rows" (the buffer left after one query row keeps K/V rows on
  chip across queries: pinned rows, as few fetches as optimal replacement for a full scan), or
  "query-tiled" (the traffic-minimising tile of query rows plus resident rows). Paper: "none".
- **fixed main-memory traffic** -- the compulsory traffic both designs pay (K/V written once after
  projection, Q read, O written) "counted" or "not counted". Paper: "counted" (S2: the energy breakdown
  lists ReRAM reads and writes).
- **baseline memory** -- the baseline's main memory "ReRAM (as SPRINT)" or "DRAM" (DDR-class, 20.3 pJ/bit,
  the shared energy table). Paper: the same ReRAM (S2: main-memory traffic compared on one memory,
  "Mask Only" vs SPRINT; the pJ/bit of the baseline is not stated). Energy only.
- **sequence length** -- per length (128, 256, 512) or the geometric mean over them. The paper averages
  over its suite's task lengths, not known here: "unknown" (every option plausible).
- **model shape** -- MiniLM's own shape (d_head 32, 6 layers, 12 heads) or a BERT-base shape (d_head 64,
  12 layers, 12 heads) driven by the SAME learned MiniLM masks mapped by relative depth (a labelled
  substitution). The paper's suite is not confirmed: "unknown".

Headline rule: every axis at the paper's option where the paper (or a secondary reading) describes
one, else at the measured model (MiniLM) and the length mix.
"""
from __future__ import annotations

import numpy as np

from ..claims import Axis
from .cost import compare, compare_draws
from .algorithm import RowStats

__all__ = ["PAPER", "SOURCES", "RESIDENCY_OPTIONS", "FIXED_OPTIONS", "MEMORY_OPTIONS", "SHAPE_OPTIONS", "MIX",
           "DRAM_PJ_PER_BIT", "residency_axis", "fixed_axis", "memory_axis", "length_axis", "shape_axis",
           "speedup_axes", "energy_axes", "headline_scenario", "HEADLINE_RULE", "baseline_kwargs", "scenario_grid",
           "grid_rows", "headline_draws", "new_fetch_fractions", "reuse_fractions", "accuracy_axes",
           "ACCURACY_HEADLINE_RULE", "new_fetch_axes", "HEADLINES", "S1", "S2", "mean_over_lengths"]

S1 = "secondary: S1 (chamber-paper-wiki summary of the full paper)"
S2 = "secondary: S2 (blog note on the paper)"
#: The paper's values: claim id -> (value, direction, source).
PAPER = {
    "speedup": (7.5, "about", "paper (abstract): 7.5x on average with 16 KB of on-chip memory"),
    "energy_reduction": (19.6, "about", "paper (abstract): 19.6x on average with 16 KB"),
    "speedup_M": (7.4, "about", S2 + ": M-SPRINT (32 KB, 2 CORELETs)"),
    "speedup_L": (7.1, "about", S2 + ": L-SPRINT (64 KB, 4 CORELETs)"),
    "accuracy_degradation": (0.36, "at most", "paper (abstract): 0.36% average degradation, 'virtually iso-accuracy'"),
    "newly_fetched": (0.021, "about", S1 + ": on average 2.1% of the sequence length is newly fetched per adjacent query"),
    "pruning_rate_later_chip": (0.75, "about", "the group's later silicon (arXiv 2409.04940), not SPRINT: a context row"),
}
SOURCES = {k: v[2] for k, v in PAPER.items()}
#: Claims judged as headlines (the later chip's pruning rate is a context row).
HEADLINES = ("speedup", "energy_reduction", "speedup_M", "speedup_L", "accuracy_degradation", "newly_fetched")

RESIDENCY_OPTIONS = ("none", "resident rows", "query-tiled")
FIXED_OPTIONS = ("counted", "not counted")
MEMORY_OPTIONS = ("ReRAM (as SPRINT)", "DRAM")
SHAPE_OPTIONS = ("MiniLM (d_head 32)", "BERT-base shape (MiniLM masks)")
MIX = "mix (geomean)"
#: DDR-class DRAM, read and write (Horowitz 2014 low end, the shared energy table's dram_ddr).
DRAM_PJ_PER_BIT = (20.3, 20.3)


def residency_axis() -> Axis:
    return Axis("baseline residency", RESIDENCY_OPTIONS, "none",
                S1 + ": earlier runtime-pruning accelerators fetch all keys/values on chip, on-chip memory at about 20% of the need",
                "a baseline that keeps K/V rows on chip across queries fetches far less than one that streams them per query")


def fixed_axis() -> Axis:
    return Axis("fixed main-memory traffic", FIXED_OPTIONS, "counted",
                S2 + ": the energy breakdown lists ReRAM reads and writes",
                "the K/V writes both designs pay (24.4 pJ/bit) dominate SPRINT's energy at short T")


def memory_axis() -> Axis:
    return Axis("baseline memory", MEMORY_OPTIONS, "ReRAM (as SPRINT)",
                S2 + ": main-memory traffic compared on one memory ('Mask Only' vs SPRINT); the baseline's pJ/bit is not stated",
                "a DRAM baseline pays about 6.5x more per bit read than ReRAM")


def length_axis(lengths) -> Axis:
    return Axis("sequence length", tuple(str(int(T)) for T in lengths) + (MIX,), "unknown", "unknown",
                "the baseline turns compute-bound once T fits its buffer; pruning and reuse change with T")


def shape_axis() -> Axis:
    return Axis("model shape", SHAPE_OPTIONS, "unknown", "unknown",
                "d_head and heads set the K/V row size against the buffer and the compute per fetched row")


def speedup_axes(lengths) -> list[Axis]:
    return [residency_axis(), fixed_axis(), length_axis(lengths), shape_axis()]


def energy_axes(lengths) -> list[Axis]:
    return [residency_axis(), fixed_axis(), memory_axis(), length_axis(lengths), shape_axis()]


def headline_scenario(axes) -> dict:
    """Every axis at the paper's option when it states one; else the measured model and the length mix."""
    out = {}
    for a in axes:
        if a.paper != "unknown":
            out[a.name] = a.plausible[0]
        elif a.name == "sequence length":
            out[a.name] = MIX
        elif a.name == "model shape":
            out[a.name] = SHAPE_OPTIONS[0]
        else:
            out[a.name] = a.options[0]
    return out


HEADLINE_RULE = ("the paper's own description of its baseline: earlier accelerators fetch every key and value (S1), so no "
                 "residency; the energy breakdown counts ReRAM reads and writes (S2), so the fixed traffic is counted; "
                 "one main memory for both designs (S2); the suite's lengths and models are not known, so the measured "
                 "model's own shape and the geometric mean over the measured lengths, with every other length and "
                 "shape judged as plausible")


def baseline_kwargs(residency: str, fixed: str = "counted", memory: str = MEMORY_OPTIONS[0]) -> dict:
    """`baseline_cost` keywords of one scenario."""
    if residency not in RESIDENCY_OPTIONS or fixed not in FIXED_OPTIONS or memory not in MEMORY_OPTIONS:
        raise ValueError(f"unknown scenario ({residency!r}, {fixed!r}, {memory!r})")
    kw = {"none": dict(residency="none"), "resident rows": dict(query_tile=1, residency="rows"),
          "query-tiled": dict(residency="query-tiled")}[residency]
    kw = dict(kw, fixed_traffic=fixed == "counted")
    if memory == "DRAM":
        kw["memory_pj_per_bit"] = DRAM_PJ_PER_BIT
    return kw


def _gm(x) -> float:
    return float(np.exp(np.mean(np.log(np.asarray(x, dtype=np.float64)))))


def scenario_grid(acc, xbar, cfg, stats_by_T: dict, shapes: dict, *, fetched_of=None, causal: bool = False) -> dict:
    """(speedup, energy reduction) at every scenario of the energy axes' grid, from cached keep masks.

    stats_by_T: T -> per-layer `RowStats`; shapes: option of `SHAPE_OPTIONS` -> `workloads.ModelShape`.
    Returns {(residency, fixed, memory, length, shape): (speedup, energy)}; length is str(T) or `MIX`
    (geometric mean over the lengths of each ratio)."""
    if set(shapes) - set(SHAPE_OPTIONS):
        raise ValueError(f"shapes must be keyed by {SHAPE_OPTIONS}, got {sorted(shapes)}")
    out = {}
    for res in RESIDENCY_OPTIONS:
        for fx in FIXED_OPTIONS:
            for mem in MEMORY_OPTIONS:
                for sh, shape in shapes.items():
                    per_T = {}
                    for T, st in stats_by_T.items():
                        b, s = compare(acc, xbar, cfg, shape, st, causal=causal, baseline_kw=baseline_kwargs(res, fx, mem),
                                       fetched_of=fetched_of, fixed_traffic=fx == "counted")
                        per_T[T] = (b.time_s / s.time_s, b.energy_j / s.energy_j)
                        out[res, fx, mem, str(int(T)), sh] = per_T[T]
                    out[res, fx, mem, MIX, sh] = tuple(_gm([v[i] for v in per_T.values()]) for i in (0, 1))
    return out


def grid_rows(grid: dict, axes, i: int) -> list[tuple[dict, float]]:
    """Scenario rows [(options, value)] of ratio ``i`` (0 speedup, 1 energy) for the claim's ``axes``
    (axes the claim does not declare are at their first option: the grid is keyed by the energy axes)."""
    names = [a.name for a in axes]
    full = ("baseline residency", "fixed main-memory traffic", "baseline memory", "sequence length", "model shape")
    rows = []
    for key, v in grid.items():
        opts = dict(zip(full, key))
        if "baseline memory" not in names and opts["baseline memory"] != MEMORY_OPTIONS[0]:
            continue
        rows.append(({n: opts[n] for n in names}, v[i]))
    return rows


def headline_draws(acc, xbar, cfg, stats_by_T: dict, shape, scenario: dict, *, fetched_of=None, causal=False,
                   n_resamples: int = 2000, seed: int = 0) -> dict:
    """(speedup draws, energy draws) per T at a scenario (bootstrap over the measured units)."""
    kw = baseline_kwargs(scenario["baseline residency"], scenario["fixed main-memory traffic"],
                         scenario.get("baseline memory", MEMORY_OPTIONS[0]))
    return {T: compare_draws(acc, xbar, cfg, shape, st, causal=causal, baseline_kw=kw, n_resamples=n_resamples, seed=seed,
                             fetched_of=fetched_of, fixed_traffic=kw["fixed_traffic"])
            for T, st in stats_by_T.items()}


def new_fetch_fractions(stats: list[RowStats]) -> np.ndarray:
    """Per (sequence, head) unit, averaged over layers and over real queries after the first: the keys a
    query keeps that the previous query did not keep, as a fraction of the keys allowed to it (the
    paper's "newly fetched per adjacent query" with the adjacent-query AND). Returns (N * H,)."""
    per_layer = []
    for st in stats:
        kept, overlap, allowed = (np.asarray(getattr(st, f), dtype=np.float64) for f in ("kept", "overlap", "allowed"))
        valid = np.asarray(st.valid, dtype=bool).copy()
        valid[..., 0] = False                               # the first query has no predecessor
        new = np.where(valid, (kept - overlap) / np.maximum(allowed, 1.0), 0.0)
        per_layer.append(new.sum(-1) / np.maximum(valid.sum(-1), 1))
    return np.mean(per_layer, axis=0).reshape(-1)


def reuse_fractions(stats: list[RowStats]) -> np.ndarray:
    """Per unit: of the keys a query keeps, the fraction the previous query also kept (layers averaged)."""
    per_layer = []
    for st in stats:
        kept, overlap = np.asarray(st.kept, dtype=np.float64), np.asarray(st.overlap, dtype=np.float64)
        valid = np.asarray(st.valid, dtype=bool).copy()
        valid[..., 0] = False
        per_layer.append(np.where(valid, overlap, 0).sum(-1) / np.maximum(np.where(valid, kept, 0).sum(-1), 1.0))
    return np.mean(per_layer, axis=0).reshape(-1)


def new_fetch_axes(lengths) -> list[Axis]:
    return [length_axis(lengths),
            Axis("thresholds", ("learned (fine-tuned)", "calibrated (frozen model)"), "learned (fine-tuned)",
                 "secondary: LeOPArd abstract (the group learns thresholds while fine-tuning; reuse by SPRINT unconfirmed)",
                 "learned thresholds prune more, so fewer keys are new per query")]


def accuracy_axes() -> list[Axis]:
    return [Axis("evaluation length", ("128 tokens", "64 tokens"), "unknown", "unknown",
                 "the paper evaluates full task inputs; a longer input has more keys to prune and more text to classify")]


ACCURACY_HEADLINE_RULE = ("the paper evaluates full task inputs (length not known): the longer of the two evaluated lengths "
                          "(128 tokens), the 64-token evaluation judged as plausible too")


def mean_over_lengths(per_T_units: dict, *, n_resamples: int = 2000, seed: int = 0, lengths=None):
    """(value, Interval) of the mean over lengths of the per-length unit means; each length's units
    (e.g. `new_fetch_fractions`) are resampled on their own. ``lengths``: the subset to average."""
    from ..stats import from_draws

    keys = list(per_T_units) if lengths is None else [int(T) for T in lengths]
    if not keys:
        raise ValueError("no lengths to average")
    rng = np.random.default_rng(seed)
    point = float(np.mean([np.mean(per_T_units[T]) for T in keys]))
    draws = np.zeros(int(n_resamples))
    for T in keys:
        u = np.asarray(per_T_units[T], dtype=np.float64)
        draws += u[rng.integers(0, len(u), (int(n_resamples), len(u)))].mean(1)
    n = sum(len(per_T_units[T]) for T in keys)
    return point, from_draws(point, draws / len(keys), method=f"bootstrap over the {n} (sequence, head) units, each length on its own",
                             n=n)
