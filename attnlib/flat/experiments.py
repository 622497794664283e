"""Experiment helpers: the evaluation grid, speedups and savings, the buffer sweep, end to end, the
assumption sweep, and the FuseMax cross-check.

`run` evaluates every (platform, buffer, model, sequence length) point under the requested conventions
and the three dataflows and returns one long table (pandas), with each mapping's raw counts, so energies
can be recomputed for other energy constants (`with_energy`) without searching again. `sweep` runs the
labelled assumptions one at a time (DRAM and SRAM energy, 1D-array width, compute/memory overlap);
`claim_range` turns a claim's value under every variant into the assumption range of attnlib.claims.
"""
from __future__ import annotations

import time

import numpy as np
import pandas as pd

from ..workloads import FLAT_EVAL_MODELS, workload
from .conventions import FLAT_BATCH, AttentionShape, Hardware, energy_j, platform
from .crosscheck import read as _read_crosscheck, tool_scales
from .dataflows import COUNT_KEYS, DATAFLOWS, other_layers, search

#: Table 4's buffer sizes [paper, v7 Table 4]: 20 KB, 200 KB, 20 MB, 2 GB (binary units here).
TABLE4_BUFFERS = (20 * 1024, 200 * 1024, 20 * 1024 ** 2, 2 * 1024 ** 3)
#: The abstract's scarce on-chip memory: 20-200 KB [paper].
SCARCE_BUFFERS = (20 * 1024, 50 * 1024, 100 * 1024, 200 * 1024)
#: Sequence lengths of §7's L+A share [paper, v7 §7] and the paper's shares (%).
SHARE_SEQS = (512, 4096, 16384, 65536)
PAPER_SHARE = {512: 12, 4096: 49, 16384: 79, 65536: 94}

#: The labelled assumptions and the values each sweep takes (the first is the default). The DRAM, SRAM and
#: MAC energy scales multiply attnlib's energy table (Horowitz ISSCC'14 SRAM and DDR points, O'Connor MICRO'17
#: HBM2; attnlib.hw.energy) by x0.5 and x2, and by the ratio of the field's own tools' value to it where
#: that falls outside x0.5-x2: CACTI 7 (hwcomponents-cacti) for the buffers, hwcomponents' DRAM table
#: (LPDDR4 / DDR3 / HBM2) and its 16-bit MAC, from the cross-check attnlib/flat/accelforge_check.csv (`crosscheck.tool_scales`;
#: e.g. CACTI's single-bank 32 MiB SRAM, where attnlib charges a 1 MiB bank). One scale applies to both
#: platforms, so the range covers each platform's tool value.
_TOOLS = _read_crosscheck()
#: Energy-scale assumptions -> (the cross-check quantity whose tool values extend the sweep, the
#: `with_energy` argument it scales).
ENERGY_SCALES = {"DRAM energy scale": ("DRAM energy", "dram_scale"),
                 "SRAM energy scale": ("SRAM energy", "sram_scale"),
                 "MAC energy scale": ("MAC energy per op", "mac_scale")}
ASSUMPTIONS = {
    **{name: (1.0, 0.5, 2.0) + tool_scales(quantity, df=_TOOLS) for name, (quantity, _) in ENERGY_SCALES.items()},
    "1D-array width scale": (1.0, 0.25, 4.0),
    "overlap": (1.0, 0.5, 0.0),
}

_HW_COLS = ("dram_pj_bit", "sram_pj_bit", "mac_pj", "exp_pj", "simple_pj")


def _hardware(name: str, buffer_bytes, lanes_scale: float, cache: dict) -> Hardware:
    key = (name, buffer_bytes, lanes_scale)
    if key not in cache:
        cache[key] = Hardware.of(platform(name, buffer_bytes=buffer_bytes, lanes_scale=lanes_scale))
    return cache[key]


