"""The VMM side: VM-exit reasons, the cost table, exits and interrupt delivery.

Exit reason names and numbers are Intel VMX basic exit reasons as in Linux
``arch/x86/include/uapi/asm/vmx.h``.  Every cost the model charges comes from
:data:`DEFAULT_COSTS` (overridable by a preset's ``[costs]`` table); nothing
else in the model invents a duration.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .engine import Engine, Resource
from .jitter import Jitter, JitteredResource

if TYPE_CHECKING:  # pragma: no cover
    from .metrics import Metrics

__all__ = ["EXIT_REASONS", "EXIT_NUMBERS", "DEFAULT_COSTS", "COST_HELP", "HostProfile", "Vm", "Vmm",
           "HOST_PROFILES"]

#: name -> number, from asm/vmx.h (the subset this model can produce)
EXIT_REASONS: dict[str, int] = {
    "EXTERNAL_INTERRUPT": 1,
    "INTERRUPT_WINDOW": 7,
    "HLT": 12,
    "IO_INSTRUCTION": 30,
    "MSR_READ": 31,
    "MSR_WRITE": 32,
    "APIC_ACCESS": 44,
    "EOI_INDUCED": 45,
    "EPT_VIOLATION": 48,
    "EPT_MISCONFIG": 49,
    "PREEMPTION_TIMER": 52,
    "APIC_WRITE": 56,
}
EXIT_NUMBERS = {v: k for k, v in EXIT_REASONS.items()}

#: Every duration the model uses, in nanoseconds (orders of magnitude from the
#: literature; a preset's [costs] table overrides any of them).
DEFAULT_COSTS: dict[str, float] = {
    "exit_hw_ns": 500,            # VM exit + VM entry in hardware (~1.5k cycles at 3 GHz)
    "exit_kernel_ns": 400,        # handling the exit inside KVM (ioeventfd, EOI, injection)
    "exit_user_ns": 4000,         # extra for a trip out to userspace QEMU and back
    "irq_inject_ns": 200,         # KVM writing the interrupt into the VMCS on entry
    "guest_irq_ns": 500,          # guest interrupt handler + NAPI scheduling
    "guest_rx_ns": 800,           # guest network stack per received frame
    "guest_tx_ns": 800,           # guest network stack per transmitted frame
    "guest_refill_ns": 100,       # guest driver posting one RX buffer
    "copy_fixed_ns": 60,          # setting up one copy of a frame
    "copy_ns_per_kb": 100,        # memcpy bandwidth ~10 GB/s
    "host_stack_ns": 1000,        # host NIC driver + bridge + tap per frame (emulation, virtio)
    "wakeup_ns": 2000,            # waking a host thread through an eventfd
    "qemu_virtio_pkt_ns": 2500,   # QEMU's userspace virtio-net per frame (tap syscall, ring walk)
    "vhost_pkt_ns": 700,          # vhost-net kernel worker per frame
    "vhost_requeue_ns": 1000,     # vhost worker yielding after its 256-packet budget
    "qemu_e1000_pkt_ns": 4000,    # QEMU e1000 device model per frame (descriptor fetch, DMA API)
    "nic_pkt_ns": 50,             # NIC (PF or VF) per-frame processing
    "pcie_dma_ns": 500,           # PCIe DMA write latency into host memory
    "iotlb_walk_read_ns": 100,    # one memory read of an IOMMU page walk (4 per IOTLB miss)
    "host_irq_ns": 1000,          # an assigned device's MSI-X on the host: vfio_msihandler → irqfd → KVM
    "peer_turnaround_ns": 5000,   # the outside host turning a received frame into its next one (pingpong)
    # not a duration: the spread of every cost above that a vCPU or host thread spends, as a
    # coefficient of variation (sim/jitter.py: a shifted exponential, mean = the cost); 0 = exact
    "jitter": 0.1,
}

COST_HELP: dict[str, str] = {
    "exit_hw_ns": "VM exit + entry round trip in hardware",
    "exit_kernel_ns": "exit handled inside KVM",
    "exit_user_ns": "extra for an exit handled by userspace QEMU",
    "irq_inject_ns": "interrupt injection on VM entry",
    "guest_irq_ns": "guest interrupt handler",
    "guest_rx_ns": "guest stack per received frame",
    "guest_tx_ns": "guest stack per sent frame",
    "guest_refill_ns": "guest driver posting one RX buffer",
    "copy_fixed_ns": "fixed cost of one copy",
    "copy_ns_per_kb": "copy cost per KiB",
    "host_stack_ns": "host NIC driver + bridge + tap per frame",
    "wakeup_ns": "waking a host thread (eventfd)",
    "qemu_virtio_pkt_ns": "QEMU virtio-net per frame",
    "vhost_pkt_ns": "vhost-net worker per frame",
    "vhost_requeue_ns": "vhost worker yield after 256 packets",
    "qemu_e1000_pkt_ns": "QEMU e1000 device model per frame",
    "nic_pkt_ns": "NIC per-frame processing",
    "pcie_dma_ns": "PCIe DMA write latency",
    "iotlb_walk_read_ns": "one read of an IOMMU page walk",
    "host_irq_ns": "host interrupt of an assigned VF (no VT-d PI)",
    "peer_turnaround_ns": "outside host's reply turnaround (pingpong)",
    "jitter": "spread of every software cost (0.1 = 10 % standard deviation; 0 = exact)",
}


class HostProfile:
    """The host platform, a property of the VM rather than of the NIC: it
    decides how KVM delivers an interrupt and what the guest's EOI costs
    (DOMAIN.md, "Interrupt delivery and EOI")."""

    __slots__ = ("apicv", "x2apic", "vtd_pi")

    def __init__(self, apicv: bool = False, x2apic: bool = False, vtd_pi: bool = False) -> None:
        if vtd_pi and not apicv:
            raise ValueError("VT-d posted interrupts need APICv")
        self.apicv = apicv
        self.x2apic = x2apic
        self.vtd_pi = vtd_pi

    @classmethod
    def from_preset(cls, host: dict) -> "HostProfile":
        return cls(host["apicv"], host["x2apic"], host["vtd_posted_interrupts"])

    @property
    def profile(self) -> str:
        """``none`` | ``apicv`` | ``apicv+pi``: the three the app's ``a`` key cycles."""
        return "apicv+pi" if self.vtd_pi else "apicv" if self.apicv else "none"

    def label(self) -> str:
        """A few words for the header, e.g. ``host: no APICv · xAPIC``."""
        apic = "APICv + VT-d PI" if self.vtd_pi else "APICv" if self.apicv else "no APICv"
        return f"host: {apic} · {'x2APIC' if self.x2apic else 'xAPIC'}"

    def options(self) -> dict:
        return {"apicv": self.apicv, "x2apic": self.x2apic, "vtd_posted_interrupts": self.vtd_pi}


