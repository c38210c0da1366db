"""virtio-net over split virtqueues, with QEMU's userspace backend or vhost-net.

Receive flow (the stages the path strip lights):
  1. the guest driver posts RX buffers (WRITE descriptors) on the avail ring
  2. a frame reaches the host NIC; the host bridge forwards it to the VM's tap
  3. the backend (QEMU's virtio-net, or the vhost-net kernel worker) pops avail
  4. it copies virtio_net_hdr + frame into the buffer's GPA — the one copy —
     and publishes a used element
  5. unless the ring rules suppress it, it notifies: irqfd → KVM injects
  6. the guest's NAPI poll reads the used ring and the frame at the same GPA,
     then refills (and kicks only if the device asked for a kick)

Transmit: the guest writes header + frame into a TX buffer, makes it available
and kicks (MMIO notify → EPT_MISCONFIG, or a legacy I/O port write →
IO_INSTRUCTION) only when the ring rules say the device is waiting; the
backend copies the frame out to the tap and the host sends it.
"""

from __future__ import annotations

import struct
from collections import deque
from typing import TYPE_CHECKING

from ..engine import Resource
from ..packet import Packet
from ..views import QueueInfo, RingView
from ..virtqueue import (VIRTIO_NET_HDR_LEN, VRING_AVAIL_F_NO_INTERRUPT, VRING_DESC_F_NEXT,
                         VRING_DESC_F_WRITE, VRING_USED_F_NO_NOTIFY, Virtqueue)
from .base import Technique, buffer_pools

if TYPE_CHECKING:  # pragma: no cover
    from ..vmm import Vm
    from ..world import Simulation

__all__ = ["Virtio", "VirtioNic"]

#: virtio_net_hdr v1: flags, gso_type (GSO_NONE), hdr_len, gso_size, csum_start, csum_offset, num_buffers
_HDR = struct.Struct("<BBHHHHH")
RX_HDR = _HDR.pack(0, 0, 0, 0, 0, 0, 1)
TX_HDR = _HDR.pack(0, 0, 0, 0, 0, 0, 0)
RX_BUF_LEN = VIRTIO_NET_HDR_LEN + 1518   # Linux "small" receive buffers: GOOD_PACKET_LEN + header
TAP_QUEUE_LEN = 1000                     # the tap device's txqueuelen
VHOST_BUDGET = 256                       # VHOST_NET_WEIGHT in packets


class VirtioNic:
    """One VM's virtio-net device: two queues in guest RAM plus the host side."""

    def __init__(self, tech: "Virtio", vm: "Vm") -> None:
        self.tech = tech
        self.vm = vm
        opts = tech.opts
        n = opts["queue_size"]
        mem = vm.mem
        self.rxq = Virtqueue(mem, "rx", n, opts["event_idx"])
        self.txq = Virtqueue(mem, "tx", n, opts["event_idx"])
        self.rx_pool, self.tx_pool = buffer_pools(mem, n)
        # host side
        self.backend = Resource(f"{'vhost' if opts['vhost'] else 'qemu'}:{vm.name}")
        self.tap: deque[tuple[int, Packet]] = deque()
        self.rx_scheduled = False
        self.rx_waiting_kick = False
        self.rx_filled: dict[int, Packet] = {}     # buffer GPA -> frame the device wrote there
        self.rx_reading: Packet | None = None      # the frame the guest stack is reading now
        self.rx_run = 0
        self.napi_active = False
        # transmit
        self.qdisc: deque[Packet] = deque()
        self.tx_stopped = False
        self.tx_running = False
        self.tx_sent: dict[int, Packet] = {}       # buffer GPA -> frame made available
        self.tx_run = 0
        self.tx_to_xmit = 0                        # packets between guest_send and xmit


