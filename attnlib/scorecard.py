"""The scorecard: every recorded claim of every paper notebook in one table and one figure.

A paper whose notebook has not produced ``results/<notebook>.json`` yet appears as "not run yet",
never as reproduced. A record in the old schema (no interval, deviations, ...) appears as
"invalid record", and a record from another profile than the scorecard's is marked "MIXED PROFILE"
in its status (a quick-profile number never passes silently for a full-profile one). Each headline
claim is followed by its alternative rows (stronger baseline, other convention, ...).
"""
from __future__ import annotations

import math
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from .claims import RATIO_BANDS, POINT_BANDS, format_interval, format_range, format_value, load_results, schema_problems

#: The five papers, the notebook that reproduces each, and the headline the notebook must check.
PAPERS = {
    "A3": ("01_a3", "approximate-over-base speedup 2.6-7.0x, >10,000x energy efficiency vs CPU, "
                    "accuracy loss ~1-1.6% (conservative) / ~8-9% (aggressive)"),
    "SPRINT": ("02_sprint", "7.5x speedup, 19.6x energy reduction at 16 KB, 0.36% accuracy drop"),
    "FLAT": ("03_flat", "1.94x / 1.76x speedup, 49% / 42% energy saving (edge / cloud)"),
    "Token-Picker": ("04_token_picker", "12.1x pruning, 2.6x fewer memory accesses, 2.3x speedup, "
                                        "2.4x energy efficiency"),
    "AttMEMO": ("05_attmemo", "22% average (up to 68%) latency reduction, negligible accuracy loss"),
}

STATUS_COLORS = {"reproduced": "#2ca02c", "partially reproduced": "#ff7f0e", "inconclusive": "#9467bd",
                 "not reproduced": "#d62728", "not run yet": "#bbbbbb", "invalid record": "#555555"}
LABEL_WIDTH = 62  # characters per label line in the figure (labels wrap, never truncate)


@dataclass
class Row:
    paper: str
    claim_id: str
    claim: str
    paper_value: object
    reproduced: float | None
    unit: str
    kind: str
    status: str
    basis: str
    role: str = "headline"
    of: str | None = None
    interval: dict | None = None
    assumption_range: dict | None = None
    robustness: str = ""
    n_deviations: int = 0
    why: str = ""
    profile: str = ""
    flags: list = field(default_factory=list)

    @property
    def shown_status(self) -> str:
        return self.status + "".join(f" ({f})" for f in self.flags)


def _ordered(claims: list[dict]) -> list[dict]:
    """Headline claims in recorded order, each followed by its alternatives; orphans last."""
    heads = [c for c in claims if c.get("role", "headline") == "headline"]
    out = []
    for h in heads:
        out.append(h)
        out += [c for c in claims if c.get("role") == "alternative" and c.get("of") == h["claim_id"]]
    return out + [c for c in claims if c not in out]


def collect(results_folder: Path, profile: str | None = None) -> list[Row]:
    """Rows for every claim of the five papers, in paper order; missing notebooks -> "not run yet".

    profile: the profile this scorecard is for; records from another profile are flagged."""
    results = load_results(results_folder)
    rows = []
    for paper, (notebook, headline) in PAPERS.items():
        data = results.get(notebook)
        if not data or not data.get("claims"):
            rows.append(Row(paper, "", headline, None, None, "", "", "not run yet", "-"))
            continue
        problems = schema_problems(data)
        flags = [] if profile is None or data.get("profile") == profile else \
            [f"MIXED PROFILE: {data.get('profile')} record in a {profile} scorecard"]
        for c in _ordered(data["claims"]):
            if problems:
                rows.append(Row(paper, c.get("claim_id", ""), c.get("description", ""), c.get("paper_value"), None,
                                c.get("unit", ""), c.get("kind", ""), "invalid record", c.get("basis", "-"),
                                why=problems[0], profile=data.get("profile", ""), flags=flags))
                continue
            rows.append(Row(paper, c["claim_id"], c["description"], c["paper_value"], c["reproduced"], c["unit"],
                            c["kind"], c["status"], c["basis"], c["role"], c["of"], c["interval"],
                            c["assumption_range"], c["robustness"], len(c["deviations"]), c["why"],
                            data.get("profile", ""), flags))
    return rows


