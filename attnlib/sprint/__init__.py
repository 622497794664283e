"""SPRINT (Yazdanbakhsh et al., MICRO 2022): in-memory pruning of attention keys + on-chip recomputation.

The method, in four steps (one query at a time):

1. **In-memory scoring.** Keys are kept, at reduced precision, in ReRAM crossbars. The query drives the
   crossbar and every bit line produces an approximate analog score q.k_j (`analog_scores`), with a
   stated noise model: key / query quantisation (limited precision), a relative conductance variation
   per cell (device variation) and additive bit-line read noise proportional to the full-scale signal.
2. **In-memory thresholding.** A comparator per bit line compares the analog score with the layer's
   threshold minus a safety margin: a 1-bit keep / prune decision (`prune_mask`). Thresholds are
   calibrated per layer on held-out text (`calibrate_thresholds`: the largest threshold that still keeps
   a target fraction of the exact attention mass); the margin is z times the measured standard deviation
   of the analog error on the same calibration text (`analog_error_std`).
3. **Fetch survivors only.** Only the keys/values that survive are moved to the small on-chip buffer;
   keys already fetched for the previous query are reused ("dynamic spatial locality", `fetch_rows`).
4. **Exact recomputation.** Scores of the survivors are recomputed exactly in digital, then softmax
   and the weighted sum of values over the survivors only (`sprint_attention`).

`SprintAttention` packages steps 1-4 as an attention function for `attnlib.models` (AttnFn contract) and
records, per layer, how many keys each query kept and how many it shared with the previous query.
`baseline_cost` / `sprint_cost` turn those real-model statistics into time and energy with the shared
`attnlib.hw` primitives plus the crossbar model `attnlib.hw.reram`.

The package: `attnlib.sprint.algorithm` (steps 1-4, keep statistics, calibration),
`attnlib.sprint.cost` (baselines, time and energy, the paper's S/M/L hardware), `attnlib.sprint.buffer`
(K/V buffer replacement policies on recorded keep masks), `attnlib.sprint.experiment` (real-model
helpers, cached probe correctness, headline aggregation with intervals), `attnlib.sprint.finetune`
(learned per-layer thresholds: fine-tuning with a soft gate and a pruning regulariser, LeOPArd-style,
then a hard prune through the in-memory scoring model). Everything is re-exported here.
"""
from __future__ import annotations

from .algorithm import *  # noqa: F401,F403
from .algorithm import __all__ as _a
from .cost import *  # noqa: F401,F403
from .cost import __all__ as _c
from .experiment import *  # noqa: F401,F403
from .experiment import __all__ as _e
from .buffer import *  # noqa: F401,F403
from .buffer import __all__ as _b
from .finetune import *  # noqa: F401,F403
from .finetune import __all__ as _f

__all__ = [*_a, *_c, *_e, *_b, *_f]
from . import accuracy, paper_claims  # noqa: E402,F401  (used as sp.paper_claims, sp.accuracy)
