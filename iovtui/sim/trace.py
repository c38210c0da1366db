"""Trace events: what happened, when, to whom, and one line saying why.

Every mechanism in the model reports through :class:`Trace`.  Emitting costs
nothing while no sink listens (callers test ``trace.on`` before building the
message), so a headless benchmark pays only for the model itself.
"""

from __future__ import annotations

import json
from collections import deque
from typing import Any, Callable, IO

__all__ = ["TraceEvent", "Trace", "TRACE_FORMAT_VERSION", "KINDS", "END_KIND"]

#: the kind of a trace file's closing record (not an event: it has no seq)
END_KIND = "end"

#: 2: a complete trace ends with a closing record ("kind": "end"); 1 had none
TRACE_FORMAT_VERSION = 2

#: The kinds of event the model emits.  ``stage`` on an event numbers the step
#: of the technique's path it belongs to (1-6 for the SR-IOV receive flow of
#: DOMAIN.md, and the analogous stages for emulation and virtio).
KINDS = (
    "offer",     # traffic generator hands a frame to the wire / the guest app
    "wire",      # frame on the physical link
    "switch",    # NIC embedded switch / host bridge decision
    "ring",      # descriptor or ring index change in guest RAM
    "kick",      # driver notifies the device
    "exit",      # a VM exit (reason name + number, cause, kernel/user, cost)
    "copy",      # a data copy by the host (VMM / vhost)
    "dma",       # a device DMA through the IOMMU
    "iommu",     # a translation (IOTLB hit / miss walk)
    "fault",     # DMAR fault, spoof drop, ...
    "irq",       # interrupt raised / injected / posted
    "deliver",   # the guest stack consumed the frame
    "drop",      # a frame was dropped (ring full, queue full, switch rule)
    "reg",       # an emulated device register access
    "note",      # anything else worth a line of narration
)


class TraceEvent:
    """One thing that happened.  ``data`` holds machine-readable fields."""

    __slots__ = ("t", "seq", "kind", "vm", "stage", "msg", "data")

    def __init__(self, t: int, seq: int, kind: str, vm: str, stage: int, msg: str, data: dict[str, Any]) -> None:
        self.t = t
        self.seq = seq
        self.kind = kind
        self.vm = vm
        self.stage = stage
        self.msg = msg
        self.data = data

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"t": self.t, "seq": self.seq, "kind": self.kind, "vm": self.vm,
                             "stage": self.stage, "msg": self.msg}
        d.update(self.data)
        return d

    def __repr__(self) -> str:  # pragma: no cover - debugging aid
        return f"TraceEvent({self.t}ns #{self.seq} {self.kind} {self.vm} [{self.stage}] {self.msg})"


class Trace:
    """Fan-out of trace events to any number of sinks."""

    __slots__ = ("on", "_sinks", "_seq")

    def __init__(self) -> None:
        self.on = False
        self._sinks: list[Callable[[TraceEvent], None]] = []
        self._seq = 0

    def add_sink(self, sink: Callable[[TraceEvent], None]) -> None:
        self._sinks.append(sink)
        self.on = True

    def remove_sink(self, sink: Callable[[TraceEvent], None]) -> None:
        self._sinks.remove(sink)
        self.on = bool(self._sinks)

    def emit(self, t: int, kind: str, vm: str, stage: int, msg: str, **data: Any) -> None:
        if not self.on:
            return
        self._seq += 1
        ev = TraceEvent(t, self._seq, kind, vm, stage, msg, data)
        for sink in self._sinks:
            sink(ev)


class RingSink:
    """Keeps the last ``maxlen`` events (bounded memory for the UI)."""

    def __init__(self, maxlen: int = 2000) -> None:
        self.events: deque[TraceEvent] = deque(maxlen=maxlen)
        self.total = 0

    def __call__(self, ev: TraceEvent) -> None:
        self.events.append(ev)
        self.total += 1


class ListSink:
    """Keeps every event (tests, replay)."""

    def __init__(self) -> None:
        self.events: list[TraceEvent] = []

    def __call__(self, ev: TraceEvent) -> None:
        self.events.append(ev)


class JsonlSink:
    """Writes one JSON object per line; the first line is a header and, once
    the run is over, :meth:`end` writes the closing record (``"kind": "end"``)
    that tells a complete trace from one that was cut short."""

    def __init__(self, fh: IO[str], header: dict[str, Any]) -> None:
        self.fh = fh
        self.events = 0
        head = {"format": "iovtui-trace", "version": TRACE_FORMAT_VERSION}
        head.update(header)
        fh.write(json.dumps(head, separators=(",", ":")) + "\n")

    def __call__(self, ev: TraceEvent) -> None:
        self.events += 1
        self.fh.write(json.dumps(ev.to_dict(), separators=(",", ":")) + "\n")

    def end(self, t: int, **fields: Any) -> None:
        """The closing record: virtual time ``t`` the run ended at, the number
        of events written, and ``fields`` (e.g. whether the run completed)."""
        rec = {"kind": "end", "t": t, "events": self.events, **fields,
               "msg": f"end of trace: {self.events:,} events"}
        self.fh.write(json.dumps(rec, separators=(",", ":")) + "\n")


class SizeSink:
    """Counts the bytes a :class:`JsonlSink` would write (an estimate of a
    trace's size from a short prefix of the run)."""

    def __init__(self) -> None:
        self.bytes = 0
        self.events = 0

    def __call__(self, ev: TraceEvent) -> None:
        self.events += 1
        self.bytes += len(json.dumps(ev.to_dict(), separators=(",", ":"))) + 1
