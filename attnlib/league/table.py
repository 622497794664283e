"""The league table, its figure and the generated paragraph per workload.

`league_rows(runs, workloads, platform)` returns one row per (workload, technique or combination): the
matched knob and its quality loss (95% interval), the speedup and energy reduction of the attention
over the dense, unfused baseline on the same template (95% interval over the resampled calls: e-mail
batches or text windows), the end-to-end speedup (attention plus the rest of the model), what bounds
the baseline and the technique, the range over the scenario axes (platform, overlap), and for a
technique that does not apply the reason. Nothing is multiplied: a combination's work is counted
with both mechanisms at once (`techniques.technique_work(..., fused=True)`).
"""
from __future__ import annotations

import math

import numpy as np

from .. import stats
from .experiment import BUDGET, CARRIED_FROM, matched_knob, quality_loss
from .template import PLATFORM_MEMORY, cost, template
from .techniques import COMBINATIONS, KNOBS, TECHNIQUES, not_applicable, technique_work
from .workloads import Workload, dense_counts, other_work

N_DRAWS = 400


def _template(tech: str, platform: str):
    return template(platform, "ReRAM" if "SPRINT" in tech else PLATFORM_MEMORY[platform])


def _split(tech: str) -> tuple[bool, list[str]]:
    """(fused, the non-FLAT techniques) of a league entry such as "FLAT+SPRINT"."""
    parts = tech.split("+")
    return "FLAT" in parts, [p for p in parts if p != "FLAT"]


def ratios(tech: str, sums: dict, w: Workload, platform: str, *, overlap: str = "max", hit_rate=None) -> dict:
    """Speedup and energy reduction (dense / technique) of the attention and end to end, on one template."""
    tpl = _template(tech, platform)
    c = dense_counts(w)
    base = cost(technique_work("dense", {}, c, w, tpl), tpl, overlap=overlap)
    fused, core = _split(tech)
    work = technique_work(core[0] if core else "FLAT", sums, c, w, tpl, fused=fused, hit_rate=hit_rate)
    new = cost(work, tpl, overlap=overlap)
    rest = cost(other_work(w), tpl, overlap=overlap)
    return dict(speedup=base["seconds"] / new["seconds"], energy=base["joules"] / new["joules"],
                e2e=(base["seconds"] + rest["seconds"]) / (new["seconds"] + rest["seconds"]),
                share=base["seconds"] / (base["seconds"] + rest["seconds"]),
                base_bound=base["bound"], bound=new["bound"])


def _intervals(tech, sums_by_call, w, platform, hit_rate, point: dict) -> dict:
    """{"speedup", "energy"}: 95% intervals from one bootstrap over calls (e-mail batches / windows) of
    the recorded sums; a point interval when there is a single call."""
    keys = ("speedup", "energy")
    n = len(next(iter(sums_by_call.values()))) if sums_by_call else 0
    if n < 2:
        return {k: stats.no_interval(point[k]) for k in keys}
    rng = np.random.default_rng(0)
    draws = []
    for _ in range(N_DRAWS):
        i = rng.integers(0, n, n)
        draws.append(ratios(tech, {k: a[i].sum() for k, a in sums_by_call.items()}, w, platform, hit_rate=hit_rate))
    return {k: stats.from_draws(point[k], [d[k] for d in draws], method=f"bootstrap over {n} calls", n=n) for k in keys}


