"""A run: one preset, one technique, one seed.

``Simulation`` wires the engine, the VMs (guest memory + vCPU), the VMM, the
metrics, the traffic generator and the chosen technique together, and knows
when a run is complete: every offered packet delivered, dropped or handed to
the host (an SR-IOV NIC's unknown unicast goes to the PF's default pool).
"""

from __future__ import annotations

from typing import Any

from .engine import Engine, Resource
from .memory import GuestMemory, RamShortage
from .metrics import Metrics
from .packet import WIRE_OVERHEAD, FrameFactory, Packet, parse_frame
from .paths import available, make_technique
from .preset import Preset, PresetError
from .trace import Trace
from .traffic import Traffic
from .vmm import DEFAULT_COSTS, HostProfile, Vm, Vmm

__all__ = ["Simulation", "HPA_STRIDE", "check_runnable"]

#: host-physical placement of each VM's RAM (VM i at 4 GiB + i GiB)
HPA_BASE = 0x1_0000_0000
HPA_STRIDE = 0x4000_0000


class Simulation:
    def __init__(self, preset: Preset, technique: str, seed: int = 1,
                 packets: int | None = None, trace: Trace | None = None) -> None:
        self.preset = preset
        self.seed = seed
        self.engine = Engine(seed, trace)
        self.metrics = Metrics()
        #: a packet capture (sim.capture.CaptureSink) or None: the model calls it
        #: at the points sim/capture.py lists; None costs one attribute test
        self.capture = None
        costs = dict(DEFAULT_COSTS)
        costs.update(preset.costs)
        costs["line_rate_gbps"] = preset.nic["line_rate_gbps"]
        self.costs = costs
        self.host = HostProfile.from_preset(preset.host)
        self.vmm = Vmm(self.engine, self.metrics, costs, self.host)
        self.vms: list[Vm] = []
        #: each VM's name by index (the delivery counts are by name)
        self._vm_names = [cfg.name for cfg in preset.vms]
        for i, cfg in enumerate(preset.vms):
            mem = GuestMemory(cfg.name, cfg.ram, HPA_BASE + i * HPA_STRIDE)
            vm = Vm(i, cfg.name, cfg.mac, cfg.vlan, cfg.ip, mem)
            vm.extra["cfg"] = cfg
            if self.vmm.jitter is not None:
                vm.vcpu = self.vmm.resource(vm.vcpu.name)     # costs.jitter
            self.vms.append(vm)
        self.frames = FrameFactory()
        self.packets_target = packets if packets is not None else preset.traffic["count"]
        #: each VM's NIC port (the preset's rule: its ``port`` key, else port 0's VFs first)
        self.vm_port = [cfg.port for cfg in preset.vms]
        #: each VM's port's wire interface in a capture: port 0's is interface 0,
        #: port 1's comes after the VMs' (sim/capture.py interfaces)
        self.wire_iface = [0 if port == 0 else len(preset.vms) + 1 for port in self.vm_port]
        #: each port's outbound physical link (inbound spacing is the generator's, per port too)
        self.wire_outs = [Resource("wire tx" if p == 0 else f"wire tx (port {p})")
                          for p in range(preset.nic.get("ports", 1))]
        self.wire_out = self.wire_outs[0]
        self.line_bps = costs["line_rate_gbps"] * 1e9
        #: frames being serialized onto the outbound link (sent, not yet delivered)
        self.in_wire = 0
        #: [faults] link_down_us: the physical link goes down at this virtual time
        down = preset.faults["link_down_us"]
        self.link_down_at = int(down * 1000) if down > 0 else None
        try:
            self.technique = make_technique(technique, self)
            self.traffic = Traffic(self)
            self.technique.setup()
        except RamShortage as e:
            raise PresetError(_ram_message(preset, technique, e)) from None
        self.metrics.reset_setup()
        self.traffic.start()

    # -- called by the traffic generator --------------------------------------
    def offer(self, pkt: Packet) -> None:
        now = self.engine.now
        m = self.metrics
        m.offered += 1                    # (Metrics.offer, inlined: once per frame)
        if m.first_offer_t < 0:
            m.first_offer_t = now
        if pkt.direction == "rx":
            # the generator ticks when a frame's last bit reaches the port; it
            # never offers faster than the link (see Traffic.interval_ns)
            tech = self.technique
            if self.link_down_at is not None and now >= self.link_down_at:
                cap = self.capture
                if cap is not None:
                    cap.frame(now, self.wire_iface[pkt.vm], 1, pkt.frame, pkt.id)   # wire, inbound
                self.dropped(pkt, "physical link is down (no carrier)", 2)
                return
            if tech.readdress is not None:
                tech.readdress(pkt)
            cap = self.capture
            if cap is not None:
                cap.frame(now, self.wire_iface[pkt.vm], 1, pkt.frame, pkt.id)   # wire, inbound
            tech.receive_from_wire(pkt)
        else:
            self.technique.guest_send(self.vms[pkt.vm], pkt)

    # -- called by the techniques ----------------------------------------------
    def wire_time(self, size: int) -> int:
        return int((size + WIRE_OVERHEAD) * 8 * 1e9 / self.line_bps)

    def transmit(self, pkt: Packet, ready: int) -> int:
        """A frame leaves on the outbound link once it is ready; it is
        delivered (to the outside host) when its last bit is sent."""
        if self.link_down_at is not None and ready >= self.link_down_at:
            self.dropped(pkt, "physical link is down (no carrier)", 0)
            return ready
        end = self.wire_outs[self.vm_port[pkt.vm]].reserve(ready, self.wire_time(pkt.size))
        self.in_wire += 1
        self.engine.at(end, self._left_wire, pkt)
        return end

    def _left_wire(self, pkt: Packet) -> None:
        self.in_wire -= 1
        cap = self.capture
        if cap is not None:
            cap.frame(self.engine.now, self.wire_iface[pkt.vm], 2, pkt.frame, pkt.id)  # wire, outbound: its last bit left
        self.delivered(pkt, self.engine.now)

    def delivered(self, pkt: Packet, t: int) -> None:
        pkt.t_done = t
        m = self.metrics
        m.deliver(self._vm_names[pkt.vm], pkt.size, pkt.t0, t, pkt.copies)
        tr = self.engine.trace
        if tr.on:
            vm = self.vms[pkt.vm]
            rx = pkt.direction == "rx"
            what = f"{vm.name}'s stack receives" if rx else "the outside host receives"
            # a received frame's delivery ends the receive flow's last stage
            tr.emit(t, "deliver", vm.name, len(self.technique.stages) if rx else self.technique.tx_wire_stage,
                    f"{what} frame #{pkt.id} ({pkt.size:,} B) · latency {(t - pkt.t0) / 1000:,.2f} µs",
                    pkt=pkt.id, size=pkt.size, latency_ns=t - pkt.t0, queue=pkt.direction)
        traffic = self.traffic
        if traffic.pattern == "pingpong":
            traffic.on_complete(pkt, True)
        if traffic.done and m.delivered + m.dropped + m.to_host >= m.offered:
            self.engine.halted = True

    def dropped(self, pkt: Packet, reason: str, stage: int = 0) -> None:
        m = self.metrics
        m.drop(reason)
        cap = self.capture
        if cap is not None:
            # on the interface the frame came in by: the wire's (received) or its VM's (sent)
            rx = pkt.direction == "rx"
            cap.frame(self.engine.now, self.wire_iface[pkt.vm] if rx else pkt.vm + 1, 1 if rx else 2, pkt.frame, pkt.id, reason)
        tr = self.engine.trace
        if tr.on:
            tr.emit(self.engine.now, "drop", self.vms[pkt.vm].name, stage,
                    f"frame #{pkt.id} dropped: {reason}", pkt=pkt.id, reason=reason,
                    dst=pkt.dst, vlan=pkt.vlan, direction=pkt.direction)
        traffic = self.traffic
        if traffic.pattern == "pingpong":
            traffic.on_complete(pkt, False)
        if traffic.done and m.delivered + m.dropped + m.to_host >= m.offered:
            self.engine.halted = True

    def to_host(self, pkt: Packet, why: str, stage: int = 0) -> None:
        """The frame went to the host, not to a VM (neither delivered nor dropped)."""
        m = self.metrics
        m.to_host += 1
        tr = self.engine.trace
        if tr.on:
            tr.emit(self.engine.now, "switch", self.vms[pkt.vm].name, stage,
                    f"frame #{pkt.id} goes to the host: {why}", pkt=pkt.id, dst=pkt.dst, to_host=True)
        traffic = self.traffic
        if traffic.pattern == "pingpong":
            traffic.on_complete(pkt, False)
        if traffic.done and m.delivered + m.dropped + m.to_host >= m.offered:
            self.engine.halted = True

    def guest_reads(self, vm: Vm, pkt: Packet, gpa: int, t: int) -> None:
        """The guest stack reads the frame through its GPA: the bytes in RAM
        must be the frame that was sent (checked on the addresses and the
        sequence number)."""
        off = 46 if pkt.vlan else 42   # the sequence number after Ethernet(+802.1Q)/IPv4/UDP
        ram = vm.mem.ram
        frame = pkt.frame
        if ram[gpa:gpa + 12] != frame[:12] or ram[gpa + off:gpa + off + 8] != frame[off:off + 8]:
            self.metrics.corrupt += 1
        cap = self.capture
        if cap is not None:
            # what the guest read: the bytes in its RAM at that GPA, not the model's copy
            cap.frame(t, vm.index + 1, 1, bytes(ram[gpa:gpa + len(frame)]), pkt.id)
        self.delivered(pkt, t)

    def guest_queued(self, vm: Vm, pkt: Packet, gpa: int) -> None:
        """The guest's driver has written a frame to send at ``gpa`` (after
        any virtio-net header): the capture records it as guest RAM holds it.
        The techniques call this only while ``capture`` is not None."""
        self.capture.frame(self.engine.now, vm.index + 1, 2, bytes(vm.mem.ram[gpa:gpa + pkt.size]), pkt.id)

    # -- running ------------------------------------------------------------
    @property
    def complete(self) -> bool:
        m = self.metrics
        return self.traffic.done and m.delivered + m.dropped + m.to_host >= m.offered

    def run(self, max_events: int | None = None, until_ns: int | None = None) -> Metrics:
        """Run until every offered packet is delivered or dropped (or the heap
        empties: packets still held are then in flight).  With ``until_ns``
        it stops at that virtual time if the run is not complete by then:
        what is still on its way is :meth:`in_flight`, and guest RAM holds
        that instant's bytes."""
        self.engine.run(max_events=max_events, until=until_ns)
        return self.metrics

    def in_flight(self) -> int:
        return self.technique.in_flight() + self.in_wire

    def summary(self) -> dict[str, Any]:
        t = self.technique
        d = self.metrics.summary(
            t.name, self.preset.name, self.seed,
            options=t.options(),
            host=self.host.options(),
            in_flight=self.in_flight(),
            virtual_time_ns=self.engine.now,
            cpu_ns_per_packet=round(self.cpu_ns_per_packet(), 1),
            corrupt_frames=self.metrics.corrupt,
        )
        d.update(t.summary_extra())
        return d

    def cpu_ns_per_packet(self) -> float:
        busy = sum(v.vcpu.busy_ns for v in self.vms) + self.technique.host_busy_ns()
        return self.metrics.per_packet(busy)

    @staticmethod
    def decode(frame: bytes) -> dict:
        return parse_frame(frame)


