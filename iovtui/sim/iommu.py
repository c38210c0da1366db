"""Intel VT-d DMA remapping: root and context tables, 4-level second-level
page tables, an IOTLB, and DMAR faults reported the way Linux prints them.

The tables are real entries in host-physical pages (``HostTables``): a root
entry (16 B) per bus with the context-table pointer and a present bit; a
context entry (16 B) per devfn with present, translation type 00
(second-level only), the second-level page-table pointer, address width 2
(48-bit, 4-level) and the domain id; second-level entries (8 B) with R (bit 0),
W (bit 1) and the next table / page address.  A second-level entry with
neither R nor W is not present: a write through it faults with reason 0x05,
a read with 0x06, as on real hardware (the VT-d spec's fault reasons 5 and 6
are "write/read request to a page with W/R = 0", which covers a
not-present entry; Linux prints them as "PTE Write access is not set" and
"PTE Read access is not set").  An address above the 48-bit adjusted guest
address width faults with reason 0x04 (Access beyond MGAW).

Costs: an IOTLB miss is the 4-level page walk, four reads of
``iotlb_walk_read_ns`` each.  The root and context entries are read too (two
more reads) only the first time a device is seen: like the hardware's
context cache, the device's context entry (domain id, page-table pointer) is
kept after it, until the host changes it (``attach``).

Superpages (``[iommu] superpages``): where the IOMMU supports 2 MiB pages
(``hardware_largepage_caps``) Linux's ``__domain_mapping`` writes a level-2
entry with PS (bit 7) for every 2 MiB-aligned stretch of the range; the walk
stops there (3 reads) and one IOTLB entry covers 2 MiB.

Flushes follow the intel-iommu driver: an unmap (``intel_iommu_tlb_sync`` →
``iommu_flush_iotlb_psi``) and a permission change (an unmap then a map of
the same IOVA) invalidate the IOTLB entries of those pages; a map of pages
that were not present only flushes the write buffer
(``iommu_flush_write_buffer``): a not-present entry is never cached, so the
IOTLB keeps what it holds (caching mode, an emulated vIOMMU, would need a
flush on map too; this IOMMU is not one).

The fault recording register holds the page-aligned address, so the DMAR
line prints the faulting address with its low 12 bits clear (``dmar_fault``).
"""

from __future__ import annotations

import struct
from array import array
from collections import OrderedDict, deque
from dataclasses import dataclass

from .views import TableView

__all__ = ["Iommu", "DmaFault", "FAULT_REASONS", "rid_str", "parse_rid", "walk_indices"]

FAULT_REASONS = {
    0x01: "Present bit in root entry is clear",
    0x02: "Present bit in context entry is clear",
    0x04: "Access beyond MGAW",
    0x05: "PTE Write access is not set",
    0x06: "PTE Read access is not set",
}
PTE_R = 1
PTE_W = 2
PTE_PS = 0x80          # a level-2 entry that maps a 2 MiB superpage
PAGE = 4096
SUPERPAGE = 2 << 20
_ADDR = 0x000F_FFFF_FFFF_F000
_Q = struct.Struct("<Q")
#: the walk and miss memos (Iommu._walks, _misses) start again past this many entries: they
#: only spare the model arithmetic it can redo, and a dense host touches a page per frame
_MEMO_MAX = 4096
_QQ = struct.Struct("<QQ")
#: where the model's IOMMU tables live in host-physical memory
TABLE_HPA_BASE = 0x0800_0000


def parse_rid(s: str) -> int:
    bus, rest = s.split(":")
    dev, fn = rest.split(".")
    return (int(bus, 16) << 8) | (int(dev, 16) << 3) | int(fn)


def rid_str(rid: int) -> str:
    return f"{rid >> 8:02x}:{(rid >> 3) & 0x1F:02x}.{rid & 7}"


