"""Follow one packet: a trace sink that picks the next frame to appear and
gathers what belongs to it as it moves — its buffer's GPA (and HPA under
SR-IOV), its descriptor, the VF that carried it, its IOMMU translation, the
VM exits on its VM while it was in flight, and its journey step by step.

Nothing here computes the model: it only reads the trace events the model
emits (``pkt``, ``gpa``, ``hpa``, ``desc``, ``queue``, ``vf``, ``rid`` fields).
"""

from __future__ import annotations

from dataclasses import dataclass

from .trace import TraceEvent

__all__ = ["Follower", "FollowView", "JOURNEY_LEN"]

#: how many of the packet's own steps the view keeps (the newest)
JOURNEY_LEN = 12
#: at most this many exits are remembered for highlighting (an overloaded
#: guest can take many exits while one frame waits)
EXITS_LEN = 64


@dataclass(frozen=True)
class FollowView:
    """The followed packet, frozen for one frame."""

    pkt: int | None                  # None: waiting for the next frame to appear
    vm: str = ""
    state: str = "waiting"           # waiting | in flight | delivered | dropped
    stage: int = 0                   # the path stage of its newest step
    queue: str = ""                  # "rx" / "tx"
    desc: int | None = None          # descriptor index (virtio head / e1000 or VF slot)
    gpa: int | None = None           # its buffer in guest-physical memory
    hpa: int | None = None           # where the IOMMU sent the DMA (SR-IOV)
    iotlb_hit: bool | None = None
    vf: str = ""                     # the VF the NIC switch chose (SR-IOV)
    rid: str = ""                    # that VF's requester ID (bus:dev.fn)
    fault: str = ""                  # the DMAR line if the IOMMU blocked it
    exits: tuple[int, ...] = ()      # trace seq of the exits on its VM while it was in flight
    exit_count: int = 0
    latency_ns: int | None = None
    journey: tuple[tuple[int, int, str], ...] = ()   # (t, stage, message), oldest first
    drop_reason: str = ""


class Follower:
    """A trace sink.  ``arm()`` asks for the next packet that appears after
    now; from then on every event naming it (and every exit on its VM until it
    is delivered or dropped) is collected.  ``view()`` freezes the state.

    Replay (step back) feeds the same events again from the start: ``reset``
    clears what was gathered but keeps the threshold, so the same packet is
    chosen again and the view is identical.
    """

    def __init__(self) -> None:
        self.armed = False
        self.threshold = -1          # follow the first packet with an id above this
        self.max_seen = -1           # the highest packet id seen so far
        self._clear()

    def _clear(self) -> None:
        self.pkt: int | None = None
        self.vm = ""
        self.state = "waiting"
        self.stage = 0
        self.queue = ""
        self.desc: int | None = None
        self.gpa: int | None = None
        self.hpa: int | None = None
        self.iotlb_hit: bool | None = None
        self.vf = ""
        self.rid = ""
        self.fault = ""
        self.exits: list[int] = []
        self.exit_count = 0
        self.latency_ns: int | None = None
        self.journey: list[tuple[int, int, str]] = []
        self.drop_reason = ""
        self._serial = 0
        self._view: FollowView | None = None
        self._view_serial = -1

    # -- control ------------------------------------------------------------------------
    def arm(self) -> None:
        """Follow the next packet to appear (one with an id not seen yet)."""
        self._clear()
        self.armed = True
        self.threshold = self.max_seen

    def stop(self) -> None:
        self.armed = False
        self._clear()

    def same_arming_as(self, other: "Follower") -> None:
        """This follower is a copy from earlier in the run; ``other`` is the
        live one.  If f was pressed in between, no packet above the live
        threshold existed yet at this copy's instant: it is waiting."""
        if (self.armed, self.threshold) != (other.armed, other.threshold):
            self.armed, self.threshold = other.armed, other.threshold
            self._clear()

    def reset(self) -> None:
        """A replay from the start is about to feed the same events again."""
        self.max_seen = -1
        self._clear()

    # -- the sink ---------------------------------------------------------------------------
    def __call__(self, ev: TraceEvent) -> None:
        d = ev.data
        pid = d.get("pkt")
        if pid is not None and pid > self.max_seen:
            self.max_seen = pid
        if not self.armed:
            return
        if self.pkt is None:
            if pid is None or pid <= self.threshold:
                return
            self.pkt, self.vm, self.state = pid, ev.vm, "in flight"
        if self.state != "in flight" or ev.vm != self.vm:
            return
        kind = ev.kind
        if kind == "exit":
            self.exit_count += 1
            self.exits.append(ev.seq)
            if len(self.exits) > EXITS_LEN:
                del self.exits[0]
            self._serial += 1
            return
        mine = pid == self.pkt
        if not mine:
            # the IOMMU's translation of its buffer, or the fault that blocked it
            gpa = d.get("gpa", d.get("addr"))
            if kind == "iommu" and gpa is not None and gpa == self.gpa and d.get("hpa") is not None:
                self.hpa, self.iotlb_hit = d["hpa"], d.get("hit")
                self._step(ev)
            elif kind == "fault" and gpa is not None and gpa == self.gpa:
                self.fault = ev.msg
                self._step(ev)
            return
        if d.get("queue"):
            self.queue = d["queue"]
        if d.get("desc") is not None:
            self.desc = d["desc"]
        if d.get("gpa") is not None:
            self.gpa = d["gpa"]
        if d.get("hpa") is not None:
            self.hpa = d["hpa"]
        if d.get("vf"):
            self.vf = d["vf"]
        if d.get("rid"):
            self.rid = d["rid"]
        if kind == "deliver":
            self.state = "delivered"
            self.latency_ns = d.get("latency_ns")
        elif kind == "drop":
            self.state = "dropped"
            self.drop_reason = d.get("reason", "")
        self._step(ev)

    def _step(self, ev: TraceEvent) -> None:
        if ev.stage:
            self.stage = ev.stage
        self.journey.append((ev.t, ev.stage, ev.msg))
        if len(self.journey) > JOURNEY_LEN:
            del self.journey[0]
        self._serial += 1

    # -- the frozen view --------------------------------------------------------------------
    def view(self) -> FollowView | None:
        if not self.armed:
            return None
        if self._view is None or self._view_serial != self._serial:
            self._view = FollowView(
                self.pkt, self.vm, self.state, self.stage, self.queue, self.desc, self.gpa, self.hpa,
                self.iotlb_hit, self.vf, self.rid, self.fault, tuple(self.exits), self.exit_count,
                self.latency_ns, tuple(self.journey), self.drop_reason)
            self._view_serial = self._serial
        return self._view
