"""Read-only views the model hands to the UI (and to headless tools).

A technique builds these from its state and from the bytes in guest RAM; the
UI only lays them out.  All of them are frozen.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["RingView", "QueueInfo", "TableView"]


@dataclass(frozen=True)
class RingView:
    """One descriptor ring as it stands in guest RAM."""

    vm: str
    name: str                     # "rx" / "tx"
    kind: str                     # "virtio-split" | "virtio-packed" | "e1000-legacy" | "82599-adv"
    size: int
    columns: tuple[str, ...]      # e.g. ("idx", "addr", "len", "flags", "next")
    rows: tuple[tuple[str, ...], ...]
    owners: tuple[str, ...]       # per row: "driver" | "device"
    marks: tuple[tuple[str, str], ...]   # index registers: ("avail.idx", "4464"), ("head", "12") ...
    active: int = -1              # row the last event touched (-1: none)
    base_gpa: int = 0             # where the ring lives in guest RAM
    note: str = ""                # one line: e.g. "event idx on · NO_NOTIFY clear"


@dataclass(frozen=True)
class QueueInfo:
    """A queue as ``--dump-ram`` lists it in layout.json."""

    vm: str
    name: str
    kind: str
    size: int
    desc_gpa: int
    avail_gpa: int | None = None   # virtio only
    used_gpa: int | None = None    # virtio only
    event_idx: bool | None = None  # virtio only
    extra: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        d = {"vm": self.vm, "name": self.name, "kind": self.kind, "size": self.size,
             "desc_gpa": self.desc_gpa, "avail_gpa": self.avail_gpa, "used_gpa": self.used_gpa,
             "event_idx": self.event_idx}
        if self.kind == "virtio-packed":        # driver_event_gpa / device_event_gpa instead (extra)
            del d["avail_gpa"], d["used_gpa"]
        d.update(self.extra)
        return d


@dataclass(frozen=True)
class TableView:
    """A titled table (IOMMU contexts, NIC functions ...) plus free lines."""

    title: str
    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    lines: tuple[str, ...] = ()    # e.g. IOTLB summary, last DMAR faults, switch decisions
    idle_reason: str = ""          # set when the pane does not apply to the technique
    head: tuple[str, ...] = ()     # lines that matter most (a DMAR fault): shown above the table
    #: the whole table's totals as (label, number), e.g. the NIC's ("rx", 3780);
    #: the UI formats them (one line heading the pane)
    summary: tuple[tuple[str, int], ...] = ()
