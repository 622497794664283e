"""The scorecard: every recorded claim of every paper notebook, a verdict per paper, one headline figure.

A paper whose notebook has not produced ``results/<notebook>.json`` yet appears as "not run yet",
never as reproduced. A record in an old schema appears as "invalid record", and a record from another
profile than the scorecard's is marked "MIXED PROFILE" in its status (a quick-profile number never
passes silently for a full-profile one).

- `collect`            rows for every claim, each headline followed by its alternative and context rows;
- `verdicts`           two or three generated sentences per paper: what reproduced, what did not, and
                       the scenario or reason that decides it;
- `headline_markdown`  one row per headline claim (direction, interval, scenario range, status colour,
                       decided by); `alternatives_markdown` the other rows per paper, folded (<details>);
- `figure`             the headline claims only, sized to fit a screen (`MAX_FIGURE_PX`).
"""
from __future__ import annotations

import math
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from .claims import direction_text, format_interval, format_range, format_scenario_range, load_results, schema_problems

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
                 "not reproduced": "#d62728", "not run yet": "#bbbbbb", "invalid record": "#555555",
                 "context": "#1f77b4"}
#: A coloured mark per status for markdown tables (plain markdown has no colour).
STATUS_MARKS = {"reproduced": "🟢", "partially reproduced": "🟠", "inconclusive": "🟣", "not reproduced": "🔴",
                "not run yet": "⚪", "invalid record": "⚫", "context": "🔵"}
LABEL_WIDTH = 58  # characters per label line in the figure (labels wrap, never truncate)
MAX_FIGURE_PX = 1600  # the headline figure's height bound at the saved resolution


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
    direction: str = ""
    scenario_range: dict | None = None
    decided_by: list = field(default_factory=list)
    unswept: list = field(default_factory=list)
    axes: list = field(default_factory=list)

    @property
    def shown_status(self) -> str:
        return self.status + "".join(f" ({f})" for f in self.flags)


def _ordered(claims: list[dict]) -> list[dict]:
    """Headline claims in recorded order, each followed by its alternative and context rows; orphans last."""
    heads = [c for c in claims if c.get("role", "headline") == "headline"]
    out = []
    for h in heads:
        out.append(h)
        out += [c for c in claims if c.get("role") != "headline" and c.get("of") == h["claim_id"]]
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
                            data.get("profile", ""), flags, c["direction"], c["scenario_range"], c["decided_by"],
                            c["unswept"], c["axes"]))
    return rows


def _values(r: Row) -> tuple[str, str, str, str]:
    """(paper value with direction, reproduced [interval], scenario range, assumption range) as text."""
    unit = f" {r.unit}" if r.unit else ""
    pv = "-" if r.paper_value is None else direction_text(dict(paper_value=r.paper_value, direction=r.direction)) + unit
    if r.reproduced is None:
        return pv, "-", "-", "-"
    rec = dict(reproduced=r.reproduced, interval=r.interval, assumption_range=r.assumption_range,
               scenario_range=r.scenario_range, axes=r.axes)
    return pv, format_interval(rec) + unit, format_scenario_range(rec), format_range(rec)


def _status_cell(r: Row) -> str:
    return f"{STATUS_MARKS[r.status]} {r.shown_status}"


def _cell(text: str) -> str:
    return text.replace("|", "/").replace("\n", " ")


def role_label(r: Row) -> str:
    """A reader's label for a row's role: headline, alternative (of which headline) or context."""
    return {"headline": "headline", "context": "context: another chip or paper, not judged"}.get(
        r.role, "alternative (same claim, another baseline, convention or setting)")


