"""VT-d: the remapping structures as bytes, the walk, the IOTLB, DMAR faults."""
import struct

import pytest
from hypothesis import given, settings, strategies as st

from iovtui.sim.iommu import FAULT_REASONS, PTE_R, PTE_W, DmaFault, Iommu, parse_rid, rid_str, walk_indices
from iovtui.sim.metrics import Metrics

from conftest import make_preset, sim_for

HPA0 = 0x1_0000_0000
RAM = 16 << 20
WALK_NS = 100
VF0 = parse_rid("02:10.0")
VF1 = parse_rid("02:10.2")


def one_vm(entries=4, read_only=()):
    """Domain 1 maps 16 MiB of GPA space to HPA 4 GiB for VF 02:10.0."""
    m = Metrics()
    io = Iommu(entries, WALK_NS, m)
    io.domain(1, "vm0")
    io.attach(VF0, 1)
    io.map(1, 0, HPA0, RAM)
    for gpa in read_only:
        io.map(1, gpa, HPA0 + gpa, 0x1000, read=True, write=False)
    return io, m


class CountingReads:
    """Counts the reads the walk makes of the remapping structures."""

    def __init__(self, io):
        self.n = 0
        inner = io.mem.read

        def read(hpa, *fmt):
            self.n += 1
            return inner(hpa, *fmt)
        io.mem.read = read


# -- requester IDs ------------------------------------------------------------------
@pytest.mark.parametrize("s,rid", [("02:00.0", 0x0200), ("02:10.0", 0x0280), ("02:10.2", 0x0282),
                                   ("02:1f.7", 0x02FF), ("ff:00.1", 0xFF01)])
def test_rid_strings_round_trip(s, rid):
    assert parse_rid(s) == rid and rid_str(rid) == s


# -- the structures, byte for byte ----------------------------------------------------
def test_root_and_context_entries_are_16_byte_entries_with_domain_and_table():
    io, _ = one_vm()
    bus, devfn = VF0 >> 8, VF0 & 0xFF
    lo, hi = struct.unpack_from("<QQ", io.mem.pages[io.root], 16 * bus)
    assert lo & 1 and hi == 0                                   # present, context-table pointer
    assert all(io.mem.read(io.root + 16 * b, struct.Struct("<QQ")) == (0, 0) for b in range(256) if b != bus)
    ctx = lo & ~0xFFF
    clo, chi = struct.unpack_from("<QQ", io.mem.pages[ctx], 16 * devfn)
    assert clo & 1 and (clo >> 2) & 3 == 0                      # present, translation type 00
    assert clo & ~0xFFF == io.domains[1].pgd                    # second-level page-table pointer
    assert chi & 7 == 2 and (chi >> 8) & 0xFFFF == 1            # AW = 2 (48-bit, 4-level), DID 1
    assert struct.unpack_from("<QQ", io.mem.pages[ctx], 16 * (devfn + 2)) == (0, 0)


@pytest.mark.parametrize("iova,idx", [
    (0x0, (0, 0, 0, 0)),
    (0x1000, (0, 0, 0, 1)),
    (0x20_0000, (0, 0, 1, 0)),
    (0x4000_0000, (0, 1, 0, 0)),
    (0x80_0000_0000, (1, 0, 0, 0)),
    (0x7F00_0000, (0, 1, 0x1F8, 0)),
    (0xFFFF_FFFF_FFFF, (0x1FF, 0x1FF, 0x1FF, 0x1FF)),
    ((5 << 39) | (6 << 30) | (7 << 21) | (8 << 12) | 0xABC, (5, 6, 7, 8)),
])
def test_walk_indices_take_9_bits_per_level(iova, idx):
    assert walk_indices(iova) == idx


def test_translation_follows_the_8_byte_entries_level_by_level():
    io, _ = one_vm(read_only=[0x3000])
    for gpa in (0x0, 0x3000, 0x5123, RAM - 1):
        table = io.domains[1].pgd
        for level, i in zip((4, 3, 2, 1), walk_indices(gpa)):
            (e,) = struct.unpack_from("<Q", io.mem.pages[table], 8 * i)
            assert e & (PTE_R | PTE_W), level
            table = e & 0x000F_FFFF_FFFF_F000
        perms = e & 3
        assert table == HPA0 + (gpa & ~0xFFF)
        assert perms == (PTE_R if gpa == 0x3000 else PTE_R | PTE_W)
        assert io.translate(VF0, gpa, False)[0] == HPA0 + gpa
    # the walk really reads the tables: clearing a leaf PTE in the bytes makes it fault
    table = io.domains[1].pgd
    for i in walk_indices(0x6000)[:3]:
        table = struct.unpack_from("<Q", io.mem.pages[table], 8 * i)[0] & 0x000F_FFFF_FFFF_F000
    struct.pack_into("<Q", io.mem.pages[table], 8 * walk_indices(0x6000)[3], 0)
    with pytest.raises(DmaFault):
        io.translate(VF0, 0x6000, True)


