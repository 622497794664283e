"""Recording claims: what the paper says, what this workbook reproduced, and one shared status rule.

Each notebook makes a `Recorder`, calls `claim(...)` for every headline number it checks (and
`value(...)` for supporting measurements that have no paper counterpart), then `save()`, which writes
``results/<notebook>.json`` atomically.

The status rule (also in the README):
- ``kind="ratio"`` (speedups, reductions expressed as "x", pruning ratios): r = reproduced / paper;
  r in [0.8, 1.25] -> reproduced, r in [0.5, 2] -> partially, else not reproduced.
- ``kind="percent"`` (latency or energy reduction in %): |reproduced - paper| <= 5 points ->
  reproduced, <= 10 points -> partially, else not reproduced.
- ``kind="accuracy"`` (accuracy drop in percentage points): |difference| <= 0.5 points -> reproduced,
  <= 1.0 -> partially, else not reproduced.
A paper value may be a range ``(low, high)`` (e.g. "2.6-7.0x"; ``high=None`` for "above 10,000x"): a
reproduced value inside the range has distance 0; outside, the rule is applied to the nearest end.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .paths import atomic_write_bytes, results_dir

KINDS = ("ratio", "percent", "accuracy")
BASES = ("modelled", "measured", "algorithmic")
STATUSES = ("reproduced", "partially reproduced", "not reproduced", "not run yet")

#: Tolerances of the status rule: kind -> (reproduced band, partially band).
RATIO_BANDS = ((0.8, 1.25), (0.5, 2.0))
POINT_BANDS = {"percent": (5.0, 10.0), "accuracy": (0.5, 1.0)}


def _nearest(paper_value, reproduced: float) -> float | None:
    """The paper's value itself, or the nearest end of a paper range (None when inside the range)."""
    if isinstance(paper_value, (list, tuple)):
        low, high = paper_value
        if reproduced >= low and (high is None or reproduced <= high):
            return None
        return low if reproduced < low else high
    return float(paper_value)


def status(kind: str, paper_value, reproduced: float | None) -> str:
    """Apply the shared status rule. ``reproduced=None`` (not computed) gives "not run yet"."""
    if kind not in KINDS:
        raise ValueError(f"unknown claim kind {kind!r}; known kinds: {', '.join(KINDS)}")
    if reproduced is None:
        return "not run yet"
    if not math.isfinite(reproduced):
        return "not reproduced"
    target = _nearest(paper_value, reproduced)
    if target is None:
        return "reproduced"
    if kind == "ratio":
        if target <= 0 or reproduced <= 0:
            return "not reproduced"
        r = reproduced / target
        (lo1, hi1), (lo2, hi2) = RATIO_BANDS
        if lo1 <= r <= hi1:
            return "reproduced"
        return "partially reproduced" if lo2 <= r <= hi2 else "not reproduced"
    diff = abs(reproduced - target)
    tight, loose = POINT_BANDS[kind]
    if diff <= tight:
        return "reproduced"
    return "partially reproduced" if diff <= loose else "not reproduced"


@dataclass
class Claim:
    """One checked claim. ``paper_value`` is a number or a (low, high) range; units in ``unit``."""

    claim_id: str
    description: str
    paper_value: float | tuple | list
    reproduced: float | None
    unit: str
    kind: str
    basis: str
    params: dict = field(default_factory=dict)
    note: str = ""
    status: str = ""

    def __post_init__(self):
        if self.basis not in BASES:
            raise ValueError(f"unknown basis {self.basis!r}; known: {', '.join(BASES)}")
        if self.reproduced is not None:
            self.reproduced = float(self.reproduced)
        self.status = status(self.kind, self.paper_value, self.reproduced)


def _jsonable(obj):
    """Convert numpy scalars/arrays and tuples in params to plain JSON types."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, float):
        return round(obj, 10)
    return obj


class Recorder:
    """Collects a notebook's claims and values and writes them to ``results/<notebook>.json``."""

    def __init__(self, notebook: str, paper: str, *, profile: str = "full"):
        self.notebook, self.paper, self.profile = notebook, paper, profile
        self.claims: list[Claim] = []
        self.values: list[dict] = []

    def claim(self, claim_id: str, description: str, *, paper_value, reproduced, unit: str, kind: str,
              basis: str, params: dict | None = None, note: str = "") -> Claim:
        if any(c.claim_id == claim_id for c in self.claims):
            raise ValueError(f"claim {claim_id!r} recorded twice")
        c = Claim(claim_id, description, paper_value, reproduced, unit, kind, basis, dict(params or {}), note)
        self.claims.append(c)
        return c

    def value(self, name: str, value: float, *, unit: str, basis: str, params: dict | None = None,
              note: str = "") -> None:
        """Record a supporting number that has no paper counterpart (e.g. baseline perplexity)."""
        if basis not in BASES:
            raise ValueError(f"unknown basis {basis!r}; known: {', '.join(BASES)}")
        self.values.append(dict(name=name, value=float(value), unit=unit, basis=basis,
                                params=dict(params or {}), note=note))

    def to_dict(self) -> dict:
        return _jsonable(dict(notebook=self.notebook, paper=self.paper, profile=self.profile,
                              claims=[asdict(c) for c in self.claims], values=self.values))

    def save(self) -> Path:
        path = results_dir() / f"{self.notebook}.json"
        atomic_write_bytes(path, (json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n").encode())
        return path

    def table(self) -> str:
        """Markdown table of the recorded claims (for display in the notebook)."""
        rows = ["| claim | paper | reproduced | unit | basis | status |", "|---|---|---|---|---|---|"]
        for c in self.claims:
            rows.append(f"| {c.description} | {format_value(c.paper_value)} | {format_value(c.reproduced)} | "
                        f"{c.unit} | {c.basis} | {c.status} |")
        return "\n".join(rows)


def format_value(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, (list, tuple)):
        low, high = v
        return f">= {format_value(low)}" if high is None else f"{format_value(low)}-{format_value(high)}"
    v = float(v)
    if v != 0 and (abs(v) >= 1e4 or abs(v) < 1e-2):
        return f"{v:.3g}"
    return f"{v:.3g}" if abs(v) < 100 else f"{v:.0f}"


def load_results(folder: Path) -> dict[str, dict]:
    """All ``results/*.json`` in ``folder`` keyed by notebook name (the scorecard itself excluded)."""
    out = {}
    for path in sorted(Path(folder).glob("*.json")):
        data = json.loads(path.read_text())
        out[data["notebook"]] = data
    return out
