"""FLAT's claims as the paper states them, each computed over the scenario axes that can decide it.

`evaluate(models, seqs, ...)` runs everything the claims need once (`Evaluation`): for each table
("grid": platform x model x N at the default buffers; "table4": the N = 512 buffer sweep on both platforms;
"scarce": edge with 20-200 KB) the assumption sweep at the headline scenario and at the full search, and
`run` at every (FLAT-Opt map space, FLEX-Opt logit residency, batch) of the scenario grid. The model is
analytical: a whole grid takes about a second, so every scenario is computed, none is skipped.

`claim_records(ev, specs(...), hw)` returns, for every claim, the keyword arguments of
`attnlib.claims.Recorder.claim`: the headline row (FLAT's convention, at the evaluated FLAT's map space,
against the baseline the claim names) with its direction, axes, scenario values, headline rule and
variation, and alternative rows (the full accounting at the headline scenario; the full search, "what a
better mapper would give"; the abstract's speedups also against Naive; the L+A share also for FLEX-Opt).
Values are modelled, so the interval is `stats.no_interval`; the assumption range is the span over the
sweep (DRAM / SRAM energy, 1D-array width, overlap) at the row's own scenario.

The axes (`AXES`), with the option the paper describes:

- **FLAT-Opt map space**: the evaluated FLAT, as the FuseMax replica maps it (its two stationarity pairs,
  d_head on one side of the array) [secondary] vs the full search of this model (rows x keys on the array).
- **FLEX-Opt logit residency**: the whole layer's logits must fit (intra-operator FLEX-Opt; what v7 Table
  4's 1.02x at 2 GB needs) vs one head's (an inter-operator schedule) vs never on chip.
- **batch**: 64 [paper, v1 §6.1] vs 1 (whether a layer's logits fit scales with it).
- **platform** of Table 4 and of the 20-200 KB claim: not on the card (unknown).
- **scope** of a speedup: L+A or end to end (one layer's GEMMs added), where the card does not say.
- **FLAT-Opt traffic count** (energy): this model's or the replica's recorded traffic at the same
  mappings; which one FLAT's own cost model is closer to is not known.
- **dataflow / platform of the §7 share**: not on the card.
"""
from __future__ import annotations

import hashlib
import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from .. import stats
from ..cache import cached
from ..claims import Axis, Deviation
from .conventions import FLAT_BATCH
from .experiments import (PAPER_SHARE, REPLICA_NAMES, SCARCE_BUFFERS, TABLE4_BUFFERS, claim_range, compare, geomean,
                          grid_points, scenario_tables, summary, sweep, with_replica_traffic)

CARD = "docs/papers/flat.md"
UNKNOWN = "unknown"

