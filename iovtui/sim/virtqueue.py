"""A virtio 1.x split virtqueue living in guest RAM, byte-exact.

Layout (little-endian; Linux ``include/uapi/linux/virtio_ring.h``), legacy
contiguous placement so that ``vring_size`` holds::

    desc[N]      16 B each, 16-byte aligned: u64 addr, u32 len, u16 flags, u16 next
    avail        u16 flags, u16 idx, u16 ring[N], u16 used_event
    (pad to the next 4096 boundary)
    used         u16 flags, u16 idx, {u32 id, u32 len} ring[N], u16 avail_event

Both sides act only through these bytes: the driver half (the guest's
virtio_ring.c) and the device half (QEMU's virtio.c / vhost) each keep only
their private shadow indexes, exactly like the real code.
"""

from __future__ import annotations

import struct

from .memory import GuestMemory, Region

__all__ = [
    "Virtqueue", "need_event", "vring_size",
    "VRING_DESC_F_NEXT", "VRING_DESC_F_WRITE", "VRING_DESC_F_INDIRECT",
    "VRING_AVAIL_F_NO_INTERRUPT", "VRING_USED_F_NO_NOTIFY", "VIRTIO_RING_F_EVENT_IDX",
    "VIRTIO_NET_HDR_LEN", "VIRTIO_NET_HDR_LEN_LEGACY", "DESC_SIZE", "VRING_ALIGN",
]

VRING_DESC_F_NEXT = 1
VRING_DESC_F_WRITE = 2
VRING_DESC_F_INDIRECT = 4
VRING_USED_F_NO_NOTIFY = 1
VRING_AVAIL_F_NO_INTERRUPT = 1
VIRTIO_RING_F_EVENT_IDX = 29
VIRTIO_NET_HDR_LEN = 12          # with VIRTIO_F_VERSION_1 or VIRTIO_NET_F_MRG_RXBUF
VIRTIO_NET_HDR_LEN_LEGACY = 10
DESC_SIZE = 16
VRING_ALIGN = 4096

_DESC = struct.Struct("<QIHH")
_U16 = struct.Struct("<H")
_USED_ELEM = struct.Struct("<II")


def need_event(event_idx: int, new_idx: int, old: int) -> bool:
    """``vring_need_event``: notify iff ``new`` moved past ``event_idx`` since ``old``."""
    return ((new_idx - event_idx - 1) & 0xFFFF) < ((new_idx - old) & 0xFFFF)


def vring_size(num: int, align: int = VRING_ALIGN) -> int:
    """Bytes of a legacy contiguous vring (``vring_size`` in virtio_ring.h)."""
    return (((DESC_SIZE * num + 2 * (3 + num)) + align - 1) & ~(align - 1)) + 2 * 3 + 8 * num