# -- the IOTLB -----------------------------------------------------------------------------
def test_a_miss_walks_the_tables_and_a_hit_reads_nothing():
    io, m = one_vm()
    reads = CountingReads(io)
    hpa, cost, hit = io.translate(VF0, 0x1234, True)
    assert (hpa, hit) == (HPA0 + 0x1234, False)
    assert reads.n == 6 and cost == 6 * WALK_NS               # root + context + the 4-level walk
    hpa, cost, hit = io.translate(VF0, 0x1FFC, False)          # same page
    assert (hpa, cost, hit) == (HPA0 + 0x1FFC, 0, True) and reads.n == 6
    assert (m.iommu_translations, m.iotlb_hits, m.iotlb_misses) == (2, 1, 1)


def test_the_context_cache_makes_a_later_miss_the_4_read_page_walk():
    """DOMAIN.md: a miss costs a page walk (4 reads).  The root and context
    entries are read the first time a device is seen, then the context cache
    answers, until the host rewrites the context entry."""
    io, m = one_vm()
    reads = CountingReads(io)
    io.translate(VF0, 0x1234, True)
    assert reads.n == 6
    _hpa, cost, hit = io.translate(VF0, 0x5000, True)        # another page: an IOTLB miss
    assert not hit and cost == 4 * WALK_NS and reads.n == 10
    io.domain(2, "other")
    io.map(2, 0, HPA0 + RAM, RAM)
    io.attach(VF0, 2)                                          # invalidates the device's context entry
    reads.n = 0
    hpa, cost, hit = io.translate(VF0, 0x5000, True)
    assert hpa == HPA0 + RAM + 0x5000 and cost == 6 * WALK_NS and reads.n == 6


def test_a_page_missed_again_costs_its_walk_again_until_the_tables_change():
    """An evicted page's next miss is the same 4-read walk at the same cost and
    the same entry; once the host unmaps the page, the next DMA to it faults."""
    io, m = one_vm(entries=1)
    first = io.translate(VF0, 0x7008, True)
    assert first == (HPA0 + 0x7008, 6 * WALK_NS, False)         # root + context + walk
    for _ in range(3):
        assert io.translate(VF0, 0x9000, True) == (HPA0 + 0x9000, 4 * WALK_NS, False)   # evicts 0x7000
        assert io.translate(VF0, 0x7010, True) == (HPA0 + 0x7010, 4 * WALK_NS, False)   # evicts 0x9000
        assert list(io.iotlb) == [(1, 0x7, 1)]
    assert (m.iotlb_hits, m.iotlb_misses) == (0, 7)
    io.unmap(1, 0x7000, 0x1000)
    io.translate(VF0, 0x9000, True)
    with pytest.raises(DmaFault) as e:
        io.translate(VF0, 0x7010, True)
    assert e.value.reason == 0x05 and m.iommu_faults == 1


def test_iotlb_lru_eviction_at_its_configured_size():
    io, m = one_vm(entries=3)
    for page in (1, 2, 3):
        io.translate(VF0, page << 12, True)
    io.translate(VF0, 1 << 12, True)                           # page 1 is now most recent
    io.translate(VF0, 4 << 12, True)                           # evicts page 2 (least recently used)
    assert len(io.iotlb) == 3
    assert [k[1] for k in io.iotlb] == [3, 1, 4]
    assert io.translate(VF0, 1 << 12, True)[2] is True
    assert io.translate(VF0, 2 << 12, True)[2] is False
    assert io.translate(VF0, 3 << 12, True)[2] is False        # 3 was evicted by 2
    assert (m.iotlb_hits, m.iotlb_misses) == (2, 6)
    assert m.iommu_translations == m.iotlb_hits + m.iotlb_misses


