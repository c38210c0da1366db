"""virtio-net over split virtqueues, with vhost-net or QEMU's userspace backend.

The backend is vhost-net unless a preset says ``virtio.vhost = false``: libvirt
uses it whenever /dev/vhost-net exists.

Receive flow (the stages the path strip lights):
  1. the guest driver posts RX buffers (WRITE descriptors) on the avail ring:
     mergeable buffers sized from a running average of packet length
     (VIRTIO_NET_F_MRG_RXBUF, ``get_mergeable_buf_len``), or 1,530 B small ones
  2. a frame reaches the host NIC; the host bridge forwards it to the VM's tap
  3. the backend pops avail: vhost's kernel worker (``handle_rx``), or QEMU's
     main loop (``tap_send`` → ``virtio_net_receive_rcu``)
  4. it copies virtio_net_hdr + frame into the buffer's GPA — vhost straight
     from the tap's socket (1 copy), QEMU after a ``read()`` of the tap into its
     own buffer (2 copies) — and publishes used entries: vhost in batches
     (``vhost_net_signal_used`` once ``done_idx`` > VHOST_NET_BATCH = 64, and at
     the end of every run), QEMU once per packet (``virtqueue_flush``)
  5. unless the ring rules suppress it, it signals: vhost's call eventfd →
     irqfd, or QEMU's ``msix_notify`` (KVM_SIGNAL_MSI); KVM delivers the MSI-X
  6. the guest's NAPI poll reads the used ring and the frame at the same GPA,
     then refills (and kicks only if the device asked for a kick)

Transmit (Linux's TX NAPI, ``napi_tx = true``): ``start_xmit`` disables TX
callbacks, frees completed buffers and re-arms them with
``virtqueue_enable_cb_delayed`` (used_event at 3/4 of the outstanding buffers),
adds header + frame and kicks (MMIO notify → EPT_MISCONFIG, or a legacy I/O
port write → IO_INSTRUCTION) when the ring rules say the device is waiting.
The backend copies the frame out to the tap (1 copy with either backend) and
publishes the used entries (vhost in batches of 64, QEMU per packet); the TX
completion interrupt runs ``virtnet_poll_tx``.  The queue stops when fewer than
2 + MAX_SKB_FRAGS = 19 descriptors are free and restarts at 19.

A backend run is a few engine actions, not one per packet: from the moment
the worker is free it takes every frame that is ready in one action up to the
next point where the guest can see something (used.idx published, the run's
end), and that action is scheduled at exactly that moment.  So the used ring
and its index change when the real backend changes them; the frame bytes of a
batch land in their (still device-owned) buffers when the batch starts.
"""

from __future__ import annotations

import struct
from collections import deque
from typing import TYPE_CHECKING

from ..packet import Packet
from ..views import QueueInfo, RingView
from ..virtqueue import (VIRTIO_NET_HDR_LEN, VRING_AVAIL_F_NO_INTERRUPT, VRING_DESC_F_NEXT,
                         VRING_DESC_F_WRITE, VRING_USED_F_NO_NOTIFY, Virtqueue)
from ..ringlines import CountingVirtqueue, LineCounter
from ..virtqueue_packed import PackedVirtqueue
from .base import Technique, buffer_pools

if TYPE_CHECKING:  # pragma: no cover
    from ..vmm import Vm
    from ..protocols import SimulationApi as Simulation  # what a technique may call on the run

__all__ = ["Virtio", "VirtioNic", "VHOST_NET_BATCH", "VHOST_NET_PKT_WEIGHT", "VHOST_NET_WEIGHT",
           "TX_STOP_FREE", "mergeable_min_buf_len", "mergeable_buf_len"]

#: virtio_net_hdr_mrg_rxbuf: flags, gso_type (GSO_NONE), hdr_len, gso_size, csum_start, csum_offset, num_buffers
_HDR = struct.Struct("<BBHHHHH")
TX_HDR = _HDR.pack(0, 0, 0, 0, 0, 0, 0)
#: the 10 bytes of virtio_net_hdr the tap supplies; without MRG_RXBUF the
#: backend skips num_buffers (vhost's iov_iter_advance past vnet_hdr_sz)
RX_HDR10 = TX_HDR[:10]
#: with MRG_RXBUF: num_buffers = 1
RX_HDR = _HDR.pack(0, 0, 0, 0, 0, 0, 1)
TAP_QUEUE_LEN = 1000                     # the tap device's txqueuelen

# drivers/vhost/net.c
VHOST_NET_BATCH = 64                     # used entries published / signal checked per batch
VHOST_NET_PKT_WEIGHT = 256               # packets per worker run before it requeues
VHOST_NET_WEIGHT = 0x80000               # bytes per worker run (512 KiB)
# QEMU
QEMU_TX_BURST = 256                      # virtio-net's x-txburst: packets per virtio_net_flush_tx
TAP_SEND_BURST = 50                      # net/tap.c tap_send: packets per main-loop callback
_NO_LIMIT = 1 << 62

# drivers/net/virtio_net.c
MAX_SKB_FRAGS = 17
TX_STOP_FREE = 2 + MAX_SKB_FRAGS         # netif_stop_subqueue below this many free descriptors
GOOD_PACKET_LEN = 14 + 4 + 1500          # ETH_HLEN + VLAN_HLEN + ETH_DATA_LEN
SMALL_BUF_LEN = VIRTIO_NET_HDR_LEN + GOOD_PACKET_LEN   # add_recvbuf_small
IP_MAX_MTU = 0xFFFF
PAGE_SIZE = 4096
L1_CACHE_BYTES = 64
EWMA_WEIGHT_SHIFT = 6                    # DECLARE_EWMA(pkt_len, 0, 64)


