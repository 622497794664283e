"""A3 (Ham et al., HPCA 2020, arXiv 2002.10941): approximate attention by greedy candidate search.

``import attnlib.a3 as a3`` gives the whole API:
- `attnlib.a3.algorithm`   the greedy candidate search (step-by-step reference and vectorised), the
                           AttnFn for real models, candidate/recall sweeps, the threshold conversion;
- `attnlib.a3.hardware`    the base / approximate pipeline cost model (modelled) and the CPU
                           baseline (measured here, with repetitions, thread counts and a load check);
- `attnlib.a3.babi`        generated bAbI-style stories (tasks 1 and 2) for the memory-network workload;
- `attnlib.a3.memn2n`      the end-to-end memory network trained on them, exact or A3 attention over its memory;
- `attnlib.a3.experiments` the notebook's orchestration: operating-point rules, cached probe runs,
                           speedups with intervals and assumption ranges, energy efficiency vs CPU.
"""
from . import algorithm, babi, experiments, hardware, memn2n  # noqa: F401
from .algorithm import *  # noqa: F401,F403
from .algorithm import ALGORITHM_VERSION  # noqa: F401
from .experiments import *  # noqa: F401,F403
from .hardware import *  # noqa: F401,F403
from .hardware import CPU_POWER_SOURCES  # noqa: F401