#: the preset key that sizes each technique's rings (and so its buffers)
_RING_KEY = {"emulation": ("emulation", "ring_size"), "virtio": ("virtio", "queue_size"),
             "sriov": ("sriov", "ring_size")}
_MAX_RAM = 1 << 30


def _mib(n: int) -> str:
    return f"{n / (1 << 20):,.1f} MiB".replace(".0 MiB", " MiB")


def _ram_message(preset: Preset, technique: str, e: RamShortage) -> str:
    """One line: which VM's RAM is too small, for what, what it needs, what is allowed."""
    i = next((k for k, v in enumerate(preset.vms) if v.name == e.vm), 0)
    need = e.need
    if preset.vms[i].ram < _MAX_RAM:
        # measure the whole layout on RAM of the largest size (lazily backed, so free)
        raw_vms = [dict(t) for t in (preset.raw.get("vm") or [{}] * len(preset.vms))]
        for t in raw_vms:
            t["ram"] = _MAX_RAM
        try:
            probe = Simulation(preset.with_options(vm=raw_vms), technique, packets=1)
            need = max(need, probe.vms[i].mem.used)
        except PresetError:
            need = _MAX_RAM + 1
    sec, key = _RING_KEY.get(technique, ("", ""))
    ring = f" with {sec}.{key} = {getattr(preset, sec)[key]:,}" if sec else ""
    if need > _MAX_RAM:
        allowed = f"a smaller {sec}.{key} (vm.ram is at most 1 GiB)"
    else:
        allowed = f"vm[{i}].ram of at least {_mib(-(-need // (1 << 20)) << 20)} (up to 1 GiB), or a smaller {sec}.{key}"
    return (f"{preset.source}: vm[{i}].ram = {_mib(preset.vms[i].ram)} is too small for {technique}{ring}: "
            f"{e.label} and the rest need {_mib(need)}; allowed: {allowed}")


def check_runnable(preset: Preset) -> None:
    """Raise PresetError if some technique cannot lay out its rings and
    buffers in a VM's RAM (what ``presets --validate`` checks)."""
    for tech in available():
        Simulation(preset, tech, packets=1)
