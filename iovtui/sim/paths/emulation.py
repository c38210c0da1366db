"""Device emulation: the guest drives an e1000 that QEMU emulates.

Every register access the guest's e1000 driver makes is an MMIO access to a
page with no memory behind it: KVM sees EPT_MISCONFIG and hands it to QEMU's
device model in userspace.  Data takes two copies (tap → QEMU's buffer →
guest RAM on receive, and the reverse on transmit).

Receive flow (the stages the path strip lights):
  1. the guest driver posts RX buffers and writes RDT (an exit)
  2. a frame reaches the host NIC; the host bridge forwards it to the VM's tap
  3. QEMU's e1000 model reads the RX descriptor at RDH (pci_dma_read)
  4. it copies the frame from its buffer into the guest buffer (copy 2 of 2),
     writes length and DD|EOP, advances RDH and sets ICR.RXT0
  5. QEMU's e1000 raises its INTx line (KVM_IRQ_LINE into KVM's in-kernel
     IOAPIC) once ITR permits; KVM kicks the vCPU and injects
  6. the guest's e1000_intr reads ICR, writes IMC, reads STATUS (three exits);
     NAPI reads the frame at the buffer's GPA, refills, writes RDT, then IMS
     and a flushing STATUS read re-enable interrupts (more exits)
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

from ..e1000 import (ICR_RXT0, ICR_TXDW, IMS_ENABLE_MASK, REG, LegacyRing, RegisterFile, ring_view)
from ..engine import Resource
from ..packet import Packet
from ..views import QueueInfo, RingView
from .base import Technique, buffer_pools

if TYPE_CHECKING:  # pragma: no cover
    from ..vmm import Vm
    from ..world import Simulation

__all__ = ["Emulation"]

TAP_QUEUE_LEN = 1000


class E1000Nic:
    def __init__(self, tech: "Emulation", vm: "Vm") -> None:
        self.vm = vm
        n = tech.ring_size
        mem = vm.mem
        self.regs = RegisterFile()
        self.rx = LegacyRing(mem, "rx", n, "e1000 RX descriptor ring")
        self.tx = LegacyRing(mem, "tx", n, "e1000 TX descriptor ring")
        self.rx_pool, self.tx_pool = buffer_pools(mem, n)
        self.model = Resource(f"qemu-e1000:{vm.name}")
        self.tap: deque[tuple[int, Packet]] = deque()
        self.rx_scheduled = False
        self.rx_waiting = False                 # RDH == RDT: QEMU stops reading the tap
        self.rx_filled: dict[int, Packet] = {}  # slot -> frame written, not yet cleaned
        self.rx_reading: Packet | None = None
        self.irq_armed_at = -1                  # ITR: earliest time the next interrupt may fire
        self.itr_timer = False
        self.in_isr = False
        self.napi = False
        self.qdisc: deque[Packet] = deque()
        self.tx_to_xmit = 0
        self.tx_sent: dict[int, Packet] = {}    # slot -> frame in the TX ring


class Emulation(Technique):
    name = "emulation"
    stages = ("guest posts buffer, RDT write", "host bridge → tap", "QEMU reads RX descriptor",
              "copy into guest buffer", "ICR → INTx → inject", "ISR exits, guest reads frame")

    def __init__(self, sim: "Simulation") -> None:
        super().__init__(sim)
        o = self.preset.emulation
        self.ring_size = o["ring_size"]
        self.itr_ns = int(o["itr_us"] * 1000)
        c = self.costs
        self.model_ns = int(c["qemu_e1000_pkt_ns"])
        self.wakeup_ns = int(c["wakeup_ns"])
        self.host_stack_ns = int(c["host_stack_ns"])
        self.budget = self.preset.virtio["napi_budget"]
        self.host_rx = Resource("host rx softirq")
        self.host_tx = Resource("host tx")
        self.nics: list[E1000Nic] = []
        self.by_mac: dict[str, E1000Nic] = {}

    # -- description -----------------------------------------------------------------
    def options(self) -> dict:
        return {"itr_us": self.itr_ns / 1000, "ring_size": self.ring_size}

    def label(self) -> str:
        itr = f"ITR {self.itr_ns / 1000:g} µs" if self.itr_ns else "ITR off"
        return f"emulation (e1000, {itr})"

    def host_busy_ns(self) -> int:
        return self.host_rx.busy_ns + self.host_tx.busy_ns + sum(n.model.busy_ns for n in self.nics)

    # -- register access: every one is an exit to QEMU -----------------------------
    def _mmio(self, nic: E1000Nic, reg: str, write: int | None, cause: str, at: int | None = None,
              stage: int = 6, extra_ns: int = 0) -> tuple[int, int]:
        """The guest touches an e1000 register: EPT_MISCONFIG → QEMU.  Returns
        ``(value read, time the vCPU is back)``."""
        off = REG[reg]
        if write is None:
            val = nic.regs.read(off)
            what = f"{reg} read (0x{off:04x}) = 0x{val:08x}"
        else:
            nic.regs.write(off, write)
            val = write
            what = f"{reg} write (0x{off:04x}) ← 0x{write:x}"
        tr = self.engine.trace
        if tr.on:
            tr.emit(self.engine.now, "reg", nic.vm.name, stage, f"{nic.vm.name} e1000 {what} · {cause}",
                    reg=reg, offset=off, value=val, write=write is not None)
        end = self.vmm.exit(nic.vm, "EPT_MISCONFIG", f"{reg} {'write' if write is not None else 'read'} ({cause})",
                            user=True, at=at, stage=stage, extra_ns=extra_ns)
        return val, end

    # -- set-up ----------------------------------------------------------------------
    def setup(self) -> None:
        for vm in self.vms:
            nic = E1000Nic(self, vm)
            self.nics.append(nic)
            self.by_mac[vm.mac] = nic
            # e1000_configure_rx: ring base and length, then buffers and the tail
            rx, tx = nic.rx, nic.tx
            nic.regs.write(REG["RDBAL"], rx.base)
            nic.regs.write(REG["RDLEN"], rx.size * 16)
            nic.regs.write(REG["TDBAL"], tx.base)
            nic.regs.write(REG["TDLEN"], tx.size * 16)
            nic.regs.set_itr_ns(self.itr_ns)     # e1000_configure_rx: ITR in 256 ns units
            nic.regs.write(REG["IMS"], IMS_ENABLE_MASK)
            while rx.unused() and nic.rx_pool:
                gpa = nic.rx_pool.popleft()
                rx.post_rx(gpa, gpa)
            tr = self.engine.trace
            if tr.on:
                tr.emit(0, "ring", vm.name, 1,
                        f"{vm.name}'s e1000 driver posts {rx.next_to_use} RX buffers; ring at GPA 0x{rx.base:x}",
                        queue="rx")
            self._write_rdt(nic, 0)

    def _write_rdt(self, nic: E1000Nic, at: int) -> int:
        rx = nic.rx
        _v, end = self._mmio(nic, "RDT", rx.advance_tail(), "new RX buffers", at=at, stage=1)
        if nic.rx_waiting and rx.hw_owned():
            # set_rdt → qemu_flush_queued_packets: QEMU reads the tap again
            nic.rx_waiting = False
            if nic.tap and not nic.rx_scheduled:
                nic.rx_scheduled = True
                self.engine.at(end + self._rx_cost(nic.tap[0][1]), self._model_rx, nic)
        return end

    # -- receive -----------------------------------------------------------------------
    def _rx_cost(self, pkt: Packet) -> int:
        # the device model's own work plus its two copies
        return self.model_ns + 2 * self.vmm.copy_cost(pkt.size)

    def receive_from_wire(self, pkt: Packet) -> None:
        now = self.engine.now
        ready = self.host_rx.reserve(now, self.host_stack_ns)
        nic = self.host_bridge(pkt, self.by_mac, TAP_QUEUE_LEN, _tap_of)
        if nic is None:
            return
        nic.tap.append((ready, pkt))
        tr = self.engine.trace
        if tr.on:
            tr.emit(now, "switch", nic.vm.name, 2,
                    f"frame #{pkt.id} reaches the host NIC; the host bridge forwards it to "
                    f"{nic.vm.name}'s tap ({len(nic.tap)} queued)", pkt=pkt.id,
                    dst=pkt.dst, vlan=nic.vm.vlan)
        if not nic.rx_scheduled and not nic.rx_waiting:
            nic.rx_scheduled = True
            self.engine.at(ready + self.wakeup_ns + self._rx_cost(pkt), self._model_rx, nic)

    def _model_rx(self, nic: E1000Nic) -> None:
        """QEMU's e1000_receive for one frame."""
        now = self.engine.now
        vm = nic.vm
        tr = self.engine.trace
        rx = nic.rx
        got = rx.hw_fetch()
        if got is None:
            # e1000_can_receive() is false: RDH == RDT, no buffer owned by the device
            nic.rx_scheduled = False
            nic.rx_waiting = True
            if tr.on:
                tr.emit(now, "ring", vm.name, 3,
                        f"QEMU e1000: RX ring full of frames (RDH = RDT = {rx.head}); stops reading the tap",
                        queue="rx")
            return
        _ready, pkt = nic.tap.popleft()
        slot, gpa, _len = got
        nic.model.busy_ns += self._rx_cost(pkt)
        m = self.metrics
        # copy 1: the tap's frame into QEMU's buffer; copy 2: into guest RAM (pci_dma_write)
        m.copies += 2
        m.copy_bytes += 2 * pkt.size
        pkt.copies += 2
        vm.mem.write(gpa, pkt.frame, "QEMU e1000")
        rx.hw_done_rx(slot, pkt.size)
        nic.regs.regs[REG["RDH"]] = rx.head
        nic.rx_filled[slot] = pkt
        if tr.on:
            tr.emit(now, "ring", vm.name, 3,
                    f"QEMU e1000 reads RX descriptor {slot} (buffer GPA 0x{gpa:x}) at RDH", queue="rx",
                    desc=slot, gpa=gpa, pkt=pkt.id)
            tr.emit(now, "copy", vm.name, 4,
                    f"QEMU copies frame #{pkt.id} ({pkt.size} B) tap → its buffer → GPA 0x{gpa:x} "
                    f"(two copies); writes DD|EOP, RDH → {rx.head}", queue="rx", desc=slot, gpa=gpa,
                    bytes=pkt.size, pkt=pkt.id)
        self._raise(nic, ICR_RXT0)
        if nic.tap:
            ready, nxt = nic.tap[0]
            self.engine.at(max(now, ready) + self._rx_cost(nxt), self._model_rx, nic)
        else:
            nic.rx_scheduled = False

    # -- interrupts ------------------------------------------------------------------
    def _raise(self, nic: E1000Nic, cause: int) -> None:
        """Set an ICR cause; assert the interrupt if unmasked and ITR allows."""
        nic.regs.raise_cause(cause)
        self._maybe_interrupt(nic)

    def _maybe_interrupt(self, nic: E1000Nic) -> None:
        if not nic.regs.asserted or nic.in_isr:
            return
        now = self.engine.now
        itr = nic.regs.itr_ns      # ITR: at most one interrupt per interval
        if itr and now < nic.irq_armed_at:
            if not nic.itr_timer:
                nic.itr_timer = True
                self.engine.at(nic.irq_armed_at, self._itr_fire, nic)
            else:
                self.metrics.notify_suppressed += 1
            return
        nic.in_isr = True
        nic.irq_armed_at = now + itr
        self.metrics.notify_sent += 1
        tr = self.engine.trace
        if tr.on:
            tr.emit(now, "irq", nic.vm.name, 5,
                    f"QEMU e1000 raises INTx: ICR = 0x{nic.regs.icr:02x} & IMS = 0x{nic.regs.ims:02x}",
                    icr=nic.regs.icr)
        start = self.vmm.deliver_irq(nic.vm, "e1000", "e1000 INTx", level=True, stage=5)
        if start is not None:
            self.engine.at(start, self._isr, nic)

    def _itr_fire(self, nic: E1000Nic) -> None:
        nic.itr_timer = False
        self._maybe_interrupt(nic)

    def _isr(self, nic: E1000Nic) -> None:
        """e1000_intr: read ICR (clears it), mask everything, flush, schedule NAPI, EOI."""
        now = self.engine.now
        icr, t = self._mmio(nic, "ICR", None, "interrupt handler reads the cause", at=now)
        vm = nic.vm
        if icr:
            _v, t = self._mmio(nic, "IMC", 0xFFFFFFFF, "mask interrupts while polling", at=t)
            _v, t = self._mmio(nic, "STATUS", None, "flush posted writes", at=t)
        t = vm.vcpu.reserve(t, int(self.costs["guest_irq_ns"]))
        t = self.vmm.ack_irq(vm, "e1000", level=True, stage=6, at=t)   # the ISR ends with it (stage ⑥)
        nic.in_isr = False
        if icr and not nic.napi:
            nic.napi = True
            self.engine.at(t, self.legacy_napi, nic, 0, 0)

    def _give_back(self, nic: E1000Nic, gpa: int) -> None:
        nic.rx_pool.append(gpa)

    def _napi_complete(self, nic: E1000Nic, t: int) -> None:
        """napi_complete_done → e1000_irq_enable: IMS write, then a flushing STATUS read."""
        _v, t = self._mmio(nic, "IMS", IMS_ENABLE_MASK, "re-enable interrupts", at=t)
        _v, t = self._mmio(nic, "STATUS", None, "flush posted writes", at=t)
        self._maybe_interrupt(nic)

    def _refill(self, nic: E1000Nic, at: int) -> int:
        """e1000_alloc_rx_buffers: post clean buffers, then one RDT write."""
        if self.preset.faults["ring_full"]:
            return at
        rx = nic.rx
        n = 0
        while rx.unused() and nic.rx_pool:
            gpa = nic.rx_pool.popleft()
            rx.post_rx(gpa, gpa)
            n += 1
        if not n:
            return at
        t = nic.vm.vcpu.reserve(at, int(self.costs["guest_refill_ns"]) * n)
        return self._write_rdt(nic, t)

    # -- transmit ----------------------------------------------------------------------
    def guest_send(self, vm: "Vm", pkt: Packet) -> None:
        nic = self.nics[vm.index]
        self.queue_for_xmit(nic, pkt, nic.tx.unused() == 0)

    def _xmit(self, nic: E1000Nic, pkt: Packet) -> None:
        """e1000_xmit_frame: one descriptor, then the TDT write — during which
        QEMU transmits synchronously (start_xmit runs in the vCPU's exit)."""
        nic.tx_to_xmit -= 1
        tx = nic.tx
        vm = nic.vm
        if not tx.unused() or not nic.tx_pool:
            nic.qdisc.appendleft(pkt)
            return  # the TX clean-up in NAPI restarts the queue
        gpa = nic.tx_pool.popleft()
        vm.mem.write(gpa, pkt.frame, "guest")
        slot = tx.post_tx(gpa, pkt.size, gpa)
        nic.tx_sent[slot] = pkt
        tr = self.engine.trace
        if tr.on:
            tr.emit(self.engine.now, "ring", vm.name, 0,
                    f"{vm.name}'s e1000 driver fills TX descriptor {slot} (EOP|IFCS|RS) for frame #{pkt.id}",
                    queue="tx", desc=slot, gpa=gpa, pkt=pkt.id)
        # the device model's work happens inside this exit
        work = 0
        sent = []
        tx.advance_tail()
        while True:
            got = tx.hw_fetch()
            if got is None:
                break
            s, addr, length = got
            p = nic.tx_sent.pop(s)
            frame = vm.mem.read(addr, length)
            if frame != p.frame:
                self.metrics.corrupt += 1
            self.metrics.copies += 2   # guest RAM → QEMU buffer → tap
            self.metrics.copy_bytes += 2 * length
            p.copies += 2
            tx.hw_done_tx(s)
            work += self.model_ns + 2 * self.vmm.copy_cost(length)
            sent.append(p)
        nic.model.busy_ns += work
        _v, end = self._mmio(nic, "TDT", tx.tail, "transmit", stage=0, extra_ns=work)
        nic.regs.regs[REG["TDH"]] = tx.head
        if tr.on and sent:
            tr.emit(self.engine.now, "copy", vm.name, 0,
                    f"QEMU e1000 (in the exit) copies {len(sent)} frame(s) guest → its buffer → tap "
                    f"(two copies each); sets DD, TDH → {tx.head}", queue="tx")
        for p in sent:
            ready = self.host_tx.reserve(end, self.host_stack_ns)
            self.sim.transmit(p, ready)
        self._raise(nic, ICR_TXDW)
        if nic.qdisc and tx.unused() and not nic.tx_to_xmit:
            self.schedule_xmit(nic, nic.qdisc.popleft())

    def _clean_tx(self, nic: E1000Nic) -> None:
        """e1000_clean_tx_irq: reclaim descriptors with DD, wake the queue."""
        tx = nic.tx
        while (got := tx.reap()) is not None:
            nic.tx_pool.append(got[1])
        if nic.qdisc and tx.unused() and not nic.tx_to_xmit:
            self.schedule_xmit(nic, nic.qdisc.popleft())

    # -- accounting --------------------------------------------------------------------
    def in_flight(self) -> int:
        return sum(len(n.tap) + len(n.rx_filled) + (n.rx_reading is not None) + len(n.qdisc)
                   + len(n.tx_sent) + n.tx_to_xmit for n in self.nics)

    # -- views -------------------------------------------------------------------------
    def queues(self) -> list[QueueInfo]:
        return [r.queue_info(n.vm.name, "e1000-legacy") for n in self.nics for r in (n.rx, n.tx)]

    def ring_views(self) -> list[RingView]:
        out = []
        for n in self.nics:
            out.append(ring_view(n.vm.name, n.rx, "e1000-legacy", "RDH", "RDT"))
            out.append(ring_view(n.vm.name, n.tx, "e1000-legacy", "TDH", "TDT"))
        return out


def _tap_of(nic: E1000Nic) -> deque:
    return nic.tap