#: Short axis keys -> the axes the claims declare.
AXES = {
    "map space": Axis(
        "FLAT-Opt map space", ("evaluated FLAT", "full search"), "evaluated FLAT",
        "secondary: FuseMax replica of FLAT (FPSG-UIUC/micro24-fusemax-artifact, flat_validation.csv mappings, "
        "src/accel/flat.py)",
        "the full search also puts A.V's rows x keys on the 256-wide cloud array (full utilisation); the evaluated "
        "FLAT keeps d_head = 64 on one side, so the cloud FLAT-Opt is compute-bound at about 40% utilisation"),
    "residency": Axis(
        "FLEX-Opt logit residency", ("layer", "head", "off chip"), "layer",
        "unconfirmed: v7 Table 3 (FLEX-Opt is intra-operator: one operator is the layer's whole product); v7 "
        "Table 4's 1.02x at 2 GB needs the logits on chip where the layer's tensor fits",
        "whether FLEX-Opt pays two DRAM passes over the logits decides how memory-bound it is"),
    "batch": Axis(
        "batch", ("64", "1"), "64", "paper: v1 §6.1 (batch 64 throughout)",
        "whether a layer's logits fit a buffer scales with the batch"),
    "platform": Axis(
        "platform", ("edge", "cloud"), UNKNOWN, UNKNOWN,
        "on spilled logits edge FLEX-Opt is compute-bound (the 32x32 array's ridge point lies below the logits' "
        "MACs per byte), cloud's memory-bound (the 256x256 array's lies far above)"),
    "scope": Axis(
        "scope", ("L+A", "end to end"), UNKNOWN, UNKNOWN,
        "end to end adds one layer's other GEMMs (identical for both), diluting the gain where L+A is a small "
        "share (12% at N = 512)"),
    "count": Axis(
        "FLAT-Opt traffic count", ("this model", "FuseMax replica"), UNKNOWN, UNKNOWN,
        "the replica's Timeloop traffic at its mappings is several times this model's on cloud (K/V refills per "
        "tile; notebook section 4.8), which moves the energy saving in FLAT's convention (energy = DRAM traffic)"),
    "share dataflow": Axis(
        "dataflow of the share", ("FLAT-Opt", "FLEX-Opt"), UNKNOWN, UNKNOWN,
        "the L+A share is smaller under FLAT-Opt, whose L+A is faster"),
}
#: Option labels -> the arguments of `experiments.run`.
MAP_SPACE_OF = {"evaluated FLAT": "replica", "full search": "full"}
#: The rules that pick the headline option of an axis whose paper option is unknown (or shared).
HEADLINE_RULES = {
    "map space": "FLAT-Opt at the evaluated FLAT's map space, the one an independent model of FLAT (the FuseMax "
                 "replica, whose cloud latencies this model reproduces within 1% at its mappings) uses",
    "residency": "FLEX-Opt keeps the logits on chip only where the layer's whole tensor fits (intra-operator, v7 "
                 "Table 3)",
    "batch": "batch 64 (v1 §6.1)",
    "platform": "Table 4's platform is not on the card: the headline takes cloud (the platform whose 32 MiB buffer "
                "Table 4's 20 MB row resembles), the status is judged over both",
    "platform scarce": "the 20-200 KB claim's platform is not on the card: the headline takes edge (the small "
                       "platform), the status is judged over both",
    "scope": "scope not on the card: the headline takes L+A (the fused layers), the status is judged over both",
    "count": "traffic count not known: the headline takes this model's count, the replica's is judged beside it",
    "share dataflow": "dataflow of the share not on the card: the headline takes FLAT-Opt, judged over both",
    "share platform": "platform of the share not on the card: the headline takes cloud, judged over both",
}
VARIATION = dict(unit="none: a modelled number from fixed inputs (analytical model, no sampling)", covers=[],
                 not_covered=["FLEX-Opt's map space beyond powers-of-two tiles x 3 stationarities",
                              "the cost model itself (closed-form tiles, not MAESTRO/Timeloop); checked against the "
                              "FuseMax replica's latencies only",
                              "energy tables (swept as assumptions, not resampled)"])


@dataclass
class Evaluation:
    """Everything the claims need: ``sweeps[map_space][table]`` (the dict `experiments.sweep` returns, at
    FLEX-Opt residency "layer", batch 64) and ``scenarios[table][(map_space, residency, batch)]`` (`run`
    tables, FLAT's convention), map spaces as `experiments.run` names them ("replica", "full")."""

    sweeps: dict
    scenarios: dict
    models: tuple
    seqs: tuple
    t4_buffers: tuple
    scarce_buffers: tuple
    replica_traffic: dict = field(default_factory=dict)   # memo of `with_replica_traffic` per scenario table


def _code_version() -> str:
    """Hash of the sources the tables depend on (this subpackage, the hardware presets, the workloads)."""
    root = Path(__file__).resolve().parents[1]
    files = sorted(root.joinpath("flat").glob("*.py")) + sorted(root.joinpath("hw").glob("*.py")) + [
        root / "workloads.py", root / "flat" / "fusemax_flat_validation.csv",
        root / "flat" / "accelforge_check.csv"]            # the energy sweep's tool ends (crosscheck.tool_scales)
    h = hashlib.sha256()
    for f in files:
        h.update(f.name.encode() + f.read_bytes())
    return h.hexdigest()[:16]


