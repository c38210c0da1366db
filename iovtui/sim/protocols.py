"""What the traffic generator and the techniques may call on the run.

``sim.world.Simulation`` wires everything together and so sits above
``sim.traffic`` and ``sim.paths``; they, in turn, report back to it (a frame
offered, delivered, dropped, handed to the host, sent on the wire) and read
its shared parts (engine, metrics, VMM, costs, VMs, preset).  This module
names exactly that surface, below all of them, so a technique or the
generator can be read with only what sits below it and no import reaches
back up into ``world`` (tests/test_layering.py checks there is no circle).

Nothing here runs: ``Simulation`` satisfies :class:`SimulationApi`
structurally; the types are for reading and for a type checker.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:  # pragma: no cover
    from .engine import Engine
    from .metrics import Metrics
    from .packet import FrameFactory, Packet
    from .preset import Preset
    from .vmm import HostProfile, Vm, Vmm

__all__ = ["SimulationApi"]


class SimulationApi(Protocol):
    """The run as a technique (``sim.paths.*``) or ``sim.traffic.Traffic`` sees it."""

    # -- shared parts (read) ----------------------------------------------------
    engine: "Engine"              # virtual clock, event heap, RNG, trace
    metrics: "Metrics"            # counters of the run
    vmm: "Vmm"                    # exits, interrupt delivery, EOI
    costs: dict[str, Any]         # the one cost table, with the preset's overrides
    host: "HostProfile"           # APICv / x2APIC / VT-d posted interrupts
    vms: "list[Vm]"               # the guests, in preset order
    preset: "Preset"
    frames: "FrameFactory"        # builds the wire bytes of a packet
    packets_target: int           # how many packets the generator offers

    # -- the generator hands a packet to the run ----------------------------------
    def offer(self, pkt: "Packet") -> None: ...

    # -- a technique reports each packet exactly once -----------------------------
    def wire_time(self, size: int) -> int: ...
    def transmit(self, pkt: "Packet", ready: int) -> int: ...
    def delivered(self, pkt: "Packet", t: int) -> None: ...
    def dropped(self, pkt: "Packet", reason: str, stage: int = 0) -> None: ...
    def to_host(self, pkt: "Packet", why: str, stage: int = 0) -> None: ...
    def guest_reads(self, vm: "Vm", pkt: "Packet", gpa: int, t: int) -> None: ...
