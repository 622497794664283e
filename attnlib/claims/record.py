"""Recording claims: what the paper says, what this workbook reproduced, how sure we are, over which
scenarios, and the shared status rule (`attnlib.claims.rules`).

Each notebook makes a `Recorder`, calls `claim(...)` for every claim it checks (and `value(...)` for
supporting measurements that have no paper counterpart), then `save()`, which writes
``results/<notebook>.json`` atomically (schema 3). Every claim records (JSON field names fixed):

- ``paper_value`` and ``direction`` (about, at least, at most, within: `rules`);
- ``reproduced`` and ``interval`` {lo, hi, method, n}: the value and its 95% statistical interval
  (`attnlib.stats`; method "none" and lo = hi = value for a purely modelled number);
- ``variation`` {unit, covers, not_covered}: the unit the interval resamples, the sources of variation
  it covers (items, windows, heads, corpora, seeds, processes) and those that could move the verdict
  but are not resampled;
- ``assumption_range`` {lo, hi, swept}: the span of the value over the labelled assumptions' sweep;
- ``axes``, ``scenarios``, ``headline_scenario``, ``headline_rule``: the structural choices that can
  decide the claim (`scenarios.Axis`), the value at each computed scenario, which scenario is the
  headline and the rule from the paper's text that picks it (``no_axes``: why a claim has no axis);
- ``scenario_range`` {lo, hi, n}, ``decided_by``, ``plausible_statuses``, ``unswept``: the verdict
  over the grid (`scenarios.judge`);
- ``deviations``: every known difference from the paper's setup, {aspect, paper, here, source, effect};
- ``operating_point`` {how, rule}: how in "paper setting", "matched quality", "matched speed",
  "sensitivity";
- ``averaging``: what enters the average and which mean;
- ``role``: "headline" (the paper's setting), "alternative" (with ``of`` naming its headline claim) or
  "context" (a number from another paper or chip: shown, never judged);
- ``status`` (on the interval, and "inconclusive" where scenarios the paper is consistent with
  disagree), ``point_status`` (the value alone), ``robustness``, ``why``.

Values are recorded at `SIGNIFICANT_DIGITS` significant digits (enough for the interval, and stable
across machines where the last digits of a float computation differ); the status is decided on the
recorded (rounded) numbers, so the JSON is self-consistent and `rejudge` recomputes it from the JSON.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..paths import atomic_write_bytes, results_dir
from ..stats import Interval
from .rules import DIRECTIONS, band, check_kind, infer_direction, status, straddled_edges, target_range
from .scenarios import ROBUSTNESS, Axis, as_axis, check_scenarios, judge

BASES = ("modelled", "measured", "algorithmic")
STATUSES = ("reproduced", "partially reproduced", "inconclusive", "not reproduced", "not run yet", "context")
OPERATING_POINTS = ("paper setting", "matched quality", "matched speed", "sensitivity")
ROLES = ("headline", "alternative", "context")
SOURCES = ("paper", "secondary", "unconfirmed")
#: A deviation's effect starts with one of these words: its expected direction on the claim's value.
EFFECTS = ("raises", "lowers", "mixed", "unknown", "none")
SIGNIFICANT_DIGITS = 4
SCHEMA = 3
QUICK_BANNER = "quick profile: smoke run, not a result"
MODELLED_VARIATION = dict(unit="none: a modelled number from fixed inputs", covers=[], not_covered=[])


def round_sig(x: float | None, digits: int = SIGNIFICANT_DIGITS) -> float | None:
    """``x`` rounded to ``digits`` significant digits (None and non-finite values unchanged)."""
    if x is None or not math.isfinite(x) or x == 0:
        return x
    return float(f"{x:.{digits - 1}e}")


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


def _variation(claim_id: str, v, method: str, role: str) -> dict:
    if v is None:
        if method == "none":
            return dict(MODELLED_VARIATION)
        if role != "headline":
            return dict(unit="see the headline", covers=[], not_covered=[])
        raise ValueError(f"claim {claim_id!r}: a headline with a statistical interval names its variation "
                         "{unit, covers, not_covered}: what is resampled and what could still move it")
    v = dict(v)
    if set(v) != {"unit", "covers", "not_covered"} or not str(v["unit"]).strip():
        raise ValueError(f"claim {claim_id!r}: variation needs exactly unit, covers, not_covered; got {sorted(v)}")
    return dict(unit=str(v["unit"]), covers=[str(x) for x in v["covers"]], not_covered=[str(x) for x in v["not_covered"]])


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
    direction: str | None = None
    variation: dict | None = None
    axes: list = field(default_factory=list)
    scenarios: list = field(default_factory=list)
    headline_scenario: dict = field(default_factory=dict)
    headline_rule: str = ""
    no_axes: str = ""
    scenario_range: dict | None = None
    decided_by: list = field(default_factory=list)
    plausible_statuses: list = field(default_factory=list)
    unswept: list = field(default_factory=list)
    status: str = ""
    point_status: str = ""
    robustness: str = ""

    def __post_init__(self):
        check_kind(self.kind)
        if self.basis not in BASES:
            raise ValueError(f"unknown basis {self.basis!r}; known: {', '.join(BASES)}")
        if self.role not in ROLES:
            raise ValueError(f"claim {self.claim_id!r}: role must be one of {ROLES}, got {self.role!r}")
        if (self.role == "alternative") and not self.of or (self.role == "headline" and self.of):
            raise ValueError(f"claim {self.claim_id!r}: an alternative row names its headline claim with `of` "
                             "(and a headline does not)")
        op = dict(self.operating_point or {})
        if op.get("how") not in OPERATING_POINTS or not op.get("rule"):
            raise ValueError(f"claim {self.claim_id!r}: operating_point needs how in {OPERATING_POINTS} and a rule")
        self.operating_point = op
        if not str(self.averaging).strip():
            raise ValueError(f"claim {self.claim_id!r}: say what enters the average and which mean (averaging)")
        if self.direction is None and self.role == "headline":
            raise ValueError(f"claim {self.claim_id!r}: a headline states its direction, one of {DIRECTIONS}")
        self.direction = self.direction or infer_direction(self.paper_value)
        target_range(self.paper_value, self.direction)  # raises on a direction the paper value cannot take
        self.deviations = [asdict(_as_deviation(d)) for d in self.deviations]
        self._declare_axes()
        if self.reproduced is None:
            self.interval = self.assumption_range = self.scenario_range = None
            self.status = self.point_status = "not run yet"
            self.robustness = ""
            return
        self.reproduced = round_sig(float(self.reproduced))
        if not math.isfinite(self.reproduced):
            raise ValueError(f"claim {self.claim_id!r}: the reproduced value is not finite")
        self.interval = self._interval(self.interval)
        self.variation = _variation(self.claim_id, self.variation, self.interval["method"], self.role)
        self.assumption_range = self._assumption_range(self.assumption_range)
        self._scenario_values()
        self.judge()
        if not self.why and self.status in ("not reproduced", "inconclusive", "partially reproduced"):
            self.why = self._default_why()

    def _declare_axes(self) -> None:
        self.axes = [as_axis(a) for a in self.axes]
        if self.role == "headline" and not self.axes and not self.no_axes.strip():
            raise ValueError(f"claim {self.claim_id!r}: a headline declares its scenario axes (the structural "
                             "choices that can decide it) or says why it has none (no_axes)")
        if self.axes and not self.headline_rule.strip():
            raise ValueError(f"claim {self.claim_id!r}: state the rule from the paper's text that picks the "
                             "headline scenario (headline_rule)")
        names = [a.name for a in self.axes]
        if len(set(names)) != len(names):
            raise ValueError(f"claim {self.claim_id!r}: axis names repeat: {names}")
        self.headline_scenario = {str(k): str(v) for k, v in dict(self.headline_scenario or {}).items()}
        if self.axes and sorted(self.headline_scenario) != sorted(names):
            raise ValueError(f"claim {self.claim_id!r}: headline_scenario must set exactly the axes {names}")

    def _scenario_values(self) -> None:
        """Scenarios as [{options, value}], the headline's value equal to the reproduced value."""
        rows = []
        for s in self.scenarios:
            opts, value = (s["options"], s["value"]) if isinstance(s, dict) else s
            value = float(value)
            if not math.isfinite(value):
                raise ValueError(f"claim {self.claim_id!r}: scenario {opts} has a non-finite value")
            rows.append(dict(options={str(k): str(v) for k, v in opts.items()}, value=round_sig(value)))
        if self.axes:
            head = [r for r in rows if r["options"] == self.headline_scenario]
            if not head:
                rows.insert(0, dict(options=dict(self.headline_scenario), value=self.reproduced))
            elif not _within(self.reproduced, head[0]["value"], head[0]["value"]):
                raise ValueError(f"claim {self.claim_id!r}: the headline scenario's value {head[0]['value']} is not "
                                 f"the reproduced value {self.reproduced}")
            check_scenarios(self.claim_id, self.axes, rows, self.headline_scenario)
        elif rows:
            raise ValueError(f"claim {self.claim_id!r}: scenarios given without axes")
        self.scenarios = rows

    def judge(self) -> None:
        """Status, point status, robustness and the scenario verdict from the recorded numbers."""
        if self.role == "context":
            self.status = self.point_status = "context"
            self.robustness, self.decided_by, self.plausible_statuses, self.unswept = "robust", [], [], []
            self.scenario_range = None
            return
        iv, ar, d = self.interval, self.assumption_range, self.direction
        self.point_status = status(self.kind, self.paper_value, self.reproduced, direction=d)
        self.status = status(self.kind, self.paper_value, self.reproduced, (iv["lo"], iv["hi"]), direction=d)
        assumed = {band(self.kind, self.paper_value, v, d)[0] for v in (ar["lo"], self.reproduced, ar["hi"])}
        scen = self.scenarios or [dict(options={}, value=self.reproduced)]
        verdict = judge(self.kind, self.paper_value, d, self.axes, scen, assumed)
        self.decided_by, self.robustness, self.unswept = verdict["decided_by"], verdict["robustness"], verdict["unswept"]
        self.plausible_statuses = verdict["plausible_statuses"]
        self.scenario_range = verdict["scenario_range"] if self.axes else None
        if len(self.plausible_statuses) > 1:
            self.status = "inconclusive"

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
        return default_why(asdict(self))


