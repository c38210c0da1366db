"""The interface every technique implements, and what they share."""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Any

from ..packet import strip_vlan
from ..views import QueueInfo, RingView, TableView

if TYPE_CHECKING:  # pragma: no cover
    from ..packet import Packet
    from ..vmm import Vm
    from ..protocols import SimulationApi as Simulation  # what a technique may call on the run

__all__ = ["Technique", "UnknownTechnique", "QDISC_LEN", "BUF_STRIDE", "buffer_pools", "NETDEV_BUDGET",
           "MAX_SOFTIRQ_RESTART", "MAX_SOFTIRQ_TIME_NS"]

#: the guest interface's txqueuelen
QDISC_LEN = 1000
#: guest buffers are 2 KiB apart (two per 4 KiB page)
BUF_STRIDE = 2048

# The guest's receive softirq (Linux 6.1 net/core/dev.c, kernel/softirq.c)
#: net.core.netdev_budget: frames one net_rx_action may take over all the NAPIs on its list
NETDEV_BUDGET = 300
#: net.core.netdev_budget_usecs: 2,000 µs, two jiffies at HZ = 1000
NETDEV_BUDGET_USECS = 2000
#: kernel/softirq.c: __do_softirq runs the pending softirqs again at most this many times …
MAX_SOFTIRQ_RESTART = 10
#: … and for at most 2 ms (MAX_SOFTIRQ_TIME), then hands them to ksoftirqd (wakeup_softirqd)
MAX_SOFTIRQ_TIME_NS = 2_000_000


def buffer_pools(mem, n: int) -> tuple[deque, deque]:
    """The guest driver's RX and TX buffers: ``n`` of each in their own regions."""
    rx_base = mem.alloc(BUF_STRIDE * n, 4096, "rx_buf", "rx buffers")
    tx_base = mem.alloc(BUF_STRIDE * n, 4096, "tx_buf", "tx buffers")
    return (deque(rx_base + BUF_STRIDE * i for i in range(n)),
            deque(tx_base + BUF_STRIDE * i for i in range(n)))


class UnknownTechnique(ValueError):
    """Asked for a technique that does not exist (the message lists those that do)."""


