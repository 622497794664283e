"""Token-Picker (Park, Kang, Han, Kim, Shin, Kim, DAC 2024, arXiv 2407.15131): prune cached tokens whose
attention probability is provably tiny BEFORE their remaining key bits and their value are fetched.

Subpackage layout (everything is re-exported here, so ``from attnlib import token_picker as tp`` and
``tp.token_pick`` etc. keep working):

* `attnlib.token_picker.estimator` -- the algorithm: quantisation, Eq. 4 score bounds, the paper's
  out-of-order estimator (Eq. 5, the headline) and the sequential running-sum estimator (alternative),
  readable references and vectorised versions, input checks.
* `attnlib.token_picker.hardware` -- off-chip traffic per decode step and the memory-bound decode
  attention accelerator model (time, energy), with every constant sourced in `CONSTANTS`.
* `attnlib.token_picker.experiment` -- real-model hooks, long real-text windows, the statistics pass
  on the exact model, pruned-model perplexity runs, averaging conventions and intervals over windows.
* `attnlib.token_picker.matching` -- windows from Austen and Brown, one exact pass per window (KV cache of
  every prefix + statistics), decode quality as the last rows of one forward pass, paired t-intervals
  over windows, the quality-matched threshold by bisection (interval rule and point rule).
* `attnlib.token_picker.decode` -- the decode model with what the traffic ratio leaves out (bursts,
  row-buffer activations of scattered reads, gather/index overhead, PE limit, static energy).
* `attnlib.token_picker.paper_claims` -- the paper's values, directions, scenario axes, headline rule.
"""
from .estimator import *  # noqa: F401,F403
from .estimator import __all__ as _est_all
from .experiment import *  # noqa: F401,F403
from .experiment import __all__ as _exp_all
from .hardware import *  # noqa: F401,F403
from .hardware import __all__ as _hw_all
from .hardware import _kv_context  # noqa: F401
from .decode import *  # noqa: F401,F403
from .decode import __all__ as _dec_all
from .matching import *  # noqa: F401,F403
from .matching import __all__ as _match_all
from . import paper_claims  # noqa: F401

__all__ = [*_est_all, *_exp_all, *_hw_all, *_dec_all, *_match_all]
