"""Counters every technique fills in the same way, and the JSON summary.

Latency percentiles come from a log-linear histogram (about 1 % precision),
so memory stays flat however many packets a run has.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Metrics", "LatencyHistogram"]


class LatencyHistogram:
    """Buckets of ~1 % width: values below 128 ns exact, above that the top 7
    significant bits are kept."""

    __slots__ = ("counts", "n", "total", "max")

    def __init__(self) -> None:
        self.counts: dict[int, int] = {}
        self.n = 0
        self.total = 0
        self.max = 0

    def add(self, v: int) -> None:
        if v < 0:
            v = 0
        b = v.bit_length()
        if b > 7:
            s = b - 7
            key = (s << 8) | (v >> s)
        else:
            key = v
        c = self.counts
        c[key] = c.get(key, 0) + 1
        self.n += 1
        self.total += v
        if v > self.max:
            self.max = v

    @staticmethod
    def _value(key: int) -> int:
        s = key >> 8
        if s == 0:
            return key
        m = key & 0xFF
        return (m << s) + (1 << (s - 1))

    def percentile(self, p: float) -> int:
        if not self.n:
            return 0
        rank = max(1, int(round(p / 100.0 * self.n + 0.4999999)))
        seen = 0
        for key in sorted(self.counts, key=self._value):
            seen += self.counts[key]
            if seen >= rank:
                return min(self._value(key), self.max)
        return self.max


class Metrics:
    """Run counters.  Paths increment the attributes directly (hot path)."""

    def __init__(self) -> None:
        self.offered = 0
        self.delivered = 0
        self.dropped = 0
        self.to_host = 0             # frames the NIC handed to the host (the PF's default pool), not to a VM
        self.drops_by_reason: dict[str, int] = {}
        self.bytes_delivered = 0
        self.first_offer_t = -1
        self.last_deliver_t = -1
        self.latency = LatencyHistogram()
        self.exits_total = 0
        self.exits_user = 0
        self.exit_ns = 0
        self.exits_by_reason: dict[str, int] = {}
        self.irq_injected = 0
        self.irq_posted = 0
        self.irq_coalesced = 0
        self.irq_host = 0            # host interrupts an assigned VF's MSI-X caused (no VT-d PI)
        self.halts = 0               # HLT exits: the guest ran out of work and idled
        self.notify_sent = 0         # device → driver notifications raised (before coalescing)
        self.notify_suppressed = 0   # device → driver notifications the ring rules suppressed
        self.kicks = 0               # driver → device notifications (doorbells) that were sent
        self.kicks_suppressed = 0
        self.copies = 0
        self.copies_delivered = 0
        self.copy_bytes = 0
        self.iommu_translations = 0
        self.iotlb_hits = 0
        self.iotlb_misses = 0
        self.iommu_faults = 0
        self.corrupt = 0             # guest read a buffer that did not hold the expected frame
        self.delivered_by_vm: dict[str, int] = {}

    def reset_setup(self) -> None:
        """Forget what the drivers' initialisation cost (ring set-up, the first
        tail write or kick): the counters describe the data path only."""
        self.exits_total = self.exits_user = self.exit_ns = 0
        self.exits_by_reason = {}
        self.kicks = self.kicks_suppressed = 0

    # -- helpers used by every path ---------------------------------------
    def offer(self, t: int) -> None:
        self.offered += 1
        if self.first_offer_t < 0:
            self.first_offer_t = t

    def drop(self, reason: str) -> None:
        self.dropped += 1
        self.drops_by_reason[reason] = self.drops_by_reason.get(reason, 0) + 1

    def deliver(self, vm_name: str, size: int, t0: int, t: int, copies: int = 0) -> None:
        self.delivered += 1
        self.copies_delivered += copies
        self.bytes_delivered += size
        # LatencyHistogram.add, inlined: this runs once per packet
        h = self.latency
        v = t - t0
        if v < 0:
            v = 0
        b = v.bit_length()
        key = (((b - 7) << 8) | (v >> (b - 7))) if b > 7 else v
        c = h.counts
        c[key] = c.get(key, 0) + 1
        h.n += 1
        h.total += v
        if v > h.max:
            h.max = v
        if t > self.last_deliver_t:
            self.last_deliver_t = t
        d = self.delivered_by_vm
        d[vm_name] = d.get(vm_name, 0) + 1

    def copy(self, nbytes: int) -> None:
        self.copies += 1
        self.copy_bytes += nbytes

    # -- derived ------------------------------------------------------------
    def throughput_gbps(self) -> float:
        span = self.last_deliver_t - self.first_offer_t
        if self.delivered == 0 or span <= 0:
            return 0.0
        return self.bytes_delivered * 8 / span

    def per_packet(self, v: float) -> float:
        return v / self.delivered if self.delivered else 0.0

    def summary(self, technique: str, preset: str, seed: int, **extra: Any) -> dict[str, Any]:
        """The ``iovtui run --json`` object (keys fixed by DESIGN.md)."""
        out: dict[str, Any] = {
            "technique": technique,
            "preset": preset,
            "seed": seed,
            "packets": {"offered": self.offered, "delivered": self.delivered, "dropped": self.dropped,
                        "to_host": self.to_host},
            "exits": {
                "total": self.exits_total,
                "per_packet": round(self.per_packet(self.exits_total), 4),
                "by_reason": dict(sorted(self.exits_by_reason.items())),
                # where each exit was handled: inside KVM, or out in userspace QEMU
                "kernel": self.exits_total - self.exits_user,
                "userspace": self.exits_user,
            },
            "interrupts": {"injected": self.irq_injected, "posted": self.irq_posted,
                           "host": self.irq_host},
            # the copies of the packets delivered so far: exact mid-run too
            # (copies are made before delivery, so a count of all copies runs ahead)
            "copies_per_packet": round(self.per_packet(self.copies_delivered), 4),
            "throughput_gbps": round(self.throughput_gbps(), 4),
            "latency_ns": {"p50": self.latency.percentile(50), "p99": self.latency.percentile(99)},
            "iommu": {
                "translations": self.iommu_translations,
                "iotlb_hits": self.iotlb_hits,
                "iotlb_misses": self.iotlb_misses,
                "faults": self.iommu_faults,
            },
            "drops_by_reason": dict(sorted(self.drops_by_reason.items())),
            "notifications": {
                "kicks": self.kicks, "kicks_suppressed": self.kicks_suppressed,
                "device_notify": self.notify_sent, "device_notify_suppressed": self.notify_suppressed,
                "irq_coalesced": self.irq_coalesced,
            },
        }
        out.update(extra)
        return out