def _df_to(d: pd.DataFrame) -> dict:
    out = {}
    for c in d.columns:
        v = d[c].to_numpy()
        if v.dtype == object:
            v = np.asarray(v.tolist())
            if v.dtype == object:
                raise TypeError(f"column {c!r} mixes types; cannot cache it")
        out[c] = v
    return out


def _df_from(d: dict) -> pd.DataFrame:
    return pd.DataFrame({c: (v.astype(str) if v.dtype.kind == "U" else v) for c, v in d.items()})


def evaluate(models, seqs, *, t4_buffers=TABLE4_BUFFERS, scarce_buffers=SCARCE_BUFFERS, batch: int = FLAT_BATCH,
             batches=(FLAT_BATCH, 1), use_cache: bool = True) -> Evaluation:
    """Run the sweeps and the scenario grid of every claim (see the module docstring); cached under
    .cache/flat by the inputs and a hash of the model's sources (a cold full grid takes about a minute)."""
    args = dict(models=list(models), seqs=[int(n) for n in seqs], t4_buffers=[int(b) for b in t4_buffers],
                scarce_buffers=[int(b) for b in scarce_buffers], batch=int(batch), batches=[int(b) for b in batches])

    def compute():
        ev = _evaluate(**args)
        enc = lambda d: [[list(map(str, k)) if isinstance(k, tuple) else str(k), _df_to(v)] for k, v in d.items()]  # noqa: E731
        return dict(sweeps={ms: {t: [[[str(a), str(v)] for (a, v) in sw], [_df_to(x) for x in sw.values()]]
                                 for t, sw in tabs.items()} for ms, tabs in ev.sweeps.items()},
                    scenarios={t: enc(d) for t, d in ev.scenarios.items()})

    raw = cached("flat", "evaluation", dict(args, code=_code_version()), compute) if use_cache else compute()
    sweeps = {}
    for ms, tabs in raw["sweeps"].items():
        sweeps[ms] = {}
        for t, (keys, frames) in tabs.items():
            sweeps[ms][t] = {(None if a == "None" else a, None if v == "None" else float(v)): _df_from(f)
                             for (a, v), f in zip(keys, frames)}
    scen = {t: {(k[0], k[1], int(k[2])): _df_from(f) for k, f in d} for t, d in raw["scenarios"].items()}
    return Evaluation(sweeps, scen, tuple(models), tuple(seqs), tuple(t4_buffers), tuple(scarce_buffers))


def _evaluate(models, seqs, t4_buffers, scarce_buffers, batch, batches) -> Evaluation:
    pts = {"grid": grid_points(models=models, seqs=seqs),
           "table4": [(p, b, m, 512) for p in ("edge", "cloud") for b in t4_buffers for m in models],
           "scarce": grid_points(platforms=("edge", "cloud"), models=models, seqs=seqs, buffers=scarce_buffers)}
    sweeps = {ms: {t: sweep(p if t != "scarce" else [x for x in p if x[0] == "edge"], batch=batch, e2e=True,
                            map_space=ms) for t, p in pts.items()} for ms in ("replica", "full")}
    scen = {t: scenario_tables(p, batches=batches) for t, p in pts.items()}
    return Evaluation(sweeps, scen, tuple(models), tuple(seqs), tuple(t4_buffers), tuple(scarce_buffers))


@dataclass
class Spec:
    """One paper claim: how to compute it from a `run` table at a scenario, and which axes decide it.

    ``value(table, conv, **opts)`` gets the scenario's options of the axes in ``args`` (platform, scope,
    share dataflow) by their short keys; ``fixed`` gives the value of an argument the claim fixes."""

    claim_id: str
    description: str
    paper_value: object
    unit: str
    kind: str
    table: str
    value: Callable
    averaging: str
    source: str
    axes: tuple
    headline: dict
    direction: str = "about"
    extra_deviations: list = field(default_factory=list)
    alternatives: tuple = ()   # extra (suffix, description, value(table, **opts), averaging) alternative rows
    rules: tuple = ()          # keys of HEADLINE_RULES beyond the axes' own


_CMP: dict = {}


