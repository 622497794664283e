"""Recording claims: what the paper says, what this workbook reproduced, how sure we are, and one
shared status rule.

Each notebook makes a `Recorder`, calls `claim(...)` for every claim it checks (and `value(...)` for
supporting measurements that have no paper counterpart), then `save()`, which writes
``results/<notebook>.json`` atomically. Every claim records (JSON field names fixed):

- ``reproduced`` and ``interval`` {lo, hi, method, n}: the value and its 95% statistical interval
  (`attnlib.stats`; method "none" and lo = hi = value for a purely modelled number);
- ``assumption_range`` {lo, hi, swept}: the span of the value over the labelled assumptions' sweep;
- ``deviations``: every known difference from the paper's setup, {aspect, paper, here, source, effect};
- ``operating_point`` {how, rule}: how in "paper setting", "matched quality", "sensitivity";
- ``averaging``: what enters the average and which mean;
- ``role``: "headline" (the paper's setting) or "alternative" (with ``of`` naming its headline claim);
- ``status`` (on the interval), ``point_status`` (on the value alone), ``robustness``, ``why``.

The band test (`band`), per kind:
- ``ratio`` (speedups, reductions expressed as "x", pruning ratios): r = value / paper;
  r in [0.8, 1.25] -> reproduced, r in [0.5, 2] -> partially, else not reproduced.
- ``percent`` (latency or energy reduction in %): |value - paper| <= 5 points -> reproduced,
  <= 10 points -> partially, else not reproduced.
- ``accuracy`` (accuracy drop in percentage points): |difference| <= 0.5 points -> reproduced,
  <= 1.0 -> partially, else not reproduced.
A paper value may be a range ``(low, high)`` (``high=None`` for "above 10,000x"): inside it the
distance is 0; outside, the test is applied to the nearest end.

The status rule applies the band test at both ends of the interval: both ends reproduced ->
reproduced; both ends within the partial band -> partially reproduced; both ends not reproduced on
the same side of the paper's value -> not reproduced; anything else -> inconclusive (the interval
straddles a band edge, or spans the band from one side to the other). ``robustness`` is "robust" when
the band test gives the same status at both ends of the assumption range (and at the value), else
"assumption-dependent".

Values are recorded at `SIGNIFICANT_DIGITS` significant digits (enough for the interval, and stable
across machines where the last digits of a float computation differ); the status is decided on the
recorded (rounded) numbers, so the JSON is self-consistent.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .paths import atomic_write_bytes, results_dir
from .stats import Interval

KINDS = ("ratio", "percent", "accuracy")
BASES = ("modelled", "measured", "algorithmic")
STATUSES = ("reproduced", "partially reproduced", "inconclusive", "not reproduced", "not run yet")
ROBUSTNESS = ("robust", "assumption-dependent")
OPERATING_POINTS = ("paper setting", "matched quality", "sensitivity")
ROLES = ("headline", "alternative")
SOURCES = ("paper", "secondary", "unconfirmed")
#: A deviation's effect starts with one of these words: its expected direction on the claim's value.
EFFECTS = ("raises", "lowers", "mixed", "unknown", "none")
SIGNIFICANT_DIGITS = 4

#: Tolerances of the band test: kind -> (reproduced band, partially band).
RATIO_BANDS = ((0.8, 1.25), (0.5, 2.0))
POINT_BANDS = {"percent": (5.0, 10.0), "accuracy": (0.5, 1.0)}


def round_sig(x: float | None, digits: int = SIGNIFICANT_DIGITS) -> float | None:
    """``x`` rounded to ``digits`` significant digits (None and non-finite values unchanged)."""
    if x is None or not math.isfinite(x) or x == 0:
        return x
    return float(f"{x:.{digits - 1}e}")


def _nearest(paper_value, value: float) -> float | None:
    """The paper's value itself, or the nearest end of a paper range (None when inside the range)."""
    if isinstance(paper_value, (list, tuple)):
        low, high = paper_value
        if value >= low and (high is None or value <= high):
            return None
        return low if value < low else high
    return float(paper_value)


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"unknown claim kind {kind!r}; known kinds: {', '.join(KINDS)}")


