"""Counters every technique fills in the same way, and the JSON summary.

Latency percentiles are exact (nearest rank) while a run's latencies take
fewer than 8,192 distinct values, then ±0.4 % buckets, so memory stays flat
however many packets a run has.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Metrics", "LatencyHistogram"]


class LatencyHistogram:
    """Latencies with exact percentiles while memory allows.

    Each distinct value is counted exactly (a run's latencies take far fewer
    distinct values than packets) until ``EXACT_LIMIT`` distinct values are
    seen; then the counts fold into buckets that keep the top
    ``BUCKET_BITS`` significant bits (±0.4 %), so memory stays flat over any
    number of packets.  A percentile is the nearest-rank sample (exact), or
    its bucket's middle clamped to [min, max] (folded), and the summary says
    which."""

    __slots__ = ("counts", "n", "folded", "_min", "_max")

    EXACT_LIMIT = 8192
    BUCKET_BITS = 8

    def __init__(self) -> None:
        self.counts: dict[int, int] = {}
        self.n = 0
        self.folded = False
        # the extremes, tracked from the fold on (until then the counts' keys are the values)
        self._min = -1
        self._max = 0

    def add(self, v: int) -> None:
        if v < 0:
            v = 0
        c = self.counts
        self.n += 1
        if self.folded:
            if v > self._max:
                self._max = v
            if self._min < 0 or v < self._min:
                self._min = v
            v2 = self.bucket(v)
            c[v2] = c.get(v2, 0) + 1
        else:
            c[v] = c.get(v, 0) + 1
            if len(c) > self.EXACT_LIMIT:
                self.fold()

    @property
    def max(self) -> int:
        if self.folded:
            return self._max
        return max(self.counts) if self.counts else 0

    @property
    def min(self) -> int:
        """The smallest value added (-1 before any)."""
        if self.folded:
            return self._min
        return min(self.counts) if self.counts else -1

    @classmethod
    def bucket(cls, v: int) -> int:
        """The lowest value of ``v``'s bucket (the top BUCKET_BITS bits kept)."""
        s = v.bit_length() - cls.BUCKET_BITS
        return (v >> s) << s if s > 0 else v

    def fold(self) -> None:
        if not self.folded and self.counts:
            # the exact extremes, before the values go into buckets
            self._min, self._max = min(self.counts), max(self.counts)
        out: dict[int, int] = {}
        for v, k in self.counts.items():
            b = self.bucket(v)
            out[b] = out.get(b, 0) + k
        self.counts = out
        self.folded = True

    def percentile(self, p: float) -> int:
        """Nearest-rank percentile (never outside [min, max])."""
        if not self.n:
            return 0
        lo, hi = self.min, self.max
        rank = max(1, -(-int(p * self.n) // 100))   # ceil(p/100 · n)
        seen = 0
        for v in sorted(self.counts):
            seen += self.counts[v]
            if seen >= rank:
                if self.folded:
                    s = v.bit_length() - self.BUCKET_BITS
                    v += (1 << (s - 1)) if s > 0 else 0
                return min(max(v, lo), hi)
        return hi

    @property
    def precision(self) -> str:
        return "±0.4 %" if self.folded else "exact"


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
        self.setup_exits = 0         # exits of the drivers' set-up (ring set-up, first tail write or kick)
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
        #: what the set-up cost, said in the summary (the rule: set-up is not counted)
        self.setup_exits = self.exits_total
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
        self.latency.add(t - t0)
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
                # the drivers' set-up exits (ring set-up, first tail write / kick): not counted above
                "setup_not_counted": self.setup_exits,
            },
            "interrupts": {"injected": self.irq_injected, "posted": self.irq_posted,
                           "host": self.irq_host},
            # the copies of the packets delivered so far: exact mid-run too
            # (copies are made before delivery, so a count of all copies runs ahead)
            "copies_per_packet": round(self.per_packet(self.copies_delivered), 4),
            "throughput_gbps": round(self.throughput_gbps(), 4),
            "latency_ns": {"p50": self.latency.percentile(50), "p99": self.latency.percentile(99),
                           "min": max(self.latency.min, 0), "max": self.latency.max,
                           "precision": self.latency.precision},
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
