"""SR-IOV direct assignment: DMA through the IOMMU, no exits but interrupts, zero copies."""
import json
import struct

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from iovtui.sim.e1000 import RXD_STAT_DD, RXD_STAT_EOP
from iovtui.sim.iommu import DmaFault
from iovtui.sim.paths.sriov import ROGUE_GPA, SrIov
from iovtui.sim.trace import ListSink, Trace

from conftest import four_vm_preset, make_preset, run_cli, sim_for

A, B = "52:54:00:00:00:01", "52:54:00:00:00:02"
INTERRUPT_EXITS = {"EXTERNAL_INTERRUPT", "APIC_WRITE", "MSR_WRITE"}


def traced(preset, packets=200, seed=1):
    tr = Trace()
    sink = ListSink()
    tr.add_sink(sink)
    s = sim_for(preset, "sriov", packets=packets, seed=seed, trace=tr)
    return s, sink


def run(preset, packets=400, seed=1):
    s = sim_for(preset, "sriov", packets=packets, seed=seed)
    s.run()
    return s, s.summary()


def one_vm(**sections):
    sections.setdefault("vm", [{"name": "vm0", "mac": A}])
    return make_preset(**sections)


# -- exits --------------------------------------------------------------------------------
@pytest.mark.parametrize("direction", ["rx", "tx", "both"])
def test_exits_come_only_from_interrupts_two_per_interrupt(direction):
    s, sink = traced(one_vm(traffic={"direction": direction, "rate": "2 Gb/s"}), packets=400)
    s.run()
    d = s.summary()
    injected = d["interrupts"]["injected"]
    assert d["packets"]["delivered"] == 400 and injected > 0
    assert set(d["exits"]["by_reason"]) == {"EXTERNAL_INTERRUPT", "APIC_WRITE"}
    assert d["exits"]["by_reason"]["EXTERNAL_INTERRUPT"] == injected == d["exits"]["by_reason"]["APIC_WRITE"]
    assert d["exits"]["total"] == 2 * injected
    exits = [e for e in sink.events if e.kind == "exit"]
    assert exits and all(e.data["reason"] in INTERRUPT_EXITS for e in exits)
    assert all("interrupt" in e.data["cause"] or "EOI" in e.data["cause"] for e in exits)


def test_tail_writes_go_straight_to_the_vf():
    s, sink = traced(one_vm(traffic={"direction": "both"}), packets=300)
    s.run()
    tails = [e for e in sink.events if e.kind == "ring" and "tail" in e.msg]
    assert len(tails) > 10 and all("no exit" in e.msg for e in tails)
    port = s.technique.ports[0]
    assert port.rx.tail != 0 or port.rx.head != 0          # the driver did move the RX tail
    reasons = set(s.metrics.exits_by_reason)
    assert not reasons & {"EPT_MISCONFIG", "EPT_VIOLATION", "IO_INSTRUCTION", "APIC_ACCESS"}


def test_x2apic_eoi_exits_as_msr_write():
    _s, d = run(one_vm(sriov={"x2apic": True}, traffic={"rate": "500 Mb/s"}))
    assert set(d["exits"]["by_reason"]) == {"EXTERNAL_INTERRUPT", "MSR_WRITE"}
    assert d["exits"]["by_reason"]["MSR_WRITE"] == d["interrupts"]["injected"]


def test_posted_interrupts_make_it_exitless():
    _s, d = run(one_vm(sriov={"posted_interrupts": True}, traffic={"direction": "both"}))
    assert d["exits"]["total"] == 0 and d["exits"]["by_reason"] == {}
    assert d["interrupts"]["injected"] == 0 and d["interrupts"]["posted"] > 0
    assert d["packets"]["delivered"] == 400


def test_interrupt_moderation_batches_interrupts():
    fast = {"rate": "500 Mb/s", "sizes": 512}
    _s, none = run(one_vm(traffic=fast, sriov={"itr_us": 0}), packets=2000)
    _s, itr = run(one_vm(traffic=fast, sriov={"itr_us": 100}), packets=2000)
    assert none["packets"]["delivered"] == itr["packets"]["delivered"] == 2000
    assert itr["interrupts"]["injected"] < none["interrupts"]["injected"] / 2
    assert itr["exits"]["total"] == 2 * itr["interrupts"]["injected"]