def run(points, *, batch: int = FLAT_BATCH, convs=("flat", "full"), dataflows=DATAFLOWS, overlap: float = 1.0,
        lanes_scale: float = 1.0, e2e: bool = False, map_space: str = "full", residency: str = "layer") -> pd.DataFrame:
    """Evaluate ``points`` (iterable of (platform, buffer_bytes or None, model, seq)) under ``convs`` and
    ``dataflows``; one row per (point, convention, dataflow). ``map_space`` is FLAT-Opt's
    (`dataflows.MAP_SPACES`), ``residency`` FLEX-Opt's logit residency (`dataflows.RESIDENCIES`); both are
    recorded as columns, with the batch. With ``e2e`` the other GEMMs of the layer
    (`dataflows.other_layers`) are added: columns other_s and e2e_s."""
    rows, cache, other = [], {}, {}
    for plat, buf, model, seq in points:
        hw = _hardware(plat, buf, lanes_scale, cache)
        shape = AttentionShape.from_model(model, seq, batch)
        for conv in convs:
            for df in dataflows:
                m = search(df, shape, hw, conv=conv, overlap=overlap, map_space=map_space, residency=residency)
                t = m.tile
                r = dict(platform=plat, buffer_bytes=float(hw.capacity * hw.elem_bytes), model=model, seq=seq,
                         convention=conv, dataflow=df, batch=batch, map_space=map_space, residency=residency, latency_s=m.latency_s, compute_s=m.compute_s,
                         memory_s=m.memory_s, bound=m.bound, energy_j=m.energy_j,
                         granularity=t["granularity"], rows=t.get("rows", seq), heads_per_tile=t.get("heads_per_tile", 0),
                         kv_resident=t.get("kv_resident", False), logits=t["logits"], spilled=t["spilled"],
                         qk_stat=t["qk_stat"], av_stat=t["av_stat"], **m.counts,
                         **{c: getattr(hw, c) for c in _HW_COLS})
                if e2e:
                    kind = "naive" if df == "naive" else "flex"
                    key = (plat, buf, model, seq, kind)
                    if key not in other:
                        other[key] = other_layers(workload(model), batch, seq, hw, dataflow=kind, overlap=overlap)["latency_s"]
                    r["other_s"] = other[key]
                    r["e2e_s"] = other[key] + m.latency_s
                rows.append(r)
    return pd.DataFrame(rows)


def grid_points(platforms=("edge", "cloud"), models=FLAT_EVAL_MODELS, seqs=None, buffers=(None,)):
    """Every (platform, buffer, model, seq) of the given lists."""
    from .conventions import FLAT_SEQS

    seqs = FLAT_SEQS if seqs is None else seqs
    return [(p, b, m, n) for p in platforms for b in buffers for m in models for n in seqs]


def with_energy(df: pd.DataFrame, *, dram_scale: float = 1.0, sram_scale: float = 1.0,
                mac_scale: float = 1.0) -> pd.DataFrame:
    """``df`` with energy_j recomputed from the stored counts for scaled DRAM / SRAM / MAC energies (same
    mappings)."""
    out = df.copy()
    for conv, idx in out.groupby("convention").groups.items():
        sub = out.loc[idx]
        counts = {k: sub[k].to_numpy() for k in COUNT_KEYS}
        hw = Hardware("", 1, 1.0, 2.0, 1.0, 1.0, 1, sub.dram_pj_bit.to_numpy() * dram_scale,
                      sub.sram_pj_bit.to_numpy() * sram_scale, sub.mac_pj.to_numpy() * mac_scale, sub.exp_pj.to_numpy(),
                      sub.simple_pj.to_numpy())
        out.loc[idx, "energy_j"] = energy_j(counts, hw, conv)
    return out


def compare(df: pd.DataFrame, baseline: str = "flex") -> pd.DataFrame:
    """FLAT-Opt against ``baseline`` per point and convention: speedup (attention L+A), energy ratio and
    saving (%), end-to-end speedup and the baseline's L+A share when the table has e2e columns."""
    keys = ["platform", "buffer_bytes", "model", "seq", "convention"]
    f = df[df.dataflow == "flat"].set_index(keys)
    b = df[df.dataflow == baseline].set_index(keys)
    out = pd.DataFrame(index=f.index)
    out["speedup"] = b.latency_s / f.latency_s
    out["energy_ratio"] = f.energy_j / b.energy_j
    out["energy_saving"] = 100 * (1 - out.energy_ratio)
    out["traffic_ratio"] = b.dram_bytes / f.dram_bytes
    for c in ("granularity", "rows", "spilled", "bound"):
        out[f"flat_{c}"] = f[c]
    out["base_bound"] = b.bound
    if "e2e_s" in df:
        out["e2e_speedup"] = b.e2e_s / f.e2e_s
        out["base_share"] = 100 * b.latency_s / b.e2e_s
        out["flat_share"] = 100 * f.latency_s / f.e2e_s
    return out.reset_index()


def geomean(x) -> float:
    x = np.asarray(list(x), float)
    if x.size == 0 or np.any(~np.isfinite(x)) or np.any(x <= 0):
        raise ValueError("geomean needs finite positive values")
    return float(np.exp(np.mean(np.log(x))))


