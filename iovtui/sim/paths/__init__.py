"""The three techniques, one class each, behind one interface (:class:`Technique`).

A technique is registered here by module name; one that is not built yet is
simply absent, and asking for it names the ones that exist.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from .base import Technique, UnknownTechnique

if TYPE_CHECKING:  # pragma: no cover
    from ..protocols import SimulationApi as Simulation

__all__ = ["TECHNIQUES", "available", "make_technique", "stage_table", "Technique", "UnknownTechnique"]

#: name -> (module, class); the order is the order of the keys 1/2/3 in the app
TECHNIQUES: dict[str, tuple[str, str]] = {
    "emulation": ("emulation", "Emulation"),
    "virtio": ("virtio", "Virtio"),
    "sriov": ("sriov", "SrIov"),
}


def _load(name: str) -> type[Technique] | None:
    mod, cls = TECHNIQUES[name]
    try:
        module = importlib.import_module(f"{__name__}.{mod}")
    except ModuleNotFoundError as e:
        if e.name == f"{__name__}.{mod}":
            return None
        raise
    return getattr(module, cls)


def available() -> list[str]:
    """The techniques that are built, in key order."""
    return [n for n in TECHNIQUES if _load(n) is not None]


def stage_table(tx: bool = False) -> list[tuple[str, tuple[str, ...]]]:
    """Each built technique's receive (or, with ``tx``, transmit) stages,
    numbered alike: stage n of one technique is the analogue of stage n of the
    others (SR-IOV's receive stages are the six steps of DOMAIN.md).  The
    narration and the path strip use these numbers."""
    return [(n, _load(n).tx_stages if tx else _load(n).stages) for n in available()]


def make_technique(name: str, sim: "Simulation") -> Technique:
    cls = _load(name) if name in TECHNIQUES else None
    if cls is None:
        have = ", ".join(available())
        if name in TECHNIQUES:
            raise UnknownTechnique(f"technique \"{name}\" is not built yet; available: {have}")
        raise UnknownTechnique(f"unknown technique \"{name}\"; available: {have}")
    return cls(sim)