# -- data: zero copies, every DMA through the IOMMU -----------------------------------------------
def test_zero_copies_and_the_frames_are_intact():
    s, d = run(one_vm(traffic={"direction": "both", "sizes": "imix"}), packets=600)
    assert s.metrics.copies == 0 and d["copies_per_packet"] == 0
    assert d["packets"]["delivered"] == 600 and d["corrupt_frames"] == 0


def test_every_rx_dma_is_translated_descriptor_frame_and_write_back():
    _s, d = run(one_vm(), packets=500)
    io = d["iommu"]
    assert io["translations"] == 3 * 500 == io["iotlb_hits"] + io["iotlb_misses"]
    assert io["faults"] == 0 and io["iotlb_misses"] > 0 and io["iotlb_hits"] > io["iotlb_misses"]


def test_a_tiny_iotlb_misses_more():
    _s, big = run(one_vm(sriov={"iotlb_entries": 256}), packets=500)
    _s, tiny = run(one_vm(sriov={"iotlb_entries": 1}), packets=500)
    assert tiny["iommu"]["iotlb_misses"] > 2 * big["iommu"]["iotlb_misses"]


def test_rx_descriptors_in_guest_ram_mid_run():
    """Descriptors the VF is done with carry DD|EOP and the length, and their
    buffer (at the GPA in the descriptor) holds the frame."""
    s = sim_for(one_vm(traffic={"rate": "line"}), "sriov", packets=400)
    port = s.technique.ports[0]
    rx, ram = port.rx, s.vms[0].mem.ram
    seen = 0
    while not s.complete and s.engine.pending:
        s.engine.run(max_events=53)
        i = rx.next_to_clean
        while i != rx.head:
            addr, length, _c, status, errors, _sp = struct.unpack_from("<QHHBBH", ram, rx.base + 16 * i)
            if port.rx_filled.get(i) is not None:
                assert status == RXD_STAT_DD | RXD_STAT_EOP and errors == 0
                assert length == port.rx_filled[i].size
                assert ram[addr:addr + length] == port.rx_filled[i].frame
                seen += 1
            i = (i + 1) % rx.size
        j = rx.head
        while j != rx.tail:                                  # still the hardware's: not written back
            assert ram[rx.base + 16 * j + 12] == 0
            j = (j + 1) % rx.size
    assert seen > 0


# -- the six steps ---------------------------------------------------------------------------------
def test_the_six_stages_are_narrated_in_order():
    assert len(SrIov.stages) == 6 and all(len(x) <= 24 for x in SrIov.stages)
    s, sink = traced(one_vm(), packets=20)
    s.run()
    ev = sink.events
    assert {e.stage for e in ev} >= {1, 2, 3, 4, 5, 6}
    assert ev[0].stage == 1 and "no exit" in ev[0].msg         # buffers posted before any frame
    for pid in (0, 7, 19):
        mine = [e for e in ev if e.data.get("pkt") == pid and e.stage in (2, 3, 5, 6)]
        assert [e.stage for e in mine] == [2, 3, 5, 6, 6] and mine[-1].kind == "deliver"   # read, then delivered
        gpa = mine[1].data["gpa"]
        i3, i5 = ev.index(mine[1]), ev.index(mine[2])
        walk = [e for e in ev[i3:i5] if e.stage == 4 and e.data.get("gpa") == gpa]
        assert len(walk) == 1 and walk[0].data["hpa"] == s.vms[0].mem.hpa(gpa) == mine[2].data["hpa"]
        assert mine[3].data["gpa"] == gpa                     # step 6: the guest reads the same GPA


# -- faults ------------------------------------------------------------------------------------------
def test_unmapped_buffers_fault_with_the_linux_line_and_drop():
    s, d = run(one_vm(faults={"unmapped_dma": 0.3}), packets=400)
    f = d["iommu"]["faults"]
    assert f > 0 and d["drops_by_reason"]["IOMMU blocked the DMA write (DMAR fault)"] == f
    assert d["packets"]["delivered"] + f == 400
    for line in s.technique.iommu.faults:
        addr = int(line.split("fault addr ")[1].split()[0], 16)
        assert ROGUE_GPA <= addr < ROGUE_GPA + 16 * 4096
        assert line == (f"DMAR: [DMA Write NO_PASID] Request device [02:10.0] fault addr 0x{addr:x} "
                        "[fault reason 0x05] PTE Write access is not set")
    assert s.technique.nic.vfs[0].dropped == f