def league_rows(runs: dict, wls: dict, platform: str, *, attmemo: dict | None = None) -> list[dict]:
    """Rows for every workload x (technique | combination) on ``platform`` ("edge" / "cloud").

    runs: {workload key: run dict of `experiment.run_encoder` / `run_decoder`}; attmemo: dict(hit_rates={tokens: rate},
    loss, lo, hi, source) from the AttMEMO notebook's record, or None."""
    rows = []
    for key, w in wls.items():
        run = runs.get(key)
        entries = list(TECHNIQUES) + ["+".join(c) for c in COMBINATIONS]
        for tech in entries:
            fused, core = _split(tech)
            row = dict(workload=key, label=w.label, technique=tech, platform=platform, knob=None, knob_name="",
                       loss=None, loss_lo=None, loss_hi=None, quality=w.quality, note="")
            reason = next((r for r in (not_applicable(p, w, _template(tech, platform)) for p in tech.split("+")) if r),
                          None)
            if reason:
                rows.append({**row, "na": reason})
                continue
            sums, hit = {}, None
            if not core:                           # FLAT alone: exact
                row.update(loss=0.0, loss_lo=0.0, loss_hi=0.0, note="exact: the fused kernel computes the reference attention")
            elif core[0] == "AttMEMO":
                hit = (attmemo or {}).get("hit_rates", {}).get(w.context)
                if hit is None:
                    rows.append({**row, "na": f"the AttMEMO notebook has not recorded the stream's hit rate at "
                                              f"{w.context} tokens"})
                    continue
                row.update(knob=hit, knob_name="stream hit rate", loss=attmemo["loss"], loss_lo=attmemo["lo"],
                           loss_hi=attmemo["hi"], note=f"hit rate and accuracy loss from {attmemo['source']}")
            else:
                t = core[0]
                if run is None or t not in run:
                    skipped = (run or {}).get("skipped", {}).get(t)
                    rows.append({**row, "na": skipped or f"{t} was not run on this workload", "not_run": True})
                    continue
                knob, _ = matched_knob(run, t, w.quality)
                carried = CARRIED_FROM.get(key)
                if knob is None:
                    knob = list(run[t])[0]
                    row["note"] = (f"no knob of the grid stays within the budget; the most conservative "
                                   f"({knob}) is shown")
                elif len(run[t]) == 1 and carried:
                    row["note"] = f"knob carried from {carried}; quality re-checked here"
                loss, iv = quality_loss(run, t, knob, w.quality)
                row.update(knob=float(knob), knob_name=KNOBS[t][0], loss=loss, loss_lo=iv.lo, loss_hi=iv.hi)
                sums = run[t][knob]["sums"]
            total = {k: a.sum() for k, a in sums.items()}
            row.update(_sums=sums, _hit=hit, _workload=w)   # what `rerate` needs to recompute the row
            r = ratios(tech, total, w, platform, hit_rate=hit)
            row.update(r, within=row["loss_hi"] is not None and row["loss_hi"] <= BUDGET[w.quality], na="")
            for k, iv in _intervals(tech, sums, w, platform, hit, r).items():
                row[f"{k}_lo"], row[f"{k}_hi"] = iv.lo, iv.hi
            alt = [ratios(tech, total, w, p, overlap=o, hit_rate=hit)["speedup"] for p in ("edge", "cloud")
                   for o in ("max", "sum")]
            row["scenario_lo"], row["scenario_hi"] = min(alt), max(alt)
            rows.append(row)
    return rows


def rerate(row: dict, platform: str, overlap: str = "max") -> dict:
    """A league row's ratios recomputed on another platform or overlap (from its recorded sums)."""
    total = {k: a.sum() for k, a in row["_sums"].items()}
    return ratios(row["technique"], total, row["_workload"], platform, overlap=overlap, hit_rate=row["_hit"])


def _fmt(v, digits=3):
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}g}"


