"""e1000 registers and descriptors, VT-d tables and faults, the NIC switch."""
import struct

from hypothesis import given, settings, strategies as st

from iovtui.sim.e1000 import (ICR_RXT0, ICR_TXDW, REG, RXD_STAT_DD, RXD_STAT_EOP, LegacyRing, RegisterFile)
from iovtui.sim.iommu import DmaFault, Iommu, parse_rid, rid_str, walk_indices
from iovtui.sim.memory import GuestMemory
from iovtui.sim.metrics import Metrics
from iovtui.sim.nic import Nic

from conftest import four_vm_preset, make_preset, sim_for

import pytest


def test_register_offsets():
    assert REG == {"CTRL": 0x0000, "STATUS": 0x0008, "ICR": 0x00C0, "ITR": 0x00C4, "IMS": 0x00D0,
                   "IMC": 0x00D8, "RDBAL": 0x2800, "RDBAH": 0x2804, "RDLEN": 0x2808, "RDH": 0x2810,
                   "RDT": 0x2818, "TDBAL": 0x3800, "TDBAH": 0x3804, "TDLEN": 0x3808, "TDH": 0x3810, "TDT": 0x3818,
                   # the ones coalesced MMIO, mitigation and the delay timers need (8254x manual)
                   "MDIC": 0x0020, "ICS": 0x00C8, "RCTL": 0x0100, "TCTL": 0x0400, "RDTR": 0x2820,
                   "RADV": 0x282C, "TIDV": 0x3820, "TADV": 0x382C}


def test_icr_read_clears_and_ims_imc_mask():
    r = RegisterFile()
    r.write(REG["IMS"], ICR_RXT0)
    r.raise_cause(ICR_RXT0 | ICR_TXDW)
    assert r.asserted
    r.write(REG["IMC"], ICR_RXT0)
    assert not r.asserted                    # RXT0 masked, TXDW never enabled
    assert r.read(REG["ICR"]) == ICR_RXT0 | ICR_TXDW
    assert r.read(REG["ICR"]) == 0           # read-to-clear
    assert r.read(REG["STATUS"]) & 0x2       # link up


def test_legacy_descriptor_layouts_and_ownership():
    m = GuestMemory("vm", 4 << 20, 0)
    rx = LegacyRing(m, "rx", 8, "rx ring")
    i = rx.post_rx(0xABCDE000, "t")
    rx.tail = rx.next_to_use
    assert rx.owner(i) == "device" and rx.hw_owned() == 1
    slot, addr, _ = rx.hw_fetch()
    assert (slot, addr) == (i, 0xABCDE000)
    rx.hw_done_rx(slot, 1514)
    raw = bytes(m.ram[rx.base:rx.base + 16])
    addr, length, csum, status, errors, special = struct.unpack("<QHHBBH", raw)
    assert (addr, length, status) == (0xABCDE000, 1514, RXD_STAT_DD | RXD_STAT_EOP)
    assert rx.owner(i) == "used" and rx.hw_owned() == 0
    assert rx.reap() == (i, "t", 1514) and rx.owner(i) == "driver"
    tx = LegacyRing(m, "tx", 8, "tx ring")
    tx.post_tx(0x5000, 60, "x")
    addr, length, cso, cmd, status, css, special = struct.unpack_from("<QHBBBBH", m.ram, tx.base)
    assert (addr, length, cmd, status) == (0x5000, 60, 0x01 | 0x02 | 0x08, 0)


def test_ring_wraps_and_keeps_one_slot_free():
    m = GuestMemory("vm", 4 << 20, 0)
    rx = LegacyRing(m, "rx", 8, "rx ring")
    for round_ in range(5):
        while rx.unused():
            rx.post_rx(0x1000, round_)
        rx.tail = rx.next_to_use
        assert rx.hw_owned() == 7          # head..tail-1, never all 8
        while (got := rx.hw_fetch()) is not None:
            rx.hw_done_rx(got[0], 64)
        while rx.reap() is not None:
            pass


def test_rids_follow_first_vf_offset_and_stride():
    p = four_vm_preset()
    s = sim_for(p, "sriov")
    assert [f.bdf for f in s.technique.nic.vfs] == ["02:10.0", "02:10.2", "02:10.4", "02:10.6"]
    assert rid_str(parse_rid("02:00.0") + 128 + 2 * 5) == "02:11.2"


def test_page_walk_indices():
    assert walk_indices(0) == (0, 0, 0, 0)
    assert walk_indices(0x7F000000) == (0, 1, 0x1F8, 0)
    assert walk_indices((1 << 39) | (2 << 30) | (3 << 21) | (4 << 12) | 0x123) == (1, 2, 3, 4)


def iommu(entries=4):
    m = Metrics()
    io = Iommu(entries, 100, m)
    io.domain(1, "vm0")
    rid = parse_rid("02:10.0")
    io.attach(rid, 1)
    io.map(1, 0, 0x1_0000_0000, 16 << 20)
    io.map(1, 0x200000, 0x1_0020_0000, 0x1000, read=True, write=False)
    return io, m, rid