def _compare(t: pd.DataFrame, baseline: str) -> pd.DataFrame:
    """`experiments.compare`, memoised per table object (the claims compare the same tables many times)."""
    k = (id(t), baseline)
    if k not in _CMP or _CMP[k][0] is not t:
        if len(_CMP) > 4096:
            _CMP.clear()
        _CMP[k] = (t, compare(t, baseline))
    return _CMP[k][1]


def _sel_scope(s: dict, scope: str) -> float:
    return s["e2e_speedup" if scope == "end to end" else "speedup"]


def _speed(t, conv, platform, baseline="flex", seqs=None, buffer=None, scope="L+A"):
    s = summary(_compare(t, baseline), platform=platform, convention=conv, seqs=seqs, buffer_bytes=buffer)
    return _sel_scope(s, scope)


def _saving(t, conv, platform):
    return summary(_compare(t, "flex"), platform=platform, convention=conv)["energy_saving"]


def _share(t, conv, platform, seq, dataflow="FLAT-Opt"):
    c = _compare(t, "flex")
    sel = (c.platform == platform) & (c.convention == conv) & (c.seq == seq)
    if not sel.any():
        raise ValueError(f"no grid point at N = {seq} on {platform}")
    return float(c[sel]["flat_share" if dataflow == "FLAT-Opt" else "base_share"].mean())


def _buffers_geo(t, conv, platform, baseline, buffers, scope="L+A"):
    return geomean(_speed(t, conv, platform, baseline, buffer=b, scope=scope) for b in buffers)


def _kib(b) -> str:
    return f"{b / 1024:g} KiB" if b < 1024 ** 2 else (f"{b / 1024 ** 2:g} MiB" if b < 1024 ** 3 else f"{b / 1024 ** 3:g} GiB")