def band(kind: str, paper_value, value: float) -> tuple[str, int]:
    """The band test at one value: (status, side), side -1 below the paper's value or range, +1 above,
    0 inside it. Status is "reproduced", "partially reproduced" or "not reproduced"."""
    _check_kind(kind)
    if not math.isfinite(value):
        return "not reproduced", 1
    target = _nearest(paper_value, value)
    if target is None:
        return "reproduced", 0
    side = -1 if value < target else (1 if value > target else 0)
    if kind == "ratio":
        if target <= 0 or value <= 0:
            return "not reproduced", side
        r = value / target
        (lo1, hi1), (lo2, hi2) = RATIO_BANDS
        if lo1 <= r <= hi1:
            return "reproduced", side
        return ("partially reproduced" if lo2 <= r <= hi2 else "not reproduced"), side
    diff = abs(value - target)
    tight, loose = POINT_BANDS[kind]
    if diff <= tight:
        return "reproduced", side
    return ("partially reproduced" if diff <= loose else "not reproduced"), side


def status(kind: str, paper_value, reproduced: float | None, interval: tuple[float, float] | None = None) -> str:
    """The shared status rule. Without ``interval`` the band test at the value alone; with it
    (lo, hi) the rule on the interval (see the module docstring). ``reproduced=None`` -> "not run yet"."""
    _check_kind(kind)
    if reproduced is None:
        return "not run yet"
    if interval is None:
        return band(kind, paper_value, reproduced)[0]
    (s_lo, side_lo), (s_hi, side_hi) = band(kind, paper_value, interval[0]), band(kind, paper_value, interval[1])
    if s_lo == s_hi == "reproduced":
        return "reproduced"
    if "not reproduced" not in (s_lo, s_hi):
        return "partially reproduced"
    if s_lo == s_hi == "not reproduced" and side_lo == side_hi:
        return "not reproduced"
    return "inconclusive"


def robustness(kind: str, paper_value, reproduced: float, assumption_range: tuple[float, float]) -> str:
    """"robust" when the band test gives one status at both ends of the assumption range and at the value."""
    found = {band(kind, paper_value, v)[0] for v in (assumption_range[0], reproduced, assumption_range[1])}
    return "robust" if len(found) == 1 else "assumption-dependent"


@dataclass
class Deviation:
    """One known difference from the paper's setup.

    aspect: what differs (model, task, context length, baseline, convention, a hardware constant);
    paper / here: the paper's setting and this workbook's; source: the label of the paper's side
    ("paper", "secondary: <who>", "unconfirmed"); effect: the expected direction of the difference's
    effect on this claim's value, starting with one of `EFFECTS` (e.g. "lowers: fewer keys to prune").
    """

    aspect: str
    paper: str
    here: str
    source: str
    effect: str

    def __post_init__(self):
        for name in ("aspect", "paper", "here", "source", "effect"):
            if not str(getattr(self, name)).strip():
                raise ValueError(f"deviation {self.aspect!r}: {name} is empty")
        label = self.source.strip("[] ").split(":")[0].split(",")[0].strip()
        if label not in SOURCES:
            raise ValueError(f"deviation {self.aspect!r}: source {self.source!r} must start with one of {SOURCES}")
        if self.effect.split(":")[0].split(" ")[0].strip().lower() not in EFFECTS:
            raise ValueError(f"deviation {self.aspect!r}: effect {self.effect!r} must start with one of {EFFECTS}")


def _as_deviation(d) -> Deviation:
    if isinstance(d, Deviation):
        return d
    if isinstance(d, dict):
        return Deviation(**d)
    if isinstance(d, (list, tuple)) and len(d) == 5:
        return Deviation(*d)
    raise ValueError(f"a deviation is a Deviation, a dict or a 5-tuple (aspect, paper, here, source, effect); got {d!r}")


def _within(value: float, lo: float, hi: float) -> bool:
    slack = 1e-6 * max(1.0, abs(value))
    return lo - slack <= value <= hi + slack


