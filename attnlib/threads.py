"""Torch intra-op thread count for a block of code: `torch_threads`."""
from __future__ import annotations

from contextlib import contextmanager

import torch

__all__ = ["torch_threads"]


@contextmanager
def torch_threads(n: int | None):
    """Run the block with ``n`` torch intra-op threads (None or 0: leave the count as it is); the previous
    count is restored afterwards. Yields the count in effect."""
    before = torch.get_num_threads()
    if n is not None and int(n) < 0:
        raise ValueError(f"threads must be >= 0, got {n}")
    if n:
        torch.set_num_threads(int(n))
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(before)