def specs(models, seqs, t4_buffers=None, scarce_buffers=None) -> list[Spec]:
    """The claim specifications for a grid of ``models`` x ``seqs`` (and the Table 4 / scarce-memory buffers)."""
    t4_buffers = TABLE4_BUFFERS if t4_buffers is None else t4_buffers
    scarce_buffers = SCARCE_BUFFERS if scarce_buffers is None else scarce_buffers
    grid_avg = (f"geometric mean over {len(models)} models x {len(seqs)} sequence lengths ({seqs[0]}..{seqs[-1]}); "
                "energy: saving of the geometric-mean energy ratio")
    long = max(seqs)
    b20k, b200k, b20m, b2g = t4_buffers
    t4_avg = f"geometric mean over {len(models)} models at N = 512 with the platform's buffer replaced"
    head = dict(map_space="evaluated FLAT", residency="layer", batch="64")
    sp_axes = ("map space", "residency", "batch", "scope")
    out = []
    for plat, sp, es, sp7, es7, sp64 in (("edge", 1.94, 49, 1.75, 44, 2.8), ("cloud", 1.76, 42, 1.65, 55, 3.07)):
        base_dev = [Deviation("baseline", "v1 (ATTACC): 'state-of-the-art accelerators with no customized dataflow "
                              "optimization', two baselines per platform, the abstract quotes the smaller gain",
                              "FLEX-Opt of v7 Table 3 (Naive as an alternative row)", "paper, v1 §6",
                              "unknown: v1's evaluation was later redone")]
        seq_dev = [Deviation("sequence lengths averaged", "geomean over 5 models; the lengths are not on the card",
                             f"{seqs[0]}..{seqs[-1]}", "paper, v7 §8.1", "unknown: gains change with N")]
        hs = dict(head, scope="L+A")
        out += [
            Spec(f"{plat}_speedup", f"abstract: {plat} speedup vs FLEX-Opt", sp, "x", "ratio", "grid",
                 lambda t, c, scope="L+A", p=plat: _speed(t, c, p, scope=scope), grid_avg, "paper (abstract)",
                 sp_axes, hs, extra_deviations=base_dev,
                 alternatives=(("vs_naive", f"abstract: {plat} speedup vs Naive (L+A), FLAT's convention",
                                lambda t, p=plat: _speed(t, "flat", p, "naive"), grid_avg),)),
            Spec(f"{plat}_energy_saving", f"abstract: {plat} energy saving vs FLEX-Opt", es, "%", "percent", "grid",
                 lambda t, c, p=plat: _saving(t, c, p), grid_avg, "paper (abstract)",
                 ("map space", "residency", "batch", "count"), dict(head, count="this model"), extra_deviations=base_dev),
            Spec(f"v7_{plat}_speedup", f"v7: {plat} speedup FLAT-Opt vs FLEX-Opt", sp7, "x", "ratio", "grid",
                 lambda t, c, scope="L+A", p=plat: _speed(t, c, p, scope=scope), grid_avg, "paper, v7 §8.1, Table 5",
                 sp_axes, hs, extra_deviations=seq_dev),
            Spec(f"v7_{plat}_energy_saving", f"v7: {plat} energy saving FLAT-Opt vs FLEX-Opt", es7, "%", "percent",
                 "grid", lambda t, c, p=plat: _saving(t, c, p), grid_avg, "paper, v7 §8.1, Table 5",
                 ("map space", "residency", "batch", "count"), dict(head, count="this model"), extra_deviations=seq_dev),
            Spec(f"{plat}_speedup_64k", f"v7: {plat} speedup vs FLEX-Opt at N = {long}", sp64, "x", "ratio", "grid",
                 lambda t, c, scope="L+A", p=plat: _speed(t, c, p, seqs=[long], scope=scope),
                 f"geometric mean over {len(models)} models at N = {long}", "paper, v7 §8.1, Fig. 14", sp_axes, hs),
        ]
    t4_dev = [Deviation("batch of Table 4", "not on the card (v1: batch 64 throughout)", "64 (1 swept as a scenario)",
                        "unconfirmed", "unknown: whether FLEX-Opt's logits fit a buffer depends on the batch")]
    t4_axes = ("map space", "residency", "batch", "platform")
    t4_head = dict(head, platform="cloud")
    out += [
        Spec("t4_200k_attention", f"Table 4: FLAT vs FLEX at N = 512, {_kib(b200k)} buffer, L+A only", 1.7, "x",
             "ratio", "table4", lambda t, c, platform="cloud": _speed(t, c, platform, buffer=b200k), t4_avg,
             "paper, v7 Table 4", t4_axes, t4_head, extra_deviations=t4_dev),
        Spec("t4_200k_e2e", f"Table 4: FLAT vs FLEX at N = 512, {_kib(b200k)} buffer, end to end", 1.1, "x", "ratio",
             "table4", lambda t, c, platform="cloud": _speed(t, c, platform, buffer=b200k, scope="end to end"), t4_avg,
             "paper, v7 Table 4", t4_axes, t4_head, extra_deviations=t4_dev),
    ]
    for b, lab in ((b20m, "20m"), (b2g, "2g")):
        out.append(Spec(f"t4_{lab}", f"Table 4: FLAT vs FLEX at N = 512, {_kib(b)} buffer", 1.02, "x", "ratio", "table4",
                        lambda t, c, platform="cloud", scope="L+A", b=b: _speed(t, c, platform, buffer=b, scope=scope),
                        t4_avg, "paper, v7 Table 4", t4_axes + ("scope",), dict(t4_head, scope="L+A"),
                        extra_deviations=t4_dev))
    for b, lab in zip(t4_buffers, ("20k", "200k", "20m", "2g")):
        out.append(Spec(f"t4_vs_naive_{lab}", f"Table 4: FLAT vs Naive at N = 512, {_kib(b)} buffer (one element of "
                        "'1.5x-3.3x depending on buffer size')", (1.5, 3.3), "x", "ratio", "table4",
                        lambda t, c, platform="cloud", scope="L+A", b=b: _speed(t, c, platform, "naive", buffer=b,
                                                                                scope=scope),
                        t4_avg, "paper, v7 Table 4", t4_axes + ("scope",), dict(t4_head, scope="L+A"),
                        direction="within", extra_deviations=t4_dev))
    out.append(Spec(
        "scarce_memory_speedup", "abstract: 20-200 KB buffer, end-to-end speedup vs FLEX-Opt", 1.5, "x", "ratio",
        "scarce", lambda t, c, platform="edge": _buffers_geo(t, c, platform, "flex", scarce_buffers, scope="end to end"),
        f"geometric mean over buffers {', '.join(f'{b / 1024:g}' for b in scarce_buffers)} KiB of the geometric "
        f"mean over {len(models)} models x {len(seqs)} lengths ({seqs[0]}..{seqs[-1]}); end to end = one layer",
        "paper (abstract)", ("map space", "residency", "batch", "platform"), dict(head, platform="edge"),
        extra_deviations=[Deviation("end-to-end scope", "the whole model", "one layer's GEMMs (Q/K/V/O, FFN) + L/A; "
                                    "element-wise layers ignored", "paper, v7 §8.1",
                                    "raises: element-wise time would dilute the gain")],
        rules=("platform scarce",)))
    for n, paper in PAPER_SHARE.items():
        if n not in seqs:
            continue
        out.append(Spec(
            f"share_{n}", f"§7: L+A share of end-to-end time at N = {n}", paper, "%", "percent", "grid",
            lambda t, c, platform="cloud", dataflow="FLAT-Opt", n=n: _share(t, c, platform, n, dataflow),
            f"arithmetic mean over {len(models)} models of one layer's L+A time / layer time", "paper, v7 §7",
            ("map space", "residency", "batch", "share dataflow", "platform"),
            dict(head, share_dataflow="FLAT-Opt", platform="cloud"),
            extra_deviations=[Deviation("end-to-end scope", "the whole model", "one layer's GEMMs + L/A; element-wise "
                                        "layers ignored", "paper, v7 §8.1", "raises: element-wise time is left out")],
            rules=("share dataflow", "share platform"),
            alternatives=(("flex", f"§7: L+A share at N = {n}, FLEX-Opt, cloud, FLAT's convention",
                           lambda t, n=n: _share(t, "flat", "cloud", n, "FLEX-Opt"),
                           f"arithmetic mean over {len(models)} models"),)))
    return out


