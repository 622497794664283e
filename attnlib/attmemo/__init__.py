"""AttMEMO (Feng et al., arXiv 2301.09262): memoising attention probabilities across inputs.

Three parts (the import API of the former single module is kept: everything is re-exported here):

* `perlayer` -- the first engine (issue 8): a memory-mapped attention database (`MemmapStore`), an
  embedding of each layer's query (`ChunkEmbedder`), one faiss lookup per layer, a hit skipping QK^T and
  softmax only (`MemoEngine`, plugged in through `attnlib.models.replaced_attention`), the selective
  memoisation performance model, timing helpers and the claims-v2 interval helpers.
* `fastpath` -- the later design (issue 16): a layer-by-layer encoder forward (`FastEncoder`) whose hits
  skip the Q and K projections, QK^T and softmax; one lookup per input (`PerInputMemo`, headline) or one
  per layer (`PerLayerMemo`, alternative).
* `lookup` -- keys, faiss indexes, TV distance, the calibrated hit threshold, the map store and the
  Siamese MLP embedding; `workload` -- near-duplicate campaigns in real e-mail and the timing protocol.
* issue 26: `engine` -- the lean per-input engine (fused key, measured-cheapest exact search, warm map
  views) and the lookup-free ceiling; `bench` -- the factors' timing grid run in separate processes, with
  an idle check on the machine's busy time; `rmodel` -- R(h) = h s - (1 - h) m with intervals over
  processes and repetitions; `paper_claims` -- the paper's values, scenario axes and claim records.
"""
from .perlayer import *  # noqa: F401,F403
from .perlayer import __all__ as _perlayer_all
from .perlayer import ALIGN, FORMAT, VERSION, _as_tensor, _chunk_weights, _median_time  # noqa: F401  (tests)
from .fastpath import FastEncoder, PerInputMemo, PerLayerMemo, additive_mask
from .lookup import InputIndex, LayerIndex, MapStore, SiameseKeys, TVCalibration, pooled_raw, tv_distance
from .workload import nearest_jaccard, shingles, time_variants
from .experiment import (VARIANTS, batch_groups, calibration_pairs, count_stalls, layer_raws, lengths_of, maps_of, memo_embed,
                         time_cell, torch_threads)

__all__ = list(_perlayer_all) + ["FastEncoder", "PerInputMemo", "PerLayerMemo", "additive_mask", "InputIndex",
                                 "LayerIndex", "MapStore", "SiameseKeys", "TVCalibration", "pooled_raw",
                                 "tv_distance", "nearest_jaccard", "shingles", "time_variants",
                                 "calibration_pairs", "layer_raws", "lengths_of", "maps_of", "memo_embed", "time_cell",
                                 "torch_threads", "batch_groups", "count_stalls", "VARIANTS"]
