"""Device emulation: the guest drives an e1000 that QEMU emulates.

Every register access the guest's e1000 driver makes is an MMIO access to a
page with no memory behind it: an EPT_MISCONFIG exit.  Where KVM takes it
follows QEMU's ``e1000_mmio_setup``: the whole BAR is *coalesced MMIO* except
MDIC, ICR, ICS, IMS, IMC, TCTL and TDT.

- A write to a coalesced register (RDT, ITR, CTRL…) is appended to KVM's
  coalesced-MMIO ring and the vCPU re-enters at once: the exit's ``where`` is
  ``kernel`` and its cause says ``coalesced MMIO``.  QEMU applies the write
  only at that vCPU's next userspace exit (``kvm_cpu_exec`` flushes the ring
  after every ``KVM_RUN`` return), so an RDT write that would restart
  reception takes effect at the IMS write or STATUS read that follows.
- Reads (ICR, STATUS) and writes to the excluded registers go out to QEMU
  in userspace (``where`` = ``userspace``).

The JSON summary counts them as ``exits.kernel`` (handled inside KVM: the
coalesced writes, HLT, EXTERNAL_INTERRUPT, the EOI) and ``exits.userspace``
(out to QEMU); ``by_reason`` keeps counting both under EPT_MISCONFIG.

Interrupts: QEMU's ``set_interrupt_cause`` drives the INTx line from
ICR & IMS.  With ``emulation.mitigation`` (QEMU's ``mitigation`` property, on
by default) a rising edge outside the mitigation window is raised at once and
arms ``mit_timer`` for max(min(ITR, TADV×4 for a TX cause), 500) × 256 ns
(≥ 128 µs); an edge inside the window waits for the timer
(``e1000_mit_timer``).  Without it QEMU ignores ITR: one edge per cause.

The guest is Linux's e1000 driver: ``e1000_intr`` (ICR read, IMC write, a
flushing STATUS read, NAPI scheduled with the ITR totals zeroed),
``e1000_clean`` (TX clean, ``e1000_clean_rx_irq`` with an RDT write every
16 buffers and at the end, then ``e1000_set_itr`` — InterruptThrottleRate=3,
dynamic conservative, adapter->itr starting at 20,000/s, each change an ITR
write — and ``e1000_irq_enable``: IMS write, flushing STATUS read).
``emulation.itr_us`` > 0 fixes InterruptThrottleRate at 10⁶ / itr_us irq/s,
as the module parameter does (no dynamic ITR).

Data takes two copies (tap → QEMU's buffer → guest RAM on receive, and the
reverse on transmit).

Receive flow (the stages the path strip lights):
  1. the guest driver posts RX buffers and writes RDT = next_to_use − 1
     (a coalesced write: QEMU sees it at the vCPU's next userspace exit)
  2. a frame reaches the host NIC; the host bridge forwards it to the VM's tap
  3. QEMU's e1000 model reads the RX descriptor at RDH (pci_dma_read)
  4. it copies the frame from its buffer into the guest buffer (copy 2 of 2),
     writes length = frame + 4 and DD|EOP|IXSM, advances RDH and sets ICR.RXT0
  5. set_interrupt_cause raises the INTx line (KVM_IRQ_LINE into KVM's
     in-kernel IOAPIC) at once or when the mitigation timer fires; KVM
     wakes or kicks the vCPU and injects
  6. the guest's e1000_intr reads ICR, writes IMC, reads STATUS (userspace
     exits) and EOIs; NAPI reads the frame at the buffer's GPA, refills and
     writes RDT (coalesced), may write ITR (coalesced), then IMS and a
     flushing STATUS read re-enable interrupts (userspace exits)
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

from ..e1000 import (ETH_ZLEN, ICR_RXDMT0, ICR_RXT0, ICR_TXDW, ICR_TXQE, IMS_ENABLE_MASK, REG, TXD_CMD_IDE,
                     TXD_CMD_RS, E1000Ring, RegisterFile, coalesced, ring_view)
from ..engine import Resource
from ..packet import Packet
from ..views import QueueInfo, RingView
from .base import Technique, buffer_pools

if TYPE_CHECKING:  # pragma: no cover
    from ..vmm import Vm
    from ..protocols import SimulationApi as Simulation  # what a technique may call on the run

__all__ = ["Emulation"]

TAP_QUEUE_LEN = 1000
#: net/tap.c tap_send: packets read per main-loop callback
TAP_SEND_BURST = 50
#: KVM_COALESCED_MMIO_MAX: entries in KVM's coalesced ring (one 4 KiB page);
#: a write that finds it full goes out to userspace as an ordinary MMIO exit
COALESCED_RING_MAX = (4096 - 16) // 24
#: QEMU's mitigation floor (set_interrupt_cause): 500 × 256 ns
MIT_MIN_DELAY = 500
#: Linux e1000 defaults written in e1000_configure_tx / e1000_configure_rx
TIDV_DEFAULT, TADV_DEFAULT, RDTR_DEFAULT, RADV_DEFAULT = 8, 32, 0, 8
#: e1000_update_itr's latency ranges and the rates e1000_set_itr maps them to
LOWEST_LATENCY, LOW_LATENCY, BULK_LATENCY = 0, 1, 2
_ITR_RATE = {LOWEST_LATENCY: 70000, LOW_LATENCY: 20000, BULK_LATENCY: 4000}
#: InterruptThrottleRate=3: dynamic conservative mode, starting at 20,000/s
ITR_DYNAMIC_CONSERVATIVE = 3


def itr_value(rate: int) -> int:
    """What e1000 writes to ITR for ``rate`` interrupts/s: 10⁹ / (rate × 256)."""
    return 1_000_000_000 // (rate * 256)


def update_itr(itr_setting: int, packets: int, nbytes: int) -> int:
    """Linux e1000_update_itr: the latency range from one poll's totals."""
    retval = itr_setting
    if packets == 0:
        return retval
    if itr_setting == LOWEST_LATENCY:
        if nbytes // packets > 8000:
            retval = BULK_LATENCY
        elif packets < 5 and nbytes > 512:
            retval = LOW_LATENCY
    elif itr_setting == LOW_LATENCY:
        if nbytes > 10000:
            if nbytes // packets > 8000:
                retval = BULK_LATENCY
            elif packets < 10 or nbytes // packets > 1200:
                retval = BULK_LATENCY
            elif packets > 35:
                retval = LOWEST_LATENCY
        elif nbytes // packets > 2000:
            retval = BULK_LATENCY
        elif packets <= 2 and nbytes < 512:
            retval = LOWEST_LATENCY
    elif itr_setting == BULK_LATENCY:
        if nbytes > 25000:
            if packets > 35:
                retval = LOW_LATENCY
        elif nbytes < 6000:
            retval = LOW_LATENCY
    return retval