def test_iotlb_hits_misses_and_lru():
    io, m, rid = iommu(entries=2)
    hpa, cost, hit = io.translate(rid, 0x1234, True)
    assert (hpa, cost, hit) == (0x1_0000_1234, 600, False)   # root + context + 4 levels
    assert io.translate(rid, 0x1FFF, True)[2] is True
    io.translate(rid, 0x2000, True)
    io.translate(rid, 0x3000, True)                           # evicts page 1 (least recently used)
    assert io.translate(rid, 0x1000, False)[2] is False
    assert (m.iotlb_hits, m.iotlb_misses) == (1, 4)


@pytest.mark.parametrize("rid_s,addr,write,reason,text", [
    ("02:10.0", 0x7F000000, True, 0x05, "PTE Write access is not set"),
    ("02:10.0", 0x7F000000, False, 0x06, "PTE Read access is not set"),
    ("02:10.0", 0x200010, True, 0x05, "PTE Write access is not set"),
    ("02:10.2", 0x1000, True, 0x02, "Present bit in context entry is clear"),
    ("03:00.0", 0x1000, True, 0x01, "Present bit in root entry is clear"),
])
def test_dmar_fault_lines(rid_s, addr, write, reason, text):
    io, m, _ = iommu()
    with pytest.raises(DmaFault) as e:
        io.translate(parse_rid(rid_s), addr, write)
    kind = "Write" if write else "Read"
    # the fault recording register holds the page address: the low 12 bits are clear
    assert e.value.line() == (f"DMAR: [DMA {kind} NO_PASID] Request device [{rid_s}] fault addr 0x{addr & ~0xFFF:x} "
                              f"[fault reason 0x{reason:02x}] {text}")
    assert m.iommu_faults == 1 and io.faults[-1] == e.value.line()
    assert io.translate(parse_rid("02:10.0"), 0x200010, False)[0] == 0x1_0020_0010   # read-only page reads


def nic(**nic_cfg):
    p = make_preset(nic=nic_cfg, vm=[{"name": "a", "mac": "52:54:00:00:00:01", "vlan": 10},
                                     {"name": "b", "mac": "52:54:00:00:00:02", "vlan": 10},
                                     {"name": "c", "mac": "52:54:00:00:00:03", "vlan": 20, "trust": False}])
    return sim_for(p, "sriov").technique.nic


def test_switch_forwards_by_mac_and_isolates_vlans():
    n = nic()
    outs, why = n.from_wire("52:54:00:00:00:02", 10)
    assert [f.name for f in outs] == ["VF1"] and not why
    outs, why = n.from_wire("52:54:00:00:00:03", 10)
    assert outs == [] and "VLAN" in why
    outs, _ = n.from_wire("ff:ff:ff:ff:ff:ff", 10)
    assert [f.name for f in outs] == ["VF0", "VF1"]            # replicated within the VLAN only
    outs, why = n.from_wire("52:54:00:00:00:99", 10)
    assert [f.name for f in outs] == ["PF"]                    # unknown unicast: the PF's default pool
    local, why = n.from_vf(n.vfs[0], "52:54:00:00:00:01", "52:54:00:00:00:02")
    assert local is n.vfs[1] and not why
    local, why = n.from_vf(n.vfs[0], "52:54:00:00:00:01", "52:54:00:00:00:03")
    assert local is None and "another VLAN" in why


def test_spoof_check_and_trust():
    n = nic()
    _l, why = n.from_vf(n.vfs[0], "02:de:ad:be:ef:01", "02:00:00:00:00:fe")
    assert "spoofed" in why and n.vfs[0].spoofed == 1 and n.spoofed_total == 1
    t = nic(trust=True, spoof_check=False)
    _l, why = t.from_vf(t.vfs[0], "02:de:ad:be:ef:01", "02:00:00:00:00:fe")
    assert not why
    outs, why = t.from_wire("52:54:00:00:00:99", 10)
    assert outs and not why                                       # a trusted VF takes unknown unicast


@settings(max_examples=25, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 1), st.integers(0, (32 << 20) - 1), st.booleans()), max_size=40))
def test_a_vf_never_touches_another_vms_memory(dmas):
    """Whatever GPA a VF is told to DMA to, only its own VM's memory can change."""
    s = sim_for(four_vm_preset(), "sriov", packets=1)
    t = s.technique
    before = [bytes(vm.mem.ram) for vm in s.vms]
    for vf_index, gpa, write in dmas:
        port = t.ports[vf_index]
        try:
            hpa, _ = t._dma(port, gpa, write, "")
        except DmaFault:
            continue
        for vm in s.vms:
            if vm.mem.hpa_base <= hpa < vm.mem.hpa_base + vm.mem.size:
                assert vm is port.vm
                if write:
                    vm.mem.write(hpa - vm.mem.hpa_base, b"\xAA", "test")
    for i, vm in enumerate(s.vms):
        if i > 1:
            assert bytes(vm.mem.ram) == before[i]