def default_why(c: dict) -> str:
    """Why a claim is not reproduced, partially reproduced or inconclusive, from a claim record."""
    unit = f" {c['unit']}".rstrip()
    where = f"{format_interval(c)}{unit}"
    paper = f"{direction_text(c)}{unit}"
    if len(c.get("plausible_statuses") or []) > 1:
        axes = [as_axis(a) for a in c["axes"]]
        unknown = [a.name for a in axes if len(a.plausible) > 1]
        by = [n for n in c["decided_by"] if n in unknown] or unknown
        vals = [s["value"] for s in c["scenarios"]
                if all(s["options"][a.name] in a.plausible for a in axes)]
        return (f"decided by {', '.join(by)}, whose paper option is not known: over the options the paper is consistent "
                f"with the value spans {format_value(min(vals))}-{format_value(max(vals))}{unit} and the status "
                f"{' / '.join(c['plausible_statuses'])}")
    iv = c["interval"]
    if c["status"] == "inconclusive":
        crossed = straddled_edges(c["kind"], c["paper_value"], iv["lo"], iv["hi"], c["direction"])
        near = min(crossed, key=lambda e: abs(e - c["reproduced"])) if crossed else None
        tail = (f"; it straddles the band edge at {format_value(near)}{unit}, {format_value(abs(c['reproduced'] - near))}"
                f"{unit} from the value") if near is not None else ""
        return f"the 95% interval {where} straddles a band edge around the paper's {paper}{tail}"
    side = band(c["kind"], c["paper_value"], c["reproduced"], c["direction"])[1]
    gain = " (no gain)" if c["kind"] == "ratio" and c["reproduced"] <= 1 < _low(c) else ""
    return f"{where}{gain} lies {'below' if side < 0 else 'above'} the paper's {paper}"