def walk_indices(iova: int) -> tuple[int, int, int, int]:
    """Second-level table index at levels 4, 3, 2, 1 (9 bits each)."""
    return ((iova >> 39) & 0x1FF, (iova >> 30) & 0x1FF, (iova >> 21) & 0x1FF, (iova >> 12) & 0x1FF)


class DmaFault(Exception):
    def __init__(self, rid: int, addr: int, write: bool, reason: int) -> None:
        self.rid = rid
        self.addr = addr
        self.write = write
        self.reason = reason
        super().__init__(self.line())

    def line(self) -> str:
        kind = "Write" if self.write else "Read"
        # dmar_fault_do_one: the fault recording register holds the page address
        return (f"DMAR: [DMA {kind} NO_PASID] Request device [{rid_str(self.rid)}] fault addr "
                f"0x{self.addr & ~0xFFF:x} [fault reason 0x{self.reason:02x}] {FAULT_REASONS[self.reason]}")


class _Pages(dict):
    """HPA -> the 4 KiB page's bytes.  A last-level table that maps 512
    consecutive pages with one permission (what mapping all of a guest's RAM
    writes) is kept as its first entry until something needs its bytes:
    ``lazy[hpa] = first entry``, entry k = first + k × 4 KiB.  Indexing such
    a page builds it (the same 4,096 bytes __domain_mapping would have written)."""

    def __init__(self) -> None:
        super().__init__()
        self.lazy: dict[int, int] = {}

    def __missing__(self, hpa: int) -> bytearray:
        first = self.lazy.pop(hpa)      # KeyError: no such page, as before
        page = self[hpa] = bytearray(array("Q", range(first, first + 512 * PAGE, PAGE)).tobytes())
        return page

    def __deepcopy__(self, memo: dict) -> "_Pages":
        new = _Pages()
        memo[id(self)] = new
        new.update((k, bytearray(v)) for k, v in self.items())
        new.lazy = dict(self.lazy)
        return new


class HostTables:
    """Host-physical pages holding the remapping structures."""

    def __init__(self, base: int = TABLE_HPA_BASE) -> None:
        self.pages: _Pages = _Pages()
        self.next = base
        #: counts the writes to the tables (a cached walk is good while it stays the same)
        self.gen = 0

    def alloc_linear(self, first: int) -> int:
        """A last-level table whose 512 entries map consecutive 4 KiB pages
        from ``first`` (the HPA | permission bits of entry 0), built lazily."""
        hpa = self.next
        self.next += PAGE
        self.pages.lazy[hpa] = first
        return hpa

    def alloc(self) -> int:
        hpa = self.next
        self.next += PAGE
        self.pages[hpa] = bytearray(PAGE)
        return hpa

    def read(self, hpa: int, fmt: struct.Struct = _Q):
        page = self.pages.get(hpa & ~(PAGE - 1))
        if page is None:
            first = self.pages.lazy.get(hpa & ~(PAGE - 1))
            if first is not None and fmt is _Q:      # a linear last-level table: entry k
                return (first + ((hpa & (PAGE - 1)) >> 3) * PAGE,)
            if first is not None:
                page = self.pages[hpa & ~(PAGE - 1)]
            else:
                return (0,) * (len(fmt.format) - 1)
        return fmt.unpack_from(page, hpa & (PAGE - 1))

    def write_q(self, hpa: int, v: int) -> None:
        self.gen += 1
        _Q.pack_into(self.pages[hpa & ~(PAGE - 1)], hpa & (PAGE - 1), v)

    def write_qq(self, hpa: int, lo: int, hi: int) -> None:
        self.gen += 1
        _QQ.pack_into(self.pages[hpa & ~(PAGE - 1)], hpa & (PAGE - 1), lo, hi)


@dataclass
class Domain:
    did: int
    name: str
    pgd: int                   # HPA of the level-4 table
    ranges: list               # (iova, hpa, size, perms) for the view


