"""Traffic generation: steady, burst, poisson and ping-pong; rx, tx or both.

Received frames come from an outside host on the wire (``EXT_MAC`` /
``EXT_IP``) to a VM; transmitted frames go from a VM to that host.  Sizes
are fixed or a weighted mix (IMIX).  All randomness comes from the run's RNG.
"""

from __future__ import annotations

import bisect
import itertools
from typing import TYPE_CHECKING

from .packet import WIRE_OVERHEAD, Packet, stamp

if TYPE_CHECKING:  # pragma: no cover
    from .protocols import SimulationApi as Simulation  # what the generator may call on the run

__all__ = ["Traffic", "EXT_MAC", "EXT_IP"]

EXT_MAC = "02:00:00:00:00:fe"
EXT_IP = "10.0.0.254"


class Traffic:
    def __init__(self, sim: "Simulation") -> None:
        self.sim = sim
        cfg = sim.preset.traffic
        self.pattern: str = cfg["pattern"]
        self.direction: str = cfg["direction"]
        self.count: int = sim.packets_target
        self.burst_size: int = cfg["burst_size"]
        self.burst_gap_ns = int(cfg["burst_gap_us"] * 1000)
        sizes = cfg["sizes"]
        self.sizes = [s for s, _ in sizes]
        self.cum_weights = list(itertools.accumulate(w for _, w in sizes))
        self.mean_size = sum(s * w for s, w in sizes) / self.cum_weights[-1]
        self.line_bps = sim.costs["line_rate_gbps"] * 1e9
        kind, val = cfg["rate"]
        self.rate_kind = kind
        self.rate_val = val
        names = cfg["targets"]
        self.targets = sim.vms if names == "all" else [v for v in sim.vms if v.name in names]
        self.offered = 0
        self._rr = 0
        self._dir_toggle = 0
        self._t = 0.0
        self._in_burst = 0
        self.done = False
        self.single_size = len(self.sizes) == 1
        self.foreign_vlan = sim.preset.faults["foreign_vlan"]
        self._intervals: dict[int, float] = {}
        #: each flow's frame template (FrameFactory.template), per (VM, VLAN, size) / (VM, size)
        self._rx_tpl: dict[tuple, tuple] = {}
        self._tx_tpl: dict[tuple, tuple] = {}
        #: two NIC ports are two links: each port's targets get a stream of their own,
        #: paced by that link alone (see _port_tick); one port keeps the single stream
        ports = sorted({sim.vm_port[v.index] for v in self.targets})
        self.streams = ([_Stream([v for v in self.targets if sim.vm_port[v.index] == p],
                                 len(self.targets)) for p in ports]
                        if len(ports) > 1 and self.pattern != "pingpong" else [])

    # -- helpers ------------------------------------------------------------
    def interval_ns(self, size: int, share: float = 1.0) -> float:
        """Time between two frame starts at the configured rate (``share``:
        a stream's share of it, as one port's of two)."""
        wire = (size + WIRE_OVERHEAD) * 8 / self.line_bps * 1e9  # the link never goes faster
        if self.rate_kind == "line":
            return wire
        if self.rate_kind == "pps":
            return max(wire, 1e9 / (self.rate_val * share))
        return max(wire, size * 8 / (self.rate_val * share) * 1e9)

    def next_size(self) -> int:
        if len(self.sizes) == 1:
            return self.sizes[0]
        r = self.sim.engine.rng.random() * self.cum_weights[-1]
        return self.sizes[bisect.bisect_right(self.cum_weights, r)]

    # -- the generator ---------------------------------------------------------
    def start(self) -> None:
        if self.count <= 0 or not self.targets:
            self.done = True
            return
        if self.streams:
            for st in self.streams:
                self.sim.engine.at(0, self._port_tick, st)
            return
        self.sim.engine.at(0, self._tick)

    def _direction(self) -> str:
        if self.direction != "both":
            return self.direction
        self._dir_toggle ^= 1
        return "rx" if self._dir_toggle else "tx"

    def _target(self):
        t = self.targets[self._rr % len(self.targets)]
        self._rr += 1
        return t

    def _offer(self, direction: str, vm, size: int) -> None:
        sim = self.sim
        pid = self.offered
        now = sim.engine.now
        self.offered = pid + 1
        if pid + 1 >= self.count:
            self.done = True
        if direction == "rx":
            vlan = vm.vlan
            if self.foreign_vlan and sim.engine.rng.random() < self.foreign_vlan:
                vlan = vm.vlan % 4094 + 1   # tagged for a VLAN this VM is not in
            key = (vm.index, vlan, size)
            tpl = self._rx_tpl.get(key)
            if tpl is None:
                tpl = self._rx_tpl[key] = sim.frames.template(vm.mac, EXT_MAC, vlan, EXT_IP, vm.ip, size)
            pkt = Packet(pid, now, vm.index, "rx", None, vm.mac, EXT_MAC, vlan, tpl)
        else:
            key = (vm.index, size)
            tpl = self._tx_tpl.get(key)
            if tpl is None:
                tpl = self._tx_tpl[key] = sim.frames.template(EXT_MAC, vm.mac, vm.vlan, vm.ip, EXT_IP, size,
                                                              5201, 40000)
            pkt = Packet(pid, now, vm.index, "tx", stamp(tpl, pid), EXT_MAC, vm.mac, vm.vlan)
        sim.offer(pkt)

    def _tick(self) -> None:
        eng = self.sim.engine
        offer = self._offer
        targets = self.targets
        pattern = self.pattern
        direction = self.direction
        intervals = self._intervals
        while True:
            size = self.sizes[0] if self.single_size else self.next_size()
            vm = targets[self._rr % len(targets)]
            self._rr += 1
            if pattern == "pingpong":
                offer("rx" if direction != "tx" else "tx", vm, size)
                return  # the next request waits for this one's answer (on_complete)
            offer(self._direction() if direction == "both" else direction, vm, size)
            if self.done:
                return
            gap = intervals.get(size)
            if gap is None:
                gap = intervals[size] = self.interval_ns(size)
            if pattern == "poisson":
                # exponential gaps around the configured mean, never faster than the link
                wire = (size + WIRE_OVERHEAD) * 8 / self.line_bps * 1e9
                gap = max(wire, eng.rng.expovariate(1.0 / self._mean_interval()))
            elif pattern == "burst":
                self._in_burst += 1
                if self._in_burst >= self.burst_size:
                    self._in_burst = 0
                    gap += self.burst_gap_ns
            self._t += gap
            # the next frame, in place when nothing else is due before it (Engine.go_on)
            t = int(self._t)
            if t < eng.now:
                t = eng.now             # (as Engine.at: never in the past)
            if eng.go_on(t):
                continue
            eng.at(t, self._tick)
            return

    def _port_tick(self, st: "_Stream") -> None:
        """One port's stream (two ports): round-robin over that port's target
        VMs, at its share of the rate (``rate`` is the total; a port's share is
        its share of the targets; "line" is every link at line rate), never
        faster than its own link.  The streams share the packet count."""
        if self.done:
            return
        size = self.sizes[0] if self.single_size else self.next_size()
        vm = st.targets[st.rr % len(st.targets)]
        st.rr += 1
        self._offer(self._direction() if self.direction == "both" else self.direction, vm, size)
        if self.done:
            return
        gap = self.interval_ns(size, st.share)
        if self.pattern == "poisson":
            # the sum of the ports' Poisson streams is one of the total rate
            wire = (size + WIRE_OVERHEAD) * 8 / self.line_bps * 1e9
            mean = self._mean_interval() if self.rate_kind == "line" else self._mean_interval() / st.share
            gap = max(wire, self.sim.engine.rng.expovariate(1.0 / mean))
        elif self.pattern == "burst":
            st.in_burst += 1
            if st.in_burst >= self.burst_size:
                st.in_burst = 0
                gap += self.burst_gap_ns
        st.t += gap
        self.sim.engine.at(int(st.t), self._port_tick, st)

    def _mean_interval(self) -> float:
        return self.interval_ns(int(self.mean_size))

    def on_complete(self, pkt: Packet, delivered: bool) -> None:
        """Ping-pong: a delivered request is answered by the other side; a
        finished answer (or a loss) lets the next request go."""
        if self.pattern != "pingpong":
            return
        sim = self.sim
        vm = sim.vms[pkt.vm]
        first = "rx" if self.direction != "tx" else "tx"
        # the outside host's own stack takes its time to turn what it received
        # into the next frame it sends (netperf's request/response loop)
        peer = int(sim.costs["peer_turnaround_ns"])
        if delivered and pkt.direction == first and not self.done:
            if first == "rx":
                self._offer("tx", vm, pkt.size)     # the guest answers at once
            else:
                sim.engine.at(sim.engine.now + peer, self._offer, "rx", vm, pkt.size)
        elif not self.done:
            t = sim.engine.now + (peer if delivered and first == "rx" else 0)
            self._t = t
            sim.engine.at(t, self._tick)


class _Stream:
    """The frames one NIC port's link carries (two ports: one per port)."""

    __slots__ = ("targets", "share", "rr", "t", "in_burst")

    def __init__(self, targets: list, total: int) -> None:
        self.targets = targets
        self.share = len(targets) / total
        self.rr = 0
        self.t = 0.0
        self.in_burst = 0
