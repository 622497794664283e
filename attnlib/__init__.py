"""attnlib: the shared library of the attention-accelerator reproduction workbook.

Rooms: `attention` (exact reference), `workloads` (model shapes), `models` / `data` / `evaluate` (real
pretrained models and text), `hw` (hardware primitives), one module per paper (`a3`, `sprint`,
`flat`, `token_picker`, `attmemo`), `claims` (recording results), `plotting`, `profiles`, `widgets`.
"""
from . import attention, claims, hw, paths, plotting, profiles, widgets, workloads

__version__ = "0.1.0"
__all__ = ["attention", "claims", "hw", "paths", "plotting", "profiles", "widgets", "workloads"]
