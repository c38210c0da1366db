"""Direct assignment with SR-IOV: each VM owns a VF; the NIC DMAs straight
into guest RAM through the IOMMU; the host is not on the data path.

The VF's rings are 82599 advanced descriptors in guest RAM (``ixgbe.py``),
driven the way Linux's ixgbevf drives them.

Receive flow (DOMAIN.md's six steps, the stage numbers of every event):
  1. the guest driver posts a buffer's GPA in an RX descriptor (read format:
     pkt_addr) and, every 16 buffers, writes the tail (next_to_use) straight
     to the VF's BAR, mapped through EPT: no exit
  2. a frame arrives and the NIC's switch picks the VF by destination MAC
     (a unicast no VF claims goes to the PF's default pool: the host)
  3. the VF fetches the descriptor and issues a DMA write to the GPA (it
     cannot know the HPA)
  4. the IOMMU translates GPA → HPA (IOTLB hit, or a page walk; a DMAR fault
     if unmapped or read-only — a posted write: the VF gets no error)
  5. the NIC writes the frame to the HPA and the write-back format over the
     descriptor: status_error DD|EOP, length (DD even when step 4 blocked the
     frame, whose buffer then keeps its old bytes)
  6. the guest's NAPI poll sees DD and reads the frame through the same GPA
Interrupts are the only exits, and the host profile decides them (see
``Vmm.deliver_irq``): without APICv the VF's MSI-X costs an EXTERNAL_INTERRUPT
on a running vCPU (a HLT wake-up when idle) and the guest's EOI exits
(APIC_ACCESS, or MSR_WRITE with x2APIC); with APICv both are exitless; with
VT-d posted interrupts the host takes no interrupt at all.  How often the VF
interrupts is its EITR interval, which ixgbevf's adaptive ITR moves between
10 µs, 50 µs and 84 µs (or ``sriov.itr_us`` fixes, as ``ethtool -C rx-usecs``).
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

from ..engine import Resource
from ..iommu import DmaFault, Iommu
from ..ixgbe import KIND, AdvRxRing, AdvTxRing, adv_ring_view
from ..nic import Function, Nic
from ..packet import Packet, insert_vlan, mac_bytes, strip_vlan
from ..views import QueueInfo, RingView, TableView
from .base import BUF_STRIDE, Technique, buffer_pools

if TYPE_CHECKING:  # pragma: no cover
    from ..vmm import Vm
    from ..protocols import SimulationApi as Simulation  # what a technique may call on the run


__all__ = ["SrIov", "ROGUE_GPA", "ITR_20K", "ITR_100K", "ITR_12K", "eitr_ns"]

#: where a buggy or malicious guest driver points buffers it never mapped
ROGUE_GPA = 0x7F00_0000
FORGED_MAC = "02:de:ad:be:ef:01"
#: where [nic] unknown_unicast readdresses frames from the wire: a unicast MAC no VF owns
STRAY_MAC = "02:00:00:00:0f:01"

# ixgbevf.h: q_vector->itr values (µs << 2) and the ring containers' latency states
ITR_100K = 40        # IXGBE_100K_ITR: 10 µs
ITR_20K = 200        # IXGBE_20K_ITR: 50 µs, where the adaptive ITR starts
ITR_12K = 336        # IXGBE_12K_ITR: 84 µs
LOWEST, LOW, BULK = 0, 1, 2            # lowest_latency, low_latency, bulk_latency
STATE_ITR = {LOWEST: ITR_100K, LOW: ITR_20K, BULK: ITR_12K}
STATE_NAME = {LOWEST: "lowest latency (100K/s)", LOW: "low latency (20K/s)", BULK: "bulk (12K/s)"}
MAX_EITR = 0x0FF8                      # IXGBE_MAX_EITR: the interval field, bits 11:3
EITR_CNT_WDIS = 0x8000_0000            # IXGBE_EITR_CNT_WDIS: a write does not restart the counter
#: descriptors one frame needs free before ixgbevf_xmit_frame_ring queues it
#: (ixgbevf_maybe_stop_tx(count + 3): one data descriptor, the context one, a gap of two)
TX_DESC_NEEDED = 4


def eitr_ns(itr: int) -> int:
    """The minimum interval the VTEITR value for ``itr`` programs: the interval
    field (bits 11:3) counts 2 µs, i.e. ``(itr & 0xFF8) × 250 ns``."""
    return (itr & MAX_EITR) * 250


class VfPort:
    def __init__(self, tech: "SrIov", vm: "Vm", vf: Function) -> None:
        self.vm = vm
        self.vf = vf
        n = tech.ring_size
        mem = vm.mem
        self.rx = AdvRxRing(mem, n, f"{vf.name} RX descriptor ring (82599 advanced)")
        self.tx = AdvTxRing(mem, n, f"{vf.name} TX descriptor ring (82599 advanced)")
        self.rx_pool, self.tx_pool = buffer_pools(mem, n)
        self.ro_pool: deque[int] = deque()
        self.dma = Resource(f"{vf.name} DMA")
        self.dma_who = f"{vf.name} DMA"    # who wrote guest RAM (the RAM pane's write log)
        #: the VF's MSI-X vector as ixgbevf names it (request_irq: "<netdev>-TxRx-0"), and its source
        self.vector = f"{vf.name}-TxRx-0"
        self.msix_name = f"{vf.name} MSI-X"
        self.rx_dma_pending = 0
        self.tx_dma_pending = 0
        self.rx_filled: dict[int, Packet | None] = {}
        self.rx_reading: Packet | None = None
        self.qdisc: deque[Packet] = deque()
        self.tx_to_xmit = 0
        self.tx_sent: dict[int, Packet] = {}
        self.masked = False          # VTEIAM auto-masked the vector; NAPI re-enables it (VTEIMS)
        #: (t, seq) of the interrupt checks due while the vector is masked (see SrIov._cause)
        self.held_checks: list[tuple[int, int]] = []
        self.cause = False           # an interrupt cause is pending (EICR)
        self.irq_armed_at = 0        # the EITR interval counter expires here
        self.itr_timer = False
        self.napi = False
        # the NET_RX softirq running its NAPI (Technique.napi_repoll)
        self.sirq_runs = 0
        self.sirq_start = 0
        self.ksoftirqd = False
        self.rogue_posted = 0
        # ixgbevf's q_vector: the itr value VTEITR holds, and the rx / tx ring containers
        self.itr = tech.itr_start
        self.eitr_ns = eitr_ns(self.itr)
        self.rx_state = self.tx_state = LOWEST      # kzalloc'ed containers start at lowest_latency
        self.rx_bytes = self.rx_packets = 0
        self.tx_bytes = self.tx_packets = 0
        self.eitr_writes = 0


class SrIov(Technique):
    name = "sriov"
    NAPI_POLL = "ixgbevf_poll"
    stages = ("guest posts buffer GPA", "NIC switch picks VF", "VF DMA write to GPA",
              "IOMMU GPA → HPA", "NIC writes frame, DD", "guest reads frame")
    #: transmit, numbered alike (4: the IOMMU translates the VF's read; 5: the MSI-X)
    tx_stages = ("driver writes TX descriptors, tail", "VF fetches TX descriptor", "VF DMA read of GPA",
                 "IOMMU GPA → HPA", "DD, MSI-X → inject", "frame on the wire")
    tx_wire_stage = 6
    #: ixgbevf_clean_rx_irq refills once ixgbevf_desc_unused() >= 16, never at a poll's end
    REFILL_AT_POLL_END = False
    COUNT_RX_BYTES = True

    def __init__(self, sim: "Simulation") -> None:
        super().__init__(sim)
        o = self.preset.sriov
        self.ring_size = o["ring_size"]
        self.host = sim.host
        # rx_itr_setting: 1 = adaptive (ixgbevf's default), else "ethtool -C rx-usecs N" (N << 2; 0 = off)
        self.adaptive = o["itr_us"] is None
        self.itr_start = ITR_20K if self.adaptive else int(o["itr_us"]) << 2
        self.budget = self.preset.virtio["napi_budget"]
        c = self.costs
        self.nic_ns = int(c["nic_pkt_ns"])
        self.pcie_ns = int(c["pcie_dma_ns"])
        self.nic = Nic(self.preset.nic, self.vms)
        self.vm_port = sim.vm_port
        io = self.preset.iommu
        self.iommu = Iommu(io["iotlb_entries"], int(c["iotlb_walk_read_ns"]), self.metrics,
                           superpages=io["superpages"])
        self.ports: list[VfPort] = []
        self.by_rid: dict[int, VfPort] = {}
        self.faults = self.preset.faults
        self.watchdog_ns = max(1, int(self.preset.nic["pf_watchdog_ms"] * 1e6))
        self.watchdog_armed = False
        self.unknown_unicast = self.preset.nic["unknown_unicast"]
        if self.unknown_unicast:
            self.readdress = self._readdress
        #: some RX buffers are IOMMU read-only (faults.readonly_dma): a buffer given
        #: back goes to the pool its region says (else there is only rx_pool)
        self.readonly_bufs = self.faults["readonly_dma"] > 0

    # -- description -------------------------------------------------------------------
    def options(self) -> dict:
        h = self.host
        return {"iotlb_entries": self.iommu.iotlb_entries, "superpages": self.iommu.superpages,
                "vfs": len(self.nic.vfs), "itr": "adaptive" if self.adaptive else f"{self.itr_start >> 2} µs",
                "itr_us": None if self.adaptive else self.itr_start >> 2,
                "posted_interrupts": h.vtd_pi, "x2apic": h.x2apic, "descriptors": KIND}

    def label(self) -> str:
        first = self.nic.vm_vf[0].bdf if self.nic.vm_vf else "-"
        # how the VF's MSI-X reaches the guest: straight into its posted-interrupt
        # descriptor (VT-d PI) or through a host interrupt (vfio_msihandler → irqfd)
        pi = "VT-d posted MSI-X" if self.host.vtd_pi else "MSI-X via the host"
        return f"SR-IOV (VF {first}{'…' if len(self.vms) > 1 else ''}, {pi})"

    def host_busy_ns(self) -> int:
        return 0  # the host is not on the data path

    # -- set-up ----------------------------------------------------------------------------
    def setup(self) -> None:
        rng = self.engine.rng
        for vm, vf in zip(self.vms, self.nic.vm_vf):
            port = VfPort(self, vm, vf)
            self.ports.append(port)
            self.by_rid[vf.rid] = port
            # the host assigns the VF: a domain for the VM mapping all of its RAM
            did = vm.index + 1
            self.iommu.domain(did, vm.name)
            self.iommu.attach(vf.rid, did)
            self.iommu.map(did, 0, vm.mem.hpa(0), vm.mem.size)
            if self.faults["readonly_dma"] > 0:
                # some buffer pages the host maps read-only (e.g. shared with a device that must not write)
                n = max(1, self.ring_size // 8)
                base = vm.mem.alloc(BUF_STRIDE * n, 4096, "rx_buf", "rx buffers (IOMMU read-only)")
                self.iommu.map(did, base, vm.mem.hpa(base), BUF_STRIDE * n, read=True, write=False)
                port.ro_pool.extend(base + BUF_STRIDE * i for i in range(n))
            tr = self.engine.trace
            rx = port.rx
            while rx.unused() and (port.rx_pool or port.ro_pool):
                self._post(port, rng)
            rx.tail = rx.next_to_use                     # ixgbevf_write_tail(rx_ring, next_to_use)
            if tr.on:
                tr.emit(0, "ring", vm.name, 1,
                        f"{vm.name}'s ixgbevf posts {rx.next_to_use} RX buffer GPAs to {vf.name} ({vf.bdf}) in "
                        f"82599 advanced descriptors and writes the tail ({rx.tail}) straight to the VF — no exit",
                        queue="rx")
                tr.emit(0, "irq", vm.name, 5,
                        f"{vm.name} writes VTEITR = 0x{self._eitr_reg(port.itr):08x} "
                        f"({'adaptive ITR, starts at ' if self.adaptive else 'ethtool -C rx-usecs: '}"
                        f"{eitr_ns(port.itr) / 1000:g} µs between interrupts) to {vf.name}'s BAR — no exit",
                        itr=port.itr, eitr=self._eitr_reg(port.itr))

    @staticmethod
    def _eitr_reg(itr: int) -> int:
        """ixgbevf_write_eitr: the interval field, and WDIS (keep the running counter)."""
        return (itr & MAX_EITR) | EITR_CNT_WDIS

    def _post(self, port: VfPort, rng) -> None:
        """Post one RX buffer (faults may make the driver post a bad GPA)."""
        f = self.faults
        if f["unmapped_dma"] > 0 and rng.random() < f["unmapped_dma"]:
            gpa = ROGUE_GPA + (port.rogue_posted % 16) * 4096
            port.rogue_posted += 1
        elif f["readonly_dma"] > 0 and port.ro_pool and rng.random() < f["readonly_dma"]:
            gpa = port.ro_pool.popleft()
        elif port.rx_pool:
            gpa = port.rx_pool.popleft()
        else:
            gpa = port.ro_pool.popleft()
        port.rx.post_rx(gpa, gpa)

    def _give_back(self, port: VfPort, gpa: int) -> None:
        if ROGUE_GPA <= gpa < ROGUE_GPA + 16 * 4096:
            return
        if self.readonly_bufs and self._read_only(port, gpa):
            port.ro_pool.append(gpa)
        else:
            port.rx_pool.append(gpa)

    def _read_only(self, port: VfPort, gpa: int) -> bool:
        r = port.vm.mem.region_at(gpa)
        return r is not None and "read-only" in r.label

    # -- DMA through the IOMMU ---------------------------------------------------------------
    def _dma(self, port: VfPort, gpa: int, write: bool, what: str) -> tuple[int, int]:
        """Translate one DMA; returns ``(hpa, cost)`` or raises DmaFault."""
        vf = port.vf
        tr = self.engine.trace
        try:
            hpa, cost, hit = self.iommu.translate(vf.rid, gpa, write)
        except DmaFault as f:
            if tr.on:
                tr.emit(self.engine.now, "fault", port.vm.name, 4, f.line(), rid=vf.bdf, addr=gpa,
                        reason=f.reason)
            raise
        if tr.on and what:
            how = "IOTLB hit" if hit else f"IOTLB miss: page walk, {cost:,} ns"
            tr.emit(self.engine.now, "iommu", port.vm.name, 4,
                    f"IOMMU: {vf.bdf} {what} GPA 0x{gpa:x} → HPA 0x{hpa:x} ({how})",
                    rid=vf.bdf, gpa=gpa, hpa=hpa, hit=hit)
        return hpa, cost

    # -- receive ---------------------------------------------------------------------------------
    def _readdress(self, pkt: Packet) -> None:
        """[nic] unknown_unicast: a frame for some other machine on the segment
        (no VF owns its destination), decided as it arrives (before the wire's
        capture record, which then shows the frame as it came)."""
        if self.engine.rng.random() < self.unknown_unicast:
            frame = bytearray(pkt.frame)
            frame[0:6] = mac_bytes(STRAY_MAC)
            pkt.frame = bytes(frame)
            pkt.dst = STRAY_MAC

    def receive_from_wire(self, pkt: Packet) -> None:
        eng = self.engine
        now = eng.now
        tr = eng.trace
        link = self.vm_port[pkt.vm]                  # the frame came in on its VM's port
        # an untagged frame to a VF's own MAC: the switch's earlier answer (Nic.untagged_owner)
        f = None if pkt.vlan or tr.on else self.nic.untagged_owner(pkt.dst, link)
        if f is not None:
            outs = [f]
        else:
            outs, reason = self.nic.from_wire(pkt.dst, pkt.vlan, link)
            if not outs:
                self.sim.dropped(pkt, reason, 2)
                return
            if outs[0] is self.nic.pfs[link]:
                self.sim.to_host(pkt, f"no VF owns destination MAC {pkt.dst}: the NIC's switch hands it to "
                                      f"the PF's default pool ({outs[0].bdf}, the host's own stack)", 2)
                return
        if len(outs) == 1 and not pkt.vlan and not tr.on:
            # (one VF, untagged, untraced: the loop below without its branches)
            port = self.ports[outs[0].vm]
            dma = port.dma
            end = (dma.busy_until if dma.busy_until > now else now) + self.nic_ns   # Resource.reserve
            dma.busy_until = end
            dma.busy_ns += self.nic_ns
            port.rx_dma_pending += 1
            eng.at(end, self._dma_rx, port, pkt)
            return
        for i, vf in enumerate(outs):
            p = pkt
            if i:   # broadcast/multicast: the switch replicates the frame
                p = Packet(pkt.id, pkt.t0, vf.vm, pkt.direction, pkt.frame, pkt.dst, pkt.src, pkt.vlan)
                self.metrics.offer(now)
            port = self.ports[vf.vm]
            if p.vlan:
                strip_vlan(p)
            if tr.on:
                tr.emit(now, "switch", port.vm.name, 2,
                        f"frame #{p.id} arrives; the NIC switch matches destination MAC {p.dst} → "
                        f"{vf.name} ({vf.bdf}), bound to {port.vm.name}", pkt=p.id, vf=vf.name,
                        rid=vf.bdf, dst=p.dst, vlan=vf.vlan)
            end = port.dma.reserve(now, self.nic_ns)
            port.rx_dma_pending += 1
            self.engine.at(end, self._dma_rx, port, p)

    def _dma_rx(self, port: VfPort, pkt: Packet) -> None:
        now = self.engine.now
        port.rx_dma_pending -= 1
        vm, vf, rx = port.vm, port.vf, port.rx
        tr = self.engine.trace
        got = rx.hw_fetch()
        if got is None:
            vf.dropped += 1
            self.sim.dropped(pkt, f"{vf.name} RX ring has no buffer posted (rx_no_dma_resources)", 3)
            return
        slot, gpa, _len = got
        desc = rx.base + 16 * slot
        # three translations: the descriptor fetch (read format), the frame's write, and
        # unless that was blocked the descriptor write-back
        if tr.on:
            _h, cost = self._dma(port, desc, False, "")
            tr.emit(now, "dma", vm.name, 3,
                    f"{vf.name} fetches RX descriptor {slot} (pkt_addr 0x{gpa:x}) and issues a DMA write of "
                    f"frame #{pkt.id} to that GPA — it cannot know the HPA", pkt=pkt.id, gpa=gpa, rid=vf.bdf)
            try:
                hpa, c = self._dma(port, gpa, True, "DMA write to")
            except DmaFault:
                hpa = None
            else:
                cost += c
                self._dma(port, desc, True, "")
        else:
            # (untraced, the IOMMU is asked directly, the three in one call: Iommu.rx_dma,
            # the same counts and LRU order as three translate calls; _dma only adds trace lines)
            hpa, cost = self.iommu.rx_dma(vf.rid, desc, gpa)
        if hpa is None:
            self._dma_rx_blocked(port, pkt, slot, gpa, desc, cost)
            return
        mem = vm.mem
        if not mem.hpa_base <= hpa < mem.hpa_base + mem.size:
            raise AssertionError(f"IOMMU mapped {vf.bdf}'s DMA outside {vm.name}'s memory")
        mem.write(hpa - mem.hpa_base, pkt.frame, port.dma_who)
        rx.hw_done_rx(slot, pkt.size)
        port.rx_filled[slot] = pkt
        vf.rx += 1
        done = port.dma.reserve(now, cost) + self.pcie_ns
        if tr.on:
            tr.emit(now, "dma", vm.name, 5,
                    f"{vf.name} writes frame #{pkt.id} ({pkt.size:,} B) to HPA 0x{hpa:x} and writes back "
                    f"descriptor {slot}: status_error DD|EOP, length {pkt.size:,} — zero copies",
                    pkt=pkt.id, hpa=hpa, gpa=gpa, desc=slot)
        self._cause(port, done)

    def _dma_rx_blocked(self, port: VfPort, pkt: Packet, slot: int, gpa: int, desc: int, cost: int) -> None:
        """The IOMMU blocked the frame's DMA write: a posted PCIe write, so the VF
        is told nothing, the buffer keeps its old bytes, and the descriptor (whose
        page is mapped) still gets its write-back with DD."""
        now = self.engine.now
        vm, vf, rx = port.vm, port.vf, port.rx
        tr = self.engine.trace
        vf.dropped += 1
        self.sim.dropped(pkt, "IOMMU blocked the DMA write (DMAR fault)", 4)
        self._dma(port, desc, True, "")
        rx.hw_done_rx(slot, pkt.size)
        port.rx_filled[slot] = None
        done = port.dma.reserve(now, cost) + self.pcie_ns
        if tr.on:
            tr.emit(now, "dma", vm.name, 5,
                    f"{vf.name} writes back RX descriptor {slot}: DD|EOP, length {pkt.size:,} — the frame's "
                    f"write was a posted write the IOMMU dropped, so the VF saw no error and GPA 0x{gpa:x} "
                    f"keeps its old bytes", pkt=pkt.id, gpa=gpa, desc=slot, blocked=True)
        self._cause(port, done)

    def _stale_read(self, port: VfPort, slot: int, gpa: int, length: int, now: int) -> int:
        vm = port.vm
        tr = self.engine.trace
        if tr.on:
            if 0 <= gpa < vm.mem.size:
                what = (f"the buffer at GPA 0x{gpa:x} still holds its old bytes (the VF's write was blocked "
                        f"by the IOMMU): the frame it reads is stale")
            else:
                what = f"GPA 0x{gpa:x} is outside {vm.name}'s RAM: it reads nothing valid"
            tr.emit(now, "ring", vm.name, 6,
                    f"{vm.name}'s NAPI poll sees DD on RX descriptor {slot} (length {length:,}) — {what}",
                    queue="rx", desc=slot, gpa=gpa, stale=True)
        return vm.vcpu.reserve(now, int(self.costs["guest_rx_ns"]))

    # -- interrupts --------------------------------------------------------------------------------
    def _cause(self, port: VfPort, at: int | None = None) -> None:
        port.cause = True
        eng = self.engine
        if at is not None and at > eng.now:
            if port.masked:
                # While the vector is masked the check does nothing (the cause
                # waits for VTEIMS, which checks at once): it is held back with
                # its place in the event order, and scheduled there only if the
                # vector is unmasked before it is due (_unmask_checks).  A VF
                # at line rate is masked for almost all of its NAPI polls.
                port.held_checks.append((at, eng.reserve_seq()))
            else:
                eng.at(at, self._maybe_irq, port)
        else:
            self._maybe_irq(port)

    def _unmask_checks(self, port: VfPort) -> None:
        """The vector is unmasked now: the held checks still to come go into
        the event order where they would have been all along; those already
        due ran (did nothing) while it was masked.  One due this very instant
        may have come before or after this action: it runs right after it,
        where it finds what the check this action made found (a repeat of
        _maybe_irq with nothing in between changes nothing)."""
        eng = self.engine
        now = eng.now
        for t, seq in port.held_checks:
            if t >= now:
                eng.push(t, seq, self._maybe_irq, port)
        port.held_checks.clear()

    def _maybe_irq(self, port: VfPort) -> None:
        """The 82599's EITR: a cause fires the MSI-X once the interval counter
        has expired and the vector is not masked; then the counter restarts."""
        if not port.cause or port.masked:
            return
        now = self.engine.now
        if now < port.irq_armed_at:
            if not port.itr_timer:
                port.itr_timer = True
                self.engine.at(port.irq_armed_at, self._itr_fire, port)
            return
        port.cause = False
        port.masked = True            # VTEIAM: the vector auto-masks until NAPI re-enables it
        port.irq_armed_at = now + port.eitr_ns
        self.metrics.notify_sent += 1
        start = self.vmm.deliver_irq(port.vm, port.vector, port.msix_name, assigned=True, stage=5)
        if start is not None:
            self.engine.at(start, self._isr, port)

    def _itr_fire(self, port: VfPort) -> None:
        port.itr_timer = False
        self._maybe_irq(port)

    def _isr(self, port: VfPort) -> None:
        vm = port.vm
        t = vm.vcpu.reserve(self.engine.now, int(self.costs["guest_irq_ns"]))
        t = self.vmm.ack_irq(vm, port.vector, stage=5, at=t)
        if not port.napi:
            port.napi = True
            port.sirq_start = t                      # the NET_RX softirq starts on the ISR's exit
            if self.engine.go_on(t):
                self.legacy_napi(port, 0, 0)
            else:
                self.engine.at(t, self.legacy_napi, port, 0, 0)

    def _napi_complete(self, port: VfPort, t: int) -> None:
        """ixgbevf_poll after napi_complete_done: the adaptive ITR, then VTEIMS
        (unmask the vector) — both writes to the VF's BAR, no exit."""
        if self.adaptive:
            self._set_itr(port)
        port.masked = False
        if port.held_checks:
            self._unmask_checks(port)
        self._maybe_irq(port)

    def _update_itr(self, port: VfPort, state: int, nbytes: int, packets: int) -> int:
        """ixgbevf_update_itr for one ring container: bytes per µs of the
        interrupt interval (itr >> 2) picks lowest / low / bulk latency."""
        if packets == 0:
            return state
        us = port.itr >> 2
        if us == 0:
            return state
        per_us = nbytes // us
        if state == LOWEST:
            if per_us > 10:
                state = LOW
        elif state == LOW:
            if per_us > 20:
                state = BULK
            elif per_us <= 10:
                state = LOWEST
        elif per_us <= 20:
            state = LOW
        return state

    def _set_itr(self, port: VfPort) -> None:
        """ixgbevf_set_itr: the higher of the rx / tx states' ITR, reached by
        exponential smoothing ``new = 10·new·old / (9·new + old)``; a change is
        an EITR write (ixgbevf_write_eitr)."""
        port.tx_state = self._update_itr(port, port.tx_state, port.tx_bytes, port.tx_packets)
        port.rx_state = self._update_itr(port, port.rx_state, port.rx_bytes, port.rx_packets)
        if port.tx_packets:
            port.tx_bytes = port.tx_packets = 0
        if port.rx_packets:
            port.rx_bytes = port.rx_packets = 0
        state = max(port.rx_state, port.tx_state)
        new, old = STATE_ITR[state], port.itr
        if new == old:
            return
        new = (10 * new * old) // (9 * new + old)
        port.itr = new
        port.eitr_ns = eitr_ns(new)
        port.eitr_writes += 1
        tr = self.engine.trace
        if tr.on:
            tr.emit(self.engine.now, "irq", port.vm.name, 5,
                    f"{port.vm.name}'s adaptive ITR ({STATE_NAME[state]}): writes VTEITR = "
                    f"0x{self._eitr_reg(new):08x} (itr {old:,} → {new:,}: {eitr_ns(new) / 1000:g} µs between "
                    f"interrupts) straight to {port.vf.name}'s BAR — no exit",
                    itr=new, old_itr=old, eitr=self._eitr_reg(new), state=state)

    def _refill(self, port: VfPort, at: int) -> int:
        if self.faults["ring_full"]:
            return at
        rx = port.rx
        n = 0
        rng = self.engine.rng
        while rx.unused() and (port.rx_pool or port.ro_pool):
            self._post(port, rng)
            n += 1
        if not n:
            return at
        rx.tail = rx.next_to_use                   # ixgbevf_write_tail: next_to_use itself
        tr = self.engine.trace
        if tr.on:
            tr.emit(self.engine.now, "ring", port.vm.name, 1,
                    f"{port.vm.name} refills {n} RX buffer{'s' if n != 1 else ''} and writes the tail ({rx.tail}) "
                    f"straight to {port.vf.name}'s BAR — no exit", queue="rx", added=n)
        return port.vm.vcpu.reserve(at, int(self.costs["guest_refill_ns"]) * n)

    # -- transmit ------------------------------------------------------------------------------------
    def guest_send(self, vm: "Vm", pkt: Packet) -> None:
        port = self.ports[vm.index]
        self.queue_for_xmit(port, pkt, port.tx.unused() < TX_DESC_NEEDED)

    def _xmit(self, port: VfPort, pkt: Packet) -> None:
        port.tx_to_xmit -= 1
        self._clean_tx(port)
        tx, vm = port.tx, port.vm
        if tx.unused() < TX_DESC_NEEDED or not port.tx_pool:
            port.qdisc.appendleft(pkt)
            return
        f = self.faults["spoofed_src"]
        if f > 0 and self.engine.rng.random() < f:
            # the guest forges its source MAC
            frame = bytearray(pkt.frame)
            frame[6:12] = mac_bytes(FORGED_MAC)
            pkt.frame = bytes(frame)
            pkt.src = FORGED_MAC
        if port.vf.vlan and pkt.vlan:
            # a port VLAN is invisible to the guest: it sends untagged, the VF tags on egress
            strip_vlan(pkt)
        gpa = port.tx_pool.popleft()
        vm.mem.write(gpa, pkt.frame, "guest")
        if self.sim.capture is not None:
            self.sim.guest_queued(vm, pkt, gpa)
        slot = tx.post_tx(gpa, pkt.size, gpa, 18 if pkt.vlan else 14)
        tx.tail = tx.next_to_use
        port.tx_sent[slot] = pkt
        tr = self.engine.trace
        if tr.on:
            tr.emit(self.engine.now, "ring", vm.name, 1,
                    f"{vm.name} writes a context descriptor ({(slot - 1) % tx.size}) and data descriptor {slot} "
                    f"(DTYP_DATA|DEXT|IFCS|EOP|RS, {pkt.size:,} B, PAYLEN {pkt.size:,}, CC) for frame #{pkt.id} "
                    f"and writes the tail ({tx.tail}) straight to {port.vf.name} — no exit",
                    queue="tx", desc=slot, pkt=pkt.id)
        end = port.dma.reserve(self.engine.now, self.nic_ns)
        port.tx_dma_pending += 1
        self.engine.at(end, self._dma_tx, port)
        if port.qdisc and tx.unused() >= TX_DESC_NEEDED and not port.tx_to_xmit:
            self.schedule_xmit(port, port.qdisc.popleft())

    def _dma_tx(self, port: VfPort) -> None:
        port.tx_dma_pending -= 1
        tx, vm, vf = port.tx, port.vm, port.vf
        got = tx.hw_fetch()
        if got is None:
            return
        slot, gpa, length = got
        pkt = port.tx_sent.pop(slot)
        now = self.engine.now
        try:
            self._dma(port, tx.base + 16 * ((slot - 1) % tx.size), False, "")   # the context descriptor
            self._dma(port, tx.base + 16 * slot, False, "")                      # the data descriptor
            hpa, cost = self._dma(port, gpa, False, "DMA read from")
        except DmaFault:
            tx.hw_done_tx(slot)
            vf.dropped += 1
            self.sim.dropped(pkt, "IOMMU blocked the DMA read (DMAR fault)", 4)
            self._cause(port)
            return
        mem = vm.mem
        frame = bytes(mem.ram[hpa - mem.hpa_base:hpa - mem.hpa_base + length])
        if frame != pkt.frame:
            self.metrics.corrupt += 1
        self._dma(port, tx.base + 16 * slot, True, "")
        tx.hw_done_tx(slot)
        ready = port.dma.reserve(now, cost) + self.pcie_ns
        src = pkt.src
        local, reason = self.nic.from_vf(vf, src, pkt.dst)
        if reason:
            self.sim.dropped(pkt, reason, 2)
            if self.nic.ssvpc and not self.watchdog_armed:
                # the PF driver's service timer will read SSVPC at its next tick
                self.watchdog_armed = True
                nxt = (now // self.watchdog_ns + 1) * self.watchdog_ns
                self.engine.at(nxt, self._pf_watchdog, vm.name)
        else:
            vf.tx += 1
            for f in self.nic.flood_from_vf(vf, pkt.dst) if local is None else ():
                # broadcast/multicast: the VEB also replicates the (untagged) frame to the
                # other functions in the VLAN; each copy is a packet of its own
                copy = Packet(pkt.id, pkt.t0, f.vm, "rx", pkt.frame, pkt.dst, pkt.src, 0)
                self.metrics.offer(now)
                other = self.ports[f.vm]
                end = other.dma.reserve(ready, self.nic_ns)
                other.rx_dma_pending += 1
                self.engine.at(end, self._dma_rx, other, copy)
            if vf.vlan:
                insert_vlan(pkt, vf.vlan)
            if local is not None:
                if pkt.vlan:
                    strip_vlan(pkt)
                other = self.ports[local.vm]
                end = other.dma.reserve(ready, self.nic_ns)
                other.rx_dma_pending += 1
                self.engine.at(end, self._dma_rx, other, pkt)
            else:
                self.sim.transmit(pkt, ready)
        self._cause(port, ready)

    def _pf_watchdog(self, vm_name: str) -> None:
        """ixgbe_watchdog_subtask → ixgbe_spoof_check on the host: SSVPC read and cleared."""
        self.watchdog_armed = False
        lines = self.nic.spoof_check()
        tr = self.engine.trace
        for line in lines.split("\n") if lines and tr.on else ():   # one line per port that counted
            tr.emit(self.engine.now, "fault", vm_name, 2,
                    f"host log: {line} (the PF driver's watchdog read SSVPC, every "
                    f"{self.watchdog_ns / 1e6:,g} ms)", line=line, source="PF")

    def _clean_tx(self, port: VfPort) -> None:
        """ixgbevf_clean_tx_irq: frames whose data descriptor has DD; their bytes
        feed the adaptive ITR's tx container."""
        tx = port.tx
        while (got := tx.reap()) is not None:
            port.tx_pool.append(got[1])
            port.tx_bytes += got[2]
            port.tx_packets += 1

    # -- accounting ----------------------------------------------------------------------------------
    def in_flight(self) -> int:
        return sum(p.rx_dma_pending + sum(1 for v in p.rx_filled.values() if v is not None)
                   + (p.rx_reading is not None) + len(p.qdisc) + p.tx_to_xmit + len(p.tx_sent)
                   for p in self.ports)

    # -- views ---------------------------------------------------------------------------------------
    def queues(self) -> list[QueueInfo]:
        return [r.queue_info(p.vm.name, KIND) for p in self.ports for r in (p.rx, p.tx)]

    def ring_views(self, vms: set[str] | None = None) -> list[RingView]:
        out = []
        for p in self.ports:
            if vms is not None and p.vm.name not in vms:
                continue
            itr = (f"adaptive ITR {p.eitr_ns / 1000:g} µs" if self.adaptive
                   else f"EITR fixed {p.eitr_ns / 1000:g} µs")
            note = f"{p.vf.name} {p.vf.bdf}: tail writes go straight to the VF (no exit) · {itr}"
            out.append(adv_ring_view(p.vm.name, p.rx, note))
            out.append(adv_ring_view(p.vm.name, p.tx, note))
        return out

    def iommu_view(self) -> TableView:
        names = {p.vf.rid: f"{p.vf.name} → {p.vm.name}" for p in self.ports}
        return self.iommu.view(names)

    def nic_view(self) -> TableView:
        return self.nic.view()