def summary(cmp: pd.DataFrame, *, platform: str, convention: str, seqs=None, buffer_bytes=None) -> dict:
    """Geometric-mean speedup and the saving of the geometric-mean energy ratio over the rows selected."""
    sel = (cmp.platform == platform) & (cmp.convention == convention)
    if seqs is not None:
        sel &= cmp.seq.isin(list(seqs))
    if buffer_bytes is not None:
        sel &= np.isclose(cmp.buffer_bytes, buffer_bytes)
    sub = cmp[sel]
    if sub.empty:
        raise ValueError(f"no grid points for platform={platform}, convention={convention}, seqs={seqs}")
    out = dict(speedup=geomean(sub.speedup), energy_saving=100 * (1 - geomean(sub.energy_ratio)), n=len(sub))
    if "e2e_speedup" in sub:
        out["e2e_speedup"] = geomean(sub.e2e_speedup)
        out["base_share"] = float(sub.base_share.mean())
    return out


# ----------------------------------------------------------------------------- assumption sweep
def sweep(points, *, batch: int = FLAT_BATCH, e2e: bool = False, assumptions=None, map_space: str = "full",
          residency: str = "layer") -> dict:
    """The grid of ``points`` under the default assumptions and with each labelled assumption of
    `ASSUMPTIONS` changed one at a time: {(assumption, value): table}; the default is (None, None).
    Energy scales reuse the default mappings (energies recomputed from the counts); the 1D-array width
    only changes the full accounting (FLAT's convention gives the softmax unlimited 1D compute).
    ``map_space`` and ``residency`` as in `run` (the scenario the assumptions are swept at)."""
    assumptions = ASSUMPTIONS if assumptions is None else assumptions
    sc = dict(map_space=map_space, residency=residency)
    base = run(points, batch=batch, e2e=e2e, **sc)
    out = {(None, None): base}
    for name, values in assumptions.items():
        for v in values[1:]:
            if name in ENERGY_SCALES:
                out[(name, v)] = with_energy(base, **{ENERGY_SCALES[name][1]: v})
            elif name == "overlap":
                out[(name, v)] = run(points, batch=batch, e2e=e2e, overlap=v, **sc)
            elif name == "1D-array width scale":
                full = run(points, batch=batch, e2e=e2e, convs=("full",), lanes_scale=v, **sc)
                out[(name, v)] = pd.concat([base[base.convention == "flat"], full], ignore_index=True)
            else:
                raise ValueError(f"unknown assumption {name!r}; known: {', '.join(ASSUMPTIONS)}")
    return out


def claim_range(tables: dict, value_of) -> dict:
    """The assumption range of a claim: ``value_of(table)`` under every variant of `sweep` ->
    {"lo", "hi", "swept"} (the default included)."""
    vals = [value_of(t) for t in tables.values()]
    swept = {}
    for name, v in tables:
        if name is not None:
            swept.setdefault(name, [ASSUMPTIONS[name][0]]).append(v)
    return dict(lo=float(np.min(vals)), hi=float(np.max(vals)), swept=swept)


def timed(fn, *a, **kw):
    """(result, seconds) of fn(*a, **kw)."""
    t0 = time.perf_counter()
    r = fn(*a, **kw)
    return r, time.perf_counter() - t0


# ----------------------------------------------------------------------------- FuseMax cross-check
#: The FuseMax replica's stationarity labels (Timeloop permutations in src/accel/flat.py of
#: FPSG-UIUC/micro24-fusemax-artifact) translated into the spatial dimensions used here: QK "output"
#: puts (rows, keys) on the array, "weight" (d, rows), "input" (d, keys); AV "output" (d, keys),
#: "weight" (d, rows), "input" (rows, keys).
FUSEMAX_QK_STAT = {"output": "output", "weight": "input", "input": "weight"}
FUSEMAX_AV_STAT = {"output": "weight", "weight": "output", "input": "input"}
FUSEMAX_MODELS = {"BERT": "bert-base", "TrXL": "trxl", "T5": "t5", "XLM": "xlm"}


