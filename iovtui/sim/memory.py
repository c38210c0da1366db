"""Guest memory: real bytes addressed by guest-physical address (GPA).

Each VM owns one anonymous memory mapping that starts at GPA 0: like a real
guest's RAM, a page costs the host nothing until it is first written, so a run's
set-up does not depend on the configured RAM size.  The host backs it with
host-physical memory starting at ``hpa_base`` (the model keeps the backing
contiguous; the IOMMU still translates page by page through its own tables).
Regions record what each range is for, so the RAM view can colour it, and a
bounded write log lets the UI flash the bytes a DMA or a copy just wrote.

The write log is kept compact, as a dense host has one per VM: an entry is
one int (``gpa << 32 | length``) beside a reference to its writer's name, and
its serial number is implied (entries are consecutive and the newest is
``write_serial``), about 48 bytes an entry instead of a 4-tuple's 176.
"""

from __future__ import annotations

import copy
import mmap
import struct
from collections import deque
from itertools import islice
from dataclasses import dataclass

__all__ = ["GuestMemory", "Region", "RamShortage", "PAGE", "ROLES"]

PAGE = 4096

#: a private anonymous mapping: a page never written reads as the kernel's shared
#: zero page and costs nothing, even when read (the RAM pane, --dump-ram, a
#: checkpoint).  mmap's default, MAP_SHARED, is shmem: there a read of an
#: untouched page allocates it, so dumping 126 × 16 MiB made 2 GiB resident.
_MAP_FLAGS = getattr(mmap, "MAP_PRIVATE", 0) | getattr(mmap, "MAP_ANONYMOUS", getattr(mmap, "MAP_ANON", 0))


def _anon(size: int) -> mmap.mmap:
    if _MAP_FLAGS and hasattr(mmap, "MAP_PRIVATE"):
        return mmap.mmap(-1, size, flags=_MAP_FLAGS)
    return mmap.mmap(-1, size)          # (Windows: a pagefile-backed mapping, also lazily committed)


#: checkpoint copies go in chunks of this size; an all-zero chunk is skipped
_COPY_CHUNK = 64 * 1024
_ZERO_CHUNK = bytes(_COPY_CHUNK)

#: Region roles, in the order the RAM legend lists them.
ROLES = ("kernel", "desc", "avail", "used", "drv_event", "dev_event", "rx_ring", "tx_ring", "rx_buf", "tx_buf", "free")

#: a write-log entry packs the length in the low bits (a write is far under 4 GiB)
_LOG_SHIFT = 32
_LOG_MASK = (1 << _LOG_SHIFT) - 1

_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")


class RamShortage(MemoryError):
    """A layout does not fit in the guest's RAM (``str()`` is one line)."""

    def __init__(self, vm: str, size: int, label: str, need: int) -> None:
        super().__init__(f"{vm}: guest RAM of {size // 1024:,} KiB is too small for {label} "
                         f"(needs at least {need // 1024:,} KiB)")
        self.vm = vm
        self.size = size
        self.label = label
        self.need = need


@dataclass(frozen=True)
class Region:
    start: int
    size: int
    role: str
    label: str

    @property
    def end(self) -> int:
        return self.start + self.size