class E1000Nic:
    def __init__(self, tech: "Emulation", vm: "Vm") -> None:
        self.vm = vm
        n = tech.ring_size
        mem = vm.mem
        self.regs = RegisterFile()
        self.rx = E1000Ring(mem, "rx", n, "e1000 RX descriptor ring")
        self.tx = E1000Ring(mem, "tx", n, "e1000 TX descriptor ring", csum_offload=tech.tx_csum_offload)
        self.rx_pool, self.tx_pool = buffer_pools(mem, n)
        self.model = tech.vmm.resource(f"qemu-e1000:{vm.name}")
        self.tap: deque[tuple[int, Packet]] = deque()
        self.rx_scheduled = False
        self.rx_waiting = False                 # RDH == RDT: QEMU stops reading the tap
        self.rx_burst = 0                       # frames this tap_send call has read
        self.rx_filled: dict[int, Packet] = {}  # slot -> frame written, not yet cleaned
        self.rx_len: dict[int, int] = {}        # buffer GPA -> length the driver sees (for the ITR totals)
        self.rx_reading: Packet | None = None
        # QEMU's E1000State: mit_timer_on, mit_irq_level, mit_ide
        self.mit_timer_on = False
        self.mit_irq_level = False
        self.mit_ide = False
        self.mit_delay = 0                      # the last window armed, in 256 ns units
        #: writes KVM queued in its coalesced-MMIO ring, not yet applied by QEMU
        self.coalesced: list[tuple[str, int]] = []
        # the driver's adapter: itr_setting, itr, rx_itr/tx_itr, the poll totals
        self.itr_setting = tech.itr_setting
        self.itr = tech.itr_start
        self.rx_itr = self.tx_itr = LOWEST_LATENCY   # kzalloc'd adapter
        self.total_rx_packets = self.total_rx_bytes = 0
        self.total_tx_packets = self.total_tx_bytes = 0
        self.napi = False
        # the NET_RX softirq running its NAPI (Technique.napi_repoll)
        self.sirq_runs = 0
        self.sirq_start = 0
        self.ksoftirqd = False
        self.qdisc: deque[Packet] = deque()
        self.tx_to_xmit = 0
        self.tx_sent: dict[int, Packet] = {}    # slot -> frame in the TX ring