def markdown(rows: list[Row]) -> str:
    lines = ["| paper | claim | role | paper value | reproduced [95% interval] | assumption range | status | "
             "robustness | deviations | basis | why (when not reproduced) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        unit = f" {r.unit}" if r.unit else ""
        pv = "-" if r.paper_value is None else format_value(r.paper_value) + unit
        if r.reproduced is None:
            rv = ar = "-"
        else:
            rec = dict(reproduced=r.reproduced, interval=r.interval, assumption_range=r.assumption_range)
            rv, ar = format_interval(rec) + unit, format_range(rec)
        claim = r.claim if r.role == "headline" else f"↳ {r.claim}"
        role = r.role if r.role == "headline" else f"alternative to {r.of}"
        why = r.why.replace("|", "/") if r.status != "reproduced" or r.flags else ""
        lines.append(f"| {r.paper} | {claim} | {role} | {pv} | {rv} | {ar} | {r.shown_status} | {r.robustness or '-'} "
                     f"| {r.n_deviations if r.reproduced is not None else '-'} | {r.basis} | {why} |")
    return "\n".join(lines) + "\n"


def summary(rows: list[Row]) -> dict[str, int]:
    out = {s: 0 for s in STATUS_COLORS}
    for r in rows:
        out[r.status] += 1
    out["assumption-dependent"] = sum(r.robustness == "assumption-dependent" for r in rows)
    out["alternative rows"] = sum(r.role == "alternative" for r in rows)
    return out


def _bands(r: Row) -> tuple[tuple[float, float], tuple[float, float], tuple[float, float]]:
    """(paper value or range, reproduced band, partially band) in the claim's unit."""
    pv = r.paper_value
    lo, hi = (pv[0], pv[1]) if isinstance(pv, (list, tuple)) else (pv, pv)
    if r.kind == "ratio":
        (a1, b1), (a2, b2) = RATIO_BANDS
        top = math.inf if hi is None else hi
        return (lo, top), (lo * a1, top * b1), (lo * a2, top * b2)
    t, l_ = POINT_BANDS[r.kind]
    top = math.inf if hi is None else hi
    return (lo, top), (lo - t, top + t), (lo - l_, top + l_)


def _label(r: Row) -> str:
    text = f"{r.paper}: {r.claim}" if r.role == "headline" else f"alternative: {r.claim}"
    lines = textwrap.wrap(text, LABEL_WIDTH)
    if r.role != "headline":
        lines = ["    ↳ " + lines[0]] + ["      " + x for x in lines[1:]]
    return "\n".join(lines)


def figure(rows: list[Row]):
    """Forest plot: one row per claim. Shaded: the paper's value or range (dark), the reproduced band
    (green) and the partial band (light); dot: the reproduced value coloured by status; thick bar: its
    95% interval; thin whisker: its assumption range. Ratio claims on a log axis (left), claims in
    percent or accuracy points on a linear axis (right). Status, robustness, deviations and why on the right."""
    heights = [max(1, _label(r).count("\n") + 1) for r in rows]
    y_step = [0.3 + 0.16 * h for h in heights]
    y = -np.cumsum(y_step)
    fig, axes = plt.subplots(1, 2, figsize=(17, 1.8 + sum(y_step)), sharey=True,
                             gridspec_kw=dict(width_ratios=[1.25, 1]))
    for ax, kinds, title in ((axes[0], ("ratio",), "ratio claims (x, log scale)"),
                             (axes[1], ("percent", "accuracy"), "percent / accuracy-point claims")):
        for yi, r in zip(y, rows):
            if r.kind not in kinds or r.paper_value is None:
                continue
            (plo, phi), (g1, g2), (p1, p2) = _bands(r)
            big = 1e7 if r.kind == "ratio" else 1e3
            ax.fill_betweenx([yi - 0.13, yi + 0.13], p1, min(p2, big), color="#2ca02c", alpha=0.08, lw=0)
            ax.fill_betweenx([yi - 0.13, yi + 0.13], g1, min(g2, big), color="#2ca02c", alpha=0.22, lw=0)
            ax.fill_betweenx([yi - 0.06, yi + 0.06], plo, min(phi, big) if phi != plo else plo, color="black",
                             alpha=0.55, lw=0)
            ax.plot([plo], [yi], "|", color="black", ms=9, mew=1.5)
            if r.reproduced is None:
                continue
            col = STATUS_COLORS[r.status]
            ar, iv = r.assumption_range, r.interval
            ax.plot([ar["lo"], ar["hi"]], [yi, yi], "-", color="#444444", lw=0.9, marker="|", ms=7)
            ax.plot([iv["lo"], iv["hi"]], [yi, yi], "-", color=col, lw=4, alpha=0.75, solid_capstyle="butt")
            ax.plot([r.reproduced], [yi], "o", color=col, mec="black", mew=0.6, ms=6, zorder=5)
        ax.set_title(title, fontsize=10)
        ax.grid(axis="y", visible=False)
    axes[0].set_xscale("log")
    _fit_xlim(axes[0], [r for r in rows if r.kind == "ratio"], log=True)
    _fit_xlim(axes[1], [r for r in rows if r.kind in ("percent", "accuracy")], log=False)
    axes[0].set_yticks(y, [_label(r) for r in rows], fontsize=7.5)
    for tick, r in zip(axes[0].get_yticklabels(), rows):
        if r.flags:
            tick.set_color("#d62728")
    for yi, r in zip(y, rows):
        extra = f" · {r.robustness}" if r.robustness else ""
        extra += f" · {r.n_deviations} deviation{'' if r.n_deviations == 1 else 's'}" if r.reproduced is not None else ""
        text = r.shown_status + extra
        if r.why and (r.status != "reproduced" or r.flags):
            text += "\n" + "\n".join(textwrap.wrap("why: " + r.why, 70))
        axes[1].text(1.02, yi, text, transform=axes[1].get_yaxis_transform(), va="center", fontsize=7,
                     color=STATUS_COLORS[r.status] if r.status != "not run yet" else "#777777")
    papers = [r.paper for r in rows]
    for i in range(1, len(rows)):
        if papers[i] != papers[i - 1]:
            for ax in axes:
                ax.axhline((y[i] + y[i - 1]) / 2, color="#999999", lw=0.6)
    axes[0].set_ylim(y[-1] - 0.5, 0.1)
    handles = [plt.Line2D([], [], marker="o", ls="", color=c, mec="black", label=s) for s, c in STATUS_COLORS.items()]
    handles += [plt.Line2D([], [], color="#666666", lw=4, label="95% interval"),
                plt.Line2D([], [], color="#444444", lw=0.9, marker="|", label="assumption range"),
                plt.Rectangle((0, 0), 1, 1, color="black", alpha=0.55, label="paper value / range"),
                plt.Rectangle((0, 0), 1, 1, color="#2ca02c", alpha=0.3, label="reproduced band (light: partially)")]
    top = 1 - 0.9 / fig.get_figheight()
    fig.legend(handles=handles, loc="lower center", ncol=5, fontsize=7.5, bbox_to_anchor=(0.45, top))
    fig.suptitle("Scorecard: each paper's claims vs this workbook (headline rows, then their alternatives)",
                 fontsize=11, y=1 - 0.1 / fig.get_figheight(), va="top")
    fig.tight_layout(rect=(0, 0, 0.8, top))
    return fig


def _fit_xlim(ax, rows: list[Row], log: bool) -> None:
    vals = []
    for r in rows:
        if r.paper_value is None:
            continue
        (plo, phi), _, _ = _bands(r)
        vals += [plo] + ([phi] if math.isfinite(phi) else [])
        if r.reproduced is not None:
            vals += [r.reproduced, r.interval["lo"], r.interval["hi"], r.assumption_range["lo"],
                     r.assumption_range["hi"]]
    vals = [v for v in vals if math.isfinite(v) and (v > 0 or not log)]
    if not vals:
        return
    lo, hi = min(vals), max(vals)
    if log:
        ax.set_xlim(lo / 2, hi * 2)
    else:
        pad = 0.08 * (hi - lo) + 1
        ax.set_xlim(lo - pad, hi + pad)