def test_a_blocked_dma_write_reaches_no_ram():
    s = sim_for(one_vm(faults={"readonly_dma": 1.0}), "sriov", packets=1)
    port = s.technique.ports[0]
    ram = s.vms[0].mem
    gpa = next(r.start for r in ram.regions if "read-only" in r.label) + 0x810
    before = bytes(ram.ram)
    with pytest.raises(DmaFault) as e:
        s.technique._dma(port, gpa, True, "DMA write to")
    assert e.value.reason == 0x05 and bytes(ram.ram) == before
    assert s.technique._dma(port, gpa, False, "")[0] == ram.hpa(gpa)      # still readable


def test_ring_full_drops_once_the_posted_buffers_are_used():
    _s, d = run(one_vm(faults={"ring_full": True}, sriov={"ring_size": 16}), packets=100)
    assert d["packets"]["delivered"] == 15                    # one slot always stays free
    assert d["drops_by_reason"] == {"VF0 RX ring has no buffer posted (rx_no_dma_resources)": 85}


def test_link_down_drops_both_ways():
    _s, d = run(one_vm(traffic={"direction": "both"}, faults={"link_down_us": 100}), packets=400)
    assert d["drops_by_reason"]["physical link is down (no carrier)"] > 0
    assert d["packets"]["offered"] == d["packets"]["delivered"] + d["packets"]["dropped"]


FAULTS = [{"unmapped_dma": 0.2}, {"readonly_dma": 0.3}, {"ring_full": True}, {"spoofed_src": 0.4},
          {"link_down_us": 300}, {"foreign_vlan": 0.3}, {"unmapped_dma": 0.1, "spoofed_src": 0.1}]


@pytest.mark.parametrize("faults", FAULTS)
@pytest.mark.parametrize("direction", ["rx", "both"])
def test_conservation_mid_run_with_faults(faults, direction):
    p = four_vm_preset(traffic={"direction": direction, "rate": "line", "sizes": "imix"},
                       sriov={"ring_size": 16}, faults=faults)
    s = sim_for(p, "sriov", packets=1200)
    checks = 0
    while not s.complete and s.engine.pending:
        s.engine.run(max_events=61)
        m = s.metrics
        assert m.offered == m.delivered + m.dropped + s.in_flight()
        checks += 1
    m = s.metrics
    assert checks > 10 and s.in_flight() == 0 and m.offered == m.delivered + m.dropped
    assert m.dropped > 0 and m.corrupt == 0


def test_determinism_for_a_seed():
    p = four_vm_preset(traffic={"pattern": "poisson", "direction": "both", "sizes": "imix"},
                       faults={"unmapped_dma": 0.1, "spoofed_src": 0.1})
    runs = []
    for _ in range(2):
        s, sink = traced(p, packets=300, seed=42)
        s.run()
        runs.append((json.dumps(s.summary(), sort_keys=True), [json.dumps(e.to_dict()) for e in sink.events],
                     bytes(s.vms[0].mem.ram)))
    assert runs[0] == runs[1]
    s, sink = traced(p, packets=300, seed=43)
    s.run()
    assert [json.dumps(e.to_dict()) for e in sink.events] != runs[0][1]


# -- isolation --------------------------------------------------------------------------------------
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(0, 1),
                          st.one_of(st.integers(0, (32 << 20) - 1), st.integers(ROGUE_GPA, ROGUE_GPA + 0xFFFF),
                                    st.integers(0, (1 << 49) - 1)),
                          st.booleans(), st.binary(min_size=1, max_size=64)),
                max_size=50))