class Emulation(Technique):
    name = "emulation"
    NAPI_POLL = "e1000_clean"
    stages = ("guest posts buffer, RDT write", "host bridge → tap", "QEMU reads RX descriptor",
              "copy into guest buffer", "ICR → INTx → inject", "ISR exits, guest reads frame")
    #: transmit, numbered alike (5 and 6, the interrupt and its handler, as on receive)
    tx_stages = ("driver fills TX descriptor", "TDT write exits to QEMU", "QEMU copies guest → tap",
                 "host stack → wire", "ICR → INTx → inject", "ISR exits, TX clean-up")
    tx_wire_stage = 4

    def __init__(self, sim: "Simulation") -> None:
        super().__init__(sim)
        o = self.preset.emulation
        self.ring_size = o["ring_size"]
        self.itr_us = float(o["itr_us"])
        self.mitigation = bool(o["mitigation"])
        self.tx_csum_offload = bool(o["tx_csum_offload"])
        if self.itr_us > 0:
            # InterruptThrottleRate=N (100..100000): fixed; itr_setting & 3 == 0 turns set_itr off
            rate = min(100000, max(100, round(1e6 / self.itr_us)))
            self.itr_setting, self.itr_start = rate & ~3, rate
        else:
            self.itr_setting, self.itr_start = ITR_DYNAMIC_CONSERVATIVE, 20000
        c = self.costs
        self.model_ns = int(c["qemu_e1000_pkt_ns"])
        self.wakeup_ns = int(c["wakeup_ns"])
        self.host_stack_ns = int(c["host_stack_ns"])
        self.budget = self.preset.virtio["napi_budget"]
        self.host_rx = self.vmm.resource("host rx softirq")
        self.host_tx = self.vmm.resource("host tx")
        self.nics: list[E1000Nic] = []
        self.by_mac: dict[str, E1000Nic] = {}

    # -- description -----------------------------------------------------------------
    def options(self) -> dict:
        return {"mitigation": self.mitigation,
                "itr": "fixed" if self.itr_us > 0 else "dynamic",
                "itr_us": self.itr_us, "ring_size": self.ring_size,
                "tx_csum_offload": self.tx_csum_offload}

    def label(self) -> str:
        mit = "QEMU mitigation ≥ 128 µs" if self.mitigation else "QEMU mitigation off"
        itr = f"ITR fixed {self.itr_us:g} µs" if self.itr_us > 0 else "dynamic ITR"
        csum = ", TX csum offload" if self.tx_csum_offload else ""
        return f"emulation (e1000, {mit}, {itr}{csum})"

    def host_busy_ns(self) -> int:
        return self.host_rx.busy_ns + self.host_tx.busy_ns + sum(n.model.busy_ns for n in self.nics)

    # -- register access -------------------------------------------------------------
    def _mmio(self, nic: E1000Nic, reg: str, write: int | None, cause: str, at: int | None = None,
              stage: int = 6, extra_ns: int = 0) -> tuple[int, int]:
        """The guest touches an e1000 register: an EPT_MISCONFIG exit, taken in
        KVM (a coalesced write) or out in QEMU.  Returns ``(value read, time
        the vCPU is back)``."""
        off = REG[reg]
        vm = nic.vm
        tr = self.engine.trace
        is_write = write is not None
        if coalesced(off, is_write) and len(nic.coalesced) < COALESCED_RING_MAX:
            # coalesced_mmio_write: appended to the ring, the vCPU re-enters at once
            nic.coalesced.append((reg, write))
            if tr.on:
                tr.emit(self.engine.now, "reg", vm.name, stage,
                        f"{vm.name} e1000 {reg} write (0x{off:04x}) ← 0x{write:x} · {cause} · queued in KVM's "
                        f"coalesced-MMIO ring ({len(nic.coalesced)} pending); QEMU applies it at the next "
                        f"userspace exit", reg=reg, offset=off, value=write, write=True, coalesced=True)
            end = self.vmm.exit(vm, "EPT_MISCONFIG", f"{reg} write (coalesced MMIO: {cause})", user=False,
                                at=at, stage=stage, extra_ns=extra_ns)
            return write, end
        # out to QEMU: kvm_cpu_exec first flushes the coalesced ring, then QEMU handles
        # the access (at the time the vCPU takes the exit, after its earlier work)
        now = self.engine.now if at is None else at
        busy = vm.vcpu.busy_until
        t = busy if busy > now else now
        if nic.coalesced:
            self._flush_coalesced(nic, t)
        if is_write:
            val = write
            what = f"{reg} write (0x{off:04x}) ← 0x{write:x}"
        else:
            val = nic.regs.read(off)
            what = f"{reg} read (0x{off:04x}) = 0x{val:08x}"
        if tr.on:
            tr.emit(self.engine.now, "reg", vm.name, stage, f"{vm.name} e1000 {what} · {cause}",
                    reg=reg, offset=off, value=val, write=is_write, coalesced=False)
        end = self.vmm.exit(vm, "EPT_MISCONFIG", f"{reg} {'write' if is_write else 'read'} ({cause})",
                            user=True, at=at, stage=stage, extra_ns=extra_ns)
        if is_write:
            self._write_reg(nic, reg, write, t)
        elif reg == "ICR":
            self._set_interrupt_cause(nic, nic.regs.icr, t)   # mac_icr_read: ICR cleared, line lowered
        return val, end

    def _flush_coalesced(self, nic: E1000Nic, t: int) -> None:
        """kvm_cpu_exec → kvm_flush_coalesced_mmio_buffer: QEMU applies the
        queued writes, in order, before it handles this exit."""
        pending, nic.coalesced = nic.coalesced, []
        tr = self.engine.trace
        if tr.on:
            what = ", ".join(f"{r} ← 0x{v:x}" for r, v in pending)
            tr.emit(self.engine.now, "note", nic.vm.name, 1 if any(r == "RDT" for r, _v in pending) else 6,
                    f"QEMU flushes the coalesced-MMIO ring at {nic.vm.name}'s userspace exit and applies "
                    f"{what}", flushed=len(pending))
        for reg, v in pending:
            self._write_reg(nic, reg, v, t)

    def _write_reg(self, nic: E1000Nic, reg: str, v: int, t: int) -> None:
        """QEMU's macreg_writeops for the registers the driver writes."""
        regs = nic.regs
        off = REG[reg]
        regs.write(off, v)
        if reg in ("IMS", "IMC"):
            self._set_interrupt_cause(nic, regs.icr, t)          # set_ims / set_imc → set_ics(s, 0, 0)
        elif reg == "ICS":
            self._set_interrupt_cause(nic, regs.icr | v, t)      # set_ics
        elif reg == "RDT":
            # set_rdt: e1000_has_rxbufs → qemu_flush_queued_packets
            regs.regs[off] = v & 0xFFFF
            nic.rx.set_tail(v)
            if nic.rx_waiting and nic.rx.hw_owned():
                nic.rx_waiting = False
                if nic.tap and not nic.rx_scheduled:
                    nic.rx_scheduled = True
                    now = self.engine.now
                    cost = self._rx_cost(nic.tap[0][1])
                    self.engine.at(max(now, t) + cost, self._model_rx, nic, cost)
        elif reg == "ITR":
            regs.regs[off] = v & 0xFFFF                          # set_16bit
        elif reg == "TDT":
            nic.tx.set_tail(v)
            self._start_xmit(nic, t)

    # -- interrupts: QEMU's set_interrupt_cause and e1000_mit_timer ------------------
    def _set_interrupt_cause(self, nic: E1000Nic, val: int, t: int) -> None:
        regs = nic.regs
        regs.regs[REG["ICR"]] = val
        pending = regs.ims & val
        if not nic.mit_irq_level and pending:
            # a potential rising edge: postponed inside the mitigation window
            if nic.mit_timer_on:
                self.metrics.notify_suppressed += 1
                return
            if self.mitigation:
                delay = 0

                def upd(cur: int, value: int) -> int:     # mit_update_delay
                    return value if value and (cur == 0 or value < cur) else cur

                if nic.mit_ide and pending & (ICR_TXQE | ICR_TXDW):
                    delay = upd(delay, regs.regs[REG["TADV"]] * 4)
                if regs.regs[REG["RDTR"]] and pending & ICR_RXT0:
                    delay = upd(delay, regs.regs[REG["RADV"]] * 4)
                delay = upd(delay, regs.regs[REG["ITR"]])
                delay = max(delay, MIT_MIN_DELAY)
                nic.mit_delay = delay
                nic.mit_timer_on = True
                nic.mit_ide = False
                self.engine.at(max(t, self.engine.now) + delay * 256, self._mit_timer, nic)
            nic.mit_irq_level = True
            self._raise_line(nic, t)
            return
        nic.mit_irq_level = pending != 0

    def _mit_timer(self, nic: E1000Nic) -> None:
        """e1000_mit_timer: the window closes; a postponed edge is raised now."""
        nic.mit_timer_on = False
        self._set_interrupt_cause(nic, nic.regs.icr, self.engine.now)

    def _raise_line(self, nic: E1000Nic, t: int) -> None:
        """pci_set_irq(1): a rising edge on the INTx line into KVM's IOAPIC."""
        now = self.engine.now
        at = max(now, t)
        self.metrics.notify_sent += 1
        tr = self.engine.trace
        if tr.on:
            how = (f"mitigation timer armed for {nic.mit_delay * 256 / 1000:,.1f} µs" if self.mitigation
                   else "mitigation off: one edge per cause")
            tr.emit(now, "irq", nic.vm.name, 5,
                    f"QEMU e1000 raises INTx: ICR = 0x{nic.regs.icr:02x} & IMS = 0x{nic.regs.ims:02x} ({how})",
                    icr=nic.regs.icr)
        start = self.vmm.deliver_irq(nic.vm, "e1000", "e1000 INTx", level=True, stage=5, at=at)
        if start is not None:
            self.engine.at(max(start, now), self._isr, nic)

    def _isr(self, nic: E1000Nic) -> None:
        """e1000_intr: read ICR (clears it, lowers the line), mask everything
        (IMC), flush (STATUS read), schedule NAPI with the ITR totals zeroed; EOI."""
        now = self.engine.now
        icr, t = self._mmio(nic, "ICR", None, "interrupt handler reads the cause", at=now)
        vm = nic.vm
        if icr:
            _v, t = self._mmio(nic, "IMC", 0xFFFFFFFF, "mask interrupts while polling", at=t)
            _v, t = self._mmio(nic, "STATUS", None, "flush posted writes", at=t)
        t = vm.vcpu.reserve(t, int(self.costs["guest_irq_ns"]))
        t = self.vmm.ack_irq(vm, "e1000", level=True, stage=6, at=t)   # the ISR ends with it (stage ⑥)
        if not icr:
            return                                   # IRQ_NONE
        if not nic.napi:
            nic.napi = True                          # napi_schedule_prep
            nic.sirq_start = t                       # the NET_RX softirq starts on the ISR's exit
            nic.total_rx_packets = nic.total_rx_bytes = 0
            nic.total_tx_packets = nic.total_tx_bytes = 0
            self.engine.at(t, self.legacy_napi, nic, 0, 0)
        else:
            self._irq_enable(nic, t)

    def _irq_enable(self, nic: E1000Nic, t: int) -> int:
        """e1000_irq_enable: IMS write, then a flushing STATUS read."""
        _v, t = self._mmio(nic, "IMS", IMS_ENABLE_MASK, "re-enable interrupts", at=t)
        _v, t = self._mmio(nic, "STATUS", None, "flush posted writes", at=t)
        return t

    # -- the guest's NAPI poll (base.legacy_napi calls these) ------------------------
    def _give_back(self, nic: E1000Nic, gpa: int) -> None:
        nic.rx_pool.append(gpa)
        nic.total_rx_packets += 1                   # e1000_clean_rx_irq's totals (FCS removed)
        nic.total_rx_bytes += nic.rx_len.pop(gpa, 0)

    def _napi_complete(self, nic: E1000Nic, t: int) -> None:
        """e1000_clean after napi_complete_done: e1000_set_itr (dynamic ITR),
        then e1000_irq_enable."""
        if nic.itr_setting & 3:
            t = self._set_itr(nic, t)
        self._irq_enable(nic, t)

    def _set_itr(self, nic: E1000Nic, t: int) -> int:
        """Linux e1000_set_itr (link at 1000 Mb/s: QEMU's STATUS says SPEED_1000)."""
        nic.tx_itr = update_itr(nic.tx_itr, nic.total_tx_packets, nic.total_tx_bytes)
        if nic.itr_setting == 3 and nic.tx_itr == LOWEST_LATENCY:
            nic.tx_itr = LOW_LATENCY                 # conservative mode: no lowest_latency
        nic.rx_itr = update_itr(nic.rx_itr, nic.total_rx_packets, nic.total_rx_bytes)
        if nic.itr_setting == 3 and nic.rx_itr == LOWEST_LATENCY:
            nic.rx_itr = LOW_LATENCY
        new = _ITR_RATE[max(nic.rx_itr, nic.tx_itr)]
        if new == nic.itr:
            return t
        old = nic.itr
        # bias towards bulk: intermediate steps when the rate rises
        new = min(old + (new >> 2), new) if new > old else new
        nic.itr = new
        val = itr_value(new)
        _v, t = self._mmio(nic, "ITR", val, f"e1000_set_itr: {old:,}/s → {new:,} interrupts/s", at=t)
        return t

    def _refill(self, nic: E1000Nic, at: int) -> int:
        """e1000_alloc_rx_buffers: post clean buffers, then RDT = next_to_use − 1."""
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
        _v, end = self._mmio(nic, "RDT", rx.advance_tail(), f"{n} new RX buffer{'s' if n != 1 else ''}",
                             at=t, stage=1)
        return end

    # -- set-up ----------------------------------------------------------------------
    def setup(self) -> None:
        for vm in self.vms:
            nic = E1000Nic(self, vm)
            self.nics.append(nic)
            self.by_mac[vm.mac] = nic
            # e1000_configure_tx / e1000_configure_rx (at probe, long before the run): ring
            # bases and lengths, the delay timers, ITR, then the buffers and the tail
            rx, tx = nic.rx, nic.tx
            w = nic.regs.write
            w(REG["RDBAL"], rx.base)
            w(REG["RDLEN"], rx.size * 16)
            w(REG["TDBAL"], tx.base)
            w(REG["TDLEN"], tx.size * 16)
            w(REG["TIDV"], TIDV_DEFAULT)
            w(REG["TADV"], TADV_DEFAULT)
            w(REG["RDTR"], RDTR_DEFAULT)
            w(REG["RADV"], RADV_DEFAULT)
            w(REG["ITR"], itr_value(nic.itr))
            w(REG["IMS"], IMS_ENABLE_MASK)
            while rx.unused() and nic.rx_pool:
                gpa = nic.rx_pool.popleft()
                rx.post_rx(gpa, gpa)
            rdt = rx.advance_tail()
            rx.set_tail(rdt)
            w(REG["RDT"], rdt)
            tr = self.engine.trace
            if tr.on:
                tr.emit(0, "ring", vm.name, 1,
                        f"{vm.name}'s e1000 driver posts {rx.next_to_use} RX buffers; ring at GPA 0x{rx.base:x}, "
                        f"RDT = {rdt} (next_to_use − 1); ITR = {itr_value(nic.itr)} "
                        f"({nic.itr:,} interrupts/s)", queue="rx")

    # -- receive -----------------------------------------------------------------------
    def rx_ring_starved(self, nic: E1000Nic) -> bool:
        return nic.rx_waiting or not nic.rx.hw_owned()   # RDH == RDT: e1000_can_receive is false

    def _rx_cost(self, pkt: Packet) -> int:
        # the device model's own work plus its two copies (jittered: costs.jitter)
        return self.vmm.spread(self.model_ns + 2 * self.vmm.copy_cost(pkt.size))

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
            # the tap fd turns readable: QEMU's main loop wakes from ppoll and calls tap_send
            nic.rx_burst = 0
            cost = self._rx_cost(pkt)
            self.engine.at(ready + self.vmm.spread(self.wakeup_ns) + cost, self._model_rx, nic, cost)

    def _model_rx(self, nic: E1000Nic, cost: int) -> None:
        """QEMU's e1000_receive_iov for one frame, in net/tap.c ``tap_send``'s
        read loop: QEMU's main loop reads the tap for as long as it has frames
        and e1000_can_receive says a descriptor is free, up to 50 per
        callback (then back through the main loop, which finds the fd still
        readable and calls tap_send again at once).  ``cost`` is what the
        device model spent on it (jittered, ``costs.jitter``)."""
        now = self.engine.now
        vm = nic.vm
        tr = self.engine.trace
        rx = nic.rx
        got = rx.hw_fetch()
        if got is None:
            # e1000_has_rxbufs() is false: RDH == RDT, no buffer owned by the device
            nic.rx_scheduled = False
            nic.rx_waiting = True
            if tr.on:
                tr.emit(now, "ring", vm.name, 3,
                        f"QEMU e1000: no RX descriptor owned by the device (RDH = RDT = {rx.head}); "
                        f"stops reading the tap", queue="rx")
            return
        _ready, pkt = nic.tap.popleft()
        slot, gpa, _len = got
        nic.model.busy_ns += cost
        m = self.metrics
        # copy 1: the tap's frame into QEMU's buffer; copy 2: into guest RAM (pci_dma_write)
        m.copies += 2
        m.copy_bytes += 2 * pkt.size
        pkt.copies += 2
        frame = pkt.frame
        if len(frame) < ETH_ZLEN:
            frame = bytes(frame) + bytes(ETH_ZLEN - len(frame))   # min_buf: padded to 60
        vm.mem.write(gpa, frame, "QEMU e1000")
        rx.hw_done_rx(slot, pkt.size)
        nic.rx_len[gpa] = len(frame)
        nic.regs.regs[REG["RDH"]] = rx.head
        nic.rx_filled[slot] = pkt
        # RXDMT0 when the device owns at most half the ring (RCTL.RDMTS = 1/2)
        cause = ICR_RXT0
        if rx.hw_owned() * 2 <= rx.size:
            cause |= ICR_RXDMT0
        if tr.on:
            tr.emit(now, "ring", vm.name, 3,
                    f"QEMU e1000 reads RX descriptor {slot} (buffer GPA 0x{gpa:x}) at RDH", queue="rx",
                    desc=slot, gpa=gpa, pkt=pkt.id)
            tr.emit(now, "copy", vm.name, 4,
                    f"QEMU copies frame #{pkt.id} ({pkt.size:,} B) tap → its buffer → GPA 0x{gpa:x} "
                    f"(two copies); writes length {len(frame) + 4:,} B (with the FCS) and DD|EOP|IXSM, "
                    f"RDH → {rx.head}; ICR |= 0x{cause:02x}", queue="rx", desc=slot, gpa=gpa,
                    bytes=pkt.size, pkt=pkt.id)
        self._set_interrupt_cause(nic, nic.regs.icr | cause, now)     # set_ics
        nic.rx_burst += 1
        if nic.tap:
            if nic.rx_burst >= TAP_SEND_BURST:
                nic.rx_burst = 0
                if tr.on:
                    tr.emit(now, "note", vm.name, 3,
                            f"QEMU's tap_send has read {TAP_SEND_BURST} packets for {vm.name}: back to the "
                            f"main loop, which finds the tap still readable", queue="rx")
            ready, nxt = nic.tap[0]
            if ready > now:
                nic.rx_burst = 0                 # the loop found the tap empty: a new tap_send
            cost = self._rx_cost(nxt)
            self.engine.at(max(now, ready) + cost, self._model_rx, nic, cost)
        else:
            nic.rx_scheduled = False

    # -- transmit ----------------------------------------------------------------------
    def guest_send(self, vm: "Vm", pkt: Packet) -> None:
        nic = self.nics[vm.index]
        self.queue_for_xmit(nic, pkt, nic.tx.unused() < nic.tx.descs_per_frame())

    def _xmit(self, nic: E1000Nic, pkt: Packet) -> None:
        """e1000_xmit_frame: the frame's descriptors, then the TDT write (a
        userspace exit) during which QEMU transmits synchronously."""
        nic.tx_to_xmit -= 1
        tx = nic.tx
        vm = nic.vm
        if tx.unused() < tx.descs_per_frame() or not nic.tx_pool:
            nic.qdisc.appendleft(pkt)
            return  # the TX clean-up in NAPI restarts the queue
        gpa = nic.tx_pool.popleft()
        vm.mem.write(gpa, pkt.frame, "guest")
        if self.sim.capture is not None:
            self.sim.guest_queued(vm, pkt, gpa)
        slot = tx.post_tx(gpa, pkt.size, gpa, pkt.frame)
        nic.tx_sent[slot] = pkt
        tr = self.engine.trace
        if tr.on:
            what = (f"a context descriptor (TXSM) and extended data descriptor {slot}" if tx.csum_offload
                    else f"TX descriptor {slot} (cmd 0x8b: EOP|IFCS|RS|IDE)")
            tr.emit(self.engine.now, "ring", vm.name, 1,
                    f"{vm.name}'s e1000 driver fills {what} for frame #{pkt.id}",
                    queue="tx", desc=slot, gpa=gpa, pkt=pkt.id)
        tdt = tx.advance_tail()
        self._mmio(nic, "TDT", tdt, "transmit", stage=2, extra_ns=self._xmit_work(nic, tdt))
        if nic.qdisc and tx.unused() >= tx.descs_per_frame() and not nic.tx_to_xmit:
            self.schedule_xmit(nic, nic.qdisc.popleft())

    def _xmit_work(self, nic: E1000Nic, tdt: int) -> int:
        """What start_xmit will do inside the TDT exit (its cost)."""
        work = 0
        i = nic.tx.head
        while i != tdt:
            p = nic.tx_sent.get(i)
            if p is not None:
                work += self.model_ns + 2 * self.vmm.copy_cost(p.size)
            i = (i + 1) % nic.tx.size
        return work

    def _start_xmit(self, nic: E1000Nic, t: int) -> None:
        """QEMU's start_xmit/process_tx_desc, inside the TDT exit: walk TDH up
        to TDT, send each frame, write DD back where RS asks, set TXQE|TXDW."""
        tx = nic.tx
        vm = nic.vm
        cause = ICR_TXQE
        sent = []
        ram = vm.mem.ram
        while (got := tx.hw_tx_desc()) is not None:
            s, kind, addr, length = got
            cmd = ram[tx.base + 16 * s + 11]
            if cmd & TXD_CMD_IDE:
                nic.mit_ide = True
            if kind != "context":
                p = nic.tx_sent.pop(s)
                frame = vm.mem.read(addr, length)
                if frame != p.frame:
                    self.metrics.corrupt += 1
                self.metrics.copies += 2   # guest RAM → QEMU buffer → tap
                self.metrics.copy_bytes += 2 * length
                p.copies += 2
                nic.model.busy_ns += self.model_ns + 2 * self.vmm.copy_cost(length)
                sent.append(p)
            tx.hw_done_tx(s)
            if cmd & TXD_CMD_RS:
                cause |= ICR_TXDW
        nic.regs.regs[REG["TDH"]] = tx.head
        tr = self.engine.trace
        if tr.on and sent:
            tr.emit(self.engine.now, "copy", vm.name, 3,
                    f"QEMU e1000 (in the exit) copies {len(sent)} frame(s) guest → its buffer → tap "
                    f"(two copies each); sets DD, TDH → {tx.head}; ICR |= 0x{cause:02x}", queue="tx")
        end = vm.exit_end
        for p in sent:
            ready = self.host_tx.reserve(end, self.host_stack_ns)
            self.sim.transmit(p, ready)
        self._set_interrupt_cause(nic, nic.regs.icr | cause, t)     # set_ics, inside the exit

    def _clean_tx(self, nic: E1000Nic) -> None:
        """e1000_clean_tx_irq: reclaim frames whose last descriptor has DD, wake the queue."""
        tx = nic.tx
        while (got := tx.reap()) is not None:
            nic.tx_pool.append(got[1])
            nic.total_tx_packets += 1
            nic.total_tx_bytes += got[2]
        if nic.qdisc and tx.unused() >= tx.descs_per_frame() and not nic.tx_to_xmit:
            self.schedule_xmit(nic, nic.qdisc.popleft())

    # -- accounting --------------------------------------------------------------------
    def in_flight(self) -> int:
        return sum(len(n.tap) + len(n.rx_filled) + (n.rx_reading is not None) + len(n.qdisc)
                   + len(n.tx_sent) + n.tx_to_xmit for n in self.nics)

    # -- views -------------------------------------------------------------------------
    def queues(self) -> list[QueueInfo]:
        return [r.queue_info(n.vm.name, "e1000-legacy") for n in self.nics for r in (n.rx, n.tx)]

    def ring_views(self, vms: set[str] | None = None) -> list[RingView]:
        out = []
        for n in self.nics:
            if vms is not None and n.vm.name not in vms:
                continue
            pend = [f"{r} ← {v}" for r, v in n.coalesced if r == "RDT"]
            note = "device owns RDH..RDT−1 · the driver writes RDT = next_to_use − 1"
            if pend:
                note += f" · coalesced, not yet applied: {', '.join(pend)}"
            out.append(ring_view(n.vm.name, n.rx, "e1000-legacy", "RDH", "RDT", note))
            out.append(ring_view(n.vm.name, n.tx, "e1000-legacy", "TDH", "TDT",
                                 "context + data descriptor per frame (checksum offload)" if n.tx.csum_offload
                                 else "one legacy descriptor per frame (cmd 0x8b)"))
        return out


def _tap_of(nic: E1000Nic) -> deque:
    return nic.tap
