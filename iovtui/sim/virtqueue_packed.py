"""A virtio 1.1 packed virtqueue living in guest RAM, byte-exact.

Layout (little-endian; Linux ``include/uapi/linux/virtio_ring.h``, virtio 1.1
section 2.7 "Packed Virtqueues"), three areas as ``vring_alloc_queue_packed``
allocates them::

    desc[N]          16 B each: u64 addr, u32 len, u16 id, u16 flags   (struct vring_packed_desc)
    driver event     u16 off_wrap, u16 flags   (struct vring_packed_desc_event; the driver writes it)
    device event     u16 off_wrap, u16 flags   (the device writes it)

One ring replaces the split ring's descriptor table, avail ring and used
ring: the driver makes a descriptor available by writing it at its next slot
with AVAIL (bit 7) = its avail wrap counter and USED (bit 15) = the inverse;
the device marks it used by writing id and len back into the slot it reads
next, with AVAIL = USED = its used wrap counter.  Each side's wrap counter
starts at 1 and flips each time its index passes the end of the ring, so a
slot's two bits say whose it is without any index in RAM.  Buffer ids are
the driver's own (a free-id list kept in driver memory, ``desc_extra``), so
they need not match slots and may come back in any order.

Notification suppression is in the two event areas: flags ENABLE (0),
DISABLE (1) or DESC (2, with VIRTIO_RING_F_EVENT_IDX: notify when the other
side reaches the slot/wrap in ``off_wrap``).

The driver half mirrors Linux ``drivers/virtio/virtio_ring.c`` (6.1,
``virtqueue_add_packed`` … ``detach_buf_packed``); the device half QEMU's
``hw/virtio/virtio.c`` (``virtqueue_packed_pop``, ``virtqueue_packed_flush``,
``virtio_packed_should_notify``, ``virtio_queue_packed_set_notification``).
Both sides act only through these bytes and their private shadows.
"""

from __future__ import annotations

import struct

from .memory import GuestMemory
from .ringlines import LineCounter
from .views import RingView

__all__ = ["PackedVirtqueue", "LineCounter", "packed_need_event",
           "VRING_PACKED_DESC_F_AVAIL", "VRING_PACKED_DESC_F_USED", "VRING_PACKED_EVENT_F_WRAP_CTR",
           "VRING_PACKED_EVENT_FLAG_ENABLE", "VRING_PACKED_EVENT_FLAG_DISABLE", "VRING_PACKED_EVENT_FLAG_DESC",
           "VIRTIO_F_RING_PACKED", "PACKED_DESC_SIZE", "EVENT_NAMES"]

VIRTIO_F_RING_PACKED = 34
VRING_PACKED_DESC_F_AVAIL = 7          # bit numbers, as the header defines them
VRING_PACKED_DESC_F_USED = 15
VRING_PACKED_EVENT_F_WRAP_CTR = 15
VRING_PACKED_EVENT_FLAG_ENABLE = 0x0
VRING_PACKED_EVENT_FLAG_DISABLE = 0x1
VRING_PACKED_EVENT_FLAG_DESC = 0x2
VRING_DESC_F_WRITE = 2
PACKED_DESC_SIZE = 16
EVENT_NAMES = {0: "ENABLE", 1: "DISABLE", 2: "DESC"}

_AVAIL = 1 << VRING_PACKED_DESC_F_AVAIL
_USED = 1 << VRING_PACKED_DESC_F_USED
_WRAP = 1 << VRING_PACKED_EVENT_F_WRAP_CTR
_DESC = struct.Struct("<QIHH")          # addr, len, id, flags
_IDLEN = struct.Struct("<IH")           # len, id (what the device writes back, then flags)
_U16 = struct.Struct("<H")
_EVENT = struct.Struct("<HH")           # off_wrap, flags


