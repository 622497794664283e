"""The shared status rule: band test, direction, gains, the interval rule and band edges.

A paper value is a number or a range; a claim states its **direction**:

- ``about``     the paper's number (a point): within the bands around it.
- ``at least``  "above 10,000x": anything at or above the number is inside it.
- ``at most``   "at most 0.36 points": anything at or below the number is inside it (judged one-sided:
                an interval entirely below the bound reproduces the claim as an upper bound).
- ``within``    a range ``(low, high)`` the paper states: inside it the distance is 0.

Outside the paper's number or range the band test is applied to the nearest end, per kind:

- ``ratio`` (speedups, reductions as "x", pruning ratios): r = value / paper; r in [0.8, 1.25] ->
  reproduced, r in [0.5, 2] -> partially, else not reproduced.
- ``percent`` (latency or energy reduction in %): |value - paper| <= 5 points -> reproduced, <= 10 ->
  partially, else not reproduced.
- ``accuracy`` (accuracy drop in points): |difference| <= 0.5 points -> reproduced, <= 1.0 ->
  partially, else not reproduced.

**Gains.** Where a ratio claim names a gain larger than the reproduced band itself (the nearest paper
number is above 1.25, the band's upper factor, and the direction is not "at most": a claimed 1.02x
cannot be told from 1x by the band and is judged on the ratio alone), the status also looks at the
gain, g = log(value) / log(paper): a value at or below
1x never reproduces a claimed gain (not reproduced, whatever r says); g below 0.25 -> not reproduced;
g below 0.5 or above 2 -> at best partially reproduced. So 1.00x against 1.94x is not reproduced, nor
is 1.05x against 1.3x (r = 0.81, but a sixth of the gain); 1.2x against 1.94x is partially reproduced. A percent claim
of a reduction larger than the tight band (5 points) is likewise not reproduced by a value at or below 0.

**The interval rule** applies the band test at both ends of the interval: both reproduced ->
reproduced; both within the partial band -> partially reproduced; both not reproduced on the same
side -> not reproduced; anything else -> inconclusive. `edges` lists the values where the band test
changes, so an inconclusive verdict can say which edge it straddles and how close the value is.
"""
from __future__ import annotations

import math

KINDS = ("ratio", "percent", "accuracy")
DIRECTIONS = ("about", "at least", "at most", "within")
#: Tolerances of the band test: kind -> (reproduced band, partially band).
RATIO_BANDS = ((0.8, 1.25), (0.5, 2.0))
POINT_BANDS = {"percent": (5.0, 10.0), "accuracy": (0.5, 1.0)}
#: Gain bands on g = log(value) / log(paper): below the first -> not reproduced; outside the second ->
#: at best partially reproduced.
GAIN_NOT, GAIN_FULL = 0.25, (0.5, 2.0)
_ORDER = ("reproduced", "partially reproduced", "not reproduced")


def check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"unknown claim kind {kind!r}; known kinds: {', '.join(KINDS)}")


def infer_direction(paper_value) -> str:
    """The direction a paper value implies when none is stated (number -> about, (low, None) -> at
    least, (None, high) -> at most, (low, high) -> within)."""
    if isinstance(paper_value, (list, tuple)):
        low, high = paper_value
        return "at least" if high is None else ("at most" if low is None else "within")
    return "about"


def target_range(paper_value, direction: str | None = None) -> tuple[float | None, float | None] | float:
    """The paper's number (about) or the (low, high) range the direction makes of it (None: open end)."""
    direction = direction or infer_direction(paper_value)
    if direction not in DIRECTIONS:
        raise ValueError(f"unknown direction {direction!r}; known: {', '.join(DIRECTIONS)}")
    is_range = isinstance(paper_value, (list, tuple))
    if direction == "within":
        if not is_range or len(paper_value) != 2:
            raise ValueError(f"direction 'within' needs a (low, high) paper range, got {paper_value!r}")
        return tuple(paper_value)
    if is_range:
        if infer_direction(paper_value) != direction:
            raise ValueError(f"paper range {paper_value!r} does not match direction {direction!r}")
        return tuple(paper_value)
    v = float(paper_value)
    return {"about": v, "at least": (v, None), "at most": (None, v)}[direction]


def _nearest(target, value: float) -> float | None:
    """The paper's number, or the nearest end of the target range (None when inside it)."""
    if isinstance(target, tuple):
        low, high = target
        if (low is None or value >= low) and (high is None or value <= high):
            return None
        return low if (low is not None and value < low) else high
    return float(target)


def _worse(a: str, b: str) -> str:
    return _ORDER[max(_ORDER.index(a), _ORDER.index(b))]