class Virtqueue:
    """One split virtqueue: its bytes in guest RAM plus both sides' shadows."""

    def __init__(self, mem: GuestMemory, name: str, num: int, event_idx: bool,
                 start_idx: int = 0) -> None:
        if num < 1 or num > 32768 or num & (num - 1):
            raise ValueError("queue size must be a power of two 1..32768")
        self.mem = mem
        self.name = name
        self.num = num
        self.event_idx = event_idx
        base = mem.alloc(vring_size(num), VRING_ALIGN, "desc", f"{name} vring")
        # split the one allocation into its three parts for the RAM view
        mem.regions.pop()
        self.desc = base
        self.avail = base + DESC_SIZE * num
        self.used = (self.avail + 2 * (3 + num) + VRING_ALIGN - 1) & ~(VRING_ALIGN - 1)
        mem.regions.append(Region(self.desc, DESC_SIZE * num, "desc", f"{name} descriptor table"))
        mem.regions.append(Region(self.avail, 2 * (3 + num), "avail", f"{name} avail ring"))
        mem.regions.append(Region(self.used, 6 + 8 * num, "used", f"{name} used ring"))
        self.used_event_addr = self.avail + 4 + 2 * num
        self.avail_event_addr = self.used + 4 + 8 * num
        # (addresses the per-buffer operations use, worked out once)
        self._avail_idx_addr = self.avail + 2
        self._avail_ring = self.avail + 4
        self._used_idx_addr = self.used + 2
        self._used_ring = self.used + 4
        self._mask = num - 1
        ram = mem.ram
        start_idx &= 0xFFFF
        # -- driver (guest) shadows: virtio_ring.c's vring_virtqueue ---------
        self.free_head = 0
        self.num_free = num
        self.avail_idx_shadow = start_idx
        self.avail_flags_shadow = 0
        self.num_added = 0
        self.last_used_idx = start_idx
        #: vring_interrupt saw work with EVENT_IDX: the device will not signal
        #: again until used_event moves, so disable_cb need not write it
        self.event_triggered = False
        self.tokens: list[object | None] = [None] * num
        # chain the free descriptors through their next fields, as Linux does
        for i in range(num):
            _DESC.pack_into(ram, self.desc + DESC_SIZE * i, 0, 0, 0, (i + 1) % num)
        _U16.pack_into(ram, self.avail + 2, start_idx)
        _U16.pack_into(ram, self.used + 2, start_idx)
        # -- device (host) shadows: QEMU VirtQueue / vhost_virtqueue ----------
        self.last_avail_idx = start_idx
        self.used_idx = start_idx
        self.signalled_used = start_idx
        self.signalled_used_valid = False
        #: the descriptor the last operation touched (for the ring view)
        self.last_touched = -1

    # ======================================================================
    # driver side (the guest)
    # ======================================================================
    def add_buf(self, gpa: int, length: int, device_writes: bool, token: object) -> int | None:
        """``virtqueue_add``: one descriptor, made available.  None when full."""
        if self.num_free == 0:
            return None
        ram = self.mem.ram
        head = self.free_head
        d = self.desc + DESC_SIZE * head
        nxt = _U16.unpack_from(ram, d + 14)[0]
        _DESC.pack_into(ram, d, gpa, length, VRING_DESC_F_WRITE if device_writes else 0, nxt)
        self.free_head = nxt
        self.num_free -= 1
        self.tokens[head] = token
        idx = self.avail_idx_shadow
        _U16.pack_into(ram, self._avail_ring + 2 * (idx & self._mask), head)
        idx = (idx + 1) & 0xFFFF
        self.avail_idx_shadow = idx
        _U16.pack_into(ram, self._avail_idx_addr, idx)   # publish (after a write barrier)
        self.num_added += 1
        self.last_touched = head
        return head

    def kick_prepare(self) -> bool:
        """``virtqueue_kick_prepare``: must the driver notify the device?"""
        new = self.avail_idx_shadow
        old = (new - self.num_added) & 0xFFFF
        self.num_added = 0
        ram = self.mem.ram
        if self.event_idx:
            return need_event(_U16.unpack_from(ram, self.avail_event_addr)[0], new, old)
        return not (_U16.unpack_from(ram, self.used)[0] & VRING_USED_F_NO_NOTIFY)

    def more_used(self) -> bool:
        return self.last_used_idx != _U16.unpack_from(self.mem.ram, self.used + 2)[0]

    def get_buf(self) -> tuple[object, int, int] | None:
        """``virtqueue_get_buf``: ``(token, len, desc id)`` of the next used buffer."""
        ram = self.mem.ram
        last = self.last_used_idx
        if last == _U16.unpack_from(ram, self._used_idx_addr)[0]:
            return None
        head, length = _USED_ELEM.unpack_from(ram, self._used_ring + 8 * (last & self._mask))
        tokens = self.tokens
        token = tokens[head]
        tokens[head] = None
        # return the descriptor to the free list
        _U16.pack_into(ram, self.desc + DESC_SIZE * head + 14, self.free_head)
        self.free_head = head
        self.num_free += 1
        last = self.last_used_idx = (last + 1) & 0xFFFF
        if self.event_idx and not (self.avail_flags_shadow & VRING_AVAIL_F_NO_INTERRUPT):
            _U16.pack_into(ram, self.used_event_addr, last)
        self.last_touched = head
        return token, length, head

    def interrupt(self) -> bool:
        """``vring_interrupt``: False (IRQ_NONE) when no used buffer is
        pending; else the callback runs, and with EVENT_IDX the driver notes
        that the device has triggered (``event_triggered``)."""
        if self.last_used_idx == _U16.unpack_from(self.mem.ram, self.used + 2)[0]:
            return False
        if self.event_idx:
            self.event_triggered = True
        return True

    def disable_cb(self) -> None:
        """``virtqueue_disable_cb_split`` (Linux 6.1.y, with "virtio_ring:
        don't update event idx on get_buf"): ask the device not to interrupt.
        After a device-triggered event only the shadow flag is set (get_buf
        stops moving used_event); otherwise used_event = 0 / avail.flags."""
        if not self.avail_flags_shadow & VRING_AVAIL_F_NO_INTERRUPT:
            self.avail_flags_shadow |= VRING_AVAIL_F_NO_INTERRUPT
            if self.event_triggered:
                return
            if self.event_idx:
                # Linux writes 0 to used_event here ("a hack"): a far-away event index
                _U16.pack_into(self.mem.ram, self.used_event_addr, 0)
            else:
                _U16.pack_into(self.mem.ram, self.avail, self.avail_flags_shadow)

    def enable_cb_prepare(self) -> int:
        """``virtqueue_enable_cb_prepare``: interrupts on again, from last_used_idx."""
        self.event_triggered = False
        if self.avail_flags_shadow & VRING_AVAIL_F_NO_INTERRUPT:
            self.avail_flags_shadow &= ~VRING_AVAIL_F_NO_INTERRUPT
            if not self.event_idx:
                _U16.pack_into(self.mem.ram, self.avail, self.avail_flags_shadow)
        _U16.pack_into(self.mem.ram, self.used_event_addr, self.last_used_idx)
        return self.last_used_idx

    def enable_cb_delayed(self) -> bool:
        """``virtqueue_enable_cb_delayed``: interrupt after ~3/4 of the
        outstanding buffers are used.  False if enough are used already."""
        self.event_triggered = False
        if self.avail_flags_shadow & VRING_AVAIL_F_NO_INTERRUPT:
            self.avail_flags_shadow &= ~VRING_AVAIL_F_NO_INTERRUPT
            if not self.event_idx:
                _U16.pack_into(self.mem.ram, self.avail, self.avail_flags_shadow)
        bufs = ((self.avail_idx_shadow - self.last_used_idx) & 0xFFFF) * 3 // 4
        _U16.pack_into(self.mem.ram, self.used_event_addr, (self.last_used_idx + bufs) & 0xFFFF)
        used = _U16.unpack_from(self.mem.ram, self.used + 2)[0]
        return not ((used - self.last_used_idx) & 0xFFFF) > bufs

    # ======================================================================
    # device side (QEMU's virtio-net or vhost-net)
    # ======================================================================
    def avail_pending(self) -> int:
        return (_U16.unpack_from(self.mem.ram, self._avail_idx_addr)[0] - self.last_avail_idx) & 0xFFFF

    def pop(self) -> tuple[int, int, int, int] | None:
        """``virtqueue_pop``: ``(head, addr, len, flags)`` of the next available
        buffer (one descriptor; chains are followed for the total length)."""
        ram = self.mem.ram
        last = self.last_avail_idx
        if _U16.unpack_from(ram, self._avail_idx_addr)[0] == last:
            return None
        head = _U16.unpack_from(ram, self._avail_ring + 2 * (last & self._mask))[0]
        self.last_avail_idx = (last + 1) & 0xFFFF
        addr, length, flags, nxt = _DESC.unpack_from(ram, self.desc + DESC_SIZE * head)
        hops = 0
        while flags & VRING_DESC_F_NEXT and hops < self.num:
            _a, ln, flags, nxt = _DESC.unpack_from(ram, self.desc + DESC_SIZE * nxt)
            length += ln
            hops += 1
        self.last_touched = head
        return head, addr, length, flags

    def push(self, head: int, written: int) -> None:
        """``virtqueue_fill`` + ``virtqueue_flush``: one used element, published."""
        ram = self.mem.ram
        _USED_ELEM.pack_into(ram, self.used + 4 + 8 * (self.used_idx % self.num), head, written)
        self.used_idx = (self.used_idx + 1) & 0xFFFF
        _U16.pack_into(ram, self.used + 2, self.used_idx)
        self.last_touched = head

    def push_n(self, heads: list) -> None:
        """``vhost_add_used_n``: write ``(head, len)`` used elements, then
        publish used.idx once (after a write barrier).  If the index moved
        past ``signalled_used`` meanwhile (a wrap), that value is stale and the
        next ``should_notify`` signals unconditionally (``__vhost_add_used_n``)."""
        ram = self.mem.ram
        mask = self._mask
        base = self._used_ring
        pack = _USED_ELEM.pack_into
        old = idx = self.used_idx
        for head, written in heads:
            pack(ram, base + 8 * (idx & mask), head, written)
            idx = (idx + 1) & 0xFFFF
        self.used_idx = idx
        _U16.pack_into(ram, self._used_idx_addr, idx)
        if ((idx - self.signalled_used) & 0xFFFF) < ((idx - old) & 0xFFFF):
            self.signalled_used_valid = False
        if heads:
            self.last_touched = heads[-1][0]

    def should_notify(self) -> bool:
        """``virtio_should_notify`` (QEMU) / ``vhost_notify``: interrupt the driver?"""
        ram = self.mem.ram
        if not self.event_idx:
            return not (_U16.unpack_from(ram, self.avail)[0] & VRING_AVAIL_F_NO_INTERRUPT)
        old = self.signalled_used
        valid = self.signalled_used_valid
        new = self.signalled_used = self.used_idx
        self.signalled_used_valid = True
        return not valid or need_event(_U16.unpack_from(ram, self.used_event_addr)[0], new, old)

    def disable_notify(self) -> None:
        """The device is busy polling the ring: no kicks needed."""
        if not self.event_idx:
            _U16.pack_into(self.mem.ram, self.used, VRING_USED_F_NO_NOTIFY)

    def enable_notify(self) -> bool:
        """The device goes idle: ask for a kick at the next buffer.  Returns
        True if buffers arrived meanwhile (then the device keeps going)."""
        ram = self.mem.ram
        if self.event_idx:
            _U16.pack_into(ram, self.avail_event_addr, _U16.unpack_from(ram, self.avail + 2)[0])
        else:
            _U16.pack_into(ram, self.used, 0)
        return self.avail_pending() > 0

    # ======================================================================
    # reading (views, tests, dumps)
    # ======================================================================
    def read_desc(self, i: int) -> tuple[int, int, int, int]:
        return _DESC.unpack_from(self.mem.ram, self.desc + DESC_SIZE * i)

    def avail_flags(self) -> int:
        return _U16.unpack_from(self.mem.ram, self.avail)[0]

    def avail_idx(self) -> int:
        return _U16.unpack_from(self.mem.ram, self.avail + 2)[0]

    def used_flags(self) -> int:
        return _U16.unpack_from(self.mem.ram, self.used)[0]

    def used_idx_ram(self) -> int:
        return _U16.unpack_from(self.mem.ram, self.used + 2)[0]

    def used_event(self) -> int:
        return _U16.unpack_from(self.mem.ram, self.used_event_addr)[0]

    def avail_event(self) -> int:
        return _U16.unpack_from(self.mem.ram, self.avail_event_addr)[0]

    def owner(self, i: int) -> str:
        """A descriptor belongs to the device from add_buf until get_buf."""
        return "device" if self.tokens[i] is not None else "driver"

    # -- narration in this ring's own terms (the virtio path's trace text) ---------------
    def row(self, head: int) -> int:
        return head

    def avail_text(self) -> str:
        return f"avail.idx = {self.avail_idx_shadow}"

    def event_text(self) -> str:
        return f"used_event = {self.used_event()}"

    def empty_text(self) -> str:
        return f"avail.idx = last_avail_idx = {self.last_avail_idx}"

    def pop_text(self, head: int) -> str:
        return f"pops avail[{(self.last_avail_idx - 1) & 0xFFFF}] → desc {head}"

    def take_text(self, head: int) -> str:
        return f"takes used[{(self.last_used_idx - 1) & 0xFFFF}] → desc {head}"

    def used_text(self) -> str:
        return f"used.idx → {self.used_idx}"

    def no_kick_text(self) -> str:
        return f"avail_event = {self.avail_event()} not crossed" if self.event_idx else "device set NO_NOTIFY"

    def no_irq_text(self) -> str:
        return f"used_event = {self.used_event()} not crossed" if self.event_idx else "driver set NO_INTERRUPT"
