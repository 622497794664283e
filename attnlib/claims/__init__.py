"""Claims: what a paper says, what this workbook reproduced, and the verdict over the scenarios that
can decide it.

- `rules`      the shared status rule: bands, direction (one-sided claims), gains, band edges.
- `scenarios`  scenario axes (`Axis`) and the verdict over their grid (`judge`).
- `record`     `Claim`, `Recorder` (results/<notebook>.json), formatting, schema checks, `rejudge`.
"""
from .record import (BASES, CLAIM_FIELDS, EFFECTS, MODELLED_VARIATION, OPERATING_POINTS, QUICK_BANNER, ROLES,
                     SCHEMA, SIGNIFICANT_DIGITS, SOURCES, STATUSES, Claim, Deviation, Recorder, _jsonable,
                     default_why, direction_text, format_interval, format_range, format_scenario_range,
                     format_value, load_results, rejudge, role_label, round_sig, scenario_sentence,
                     schema_problems)
from .rules import (DIRECTIONS, KINDS, POINT_BANDS, RATIO_BANDS, band, claims_a_gain, edges, infer_direction,
                    robustness, status, straddled_edges)
from .scenarios import ROBUSTNESS, UNKNOWN, Axis, grid, judge