class GuestMemory:
    """One VM's guest-physical memory."""

    #: the low megabyte stands for the guest kernel's own memory
    FIRST_FREE = 0x100000

    def __init__(self, name: str, size: int, hpa_base: int, log_len: int = 512) -> None:
        if size % PAGE:
            raise ValueError(f"guest RAM size must be a multiple of {PAGE} bytes")
        self.name = name
        self.size = size
        self.hpa_base = hpa_base
        #: zero-filled and lazily backed (a private anonymous mapping; see _anon)
        self.ram = _anon(size)
        self.regions: list[Region] = [Region(0, min(self.FIRST_FREE, size), "kernel", "guest kernel")]
        self._brk = min(self.FIRST_FREE, size)
        #: recent writes by a device or the VMM, oldest first: ``gpa << 32 | length``
        #: and, beside it, who wrote (the newest entry's serial is write_serial)
        self._log: deque[int] = deque(maxlen=log_len)
        self._log_who: deque[str] = deque(maxlen=log_len)
        self.write_serial = 0
        self.bytes_written = 0
        #: the highest address a device or copy has written (a checkpoint copies up to here)
        self.high_water = 0

    # -- layout -----------------------------------------------------------
    def alloc(self, size: int, align: int, role: str, label: str) -> int:
        """Reserve ``size`` bytes at the next ``align``-aligned GPA."""
        gpa = (self._brk + align - 1) & ~(align - 1)
        if gpa + size > self.size:
            raise RamShortage(self.name, self.size, label, gpa + size)
        self.regions.append(Region(gpa, size, role, label))
        self._brk = gpa + size
        return gpa

    @property
    def used(self) -> int:
        """Bytes from GPA 0 to the end of the last allocation."""
        return self._brk

    def __deepcopy__(self, memo: dict) -> "GuestMemory":
        """A checkpoint's copy: only what a layout reached can hold bytes
        (devices and copies write inside allocations; blocked DMA writes nothing)."""
        new = GuestMemory.__new__(GuestMemory)
        memo[id(self)] = new
        for k, v in self.__dict__.items():
            if k != "ram":
                new.__dict__[k] = copy.deepcopy(v, memo)
        new.ram = _anon(self.size)
        n = max(self._brk, self.high_water)
        # chunk by chunk, skipping chunks that are all zero (most of a lightly
        # used layout): the copy's untouched pages stay unbacked, like the original's
        src, dst, step, zero = self.ram, new.ram, _COPY_CHUNK, _ZERO_CHUNK
        for off in range(0, n, step):
            end = min(off + step, n)
            chunk = src[off:end]
            if chunk != zero[:end - off]:
                dst[off:end] = chunk
        return new

    def role_at(self, gpa: int) -> str:
        for r in reversed(self.regions):
            if r.start <= gpa < r.end:
                return r.role
        return "free"

    def region_at(self, gpa: int) -> Region | None:
        for r in reversed(self.regions):
            if r.start <= gpa < r.end:
                return r
        return None

    def hpa(self, gpa: int) -> int:
        """The host-physical address backing ``gpa`` (what the IOMMU maps)."""
        return self.hpa_base + gpa

    # -- byte access ------------------------------------------------------
    def read(self, gpa: int, n: int) -> bytes:
        return bytes(self.ram[gpa:gpa + n])

    def write(self, gpa: int, data: bytes | bytearray | memoryview, who: str) -> None:
        """A device (DMA) or the VMM (a copy) writes guest RAM."""
        n = len(data)
        self.ram[gpa:gpa + n] = data
        if gpa + n > self.high_water:
            self.high_water = gpa + n
        self.write_serial += 1
        self.bytes_written += n
        self._log.append(gpa << _LOG_SHIFT | n)
        self._log_who.append(who)

    def write2(self, gpa: int, head: bytes, data: bytes | bytearray, who: str) -> None:
        """``head`` then ``data`` at ``gpa``: one write (a header and its frame,
        one log entry), without joining the two into a new buffer first."""
        h = len(head)
        end = gpa + h + len(data)
        ram = self.ram
        ram[gpa:gpa + h] = head
        ram[gpa + h:end] = data
        if end > self.high_water:
            self.high_water = end
        self.write_serial += 1
        self.bytes_written += end - gpa
        self._log.append(gpa << _LOG_SHIFT | (end - gpa))
        self._log_who.append(who)

    def u16(self, gpa: int) -> int:
        return _U16.unpack_from(self.ram, gpa)[0]

    def u32(self, gpa: int) -> int:
        return _U32.unpack_from(self.ram, gpa)[0]

    def u64(self, gpa: int) -> int:
        return _U64.unpack_from(self.ram, gpa)[0]

    def set_u16(self, gpa: int, v: int) -> None:
        _U16.pack_into(self.ram, gpa, v & 0xFFFF)

    def set_u32(self, gpa: int, v: int) -> None:
        _U32.pack_into(self.ram, gpa, v & 0xFFFFFFFF)

    def set_u64(self, gpa: int, v: int) -> None:
        _U64.pack_into(self.ram, gpa, v)

    def writes_since(self, serial: int) -> list[tuple[int, int, int, str]]:
        """Write-log entries newer than ``serial`` as ``(serial, gpa, length, who)``
        (oldest first).  The log holds the newest ``len`` writes, whose serials
        run up to write_serial one by one, so an entry's serial is its place."""
        log = self._log
        k = min(self.write_serial - serial, len(log))
        if k <= 0:
            return []
        s0 = self.write_serial - k + 1
        mask = _LOG_MASK
        # the newest k, read from the right end (a deque walks from whichever end is nearer)
        newest = zip(islice(reversed(log), k), islice(reversed(self._log_who), k))
        out = [(p >> _LOG_SHIFT, p & mask, w) for p, w in newest]
        out.reverse()
        return [(s0 + i, g, n, w) for i, (g, n, w) in enumerate(out)]

    @property
    def write_log(self) -> list[tuple[int, int, int, str]]:
        """The whole write log as ``(serial, gpa, length, who)``, oldest first."""
        return self.writes_since(self.write_serial - len(self._log))