def test_iotlb_is_tagged_by_domain_id():
    m = Metrics()
    io = Iommu(8, WALK_NS, m)
    for did, rid, hpa in ((1, VF0, HPA0), (2, VF1, HPA0 + 0x4000_0000)):
        io.domain(did, f"vm{did - 1}")
        io.attach(rid, did)
        io.map(did, 0, hpa, RAM)
    assert io.translate(VF0, 0x5000, True)[0] == HPA0 + 0x5000
    hpa, _c, hit = io.translate(VF1, 0x5000, True)
    assert (hpa, hit) == (HPA0 + 0x4000_0000 + 0x5000, False)  # same GPA, other domain: its own entry
    assert {k[:2] for k in io.iotlb} == {(1, 5), (2, 5)}
    io.unmap(2, 0x5000, 0x1000)                                # flushes domain 2 only
    assert {k[:2] for k in io.iotlb} == {(1, 5)}
    assert io.translate(VF0, 0x5000, True)[2] is True


# -- DMAR faults ------------------------------------------------------------------------------
def test_the_domain_md_fault_line_exactly():
    m = Metrics()
    io = Iommu(4, WALK_NS, m)
    io.domain(2, "vm1")
    io.attach(VF1, 2)
    io.map(2, 0, HPA0, RAM)
    with pytest.raises(DmaFault) as e:
        io.translate(VF1, 0x7F000000, True)
    assert e.value.line() == ("DMAR: [DMA Write NO_PASID] Request device [02:10.2] fault addr 0x7f000000 "
                              "[fault reason 0x05] PTE Write access is not set")
    assert io.last == e.value.line() and list(io.faults) == [e.value.line()]


@pytest.mark.parametrize("rid_s,addr,write,reason", [
    ("03:00.0", 0x1000, True, 0x01),      # no root entry for bus 3
    ("02:10.4", 0x1000, False, 0x02),     # bus 2 has a context table, devfn 0x84 is not present
    ("02:10.0", 0x7F00_0000, True, 0x05),  # beyond the VM's RAM: not present, write
    ("02:10.0", 0x7F00_0000, False, 0x06),  # not present, read
    ("02:10.0", 0x3010, True, 0x05),       # read-only page, write
    ("02:10.0", 1 << 48, True, 0x04),      # above the 48-bit address width
])
def test_each_fault_reason_with_its_linux_line(rid_s, addr, write, reason):
    io, m = one_vm(read_only=[0x3000])
    with pytest.raises(DmaFault) as e:
        io.translate(parse_rid(rid_s), addr, write)
    kind = "DMA Write" if write else "DMA Read"
    assert e.value.reason == reason
    # the fault recording register holds the page address: the low 12 bits print as 0
    assert e.value.line() == (f"DMAR: [{kind} NO_PASID] Request device [{rid_s}] fault addr 0x{addr & ~0xFFF:x} "
                              f"[fault reason 0x{reason:02x}] {FAULT_REASONS[reason]}")
    assert m.iommu_faults == 1 and io.faults[-1] == e.value.line()
    assert not io.iotlb                                          # a fault caches nothing


def test_linux_reason_strings():
    assert FAULT_REASONS[0x01] == "Present bit in root entry is clear"
    assert FAULT_REASONS[0x02] == "Present bit in context entry is clear"
    assert FAULT_REASONS[0x05] == "PTE Write access is not set"
    assert FAULT_REASONS[0x06] == "PTE Read access is not set"


def test_a_read_only_page_reads_but_a_cached_read_does_not_let_a_write_through():
    io, m = one_vm(read_only=[0x3000])
    assert io.translate(VF0, 0x3010, False)[0] == HPA0 + 0x3010
    assert io.translate(VF0, 0x3010, False)[2] is True
    with pytest.raises(DmaFault) as e:
        io.translate(VF0, 0x3010, True)
    assert e.value.reason == 0x05 and m.iommu_faults == 1


def test_the_fault_log_is_bounded():
    io, m = one_vm()
    for i in range(50):
        with pytest.raises(DmaFault):
            io.translate(VF0, 0x7F00_0000 + i * 0x1000, True)
    assert m.iommu_faults == 50
    assert len(io.faults) <= 8 and io.faults[-1].endswith("PTE Write access is not set")
    assert "fault addr 0x7f031000" in io.faults[-1]


def test_unmap_flushes_and_faults():
    io, m = one_vm()
    io.translate(VF0, 0x8000, True)
    io.unmap(1, 0x8000, 0x1000)
    with pytest.raises(DmaFault) as e:
        io.translate(VF0, 0x8000, False)
    assert e.value.reason == 0x06


