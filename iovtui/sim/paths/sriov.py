"""Direct assignment with SR-IOV: each VM owns a VF; the NIC DMAs straight
into guest RAM through the IOMMU; the host is not on the data path.

Receive flow (DOMAIN.md's six steps, the stage numbers of every event):
  1. the guest driver allocates a buffer and posts its GPA to the VF's RX ring
     (the tail write goes straight to the VF's BAR, mapped through EPT: no exit)
  2. a frame arrives and the NIC's switch picks the VF by destination MAC
  3. the VF issues a DMA write to the GPA (it cannot know the HPA)
  4. the IOMMU translates GPA → HPA (IOTLB hit, or a page walk; fault if unmapped)
  5. the NIC writes the frame to the HPA and marks the descriptor done (DD)
  6. the guest reads the frame through the same GPA
Interrupts are the only exits, and the host profile decides them (see
``Vmm.deliver_irq``): without APICv the VF's MSI-X costs an EXTERNAL_INTERRUPT
on a running vCPU and the guest's EOI exits (APIC_ACCESS, or MSR_WRITE with
x2APIC); with APICv both are exitless; with VT-d posted interrupts the host
takes no interrupt at all.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

from ..e1000 import LegacyRing, ring_view
from ..engine import Resource
from ..iommu import DmaFault, Iommu
from ..nic import Function, Nic
from ..packet import Packet, insert_vlan, mac_bytes, strip_vlan
from ..views import QueueInfo, RingView, TableView
from .base import BUF_STRIDE, Technique, buffer_pools

if TYPE_CHECKING:  # pragma: no cover
    from ..vmm import Vm
    from ..world import Simulation

__all__ = ["SrIov", "ROGUE_GPA"]

#: where a buggy or malicious guest driver points buffers it never mapped
ROGUE_GPA = 0x7F00_0000
RXD_ERR_RXE = 0x80
FORGED_MAC = "02:de:ad:be:ef:01"


class VfPort:
    def __init__(self, tech: "SrIov", vm: "Vm", vf: Function) -> None:
        self.vm = vm
        self.vf = vf
        n = tech.ring_size
        mem = vm.mem
        self.rx = LegacyRing(mem, "rx", n, f"{vf.name} RX descriptor ring")
        self.tx = LegacyRing(mem, "tx", n, f"{vf.name} TX descriptor ring")
        self.rx_pool, self.tx_pool = buffer_pools(mem, n)
        self.ro_pool: deque[int] = deque()
        self.ro_pages: list[int] = []
        self.dma = Resource(f"{vf.name} DMA")
        self.rx_dma_pending = 0
        self.tx_dma_pending = 0
        self.rx_filled: dict[int, Packet | None] = {}
        self.rx_reading: Packet | None = None
        self.qdisc: deque[Packet] = deque()
        self.tx_to_xmit = 0
        self.tx_sent: dict[int, Packet] = {}
        self.masked = False          # the driver masked the vector while NAPI polls
        self.cause = False           # an interrupt cause is pending
        self.irq_armed_at = 0
        self.itr_timer = False
        self.napi = False
        self.rogue_posted = 0


class SrIov(Technique):
    name = "sriov"
    stages = ("guest posts buffer GPA", "NIC switch picks VF", "VF DMA write to GPA",
              "IOMMU GPA → HPA", "NIC writes frame, DD", "guest reads frame")

    def __init__(self, sim: "Simulation") -> None:
        super().__init__(sim)
        o = self.preset.sriov
        self.ring_size = o["ring_size"]
        self.host = sim.host
        self.itr_ns = int(o["itr_us"] * 1000)
        self.budget = self.preset.virtio["napi_budget"]
        c = self.costs
        self.nic_ns = int(c["nic_pkt_ns"])
        self.pcie_ns = int(c["pcie_dma_ns"])
        self.nic = Nic(self.preset.nic, self.vms)
        self.iommu = Iommu(o["iotlb_entries"], int(c["iotlb_walk_read_ns"]), self.metrics)
        self.ports: list[VfPort] = []
        self.by_rid: dict[int, VfPort] = {}
        self.faults = self.preset.faults

    # -- description -------------------------------------------------------------------
    def options(self) -> dict:
        return {"iotlb_entries": self.iommu.iotlb_entries, "vfs": len(self.nic.vfs),
                "itr_us": self.itr_ns / 1000}

    def label(self) -> str:
        first = self.nic.vfs[0].bdf if self.nic.vfs else "-"
        return f"SR-IOV (VF {first}{'…' if len(self.vms) > 1 else ''})"

    def host_busy_ns(self) -> int:
        return 0  # the host is not on the data path

    # -- set-up ----------------------------------------------------------------------------
    def setup(self) -> None:
        rng = self.engine.rng
        for vm, vf in zip(self.vms, self.nic.vfs):
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
            rx.tail = rx.next_to_use
            if tr.on:
                tr.emit(0, "ring", vm.name, 1,
                        f"{vm.name}'s VF driver posts {rx.next_to_use} RX buffer GPAs to {vf.name} "
                        f"({vf.bdf}); tail write goes straight to the VF — no exit", queue="rx")

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
        if port.ro_pool is not None and self._read_only(port, gpa):
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
            how = "IOTLB hit" if hit else f"IOTLB miss: page walk, {cost} ns"
            tr.emit(self.engine.now, "iommu", port.vm.name, 4,
                    f"IOMMU: {vf.bdf} {what} GPA 0x{gpa:x} → HPA 0x{hpa:x} ({how})",
                    rid=vf.bdf, gpa=gpa, hpa=hpa, hit=hit)
        return hpa, cost

    # -- receive ---------------------------------------------------------------------------------
    def receive_from_wire(self, pkt: Packet) -> None:
        now = self.engine.now
        outs, reason = self.nic.from_wire(pkt.dst, pkt.vlan)
        if not outs:
            self.sim.dropped(pkt, reason, 2)
            return
        tr = self.engine.trace
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
        cost = 0
        try:
            _h, c = self._dma(port, rx.base + 16 * slot, False, "")   # descriptor fetch
            cost += c
            if tr.on:
                tr.emit(now, "dma", vm.name, 3,
                        f"{vf.name} fetches RX descriptor {slot} and issues a DMA write of frame #{pkt.id} "
                        f"to GPA 0x{gpa:x} — it cannot know the HPA", pkt=pkt.id, gpa=gpa, rid=vf.bdf)
            hpa, c = self._dma(port, gpa, True, "DMA write to")
            cost += c
        except DmaFault:
            # the write is blocked: nothing reaches RAM; the descriptor comes back with an error
            d = rx.base + 16 * slot
            rx.hw_done_rx(slot, 0)
            vm.mem.ram[d + 13] = RXD_ERR_RXE
            port.rx_filled[slot] = None
            vf.dropped += 1
            self.sim.dropped(pkt, "IOMMU blocked the DMA write (DMAR fault)", 4)
            port.dma.reserve(now, cost)
            self._cause(port)
            return
        mem = vm.mem
        if not mem.hpa_base <= hpa < mem.hpa_base + mem.size:
            raise AssertionError(f"IOMMU mapped {vf.bdf}'s DMA outside {vm.name}'s memory")
        mem.write(hpa - mem.hpa_base, pkt.frame, f"{vf.name} DMA")
        self._dma(port, rx.base + 16 * slot, True, "")                 # descriptor write-back
        rx.hw_done_rx(slot, pkt.size)
        port.rx_filled[slot] = pkt
        vf.rx += 1
        done = port.dma.reserve(now, cost) + self.pcie_ns
        if tr.on:
            tr.emit(now, "dma", vm.name, 5,
                    f"{vf.name} writes frame #{pkt.id} ({pkt.size} B) to HPA 0x{hpa:x} and sets DD on "
                    f"descriptor {slot} — zero copies", pkt=pkt.id, hpa=hpa, gpa=gpa, desc=slot)
        self._cause(port, done)

    # -- interrupts --------------------------------------------------------------------------------
    def _cause(self, port: VfPort, at: int | None = None) -> None:
        port.cause = True
        if at is not None and at > self.engine.now:
            self.engine.at(at, self._maybe_irq, port)
        else:
            self._maybe_irq(port)

    def _maybe_irq(self, port: VfPort) -> None:
        if not port.cause or port.masked:
            return
        now = self.engine.now
        if self.itr_ns and now < port.irq_armed_at:
            if not port.itr_timer:
                port.itr_timer = True
                self.engine.at(port.irq_armed_at, self._itr_fire, port)
            return
        port.cause = False
        port.masked = True            # MSI-X: the vector stays masked until NAPI is done
        port.irq_armed_at = now + self.itr_ns
        self.metrics.notify_sent += 1
        vec = f"{port.vf.name}-TxRx-0"
        start = self.vmm.deliver_irq(port.vm, vec, f"{port.vf.name} MSI-X", assigned=True, stage=5)
        if start is not None:
            self.engine.at(start, self._isr, port)

    def _itr_fire(self, port: VfPort) -> None:
        port.itr_timer = False
        self._maybe_irq(port)

    def _isr(self, port: VfPort) -> None:
        vm = port.vm
        t = vm.vcpu.reserve(self.engine.now, int(self.costs["guest_irq_ns"]))
        t = self.vmm.ack_irq(vm, f"{port.vf.name}-TxRx-0", stage=5, at=t)
        if not port.napi:
            port.napi = True
            self.engine.at(t, self.legacy_napi, port, 0, 0)

    def _napi_complete(self, port: VfPort, t: int) -> None:
        port.masked = False           # unmask the vector: a write to the VF's BAR, no exit
        self._maybe_irq(port)

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
        rx.tail = rx.next_to_use
        tr = self.engine.trace
        if tr.on:
            tr.emit(self.engine.now, "ring", port.vm.name, 1,
                    f"{port.vm.name} refills {n} RX buffer{'s' if n != 1 else ''} and writes the tail ({rx.tail}) straight to "
                    f"{port.vf.name}'s BAR — no exit", queue="rx", added=n)
        return port.vm.vcpu.reserve(at, int(self.costs["guest_refill_ns"]) * n)

    # -- transmit ------------------------------------------------------------------------------------
    def guest_send(self, vm: "Vm", pkt: Packet) -> None:
        port = self.ports[vm.index]
        self.queue_for_xmit(port, pkt, port.tx.unused() == 0)

    def _xmit(self, port: VfPort, pkt: Packet) -> None:
        port.tx_to_xmit -= 1
        self._clean_tx(port)
        tx, vm = port.tx, port.vm
        if not tx.unused() or not port.tx_pool:
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
        slot = tx.post_tx(gpa, pkt.size, gpa)
        tx.tail = tx.next_to_use
        port.tx_sent[slot] = pkt
        tr = self.engine.trace
        if tr.on:
            tr.emit(self.engine.now, "ring", vm.name, 0,
                    f"{vm.name} posts TX descriptor {slot} for frame #{pkt.id} and writes the tail "
                    f"straight to {port.vf.name} — no exit", queue="tx", desc=slot, pkt=pkt.id)
        end = port.dma.reserve(self.engine.now, self.nic_ns)
        port.tx_dma_pending += 1
        self.engine.at(end, self._dma_tx, port)
        if port.qdisc and tx.unused() and not port.tx_to_xmit:
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
            self._dma(port, tx.base + 16 * slot, False, "")
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

    def _clean_tx(self, port: VfPort) -> None:
        tx = port.tx
        while (got := tx.reap()) is not None:
            port.tx_pool.append(got[1])

    # -- accounting ----------------------------------------------------------------------------------
    def in_flight(self) -> int:
        return sum(p.rx_dma_pending + sum(1 for v in p.rx_filled.values() if v is not None)
                   + (p.rx_reading is not None) + len(p.qdisc) + p.tx_to_xmit + len(p.tx_sent)
                   for p in self.ports)

    # -- views ---------------------------------------------------------------------------------------
    def queues(self) -> list[QueueInfo]:
        return [r.queue_info(p.vm.name, "vf-legacy") for p in self.ports for r in (p.rx, p.tx)]

    def ring_views(self) -> list[RingView]:
        out = []
        for p in self.ports:
            note = f"{p.vf.name} {p.vf.bdf}: tail writes go straight to the VF (no exit)"
            out.append(ring_view(p.vm.name, p.rx, "vf-legacy", "head", "tail", note))
            out.append(ring_view(p.vm.name, p.tx, "vf-legacy", "head", "tail", note))
        return out

    def iommu_view(self) -> TableView:
        names = {p.vf.rid: f"{p.vf.name} → {p.vm.name}" for p in self.ports}
        return self.iommu.view(names)

    def nic_view(self) -> TableView:
        return self.nic.view()


