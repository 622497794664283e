"""A3's claims as the paper states them, the structural choices (scenario axes) that can decide them,
and the rules that pick the headline scenario and the operating points.

Paper values come from the card (docs/papers/a3.md); every one is a [secondary] reading of the paper
(a published critique). The notebook measures and models; this module turns the cached runs into the
scenario values each claim declares (`speed_points`, `energy_points`) and holds the axes:

- **key sort** (`SORT_AXIS`): where the key sort's cycles go. The paper's reading [secondary]: sorting is
  amortised / done before the query arrives, i.e. off the query's critical path. In the memory network
  run here every hop has its own key matrix, queried ONCE, so no amortisation over queries applies: if
  the sort were in the query stream it would cost the full n*log2(n) cycles per query ("full sort per
  query"); "log2 n per query" is the self-attention share (n queries per key matrix) the model charged
  before.
- **MemN2N width d** (`WIDTH_AXIS`): 20 (MemN2N's bAbI configuration) or 64 (the chip's key width); the
  model is trained at each width (cached), the matched M re-derived on its own accuracy curve.
- **memory size n** (`MEMORY_AXIS`): the bAbI story's own slots (10-50) or the chip's n = 320. No memory
  network is trained at 320 slots; that option is the key-value retrieval task at n = 320 built from
  real text (`experiments.kv_retrieval_task`), with its own accuracy curve and matched M.
- **CPU baseline** (`CPU_BASELINE_AXIS`): one numpy call chain per query, all queries batched in one call,
  or a compiled per-query C kernel (`cpu_timing`).
- **CPU power charged** (`CPU_POWER_AXIS`): per core x the threads that ran the timing (per-core power
  from a stated part: `CPU_POWER`), or the whole socket's power charged to that timing.
- **sort energy** (`SORT_ENERGY_AXIS`): the sort's energy shared by n queries (the paper's amortisation)
  or charged to the one query of a MemN2N key matrix.

Axes whose paper option is one of several are given as a LIST of options (``paper=[...]``): the claim's
generated why then names them among the axes "whose paper option is not known".

Rules: the headline scenario is the paper's option on every axis whose option the paper states, and the
workbook's stated choice among the options it is consistent with (`HEADLINE_RULES`); "matched quality"
picks the M whose accuracy loss is nearest the paper's band (`experiments.matched_setting`); "matched
speed" picks, among the M whose modelled throughput reaches the paper's speed, the largest (the most
accurate one at that speed), and is **unreachable** (None) when no M on the grid reaches it
(`matched_speed_setting`).
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from ..claims import Axis, Deviation
from .experiments import matched_setting
from .hardware import SORT_OPTIONS, A3Hardware, stream_arrays

CARD = "docs/papers/a3.md"

#: The paper's numbers [secondary: critique, on the card].
PAPER = dict(loss_band={"conservative": (1.0, 1.6), "aggressive": (8.0, 9.0)}, throughput=(2.6, 7.0), latency=(1.6, 8.0),
             # [unconfirmed reading]: the conservative setting gives the low end of the throughput range, the aggressive the high end
             speed_target={"conservative": 2.6, "aggressive": 7.0}, energy=(10000, None))
SOURCE = "secondary: critique (card)"
#: Direction of each headline claim.
DIRECTION = dict(throughput="within", latency="within", accuracy="within", energy="at least")

#: CPU power: per core of a stated Xeon-class part (the card says only "Xeon-class" [unconfirmed]), its
#: swept range (labelled assumptions), and the whole socket.
CPU_POWER = dict(
    per_core_w=7.8, per_core_sweep=(5.0, 7.8, 15.0), socket_w=125.0,
    source=("Intel Xeon Gold 6130 (a Xeon-class server part): 125 W package TDP over 16 cores = 7.8 W per core "
            "(Intel product specification); the card names only a 'Xeon-class' CPU [unconfirmed]"),
    sweep_source=("ASSUMPTION: 5 W (a low-clocked core of a many-core part, uncore not charged) to 15 W "
                  "(one core at turbo plus a share of the uncore)"))

SORT_AXIS = Axis(
    "key sort", SORT_OPTIONS, paper="off the critical path",
    source="secondary: card ('sorting cost is amortised ... memory networks preprocess keys before the query arrives')",
    why=("MemN2N queries each hop's key matrix once, so nothing amortises the sort: off the path it costs no cycles, "
         "its log2 n share costs a few, a full sort per query (n log2 n cycles) is slower than base A3"))
WIDTH_AXIS = Axis(
    "MemN2N width d", ("20", "64"), paper=["20", "64"],
    source=("unconfirmed: A3's MemN2N width is not on the card; MemN2N's bAbI configuration uses d = 20, "
            "the chip's keys are d = 64 [secondary]"),
    why="the greedy search walks n*d component products: the iterations a quality needs, and the CPU's time, move with d")
MEMORY_AXIS = Axis(
    "memory size n", ("bAbI story (10-50)", "chip's 320 (key-value retrieval)"),
    paper=["bAbI story (10-50)", "chip's 320 (key-value retrieval)"],
    source="secondary: card (MemN2N on bAbI, memory <= 50 slots; the chip is sized for n = 320)",
    why=("fixed per-query costs (pipeline fill, the sort's share) weigh more on short memories; at n = 320 there is "
         "no memory network here, so that option is the key-value retrieval task built at the chip's size"))
CPU_BASELINE_AXIS = Axis(
    "CPU baseline", ("one query per call (numpy)", "batched (numpy)", "compiled per-query kernel (C)"),
    paper=["one query per call (numpy)", "compiled per-query kernel (C)"],
    source=("unconfirmed: the card says only 'Xeon-class', the timing method is not stated; A3 serves one query at a "
            "time, so a per-query CPU is the like-for-like reading (batched is a stronger baseline)"),
    why="a numpy call per query is mostly interpreter overhead at bAbI's memory sizes; batching or compiling removes it")
CPU_POWER_AXIS = Axis(
    "CPU power charged", ("per core x threads timed", "whole socket"), paper="unknown", source="unknown",
    why="the ratio is linear in the watts charged: one core's share or the whole package for a one-thread timing")
SORT_ENERGY_AXIS = Axis(
    "sort energy", ("shared by n queries", "one query per key matrix"), paper="shared by n queries",
    source="secondary: card (sorting cost is amortised)",
    why="MemN2N here queries each key matrix once: the whole sort's energy belongs to that one query")

SPEED_AXES = (SORT_AXIS, WIDTH_AXIS, MEMORY_AXIS)
ACCURACY_AXES = (SORT_AXIS, WIDTH_AXIS, MEMORY_AXIS)
ENERGY_AXES = (CPU_BASELINE_AXIS, CPU_POWER_AXIS, SORT_ENERGY_AXIS, WIDTH_AXIS)

HEADLINE = {
    "key sort": "off the critical path", "MemN2N width d": "64", "memory size n": "bAbI story (10-50)",
    "CPU baseline": "one query per call (numpy)", "CPU power charged": "per core x threads timed",
    "sort energy": "shared by n queries"}
HEADLINE_RULES = dict(
    speed=("the paper's reading of the key sort (off the critical path [secondary]); of the options the paper is "
           "consistent with, the chip's key width d = 64 and the bAbI memory network (the workload the paper ran)"),
    accuracy=("the same scenario as the speed claims (off the critical path, d = 64, bAbI memory); the M is re-derived "
              "at the paper's speed under every scenario"),
    energy=("one query per call, as A3 serves queries (of the per-query readings the paper is consistent with, the one "
            "the workbook measured first); the per-core power of a stated part times the threads timed (the paper's "
            "power is unknown: the whole socket is the other option); the sort energy shared as the paper says; d = 64"))


def headline_of(axes) -> dict:
    """The headline scenario {axis: option} of a claim over ``axes``."""
    return {a.name: HEADLINE[a.name] for a in axes}


def check_headline(axes) -> None:
    """Raise unless the headline takes, on every axis, an option the paper is consistent with (rule 1)."""
    for a in axes:
        if HEADLINE[a.name] not in a.plausible:
            raise ValueError(f"the headline takes {a.name} = {HEADLINE[a.name]!r}, the paper describes {a.plausible}")


def matched_speed_setting(settings, throughput, target: float):
    """Matched speed: among the settings whose throughput reaches ``target``, the largest (the most accurate
    at that speed); None when none reaches it (the paper's speed is unreachable on this grid)."""
    settings, tp = list(settings), np.asarray(throughput, dtype=float)
    if len(settings) != len(tp) or not len(settings):
        raise ValueError("settings and throughput must be non-empty and of equal length")
    ok = [s for s, t in zip(settings, tp) if t >= target]
    return max(ok) if ok else None


def _speeds(counts: dict, *, d: int, hw: A3Hardware) -> tuple[float, float, np.ndarray]:
    a = stream_arrays(counts["n_allowed"], counts["m"], counts["candidates"], counts["survivors"], d=d, hw=hw,
                      max_picks=counts.get("max_picks"), min_picks=counts.get("min_picks"))
    return (float(a["base_interval"].sum() / a["approx_interval"].sum()),
            float(a["base_latency"].sum() / a["approx_latency"].sum()), a["approx_energy"])


def speed_points(workloads: dict, *, hw: A3Hardware | None = None) -> list[dict]:
    """The matched-point table over (key sort x width x memory size) x setting.

    ``workloads``: {(width label, memory label): dict(d=int, settings=[M/n...], loss={(setting, m): pts},
    counts={(setting, m): per-query counts}, sort_queries=queries per key matrix)}. For every scenario and
    setting: the matched-quality M/n (on the loss curve: independent of the sort), its loss, throughput and
    latency over base A3, its mean A3 energy per query; and the matched-speed M/n (None: unreachable), its
    throughput and loss, and the fastest throughput on the grid."""
    hw = hw or A3Hardware()
    rows = []
    for (wl, ml), w in workloads.items():
        settings = sorted(w["settings"])
        for setting in ("conservative", "aggressive"):
            losses = [w["loss"][(setting, m)] for m in settings]
            m_q, loss_q = matched_setting(settings, losses, PAPER["loss_band"][setting])
            for sort in SORT_OPTIONS:
                h = replace(hw, sort=sort, sort_queries=w.get("sort_queries"))
                sp = {m: _speeds(w["counts"][(setting, m)], d=w["d"], hw=h) for m in settings}
                m_s = matched_speed_setting(settings, [sp[m][0] for m in settings], PAPER["speed_target"][setting])
                rows.append({"key sort": sort, "MemN2N width d": wl, "memory size n": ml, "setting": setting,
                             "m_quality": m_q, "loss_quality": loss_q, "throughput": sp[m_q][0], "latency": sp[m_q][1],
                             "a3_energy_pj": float(np.mean(sp[m_q][2])), "m_speed": m_s,
                             "throughput_at_speed": None if m_s is None else sp[m_s][0],
                             "loss_at_speed": None if m_s is None else w["loss"][(setting, m_s)],
                             "fastest": max(sp[m][0] for m in settings)})
    return rows


def scenarios_of(rows: list, axes, value_key: str, setting: str, *, skip_headline: bool = True) -> list:
    """[(options, value)] of ``value_key`` over the rows of ``setting`` (rows whose value is None: left out,
    i.e. not swept; the headline scenario left out when ``skip_headline``: its value is the reproduced one)."""
    names = [a.name for a in axes]
    head = headline_of(axes)
    out = []
    for r in rows:
        if r["setting"] != setting or r[value_key] is None:
            continue
        opts = {n: r[n] for n in names}
        if skip_headline and opts == head:
            continue
        if opts in [o for o, _ in out]:
            continue
        out.append((opts, r[value_key]))
    return out


def unreachable(rows: list, setting: str) -> list[dict]:
    """The scenarios of ``setting`` where the paper's speed is not reached by any M on the grid."""
    return [r for r in rows if r["setting"] == setting and r["m_speed"] is None]


def energy_points(a3_energy: dict, cpu: dict) -> list[tuple[dict, float]]:
    """[(options, ratio)] over `ENERGY_AXES`: ``a3_energy`` {(width label, sort energy option): mean pJ per
    query}; ``cpu`` {width label: `CpuTiming`}. Ratio = power * t_cpu / E_a3 with the power charged per core x
    the threads that ran the mode (per-core default) or the whole socket."""
    out = []
    for (wl, se), e_pj in a3_energy.items():
        t = cpu[wl]
        for base, mode in zip(CPU_BASELINE_AXIS.options, ("single", "batched", "compiled")):
            if mode not in t.modes:
                continue
            for power in CPU_POWER_AXIS.options:
                w = CPU_POWER["per_core_w"] * t.cores(mode) if power == "per core x threads timed" else CPU_POWER["socket_w"]
                out.append(({"CPU baseline": base, "CPU power charged": power, "sort energy": se, "MemN2N width d": wl},
                            w * t.median_s(mode) / (e_pj * 1e-12)))
    return out


def power_for(timing, mode: str) -> tuple[float, list]:
    """(default watts, swept watts) charged to ``mode``'s timing: per-core power x the threads that ran it."""
    c = timing.cores(mode)
    return CPU_POWER["per_core_w"] * c, [p * c for p in CPU_POWER["per_core_sweep"]]


#: Deviations that do not depend on results.
CYCLE_MODEL = Deviation("timing", "the paper's 40 nm design (RTL, synthesis) [secondary]",
                        "a cycle model of four modules with labelled assumptions", "secondary: critique",
                        "unknown: the swept assumptions span the assumption range")
SEARCH = Deviation("candidate rule", "greedy search details [unconfirmed]", "pointers stop at a sign change; candidate = partial score > 0",
                   "unconfirmed", "unknown: other stopping rules change the iterations needed")
SPEED_READING = Deviation("paper's speed for each setting", "2.6-7.0x throughput for the two settings together [secondary: critique]",
                          "conservative read as the low end (2.6x), aggressive as the high end (7.0x)",
                          "secondary: critique", "unknown: another split of the range moves the matched M")
LEAK = Deviation("A3 energy", "measured/synthesised chip energy incl. leakage [secondary]",
                 "dynamic energy from the shared 45 nm table scaled to 40 nm, no leakage", "secondary: critique",
                 "raises: leakage would add A3 energy (swept in section 6)")
CPU_POWER_DEV = Deviation("CPU power", "not stated [unconfirmed]",
                          f"{CPU_POWER['per_core_w']:g} W per core x the threads timed (swept {min(CPU_POWER['per_core_sweep']):g}-"
                          f"{max(CPU_POWER['per_core_sweep']):g} W per core); the whole socket ({CPU_POWER['socket_w']:g} W) as a scenario",
                          "unconfirmed", "mixed: the ratio scales linearly with the charged power")


def loss_at_speed_range(counts: dict, loss: dict, settings, setting: str, *, d: int, hw: A3Hardware | None = None,
                        sweep: dict | None = None) -> dict:
    """{lo, hi, swept, unreachable}: the accuracy loss at the paper's speed re-derived under every combination
    of the labelled cycle-model assumptions (``sweep``, default `experiments.HW_SWEEP`; the defaults
    included): each combination moves the throughput curve and with it the matched-speed M. Combinations
    under which no M reaches the paper's speed are counted in ``unreachable`` (and left out of lo/hi; lo/hi
    are None when none reaches it). ``counts`` / ``loss``: {(setting, m): per-query counts / loss points}."""
    import itertools

    from .experiments import HW_SWEEP

    hw = hw or A3Hardware()
    sweep = dict(HW_SWEEP if sweep is None else sweep)
    settings = sorted(settings)
    vals, missing = [], 0
    for combo in itertools.product(*sweep.values()):
        h = replace(hw, **dict(zip(sweep, combo)))
        tp = [_speeds(counts[(setting, m)], d=d, hw=h)[0] for m in settings]
        m_s = matched_speed_setting(settings, tp, PAPER["speed_target"][setting])
        if m_s is None:
            missing += 1
        else:
            vals.append(loss[(setting, m_s)])
    return dict(lo=min(vals) if vals else None, hi=max(vals) if vals else None,
                swept={k: list(v) for k, v in sweep.items()}, unreachable=missing)
