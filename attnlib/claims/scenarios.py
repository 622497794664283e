"""Scenario axes: the structural choices that can decide a claim, and the verdict over their grid.

An `Axis` is one such choice (the baseline's data residency, a mapper's map space, the context length,
the platform, the CPU power charged): its options, the option(s) the paper describes with the card's
source label (or "unknown", when every option is plausible) and why it matters. A claim's value is
computed at every scenario of its grid (or a stated subset); `judge` then decides, from the point status
at each scenario:

- ``decided_by``: the axes along which two scenarios that differ in that axis alone get different
  statuses (plus "assumptions" when the assumption range flips it);
- the **plausible** scenarios: every axis at an option the paper is consistent with (a known option
  alone; all options where the paper's is unknown). When they disagree, the claim cannot be decided by
  this experiment and its status is "inconclusive", naming the axis;
- ``robustness``: "scenario-dependent" when an axis flips the status, else "assumption-dependent" when
  the assumption range does, else "axes not swept" when a declared axis was computed at one option
  only, else "robust".
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from itertools import product

from .rules import band

UNKNOWN = "unknown"
ROBUSTNESS = ("robust", "assumption-dependent", "scenario-dependent", "axes not swept")


@dataclass(frozen=True)
class Axis:
    """A structural choice that can decide a claim.

    name: what varies ("baseline residency"); options: its values as short labels; paper: the option
    the paper describes, a tuple of the options its text is consistent with, or "unknown" (all options
    plausible); source: the label of that reading ("paper", "secondary: <who>", "unconfirmed", or
    "unknown"); why: one line on why the axis can move the claim."""

    name: str
    options: tuple
    paper: object
    source: str
    why: str

    def __post_init__(self):
        object.__setattr__(self, "options", tuple(str(o) for o in self.options))
        if not self.name.strip() or not self.options or len(set(self.options)) != len(self.options):
            raise ValueError(f"axis {self.name!r}: needs a name and distinct options, got {self.options!r}")
        if not self.why.strip():
            raise ValueError(f"axis {self.name!r}: say why it can decide the claim (why)")
        bad = [o for o in self.plausible if o not in self.options]
        if bad:
            raise ValueError(f"axis {self.name!r}: paper option(s) {bad} not among its options {self.options}")
        label = self.source.strip("[] ").split(":")[0].strip()
        if label not in ("paper", "secondary", "unconfirmed", UNKNOWN):
            raise ValueError(f"axis {self.name!r}: source {self.source!r} must start with paper, secondary, "
                             "unconfirmed or unknown")
        if (self.paper == UNKNOWN) != (label == UNKNOWN):
            raise ValueError(f"axis {self.name!r}: an unknown paper option has source 'unknown' (and only it)")

    @property
    def plausible(self) -> tuple:
        """The options the paper's text is consistent with."""
        if self.paper == UNKNOWN:
            return self.options
        return tuple(str(p) for p in self.paper) if isinstance(self.paper, (list, tuple)) else (str(self.paper),)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["options"], d["paper"] = list(self.options), (list(self.paper) if isinstance(self.paper, tuple) else self.paper)
        return d


def as_axis(a) -> Axis:
    if isinstance(a, Axis):
        return a
    if isinstance(a, dict):
        return Axis(**{**a, "paper": tuple(a["paper"]) if isinstance(a["paper"], list) else a["paper"]})
    raise ValueError(f"an axis is an Axis or its dict, got {a!r}")


def grid(axes) -> list[dict]:
    """Every scenario of the axes' full grid, as {axis name: option}."""
    axes = [as_axis(a) for a in axes]
    return [dict(zip([a.name for a in axes], combo)) for combo in product(*[a.options for a in axes])]


def check_scenarios(claim_id: str, axes: list[Axis], scenarios: list[dict], headline: dict) -> None:
    """Raise if a scenario names an unknown axis or option, repeats, or the headline is not among
    them or not at the paper's option of an axis whose option the paper states."""
    names = [a.name for a in axes]
    seen = set()
    for s in scenarios:
        opts = s["options"]
        if sorted(opts) != sorted(names):
            raise ValueError(f"claim {claim_id!r}: scenario {opts} must set exactly the axes {names}")
        for a in axes:
            if opts[a.name] not in a.options:
                raise ValueError(f"claim {claim_id!r}: option {opts[a.name]!r} is not one of axis {a.name!r}'s "
                                 f"{a.options}")
        key = tuple(opts[n] for n in names)
        if key in seen:
            raise ValueError(f"claim {claim_id!r}: scenario {opts} given twice")
        seen.add(key)
    if tuple(headline.get(n) for n in names) not in seen:
        raise ValueError(f"claim {claim_id!r}: the headline scenario {headline} is not among its scenarios")
    for a in axes:
        if headline[a.name] not in a.plausible:
            raise ValueError(f"claim {claim_id!r}: the headline takes {a.name!r} = {headline[a.name]!r}, but the paper "
                             f"describes {a.plausible} ({a.source}); the headline is the paper's setting")


def judge(kind: str, paper_value, direction: str, axes: list[Axis], scenarios: list[dict],
          assumption_statuses: set[str]) -> dict:
    """The verdict over the scenario grid: point status per scenario, decided_by, the plausible
    statuses, robustness and the scenario range. ``scenarios``: [{"options": {...}, "value": v}]."""
    for s in scenarios:
        s["status"] = band(kind, paper_value, s["value"], direction)[0]
    decided = []
    for a in axes:
        others = [b.name for b in axes if b.name != a.name]
        groups: dict = {}
        for s in scenarios:
            groups.setdefault(tuple(s["options"][n] for n in others), set()).add(s["status"])
        if any(len(g) > 1 for g in groups.values()):
            decided.append(a.name)
    plausible = [s for s in scenarios if all(s["options"][a.name] in a.plausible for a in axes)]
    unswept = [a.name for a in axes if len({s["options"][a.name] for s in scenarios}) < 2]
    if len(assumption_statuses) > 1:
        decided.append("assumptions")
    if any(d != "assumptions" for d in decided):
        rob = "scenario-dependent"
    elif decided:
        rob = "assumption-dependent"
    elif unswept:
        rob = "axes not swept"
    else:
        rob = "robust"
    values = [s["value"] for s in scenarios]
    return dict(decided_by=decided, robustness=rob, unswept=unswept,
                plausible_statuses=sorted({s["status"] for s in plausible}),
                scenario_range=dict(lo=min(values), hi=max(values), n=len(values)))