# -- inside a run -----------------------------------------------------------------------------
def test_a_domain_per_vm_maps_its_whole_ram_to_its_hpas():
    vms = [{"name": f"vm{i}", "mac": f"52:54:00:00:00:0{i + 1}"} for i in range(3)]
    s = sim_for(make_preset(vm=vms), "sriov", packets=1)
    io = s.technique.iommu
    for vm, vf in zip(s.vms, s.technique.nic.vfs):
        did = io.devices[vf.rid]
        assert io.domains[did].name == vm.name
        for gpa in (0, 0x1234, vm.mem.size // 2 + 8, vm.mem.size - 1):
            assert io.translate(vf.rid, gpa, True)[0] == vm.mem.hpa(gpa)
        with pytest.raises(DmaFault):
            io.translate(vf.rid, vm.mem.size, True)                # one byte past its RAM


def test_blocked_dma_leaves_ram_unchanged_and_is_counted():
    p = make_preset(vm=[{"name": "vm0", "mac": "52:54:00:00:00:01"}], faults={"readonly_dma": 1.0},
                    traffic={"count": 40})
    s = sim_for(p, "sriov", packets=40)
    t = s.technique
    ro = [r for r in s.vms[0].mem.regions if "read-only" in r.label]
    assert ro
    before = [bytes(s.vms[0].mem.ram[r.start:r.end]) for r in ro]
    d = s.run() and s.summary()
    assert [bytes(s.vms[0].mem.ram[r.start:r.end]) for r in ro] == before
    assert d["iommu"]["faults"] > 0
    assert d["iommu"]["faults"] == d["drops_by_reason"]["IOMMU blocked the DMA write (DMAR fault)"]
    assert t.iommu.last.startswith("DMAR: [DMA Write NO_PASID] Request device [02:10.0] fault addr 0x")
    assert t.iommu.last.endswith("[fault reason 0x05] PTE Write access is not set")


def test_the_iommu_pane():
    io, m = one_vm(read_only=[0x3000])
    io.translate(VF0, 0x1000, True)
    io.translate(VF0, 0x1000, True)
    with pytest.raises(DmaFault):
        io.translate(VF0, 0x7F00_0000, True)
    v = io.view({VF0: "VF0 → vm0"})
    assert v.columns[:3] == ("RID", "device", "dom")
    assert v.rows[0] == ("02:10.0", "VF0 → vm0", "1", f"0x0-0x{RAM - 1:x}", f"0x{HPA0:x}", "RW")
    assert v.rows[1][-1] == "R-"
    assert v.head[0].startswith("IOTLB 1/4 ") and "hits 1 · misses 2" in v.head[0] and "33.3 %" in v.head[0]
    # the newest fault comes above the table, where a short pane still shows it
    assert v.head[1].startswith("DMAR: [DMA Write NO_PASID] Request device [02:10.0] fault addr 0x7f000000")
    # what the IOTLB holds: the translation the two DMAs to GPA 0x1000 used
    assert v.lines[0] == f"IOTLB newest: dom 1 0x1000→0x{HPA0 + 0x1000:x} RW"


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([VF0, VF1]), st.integers(0, (1 << 49) - 1), st.booleans()),
                max_size=60))
def test_translations_stay_inside_the_devices_own_domain(dmas):
    m = Metrics()
    io = Iommu(4, WALK_NS, m)
    bases = {VF0: HPA0, VF1: HPA0 + 0x4000_0000}
    for did, rid in ((1, VF0), (2, VF1)):
        io.domain(did, str(did))
        io.attach(rid, did)
        io.map(did, 0, bases[rid], RAM)
    for rid, gpa, write in dmas:
        try:
            hpa = io.translate(rid, gpa, write)[0]
        except DmaFault as f:
            assert gpa >= RAM and f.reason in (0x04, 0x05, 0x06)
            continue
        assert gpa < RAM and hpa == bases[rid] + gpa
    assert m.iommu_translations == len(dmas) == m.iotlb_hits + m.iotlb_misses
    assert len(io.iotlb) <= 4


# -- issue 14: flushes and superpages ---------------------------------------------------------------
def _iotlb_line(io):
    lines = [x for x in io.view({VF0: "VF0 → vm0"}).lines if x.startswith("IOTLB newest")]
    return lines[0] if lines else ""