def _span(name: str) -> str:
    """An energy assumption's swept span, e.g. "x0.5-x4.85"."""
    from .experiments import ASSUMPTIONS

    return f"x{min(ASSUMPTIONS[name]):g}-x{max(ASSUMPTIONS[name]):g}"


def _common_deviations(conv: str, hw: dict) -> list:
    devs = [
        Deviation("cost model", "analytical model after MAESTRO/Timeloop with Accelergy energies",
                  "closed-form tile model (attnlib.flat.dataflows), checked against the FuseMax replica at its mapping",
                  "paper, v7 §6.1", "unknown: map spaces and reuse accounting differ"),
        Deviation("FLEX-Opt map space", "exhaustive intra-operator search (tile sizes, W/I/O stationarity)",
                  "powers-of-two buffer tiles x 3 stationarities; logit residency a scenario axis",
                  "paper, v7 Table 3", "unknown: a larger map space could favour either side"),
        Deviation("platform buffers", "edge / cloud buffers not on the card",
                  "512 KiB / 32 MiB as in the FuseMax replica", "secondary: FuseMax artifact src/accel/flat.py",
                  "unknown"),
        Deviation("FlauBERT shape", "FlauBERT", "TrXL's shape (1024, 16 heads, d 64)", "secondary: FuseMax §VI-A",
                  "none: same shape"),
    ]
    if conv == "flat":
        devs.append(Deviation("cost convention", "FLAT's own code: softmax free, energy = DRAM traffic of the two products",
                              "the same convention", "secondary: FuseMax arXiv 2406.10491 §VI-A, footnote 6",
                              "none: same convention"))
    else:
        devs += [
            Deviation("cost convention", "FLAT's own code: softmax free, energy = DRAM traffic of the two products",
                      "full accounting: softmax passes on the 1D array, 4 passes over spilled logits, energy over "
                      "DRAM, SRAM, MAC and vector work", "secondary: FuseMax arXiv 2406.10491 §VI-A, footnote 6",
                      "mixed: the softmax costs both designs; FLAT overlaps it with the 2D array"),
            Deviation("1D array width", "sufficient FLOPs (FuseMax: 256 1D PEs on cloud)",
                      f"sqrt(PEs): {hw['lanes']} (ASSUMPTION, swept x0.25-x4)", "secondary: FuseMax §VI-A",
                      "mixed: a narrower array makes the softmax the bound"),
            Deviation("DRAM / SRAM / MAC energies", "Accelergy tables (values not on the card)",
                      f"{hw['energies']} (ASSUMPTION, DRAM swept {_span('DRAM energy scale')}, SRAM "
                      f"{_span('SRAM energy scale')}, MAC {_span('MAC energy scale')}: x0.5-x2 of the Horowitz / O'Connor "
                      f"table and the CACTI / "
                      f"hwcomponents values of attnlib/flat/accelforge_check.csv)", "unconfirmed",
                      "mixed: moves the DRAM share of the energy"),
        ]
    return devs