def mergeable_min_buf_len(num: int) -> int:
    """``mergeable_min_buf_len``: big_packets (QEMU offers guest TSO), so a
    64 KiB packet must fit in the ring; never below GOOD_PACKET_LEN."""
    buf_len = VIRTIO_NET_HDR_LEN + 14 + 4 + IP_MAX_MTU
    min_buf_len = -(-buf_len // num)
    return max(max(min_buf_len, VIRTIO_NET_HDR_LEN) - VIRTIO_NET_HDR_LEN, GOOD_PACKET_LEN)


def mergeable_buf_len(avg: int, min_buf_len: int) -> int:
    """``get_mergeable_buf_len`` (no XDP headroom): header + the average
    packet length clamped to [min_buf_len, PAGE_SIZE - header], cache-aligned."""
    ln = VIRTIO_NET_HDR_LEN + min(max(avg, min_buf_len), PAGE_SIZE - VIRTIO_NET_HDR_LEN)
    return (ln + L1_CACHE_BYTES - 1) & ~(L1_CACHE_BYTES - 1)


class VirtioNic:
    """One VM's virtio-net device: two queues in guest RAM plus the host side."""

    def __init__(self, tech: "Virtio", vm: "Vm") -> None:
        self.tech = tech
        self.vm = vm
        opts = tech.opts
        n = opts["queue_size"]
        mem = vm.mem
        if opts["ring"] == "packed":
            self.rxq = PackedVirtqueue(mem, "rx", n, opts["event_idx"])
            self.txq = PackedVirtqueue(mem, "tx", n, opts["event_idx"])
            for q in (self.rxq, self.txq):      # the ring narrates its bit flips itself
                q.trace, q.clock, q.vm = tech.engine.trace, tech.engine, vm.name
                if opts["count_ring_lines"]:
                    q.lines = LineCounter(tech.engine)
        elif opts["count_ring_lines"]:
            self.rxq = CountingVirtqueue(mem, "rx", n, opts["event_idx"], lines=LineCounter(tech.engine))
            self.txq = CountingVirtqueue(mem, "tx", n, opts["event_idx"], lines=LineCounter(tech.engine))
        else:
            self.rxq = Virtqueue(mem, "rx", n, opts["event_idx"])
            self.txq = Virtqueue(mem, "tx", n, opts["event_idx"])
        self.rx_pool, self.tx_pool = buffer_pools(mem, n)
        self.min_buf_len = mergeable_min_buf_len(n)
        self.avg_pkt_len = 0                       # rq->mrg_avg_pkt_len (EWMA internal)
        # host side: vhost's one worker thread per device, or QEMU's main loop
        self.backend = tech.vmm.resource(f"{'vhost' if opts['vhost'] else 'qemu'}:{vm.name}")
        self.tap: deque[tuple[int, Packet]] = deque()
        self.rx_running = False
        self.rx_waiting_kick = False
        self.rx_heads: list[tuple[int, int]] = []  # vq->heads[0..done_idx): filled, not yet published
        self.rx_run_pkts = 0
        self.rx_run_bytes = 0
        self.rx_filled: dict[int, Packet] = {}     # buffer GPA -> frame the device wrote there
        self.rx_reading: Packet | None = None      # the frame the guest stack is reading now
        self.napi_active = False
        # the NET_RX softirq running its NAPI (Technique.napi_repoll)
        self.sirq_runs = 0
        self.sirq_start = 0
        self.ksoftirqd = False
        # transmit
        self.qdisc: deque[Packet] = deque()
        self.tx_stopped = False
        self.tx_running = False
        self.tx_heads: list[tuple[int, int]] = []
        self.tx_run_pkts = 0
        self.tx_run_bytes = 0
        self.tx_sent: dict[int, Packet] = {}       # buffer GPA -> frame made available
        self.tx_to_xmit = 0                        # packets between guest_send and xmit
        self.tx_napi_active = False
        #: queues whose interrupt handler has started and not yet written EOI
        #: (the vector is in the ISR), and those raised again meanwhile (IRR)
        self.in_service: set[str] = set()
        self.irr_again: set[str] = set()

    def rx_buf_len(self) -> int:
        """The length of the next RX buffer the driver posts."""
        if self.tech.mrg_rxbuf:
            return mergeable_buf_len(self.avg_pkt_len, self.min_buf_len)
        return SMALL_BUF_LEN


class Virtio(Technique):
    name = "virtio"
    NAPI_POLL = "virtnet_poll"
    stages = ("guest posts RX buffer", "host bridge → tap", "backend pops avail",
              "copy into guest buffer", "irqfd → inject", "guest reads frame")
    #: transmit, numbered alike (stage 4 publishes used entries and 5 signals, as on receive)
    tx_stages = ("driver adds frame to avail", "kick → ioeventfd", "backend copies to tap",
                 "backend publishes used", "irqfd → inject", "frame on the wire, TX freed")
    tx_wire_stage = 6

    def __init__(self, sim: "Simulation") -> None:
        super().__init__(sim)
        self.opts = dict(self.preset.virtio)
        o = self.opts
        if o["ring"] == "packed":
            # one descriptor ring: the driver makes a slot available, the device marks it used
            self.stages = ("guest posts RX buffer", "host bridge → tap", "backend reads an AVAIL slot",
                           "copy into guest buffer", "irqfd → inject", "guest reads frame")
            self.tx_stages = ("driver makes a slot AVAIL", "kick → ioeventfd", "backend copies to tap",
                              "backend marks slots USED", "irqfd → inject", "frame on the wire, TX freed")
        if o["vhost"]:
            o["ioeventfd"] = True  # vhost-net is driven by the kick eventfd
        c = self.costs
        self.vhost = vhost = o["vhost"]
        self.mrg_rxbuf = o["mrg_rxbuf"]
        self.pkt_ns = int(c["vhost_pkt_ns"] if vhost else c["qemu_virtio_pkt_ns"])
        self.backend_name = "vhost" if vhost else "QEMU"
        self.kick_reason = "EPT_MISCONFIG" if o["notify"] == "mmio" else "IO_INSTRUCTION"
        self.kick_user = not o["ioeventfd"]
        self.budget = o["napi_budget"]
        self.host_rx = self.vmm.resource("host rx softirq")
        self.host_tx = self.vmm.resource("host tx")
        self.nics: list[VirtioNic] = []
        self.by_mac: dict[str, VirtioNic] = {}
        self.wakeup_ns = int(c["wakeup_ns"])
        self.host_stack_ns = int(c["host_stack_ns"])
        self.guest_rx_ns = int(c["guest_rx_ns"])
        self.guest_irq_ns = int(c["guest_irq_ns"])
        self.refill_ns = int(c["guest_refill_ns"])
        self._rx_costs: dict[int, int] = {}
        if vhost:
            # handle_rx: vhost_net_signal_used once done_idx > VHOST_NET_BATCH;
            # handle_tx_copy: once done_idx == VHOST_NET_BATCH; both at a run's end
            self.rx_batch, self.tx_batch = VHOST_NET_BATCH + 1, VHOST_NET_BATCH
            self.rx_weight = self.tx_weight = (VHOST_NET_PKT_WEIGHT, VHOST_NET_WEIGHT)
            self.requeue_ns = int(c["vhost_requeue_ns"])
            self.rx_copies = 1                 # tap socket → guest buffer
        else:
            # virtio_net_receive_rcu / virtio_net_flush_tx: virtqueue_flush + virtio_notify per packet
            self.rx_batch = self.tx_batch = 1
            self.rx_weight = (TAP_SEND_BURST, _NO_LIMIT)
            self.tx_weight = (QEMU_TX_BURST, _NO_LIMIT)
            self.requeue_ns = 0                # back through the main loop / the TX bottom half
            self.rx_copies = 2                 # tap read() into QEMU, iov_from_buf into the guest

    # -- description ---------------------------------------------------------------
    def options(self) -> dict:
        o = self.opts
        return {"vhost": o["vhost"], "backend": "vhost-net" if o["vhost"] else "qemu",
                "event_idx": o["event_idx"], "mrg_rxbuf": o["mrg_rxbuf"], "napi_tx": True,
                "queue_size": o["queue_size"], "notify": o["notify"], "ioeventfd": o["ioeventfd"],
                "ring": o["ring"]}

    def summary_extra(self) -> dict:
        """With virtio.count_ring_lines: the distinct 64-byte lines of ring
        memory written (sim.ringlines), per delivered packet."""
        if not self.opts["count_ring_lines"]:
            return {}
        rx = sum(n.rxq.lines.count() for n in self.nics)
        tx = sum(n.txq.lines.count() for n in self.nics)
        per = self.metrics.per_packet
        return {"ring_cache_lines": {"ring": self.opts["ring"], "rx": rx, "tx": tx,
                                     "per_packet": round(per(rx + tx), 3)}}

    def label(self) -> str:
        o = self.opts
        backend = "vhost on" if o["vhost"] else "vhost off: QEMU userspace"
        return (f"virtio ({backend}, event idx {'on' if o['event_idx'] else 'off'}, "
                f"mrg_rxbuf {'on' if o['mrg_rxbuf'] else 'off'}" + (", packed ring)" if o["ring"] == "packed" else ")"))

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
            buf_len = nic.rx_buf_len()
            self._post_rx_buffers(nic, buf_len)
            tr = self.engine.trace
            if tr.on:
                tr.emit(0, "ring", vm.name, 1,
                        f"{vm.name}'s driver posts {nic.rxq.num - nic.rxq.num_free} RX buffers of "
                        f"{buf_len:,} B ({self._buf_kind()}, WRITE descriptors) · {nic.rxq.avail_text()}",
                        queue="rx", avail_idx=nic.rxq.avail_idx(), buf_len=buf_len)
            if nic.rxq.kick_prepare():
                self._kick(nic, "RX", 0)
            # the backend has buffers: it stops asking for kicks until it runs dry
            nic.rxq.disable_notify()
        if self.opts["count_ring_lines"]:      # set-up is not counted (Metrics.reset_setup)
            for nic in self.nics:
                nic.rxq.lines.reset()
                nic.txq.lines.reset()

    def _buf_kind(self) -> str:
        return "mergeable, mrg_rxbuf on" if self.mrg_rxbuf else "small, mrg_rxbuf off"

    # -- receive: the host side ------------------------------------------------------
    def receive_from_wire(self, pkt: Packet) -> None:
        eng = self.engine
        now = eng.now
        tr = eng.trace
        ready = self.host_rx.reserve(now, self.host_stack_ns)   # jittered with costs.jitter
        nic = self.by_mac.get(pkt.dst)
        if nic is None or pkt.vlan or nic.vm.vlan or len(nic.tap) >= TAP_QUEUE_LEN:
            # the bridge's checks in full (a drop, a VLAN to check and strip)
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
        if not nic.rx_running and not nic.rx_waiting_kick:
            # the tap's data_ready wakes the backend (vhost_poll_wakeup / QEMU's fd handler)
            nic.rx_running = True
            eng.at(ready + self.vmm.spread(self.wakeup_ns), self._rx_start, nic)

    def rx_ring_starved(self, nic: VirtioNic) -> bool:
        # the backend waits for the guest's kick, or is about to: no buffer left on avail
        return nic.rx_waiting_kick or not nic.rxq.avail_pending()

    def _rx_cost(self, size: int) -> int:
        cost = self._rx_costs.get(size)
        if cost is None:
            copy = self.vmm.copy_cost
            cost = self.pkt_ns + copy(VIRTIO_NET_HDR_LEN + size)
            if not self.vhost:
                cost += copy(size)         # QEMU's read() of the tap into its own buffer
            self._rx_costs[size] = cost
        return cost

    def _rx_start(self, nic: VirtioNic) -> None:
        """``handle_rx`` (vhost) / ``tap_send`` (QEMU) begins: no kicks needed
        while it has buffers (``vhost_disable_notify``)."""
        self._rx_begin(nic)
        self._rx_work(nic)

    @staticmethod
    def _rx_begin(nic: VirtioNic) -> None:
        nic.rxq.disable_notify()
        nic.rx_run_pkts = nic.rx_run_bytes = 0

    def _rx_work(self, nic: VirtioNic) -> None:
        """The backend, free at this moment, runs its receive loop up to the
        next point the guest can observe, and goes on from there."""
        self._drive(nic, self._rx_run, self._rx_begin, self._rx_start, self._rx_work)

    def _drive(self, nic: VirtioNic, run, begin, start, work) -> None:
        """A backend loop (receive or transmit) from this moment: each
        stretch ``run`` returns when the next starts and whether that is a new
        run; it goes on in place if nothing else is due before it
        (``Engine.go_on``, a new run's ``begin`` first), else it is scheduled
        (``start`` for a new run, ``work`` to go on)."""
        eng = self.engine
        while True:
            nxt = run(nic)
            if nxt is None:
                return
            t, new = nxt
            if eng.go_on(t):
                if new:
                    begin(nic)
                continue
            eng.at(t, start if new else work, nic)
            return

    def _rx_run(self, nic: VirtioNic) -> tuple[int, bool] | None:
        """One stretch of the receive loop from now.  Returns when the next
        one starts and whether that is a new run (``_rx_start``: after a
        requeue or a wake-up), or None when the backend sleeps."""
        now = self.engine.now
        q = nic.rxq
        heads = nic.rx_heads
        if len(heads) >= self.rx_batch:
            self._signal_used(nic, q, heads, "rx")
        pk_weight, byte_weight = self.rx_weight
        if nic.rx_run_pkts >= pk_weight or nic.rx_run_bytes >= byte_weight:
            # vhost_exceeds_weight → vhost_poll_queue; out: vhost_net_signal_used
            self._signal_used(nic, q, heads, "rx")
            tr = self.engine.trace
            if tr.on:
                tr.emit(now, "note", nic.vm.name, 3, self._weight_msg("RX", nic.rx_run_pkts, nic.rx_run_bytes),
                        queue="rx", requeue=True)
            return now + self.vmm.spread(self.requeue_ns), True
        tap = nic.tap
        backend = nic.backend
        t0 = t = backend.busy_until if backend.busy_until > now else now
        if not tap or tap[0][0] > t:
            # nothing ready in the socket (as at the end of a run below, without the loop's set-up)
            self._signal_used(nic, q, heads, "rx")
            if tap:
                return tap[0][0] + self.vmm.spread(self.wakeup_ns), True
            nic.rx_running = False
            return None
        avail = q.avail_pending()
        n = 0
        vm = nic.vm
        mem = vm.mem
        m = self.metrics
        tr = self.engine.trace
        costs = self._rx_costs
        batch = self.rx_batch
        run_pkts, run_bytes = nic.rx_run_pkts, nic.rx_run_bytes
        filled = nic.rx_filled
        mrg = self.mrg_rxbuf
        copies = self.rx_copies
        name = self.backend_name
        ncopied = copied_bytes = 0         # added to the metrics when the stretch ends
        jit = self.vmm.jitter                  # costs.jitter: None = exact
        while tap and tap[0][0] <= t:
            if not avail:
                if n:
                    break              # it meets the empty ring at t: look again then
                if q.enable_notify():  # vhost_enable_notify: "they slipped one in"
                    q.disable_notify()
                    avail = q.avail_pending()
                    continue
                # no buffer: the frame waits in the tap until the guest kicks
                self._signal_used(nic, q, heads, "rx")
                nic.rx_running = False
                nic.rx_waiting_kick = True
                if tr.on:
                    tr.emit(now, "ring", vm.name, 3,
                            f"{name}: {vm.name}'s RX ring has no buffers ({q.empty_text()}); re-enables kicks "
                            f"and waits", queue="rx")
                return None
            pkt = tap.popleft()[1]
            head, gpa, buflen, _flags = q.pop()
            avail -= 1
            size = pkt.size
            nbytes = VIRTIO_NET_HDR_LEN + size
            cost = costs.get(size)
            if cost is None:
                cost = self._rx_cost(size)
            t += cost if jit is None else jit(cost)
            n += 1
            run_pkts += 1
            run_bytes += nbytes
            if nbytes > buflen:
                heads.append((head, 0))
                self.sim.dropped(pkt, f"RX buffer of {buflen:,} B too small for {nbytes:,} B", 4)
            else:
                if mrg:
                    # the tap's virtio_net_hdr, num_buffers = 1 (get_rx_bufs took one buffer), the frame
                    mem.write2(gpa, RX_HDR, pkt.frame, name)
                else:
                    # without MRG_RXBUF the backend skips num_buffers (iov_iter_advance past vnet_hdr_sz)
                    mem.write(gpa, RX_HDR10, name)
                    mem.write(gpa + VIRTIO_NET_HDR_LEN, pkt.frame, name)
                ncopied += 1
                copied_bytes += nbytes if copies == 1 else nbytes + size
                pkt.copies += copies
                heads.append((head, nbytes))
                filled[gpa] = pkt
                if tr.on:
                    tr.emit(now, "ring", vm.name, 3,
                            f"{name} {q.pop_text(head)} (GPA 0x{gpa:x}, {buflen:,} B, WRITE)",
                            queue="rx", desc=q.row(head), gpa=gpa, qemu_event="virtqueue_pop", pkt=pkt.id)
                    if self.vhost:
                        how = (f"vhost copies frame #{pkt.id} ({size:,} B) with its 12 B virtio_net_hdr "
                               f"from the tap's socket into GPA 0x{gpa:x} (recvmsg: 1 copy)")
                    else:
                        how = (f"QEMU read()s frame #{pkt.id} ({size:,} B) from the tap into its own buffer "
                               f"(copy 1), then iov_from_buf copies header + frame into GPA 0x{gpa:x} (copy 2)")
                    tr.emit(now, "copy", vm.name, 4, how, queue="rx", desc=q.row(head), gpa=gpa, bytes=nbytes,
                            pkt=pkt.id, copies=copies)
            if len(heads) >= batch or run_pkts >= pk_weight or run_bytes >= byte_weight:
                break
        m.copies += ncopied * copies
        m.copy_bytes += copied_bytes
        if n:
            nic.rx_run_pkts, nic.rx_run_bytes = run_pkts, run_bytes
            backend.busy_until = t
            backend.busy_ns += t - t0
            return t, False
        # the socket is empty (vhost_net_rx_peek_head_len == 0): vhost_net_enable_vq;
        # out: vhost_net_signal_used.  The tap's next frame wakes the worker.
        self._signal_used(nic, q, heads, "rx")
        if tap:
            return tap[0][0] + self.vmm.spread(self.wakeup_ns), True
        nic.rx_running = False
        return None

    def _weight_msg(self, which: str, pkts: int, nbytes: int) -> str:
        if self.vhost:
            limit = (f"{VHOST_NET_PKT_WEIGHT} packets (VHOST_NET_PKT_WEIGHT)" if pkts >= VHOST_NET_PKT_WEIGHT
                     else f"{nbytes:,} B (VHOST_NET_WEIGHT = 512 KiB)")
            return f"vhost's worker has handled {limit} this run: it requeues its {which} work (vhost_exceeds_weight)"
        if which == "RX":
            return f"QEMU's tap_send has read {TAP_SEND_BURST} packets: back to the main loop"
        return f"QEMU flushed a full TX burst ({QEMU_TX_BURST} packets): the bottom half reschedules itself"

    def _signal_used(self, nic: VirtioNic, q: Virtqueue, heads: list, which: str) -> None:
        """``vhost_net_signal_used`` → ``vhost_add_used_and_signal_n`` (QEMU:
        ``virtqueue_flush`` + ``virtio_notify``): publish, then maybe signal."""
        if not heads:
            return
        n = len(heads)
        q.push_n(heads)
        heads.clear()
        tr = self.engine.trace
        if tr.on:
            what = f"{n} used entries" if n != 1 else "1 used entry"
            tr.emit(self.engine.now, "ring", nic.vm.name, 4,
                    f"{self.backend_name} publishes {what} on {nic.vm.name}'s {which} ring · {q.used_text()}",
                    queue=which, used_idx=q.used_idx, published=n, qemu_event="virtqueue_flush")
        self._notify(nic, q, which)

    def _notify(self, nic: VirtioNic, q: Virtqueue, which: str) -> None:
        m = self.metrics
        tr = self.engine.trace
        vm = nic.vm
        if not q.should_notify():
            m.notify_suppressed += 1
            if tr.on:
                why = q.no_irq_text()
                tr.emit(self.engine.now, "irq", vm.name, 5,
                        f"{self.backend_name}: no interrupt for {which} — {why}", queue=which, notified=False)
            return
        m.notify_sent += 1
        if tr.on:
            how = ("signals the call eventfd → irqfd (vhost_signal)" if self.vhost
                   else "raises the MSI-X vector (virtio_notify → msix_notify → KVM_SIGNAL_MSI)")
            tr.emit(self.engine.now, "irq", vm.name, 5, f"{self.backend_name} {how} for {which}",
                    queue=which, qemu_event="virtio_notify", notified=True)
        start = self.vmm.deliver_irq(vm, which, f"virtio-net {which}", stage=5)
        if start is not None:
            self.engine.at(start, self._guest_irq, nic, which)
        elif which in nic.in_service:
            # the handler is running (ISR): the new edge sets the IRR bit again and
            # is delivered once the handler writes EOI (apic_update_ppr → KVM_REQ_EVENT)
            nic.irr_again.add(which)

    def _deliver_after_eoi(self, nic: VirtioNic, which: str, end: int) -> None:
        """The vector raised while its handler ran: KVM injects it on the EOI
        exit's VM entry (with APICv the virtual EOI delivers it, no exit)."""
        nic.irr_again.discard(which)
        vm = nic.vm
        at = vm.exit_start if vm.exit_end == end and vm.exit_start < end else end
        start = self.vmm.deliver_irq(vm, which, f"virtio-net {which} (raised again while in service)",
                                     stage=5, at=at)
        if start is not None:
            self.engine.at(start, self._guest_irq, nic, which)

    # -- the guest's interrupt handlers ---------------------------------------------
    def _guest_irq(self, nic: VirtioNic, which: str) -> None:
        """``vring_interrupt`` → ``skb_recv_done`` / ``skb_xmit_done``: schedule NAPI."""
        vm = nic.vm
        nic.in_service.add(which)
        end = vm.vcpu.reserve(self.engine.now, self.guest_irq_ns)
        sched = False
        if which == "rx":
            q = nic.rxq
            if q.interrupt() and not nic.napi_active:
                q.disable_cb()             # virtqueue_napi_schedule
                nic.napi_active = sched = True
                nic.sirq_start = end               # the NET_RX softirq starts on the handler's exit
        else:
            q = nic.txq
            if q.interrupt():
                q.disable_cb()             # skb_xmit_done: "suppress further interrupts"
                if not nic.tx_napi_active:
                    nic.tx_napi_active = sched = True
        if self.engine.go_on(end):
            self._guest_eoi(nic, which, sched)
        else:
            self.engine.at(end, self._guest_eoi, nic, which, sched)

    def _guest_eoi(self, nic: VirtioNic, which: str, sched: bool) -> None:
        """The handler returns (EOI); the NAPI poll it scheduled runs next."""
        end = self.vmm.ack_irq(nic.vm, which, stage=5)
        nic.in_service.discard(which)
        if which in nic.irr_again:
            self._deliver_after_eoi(nic, which, end)
        if sched:
            poll = self._napi_rx if which == "rx" else self._napi_tx
            if self.engine.go_on(end):
                poll(nic)
            else:
                self.engine.at(end, poll, nic)

    # -- receive: the guest side -----------------------------------------------------
    def _napi_rx(self, nic: VirtioNic, done: int = 0, reading: tuple | None = None) -> None:
        """``virtnet_poll``: clean TX first, then one used buffer per step, up to the budget.

        ``reading`` is the frame the stack finished with at this moment: it is
        delivered now and its buffer goes back to the guest's pool.  Each step
        is when the vCPU is done with the one before; the poll loops over its
        steps in this one action for as long as nothing else is due before the
        next one (``Engine.go_on``), as virtnet_receive loops over the used ring."""
        vm = nic.vm
        q = nic.rxq
        eng = self.engine
        now = eng.now
        guest_reads = self.sim.guest_reads
        pool = nic.rx_pool
        filled = nic.rx_filled
        budget = self.budget
        get_buf = q.get_buf
        go_on = eng.go_on
        while True:
            if reading is not None:
                pkt, gpa = reading
                reading = None
                guest_reads(vm, pkt, gpa + VIRTIO_NET_HDR_LEN, now)
                nic.rx_reading = None
                pool.append(gpa)
            elif done == 0:
                self._poll_cleantx(nic)
            if done < budget:
                got = get_buf()
                if got is not None:
                    gpa, length, head = got
                    pkt = filled.pop(gpa, None)
                    done += 1
                    if pkt is None:            # a buffer the device returned empty (frame dropped)
                        pool.append(gpa)
                        end = now
                    else:
                        nic.rx_reading = pkt
                        if self.mrg_rxbuf:
                            # receive_mergeable: ewma_pkt_len_add(&rq->mrg_avg_pkt_len, head_skb->len)
                            a = nic.avg_pkt_len
                            size = length - VIRTIO_NET_HDR_LEN
                            nic.avg_pkt_len = (((a << EWMA_WEIGHT_SHIFT) - a) + size) >> EWMA_WEIGHT_SHIFT if a else size
                        end = vm.vcpu.reserve(now, self.guest_rx_ns)
                        tr = eng.trace
                        if tr.on:
                            tr.emit(now, "ring", vm.name, 6,
                                    f"{vm.name}'s NAPI poll {q.take_text(head)} "
                                    f"({length:,} B) and reads frame #{pkt.id} at GPA 0x{gpa + VIRTIO_NET_HDR_LEN:x}",
                                    queue="rx", desc=q.row(head), gpa=gpa, pkt=pkt.id)
                        reading = (pkt, gpa)
                    # the next step, in place if nothing else comes first
                    if go_on(end):
                        now = end
                        continue
                    eng.at(end, self._napi_rx, nic, done, reading)
                    return
            # the poll ends: refill, then complete or keep polling
            t = self._refill(nic, now)
            if done < budget:
                # virtqueue_napi_complete: napi_complete_done, then virtqueue_poll
                self.napi_done(nic, done, t)
                q.enable_cb_prepare()
                if not q.more_used():
                    nic.napi_active = False
                    return
                q.disable_cb()             # more came meanwhile: virtqueue_napi_schedule
            else:
                # the whole weight: NAPI stays scheduled (napi_poll's repoll)
                self.napi_repoll(nic, done, t)
            # the poll runs again from the start (done = 0)
            if eng.go_on(t):
                now = t
                done = 0
                continue
            eng.at(t, self._napi_rx, nic, 0)
            return

    def _refill(self, nic: VirtioNic, now: int) -> int:
        """try_fill_recv when more than half the ring (or budget) is free."""
        q = nic.rxq
        if self.preset.faults["ring_full"]:
            return now
        if q.num_free <= min(self.budget, q.num) // 2:
            return now
        vm = nic.vm
        buf_len = nic.rx_buf_len()     # the EWMA does not move while the driver refills
        added = self._post_rx_buffers(nic, buf_len)
        t = vm.vcpu.reserve(now, self.refill_ns * added)
        tr = self.engine.trace
        if tr.on:
            tr.emit(now, "ring", vm.name, 1,
                    f"{vm.name}'s driver refills {added} RX buffer{'s' if added != 1 else ''} of {buf_len:,} B "
                    f"({self._buf_kind()}) · {q.avail_text()}",
                    queue="rx", added=added, buf_len=buf_len)
        if q.kick_prepare():
            t = self._kick(nic, "RX", t)
        else:
            self.metrics.kicks_suppressed += 1
            if tr.on:
                why = q.no_kick_text()
                tr.emit(now, "kick", vm.name, 1, f"{vm.name} does not kick: {why}", queue="rx", kicked=False)
        return t

    @staticmethod
    def _post_rx_buffers(nic: VirtioNic, buf_len: int) -> int:
        """try_fill_recv's loop: a WRITE buffer of ``buf_len`` from the driver's
        pool onto the RX ring while both have one; returns how many."""
        q, pool = nic.rxq, nic.rx_pool
        added = 0
        while pool and q.num_free:
            gpa = pool.popleft()
            q.add_buf(gpa, buf_len, True, gpa)
            added += 1
        return added

    def _kick(self, nic: VirtioNic, which: str, at: int) -> int:
        """virtqueue_notify: the doorbell write exits; ioeventfd wakes the backend."""
        vm = nic.vm
        self.metrics.kicks += 1
        where = "ioeventfd" if not self.kick_user else "QEMU"
        end = self.vmm.exit(vm, self.kick_reason, f"virtio kick ({which} queue notify → {where})",
                            user=self.kick_user, at=at, stage=1 if which == "RX" else 2)
        tr = self.engine.trace
        if tr.on:
            # recorded now, with the exit; when the vCPU is back is a data field
            # (a record's t is never after the clock it is shown with)
            tr.emit(self.engine.now, "kick", vm.name, 1 if which == "RX" else 2,
                    f"{vm.name} kicks the {which} queue (virtio_queue_notify); the backend hears it at "
                    f"{end / 1000:,.3f} µs",
                    queue=which.lower(), qemu_event="virtio_queue_notify", kicked=True, end_ns=end)
        if which == "RX":
            if nic.rx_waiting_kick:
                # handle_rx_kick / virtio_net_handle_rx → qemu_flush_queued_packets
                nic.rx_waiting_kick = False
                if nic.tap:
                    nic.rx_running = True
                    self.engine.at(end + self.vmm.spread(self.wakeup_ns), self._rx_start, nic)
        elif not nic.tx_running:
            nic.tx_running = True
            self.engine.at(end + self.vmm.spread(self.wakeup_ns), self._tx_start, nic)
        return end

    # -- transmit: the guest side ----------------------------------------------------
    def guest_send(self, vm: "Vm", pkt: Packet) -> None:
        nic = self.nics[vm.index]
        self.queue_for_xmit(nic, pkt, nic.tx_stopped)

    def _qdisc_run(self, nic: VirtioNic) -> None:
        """The qdisc hands the next waiting packet to start_xmit."""
        if nic.qdisc and not nic.tx_stopped and not nic.tx_to_xmit:
            self.schedule_xmit(nic, nic.qdisc.popleft())

    def _xmit(self, nic: VirtioNic, pkt: Packet) -> None:
        """``start_xmit`` with TX NAPI: reclaim, re-arm the delayed callback,
        add the frame, stop the queue if a full skb might not fit, kick."""
        nic.tx_to_xmit -= 1
        q = nic.txq
        vm = nic.vm
        now = self.engine.now
        # do { disable_cb; free_old_xmit_skbs } while (kick && !virtqueue_enable_cb_delayed)
        while True:
            q.disable_cb()
            self._free_old_xmit(nic)
            if q.enable_cb_delayed():
                break
        if not nic.tx_pool or q.num_free == 0:     # not reached: the queue stops at 19 free
            nic.qdisc.appendleft(pkt)
            nic.tx_stopped = True
            return
        gpa = nic.tx_pool.popleft()
        vm.mem.write(gpa, TX_HDR + pkt.frame, "guest")
        if self.sim.capture is not None:
            self.sim.guest_queued(vm, pkt, gpa + VIRTIO_NET_HDR_LEN)
        q.add_buf(gpa, VIRTIO_NET_HDR_LEN + pkt.size, False, gpa)
        nic.tx_sent[gpa] = pkt
        tr = self.engine.trace
        if tr.on:
            tr.emit(now, "ring", vm.name, 1,
                    f"{vm.name}'s driver puts frame #{pkt.id} at GPA 0x{gpa:x} on the TX ring · "
                    f"{q.avail_text()} · {q.event_text()}",
                    queue="tx", gpa=gpa, pkt=pkt.id, avail_idx=q.avail_idx_shadow,
                    used_event=q.used_event(), last_used=q.last_used_idx)
        if q.num_free < TX_STOP_FREE:
            nic.tx_stopped = True                  # netif_stop_subqueue
            if tr.on:
                tr.emit(now, "ring", vm.name, 1,
                        f"{vm.name}'s TX queue stops: {q.num_free} descriptors free < 2 + MAX_SKB_FRAGS = "
                        f"{TX_STOP_FREE} (netif_stop_subqueue)", queue="tx", stopped=True, num_free=q.num_free)
        if q.kick_prepare():
            self._kick(nic, "TX", now)
        else:
            self.metrics.kicks_suppressed += 1
            if tr.on:
                why = q.no_kick_text()
                tr.emit(now, "kick", vm.name, 2, f"{vm.name} does not kick: {why}", queue="tx", kicked=False)
        self._qdisc_run(nic)

    def _free_old_xmit(self, nic: VirtioNic) -> None:
        """``free_old_xmit_skbs``: every used TX buffer back to the driver."""
        q = nic.txq
        pool = nic.tx_pool
        while (got := q.get_buf()) is not None:
            pool.append(got[0])

    def _wake_queue(self, nic: VirtioNic) -> None:
        """``netif_tx_wake_queue`` once 2 + MAX_SKB_FRAGS descriptors are free."""
        if nic.txq.num_free >= TX_STOP_FREE:
            if nic.tx_stopped:
                nic.tx_stopped = False
                tr = self.engine.trace
                if tr.on:
                    tr.emit(self.engine.now, "ring", nic.vm.name, 6,
                            f"{nic.vm.name}'s TX queue restarts: {nic.txq.num_free} descriptors free ≥ "
                            f"{TX_STOP_FREE} (netif_tx_wake_queue)", queue="tx", stopped=False,
                            num_free=nic.txq.num_free)
            self._qdisc_run(nic)

    def _napi_tx(self, nic: VirtioNic) -> None:
        """``virtnet_poll_tx``: reclaim, wake the queue, re-enable callbacks,
        and poll again if more completed meanwhile (``virtqueue_poll``)."""
        q = nic.txq
        q.disable_cb()
        self._free_old_xmit(nic)
        self._wake_queue(nic)
        opaque = q.enable_cb_prepare()
        nic.tx_napi_active = False                 # napi_complete_done
        if opaque != q.used_idx_ram():
            nic.tx_napi_active = True
            q.disable_cb()
            self.engine.at(self.engine.now, self._napi_tx, nic)

    def _poll_cleantx(self, nic: VirtioNic) -> None:
        """``virtnet_poll_cleantx``: the RX poll reclaims TX buffers too."""
        q = nic.txq
        if q.num_free == q.num:
            return                                 # nothing outstanding: the loop would change nothing
        while True:
            q.disable_cb()
            self._free_old_xmit(nic)
            if q.enable_cb_delayed():
                break
        self._wake_queue(nic)

    # -- transmit: the host side -----------------------------------------------------
    def _tx_start(self, nic: VirtioNic) -> None:
        """``handle_tx`` (vhost) / ``virtio_net_tx_bh`` (QEMU): no kicks while draining."""
        self._tx_begin(nic)
        self._tx_work(nic)

    @staticmethod
    def _tx_begin(nic: VirtioNic) -> None:
        nic.txq.disable_notify()
        nic.tx_run_pkts = nic.tx_run_bytes = 0

    def _tx_work(self, nic: VirtioNic) -> None:
        """``handle_tx_copy`` / ``virtio_net_flush_tx`` from this moment up to
        the next point the guest can observe (a published batch, the run's
        end), and on from there (``_drive``)."""
        self._drive(nic, self._tx_run, self._tx_begin, self._tx_start, self._tx_work)

    def _tx_run(self, nic: VirtioNic) -> tuple[int, bool] | None:
        """One stretch of the transmit loop from now (see ``_rx_run``)."""
        now = self.engine.now
        q = nic.txq
        heads = nic.tx_heads
        pk_weight, byte_weight = self.tx_weight
        tr = self.engine.trace
        if nic.tx_run_pkts >= pk_weight or nic.tx_run_bytes >= byte_weight:
            self._signal_used(nic, q, heads, "tx")         # vhost_tx_batch at the end of handle_tx_copy
            if tr.on:
                tr.emit(now, "note", nic.vm.name, 3, self._weight_msg("TX", nic.tx_run_pkts, nic.tx_run_bytes),
                        queue="tx", requeue=True)
            return now + self.vmm.spread(self.requeue_ns), True
        backend = nic.backend
        t0 = t = backend.busy_until if backend.busy_until > now else now
        avail = q.avail_pending()
        n = 0
        vm = nic.vm
        mem = vm.mem
        m = self.metrics
        copy_cost = self.vmm.copy_cost
        name = self.backend_name
        jit = self.vmm.jitter                  # costs.jitter: None = exact
        while True:
            if len(heads) >= self.tx_batch:
                if n:
                    break                                   # published at t
                self._signal_used(nic, q, heads, "tx")     # done_idx == VHOST_NET_BATCH → vhost_tx_batch
            if not avail:
                if n:
                    break
                if q.enable_notify():                       # they slipped one in
                    q.disable_notify()
                    avail = q.avail_pending()
                    continue
                # nothing new: the run ends with kicks enabled
                self._signal_used(nic, q, heads, "tx")
                nic.tx_running = False
                return None
            head, gpa, length, _flags = q.pop()
            avail -= 1
            pkt = nic.tx_sent.pop(gpa)
            frame = mem.read(gpa + VIRTIO_NET_HDR_LEN, length - VIRTIO_NET_HDR_LEN)
            cost = self.pkt_ns + copy_cost(length)
            t += cost if jit is None else jit(cost)
            m.copy(length - VIRTIO_NET_HDR_LEN)
            pkt.copies += 1
            if frame != pkt.frame:
                m.corrupt += 1
            heads.append((head, 0))
            if tr.on:
                tr.emit(now, "copy", vm.name, 3,
                        f"{name} pops desc {head} and copies frame #{pkt.id} ({pkt.size:,} B) from GPA "
                        f"0x{gpa + VIRTIO_NET_HDR_LEN:x} to the tap ("
                        f"{'sendmsg' if self.vhost else 'writev'}: 1 copy)",
                        queue="tx", desc=q.row(head), gpa=gpa, pkt=pkt.id, qemu_event="virtqueue_pop", copies=1)
            self.sim.transmit(pkt, self.host_tx.reserve(t, self.host_stack_ns))
            n += 1
            nic.tx_run_pkts += 1
            nic.tx_run_bytes += length
            if nic.tx_run_pkts >= pk_weight or nic.tx_run_bytes >= byte_weight:
                break
        backend.busy_until = t
        backend.busy_ns += t - t0
        return t, False

    # -- accounting ------------------------------------------------------------------
    def in_flight(self) -> int:
        return sum(len(n.tap) + len(n.rx_filled) + (n.rx_reading is not None) + len(n.qdisc)
                   + len(n.tx_sent) + n.tx_to_xmit for n in self.nics)

    # -- views -------------------------------------------------------------------------
    def queues(self) -> list[QueueInfo]:
        out = []
        for nic in self.nics:
            for q in (nic.rxq, nic.txq):
                extra = {"hdr_len": VIRTIO_NET_HDR_LEN}
                if q is nic.rxq:
                    extra.update(mrg_rxbuf=self.mrg_rxbuf, rx_buf_len=nic.rx_buf_len())
                if isinstance(q, PackedVirtqueue):
                    extra.update(driver_event_gpa=q.driver_event, device_event_gpa=q.device_event)
                    out.append(QueueInfo(nic.vm.name, q.name, "virtio-packed", q.num, q.desc, None, None,
                                         q.event_idx, extra))
                    continue
                out.append(QueueInfo(nic.vm.name, q.name, "virtio-split", q.num, q.desc, q.avail, q.used,
                                     q.event_idx, extra))
        return out

    def ring_views(self, vms: set[str] | None = None) -> list[RingView]:
        out = []
        for nic in self.nics:
            if vms is not None and nic.vm.name not in vms:
                continue
            if self.mrg_rxbuf:
                bufs = f"mrg_rxbuf on · {nic.rx_buf_len():,} B buffers (EWMA {nic.avg_pkt_len:,} B)"
            else:
                bufs = f"mrg_rxbuf off · {SMALL_BUF_LEN:,} B small buffers"
            tx = f"TX NAPI · stops below {TX_STOP_FREE} free" + (" (stopped)" if nic.tx_stopped else "")
            if isinstance(nic.rxq, PackedVirtqueue):
                out.append(nic.rxq.view(nic.vm.name, bufs))
                out.append(nic.txq.view(nic.vm.name, tx))
                continue
            out.append(ring_view(nic.vm.name, nic.rxq, bufs))
            out.append(ring_view(nic.vm.name, nic.txq, tx))
        return out


def _tap_of(nic: VirtioNic) -> deque:
    return nic.tap


def _flags(f: int) -> str:
    parts = [n for bit, n in ((VRING_DESC_F_NEXT, "N"), (VRING_DESC_F_WRITE, "W"), (4, "I")) if f & bit]
    return "|".join(parts) or "–"


def ring_view(vm: str, q: Virtqueue, extra: str = "") -> RingView:
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
    if extra:
        note = f"{note} · {extra}"
    return RingView(vm, q.name, "virtio-split", q.num, ("idx", "addr", "len", "flags", "next"),
                    tuple(rows), tuple(owners), tuple(marks), q.last_touched, q.desc, note)
