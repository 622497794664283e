"""FLAT (Kao et al., ASPLOS'23): the fused Logit-Attend dataflow, as the paper evaluated it.

Subpackage layout:

* `conventions` -- shapes, the FLAT platforms, the two cost conventions (FLAT's: softmax free, energy =
  DRAM traffic of the two products; full accounting) and energy from raw counts.
* `dataflows`   -- the three dataflows of v7 Table 3 (Naive, FLEX-Opt, FLAT-Opt) as vectorised searches,
  single-mapping costs for brute-force checks, and the layer's other GEMMs for end-to-end time.
* `experiments` -- the evaluation grid, comparisons and geometric means, the assumption sweep, the
  FuseMax cross-check.
* `measured`    -- a wall-clock check of fused row tiles vs unfused attention with torch.
"""
from .conventions import (CONVENTIONS, FLAT, FLAT_BATCH, FLAT_SEQS, FULL, FUSEMAX_CLOCK_HZ, SOFTMAX_PASSES,
                          SPILL_PASSES, AttentionShape, Convention, Hardware, combine, convention, energy_j,
                          platform)
from .dataflows import (DATAFLOWS, GRANULARITIES, MAP_SPACES, RESIDENCIES, STATIONARITIES, Mapping, flat_candidates, flat_cost, flat_eval,
                        other_layers, search, search_flat, search_flat_opt, search_unfused, unfused_cost)
from .experiments import (ASSUMPTIONS, FLAT_EVAL_MODELS, FUSEMAX_MODELS, PAPER_SHARE, SCARCE_BUFFERS, SHARE_SEQS,
                          REPLICA_NAMES, TABLE4_BUFFERS, at_fusemax_mapping, claim_range, compare, geomean,
                          grid_points, replica_table, run, scenario_tables, speedup_vs_n, summary, sweep, timed,
                          with_energy, with_replica_traffic)
from .measured import markdown_table, measure_fused_vs_unfused

__all__ = [
    "CONVENTIONS", "FLAT", "FULL", "FLAT_BATCH", "FLAT_SEQS", "FUSEMAX_CLOCK_HZ", "SOFTMAX_PASSES", "SPILL_PASSES",
    "AttentionShape", "Convention", "Hardware", "combine", "convention", "energy_j", "platform",
    "DATAFLOWS", "GRANULARITIES", "MAP_SPACES", "RESIDENCIES", "STATIONARITIES", "Mapping", "flat_candidates", "flat_cost", "flat_eval",
    "other_layers", "search", "search_flat", "search_flat_opt", "search_unfused", "unfused_cost",
    "ASSUMPTIONS", "FLAT_EVAL_MODELS", "FUSEMAX_MODELS", "PAPER_SHARE", "SCARCE_BUFFERS", "SHARE_SEQS",
    "REPLICA_NAMES", "TABLE4_BUFFERS", "at_fusemax_mapping", "claim_range", "compare", "geomean", "grid_points",
    "replica_table", "run", "scenario_tables", "speedup_vs_n", "summary", "sweep", "timed", "with_energy",
    "with_replica_traffic", "markdown_table", "measure_fused_vs_unfused",
]