# ----------------------------------------------------------------------------- scenarios
_ARG = {"platform": "platform", "scope": "scope", "share dataflow": "dataflow"}


def scenario_values(ev: Evaluation, s: Spec) -> list[tuple[dict, float]]:
    """The claim's value at every scenario of its axes' grid: [({axis name: option}, value)]. The
    replica's traffic count exists only at the evaluated FLAT's map space and batch 64 (its mappings):
    the other combinations are not scenarios."""
    keys = list(s.axes)
    out = []
    for combo in itertools.product(*[AXES[k].options for k in keys]):
        o = dict(zip(keys, combo))
        ms = MAP_SPACE_OF[o.get("map space", "evaluated FLAT")]
        res, b = o.get("residency", "layer"), int(o.get("batch", FLAT_BATCH))
        if o.get("count") == "FuseMax replica" and (ms != "replica" or b != FLAT_BATCH):
            continue
        t = ev.scenarios[s.table][(ms, res, b)]
        if o.get("count") == "FuseMax replica":
            k = (s.table, ms, res, b)
            if k not in ev.replica_traffic:
                ev.replica_traffic[k] = with_replica_traffic(t)
            t = ev.replica_traffic[k]
        kw = {_ARG[k]: o[k] for k in keys if k in _ARG}
        out.append(({AXES[k].name: o[k] for k in keys}, float(s.value(t, "flat", **kw))))
    return out


def headline_scenario(s: Spec) -> dict:
    """The headline's options, by axis name (the spec's ``headline`` uses short keys, spaces as _)."""
    h = {k.replace("_", " "): v for k, v in s.headline.items()}
    return {AXES[k].name: h[k] for k in s.axes}


def headline_rule(s: Spec) -> str:
    keys = [k for k in s.axes if k not in ("platform", "share dataflow")] + list(s.rules)
    if "platform" in s.axes and not any(r.startswith("platform") or r == "share platform" for r in s.rules):
        keys.append("platform")
    return "; ".join(HEADLINE_RULES[k] for k in keys)


def _fixed_args(s: Spec) -> dict:
    h = {k.replace("_", " "): v for k, v in s.headline.items()}
    return {_ARG[k]: h[k] for k in s.axes if k in _ARG}