def markdown(rows: list[dict]) -> str:
    """The league table as markdown (one platform)."""
    out = ["| workload | technique | knob | quality loss [95%] | within budget | attention speedup [95%] | "
           "energy reduction [95%] | end to end | over scenarios | bound (dense -> technique) |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r.get("na"):
            out.append(f"| {r['label']} | {r['technique']} | {'not run' if r.get('not_run') else 'n/a'} | | | | | | | "
                       f"{r['na']} |")
            continue
        unit = " pts" if r["quality"] == "accuracy" else " %"
        knob = "-" if r["knob"] is None else f"{r['knob_name']} {_fmt(r['knob'])}"
        out.append(f"| {r['label']} | {r['technique']} | {knob} | {_fmt(r['loss'], 2)} [{_fmt(r['loss_lo'], 2)}, "
                   f"{_fmt(r['loss_hi'], 2)}]{unit} | {'yes' if r['within'] else 'NO'} | {_fmt(r['speedup'])}x "
                   f"[{_fmt(r['speedup_lo'])}, {_fmt(r['speedup_hi'])}] | {_fmt(r['energy'])}x [{_fmt(r['energy_lo'])}, "
                   f"{_fmt(r['energy_hi'])}] | {_fmt(r['e2e'])}x | {_fmt(r['scenario_lo'])}-{_fmt(r['scenario_hi'])}x | "
                   f"{r['base_bound']} -> {r['bound']}{'; ' + r['note'] if r['note'] else ''} |")
    return "\n".join(out) + "\n"


def winners(rows: list[dict]) -> dict[str, str]:
    """Per workload, one generated paragraph: the best technique within the budget and why."""
    out = {}
    for key in dict.fromkeys(r["workload"] for r in rows):
        mine = [r for r in rows if r["workload"] == key and not r.get("na")]
        ok = [r for r in mine if r["within"]]
        na = [r["technique"] for r in rows if r["workload"] == key and r.get("na") and not r.get("not_run")]
        not_run = [r["technique"] for r in rows if r["workload"] == key and r.get("not_run")]
        label = mine[0]["label"] if mine else key
        if not ok:
            out[key] = f"{label}: no technique stays within the quality budget here."
            continue
        best = max(ok, key=lambda r: r["speedup"])
        if best["speedup"] < 1.005:
            faster = [r["technique"] for r in mine if r["speedup"] >= 1.005]
            out[key] = (f"{label}: no idea speeds the attention up within the quality budget (the dense baseline is "
                        f"{best['base_bound']}-bound)" + (f"; {', '.join(faster)} would, at a larger quality loss"
                                                          if faster else "") + ".")
            continue
        share = best["share"]
        why = (f"the dense baseline is {best['base_bound']}-bound and attention is {share:.0%} of the dense "
               f"model's time, so its attention speedup of {best['speedup']:.2f}x becomes {best['e2e']:.2f}x end to end")
        fails = [r["technique"] for r in mine if not r["within"]]
        text = (f"{label}: {best['technique']} wins within the budget ({why}; energy {best['energy']:.2f}x).")
        if fails:
            text += f" Over the budget at every knob tried: {', '.join(fails)}."
        if not_run:
            text += f" Not run here (over the budget at every knob on the shorter workload): {', '.join(not_run)}."
        if na:
            text += f" Not applicable: {', '.join(na)}."
        out[key] = text
    return out


#: The x axis ends at this multiple of the quality budget; a loss beyond it is drawn at the edge with its value.
X_CLIP = 4.0


def figure(rows_by_platform: dict):
    """Speedup of the attention vs quality loss (interval upper end), one panel per workload, one marker
    per technique, filled on cloud and hollow on edge; the budget as a dashed line; losses beyond
    `X_CLIP` budgets drawn at the axis edge with their value written beside them."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    keys = list(dict.fromkeys(r["workload"] for rows in rows_by_platform.values() for r in rows))
    fig, axes = plt.subplots(1, len(keys), figsize=(3.3 * len(keys), 3.6), squeeze=False)
    techs = list(TECHNIQUES) + ["+".join(c) for c in COMBINATIONS]
    markers = dict(zip(techs, "osD^vPX*"))
    colors = dict(zip(techs, plt.rcParams["axes.prop_cycle"].by_key()["color"]))
    for ax, key in zip(axes[0], keys):
        quality = None
        for platform, rows in rows_by_platform.items():
            for r in rows:
                if r["workload"] != key or r.get("na"):
                    continue
                quality = r["quality"]
                clip = X_CLIP * BUDGET[quality]
                x = min(r["loss_hi"], clip)
                ax.errorbar([x], [r["speedup"]], yerr=[[r["speedup"] - r["speedup_lo"]], [r["speedup_hi"] - r["speedup"]]],
                            marker=markers[r["technique"]], color=colors[r["technique"]], ms=7, ls="",
                            mfc=colors[r["technique"]] if platform == "cloud" else "white",
                            label=r["technique"] if platform == "cloud" else None)
                if r["loss_hi"] > clip and platform == "cloud":   # off the axis: drawn at its edge, value written
                    ax.annotate(f"{r['loss_hi']:.3g} \u2192", (x, r["speedup"]), xytext=(-4, 6), textcoords="offset points",
                                ha="right", fontsize=7, color=colors[r["technique"]])
        if quality:
            ax.axvline(BUDGET[quality], ls="--", color="#888888", lw=1)
            ax.set_xlim(right=X_CLIP * BUDGET[quality] * 1.08)
            ax.set_xlabel("quality loss, 95% upper end (" + ("points" if quality == "accuracy" else "% perplexity") + ")")
        ax.axhline(1.0, color="#444444", lw=0.8)
        ax.set_yscale("log")
        ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 1.5, 2.0, 3.0, 5.0)))   # plain labels at 1, 1.5, 2, 3, 5, 10, ...
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.yaxis.set_minor_formatter(NullFormatter())
        ax.set_title(next(r["label"] for rows in rows_by_platform.values() for r in rows if r["workload"] == key), fontsize=9)
    axes[0][0].set_ylabel("attention speedup over dense unfused (x)")
    handles, labels = [], []
    for ax in axes[0]:
        for h, l in zip(*ax.get_legend_handles_labels()):
            if l not in labels:
                handles.append(h)
                labels.append(l)
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=8, bbox_to_anchor=(0.5, -0.02))
    fig.suptitle("Which idea helps which workload: speedup vs quality loss (filled: cloud, hollow: edge; "
                 "dashed: the quality budget)", fontsize=10)
    fig.tight_layout(rect=(0, 0.07, 1, 0.95))
    return fig