@dataclass
class Claim:
    """One checked claim (see the module docstring for the fields). ``paper_value`` is a number or a
    (low, high) range; units in ``unit``."""

    claim_id: str
    description: str
    paper_value: float | tuple | list
    reproduced: float | None
    unit: str
    kind: str
    basis: str
    interval: dict | None
    assumption_range: dict | None
    deviations: list
    operating_point: dict
    averaging: str
    role: str = "headline"
    of: str | None = None
    params: dict = field(default_factory=dict)
    note: str = ""
    why: str = ""
    status: str = ""
    point_status: str = ""
    robustness: str = ""

    def __post_init__(self):
        _check_kind(self.kind)
        if self.basis not in BASES:
            raise ValueError(f"unknown basis {self.basis!r}; known: {', '.join(BASES)}")
        if self.role not in ROLES:
            raise ValueError(f"claim {self.claim_id!r}: role must be one of {ROLES}, got {self.role!r}")
        if (self.role == "alternative") != bool(self.of):
            raise ValueError(f"claim {self.claim_id!r}: an alternative row names its headline claim with `of` "
                             "(and only an alternative does)")
        op = dict(self.operating_point or {})
        if op.get("how") not in OPERATING_POINTS or not op.get("rule"):
            raise ValueError(f"claim {self.claim_id!r}: operating_point needs how in {OPERATING_POINTS} and a rule")
        self.operating_point = op
        if not str(self.averaging).strip():
            raise ValueError(f"claim {self.claim_id!r}: say what enters the average and which mean (averaging)")
        self.deviations = [asdict(_as_deviation(d)) for d in self.deviations]
        if self.reproduced is None:
            self.interval = self.assumption_range = None
            self.status = self.point_status = "not run yet"
            self.robustness = ""
            return
        self.reproduced = round_sig(float(self.reproduced))
        if not math.isfinite(self.reproduced):
            raise ValueError(f"claim {self.claim_id!r}: the reproduced value is not finite")
        self.interval = self._interval(self.interval)
        self.assumption_range = self._assumption_range(self.assumption_range)
        iv, ar = self.interval, self.assumption_range
        self.point_status = status(self.kind, self.paper_value, self.reproduced)
        self.status = status(self.kind, self.paper_value, self.reproduced, (iv["lo"], iv["hi"]))
        self.robustness = robustness(self.kind, self.paper_value, self.reproduced, (ar["lo"], ar["hi"]))
        if self.status in ("not reproduced", "inconclusive", "partially reproduced") and not self.why:
            self.why = self._default_why()

    def _interval(self, iv) -> dict:
        if iv is None:
            raise ValueError(f"claim {self.claim_id!r}: an interval is required (stats.no_interval for a "
                             "purely modelled number)")
        iv = iv if isinstance(iv, Interval) else Interval(**iv)
        lo, hi = round_sig(iv.lo), round_sig(iv.hi)
        if not _within(self.reproduced, lo, hi):
            raise ValueError(f"claim {self.claim_id!r}: value {self.reproduced} outside its interval [{lo}, {hi}]")
        return dict(lo=min(lo, self.reproduced), hi=max(hi, self.reproduced), method=iv.method, n=int(iv.n))

    def _assumption_range(self, ar) -> dict:
        if ar is None:
            raise ValueError(f"claim {self.claim_id!r}: an assumption_range is required ({{'lo', 'hi', 'swept'}}; "
                             "lo = hi = value and swept = {} when no labelled assumption enters the value)")
        ar = dict(ar)
        if set(ar) != {"lo", "hi", "swept"}:
            raise ValueError(f"claim {self.claim_id!r}: assumption_range needs exactly lo, hi, swept; got {sorted(ar)}")
        lo, hi = round_sig(float(ar["lo"])), round_sig(float(ar["hi"]))
        if not _within(self.reproduced, lo, hi):
            raise ValueError(f"claim {self.claim_id!r}: value {self.reproduced} outside its assumption range "
                             f"[{lo}, {hi}] (the sweep must include the default assumptions)")
        if not isinstance(ar["swept"], dict):
            raise ValueError(f"claim {self.claim_id!r}: swept maps each varied assumption to its values")
        return dict(lo=min(lo, self.reproduced), hi=max(hi, self.reproduced), swept=ar["swept"])

    def _default_why(self) -> str:
        """One line generated from the recorded numbers."""
        where = f"{format_interval(self)} {self.unit}".strip()
        paper = f"{format_value(self.paper_value)} {self.unit}"
        if self.status == "inconclusive":
            return f"the 95% interval {where} straddles a band edge around the paper's {paper}"
        side = band(self.kind, self.paper_value, self.reproduced)[1]
        return f"{where} lies {'below' if side < 0 else 'above'} the paper's {paper}"