class Virtio(Technique):
    name = "virtio"
    stages = ("guest posts RX buffer", "host bridge → tap", "backend pops avail",
              "copy into guest buffer", "irqfd → inject", "guest reads frame")

    def __init__(self, sim: "Simulation") -> None:
        super().__init__(sim)
        self.opts = dict(self.preset.virtio)
        o = self.opts
        if o["vhost"]:
            o["ioeventfd"] = True  # vhost-net is driven by the kick eventfd
        c = self.costs
        self.pkt_ns = int(c["vhost_pkt_ns"] if o["vhost"] else c["qemu_virtio_pkt_ns"])
        self.backend_name = "vhost" if o["vhost"] else "QEMU"
        self.kick_reason = "EPT_MISCONFIG" if o["notify"] == "mmio" else "IO_INSTRUCTION"
        self.kick_user = not o["ioeventfd"]
        self.budget = o["napi_budget"]
        self.host_rx = Resource("host rx softirq")
        self.host_tx = Resource("host tx")
        self.nics: list[VirtioNic] = []
        self.by_mac: dict[str, VirtioNic] = {}
        self.wakeup_ns = int(c["wakeup_ns"])
        self.host_stack_ns = int(c["host_stack_ns"])
        self._rx_costs: dict[int, int] = {}
        self.vhost = o["vhost"]
        self.requeue_ns = int(c["vhost_requeue_ns"])
        self.guest_rx_ns = int(c["guest_rx_ns"])

    # -- description ---------------------------------------------------------------
    def options(self) -> dict:
        o = self.opts
        return {"vhost": o["vhost"], "event_idx": o["event_idx"], "queue_size": o["queue_size"],
                "notify": o["notify"], "ioeventfd": o["ioeventfd"]}

    def label(self) -> str:
        o = self.opts
        return (f"virtio (vhost {'on' if o['vhost'] else 'off'}, "
                f"event idx {'on' if o['event_idx'] else 'off'})")

    def host_busy_ns(self) -> int:
        return (self.host_rx.busy_ns + self.host_tx.busy_ns
                + sum(n.backend.busy_ns for n in self.nics))

    # -- set-up --------------------------------------------------------------------
    def setup(self) -> None:
        for vm in self.vms:
            nic = VirtioNic(self, vm)
            self.nics.append(nic)
            self.by_mac[vm.mac] = nic
            # virtnet_open → try_fill_recv: fill the whole RX ring, then kick once
            while nic.rx_pool and nic.rxq.num_free:
                gpa = nic.rx_pool.popleft()
                nic.rxq.add_buf(gpa, RX_BUF_LEN, True, gpa)
            tr = self.engine.trace
            if tr.on:
                tr.emit(0, "ring", vm.name, 1,
                        f"{vm.name}'s driver posts {nic.rxq.num - nic.rxq.num_free} RX buffers "
                        f"(WRITE descriptors) · avail.idx = {nic.rxq.avail_idx()}",
                        queue="rx", avail_idx=nic.rxq.avail_idx())
            if nic.rxq.kick_prepare():
                self._kick(nic, "RX", 0)
            # the backend has buffers: it stops asking for kicks until it runs dry
            nic.rxq.disable_notify()

    # -- receive -------------------------------------------------------------------
    def receive_from_wire(self, pkt: Packet) -> None:
        now = self.engine.now
        tr = self.engine.trace
        ready = self.host_rx.reserve(now, self.host_stack_ns)
        nic = self.host_bridge(pkt, self.by_mac, TAP_QUEUE_LEN, _tap_of)
        if nic is None:
            return
        vm = nic.vm
        nic.tap.append((ready, pkt))
        if tr.on:
            tr.emit(now, "switch", vm.name, 2,
                    f"frame #{pkt.id} reaches the host NIC; the host bridge forwards it by MAC "
                    f"{pkt.dst} to {vm.name}'s tap ({len(nic.tap)} queued)", pkt=pkt.id,
                    dst=pkt.dst, vlan=vm.vlan)
        if not nic.rx_scheduled and not nic.rx_waiting_kick:
            nic.rx_scheduled = True
            nic.rx_run = 0
            self.engine.at(ready + self.wakeup_ns + self._rx_cost(pkt), self._backend_rx, nic)

    def _rx_cost(self, pkt: Packet) -> int:
        cost = self._rx_costs.get(pkt.size)
        if cost is None:
            cost = self._rx_costs[pkt.size] = self.pkt_ns + self.vmm.copy_cost(VIRTIO_NET_HDR_LEN + pkt.size)
        return cost

    def _backend_rx(self, nic: VirtioNic) -> None:
        """The backend finishes one frame: pop avail, copy, publish used, notify."""
        now = self.engine.now
        tr = self.engine.trace
        vm = nic.vm
        _ready, pkt = nic.tap[0]
        q = nic.rxq
        popped = q.pop()
        if popped is None and q.enable_notify():
            popped = q.pop()
            q.disable_notify()
        if popped is None:
            # no buffer: wait for the guest's kick; the tap keeps filling meanwhile
            nic.rx_scheduled = False
            nic.rx_waiting_kick = True
            if tr.on:
                tr.emit(now, "ring", vm.name, 3,
                        f"{self.backend_name}: {vm.name}'s RX ring has no buffers (avail.idx = "
                        f"last_avail_idx = {q.last_avail_idx}); re-enables kicks and waits",
                        queue="rx")
            return
        tap = nic.tap
        tap.popleft()
        head, gpa, buflen, _flags = popped
        n = VIRTIO_NET_HDR_LEN + pkt.size
        nic.backend.busy_ns += self._rx_costs[pkt.size]
        if n > buflen:
            q.push(head, 0)
            self.sim.dropped(pkt, f"RX buffer of {buflen} B too small for {n} B", 4)
        else:
            vm.mem.write(gpa, RX_HDR + pkt.frame, self.backend_name)
            m = self.metrics
            m.copies += 1
            m.copy_bytes += n
            pkt.copies += 1
            q.push(head, n)
            nic.rx_filled[gpa] = pkt
            if tr.on:
                tr.emit(now, "ring", vm.name, 3,
                        f"{self.backend_name} pops avail[{(q.last_avail_idx - 1) & 0xFFFF}] → "
                        f"desc {head} (GPA 0x{gpa:x}, {buflen} B, WRITE)",
                        queue="rx", desc=head, gpa=gpa, qemu_event="virtqueue_pop", pkt=pkt.id)
                tr.emit(now, "copy", vm.name, 4,
                        f"{self.backend_name} copies virtio_net_hdr (12 B) + frame #{pkt.id} "
                        f"({pkt.size} B) into GPA 0x{gpa:x} — the one copy; used.idx → {q.used_idx}",
                        queue="rx", desc=head, gpa=gpa, bytes=n, pkt=pkt.id, qemu_event="virtqueue_flush")
        self._notify(nic, q, "rx")
        # next frame
        nic.rx_run += 1
        if not tap:
            nic.rx_scheduled = False
            return
        if self.vhost and nic.rx_run >= VHOST_BUDGET:
            nic.rx_run = 0
            now += self.requeue_ns
        ready, nxt = tap[0]
        self.engine.at((now if now > ready else ready) + self._rx_cost(nxt), self._backend_rx, nic)

    def _notify(self, nic: VirtioNic, q: Virtqueue, which: str) -> None:
        m = self.metrics
        tr = self.engine.trace
        vm = nic.vm
        if not q.should_notify():
            m.notify_suppressed += 1
            if tr.on:
                why = (f"used_event = {q.used_event()} not crossed" if q.event_idx
                       else "driver set NO_INTERRUPT")
                tr.emit(self.engine.now, "irq", vm.name, 5,
                        f"{self.backend_name}: no interrupt for {which} — {why}", queue=which, notified=False)
            return
        m.notify_sent += 1
        if tr.on:
            tr.emit(self.engine.now, "irq", vm.name, 5,
                    f"{self.backend_name} signals the {which} irqfd (virtio_notify)",
                    queue=which, qemu_event="virtio_notify", notified=True)
        start = self.vmm.deliver_irq(vm, which, f"virtio-net {which}", stage=5)
        if start is not None:
            self.engine.at(start, self._guest_irq, nic, which)

    def _guest_irq(self, nic: VirtioNic, which: str) -> None:
        """vring_interrupt: disable callbacks and schedule NAPI (rx) or clean (tx)."""
        vm = nic.vm
        end = vm.vcpu.reserve(self.engine.now, int(self.costs["guest_irq_ns"]))
        if which == "rx":
            nic.rxq.disable_cb()
        self.engine.at(end, self._guest_eoi, nic, which)

    def _guest_eoi(self, nic: VirtioNic, which: str) -> None:
        """The handler returns and writes EOI; NAPI (or TX clean-up) runs next."""
        end = self.vmm.ack_irq(nic.vm, which, stage=5)
        if which == "rx":
            if not nic.napi_active:
                nic.napi_active = True
                self.engine.at(end, self._napi_rx, nic, 0)
        else:
            self.engine.at(end, self._tx_clean, nic)

    def _napi_rx(self, nic: VirtioNic, done: int, reading: tuple | None = None) -> None:
        """virtnet_poll: one used buffer per event, up to the NAPI budget.

        ``reading`` is the frame the stack finished with at this moment: it is
        delivered now and its buffer goes back to the guest's pool."""
        vm = nic.vm
        q = nic.rxq
        now = self.engine.now
        if reading is not None:
            pkt, gpa = reading
            self.sim.guest_reads(vm, pkt, gpa + VIRTIO_NET_HDR_LEN, now)
            nic.rx_reading = None
            nic.rx_pool.append(gpa)
        if done < self.budget:
            got = q.get_buf()
            if got is not None:
                gpa, length, head = got
                pkt = nic.rx_filled.pop(gpa)
                nic.rx_reading = pkt
                end = vm.vcpu.reserve(now, self.guest_rx_ns)
                tr = self.engine.trace
                if tr.on:
                    tr.emit(now, "ring", vm.name, 6,
                            f"{vm.name}'s NAPI poll takes used[{(q.last_used_idx - 1) & 0xFFFF}] → desc {head} "
                            f"({length} B) and reads frame #{pkt.id} at GPA 0x{gpa + VIRTIO_NET_HDR_LEN:x}",
                            queue="rx", desc=head, gpa=gpa, pkt=pkt.id)
                self.engine.at(end, self._napi_rx, nic, done + 1, (pkt, gpa))
                return
        # the poll ends: refill, then complete or keep polling
        t = self._refill(nic, now)
        if done >= self.budget:
            self.engine.at(t, self._napi_rx, nic, 0)
            return
        q.enable_cb_prepare()
        if q.more_used():
            q.disable_cb()
            self.engine.at(t, self._napi_rx, nic, 0)
        else:
            nic.napi_active = False

    def _refill(self, nic: VirtioNic, now: int) -> int:
        """try_fill_recv when more than half the ring (or budget) is free."""
        q = nic.rxq
        if self.preset.faults["ring_full"]:
            return now
        if q.num_free <= min(self.budget, q.num) // 2:
            return now
        vm = nic.vm
        added = 0
        while nic.rx_pool and q.num_free:
            gpa = nic.rx_pool.popleft()
            q.add_buf(gpa, RX_BUF_LEN, True, gpa)
            added += 1
        t = vm.vcpu.reserve(now, int(self.costs["guest_refill_ns"]) * added)
        tr = self.engine.trace
        if tr.on:
            tr.emit(now, "ring", vm.name, 1,
                    f"{vm.name}'s driver refills {added} RX buffer{'s' if added != 1 else ''} · avail.idx = {q.avail_idx_shadow}",
                    queue="rx", added=added)
        if q.kick_prepare():
            t = self._kick(nic, "RX", t)
        else:
            self.metrics.kicks_suppressed += 1
            if tr.on:
                why = (f"avail_event = {q.avail_event()} not crossed" if q.event_idx
                       else "device set NO_NOTIFY")
                tr.emit(now, "kick", vm.name, 1, f"{vm.name} does not kick: {why}", queue="rx", kicked=False)
        return t

    def _kick(self, nic: VirtioNic, which: str, at: int) -> int:
        """virtqueue_notify: the doorbell write exits; ioeventfd wakes the backend."""
        vm = nic.vm
        self.metrics.kicks += 1
        where = "ioeventfd" if not self.kick_user else "QEMU"
        end = self.vmm.exit(vm, self.kick_reason, f"virtio kick ({which} queue notify → {where})",
                            user=self.kick_user, at=at, stage=1 if which == "RX" else 0)
        tr = self.engine.trace
        if tr.on:
            tr.emit(end, "kick", vm.name, 1 if which == "RX" else 0,
                    f"{vm.name} kicks the {which} queue (virtio_queue_notify)",
                    queue=which.lower(), qemu_event="virtio_queue_notify", kicked=True)
        if which == "RX":
            if nic.rx_waiting_kick:
                nic.rx_waiting_kick = False
                if nic.tap:
                    nic.rx_scheduled = True
                    nic.rx_run = 0
                    self.engine.at(end + self.wakeup_ns + self._rx_cost(nic.tap[0][1]), self._backend_rx, nic)
        elif not nic.tx_running:
            nic.tx_running = True
            nic.tx_run = 0
            self.engine.at(end + self.wakeup_ns, self._backend_tx, nic)
        return end

    # -- transmit ------------------------------------------------------------------
    def guest_send(self, vm: "Vm", pkt: Packet) -> None:
        nic = self.nics[vm.index]
        self.queue_for_xmit(nic, pkt, nic.tx_stopped)

    def _qdisc_run(self, nic: VirtioNic) -> None:
        """The qdisc hands the next waiting packet to start_xmit."""
        if nic.qdisc and not nic.tx_stopped and not nic.tx_to_xmit:
            self.schedule_xmit(nic, nic.qdisc.popleft())

    def _xmit(self, nic: VirtioNic, pkt: Packet) -> None:
        """start_xmit: reclaim used TX buffers, add this one, kick if asked."""
        nic.tx_to_xmit -= 1
        self._free_old_xmit(nic)
        q = nic.txq
        vm = nic.vm
        now = self.engine.now
        if not nic.tx_pool or q.num_free == 0:
            nic.qdisc.appendleft(pkt)
            self._stop_queue(nic)
            return
        gpa = nic.tx_pool.popleft()
        vm.mem.write(gpa, TX_HDR + pkt.frame, "guest")
        q.add_buf(gpa, VIRTIO_NET_HDR_LEN + pkt.size, False, gpa)
        nic.tx_sent[gpa] = pkt
        tr = self.engine.trace
        if tr.on:
            tr.emit(now, "ring", vm.name, 0,
                    f"{vm.name}'s driver puts frame #{pkt.id} at GPA 0x{gpa:x} on the TX ring · "
                    f"avail.idx = {q.avail_idx_shadow}", queue="tx", gpa=gpa, pkt=pkt.id)
        if q.num_free == 0:
            self._stop_queue(nic)
        if q.kick_prepare():
            self._kick(nic, "TX", now)
        else:
            self.metrics.kicks_suppressed += 1
            if tr.on:
                why = (f"avail_event = {q.avail_event()} not crossed" if q.event_idx
                       else "device set NO_NOTIFY")
                tr.emit(now, "kick", vm.name, 0, f"{vm.name} does not kick: {why}", queue="tx", kicked=False)
        self._qdisc_run(nic)

    def _stop_queue(self, nic: VirtioNic) -> None:
        nic.tx_stopped = True
        if not nic.txq.enable_cb_delayed():
            # enough were used meanwhile: clean and go on
            self._tx_clean(nic)

    def _free_old_xmit(self, nic: VirtioNic) -> None:
        q = nic.txq
        while (got := q.get_buf()) is not None:
            gpa = got[0]
            nic.tx_pool.append(gpa)

    def _tx_clean(self, nic: VirtioNic) -> None:
        """TX completion (interrupt or delayed callback): reclaim and restart."""
        nic.txq.disable_cb()
        self._free_old_xmit(nic)
        if nic.tx_stopped and nic.txq.num_free:
            nic.tx_stopped = False
            self._qdisc_run(nic)

    def _backend_tx(self, nic: VirtioNic) -> None:
        """The backend drains the TX ring: pop, copy out to the tap, publish used."""
        q = nic.txq
        vm = nic.vm
        now = self.engine.now
        tr = self.engine.trace
        if nic.tx_run == 0:
            q.disable_notify()
        popped = q.pop()
        if popped is None:
            if q.enable_notify():
                q.disable_notify()
                popped = q.pop()
        if popped is None:
            nic.tx_running = False
            return
        head, gpa, length, _flags = popped
        pkt = nic.tx_sent.pop(gpa)
        frame = vm.mem.read(gpa + VIRTIO_NET_HDR_LEN, length - VIRTIO_NET_HDR_LEN)
        cost = self.pkt_ns + self.vmm.copy_cost(length)
        end = nic.backend.reserve(now, cost)
        self.metrics.copy(length - VIRTIO_NET_HDR_LEN)
        pkt.copies += 1
        if frame != pkt.frame:
            self.metrics.corrupt += 1
        q.push(head, 0)
        if tr.on:
            tr.emit(now, "copy", vm.name, 0,
                    f"{self.backend_name} pops desc {head} and copies frame #{pkt.id} "
                    f"({pkt.size} B) from GPA 0x{gpa + VIRTIO_NET_HDR_LEN:x} to the tap — the one copy",
                    queue="tx", desc=head, gpa=gpa, pkt=pkt.id, qemu_event="virtqueue_pop")
        ready = self.host_tx.reserve(end, self.host_stack_ns)
        self.sim.transmit(pkt, ready)
        self._notify(nic, q, "tx")
        nic.tx_run += 1
        delay = 0
        if self.opts["vhost"] and nic.tx_run % VHOST_BUDGET == 0:
            delay = int(self.costs["vhost_requeue_ns"])
        self.engine.at(end + delay, self._backend_tx, nic)

    # -- accounting ------------------------------------------------------------------
    def in_flight(self) -> int:
        return sum(len(n.tap) + len(n.rx_filled) + (n.rx_reading is not None) + len(n.qdisc)
                   + len(n.tx_sent) + n.tx_to_xmit for n in self.nics)

    # -- views -------------------------------------------------------------------------
    def queues(self) -> list[QueueInfo]:
        out = []
        for nic in self.nics:
            for q in (nic.rxq, nic.txq):
                out.append(QueueInfo(nic.vm.name, q.name, "virtio-split", q.num, q.desc, q.avail, q.used,
                                     q.event_idx, {"hdr_len": VIRTIO_NET_HDR_LEN}))
        return out

    def ring_views(self) -> list[RingView]:
        return [ring_view(nic.vm.name, q) for nic in self.nics for q in (nic.rxq, nic.txq)]