#: the profiles the app's ``a`` key cycles, as [host] keys (x2apic is left as it is)
HOST_PROFILES: dict[str, dict[str, bool]] = {
    "none": {"apicv": False, "vtd_posted_interrupts": False},
    "apicv": {"apicv": True, "vtd_posted_interrupts": False},
    "apicv+pi": {"apicv": True, "vtd_posted_interrupts": True},
}


class Vm:
    """A guest: its memory, its vCPU (a :class:`Resource`), its identity.

    The vCPU's state at an instant follows from its timeline: inside the
    newest exit (``exit_start <= t < exit_end``), running guest code
    (reserved work ahead of ``t``), or halted (no work since ``busy_until``:
    an idle Linux guest executes HLT)."""

    __slots__ = ("index", "name", "mac", "vlan", "ip", "mem", "vcpu", "irq_pending", "extra",
                 "exit_start", "exit_end")

    def __init__(self, index: int, name: str, mac: str, vlan: int, ip: str, mem) -> None:
        self.index = index
        self.name = name
        self.mac = mac
        self.vlan = vlan
        self.ip = ip
        self.mem = mem
        self.vcpu = Resource(f"{name}/vcpu0")
        #: vectors raised but not yet injected (KVM coalesces a second raise)
        self.irq_pending: set[str] = set()
        self.extra: dict = {}
        #: the newest exit's interval on the vCPU's timeline
        self.exit_start = -1
        self.exit_end = -1