def claim_records(ev: Evaluation, spec_list: list[Spec], hw: dict) -> list[dict]:
    """Keyword arguments of `Recorder.claim` for every spec: the headline (FLAT's convention, over its
    scenario axes), the full accounting and the full search at the headline scenario, and the spec's own
    alternatives."""
    rule = ("the paper's platforms (FuseMax's replica of them), models and batch 64; each dataflow at its own "
            "optimum in its map space (lowest latency, ties by energy), compute/memory overlap 1")
    out = []
    for s in spec_list:
        fixed = _fixed_args(s)
        fn = lambda t, c, s=s, fixed=fixed: s.value(t, c, **fixed)  # noqa: E731
        for ms, conv, suffix in (("replica", "flat", ""), ("replica", "full", "_full"), ("full", "flat", "_full_search")):
            tables = ev.sweeps[ms][s.table]
            v = float(fn(tables[(None, None)], conv))
            kw = dict(claim_id=s.claim_id + suffix, paper_value=s.paper_value, reproduced=v, unit=s.unit, kind=s.kind,
                      basis="modelled", interval=stats.no_interval(v),
                      assumption_range=claim_range(tables, lambda t, c=conv: fn(t, c)),
                      deviations=_common_deviations(conv, hw) + list(s.extra_deviations),
                      operating_point=dict(how="paper setting", rule=rule), averaging=s.averaging,
                      params=dict(convention=conv, table=s.table, map_space=ms), note=f"paper: {s.source}; card: {CARD}",
                      direction=s.direction)
            if not suffix:
                scen = scenario_values(ev, s)
                hs = headline_scenario(s)
                kw.update(description=s.description, axes=[AXES[k] for k in s.axes], scenarios=scen,
                          headline_scenario=hs, headline_rule=headline_rule(s), variation=VARIATION)
                at = [val for o, val in scen if o == hs]
                if not at or not np.isclose(at[0], v, rtol=1e-9):
                    raise AssertionError(f"{s.claim_id}: the headline scenario's value {at} is not the sweep's {v}")
            elif suffix == "_full":
                kw.update(description=s.description + " [full accounting]", role="alternative", of=s.claim_id)
            else:
                kw.update(description=s.description + " [full search: what a better mapper would give]",
                          role="alternative", of=s.claim_id)
            out.append(kw)
        for suffix, desc, afn, avg in s.alternatives:
            tables = ev.sweeps["replica"][s.table]
            v = float(afn(tables[(None, None)]))
            out.append(dict(claim_id=f"{s.claim_id}_{suffix}", description=desc, paper_value=s.paper_value,
                            reproduced=v, unit=s.unit, kind=s.kind, basis="modelled", interval=stats.no_interval(v),
                            assumption_range=claim_range(tables, afn), deviations=_common_deviations("flat", hw)
                            + list(s.extra_deviations), operating_point=dict(how="paper setting", rule=rule),
                            averaging=avg, role="alternative", of=s.claim_id, direction=s.direction,
                            params=dict(convention="flat", table=s.table, map_space="replica"),
                            note=f"paper: {s.source}; card: {CARD}"))
    return out


def replica_names() -> dict:
    """Our workload names -> the FuseMax replica's."""
    return dict(REPLICA_NAMES)


# ----------------------------------------------------------------------------- trends
#: The paper's speedup-vs-N points [card: v7 Table 4 (N = 512, 20 MB / 2 GB buffers) and Fig. 14 (64K)].
PAPER_TREND = {"cloud": {512: 1.02, 65536: 3.07}, "edge": {512: 1.02, 65536: 2.8}}


def trend_rows(ev: Evaluation) -> pd.DataFrame:
    """FLAT-Opt over FLEX-Opt vs N (geometric mean over models, FLAT's convention, headline residency and
    batch) for each platform, map space and scope: the value at the shortest and longest N, whether it
    rises, and whether it reproduces the paper's trend -- rising from about 1x at N = 512 to the Fig. 14
    value at 64K: rises, and the longest-N value is reproduced by the band test against the paper's."""
    from ..claims import band
    from .experiments import speedup_vs_n

    rows = []
    for p, pts in PAPER_TREND.items():
        for label, ms in MAP_SPACE_OF.items():
            t = ev.sweeps[ms]["grid"][(None, None)]
            for scope in ("L+A", "end to end"):
                c = speedup_vs_n(t, platform=p, scope=scope)
                lo, hi = c.index.min(), c.index.max()
                long_paper = pts.get(int(hi))
                st = band("ratio", long_paper, float(c[hi]), "about")[0] if long_paper else "no paper point"
                rises = bool(c[hi] > c[lo] * 1.05)
                rows.append(dict(platform=p, map_space=label, scope=scope, first_n=int(lo), at_first=float(c[lo]),
                                 last_n=int(hi), at_last=float(c[hi]), rises=rises, paper_at_last=long_paper,
                                 status_at_last=st, reproduces_trend=rises and st == "reproduced"))
    return pd.DataFrame(rows)
