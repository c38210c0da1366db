"""Cache lines of ring memory written: what the packed ring is for.

The split ring's three areas (descriptor table, avail ring, used ring) put
what the driver writes and what the device writes on different cache lines;
the packed ring writes the descriptor itself both ways.  A ``LineCounter``
counts the distinct 64-byte lines a ring's writes touch, one set per burst
(one side's writes at one instant of virtual time), summed over the run.

``PackedVirtqueue`` notes its own writes.  ``CountingVirtqueue`` is the split
``Virtqueue`` noting the addresses each of its methods writes (the same
fields its docstrings name), used only when counting is asked for
(``virtio.count_ring_lines``), so the split ring's hot path is untouched
otherwise.
"""

from __future__ import annotations

from .virtqueue import DESC_SIZE, VRING_AVAIL_F_NO_INTERRUPT, Virtqueue

__all__ = ["LineCounter", "CountingVirtqueue", "CACHE_LINE"]

CACHE_LINE = 64


class LineCounter:
    """Distinct 64-byte lines of ring memory written, one set per burst: the
    writes one side (driver 0, device 1) makes at one instant of virtual time
    (one engine action or the steps it takes in place).  ``count()`` sums the
    bursts, so a line the driver writes and the device then writes counts
    twice (it moves between their caches), and four packed descriptors in
    one line written in one refill count once."""

    __slots__ = ("clock", "stamps", "opens", "total")

    def __init__(self, clock) -> None:
        self.clock = clock              # anything with ``now`` and ``events_run`` (the Engine)
        self.stamps = [None, None]
        self.opens: list[set[int]] = [set(), set()]
        self.total = 0

    def note(self, addr: int, size: int, side: int) -> None:
        c = self.clock
        s = (c.now, c.events_run)
        lines = self.opens[side]
        if s != self.stamps[side]:
            self.total += len(lines)
            lines.clear()
            self.stamps[side] = s
        first = addr >> 6
        lines.add(first)
        last = (addr + size - 1) >> 6
        if last != first:
            lines.update(range(first + 1, last + 1))

    def count(self) -> int:
        return self.total + len(self.opens[0]) + len(self.opens[1])

    def reset(self) -> None:
        self.stamps = [None, None]
        for s in self.opens:
            s.clear()
        self.total = 0


class CountingVirtqueue(Virtqueue):
    """A split virtqueue whose writes to ring memory are counted (``lines``)."""

    def __init__(self, *args, lines: LineCounter, **kw) -> None:
        super().__init__(*args, **kw)
        self.lines = lines

    def add_buf(self, gpa, length, device_writes, token):
        head = self.free_head
        idx = self.avail_idx_shadow
        got = super().add_buf(gpa, length, device_writes, token)
        if got is not None:
            note = self.lines.note
            note(self.desc + DESC_SIZE * head, DESC_SIZE, 0)              # the descriptor
            note(self.avail + 4 + 2 * (idx % self.num), 2, 0)             # avail.ring[idx]
            note(self.avail + 2, 2, 0)                                    # avail.idx
        return got

    def get_buf(self):
        got = super().get_buf()
        if got is not None:
            self.lines.note(self.desc + DESC_SIZE * got[2] + 14, 2, 0)   # next: back on the free list
            if self.event_idx and not (self.avail_flags_shadow & VRING_AVAIL_F_NO_INTERRUPT):
                self.lines.note(self.used_event_addr, 2, 0)
        return got

    def disable_cb(self):
        writes = not self.avail_flags_shadow & VRING_AVAIL_F_NO_INTERRUPT and not self.event_triggered
        super().disable_cb()
        if writes:
            self.lines.note(self.used_event_addr if self.event_idx else self.avail, 2, 0)

    def _enable(self, method):
        flags = bool(self.avail_flags_shadow & VRING_AVAIL_F_NO_INTERRUPT) and not self.event_idx
        got = method()
        if flags:
            self.lines.note(self.avail, 2, 0)
        self.lines.note(self.used_event_addr, 2, 0)
        return got

    def enable_cb_prepare(self):
        return self._enable(super().enable_cb_prepare)

    def enable_cb_delayed(self):
        return self._enable(super().enable_cb_delayed)

    def push(self, head, written):
        slot = self.used_idx % self.num
        super().push(head, written)
        self.lines.note(self.used + 4 + 8 * slot, 8, 1)
        self.lines.note(self.used + 2, 2, 1)

    def push_n(self, heads):
        idx = self.used_idx
        super().push_n(heads)
        note = self.lines.note
        for k in range(len(heads)):
            note(self.used + 4 + 8 * ((idx + k) % self.num), 8, 1)
        note(self.used + 2, 2, 1)

    def disable_notify(self):
        super().disable_notify()
        if not self.event_idx:
            self.lines.note(self.used, 2, 1)

    def enable_notify(self):
        got = super().enable_notify()
        self.lines.note(self.avail_event_addr if self.event_idx else self.used, 2, 1)
        return got