def at_fusemax_mapping(platform_name: str, model: str, seq: int, *, granularity: str, rows: int, k_onchip: bool,
                       logits_onchip: bool, qk_stationarity: str, av_stationarity: str, batch: int = FLAT_BATCH):
    """Our FLAT model (FLAT's convention, full overlap: the replica's max(memory, 2D compute) with a free
    softmax) evaluated at the mapping the FuseMax replica chose (its labels, as in flat_validation.csv)."""
    from .dataflows import flat_cost

    shape = AttentionShape.from_model(FUSEMAX_MODELS.get(model, model), seq, batch)
    gran = {"head": "H", "row": "R"}[granularity]
    return flat_cost(shape, platform(platform_name), granularity=gran, rows=rows if gran == "R" else None,
                     kv_resident=k_onchip, logits_on_chip=logits_onchip,
                     qk_stat=FUSEMAX_QK_STAT[qk_stationarity], av_stat=FUSEMAX_AV_STAT[av_stationarity],
                     conv="flat", overlap=1.0)


#: Rows of the FuseMax replica of FLAT (FPSG-UIUC/micro24-fusemax-artifact, commit f543beb,
#: workspace/outputs/pregenerated/results/flat_validation.csv, MIT licence), typed in, not copied:
#: (platform, model, N) -> (granularity, P1 rows, K on chip, logits (QK) on chip, QK / AV stationarity,
#: mem_traffic bytes, actual_latency s). The replica's convention is FLAT's (softmax left out, latency =
#: max(DRAM traffic / bandwidth, the products' compute), "energy" = traffic x 32).
FUSEMAX_REPLICA_ROWS = {
    ("cloud", "BERT", 512): ("head", 256, False, True, "output", "output", 352485376.00000006, 0.00105107083142869),
    ("cloud", "BERT", 4096): ("head", 256, False, True, "output", "output", 20179643177.67442, 0.06693566657610954),
    ("cloud", "BERT", 8192): ("row", 1024, False, True, "output", "output", 78114881536.00002, 0.2677611304058968),
    ("cloud", "BERT", 65536): ("row", 256, False, True, "output", "output", 5069360018836.838, 17.135433292409825),
    ("cloud", "TrXL", 32768): ("row", 512, False, True, "output", "output", 1691917629582.8838, 5.711811377214407),
    ("cloud", "T5", 2048): ("head", 256, False, True, "output", "output", 3355607040.0000005, 0.01115871338462018),
    ("cloud", "XLM", 512): ("head", 256, True, True, "output", "output", 671547392.0, 0.0016808638599152262),
    ("cloud", "XLM", 16384): ("row", 1024, False, True, "output", "output", 594926982817.5817, 1.7135236036818484),
    ("cloud", "XLM", 65536): ("row", 256, False, True, "output", "output", 9169028598484.676, 27.416358738011137),
    ("edge", "BERT", 512): ("head", 32, True, False, "output", "output", 1409490944.0, 0.026780870016414562),
    ("edge", "BERT", 2048): ("row", 128, False, True, "weight", "weight", 14467195629.971828, 0.42845971643274183),
    ("edge", "T5", 4096): ("row", 64, False, True, "weight", "weight", 47023596242.82353, 1.142557794235684),
    ("edge", "XLM", 1024): ("row", 128, False, True, "weight", "weight", 13153359872.0, 0.2856397728081886),
    ("edge", "BERT", 8192): ("row", 128, False, False, "weight", "weight", 413927520256.0, 7.710419192273988),
    ("edge", "TrXL", 65536): ("row", 128, False, False, "weight", "weight", 35201552005120.0, 655.6844629029123),
    ("edge", "XLM", 4096): ("row", 128, False, False, "weight", "weight", 242665715712.0, 4.569394203832748),
}


def fusemax_crosscheck(rows: dict = None) -> pd.DataFrame:
    """Our model at each replica mapping (FLAT's convention) next to the replica's latency, and our own
    FLAT-Opt search's latency on the same point; ``same_regime``: the replica keeps the logits on chip or
    works at head granularity (both models compute-bound there)."""
    from .dataflows import search as _search

    rows = FUSEMAX_REPLICA_ROWS if rows is None else rows
    out = []
    for (p, m, n), (gran, p1, k_on, l_on, qs, avs, traffic, lat) in rows.items():
        ours = at_fusemax_mapping(p, m, n, granularity=gran, rows=p1, k_onchip=k_on, logits_onchip=l_on,
                                  qk_stationarity=qs, av_stationarity=avs)
        best = _search("flat", AttentionShape.from_model(FUSEMAX_MODELS[m], n), platform(p), conv="flat")
        out.append(dict(platform=p, model=m, seq=n, replica_tile=f"{gran} P1={p1}",
                        replica_logits="on chip" if l_on else "off chip", replica_stat=f"{qs}/{avs}",
                        replica_latency_s=lat, ours_at_mapping_s=ours.latency_s, ratio=ours.latency_s / lat,
                        same_regime=bool(l_on or gran == "head"), ours_bound=ours.bound,
                        search_latency_s=best.latency_s, search_tile=f"{best.tile['granularity']} R={best.tile['rows']}",
                        search_gain=lat / best.latency_s))
    return pd.DataFrame(out)