def headline_markdown(rows: list[Row]) -> str:
    """One row per headline claim: the paper's value with its direction, the reproduced value and 95%
    interval, the range over the scenario axes, the status (coloured mark), robustness and what decides it."""
    lines = ["| paper | claim | paper says | reproduced [95% interval] | over scenarios | status | robustness | "
             "decided by | basis |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r.role != "headline":
            continue
        pv, rv, sr, _ = _values(r)
        decided = ", ".join(r.decided_by) or ("-" if not r.unswept else f"not swept: {', '.join(r.unswept)}")
        lines.append(f"| {r.paper} | {_cell(r.claim)} | {pv} | {rv} | {sr} | {_status_cell(r)} | {r.robustness or '-'} "
                     f"| {decided} | {r.basis} |")
    return "\n".join(lines) + "\n"


def alternatives_markdown(rows: list[Row], paper: str, *, fold: bool = True) -> str:
    """The alternative and context rows of one paper, each under the headline it accompanies; folded
    in a <details> block (closed by default on the site and in JupyterLab) when ``fold``."""
    own = [r for r in rows if r.paper == paper and r.role != "headline"]
    if not own:
        return ""
    heads = {r.claim_id: r.claim for r in rows if r.paper == paper and r.role == "headline"}
    lines = ["| alternative to | row | role | paper says | reproduced [95% interval] | assumption range | status | why |",
             "|---|---|---|---|---|---|---|---|"]
    for r in own:
        pv, rv, _, ar = _values(r)
        why = _cell(r.why) if r.status not in ("reproduced", "context") or r.flags else ""
        lines.append(f"| {_cell(heads.get(r.of, r.of or '-'))} | {_cell(r.claim)} | {role_label(r)} | {pv} | {rv} | {ar} "
                     f"| {_status_cell(r)} | {why} |")
    table = "\n".join(lines) + "\n"
    if not fold:
        return table
    return (f"<details><summary>{paper}: {len(own)} alternative and context rows (click to open)</summary>\n\n"
            f"{table}\n</details>\n")


def markdown(rows: list[Row]) -> str:
    """The whole scorecard as markdown: verdicts, the headline table, then each paper's other rows."""
    parts = ["## Verdicts\n", verdicts_markdown(rows), "## Headline claims\n", headline_markdown(rows),
             "## Alternative and context rows\n"]
    parts += [alternatives_markdown(rows, p) for p in PAPERS]
    why = [f"- **{r.paper}, {_cell(r.claim)}**: {r.why}" for r in rows
           if r.role == "headline" and r.why and (r.status != "reproduced" or r.flags)]
    if why:
        parts += ["## Why, for each headline that is not reproduced\n", "\n".join(why) + "\n"]
    return "\n".join(p for p in parts if p)


def _names(rows: list[Row], most: int = 3) -> str:
    names = "; ".join(r.claim for r in rows[:most])
    return names + (f"; and {len(rows) - most} more" if len(rows) > most else "")


def verdicts(rows: list[Row]) -> dict[str, str]:
    """Per paper, three or four sentences generated from its headline rows: the status counts, what
    reproduced, the scenario axes that decide statuses, and the main reason a claim fails. No number
    is typed here."""
    out = {}
    for paper in PAPERS:
        heads = [r for r in rows if r.paper == paper and r.role == "headline"]
        if not heads or all(r.reproduced is None for r in heads):
            status = heads[0].status if heads else "not run yet"
            out[paper] = f"{status.capitalize()}: {heads[0].why if heads and heads[0].why else 'no results recorded'}."
            continue
        by = {s: [r for r in heads if r.status == s] for s in STATUS_COLORS}
        counts = ", ".join(f"{len(by[s])} {s}" for s in ("partially reproduced", "inconclusive", "not reproduced")
                           if by[s])
        text = f"{len(by['reproduced'])} of {len(heads)} headline claims reproduced" + (f", {counts}" if counts else "") + "."
        if by["reproduced"]:
            text += f" Reproduced: {_names(by['reproduced'])}."
        deciders: dict[str, int] = {}
        for r in heads:
            for d in r.decided_by:
                deciders[d] = deciders.get(d, 0) + 1
        if deciders:
            top = sorted(deciders.items(), key=lambda kv: -kv[1])[:3]
            text += " Statuses flip with: " + ", ".join(f"{d} ({k} of {len(heads)})" for d, k in top) + "."
        worst = by["not reproduced"] or by["inconclusive"]
        if worst and worst[0].why:
            text += f" For instance, {worst[0].claim}: {worst[0].why}."
        flags = sorted({f for r in heads for f in r.flags})
        if flags:
            text += f" Flagged: {'; '.join(flags)}."
        out[paper] = text
    return out


def verdicts_markdown(rows: list[Row]) -> str:
    return "\n".join(f"- **{p}**: {v}" for p, v in verdicts(rows).items()) + "\n"


def summary(rows: list[Row]) -> dict[str, int]:
    """Status counts over the headline claims; alternative and context rows counted apart."""
    out = {s: 0 for s in STATUS_COLORS if s != "context"}
    for r in rows:
        if r.role == "headline":
            out[r.status] += 1
    out["scenario-dependent headlines"] = sum(r.robustness == "scenario-dependent" for r in rows if r.role == "headline")
    out["alternative rows"] = sum(r.role == "alternative" for r in rows)
    out["context rows"] = sum(r.role == "context" for r in rows)
    return out


def _label(r: Row) -> str:
    return "\n".join(textwrap.wrap(f"{r.paper}: {r.claim}", LABEL_WIDTH))


def _paper_span(r: Row) -> tuple[float, float]:
    """The paper's number or range as (lo, hi), open ends as +-inf."""
    pv = r.paper_value
    lo, hi = (pv[0], pv[1]) if isinstance(pv, (list, tuple)) else (pv, pv)
    if r.direction == "at most" and not isinstance(pv, (list, tuple)):
        lo = None
    if r.direction == "at least" and not isinstance(pv, (list, tuple)):
        hi = None
    return (-math.inf if lo is None else lo), (math.inf if hi is None else hi)


def _shade_bands(ax, r: Row, yi: float, log: bool) -> None:
    """Shade where the shared band test (with the claim's direction and gain rule) says reproduced
    (green) and partially reproduced (light green), over the axis's visible range."""
    from .claims import band

    x0, x1 = ax.get_xlim()
    xs = np.geomspace(x0, x1, 600) if log else np.linspace(x0, x1, 600)
    st = np.array([band(r.kind, r.paper_value, float(x), r.direction)[0] for x in xs])
    for status, alpha in (("reproduced", 0.25), ("partially reproduced", 0.09)):
        on = st == status
        edges = np.flatnonzero(np.diff(np.r_[0, on.astype(int), 0]))
        for i, j in zip(edges[::2], edges[1::2]):
            ax.fill_betweenx([yi - 0.13, yi + 0.13], xs[i], xs[j - 1], color="#2ca02c", alpha=alpha, lw=0)


def figure(rows: list[Row]):
    """Forest plot of the headline claims (alternatives are in the tables). Per row: green shading
    where the shared rule says reproduced (light: partially), the paper's value or range in black, the
    reproduced value as a dot coloured by status, its 95% interval (thick bar), the range over the
    scenario axes (dashed whisker) and over the assumptions (thin whisker). Ratio claims on a log axis
    (left), percent / accuracy-point claims on a linear axis (right); status, robustness and what decides
    each row on the right. At most `MAX_FIGURE_PX` tall when saved."""
    rows = [r for r in rows if r.role == "headline"]
    heights = [_label(r).count("\n") + 1 for r in rows]
    y_step = [0.16 + 0.11 * h for h in heights]
    y = -np.cumsum(y_step)
    dpi = plt.rcParams["savefig.dpi"]
    fig_h = min(1.3 + sum(y_step), MAX_FIGURE_PX / (dpi if isinstance(dpi, (int, float)) else 100) - 0.05)
    fig, axes = plt.subplots(1, 2, figsize=(15, fig_h), sharey=True, gridspec_kw=dict(width_ratios=[1.25, 1]))
    panels = ((axes[0], ("ratio",), "ratio claims (x, log scale)", True),
              (axes[1], ("percent", "accuracy"), "percent / accuracy-point claims", False))
    for ax, kinds, title, log in panels:
        mine = [(yi, r) for yi, r in zip(y, rows) if r.kind in kinds and r.paper_value is not None]
        if log:
            ax.set_xscale("log")
        _fit_xlim(ax, [r for _, r in mine], log=log)
        for yi, r in mine:
            _shade_bands(ax, r, yi, log)
            plo, phi = _paper_span(r)
            x0, x1 = ax.get_xlim()
            ax.plot([max(plo, x0), min(phi, x1)], [yi, yi], "-", color="black", lw=3, alpha=0.55, solid_capstyle="butt")
            ax.plot([p for p in (plo, phi) if math.isfinite(p)], [yi] * sum(map(math.isfinite, (plo, phi))), "|",
                    color="black", ms=9, mew=1.5)
            if r.reproduced is None:
                continue
            col = STATUS_COLORS[r.status]
            ar, iv, sr = r.assumption_range, r.interval, r.scenario_range
            if sr and sr["n"] > 1:
                ax.plot([sr["lo"], sr["hi"]], [yi - 0.09] * 2, ls=(0, (2, 1.5)), color="#1f77b4", lw=1.1, marker="|", ms=5)
            ax.plot([ar["lo"], ar["hi"]], [yi + 0.09] * 2, "-", color="#444444", lw=0.9, marker="|", ms=5)
            ax.plot([iv["lo"], iv["hi"]], [yi, yi], "-", color=col, lw=4, alpha=0.8, solid_capstyle="butt")
            ax.plot([r.reproduced], [yi], "o", color=col, mec="black", mew=0.6, ms=6, zorder=5)
        ax.set_title(title, fontsize=10)
        ax.grid(axis="y", visible=False)
    axes[0].set_yticks(y, [_label(r) for r in rows], fontsize=7)
    for tick, r in zip(axes[0].get_yticklabels(), rows):
        if r.flags:
            tick.set_color("#d62728")
    for yi, r in zip(y, rows):
        text = r.shown_status + (f" · {r.robustness}" if r.robustness else "")
        if [d for d in r.decided_by if d != "assumptions"]:
            text += "\n" + "\n".join(textwrap.wrap("decided by: " + ", ".join(r.decided_by), 48))
        axes[1].text(1.02, yi, text, transform=axes[1].get_yaxis_transform(), va="center", fontsize=6.5,
                     color=STATUS_COLORS[r.status] if r.status != "not run yet" else "#777777")
    papers = [r.paper for r in rows]
    for i in range(1, len(rows)):
        if papers[i] != papers[i - 1]:
            for ax in axes:
                ax.axhline((y[i] + y[i - 1]) / 2, color="#999999", lw=0.6)
    axes[0].set_ylim(y[-1] - 0.3, 0.05)
    handles = [plt.Line2D([], [], marker="o", ls="", color=c, mec="black", label=s) for s, c in STATUS_COLORS.items()
               if s != "context"]
    handles += [plt.Line2D([], [], color="#666666", lw=4, label="95% interval"),
                plt.Line2D([], [], color="#1f77b4", lw=1.1, ls=(0, (2, 1.5)), marker="|", label="range over scenarios"),
                plt.Line2D([], [], color="#444444", lw=0.9, marker="|", label="assumption range"),
                plt.Line2D([], [], color="black", lw=3, alpha=0.55, label="paper value / range"),
                plt.Rectangle((0, 0), 1, 1, color="#2ca02c", alpha=0.3, label="reproduced band (light: partially)")]
    top = 1 - 0.75 / fig.get_figheight()
    fig.legend(handles=handles, loc="lower center", ncol=6, fontsize=7, bbox_to_anchor=(0.45, top))
    fig.suptitle("Scorecard: each paper's headline claims vs this workbook (alternative rows are in the tables)",
                 fontsize=11, y=1 - 0.08 / fig.get_figheight(), va="top")
    fig.tight_layout(rect=(0, 0, 0.8, top))
    return fig


def _fit_xlim(ax, rows: list[Row], log: bool) -> None:
    vals = []
    for r in rows:
        vals += [v for v in _paper_span(r) if math.isfinite(v)]
        if r.reproduced is not None:
            vals += [r.reproduced, r.interval["lo"], r.interval["hi"], r.assumption_range["lo"],
                     r.assumption_range["hi"]]
            if r.scenario_range:
                vals += [r.scenario_range["lo"], r.scenario_range["hi"]]
    vals = [v for v in vals if math.isfinite(v) and (v > 0 or not log)]
    if not vals:
        return
    lo, hi = min(vals), max(vals)
    if log:
        ax.set_xlim(lo / 2, hi * 2)
    else:
        pad = 0.08 * (hi - lo) + 1
        ax.set_xlim(lo - pad, hi + pad)
