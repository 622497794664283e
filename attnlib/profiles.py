"""Run profiles: ``full`` (realistic sizes, regenerates the published figures) and ``quick``
(seconds, used by the tests). Every notebook derives its sizes from its profile through `settings`."""
from __future__ import annotations

from types import SimpleNamespace

PROFILES = ("quick", "full")


def check_profile(profile: str) -> str:
    """Return ``profile`` if known, else raise a ValueError naming the allowed profiles."""
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; allowed profiles: {', '.join(PROFILES)}")
    return profile


def settings(profile: str, *, quick: dict, full: dict) -> SimpleNamespace:
    """The sizes of ``profile`` as attributes, e.g. ``S = settings(profile, quick={"n": 8}, full={"n": 512})``."""
    check_profile(profile)
    if set(quick) != set(full):
        raise ValueError(f"quick and full settings must have the same keys: {sorted(set(quick) ^ set(full))}")
    return SimpleNamespace(profile=profile, **(quick if profile == "quick" else full))