# ----------------------------------------------------------------------------- the replica's whole table
#: The replica's rows at N = 512..64K (attnlib/flat/fusemax_flat_validation.csv, written from the shared
#: reference by scripts/flat_replica_table.py; FPSG-UIUC/micro24-fusemax-artifact, commit f543beb, MIT).
REPLICA_CSV = __import__("pathlib").Path(__file__).with_name("fusemax_flat_validation.csv")
#: Our workload names -> the replica's (FlauBERT has TrXL's shape: FuseMax §VI-A).
REPLICA_NAMES = {"bert-base": "BERT", "trxl": "TrXL", "flaubert": "TrXL", "t5": "T5", "xlm": "XLM"}


def replica_table() -> pd.DataFrame:
    """The replica's rows (platform, model in its names, seq, mapping, mem_traffic bytes, actual_latency s)."""
    return pd.read_csv(REPLICA_CSV, comment="#")


def with_replica_traffic(df: pd.DataFrame, ref: pd.DataFrame | None = None) -> pd.DataFrame:
    """``df`` (FLAT's convention rows of `run`) with FLAT-Opt's DRAM bytes and energy replaced by the
    replica's recorded traffic at the same (platform, model, N) -- the "FuseMax replica" option of the
    traffic-count axis (its energy = traffic x the DRAM energy per bit, FLAT's convention). Raises if a
    FLAT-Opt row has no replica row (the replica covers the default buffers, batch 64, N 512..64K)."""
    ref = replica_table() if ref is None else ref
    key = ref.set_index(["platform", "model", "seq"]).mem_traffic
    out = df.copy()
    sel = (out.dataflow == "flat") & (out.convention == "flat")
    if "batch" in out and (out[sel].batch != FLAT_BATCH).any():
        raise ValueError(f"the replica's traffic is recorded at batch {FLAT_BATCH} only")
    if "buffer_bytes" in out and out[sel].buffer_bytes.nunique() > 2:
        raise ValueError("the replica's traffic is recorded at the platforms' own buffers only")
    sub = out[sel]
    idx = list(zip(sub.platform, sub.model.map(lambda m: REPLICA_NAMES.get(m, m)), sub.seq.astype(int)))
    missing = [k for k in idx if k not in key.index]
    if missing:
        raise ValueError(f"no replica row for {missing[0]}; it covers {sorted(set(key.index.get_level_values(0)))} x "
                         f"{sorted(set(key.index.get_level_values(1)))} x N 512..64K")
    out.loc[sel, "dram_bytes"] = key.loc[idx].to_numpy(float)
    out.loc[sel, "energy_j"] = out.loc[sel, "dram_bytes"] * 8 * out.loc[sel, "dram_pj_bit"] * 1e-12
    return out


def scenario_tables(points, *, map_spaces=("replica", "full"), residencies=("layer", "head", "off chip"),
                    batches=(FLAT_BATCH,), e2e: bool = True, convs=("flat",)) -> dict:
    """`run` at every (map space, FLEX-Opt residency, batch): {(map_space, residency, batch): table}, for
    the scenario axes of the claims (FLAT's convention unless ``convs`` says otherwise)."""
    return {(ms, res, b): run(points, batch=b, e2e=e2e, convs=convs, map_space=ms, residency=res)
            for ms in map_spaces for res in residencies for b in batches}


def speedup_vs_n(df: pd.DataFrame, *, platform: str, convention: str = "flat", baseline: str = "flex",
                 scope: str = "L+A") -> pd.Series:
    """Geometric mean over models of FLAT-Opt's speedup over ``baseline`` at each N (scope "L+A" or
    "end to end")."""
    c = compare(df, baseline)
    c = c[(c.platform == platform) & (c.convention == convention)]
    if c.empty:
        raise ValueError(f"no rows for platform={platform}, convention={convention}")
    col = {"L+A": "speedup", "end to end": "e2e_speedup"}[scope]
    return c.groupby("seq")[col].apply(geomean)
