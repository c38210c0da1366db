"""The VMM side: VM-exit reasons, the cost table, exits and interrupt delivery.

Exit reason names and numbers are Intel VMX basic exit reasons as in Linux
``arch/x86/include/uapi/asm/vmx.h``.  Every cost the model charges comes from
:data:`DEFAULT_COSTS` (overridable by a preset's ``[costs]`` table); nothing
else in the model invents a duration.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .engine import Engine, Resource

if TYPE_CHECKING:  # pragma: no cover
    from .metrics import Metrics

__all__ = ["EXIT_REASONS", "EXIT_NUMBERS", "DEFAULT_COSTS", "COST_HELP", "Vm", "Vmm"]

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
}


class Vm:
    """A guest: its memory, its vCPU (a :class:`Resource`), its identity."""

    __slots__ = ("index", "name", "mac", "vlan", "ip", "mem", "vcpu", "irq_pending", "extra")

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


class Vmm:
    """Charges exits and delivers interrupts, all through one cost table."""

    def __init__(self, engine: Engine, metrics: "Metrics", costs: dict[str, float]) -> None:
        self.engine = engine
        self.metrics = metrics
        self.costs = costs
        c = costs
        self.exit_kernel_cost = int(c["exit_hw_ns"] + c["exit_kernel_ns"])
        self.exit_user_cost = int(c["exit_hw_ns"] + c["exit_kernel_ns"] + c["exit_user_ns"])
        self._copy_cache: dict[int, int] = {}

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
        end = vm.vcpu.reserve(now, cost)
        start = end - cost          # the vCPU takes the exit when it gets to it (after earlier work)
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
                    f"{vm.name} exits: {reason} ({num}) · {cause} · {where} · {cost / 1000:.2f} µs",
                    reason=reason, number=num, cause=cause, where=where, cost_ns=cost, pkt=pkt,
                    start_ns=start)
        return end

    def deliver_irq(self, vm: Vm, vector: str, source: str, mode: str, eoi: str = "APIC_WRITE",
                    stage: int = 0, at: int | None = None) -> int | None:
        """Raise interrupt ``vector`` for ``vm`` at ``at`` (default now).

        ``mode``:
          - ``"kick"``: KVM injects (irqfd / KVM_IRQ_LINE / an assigned
            device's MSI that lands on the host): the running vCPU is kicked out
            (EXTERNAL_INTERRUPT), the interrupt is injected on entry, and the
            guest's EOI exits (``eoi``: APIC_WRITE, or MSR_WRITE with x2APIC).
          - ``"posted"``: posted interrupt + virtualized APIC: no exit at all.

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
        if mode == "posted":
            m.irq_posted += 1
            start = vm.vcpu.reserve(now, 0)
            if tr.on:
                tr.emit(self.engine.now, "irq", vm.name, stage,
                        f"{source}: posted interrupt → {vm.name} directly, no VM exit",
                        vector=vector, source=source, mode="posted")
            return start
        m.irq_injected += 1
        end = self.exit(vm, "EXTERNAL_INTERRUPT", f"{source} interrupt kicks the vCPU", user=False,
                        at=now, stage=stage, extra_ns=int(self.costs["irq_inject_ns"]))
        if tr.on:
            tr.emit(self.engine.now, "irq", vm.name, stage,
                    f"KVM injects the {source} interrupt into {vm.name} on VM entry",
                    vector=vector, source=source, mode="injected")
        return end

    def ack_irq(self, vm: Vm, vector: str, mode: str, eoi: str = "APIC_WRITE",
                stage: int = 0, at: int | None = None) -> int:
        """The guest's handler ran; it writes EOI.  Returns when the vCPU is back."""
        vm.irq_pending.discard(vector)
        now = self.engine.now if at is None else at
        if mode == "posted":
            tr = self.engine.trace
            if tr.on:
                tr.emit(self.engine.now, "irq", vm.name, stage, f"{vm.name} EOI handled by the virtual APIC — no exit",
                        vector=vector, mode="posted")
            return vm.vcpu.reserve(now, 0)
        return self.exit(vm, eoi, "guest writes EOI", user=False, at=now, stage=stage)

    def copy_cost(self, nbytes: int) -> int:
        cost = self._copy_cache.get(nbytes)
        if cost is None:
            c = self.costs
            cost = self._copy_cache[nbytes] = int(c["copy_fixed_ns"] + c["copy_ns_per_kb"] * nbytes / 1024)
        return cost