def _gain_cap(value: float, target: float) -> str:
    """The best status the gain allows for a ratio claim of a gain ``target`` > 1."""
    if value <= 1.0:
        return "not reproduced"
    g = math.log(value) / math.log(target)
    if g < GAIN_NOT:
        return "not reproduced"
    return "reproduced" if GAIN_FULL[0] <= g <= GAIN_FULL[1] else "partially reproduced"


def claims_a_gain(kind: str, paper_value, direction: str | None = None) -> bool:
    """Whether the claim names a gain the bands can tell from none: a ratio above the reproduced band's
    upper factor (1.25x) or a reduction above the tight percent band (5 points), not an upper bound."""
    direction = direction or infer_direction(paper_value)
    if direction == "at most" or kind == "accuracy":
        return False
    t = target_range(paper_value, direction)
    low = t[0] if isinstance(t, tuple) else t
    return low is not None and low > (RATIO_BANDS[0][1] if kind == "ratio" else POINT_BANDS["percent"][0])


def band(kind: str, paper_value, value: float, direction: str | None = None) -> tuple[str, int]:
    """The band test at one value: (status, side), side -1 below the paper's value or range, +1 above,
    0 inside it. Status is "reproduced", "partially reproduced" or "not reproduced"."""
    check_kind(kind)
    if not math.isfinite(value):
        return "not reproduced", 1
    t = target_range(paper_value, direction)
    target = _nearest(t, value)
    if target is None:
        return "reproduced", 0
    side = -1 if value < target else (1 if value > target else 0)
    gain = claims_a_gain(kind, paper_value, direction)
    if kind == "ratio":
        if target <= 0 or value <= 0:
            return "not reproduced", side
        r = value / target
        (lo1, hi1), (lo2, hi2) = RATIO_BANDS
        s = "reproduced" if lo1 <= r <= hi1 else ("partially reproduced" if lo2 <= r <= hi2 else "not reproduced")
        if gain and target > RATIO_BANDS[0][1]:
            s = _worse(s, _gain_cap(value, target))
        return s, side
    if gain and value <= 0:
        return "not reproduced", side
    diff = abs(value - target)
    tight, loose = POINT_BANDS[kind]
    if diff <= tight:
        return "reproduced", side
    return ("partially reproduced" if diff <= loose else "not reproduced"), side


def status(kind: str, paper_value, reproduced: float | None, interval: tuple[float, float] | None = None,
           direction: str | None = None) -> str:
    """The shared status rule. Without ``interval`` the band test at the value alone; with it (lo, hi)
    the rule on the interval (module docstring). ``reproduced=None`` -> "not run yet"."""
    check_kind(kind)
    if reproduced is None:
        return "not run yet"
    if interval is None:
        return band(kind, paper_value, reproduced, direction)[0]
    (s_lo, side_lo), (s_hi, side_hi) = (band(kind, paper_value, v, direction) for v in interval)
    if s_lo == s_hi == "reproduced":
        return "reproduced"
    if "not reproduced" not in (s_lo, s_hi):
        return "partially reproduced"
    if s_lo == s_hi == "not reproduced" and side_lo == side_hi:
        return "not reproduced"
    return "inconclusive"


def robustness(kind: str, paper_value, reproduced: float, assumption_range: tuple[float, float],
               direction: str | None = None) -> str:
    """"robust" when the band test gives one status at both ends of the assumption range and at the
    value, else "assumption-dependent" (scenario axes are judged in `attnlib.claims.scenarios`)."""
    found = {band(kind, paper_value, v, direction)[0] for v in (assumption_range[0], reproduced, assumption_range[1])}
    return "robust" if len(found) == 1 else "assumption-dependent"


def edges(kind: str, paper_value, direction: str | None = None) -> list[float]:
    """The values (in the claim's unit) where the band test changes status, ascending."""
    t = target_range(paper_value, direction)
    ends = [e for e in (t if isinstance(t, tuple) else (t,)) if e is not None]
    cands = set()
    for e in ends:
        if kind == "ratio":
            cands |= {e * f for pair in RATIO_BANDS for f in pair}
            if e > RATIO_BANDS[0][1]:
                cands |= {1.0, e ** GAIN_NOT, e ** GAIN_FULL[0], e ** GAIN_FULL[1]}
        else:
            cands |= {e + s * w for w in POINT_BANDS[kind] for s in (-1, 1)} | {0.0}
        cands.add(e)
    out = []
    for c in sorted(cands):
        eps = 1e-9 * max(1.0, abs(c))
        if band(kind, paper_value, c - eps, direction)[0] != band(kind, paper_value, c + eps, direction)[0]:
            out.append(c)
    return out


def straddled_edges(kind: str, paper_value, lo: float, hi: float, direction: str | None = None) -> list[float]:
    """The band edges strictly inside [lo, hi]: what an inconclusive interval straddles."""
    return [e for e in edges(kind, paper_value, direction) if lo < e < hi]