def _tap_of(nic: VirtioNic) -> deque:
    return nic.tap


def _flags(f: int) -> str:
    parts = [n for bit, n in ((VRING_DESC_F_NEXT, "N"), (VRING_DESC_F_WRITE, "W"), (4, "I")) if f & bit]
    return "|".join(parts) or "–"


def ring_view(vm: str, q: Virtqueue) -> RingView:
    """The virtqueue as its bytes in guest RAM say, plus both sides' shadows."""
    used_pending = set()
    idx = q.last_used_idx
    ram_used = q.used_idx_ram()
    while idx != ram_used:
        used_pending.add(q.mem.u32(q.used + 4 + 8 * (idx % q.num)))
        idx = (idx + 1) & 0xFFFF
    rows = []
    owners = []
    for i in range(q.num):
        addr, ln, fl, nxt = q.read_desc(i)
        rows.append((str(i), f"0x{addr:08x}", str(ln), _flags(fl), str(nxt) if fl & VRING_DESC_F_NEXT else "–"))
        if i in used_pending:
            owners.append("used")
        else:
            owners.append(q.owner(i))
    af, uf = q.avail_flags(), q.used_flags()
    marks = [("avail.idx", str(q.avail_idx())), ("used.idx", str(q.used_idx_ram())),
             ("last_avail", str(q.last_avail_idx)), ("last_used", str(q.last_used_idx)),
             ("num_free", str(q.num_free))]
    if q.event_idx:
        marks += [("used_event", str(q.used_event())), ("avail_event", str(q.avail_event()))]
    note = (f"event idx {'on' if q.event_idx else 'off'} · avail.flags "
            f"{'NO_INTERRUPT' if af & VRING_AVAIL_F_NO_INTERRUPT else '0'} · used.flags "
            f"{'NO_NOTIFY' if uf & VRING_USED_F_NO_NOTIFY else '0'}")
    return RingView(vm, q.name, "virtio-split", q.num, ("idx", "addr", "len", "flags", "next"),
                    tuple(rows), tuple(owners), tuple(marks), q.last_touched, q.desc, note)
