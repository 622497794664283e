"""A3 (Ham et al., HPCA 2020, arXiv 2002.10941): approximate attention by greedy candidate search.

``import attnlib.a3 as a3`` gives the whole API:
- `attnlib.a3.algorithm`   the greedy candidate search (step-by-step reference and vectorised), the
                           AttnFn for real models, candidate/recall sweeps, the threshold conversion;
- `attnlib.a3.hardware`    the base / approximate pipeline cost model (modelled) and the CPU
                           baseline (measured here, with repetitions, thread counts and a load check);
- `attnlib.a3.babi`        generated bAbI-style stories (tasks 1 and 2) for the memory-network workload;
- `attnlib.a3.memn2n`      the end-to-end memory network trained on them, exact or A3 attention over its memory;
- `attnlib.a3.experiments` the notebook's orchestration: operating-point rules, cached probe runs,
                           speedups with intervals and assumption ranges, energy efficiency vs CPU;
- `attnlib.a3.cpu_timing`  the CPU baseline's kernels (numpy per query / batched, compiled per-query C)
                           and the idle check, runnable in a separate process;
- `attnlib.a3.paper_claims` the paper's values, scenario axes, headline rules and the matched-point table.
"""
from . import algorithm, babi, cpu_timing, experiments, hardware, memn2n, paper_claims  # noqa: F401
from .algorithm import *  # noqa: F401,F403
from .algorithm import ALGORITHM_VERSION  # noqa: F401
from .experiments import *  # noqa: F401,F403
from .hardware import *  # noqa: F401,F403
from .hardware import CPU_POWER_SOURCES  # noqa: F401