def _low(c: dict) -> float:
    t = target_range(c["paper_value"], c["direction"])
    low = t[0] if isinstance(t, tuple) else t
    return -math.inf if low is None else low


def _jsonable(obj):
    """Convert numpy scalars/arrays, tuples and axes to plain JSON types; floats to 6 significant digits."""
    if isinstance(obj, Axis):
        return _jsonable(obj.to_dict())
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if hasattr(obj, "tolist"):
        return _jsonable(obj.tolist())
    if isinstance(obj, float):
        return round_sig(obj, 6)
    return obj


def _record(c: Claim) -> dict:
    d = asdict(c)
    d["axes"] = [a.to_dict() for a in c.axes]
    return d


class Recorder:
    """Collects a notebook's claims and values and writes them to ``results/<notebook>.json``."""

    def __init__(self, notebook: str, paper: str, *, profile: str = "full"):
        self.notebook, self.paper, self.profile = notebook, paper, profile
        self.claims: list[Claim] = []
        self.values: list[dict] = []

    def claim(self, claim_id: str, description: str, *, paper_value, reproduced, unit: str, kind: str,
              basis: str, interval, assumption_range, deviations, operating_point: dict, averaging: str,
              role: str = "headline", of: str | None = None, params: dict | None = None, note: str = "",
              why: str = "", direction: str | None = None, variation: dict | None = None, axes=(),
              scenarios=(), headline_scenario: dict | None = None, headline_rule: str = "",
              no_axes: str = "") -> Claim:
        """Record one claim. ``interval``: an `attnlib.stats.Interval` (or its dict); ``assumption_range``:
        {"lo", "hi", "swept": {assumption: values}}; ``deviations``: a list of `Deviation` (or dicts /
        5-tuples); ``operating_point``: {"how", "rule"}; ``direction``: about / at least / at most /
        within (required for a headline); ``variation``: {unit, covers, not_covered} (required for a
        headline with a statistical interval); ``axes``: `Axis` list, ``scenarios``: [(options, value)]
        or [{"options", "value"}] (the headline scenario's value is ``reproduced``; omitted scenarios of
        the grid are "not swept"), ``headline_scenario``: {axis: option}, ``headline_rule``: why that
        scenario; ``no_axes``: why a headline has no axis; ``why``: one line on why the claim is not
        reproduced or inconclusive (generated from the numbers when omitted)."""
        if any(c.claim_id == claim_id for c in self.claims):
            raise ValueError(f"claim {claim_id!r} recorded twice")
        c = Claim(claim_id, description, paper_value, reproduced, unit, kind, basis, interval, assumption_range,
                  list(deviations), dict(operating_point), averaging, role, of, dict(params or {}), note, why,
                  direction, variation, list(axes), list(scenarios), dict(headline_scenario or {}), headline_rule,
                  no_axes)
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
            if c.of and c.of not in headlines:
                raise ValueError(f"{c.role} claim {c.claim_id!r} names {c.of!r}, which is not a headline claim "
                                 f"of {self.notebook}")

    def to_dict(self) -> dict:
        self._check_roles()
        return _jsonable(dict(notebook=self.notebook, paper=self.paper, profile=self.profile, schema=SCHEMA,
                              claims=[_record(c) for c in self.claims], values=self.values))

    def save(self) -> Path:
        """Write ``results/<notebook>.json``; the path returned displays as nothing in a notebook."""
        from ..plotting import SavedFigure

        path = results_dir() / f"{self.notebook}.json"
        atomic_write_bytes(path, (json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n").encode())
        return SavedFigure(path)

    @property
    def smoke(self) -> bool:
        return self.profile != "full"

    def _shown(self, c: Claim) -> str:
        return f"{c.status} ({QUICK_BANNER})" if self.smoke and c.role != "context" else c.status

    def table(self) -> str:
        """Markdown table of the recorded claims (for display in the notebook)."""
        rows = [f"**{QUICK_BANNER.capitalize()}.** Every status below comes from the quick profile's tiny inputs.\n"
                if self.smoke else "",
                "| claim | role | direction: paper | reproduced [95% interval] | scenario range | assumption range "
                "| status | robustness | decided by | basis |", "|---|---|---|---|---|---|---|---|---|---|"]
        for c in self.claims:
            rows.append(f"| {c.description} | {role_label(c.role, c.of)} | {direction_text(c)} {c.unit} | "
                        f"{format_interval(c)} | {format_scenario_range(c)} | {format_range(c)} | {self._shown(c)} | "
                        f"{c.robustness} | {', '.join(c.decided_by) or '-'} | {c.basis} |")
        return "\n".join(r for r in rows if r)

    def conclusion(self) -> str:
        """A short markdown conclusion generated from the recorded claims (no number typed by hand): for
        every headline, the scenario that decides it."""
        lines = [f"**{QUICK_BANNER.capitalize()}**: the verdicts below are not results."] if self.smoke else []
        for c in self.claims:
            if c.reproduced is None:
                lines.append(f"- **{c.description}**: not run yet.")
                continue
            if c.role == "context":
                lines.append(f"- **{c.description}** (context, not judged): {format_interval(c)} {c.unit} beside "
                             f"{format_value(c.paper_value)} {c.unit}.")
                continue
            line = (f"- **{c.description}** ({c.role}{' of ' + c.of if c.of else ''}): {format_interval(c)} "
                    f"{c.unit} against the paper's {direction_text(c)} {c.unit}: **{self._shown(c)}**, "
                    f"{c.robustness} (assumption range {format_range(c)}; {_count(len(c.deviations), 'known deviation')})")
            if c.role == "headline":
                line += "; " + scenario_sentence(c)
            lines.append(line + (f". Why: {c.why}" if c.why else "."))
        return "\n".join(lines)


def scenario_sentence(c) -> str:
    """Which scenario the headline is computed at, the range over the others and what decides it."""
    c = c if isinstance(c, dict) else {**asdict(c), "axes": [a.to_dict() for a in c.axes]}
    if not c["axes"]:
        return f"no scenario axis ({c['no_axes']})"
    head = ", ".join(f"{k} = {v}" for k, v in c["headline_scenario"].items())
    sr = c["scenario_range"]
    out = f"headline scenario {head}"
    if sr and sr["n"] > 1:
        out += f"; over {sr['n']} scenarios {format_value(sr['lo'])}-{format_value(sr['hi'])} {c['unit']}"
    if [d for d in c["decided_by"] if d != "assumptions"]:
        out += f"; decided by: {', '.join(c['decided_by'])}"
    if c["unswept"]:
        out += f"; not swept: {', '.join(c['unswept'])}"
    return out


def role_label(role: str, of: str | None) -> str:
    return {"headline": "headline", "context": "context (not judged)"}.get(role, "alternative")


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def format_value(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, (list, tuple)):
        low, high = v
        if high is None:
            return f">= {format_value(low)}"
        return f"<= {format_value(high)}" if low is None else f"{format_value(low)}-{format_value(high)}"
    v = float(v)
    if v != 0 and (abs(v) >= 1e4 or abs(v) < 1e-2):
        return f"{v:.3g}"
    return f"{v:.3g}" if abs(v) < 100 else f"{v:.0f}"


def direction_text(c) -> str:
    """'about 7.5', 'at most 0.36', 'at least 1e4', 'within 2.6-7': the paper's value with its direction."""
    c = c if isinstance(c, dict) else asdict(c)
    d = c.get("direction") or infer_direction(c["paper_value"])
    pv = c["paper_value"]
    num = format_value(pv) if d in ("about", "within") else format_value(
        [x for x in (pv if isinstance(pv, (list, tuple)) else [pv]) if x is not None][0])
    return f"{d} {num}"


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


def format_scenario_range(c) -> str:
    c = c if isinstance(c, dict) else asdict(c)
    sr = c.get("scenario_range")
    if not sr or sr["n"] < 2:
        return "-" if not c.get("axes") else "not swept"
    return f"{format_value(sr['lo'])}-{format_value(sr['hi'])} ({sr['n']})"


def load_results(folder: Path) -> dict[str, dict]:
    """All ``results/*.json`` in ``folder`` keyed by notebook name (the scorecard itself excluded)."""
    out = {}
    for path in sorted(Path(folder).glob("*.json")):
        data = json.loads(path.read_text())
        out[data["notebook"]] = data
    return out


#: The fields every recorded claim must have (the schema test checks results/*.json against them).
CLAIM_FIELDS = tuple(Claim.__dataclass_fields__)


def rejudge(c: dict) -> dict:
    """Status, point status, robustness, decided_by and plausible statuses recomputed from a claim record
    (how tests check a results file against the shared rule)."""
    fields = {k: c[k] for k in CLAIM_FIELDS if k not in ("scenario_range", "decided_by", "plausible_statuses",
                                                        "unswept", "status", "point_status", "robustness")}
    fields["axes"] = [as_axis(a) for a in c["axes"]]
    fields["interval"] = dict(c["interval"]) if c["interval"] else None
    fields["assumption_range"] = dict(c["assumption_range"]) if c["assumption_range"] else None
    r = Claim(**fields)
    return dict(status=r.status, point_status=r.point_status, robustness=r.robustness, decided_by=r.decided_by,
                plausible_statuses=r.plausible_statuses)


def schema_problems(data: dict) -> list[str]:
    """What a results record lacks against the schema (empty list: valid). Used by the tests and the
    scorecard, which shows a record with problems loudly instead of trusting it."""
    problems = []
    if data.get("schema") != SCHEMA:
        problems.append(f"{data.get('notebook')}: record schema {data.get('schema', 1)}, expected {SCHEMA} "
                        "(re-run the notebook)")
        return problems
    for c in data.get("claims", []):
        cid = f"{data.get('notebook')}:{c.get('claim_id')}"
        missing = [f for f in CLAIM_FIELDS if f not in c]
        if missing:
            problems.append(f"{cid} lacks {', '.join(missing)}")
            continue
        if c["direction"] not in DIRECTIONS:
            problems.append(f"{cid}: direction must be one of {DIRECTIONS}")
        if c["role"] == "headline" and not c["axes"] and not str(c["no_axes"]).strip():
            problems.append(f"{cid}: a headline declares scenario axes or says why it has none")
        if c["reproduced"] is None:
            continue
        iv, ar = c["interval"], c["assumption_range"]
        if not isinstance(iv, dict) or set(iv) != {"lo", "hi", "method", "n"}:
            problems.append(f"{cid}: interval must have lo, hi, method, n")
        elif not iv["lo"] <= c["reproduced"] <= iv["hi"]:
            problems.append(f"{cid}: value outside its interval")
        if not isinstance(ar, dict) or set(ar) != {"lo", "hi", "swept"}:
            problems.append(f"{cid}: assumption_range must have lo, hi, swept")
        if not isinstance(c["variation"], dict) or set(c["variation"]) != {"unit", "covers", "not_covered"}:
            problems.append(f"{cid}: variation must have unit, covers, not_covered")
        if c["operating_point"].get("how") not in OPERATING_POINTS:
            problems.append(f"{cid}: operating_point.how must be one of {OPERATING_POINTS}")
        if c["role"] not in ROLES or (c["role"] == "alternative" and not c["of"]):
            problems.append(f"{cid}: role must be headline, alternative (with of) or context")
        for d in c["deviations"]:
            if set(d) != {"aspect", "paper", "here", "source", "effect"}:
                problems.append(f"{cid}: deviation {d} lacks fields")
        if c["status"] not in STATUSES or c["robustness"] not in ROBUSTNESS:
            problems.append(f"{cid}: unknown status {c['status']!r} or robustness {c['robustness']!r}")
    return problems