class Iommu:
    def __init__(self, iotlb_entries: int, walk_read_ns: int, metrics, superpages: bool = False) -> None:
        self.mem = HostTables()
        self.root = self.mem.alloc()          # root table: 256 × 16 B
        self.domains: dict[int, Domain] = {}
        self.devices: dict[int, int] = {}     # rid -> did
        self.iotlb: OrderedDict[tuple[int, int], tuple[int, int]] = OrderedDict()
        self.iotlb_entries = iotlb_entries
        self.walk_read_ns = walk_read_ns
        self.metrics = metrics
        self.faults: deque[str] = deque(maxlen=8)
        self.last: str = ""
        #: the context cache: rid -> (did, second-level page-table pointer)
        self.context_cache: dict[int, tuple[int, int]] = {}
        #: 2 MiB second-level pages where a mapping allows (the IOMMU's SLLPS capability)
        self.superpages = superpages
        #: IOTLB flushes the host's driver issued (page-selective), and write-buffer flushes
        self.iotlb_flushes = 0
        self.write_buffer_flushes = 0
        #: the outcome of a page walk that succeeded, (table, page, access) -> (last entry, level,
        #: reads), while the tables are as they were (HostTables.gen): a miss walks the same
        #: entries and costs the same reads, the model just does not read them again
        self._walks: dict[tuple[int, int, int], tuple[int, int, int]] = {}
        self._walks_gen = -1
        #: a miss's outcome, (rid, page, access) -> (IOTLB key, entry, offset mask, cost), under
        #: the same rule (HostTables.gen; a device's context changes only with a table write)
        self._misses: dict[tuple[int, int, int], tuple] = {}

    # -- programming (what the host's intel-iommu driver does) -------------------
    def domain(self, did: int, name: str) -> Domain:
        d = Domain(did, name, self.mem.alloc(), [])
        self.domains[did] = d
        return d

    def attach(self, rid: int, did: int) -> None:
        bus, devfn = rid >> 8, rid & 0xFF
        re = self.root + 16 * bus
        lo, _hi = self.mem.read(re, _QQ)
        if not lo & 1:
            ctx = self.mem.alloc()
            self.mem.write_qq(re, ctx | 1, 0)
            lo = ctx | 1
        ctx = lo & ~0xFFF
        d = self.domains[did]
        # context entry: lo = SLPTPTR | TT=00 | P ; hi = DID << 8 | AW=2 (48-bit)
        self.mem.write_qq(ctx + 16 * devfn, d.pgd | 1, (did << 8) | 2)
        self.devices[rid] = did
        self.context_cache.pop(rid, None)     # (a context-cache invalidation)

    def map(self, did: int, iova: int, hpa: int, size: int, read: bool = True, write: bool = True) -> None:
        """__domain_mapping: write the second-level entries for ``size`` bytes.
        Pages that were already present change permission (the host unmapped
        them first): their IOTLB entries are invalidated.  New pages only
        flush the write buffer."""
        d = self.domains[did]
        perms = (PTE_R if read else 0) | (PTE_W if write else 0)
        changed = False
        off = 0
        while off < size:
            a, h = iova + off, hpa + off
            if (self.superpages and not a % SUPERPAGE and not h % SUPERPAGE and size - off >= SUPERPAGE):
                changed |= self._set_pte(d, a, (h & ~(SUPERPAGE - 1)) | perms | PTE_PS, level=2)
                off += SUPERPAGE
            elif not a % SUPERPAGE and not h % PAGE and size - off >= SUPERPAGE and self._new_l1(d, a, h | perms):
                # a whole last-level table of new entries at once (the same entries, built lazily)
                off += SUPERPAGE
            else:
                changed |= self._set_pte(d, a, (h & ~0xFFF) | perms)
                off += PAGE
        d.ranges.append((iova, hpa, size, perms))
        if changed:
            self._flush_range(did, iova, size)      # a permission change
        else:
            self.write_buffer_flushes += 1          # iommu_flush_write_buffer only

    def unmap(self, did: int, iova: int, size: int) -> None:
        """Clear the entries, then invalidate their IOTLB entries (iommu_flush_iotlb_psi)."""
        d = self.domains[did]
        for off in range(0, size, PAGE):
            self._set_pte(d, iova + off, 0)
        d.ranges.append((iova, 0, size, 0))
        self._flush_range(did, iova, size)

    def _new_l1(self, d: Domain, iova: int, first: int) -> bool:
        """If the level-2 entry for the 2 MiB-aligned ``iova`` is not present,
        point it at a new last-level table mapping 512 pages from ``first``
        and return True; else leave everything as it is and return False."""
        e = self._table(d, iova, 2) + 8 * walk_indices(iova)[2]
        (v,) = self.mem.read(e)
        if v & (PTE_R | PTE_W):
            return False
        self.mem.write_q(e, self.mem.alloc_linear(first) | PTE_R | PTE_W)
        return True

    def _set_pte(self, d: Domain, iova: int, value: int, level: int = 1) -> bool:
        """Write the level-``level`` entry for ``iova``.  Returns whether a
        present entry was replaced."""
        e = self._table(d, iova, level) + 8 * walk_indices(iova)[4 - level]
        (old,) = self.mem.read(e)
        self.mem.write_q(e, value)
        return bool(old & (PTE_R | PTE_W))

    def _table(self, d: Domain, iova: int, level: int) -> int:
        """The table that holds ``iova``'s level-``level`` entry, walking down
        from the PGD: a missing table on the way is made; a superpage on the
        way is split into a table of 512 entries with the same permissions."""
        table = d.pgd
        for i in walk_indices(iova)[:4 - level]:
            e = table + 8 * i
            (v,) = self.mem.read(e)
            if v & PTE_PS:
                # split the 2 MiB page into 4 KiB entries with the same permissions
                nxt = self.mem.alloc()
                base, perms = v & _ADDR & ~(SUPERPAGE - 1), v & (PTE_R | PTE_W)
                for k in range(512):
                    self.mem.write_q(nxt + 8 * k, (base + k * PAGE) | perms)
                self.mem.write_q(e, nxt | PTE_R | PTE_W)
                v = nxt | PTE_R | PTE_W
            elif not v & (PTE_R | PTE_W):
                nxt = self.mem.alloc()
                self.mem.write_q(e, nxt | PTE_R | PTE_W)
                v = nxt | PTE_R | PTE_W
            table = v & _ADDR
        return table

    def _flush_range(self, did: int, iova: int, size: int) -> None:
        """Page-selective IOTLB invalidation of ``[iova, iova + size)`` in domain ``did``
        (an entry for a superpage that overlaps the range goes too)."""
        self.iotlb_flushes += 1
        lo, hi = iova >> 12, (iova + size - 1) >> 12
        for key in [k for k in self.iotlb if k[0] == did and
                    (lo <= k[1] <= hi if k[2] == 1 else (lo >> 9) <= k[1] <= (hi >> 9))]:
            del self.iotlb[key]

    # -- translation ---------------------------------------------------------------
    def rx_dma(self, rid: int, desc: int, gpa: int) -> tuple[int | None, int]:
        """A VF's receive of one frame, as its three translations in order:
        the descriptor fetch (read ``desc``), the frame's write to ``gpa``
        and, if that was not blocked, the descriptor write-back (write
        ``desc``).  Returns ``(hpa of the frame or None if blocked, cost of
        the fetch and the frame's write)``; raises DmaFault only if the
        fetch is blocked.  (What the hardware does per frame with one RX
        descriptor: fetch, data write, write-back.)

        Exact: each lookup that hits a 4 KiB IOTLB entry allowing the access
        does what :meth:`translate`'s first branch does (the entry moved to the
        LRU end; one translation and one hit counted, at the end) without its
        call; any other lookup is :meth:`translate` itself, in the same order."""
        iotlb = self.iotlb
        did = self.devices.get(rid, -1)
        hits = 0
        dkey = (did, desc >> 12, 1)
        e = iotlb.get(dkey)
        if e is not None and e[1] & PTE_R:
            iotlb.move_to_end(dkey)
            hits = 1
            cost = 0
        else:
            cost = self.translate(rid, desc, False)[1]
        key = (did, gpa >> 12, 1)
        e = iotlb.get(key)
        if e is not None and e[1] & PTE_W:
            iotlb.move_to_end(key)
            hits += 1
            hpa = e[0] | (gpa & 0xFFF)
        else:
            try:
                hpa, c, _hit = self.translate(rid, gpa, True)
            except DmaFault:
                hpa = None
            else:
                cost += c
        if hpa is not None:
            # the write-back (the fetch's entry may have gone meanwhile: an IOTLB of one entry)
            e = iotlb.get(dkey)
            if e is not None and e[1] & PTE_W:
                iotlb.move_to_end(dkey)
                hits += 1
            else:
                self.translate(rid, desc, True)
        m = self.metrics
        m.iommu_translations += hits
        m.iotlb_hits += hits
        return hpa, cost

    def translate(self, rid: int, iova: int, write: bool) -> tuple[int, int, bool]:
        """GPA (IOVA) → HPA for a DMA from ``rid``.  Returns ``(hpa, cost_ns,
        iotlb_hit)``; raises :class:`DmaFault` (counted and logged) if blocked."""
        m = self.metrics
        m.iommu_translations += 1
        did = self.devices.get(rid, -1)
        need = PTE_W if write else PTE_R
        iotlb = self.iotlb
        key = (did, iova >> 12, 1)
        hit = iotlb.get(key)
        if hit is not None and hit[1] & need:        # a 4 KiB entry that allows it: the common case
            iotlb.move_to_end(key)
            m.iotlb_hits += 1
            return hit[0] | (iova & 0xFFF), 0, True
        if hit is None and self.superpages:
            key = (did, iova >> 21, 2)
            hit = iotlb.get(key)
        if hit is not None and hit[1] & need:
            iotlb.move_to_end(key)
            m.iotlb_hits += 1
            return hit[0] | (iova & (0xFFF if key[2] == 1 else SUPERPAGE - 1)), 0, True
        return self._miss(rid, iova, write, need)

    def _miss(self, rid: int, iova: int, write: bool, need: int) -> tuple[int, int, bool]:
        """translate after its IOTLB lookups found nothing that allows the
        access: count the miss, read the context (once per device) and walk."""
        m = self.metrics
        iotlb = self.iotlb
        m.iotlb_misses += 1
        if self.mem.gen == self._walks_gen:
            done = self._misses.get((rid, iova >> 12, need))
            if done is not None:
                # this miss was walked before, the tables and the device's cached context as
                # they are now: the same entry goes into the IOTLB at the same cost
                key, entry, mask, cost = done
                iotlb[key] = entry
                if len(iotlb) > self.iotlb_entries:
                    iotlb.popitem(last=False)    # LRU eviction
                return entry[0] | (iova & mask), cost, False
        cost = 0
        cached_ctx = rid in self.context_cache
        try:
            if iova >> 48:
                raise DmaFault(rid, iova, write, 0x04)
            ctx = self.context_cache.get(rid)
            if ctx is None:                       # root and context entries: read once per device
                bus, devfn = rid >> 8, rid & 0xFF
                lo, _hi = self.mem.read(self.root + 16 * bus, _QQ)
                cost += self.walk_read_ns
                if not lo & 1:
                    raise DmaFault(rid, iova, write, 0x01)
                clo, chi = self.mem.read((lo & ~0xFFF) + 16 * devfn, _QQ)
                cost += self.walk_read_ns
                if not clo & 1:
                    raise DmaFault(rid, iova, write, 0x02)
                ctx = self.context_cache[rid] = ((chi >> 8) & 0xFFFF, clo & ~0xFFF)
            did, table = ctx
            if self.mem.gen != self._walks_gen:
                self._walks.clear()
                self._misses.clear()
                self._walks_gen = self.mem.gen
            wkey = (table, iova >> 12, need)
            walk = self._walks.get(wkey)
            if walk is not None:
                v, level, reads = walk
                cost += reads * self.walk_read_ns
                table = v & _ADDR
            else:
                v = 0
                level = 4
                reads = 0
                for idx in walk_indices(iova):       # the page walk: 4 reads (3 to a superpage)
                    (v,) = self.mem.read(table + 8 * idx)
                    cost += self.walk_read_ns
                    reads += 1
                    if not v & need:
                        raise DmaFault(rid, iova, write, 0x05 if write else 0x06)
                    table = v & _ADDR
                    if level == 2 and v & PTE_PS:
                        break
                    level -= 1
                if len(self._walks) >= _MEMO_MAX:
                    self._walks.clear()
                self._walks[wkey] = (v, level, reads)
        except DmaFault as f:
            m.iommu_faults += 1
            self.faults.append(f.line())
            self.last = f.line()
            raise
        perms = v & (PTE_R | PTE_W)
        if level == 2:                            # a 2 MiB page
            page = table & ~(SUPERPAGE - 1)
            key, entry, mask = (did, iova >> 21, 2), (page, perms), SUPERPAGE - 1
        else:
            key, entry, mask = (did, iova >> 12, 1), (table, perms), 0xFFF
        iotlb[key] = entry
        hpa = entry[0] | (iova & mask)
        if cached_ctx:
            # (a walk that read the root and context entries cost more than the next one will)
            if len(self._misses) >= _MEMO_MAX:
                self._misses.clear()
            self._misses[(rid, iova >> 12, need)] = (key, entry, mask, cost)
        if len(iotlb) > self.iotlb_entries:
            iotlb.popitem(last=False)    # LRU eviction
        return hpa, cost, False

    # -- the pane ---------------------------------------------------------------------
    def view(self, names: dict[int, str]) -> TableView:
        rows = []
        for rid, did in sorted(self.devices.items()):
            d = self.domains[did]
            for iova, hpa, size, perms in d.ranges[:4]:
                p = ("R" if perms & PTE_R else "-") + ("W" if perms & PTE_W else "-")
                rows.append((rid_str(rid), names.get(rid, ""), str(did),
                             f"0x{iova:x}-0x{iova + size - 1:x}",
                             f"0x{hpa:x}" if perms else "unmapped", p))
        m = self.metrics
        total = m.iotlb_hits + m.iotlb_misses
        rate = f"{100 * m.iotlb_hits / total:.1f} %" if total else "–"
        walk = "a 3-read walk to a 2 MiB page, 4 to a 4 KiB page" if self.superpages else "a 4-read page walk each"
        head = [f"IOTLB {len(self.iotlb)}/{self.iotlb_entries} · hits {m.iotlb_hits:,} · misses {m.iotlb_misses:,} "
                f"({walk}) · {rate} · translations {m.iommu_translations:,} · "
                f"faults {m.iommu_faults:,}"]
        faults = list(self.faults)
        head += faults[-1:]                       # the newest fault, in full, above the table
        # the IOTLB's newest entries: (domain, guest page) → host page, and R/W
        newest = list(self.iotlb.items())[-4:][::-1]
        lines = (["IOTLB newest: " + " · ".join(
                    f"dom {did} 0x{gfn << (12 if sz == 1 else 21):x}→0x{page:x}{'' if sz == 1 else ' (2 MiB)'} "
                    f"{'R' if perms & PTE_R else '-'}{'W' if perms & PTE_W else '-'}"
                    for (did, gfn, sz), (page, perms) in newest)] if newest else [])
        lines += faults[-3:-1][::-1]              # earlier faults, newest first
        return TableView("IOMMU (VT-d)", ("RID", "device", "dom", "IOVA (GPA)", "HPA", "perm"),
                         tuple(rows), tuple(lines), head=tuple(head))