def _jsonable(obj):
    """Convert numpy scalars/arrays and tuples to plain JSON types; floats to 6 significant digits."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if hasattr(obj, "tolist"):
        return _jsonable(obj.tolist())
    if isinstance(obj, float):
        return round_sig(obj, 6)
    return obj


class Recorder:
    """Collects a notebook's claims and values and writes them to ``results/<notebook>.json``."""

    def __init__(self, notebook: str, paper: str, *, profile: str = "full"):
        self.notebook, self.paper, self.profile = notebook, paper, profile
        self.claims: list[Claim] = []
        self.values: list[dict] = []

    def claim(self, claim_id: str, description: str, *, paper_value, reproduced, unit: str, kind: str,
              basis: str, interval, assumption_range, deviations, operating_point: dict, averaging: str,
              role: str = "headline", of: str | None = None, params: dict | None = None, note: str = "",
              why: str = "") -> Claim:
        """Record one claim. ``interval``: an `attnlib.stats.Interval` (or its dict);
        ``assumption_range``: {"lo", "hi", "swept": {assumption: values}}; ``deviations``: a list of
        `Deviation` (or dicts / 5-tuples); ``operating_point``: {"how", "rule"}; ``why``: one line on
        why the claim is not reproduced or inconclusive (generated from the numbers when omitted)."""
        if any(c.claim_id == claim_id for c in self.claims):
            raise ValueError(f"claim {claim_id!r} recorded twice")
        c = Claim(claim_id, description, paper_value, reproduced, unit, kind, basis, interval, assumption_range,
                  list(deviations), dict(operating_point), averaging, role, of, dict(params or {}), note, why)
        self.claims.append(c)
        return c

    def value(self, name: str, value: float, *, unit: str, basis: str, params: dict | None = None,
              note: str = "", interval: Interval | None = None) -> None:
        """Record a supporting number that has no paper counterpart (e.g. baseline perplexity)."""
        if basis not in BASES:
            raise ValueError(f"unknown basis {basis!r}; known: {', '.join(BASES)}")
        row = dict(name=name, value=round_sig(float(value)), unit=unit, basis=basis, params=dict(params or {}),
                   note=note)
        if interval is not None:
            row["interval"] = interval.to_dict()
        self.values.append(row)

    def _check_roles(self) -> None:
        headlines = {c.claim_id for c in self.claims if c.role == "headline"}
        for c in self.claims:
            if c.role == "alternative" and c.of not in headlines:
                raise ValueError(f"alternative claim {c.claim_id!r} names {c.of!r}, which is not a headline claim "
                                 f"of {self.notebook}")

    def to_dict(self) -> dict:
        self._check_roles()
        return _jsonable(dict(notebook=self.notebook, paper=self.paper, profile=self.profile, schema=2,
                              claims=[asdict(c) for c in self.claims], values=self.values))

    def save(self) -> Path:
        path = results_dir() / f"{self.notebook}.json"
        atomic_write_bytes(path, (json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n").encode())
        return path

    def table(self) -> str:
        """Markdown table of the recorded claims (for display in the notebook)."""
        rows = ["| claim | role | paper | reproduced [95% interval] | assumption range | status | robustness "
                "| deviations | basis |", "|---|---|---|---|---|---|---|---|---|"]
        for c in self.claims:
            role = "headline" if c.role == "headline" else f"alternative to `{c.of}`"
            rows.append(f"| {c.description} | {role} | {format_value(c.paper_value)} {c.unit} | "
                        f"{format_interval(c)} | {format_range(c)} | {c.status} | {c.robustness} | "
                        f"{len(c.deviations)} | {c.basis} |")
        return "\n".join(rows)

    def conclusion(self) -> str:
        """A short markdown conclusion generated from the recorded claims (no number typed by hand)."""
        lines = []
        for c in self.claims:
            if c.reproduced is None:
                lines.append(f"- **{c.description}**: not run yet.")
                continue
            line = (f"- **{c.description}** ({c.role}{' of ' + c.of if c.of else ''}): {format_interval(c)} "
                    f"{c.unit} against the paper's {format_value(c.paper_value)} {c.unit}: **{c.status}**, "
                    f"{c.robustness} (assumption range {format_range(c)}; {_count(len(c.deviations), 'known deviation')})")
            lines.append(line + (f". Why: {c.why}" if c.why else "."))
        return "\n".join(lines)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


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


def format_interval(c) -> str:
    """'value [lo, hi]' (just the value when the interval is a point)."""
    c = c if isinstance(c, dict) else asdict(c)
    if c["reproduced"] is None:
        return "-"
    iv = c["interval"]
    if iv["method"] == "none" or iv["lo"] == iv["hi"]:
        return format_value(c["reproduced"])
    return f"{format_value(c['reproduced'])} [{format_value(iv['lo'])}, {format_value(iv['hi'])}]"


def format_range(c) -> str:
    c = c if isinstance(c, dict) else asdict(c)
    ar = c["assumption_range"]
    if ar is None:
        return "-"
    if not ar["swept"] or ar["lo"] == ar["hi"]:
        return "none swept" if not ar["swept"] else format_value(ar["lo"])
    return f"{format_value(ar['lo'])}-{format_value(ar['hi'])}"


def load_results(folder: Path) -> dict[str, dict]:
    """All ``results/*.json`` in ``folder`` keyed by notebook name (the scorecard itself excluded)."""
    out = {}
    for path in sorted(Path(folder).glob("*.json")):
        data = json.loads(path.read_text())
        out[data["notebook"]] = data
    return out


#: The fields every recorded claim must have (the schema test checks results/*.json against them).
CLAIM_FIELDS = tuple(Claim.__dataclass_fields__)


def schema_problems(data: dict) -> list[str]:
    """What a results record lacks against schema 2 (empty list: valid). Used by the tests and the
    scorecard, which shows a record with problems loudly instead of trusting it."""
    problems = []
    if data.get("schema") != 2:
        problems.append(f"{data.get('notebook')}: record schema {data.get('schema', 1)}, expected 2 (re-run the notebook)")
    for c in data.get("claims", []):
        cid = f"{data.get('notebook')}:{c.get('claim_id')}"
        missing = [f for f in CLAIM_FIELDS if f not in c]
        if missing:
            problems.append(f"{cid} lacks {', '.join(missing)}")
            continue
        if c["reproduced"] is None:
            continue
        iv, ar = c["interval"], c["assumption_range"]
        if not isinstance(iv, dict) or set(iv) != {"lo", "hi", "method", "n"}:
            problems.append(f"{cid}: interval must have lo, hi, method, n")
        elif not iv["lo"] <= c["reproduced"] <= iv["hi"]:
            problems.append(f"{cid}: value outside its interval")
        if not isinstance(ar, dict) or set(ar) != {"lo", "hi", "swept"}:
            problems.append(f"{cid}: assumption_range must have lo, hi, swept")
        if c["operating_point"].get("how") not in OPERATING_POINTS:
            problems.append(f"{cid}: operating_point.how must be one of {OPERATING_POINTS}")
        if c["role"] not in ROLES or (c["role"] == "alternative" and not c["of"]):
            problems.append(f"{cid}: role must be headline or alternative (with of)")
        for d in c["deviations"]:
            if set(d) != {"aspect", "paper", "here", "source", "effect"}:
                problems.append(f"{cid}: deviation {d} lacks fields")
        if c["status"] not in STATUSES or c["robustness"] not in ROBUSTNESS:
            problems.append(f"{cid}: unknown status {c['status']!r} or robustness {c['robustness']!r}")
    return problems