class Vmm:
    """Charges exits and delivers interrupts, all through one cost table."""

    def __init__(self, engine: Engine, metrics: "Metrics", costs: dict[str, float],
                 host: HostProfile | None = None) -> None:
        self.engine = engine
        self.metrics = metrics
        self.costs = costs
        self.host = host if host is not None else HostProfile()
        c = costs
        self.exit_kernel_cost = int(c["exit_hw_ns"] + c["exit_kernel_ns"])
        self.exit_user_cost = int(c["exit_hw_ns"] + c["exit_kernel_ns"] + c["exit_user_ns"])
        self._copy_cache: dict[int, int] = {}
        #: None (``costs.jitter = 0``: every cost exact) or ``jit(ns)`` (sim.jitter.Jitter.draw)
        self._jitter = Jitter(engine.rng, c["jitter"]) if c.get("jitter", 0) > 0 else None
        self.jitter = self._jitter.draw if self._jitter is not None else None

    def resource(self, name: str) -> Resource:
        """A software actor (vCPU, host thread): jittered unless ``costs.jitter = 0``."""
        return Resource(name) if self._jitter is None else JitteredResource(name, self._jitter)

    def spread(self, ns: int) -> int:
        """``ns`` of software time as the host spends it this time (a delay that is
        not a reservation: a thread's wake-up, a host interrupt)."""
        j = self.jitter
        return ns if j is None else j(ns)

    def exit_cost(self, user: bool) -> int:
        return self.exit_user_cost if user else self.exit_kernel_cost

    def exit(self, vm: Vm, reason: str, cause: str, user: bool, at: int | None = None,
             stage: int = 0, pkt: int | None = None, extra_ns: int = 0) -> int:
        """The vCPU of ``vm`` exits for ``reason``; returns when it re-enters.

        The exit is recorded (and traced) now; its cost is added to the vCPU's
        timeline from ``at`` (default now) or from when the vCPU is free, so
        the guest's own work is pushed back by it.  ``extra_ns`` is work
        done during the exit beyond the fixed cost (e.g. a device model).
        """
        now = self.engine.now if at is None else at
        cost = (self.exit_user_cost if user else self.exit_kernel_cost) + extra_ns
        vcpu = vm.vcpu
        # the vCPU takes the exit when it gets to it (after earlier work)
        start = vcpu.busy_until if vcpu.busy_until > now else now
        end = vcpu.reserve(now, cost)
        cost = end - start          # what it cost this time (costs.jitter)
        vm.exit_start = start
        vm.exit_end = end
        m = self.metrics
        m.exits_total += 1
        m.exit_ns += cost
        by = m.exits_by_reason
        by[reason] = by.get(reason, 0) + 1
        if user:
            m.exits_user += 1
        tr = self.engine.trace
        if tr.on:
            num = EXIT_REASONS[reason]
            where = "userspace" if user else "kernel"
            tr.emit(self.engine.now, "exit", vm.name, stage,
                    f"{vm.name} exits: {reason} ({num}) · {cause} · {where} · {cost / 1000:,.2f} µs",
                    reason=reason, number=num, cause=cause, where=where, cost_ns=cost, pkt=pkt,
                    start_ns=start)
        return end

    # -- the vCPU's state --------------------------------------------------------
    def halted(self, vm: Vm, t: int) -> bool:
        """No guest work left at ``t``: the guest ran out of work and executed HLT."""
        return vm.vcpu.busy_until < t

    def wake(self, vm: Vm, why: str, stage: int = 0, at: int | None = None) -> int:
        """Work arrives for a halted vCPU (an interrupt, or the guest's own
        timer for an application that sends): the HLT exit it took when it
        went idle is recorded, and KVM's wake-up (``kvm_vcpu_block`` returns,
        VM entry) is charged now.  Returns when the vCPU runs again."""
        now = self.engine.now if at is None else at
        vcpu = vm.vcpu
        idle_from = vcpu.busy_until
        start = idle_from if idle_from > now else now
        end = vcpu.reserve(now, self.exit_kernel_cost)
        cost = end - start
        m = self.metrics
        m.exits_total += 1
        m.exit_ns += cost
        m.halts += 1
        by = m.exits_by_reason
        by["HLT"] = by.get("HLT", 0) + 1
        vm.exit_start, vm.exit_end = idle_from, end
        tr = self.engine.trace
        if tr.on:
            tr.emit(self.engine.now, "exit", vm.name, stage,
                    f"{vm.name} exits: HLT (12) · guest idle since {idle_from / 1000:,.3f} µs, "
                    f"woken by {why} · kernel · {cost / 1000:,.2f} µs",
                    reason="HLT", number=12, cause=f"guest idle (woken by {why})", where="kernel",
                    cost_ns=cost, pkt=None, start_ns=idle_from)
        return end

    def deliver_irq(self, vm: Vm, vector: str, source: str, *, level: bool = False,
                    assigned: bool = False, stage: int = 0, at: int | None = None) -> int | None:
        """Raise interrupt ``vector`` for ``vm`` at ``at`` (default now).

        ``level``: a level-triggered IOAPIC vector (the e1000's INTx), else an
        edge MSI/MSI-X.  ``assigned``: the MSI-X of a device assigned with
        VFIO, which without VT-d posted interrupts is first a host interrupt
        (``vfio_msihandler`` → irqfd).  What it costs follows the host
        profile and the vCPU's state at that instant
        (``kvm_vcpu_kick`` / ``vmx_deliver_posted_interrupt``):

        - halted: KVM wakes it (the HLT exit is recorded), no EXTERNAL_INTERRUPT;
        - inside an exit: injected at the next VM entry, no extra exit;
        - in guest mode without APICv: the kick IPI exits as EXTERNAL_INTERRUPT;
        - in guest mode with APICv (or VT-d posting an assigned device's
          MSI-X): a posted interrupt, no exit.

        Returns the time the guest's handler may start, or ``None`` when the
        vector was already pending and KVM coalesced this raise.
        """
        now = self.engine.now if at is None else at
        m = self.metrics
        tr = self.engine.trace
        if vector in vm.irq_pending:
            m.irq_coalesced += 1
            if tr.on:
                tr.emit(self.engine.now, "irq", vm.name, stage,
                        f"{source}: interrupt already pending in {vm.name}'s IRR — coalesced",
                        vector=vector, source=source, mode="coalesced")
            return None
        vm.irq_pending.add(vector)
        h = self.host
        posted = h.apicv
        how = ""
        if assigned:
            if h.vtd_pi:
                how = "VT-d posts the MSI-X into the vCPU's posted-interrupt descriptor (no host interrupt)"
            else:
                # the host takes the interrupt first and forwards it through irqfd
                m.irq_host += 1
                now += self.spread(int(self.costs["host_irq_ns"]))
                how = "the MSI-X lands on the host (vfio_msihandler → irqfd); "
        inject = int(self.costs["irq_inject_ns"])
        if self.halted(vm, now):
            state = "halted"
            start = self.wake(vm, f"the {source} interrupt", stage, now)
            if posted:
                m.irq_posted += 1
                mode, what = "posted", f"posted interrupt wakes {vm.name} from HLT — no EXTERNAL_INTERRUPT"
            else:
                m.irq_injected += 1
                start = vm.vcpu.reserve(start, inject)
                mode, what = "injected", f"KVM wakes {vm.name} from HLT and injects it on entry — no EXTERNAL_INTERRUPT"
        elif vm.exit_start <= now < vm.exit_end:
            state = "in_exit"
            # outside guest mode: pending until the next VM entry (vcpu_enter_guest)
            if posted:
                m.irq_posted += 1
                start = vm.vcpu.reserve(now, 0)
                mode, what = "posted", f"{vm.name} is inside an exit: the PIR is synced on VM entry — no extra exit"
            else:
                m.irq_injected += 1
                start = vm.vcpu.reserve(now, inject)
                mode, what = "injected", f"{vm.name} is inside an exit: KVM injects it on VM entry — no extra exit"
        elif posted:
            state = "running"
            m.irq_posted += 1
            start = vm.vcpu.reserve(now, 0)
            mode, what = "posted", f"posted interrupt → {vm.name} directly, no VM exit"
        else:
            state = "running"
            m.irq_injected += 1
            start = self.exit(vm, "EXTERNAL_INTERRUPT", f"{source} interrupt kicks the vCPU", user=False,
                              at=now, stage=stage, extra_ns=inject)
            mode, what = "injected", f"KVM injects the {source} interrupt into {vm.name} on VM entry"
        if tr.on:
            if how.endswith("; "):
                what = how + what
            elif how:
                what = f"{how}; {what}"
            tr.emit(self.engine.now, "irq", vm.name, stage, f"{source}: {what}",
                    vector=vector, source=source, mode=mode, level=level, state=state)
        return start

    def ack_irq(self, vm: Vm, vector: str, *, level: bool = False, stage: int = 0,
                at: int | None = None) -> int:
        """The guest's handler writes EOI.  Returns when the vCPU is back.

        No APICv: xAPIC → APIC_ACCESS (``handle_apic_access`` → ``kvm_lapic_set_eoi``
        on KVM's fast path), x2APIC → MSR_WRITE (WRMSR 0x80B).  APICv: the
        EOI is virtualized — no exit for an edge vector; a level-triggered
        vector is in the EOI-exit bitmap and exits as EOI_INDUCED so the
        in-kernel IOAPIC sees it (``handle_apic_eoi_induced``)."""
        vm.irq_pending.discard(vector)
        now = self.engine.now if at is None else at
        h = self.host
        if h.apicv:
            if level:
                return self.exit(vm, "EOI_INDUCED", "EOI of a level-triggered vector (EOI-exit bitmap → IOAPIC)",
                                 user=False, at=now, stage=stage)
            tr = self.engine.trace
            if tr.on:
                tr.emit(self.engine.now, "irq", vm.name, stage,
                        f"{vm.name} EOI handled by the virtual APIC — no exit", vector=vector, mode="posted")
            return vm.vcpu.reserve(now, 0)
        if h.x2apic:
            return self.exit(vm, "MSR_WRITE", "guest writes EOI (WRMSR 0x80B, x2APIC)", user=False,
                             at=now, stage=stage)
        return self.exit(vm, "APIC_ACCESS", "guest writes EOI (APIC page offset 0xB0)", user=False,
                         at=now, stage=stage)

    def copy_cost(self, nbytes: int) -> int:
        cost = self._copy_cache.get(nbytes)
        if cost is None:
            c = self.costs
            cost = self._copy_cache[nbytes] = int(c["copy_fixed_ns"] + c["copy_ns_per_kb"] * nbytes / 1024)
        return cost