def test_a_map_keeps_the_iotlb_an_unmap_and_a_permission_change_flush_it():
    """intel-iommu: a map of new pages flushes only the write buffer; an unmap
    (iommu_flush_iotlb_psi) and a permission change invalidate those pages."""
    m = Metrics()
    io = Iommu(8, WALK_NS, m)
    io.domain(1, "vm0")
    io.attach(VF0, 1)
    io.map(1, 0, HPA0, 0x10_0000)
    io.translate(VF0, 0x1000, True)
    io.translate(VF0, 0x2000, True)
    shown = _iotlb_line(io)
    assert "dom 1 0x1000→" in shown and "dom 1 0x2000→" in shown
    io.map(1, 0x20_0000, HPA0 + 0x20_0000, 0x1000)          # a new mapping
    assert _iotlb_line(io) == shown and io.translate(VF0, 0x1000, True)[2] is True
    io.map(1, 0x2000, HPA0 + 0x2000, 0x1000, read=True, write=False)   # a permission change
    assert "0x2000→" not in _iotlb_line(io) and "0x1000→" in _iotlb_line(io)
    with pytest.raises(DmaFault):
        io.translate(VF0, 0x2000, True)                     # not answered by a stale RW entry
    io.unmap(1, 0x1000, 0x1000)
    assert "0x1000→" not in _iotlb_line(io)
    assert io.translate(VF0, 0x3000, True)[2] is False      # untouched pages were not cached: a walk
    with pytest.raises(DmaFault):
        io.translate(VF0, 0x1000, True)


def test_superpages_map_2mib_with_a_3_read_walk_and_one_entry_per_2mib():
    m = Metrics()
    io = Iommu(4, WALK_NS, m, superpages=True)
    io.domain(1, "vm0")
    io.attach(VF0, 1)
    io.map(1, 0, HPA0, RAM)
    table = io.domains[1].pgd
    for i in walk_indices(0x30_1234)[:2]:
        table = struct.unpack_from("<Q", io.mem.pages[table], 8 * i)[0] & 0x000F_FFFF_FFFF_F000
    (pde,) = struct.unpack_from("<Q", io.mem.pages[table], 8 * walk_indices(0x30_1234)[2])
    assert pde & 0x80 and pde & 3 == 3 and pde & ~0xFFF == HPA0 + 0x20_0000     # PS: a 2 MiB page
    io.translate(VF0, 0x1000, True)                          # root + context read once
    reads = CountingReads(io)
    hpa, cost, hit = io.translate(VF0, 0x30_1234, True)
    assert (hpa, hit, reads.n, cost) == (HPA0 + 0x30_1234, False, 3, 3 * WALK_NS)
    assert io.translate(VF0, 0x3F_FFF0, False)[2] is True and reads.n == 3   # same 2 MiB entry
    assert "(2 MiB)" in _iotlb_line(io) and "3-read walk" in io.view({}).head[0]
    # a 4 KiB permission change inside a superpage splits it and flushes its entry
    io.map(1, 0x30_2000, HPA0 + 0x30_2000, 0x1000, read=True, write=False)
    with pytest.raises(DmaFault):
        io.translate(VF0, 0x30_2000, True)
    assert io.translate(VF0, 0x30_3000, True)[0] == HPA0 + 0x30_3000


def test_superpages_lower_the_miss_rate_in_iotlb_thrash():
    from iovtui.sim.preset import load_preset
    base = load_preset("iotlb-thrash")
    four_k = sim_for(base, "sriov", packets=600)
    four_k.run()
    big = sim_for(base.with_options(iommu={"superpages": True}), "sriov", packets=600)
    big.run()
    a, b = four_k.summary()["iommu"], big.summary()["iommu"]
    assert a["translations"] == b["translations"] and b["iotlb_misses"] * 2 <= a["iotlb_misses"]
    assert big.summary()["options"]["superpages"] is True


def test_old_sriov_iotlb_entries_key_still_works():
    p = make_preset(sriov={"iotlb_entries": 3})
    assert p.iommu["iotlb_entries"] == 3 and any("[iommu] iotlb_entries" in w for w in p.warnings)
    assert sim_for(p, "sriov", packets=1).technique.options()["iotlb_entries"] == 3
    q = make_preset(sriov={"iotlb_entries": 3}, iommu={"iotlb_entries": 9})
    assert q.iommu["iotlb_entries"] == 9