class Technique:
    """One I/O virtualization technique.

    Subclasses implement the data path; the simulation calls
    :meth:`receive_from_wire` when a frame's last bit reaches the physical
    port and :meth:`guest_send` when a guest application sends a frame.  A
    technique reports every packet exactly once through
    ``sim.guest_reads``/``sim.delivered``/``sim.transmit`` or
    ``sim.dropped``, and :meth:`in_flight` counts what it still holds.
    """

    #: CLI / JSON name
    name = ""
    #: the path strip: one short label per stage of the receive flow (stage n = stages[n-1])
    stages: tuple[str, ...] = ()
    #: the transmit path strip, numbered the same way (a TX event's stage n = tx_stages[n-1])
    tx_stages: tuple[str, ...] = ()
    #: the transmit stage of the frame leaving on the wire (the outside host receives it)
    tx_wire_stage = 0
    #: None, or a callable the simulation hands each frame from the wire first (it may
    #: change the frame's bytes: SR-IOV's [nic] unknown_unicast)
    readdress = None

    def __init__(self, sim: "Simulation") -> None:
        self.sim = sim
        self.engine = sim.engine
        self.metrics = sim.metrics
        self.vmm = sim.vmm
        self.costs = sim.costs
        self.vms = sim.vms
        self.preset = sim.preset

    # -- the data path ---------------------------------------------------------
    def setup(self) -> None:
        """Allocate rings and buffers in guest RAM and post RX buffers."""
        raise NotImplementedError

    def receive_from_wire(self, pkt: "Packet") -> None:
        raise NotImplementedError

    def guest_send(self, vm: "Vm", pkt: "Packet") -> None:
        raise NotImplementedError

    def in_flight(self) -> int:
        """Packets this technique holds right now (queues, rings, wire)."""
        raise NotImplementedError

    def host_busy_ns(self) -> int:
        """CPU time spent by host threads (device model, vhost, host stack)."""
        return 0

    # -- shared by the techniques whose host owns the NIC ------------------------
    def host_bridge(self, pkt: "Packet", by_mac: dict, queue_len: int, tap_of) -> Any:
        """The host's software bridge (emulation, virtio): pick the VM's port by
        destination MAC, check and strip its VLAN, and queue the frame on the
        VM's tap.  Returns the port (``by_mac`` value) or None if dropped."""
        port = by_mac.get(pkt.dst)
        if port is None:
            self.sim.dropped(pkt, "host bridge: no port has this destination MAC", 2)
            return None
        vlan = port.vm.vlan
        if pkt.vlan != vlan:
            self.sim.dropped(pkt, f"host bridge: VLAN {pkt.vlan or 'untagged'} is not {port.vm.name}'s "
                                  f"VLAN {vlan or 'untagged'}", 2)
            return None
        if pkt.vlan:
            strip_vlan(pkt)
        tap = tap_of(port)
        if len(tap) >= queue_len:
            if self.rx_ring_starved(port):
                # the backend stopped at the ring (no buffer the guest posted): the ring is the bottleneck
                self.sim.dropped(pkt, "tap queue full: the guest's RX ring has no free buffer", 2)
            else:
                self.sim.dropped(pkt, "tap queue full (the backend is not keeping up)", 2)
            return None
        return port

    def rx_ring_starved(self, port: Any) -> bool:
        """Is the backend stopped because the guest's RX ring has no buffer?"""
        return False

    def queue_for_xmit(self, port: Any, pkt: "Packet", ring_full: bool) -> None:
        """dev_queue_xmit: through the guest's qdisc while the driver's TX ring
        is full or frames already wait, else straight to the driver."""
        if ring_full or port.qdisc or port.tx_to_xmit:
            if len(port.qdisc) >= QDISC_LEN:
                self.sim.dropped(pkt, "guest qdisc full (the driver's TX ring is full)", 0)
                return
            port.qdisc.append(pkt)
            return
        self.schedule_xmit(port, pkt)

    def schedule_xmit(self, port: Any, pkt: "Packet") -> None:
        """The guest stack spends its per-frame time, then the driver's
        ``_xmit`` runs on the vCPU."""
        vm = port.vm
        now = self.engine.now
        if self.vmm.halted(vm, now):
            # the application's timer wakes the idle guest (no exit for a timer
            # that fires while the vCPU is blocked in KVM)
            now = self.vmm.wake(vm, "its timer (the application sends)", 0, now)
        end = vm.vcpu.reserve(now, int(self.costs["guest_tx_ns"]))
        port.tx_to_xmit += 1
        self.engine.at(end, self._xmit, port, pkt)

    # -- the guest's NET_RX softirq: net_rx_action, __do_softirq, ksoftirqd ----------------
    #: the guest driver's NAPI poll function (narration)
    NAPI_POLL = "the NAPI poll"

    def napi_repoll(self, port: Any, work: int, t: int) -> None:
        """``napi_poll`` (net/core/dev.c) saw the poll use its whole weight
        (``work`` = the weight, 64): NAPI stays scheduled, its interrupt
        stays off, and the poll runs again; nothing here costs vCPU time.

        ``net_rx_action`` moves it to its repoll list; being the only NAPI on
        this CPU's list (one RX queue per vCPU), the list is empty, so
        net_rx_action ends with ``netdev_budget`` (300) − ``work`` left and
        raises NET_RX again (the budget and its 2 jiffies, netdev_budget_usecs,
        bind only when several NAPIs share the CPU).  ``__do_softirq`` runs it
        again at once, up to MAX_SOFTIRQ_RESTART (10) runs within
        MAX_SOFTIRQ_TIME (2 ms); then ``wakeup_softirqd``: ksoftirqd/0 polls
        from then on, in its own ``__do_softirq`` runs with the same limits,
        until a poll finishes under its weight (``napi_complete_done``)."""
        runs = port.sirq_runs + 1
        deferred = runs >= MAX_SOFTIRQ_RESTART or t - port.sirq_start >= MAX_SOFTIRQ_TIME_NS
        tr = self.engine.trace
        if tr.on:
            vm = port.vm
            where = "ksoftirqd/0" if port.ksoftirqd else "the softirq"
            tr.emit(self.engine.now, "note", vm.name, 6,
                    f"{vm.name}: {self.NAPI_POLL} used its whole weight ({work} frames; netdev_budget "
                    f"{NETDEV_BUDGET} → {NETDEV_BUDGET - work} left): NAPI stays scheduled, interrupts stay off; "
                    f"net_rx_action raises NET_RX again ({where}, run {runs} of {MAX_SOFTIRQ_RESTART})",
                    queue="rx", napi="repoll", softirq_run=runs, ksoftirqd=port.ksoftirqd, weight=work)
            if deferred:
                why = (f"{MAX_SOFTIRQ_RESTART} runs (MAX_SOFTIRQ_RESTART)" if runs >= MAX_SOFTIRQ_RESTART
                       else f"{(t - port.sirq_start) / 1000:,.0f} µs (MAX_SOFTIRQ_TIME = 2 ms)")
                what = ("ksoftirqd/0 goes on with a new __do_softirq run (cond_resched: nothing else is "
                        "runnable)" if port.ksoftirqd else
                        "wakeup_softirqd: ksoftirqd/0 takes over NET_RX and polls from now on")
                tr.emit(self.engine.now, "note", vm.name, 6, f"{vm.name}: __do_softirq has run NET_RX for {why}: {what}",
                        queue="rx", napi="ksoftirqd", softirq_run=runs, ksoftirqd=True)
        if deferred:
            port.ksoftirqd = True
            port.sirq_start = t              # ksoftirqd's own __do_softirq run starts now
            runs = 0
        port.sirq_runs = runs

    def napi_done(self, port: Any, work: int, t: int) -> None:
        """The poll finished under its weight: ``napi_complete_done``; the
        driver re-enables its interrupt next.  A ksoftirqd that ran it sleeps."""
        if port.ksoftirqd:
            port.ksoftirqd = False
            tr = self.engine.trace
            if tr.on:
                vm = port.vm
                tr.emit(self.engine.now, "note", vm.name, 6,
                        f"{vm.name}: {self.NAPI_POLL} took {work} frame{'s' if work != 1 else ''}, under its "
                        f"weight: napi_complete_done; NET_RX no longer pending, ksoftirqd/0 sleeps",
                        queue="rx", napi="complete", ksoftirqd=False, weight=work)
        port.sirq_runs = 0
        port.sirq_start = t                  # virtnet_poll may schedule itself again at once

    # -- NAPI over a descriptor ring (e1000 legacy, SR-IOV VF 82599 advanced) -----------
    #: refill (and write the tail) once this many buffers wait (E1000_RX_BUFFER_WRITE,
    #: IXGBEVF_RX_BUFFER_WRITE: both 16)
    REFILL_EVERY = 16
    #: e1000_clean_rx_irq also refills at the end of every poll that cleaned a buffer;
    #: ixgbevf_clean_rx_irq does not: it refills at the top of its loop once
    #: ixgbevf_desc_unused() reaches 16, so fewer wait for the next poll
    REFILL_AT_POLL_END = True
    #: count each cleaned frame's bytes in ``port.rx_bytes`` / ``port.rx_packets``
    #: (the ring container an adaptive ITR reads, as ixgbevf's q_vector->rx)
    COUNT_RX_BYTES = False

    def legacy_napi(self, port: Any, done: int, cleaned: int, reading: tuple | None = None) -> None:
        """The guest's NAPI poll (e1000_clean / ixgbevf_poll): deliver the
        frame the stack finished now, reap the next descriptor with DD, refill
        every ``REFILL_EVERY``; at the end of the poll hand over to
        ``_napi_complete(port, t)`` (re-enable interrupts).  A descriptor
        whose frame never reached RAM (``rx_filled`` holds None: the DMA was
        blocked, yet the device wrote DD) goes to ``_stale_read``.

        One descriptor per step, each step when the vCPU is done with the one
        before; the poll loops over its steps in this one action for as long
        as nothing else is due before the next one (``Engine.go_on``), as
        e1000_clean_rx_irq / ixgbevf_clean_rx_irq loop over the ring up to
        the budget."""
        vm, rx = port.vm, port.rx
        eng = self.engine
        tr = eng.trace
        guest_reads = self.sim.guest_reads
        give_back = self._give_back
        reap = rx.reap
        go_on = eng.go_on
        budget = self.budget
        refill_at_end = self.REFILL_AT_POLL_END
        refill_every = self.REFILL_EVERY
        count_bytes = self.COUNT_RX_BYTES
        rx_ns = int(self.costs["guest_rx_ns"])
        vcpu = vm.vcpu
        filled = port.rx_filled
        now = eng.now
        while True:
            if reading is not None:
                pkt, gpa = reading
                reading = None
                guest_reads(vm, pkt, gpa, now)
                port.rx_reading = None
                give_back(port, gpa)
            if done == 0:
                self._clean_tx(port)
            if done < budget:
                got = reap()
                if got is not None:
                    slot, gpa, length = got
                    pkt = filled.pop(slot)
                    cleaned += 1
                    if pkt is None:
                        end = self._stale_read(port, slot, gpa, length, now)
                        give_back(port, gpa)
                        reading = None
                    else:
                        port.rx_reading = pkt
                        if tr.on:
                            tr.emit(now, "ring", vm.name, 6,
                                    f"{vm.name}'s NAPI poll sees DD on RX descriptor {slot} and reads frame "
                                    f"#{pkt.id} ({length:,} B) through its GPA 0x{gpa:x}", queue="rx", desc=slot,
                                    gpa=gpa, pkt=pkt.id)
                        end = vcpu.reserve(now, rx_ns)
                        reading = (pkt, gpa)
                        if count_bytes:
                            port.rx_bytes += length
                            port.rx_packets += 1
                    if (cleaned if refill_at_end else rx.unused()) >= refill_every:
                        end = self._refill(port, end)
                        cleaned = 0
                    done += 1
                    # the next step, in place if nothing else comes first
                    if go_on(end):
                        now = end
                        continue
                    eng.at(end, self.legacy_napi, port, done, cleaned, reading)
                    return
            t = self._refill(port, now) if cleaned and refill_at_end else now
            if done >= budget:
                # the weight is spent: the poll runs again (napi_poll's repoll)
                self.napi_repoll(port, done, t)
                if go_on(t):
                    now = t
                    done = cleaned = 0
                    continue
                eng.at(t, self.legacy_napi, port, 0, 0)
                return
            port.napi = False
            self.napi_done(port, done, t)
            self._napi_complete(port, t)
            return

    def _stale_read(self, port: Any, slot: int, gpa: int, length: int, now: int) -> int:
        """The driver found DD on a descriptor whose frame the device never
        wrote; returns when the vCPU is done with it (default: at once)."""
        return now

    # -- description -----------------------------------------------------------
    def options(self) -> dict[str, Any]:
        """The settings that shape this run (shown in the header and JSON)."""
        return {}

    def summary_extra(self) -> dict[str, Any]:
        """Figures a technique adds to the summary (e.g. virtio's ring cache lines when counted)."""
        return {}

    def label(self) -> str:
        """e.g. ``virtio (vhost off, event idx on)``."""
        return self.name

    # -- views for the UI and for --dump-ram -------------------------------------
    def queues(self) -> list[QueueInfo]:
        return []

    def ring_views(self, vms: "set[str] | None" = None) -> list[RingView]:
        """The rings' views: every VM's, or only those of the VMs named in
        ``vms`` (a frame for the app carries the rings it can show)."""
        return []

    def iommu_view(self) -> TableView:
        return TableView("IOMMU (VT-d)", (), (), idle_reason=(
            "No device is assigned to a guest: the host owns the NIC, so the IOMMU does no "
            "DMA remapping for this technique."))

    def nic_view(self) -> TableView:
        return TableView("NIC", (), (), idle_reason=(
            "No virtual function is in use: the host owns the physical NIC and forwards frames "
            "to the VM in software."))