def packed_need_event(num: int, wrap: int, off_wrap: int, new: int, old: int) -> bool:
    """``vring_packed_need_event`` (QEMU) / the same test in
    ``virtqueue_kick_prepare_packed``: the event offset is in the other
    side's lap when its wrap bit differs, so it counts ``num`` slots back."""
    off = off_wrap & ~_WRAP
    if wrap != off_wrap >> VRING_PACKED_EVENT_F_WRAP_CTR:
        off -= num
    return ((new - off - 1) & 0xFFFF) < ((new - old) & 0xFFFF)


class PackedVirtqueue:
    """One packed virtqueue: its bytes in guest RAM plus both sides' shadows.

    The methods are those the virtio path calls on the split ``Virtqueue``,
    with the packed ring's rules behind them."""

    packed = True
    kind = "virtio-packed"

    def __init__(self, mem: GuestMemory, name: str, num: int, event_idx: bool,
                 start_idx: int = 0) -> None:
        if not 1 <= num <= 32768:
            raise ValueError("packed queue size must be 1..32768")
        self.mem = mem
        self.name = name
        self.num = num
        self.event_idx = event_idx
        # vring_alloc_queue_packed: three DMA allocations (ring, driver area, device area)
        self.desc = mem.alloc(PACKED_DESC_SIZE * num, 4096, "desc", f"{name} packed descriptor ring")
        self.driver_event = mem.alloc(4, 64, "drv_event", f"{name} driver event suppression")
        self.device_event = mem.alloc(4, 64, "dev_event", f"{name} device event suppression")
        # the names the split ring's users read (layout, RAM view): the areas the driver / device write
        self.avail = self.driver_event
        self.used = self.device_event
        #: optional: the run's Trace, the engine and the VM's name (narration of bit flips)
        self.trace = None
        self.clock = None
        self.vm = ""
        #: optional LineCounter of this ring's writes (None: not counting)
        self.lines: LineCounter | None = None
        start = start_idx % num
        # -- driver (guest) shadows: virtqueue_vring_init_packed ---------------
        self.next_avail_idx = start
        self.avail_wrap_counter = 1
        self.avail_used_flags = _AVAIL          # AVAIL = 1, USED = 0 while the wrap counter is 1
        self.last_used = start                  # packed_last_used(vq->last_used_idx)
        self.used_wrap_counter = 1
        self.event_flags_shadow = VRING_PACKED_EVENT_FLAG_ENABLE
        self.event_triggered = False
        self.num_added = 0
        self.num_free = num
        self.free_head = 0
        self.next_free = list(range(1, num + 1))   # desc_extra[id].next: the free-id list
        self.tokens: list[object | None] = [None] * num   # desc_state[id].data
        self.id_slot: list[int] = [-1] * num    # the slot each id was last made available in (views, follow)
        # -- device (host) shadows: QEMU's VirtQueue ----------------------------
        self.last_avail_idx = start
        self.last_avail_wrap_counter = 1
        self.used_idx = start
        self.dev_used_wrap_counter = 1
        self.signalled_used = start
        self.signalled_used_valid = False
        self.dev_event_flags = VRING_PACKED_EVENT_FLAG_ENABLE
        #: how far the device has read the flags ahead (QEMU's shadow_avail_idx / wrap counter):
        #: ``_seen`` slots from last_avail_idx on are known available (only the device takes them back)
        self._scan_idx = start
        self._scan_wrap = 1
        self._seen = 0
        #: the slot the last operation touched (for the ring view)
        self.last_touched = -1
        self._burst = ""                         # the narration of a run of add_buf calls

    # -- narration -------------------------------------------------------------------
    def _tell(self, stage: int, msg: str, **data) -> None:
        tr = self.trace
        tr.emit(self.clock.now, "ring", self.vm, stage, msg, queue=self.name, ring="packed", **data)

    def _narrating(self) -> bool:
        tr = self.trace
        return tr is not None and tr.on

    # ======================================================================
    # driver side (the guest): Linux virtio_ring.c
    # ======================================================================
    def add_buf(self, gpa: int, length: int, device_writes: bool, token: object) -> int | None:
        """``virtqueue_add_packed`` (one descriptor): write addr, len, id at
        the next slot, then (after a write barrier) flags with AVAIL/USED
        from the avail wrap counter.  Returns the buffer id; None when full."""
        if self.num_free == 0:
            return None
        ram = self.mem.ram
        head = self.next_avail_idx
        bid = self.free_head
        flags = (VRING_DESC_F_WRITE if device_writes else 0) | self.avail_used_flags
        d = self.desc + PACKED_DESC_SIZE * head
        _DESC.pack_into(ram, d, gpa, length, bid, flags)
        if self.lines is not None:
            self.lines.note(d, PACKED_DESC_SIZE, 0)
        self.num_free -= 1
        self.free_head = self.next_free[bid]
        self.tokens[bid] = token
        self.id_slot[bid] = head
        self.num_added += 1
        self.last_touched = head
        i = head + 1
        wrapped = i >= self.num
        if wrapped:
            i = 0
            self.avail_wrap_counter ^= 1
            self.avail_used_flags ^= _AVAIL | _USED
        self.next_avail_idx = i
        if self.trace is not None and self.trace.on:
            w = 1 if flags & _AVAIL else 0
            if self._burst != "add" or wrapped:
                self._tell(1, f"{self.vm}'s driver writes {self.name} slot {head} (id {bid}, {length:,} B"
                              f"{', WRITE' if device_writes else ''}) with AVAIL = {w}, USED = {1 - w}: its avail "
                              f"wrap counter is {w}, so AVAIL ≠ USED and AVAIL = the device's wrap counter "
                              f"→ the device's" + (f" · slot {self.num - 1} was the last: the driver's avail "
                                                   f"wrap counter flips {w} → {1 - w}" if wrapped else ""),
                           slot=head, id=bid, avail_bit=w, used_bit=1 - w, wrap=self.avail_wrap_counter)
            self._burst = "add"
        return bid

    def kick_prepare(self) -> bool:
        """``virtqueue_kick_prepare_packed``: read the device event area."""
        self._burst = ""
        new = self.next_avail_idx
        old = new - self.num_added
        self.num_added = 0
        off_wrap, flags = _EVENT.unpack_from(self.mem.ram, self.device_event)
        if flags != VRING_PACKED_EVENT_FLAG_DESC:
            return flags != VRING_PACKED_EVENT_FLAG_DISABLE
        event_idx = off_wrap & ~_WRAP
        if (off_wrap >> VRING_PACKED_EVENT_F_WRAP_CTR) != self.avail_wrap_counter:
            event_idx -= self.num
        return ((new - event_idx - 1) & 0xFFFF) < ((new - old) & 0xFFFF)

    def _is_used(self, slot: int, wrap: int) -> bool:
        """``is_used_desc_packed``: AVAIL == USED == the used wrap counter."""
        flags = _U16.unpack_from(self.mem.ram, self.desc + PACKED_DESC_SIZE * slot + 14)[0]
        avail = 1 if flags & _AVAIL else 0
        return avail == (1 if flags & _USED else 0) and avail == wrap

    def more_used(self) -> bool:
        return self._is_used(self.last_used, self.used_wrap_counter)

    def get_buf(self) -> tuple[object, int, int] | None:
        """``virtqueue_get_buf_ctx_packed`` + ``detach_buf_packed``: the id and
        len the device wrote into the next slot; the id goes back on the free
        list (driver memory: nothing is written to the ring).  With the DESC
        event mode the driver event's off_wrap follows last_used."""
        self._burst = ""
        slot = self.last_used
        if not self._is_used(slot, self.used_wrap_counter):
            return None
        ram = self.mem.ram
        d = self.desc + PACKED_DESC_SIZE * slot
        length, bid = _IDLEN.unpack_from(ram, d + 8)
        token = self.tokens[bid]
        self.tokens[bid] = None
        self.next_free[bid] = self.free_head
        self.free_head = bid
        self.num_free += 1
        slot += 1
        wrapped = slot >= self.num
        if wrapped:
            slot -= self.num
            self.used_wrap_counter ^= 1
        self.last_used = slot
        if self.event_flags_shadow == VRING_PACKED_EVENT_FLAG_DESC:
            _U16.pack_into(ram, self.driver_event, slot | self.used_wrap_counter << VRING_PACKED_EVENT_F_WRAP_CTR)
            if self.lines is not None:
                self.lines.note(self.driver_event, 2, 0)
        self.last_touched = (slot - 1) % self.num
        if wrapped and self.trace is not None and self.trace.on:
            w = self.used_wrap_counter
            self._tell(6, f"{self.vm}'s driver took the used buffer in {self.name} slot {self.num - 1}, the last: "
                          f"its used wrap counter flips {1 - w} → {w}; from slot 0 a used descriptor has "
                          f"AVAIL = USED = {w}", wrap=w)
        return token, length, bid

    def interrupt(self) -> bool:
        """``vring_interrupt``: IRQ_NONE when nothing is used."""
        if not self.more_used():
            return False
        if self.event_idx:
            self.event_triggered = True
        return True

    def _write_driver_flags(self, new: int) -> None:
        old = _U16.unpack_from(self.mem.ram, self.driver_event + 2)[0]
        _U16.pack_into(self.mem.ram, self.driver_event + 2, new)
        if self.lines is not None:
            self.lines.note(self.driver_event + 2, 2, 0)
        if old != new and self.trace is not None and self.trace.on:
            off = _U16.unpack_from(self.mem.ram, self.driver_event)[0]
            why = {VRING_PACKED_EVENT_FLAG_DISABLE: "no interrupts, whatever the device completes",
                   VRING_PACKED_EVENT_FLAG_ENABLE: "an interrupt for every used buffer",
                   VRING_PACKED_EVENT_FLAG_DESC: f"an interrupt once the device marks slot {off & ~_WRAP} used "
                                                 f"in its lap with wrap {off >> 15}"}[new]
            self._tell(6, f"{self.vm}'s driver sets the {self.name} driver event flags {EVENT_NAMES[old]} → "
                          f"{EVENT_NAMES[new]}: {why}", driver_event=EVENT_NAMES[new])

    def disable_cb(self) -> None:
        """``virtqueue_disable_cb_packed`` (6.1): flags = DISABLE, unless the
        device already triggered (then it will not again: shadow only)."""
        self._burst = ""
        if self.event_flags_shadow != VRING_PACKED_EVENT_FLAG_DISABLE:
            self.event_flags_shadow = VRING_PACKED_EVENT_FLAG_DISABLE
            if self.event_triggered:
                return
            self._write_driver_flags(VRING_PACKED_EVENT_FLAG_DISABLE)

    def _off_wrap_used(self) -> int:
        return self.last_used | self.used_wrap_counter << VRING_PACKED_EVENT_F_WRAP_CTR

    def enable_cb_prepare(self) -> int:
        """``virtqueue_enable_cb_prepare_packed``: off_wrap = last_used (with
        EVENT_IDX), flags ENABLE or DESC; returns last_used with its wrap bit."""
        self._burst = ""
        self.event_triggered = False
        ram = self.mem.ram
        if self.event_idx:
            _U16.pack_into(ram, self.driver_event, self._off_wrap_used())
            if self.lines is not None:
                self.lines.note(self.driver_event, 2, 0)
        if self.event_flags_shadow == VRING_PACKED_EVENT_FLAG_DISABLE:
            self.event_flags_shadow = (VRING_PACKED_EVENT_FLAG_DESC if self.event_idx
                                       else VRING_PACKED_EVENT_FLAG_ENABLE)
            self._write_driver_flags(self.event_flags_shadow)
        return self._off_wrap_used()

    def enable_cb_delayed(self) -> bool:
        """``virtqueue_enable_cb_delayed_packed``: the event at 3/4 of the
        outstanding buffers; False if the next one is used already."""
        self._burst = ""
        self.event_triggered = False
        ram = self.mem.ram
        if self.event_idx:
            bufs = (self.num - self.num_free) * 3 // 4
            wrap = self.used_wrap_counter
            used_idx = self.last_used + bufs
            if used_idx >= self.num:
                used_idx -= self.num
                wrap ^= 1
            _U16.pack_into(ram, self.driver_event, used_idx | wrap << VRING_PACKED_EVENT_F_WRAP_CTR)
            if self.lines is not None:
                self.lines.note(self.driver_event, 2, 0)
        if self.event_flags_shadow == VRING_PACKED_EVENT_FLAG_DISABLE:
            self.event_flags_shadow = (VRING_PACKED_EVENT_FLAG_DESC if self.event_idx
                                       else VRING_PACKED_EVENT_FLAG_ENABLE)
            self._write_driver_flags(self.event_flags_shadow)
        return not self.more_used()

    # ======================================================================
    # device side (QEMU's virtio.c; vhost alike)
    # ======================================================================
    def _is_avail(self, slot: int, wrap: int) -> bool:
        """``is_desc_avail``: AVAIL ≠ USED and AVAIL == the device's wrap counter."""
        flags = _U16.unpack_from(self.mem.ram, self.desc + PACKED_DESC_SIZE * slot + 14)[0]
        avail = 1 if flags & _AVAIL else 0
        return avail != (1 if flags & _USED else 0) and avail == wrap

    def avail_pending(self) -> int:
        """Available descriptors from last_avail_idx on: the device reads the
        flags slot by slot (there is no index to read), going on from where it
        read before (``shadow_avail_idx``: what it saw available stays so)."""
        n = self._seen
        slot, wrap = self._scan_idx, self._scan_wrap
        num = self.num
        while n < num and self._is_avail(slot, wrap):
            n += 1
            slot += 1
            if slot >= num:
                slot = 0
                wrap ^= 1
        self._seen, self._scan_idx, self._scan_wrap = n, slot, wrap
        return n

    def pop(self) -> tuple[int, int, int, int] | None:
        """``virtqueue_packed_pop``: ``(id, addr, len, flags)`` of the next
        available descriptor (one per buffer: the model never chains)."""
        self._burst = ""
        slot = self.last_avail_idx
        if not self._is_avail(slot, self.last_avail_wrap_counter):
            return None
        addr, length, bid, flags = _DESC.unpack_from(self.mem.ram, self.desc + PACKED_DESC_SIZE * slot)
        slot += 1
        if slot >= self.num:
            slot = 0
            self.last_avail_wrap_counter ^= 1
        self.last_avail_idx = slot
        if self._seen:
            self._seen -= 1
        else:                                   # read past what it had seen: the cursor moves along
            self._scan_idx, self._scan_wrap = slot, self.last_avail_wrap_counter
        self.last_touched = (slot - 1) % self.num
        return bid, addr, length, flags

    def _fill_desc(self, ram, slot: int, wrap: int, bid: int, written: int) -> None:
        """``virtqueue_packed_fill_desc``: id and len, then flags AVAIL = USED = wrap."""
        d = self.desc + PACKED_DESC_SIZE * slot
        _IDLEN.pack_into(ram, d + 8, written, bid)
        _U16.pack_into(ram, d + 14, (_AVAIL | _USED) if wrap else 0)
        if self.lines is not None:
            self.lines.note(d + 8, 8, 1)

    def push(self, head: int, written: int) -> None:
        self.push_n([(head, written)])

    def push_n(self, heads: list) -> None:
        """``virtqueue_packed_fill`` × n + ``virtqueue_packed_flush``: each
        element goes into the next slot the device uses; the first slot's
        flags are written last (strict order), which hands the batch over."""
        if not heads:
            return
        self._burst = ""
        ram = self.mem.ram
        num = self.num
        start, wrap = self.used_idx, self.dev_used_wrap_counter
        for k in range(1, len(heads)):
            slot, w = start + k, wrap
            if slot >= num:
                slot -= num
                w ^= 1
            self._fill_desc(ram, slot, w, *heads[k])
        self._fill_desc(ram, start, wrap, *heads[0])
        end = start + len(heads)
        wrapped = end >= num
        if wrapped:
            end -= num
            self.dev_used_wrap_counter ^= 1
            self.signalled_used_valid = False
        self.used_idx = end
        self.last_touched = (end - 1) % num
        if self.trace is not None and self.trace.on:
            n = len(heads)
            last = (start + n - 1) % num
            where = f"slot {start}" if n == 1 else f"slots {start}–{last}"
            ids = ", ".join(str(h[0]) for h in heads[:6]) + (", …" if n > 6 else "")
            self._tell(4, f"the device writes id and len into {self.vm}'s {self.name} {where} (id {ids}) and sets "
                          f"AVAIL = USED = {wrap}, its used wrap counter: AVAIL = USED → the driver's"
                          + (f" · it passed slot {num - 1}: the device's used wrap counter flips {wrap} → "
                             f"{1 - wrap}" if wrapped else ""),
                       slot=start, published=n, used_bit=wrap, wrap=self.dev_used_wrap_counter)

    def should_notify(self) -> bool:
        """``virtio_packed_should_notify``: read the driver event area."""
        off_wrap, flags = _EVENT.unpack_from(self.mem.ram, self.driver_event)
        old = self.signalled_used
        new = self.signalled_used = self.used_idx
        valid = self.signalled_used_valid
        self.signalled_used_valid = True
        if flags == VRING_PACKED_EVENT_FLAG_DISABLE:
            return False
        if flags == VRING_PACKED_EVENT_FLAG_ENABLE:
            return True
        return not valid or packed_need_event(self.num, self.dev_used_wrap_counter, off_wrap, new, old)

    def _write_device_event(self, flags: int, off_wrap: int | None) -> None:
        ram = self.mem.ram
        if off_wrap is not None:
            _U16.pack_into(ram, self.device_event, off_wrap)
        _U16.pack_into(ram, self.device_event + 2, flags)
        if self.lines is not None:
            self.lines.note(self.device_event, 4, 1)
        old = self.dev_event_flags
        self.dev_event_flags = flags
        if old != flags and self.trace is not None and self.trace.on:
            why = {VRING_PACKED_EVENT_FLAG_DISABLE: "it is polling the ring, no kicks needed",
                   VRING_PACKED_EVENT_FLAG_ENABLE: "it ran dry: a kick for the next buffer",
                   VRING_PACKED_EVENT_FLAG_DESC: f"it ran dry: a kick once slot {(off_wrap or 0) & ~_WRAP} "
                                                 f"(wrap {(off_wrap or 0) >> 15}) is made available"}[flags]
            self._tell(3, f"the device sets {self.vm}'s {self.name} device event flags {EVENT_NAMES[old]} → "
                          f"{EVENT_NAMES[flags]}: {why}", device_event=EVENT_NAMES[flags])

    def disable_notify(self) -> None:
        """``virtio_queue_packed_set_notification(vq, 0)``: DISABLE, with or
        without EVENT_IDX (the split ring leaves avail_event stale instead)."""
        self._write_device_event(VRING_PACKED_EVENT_FLAG_DISABLE, None)

    def enable_notify(self) -> bool:
        """``virtio_queue_packed_set_notification(vq, 1)``: DESC at the next
        slot the device reads (EVENT_IDX) or ENABLE; True if buffers arrived."""
        if self.event_idx:
            self._write_device_event(VRING_PACKED_EVENT_FLAG_DESC,
                                     self.last_avail_idx | self.last_avail_wrap_counter << VRING_PACKED_EVENT_F_WRAP_CTR)
        else:
            self._write_device_event(VRING_PACKED_EVENT_FLAG_ENABLE, None)
        return self._is_avail(self.last_avail_idx, self.last_avail_wrap_counter)

    # ======================================================================
    # reading (views, tests, dumps); names as the split ring's where they mean the same
    # ======================================================================
    def read_desc(self, i: int) -> tuple[int, int, int, int]:
        """``(addr, len, id, flags)`` of slot ``i``."""
        return _DESC.unpack_from(self.mem.ram, self.desc + PACKED_DESC_SIZE * i)

    def driver_event_raw(self) -> tuple[int, int]:
        return _EVENT.unpack_from(self.mem.ram, self.driver_event)

    def device_event_raw(self) -> tuple[int, int]:
        return _EVENT.unpack_from(self.mem.ram, self.device_event)

    @property
    def avail_idx_shadow(self) -> int:
        return self.next_avail_idx

    @property
    def last_used_idx(self) -> int:
        """Linux 6.1 keeps the used wrap counter in bit 15 of last_used_idx."""
        return self._off_wrap_used()

    def avail_idx(self) -> int:
        return self.next_avail_idx

    def used_idx_ram(self) -> int:
        """Where the device's used slots end as the ring's flags show it, from
        last_used on, with the wrap bit (equal to ``enable_cb_prepare``'s
        return value exactly when nothing is used: ``virtqueue_poll_packed``)."""
        slot, wrap = self.last_used, self.used_wrap_counter
        n = 0
        while n < self.num and self._is_used(slot, wrap):
            n += 1
            slot += 1
            if slot >= self.num:
                slot = 0
                wrap ^= 1
        return slot | wrap << VRING_PACKED_EVENT_F_WRAP_CTR

    def used_event(self) -> int:
        """The driver event area's off_wrap."""
        return self.driver_event_raw()[0]

    def avail_event(self) -> int:
        """The device event area's off_wrap."""
        return self.device_event_raw()[0]

    def _used_pending(self) -> set[int]:
        """Slots the device has marked used that the driver has not taken yet
        (the run from last_used on with AVAIL = USED = the used wrap counter)."""
        out = set()
        slot, wrap = self.last_used, self.used_wrap_counter
        while len(out) < self.num and self._is_used(slot, wrap):
            out.add(slot)
            slot += 1
            if slot >= self.num:
                slot = 0
                wrap ^= 1
        return out

    def owner(self, i: int, pending: set[int] | None = None) -> str:
        """Whose slot ``i`` is, from its AVAIL/USED bits and the wrap counters:
        AVAIL ≠ USED: the device's; marked used and not taken: "used"; else the driver's."""
        fl = _U16.unpack_from(self.mem.ram, self.desc + PACKED_DESC_SIZE * i + 14)[0]
        if (1 if fl & _AVAIL else 0) != (1 if fl & _USED else 0):
            return "device"
        if pending is None:
            pending = self._used_pending()
        return "used" if i in pending else "driver"

    def describe_event(self, which: str) -> str:
        off, flags = self.driver_event_raw() if which == "driver" else self.device_event_raw()
        name = EVENT_NAMES.get(flags, f"0x{flags:x}")
        if flags == VRING_PACKED_EVENT_FLAG_DESC:
            return f"{name} @ {off & ~_WRAP} wrap {off >> 15}"
        return name

    def view(self, vm: str, extra: str = "") -> RingView:
        """The ring as its bytes in guest RAM say, plus both sides' shadows."""
        rows = []
        owners = []
        pending = self._used_pending()
        for i in range(self.num):
            addr, ln, bid, fl = self.read_desc(i)
            a = 1 if fl & _AVAIL else 0
            u = 1 if fl & _USED else 0
            rows.append((str(i), str(bid), f"0x{addr:08x}", str(ln), f"{a}/{u}",
                         "W" if fl & VRING_DESC_F_WRITE else "–"))
            owners.append(self.owner(i, pending))
        marks = [("driver next", f"{self.next_avail_idx} w{self.avail_wrap_counter}"),
                 ("driver used", f"{self.last_used} w{self.used_wrap_counter}"),
                 ("device next", f"{self.last_avail_idx} w{self.last_avail_wrap_counter}"),
                 ("device used", f"{self.used_idx} w{self.dev_used_wrap_counter}"),
                 ("num_free", str(self.num_free))]
        note = (f"packed ring · event idx {'on' if self.event_idx else 'off'} · driver event "
                f"{self.describe_event('driver')} · device event {self.describe_event('device')}")
        if extra:
            note = f"{note} · {extra}"
        return RingView(vm, self.name, self.kind, self.num, ("slot", "id", "addr", "len", "A/U", "flags"),
                        tuple(rows), tuple(owners), tuple(marks), self.last_touched, self.desc, note)

    def annotate(self, page_gpa: int, data: bytes) -> list[tuple[int, int, str]]:
        """What each event area and packed descriptor in this page says (events first):
        ``(offset in page, length, label)`` for the hex view (read from ``data``)."""
        out: list[tuple[int, int, str]] = []
        end = page_gpa + len(data)
        for base, who in ((self.driver_event, "driver"), (self.device_event, "device")):
            if page_gpa <= base < end:
                o = base - page_gpa
                off, fl = _EVENT.unpack_from(data, o)
                out.append((o, 2, f"{self.name} {who} event off_wrap 0x{off:04x} (slot {off & ~_WRAP}, "
                                  f"wrap {off >> 15})"))
                out.append((o + 2, 2, f"{self.name} {who} event flags {fl} ({EVENT_NAMES.get(fl, '?')})"))
        lo = max(0, (page_gpa - self.desc) // PACKED_DESC_SIZE)
        hi = min(self.num, -(-(end - self.desc) // PACKED_DESC_SIZE))
        pending = None
        for i in range(lo, hi):
            a = self.desc + PACKED_DESC_SIZE * i
            if not page_gpa <= a < end:
                continue
            if pending is None:
                pending = self._used_pending()
            o = a - page_gpa
            addr, ln, bid, fl = _DESC.unpack_from(data, o)
            av, us = (1 if fl & _AVAIL else 0), (1 if fl & _USED else 0)
            out.append((o, 16, f"{self.name} packed desc[{i}] addr 0x{addr:x} len {ln:,} id {bid} flags 0x{fl:04x} "
                               f"(AVAIL={av} USED={us}{' WRITE' if fl & VRING_DESC_F_WRITE else ''}: "
                               f"{self.owner(i, pending)})"))
        return out

    # -- narration in this ring's own terms (the virtio path's trace text) ---------------
    def row(self, head: int) -> int:
        return self.id_slot[head]

    def avail_text(self) -> str:
        return f"the driver's next slot {self.next_avail_idx}, avail wrap counter {self.avail_wrap_counter}"

    def event_text(self) -> str:
        return f"driver event {self.describe_event('driver')}"

    def empty_text(self) -> str:
        return (f"slot {self.last_avail_idx} is not available: its AVAIL bit is not the device's wrap counter "
                f"{self.last_avail_wrap_counter}, or AVAIL = USED")

    def pop_text(self, head: int) -> str:
        slot = (self.last_avail_idx - 1) % self.num
        w = self.last_avail_wrap_counter if self.last_avail_idx else self.last_avail_wrap_counter ^ 1
        return f"reads slot {slot} (AVAIL = {w} = its wrap counter, USED = {1 - w}: available) → id {head}"

    def take_text(self, head: int) -> str:
        slot = (self.last_used - 1) % self.num
        w = self.used_wrap_counter if self.last_used else self.used_wrap_counter ^ 1
        return f"takes slot {slot} (AVAIL = USED = {w}, its used wrap counter: used) → id {head}"

    def used_text(self) -> str:
        return f"the device's next used slot → {self.used_idx} (used wrap counter {self.dev_used_wrap_counter})"

    def no_kick_text(self) -> str:
        return f"device event {self.describe_event('device')}" + (
            " not reached" if self.device_event_raw()[1] == 2 else " (no kicks)")

    def no_irq_text(self) -> str:
        return f"driver event {self.describe_event('driver')}" + (
            " not reached" if self.driver_event_raw()[1] == 2 else " (no interrupts)")