def test_no_dma_from_one_vms_vf_changes_another_vms_memory(dmas):
    """Whatever GPA a VF is told to DMA to, the IOMMU only lets it reach its own VM."""
    p = make_preset(vm=[{"name": "a", "mac": A}, {"name": "b", "mac": B}], faults={"readonly_dma": 0.5},
                    traffic={"count": 1})
    s = sim_for(p, "sriov", packets=1)
    t = s.technique
    vms = s.vms
    for vf_index, gpa, write, data in dmas:
        port = t.ports[vf_index]
        before = [bytes(vm.mem.ram) for vm in vms]
        try:
            hpa, _cost = t._dma(port, gpa, write, "")
        except DmaFault:
            assert [bytes(vm.mem.ram) for vm in vms] == before
            continue
        owner = [vm for vm in vms if vm.mem.hpa_base <= hpa < vm.mem.hpa_base + vm.mem.size]
        assert owner == [port.vm] and hpa == port.vm.mem.hpa(gpa)
        if write:
            off = hpa - port.vm.mem.hpa_base
            n = min(len(data), 4096 - (off & 0xFFF))      # a DMA write stays within its page
            port.vm.mem.write(off, data[:n], "test DMA")
        other = 1 - vf_index
        assert bytes(vms[other].mem.ram) == before[other]


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(1, 10_000), st.floats(0, 0.5), st.floats(0, 0.5))
def test_a_whole_run_for_one_vm_never_touches_the_other(seed, unmapped, readonly):
    p = make_preset(vm=[{"name": "a", "mac": A}, {"name": "b", "mac": B}],
                    traffic={"targets": ["a"], "direction": "both", "rate": "line"},
                    faults={"unmapped_dma": unmapped, "readonly_dma": readonly})
    s = sim_for(p, "sriov", packets=150, seed=seed)
    b = bytes(s.vms[1].mem.ram)
    s.run()
    assert bytes(s.vms[1].mem.ram) == b
    assert s.technique.nic.vfs[1].rx == 0 and s.metrics.delivered + s.metrics.dropped == 150


# -- description and views -----------------------------------------------------------------------------
def test_label_options_and_views():
    s = sim_for(four_vm_preset(sriov={"ring_size": 32, "iotlb_entries": 128}), "sriov", packets=50)
    t = s.technique
    assert t.label() == "SR-IOV (VF 02:10.0…, posted interrupts off)"
    o = t.options()
    assert (o["posted_interrupts"], o["x2apic"], o["iotlb_entries"], o["vfs"]) == (False, False, 128, 4)
    assert t.host_busy_ns() == 0
    s.run()
    q = t.queues()
    assert [(x.vm, x.name, x.kind, x.size) for x in q[:2]] == [("vm0", "rx", "vf-legacy", 32), ("vm0", "tx", "vf-legacy", 32)]
    assert len(q) == 8 and len({x.desc_gpa for x in q[:2]}) == 2
    rv = t.ring_views()
    assert len(rv) == 8 and rv[0].kind == "vf-legacy" and "no exit" in rv[0].note
    assert len(rv[0].rows) == 32 and rv[0].columns == ("idx", "addr", "len", "status")
    iv = t.iommu_view()
    assert not iv.idle_reason and [r[0] for r in iv.rows] == ["02:10.0", "02:10.2", "02:10.4", "02:10.6"]
    assert iv.rows[1][1] == "VF1 → vm1" and iv.rows[1][2] == "2"
    nv = t.nic_view()
    assert not nv.idle_reason and [r[1] for r in nv.rows] == ["02:00.0", "02:10.0", "02:10.2", "02:10.4", "02:10.6"]
    posted = sim_for(make_preset(sriov={"posted_interrupts": True}), "sriov", packets=1).technique
    assert posted.label() == "SR-IOV (VF 02:10.0, posted interrupts on)"


# -- the command line ---------------------------------------------------------------------------------
def test_cli_run_json():
    p = run_cli("run", "--technique", "sriov", "--packets", "500", "--json", check_rc=0)
    d = json.loads(p.stdout)
    assert d["technique"] == "sriov" and d["preset"] == "steady-stream"
    assert d["packets"] == {"offered": 500, "delivered": 500, "dropped": 0}
    assert d["copies_per_packet"] == 0
    assert set(d["exits"]["by_reason"]) == {"EXTERNAL_INTERRUPT", "APIC_WRITE"}
    assert d["exits"]["total"] == 2 * d["interrupts"]["injected"] > 0
    assert d["iommu"]["translations"] == 1500 and d["iommu"]["faults"] == 0
    p = run_cli("run", "--technique", "sriov", "--packets", "500", "--json",
                "--set", "sriov.posted_interrupts=true", check_rc=0)
    e = json.loads(p.stdout)
    assert e["exits"]["total"] == 0 and e["interrupts"]["posted"] > 0
    assert e["latency_ns"]["p50"] < d["latency_ns"]["p50"]
