"""SR-IOV direct assignment: DMA through the IOMMU, no exits but interrupts, zero copies."""
import json
import struct

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from iovtui.sim.ixgbe import RXD_STAT_DD, RXD_STAT_EOP
from iovtui.sim.iommu import DmaFault
from iovtui.sim.paths.sriov import ROGUE_GPA, SrIov
from iovtui.sim.trace import ListSink, Trace

from conftest import four_vm_preset, make_preset, run_cli, sim_for

A, B = "52:54:00:00:00:01", "52:54:00:00:00:02"
INTERRUPT_EXITS = {"EXTERNAL_INTERRUPT", "APIC_ACCESS", "MSR_WRITE"}


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
def test_exits_come_only_from_interrupts_and_idle(direction):
    """No APICv, xAPIC: the VF's interrupt exits as EXTERNAL_INTERRUPT only when it
    finds the vCPU running (a halted one is woken after its HLT exit); every EOI
    exits as APIC_ACCESS.  Nothing else exits: tails, EITR and VTEIMS are BAR writes."""
    s, sink = traced(one_vm(traffic={"direction": direction, "rate": "2 Gb/s"}), packets=400)
    s.run()
    d = s.summary()
    injected = d["interrupts"]["injected"]
    by = d["exits"]["by_reason"]
    assert d["packets"]["delivered"] == 400 and injected > 0
    assert set(by) <= {"EXTERNAL_INTERRUPT", "APIC_ACCESS", "HLT"} and "APIC_WRITE" not in by
    assert by["APIC_ACCESS"] == injected == d["interrupts"]["host"]
    assert by.get("EXTERNAL_INTERRUPT", 0) <= injected
    assert d["exits"]["userspace"] == 0
    exits = [e for e in sink.events if e.kind == "exit"]
    assert exits and all(e.data["reason"] in INTERRUPT_EXITS | {"HLT"} for e in exits)
    assert all("interrupt" in e.data["cause"] or "EOI" in e.data["cause"] or "idle" in e.data["cause"]
               for e in exits)


def test_tail_writes_go_straight_to_the_vf():
    s, sink = traced(one_vm(traffic={"direction": "both"}), packets=300)
    s.run()
    tails = [e for e in sink.events if e.kind == "ring" and "tail" in e.msg]
    assert len(tails) > 10 and all("no exit" in e.msg for e in tails)
    port = s.technique.ports[0]
    assert port.rx.tail != 0 or port.rx.head != 0          # the driver did move the RX tail
    reasons = s.metrics.exits_by_reason
    assert not set(reasons) & {"EPT_MISCONFIG", "EPT_VIOLATION", "IO_INSTRUCTION", "APIC_WRITE"}
    assert reasons["APIC_ACCESS"] == s.metrics.irq_injected      # the EOIs, nothing else


def test_the_rx_tail_is_next_to_use_written_every_16_buffers():
    """ixgbevf_alloc_rx_buffers writes the tail with next_to_use (not − 1), and
    ixgbevf_clean_rx_irq refills only once 16 descriptors are unused."""
    s, sink = traced(one_vm(traffic={"rate": "line"}, sriov={"ring_size": 64}), packets=300)
    s.run()
    refills = [e for e in sink.events if e.kind == "ring" and e.msg.split()[1:2] == ["refills"]]
    assert refills and all(e.data["added"] >= 16 for e in refills)
    rx = s.technique.ports[0].rx
    assert rx.tail == rx.next_to_use
    assert sink.events[0].msg.endswith(f"writes the tail ({rx.size - 1}) straight to the VF — no exit")


def test_x2apic_eoi_exits_as_msr_write():
    _s, d = run(one_vm(host={"x2apic": True}, traffic={"rate": "500 Mb/s"}))
    by = d["exits"]["by_reason"]
    assert set(by) <= {"EXTERNAL_INTERRUPT", "MSR_WRITE", "HLT"} and "APIC_ACCESS" not in by
    assert by["MSR_WRITE"] == d["interrupts"]["injected"] > 0


def test_posted_interrupts_make_it_exitless():
    """APICv + VT-d PI: no interrupt or EOI exit, no host interrupt; the only
    exits left are the idle guest's HLTs."""
    _s, d = run(one_vm(host={"apicv": True, "vtd_posted_interrupts": True}, traffic={"direction": "both"}))
    assert set(d["exits"]["by_reason"]) <= {"HLT"}
    assert d["interrupts"]["injected"] == 0 and d["interrupts"]["posted"] > 0 and d["interrupts"]["host"] == 0
    assert d["packets"]["delivered"] == 400
    _s, busy = run(one_vm(host={"apicv": True, "vtd_posted_interrupts": True}, traffic={"rate": "line"}),
                   packets=2000)
    assert busy["exits"]["per_packet"] < 0.01 and busy["interrupts"]["host"] == 0


def test_interrupt_moderation_batches_interrupts():
    fast = {"rate": "500 Mb/s", "sizes": 512}
    _s, none = run(one_vm(traffic=fast, sriov={"itr_us": 0}), packets=2000)
    _s, itr = run(one_vm(traffic=fast, sriov={"itr_us": 100}), packets=2000)
    assert none["packets"]["delivered"] == itr["packets"]["delivered"] == 2000
    assert itr["interrupts"]["injected"] < none["interrupts"]["injected"] / 2
    assert itr["exits"]["by_reason"]["APIC_ACCESS"] == itr["interrupts"]["injected"]
    assert itr["options"]["itr"] == "100 µs" and none["options"]["itr_us"] == 0


def test_a_fixed_eitr_really_spaces_the_interrupts():
    """The 82599's EITR interval counter: two MSI-X never less than the interval apart."""
    s, sink = traced(one_vm(traffic={"rate": "100 Mb/s", "sizes": 60}, sriov={"itr_us": 100}), packets=2000)
    s.run()
    t = [e.t for e in sink.events if e.kind == "irq" and e.data.get("source") == "VF0 MSI-X"]
    assert len(t) > 3 and min(b - a for a, b in zip(t, t[1:])) >= 100_000


def test_adaptive_itr_writes_eitr_under_load_and_moves_back_when_idle():
    """ixgbevf's default: the EITR value changes (VTEITR writes in the trace, no
    exit) from its 20K start toward bulk under load; a light load brings it to
    lowest latency (100K/s: itr 40 → 10 µs)."""
    s, sink = traced(one_vm(traffic={"rate": "line"}), packets=3000)
    s.run()
    w = [e for e in sink.events if e.kind == "irq" and "VTEITR" in e.msg]
    assert w[0].t == 0 and w[0].data["itr"] == 200 and "0x800000c8" in w[0].msg   # IXGBE_20K_ITR, WDIS
    ups = [e.data["itr"] for e in w[1:]]
    assert len(ups) >= 5 and ups == sorted(ups) and 200 < ups[-1] <= 336     # smoothed toward IXGBE_12K_ITR
    assert ups[0] == 10 * 336 * 200 // (9 * 336 + 200)                         # 208
    assert all("no exit" in e.msg and "bulk" in e.msg for e in w[1:])
    assert not {"EPT_MISCONFIG", "APIC_WRITE"} & set(s.metrics.exits_by_reason)
    s, sink = traced(one_vm(traffic={"rate": "20 Mb/s", "sizes": 60}), packets=200)
    s.run()
    w = [e.data["itr"] for e in sink.events if e.kind == "irq" and "VTEITR" in e.msg]
    assert w[1] == 10 * 40 * 200 // (9 * 40 + 200) and w[-1] < 60 and w == sorted(w, reverse=True)
    assert s.summary()["options"]["itr"] == "adaptive"


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
    """Descriptors the VF is done with are in the 82599 write-back format
    (status_error DD|EOP, length) and their buffer holds the frame; those
    it still owns are in the read format (pkt_addr, hdr_addr 0: no DD)."""
    s = sim_for(one_vm(traffic={"rate": "line"}), "sriov", packets=400)
    port = s.technique.ports[0]
    rx, ram = port.rx, s.vms[0].mem.ram
    seen = owned = 0
    while not s.complete and s.engine.pending:
        s.engine.run(max_events=53)
        i = rx.next_to_clean
        while i != rx.head:
            pkt_info, _hdr, _rss, status, length, _vlan = struct.unpack_from("<HHIIHH", ram, rx.base + 16 * i)
            if port.rx_filled.get(i) is not None:
                assert status == RXD_STAT_DD | RXD_STAT_EOP and pkt_info == 0x0210   # IPv4 | UDP
                assert length == port.rx_filled[i].size
                addr = port.rx.tokens[i]
                assert ram[addr:addr + length] == port.rx_filled[i].frame
                seen += 1
            i = (i + 1) % rx.size
        j = rx.head
        while j != rx.tail:                                  # still the hardware's: read format
            pkt_addr, hdr_addr = struct.unpack_from("<QQ", ram, rx.base + 16 * j)
            assert hdr_addr == 0 and pkt_addr == rx.tokens[j]
            owned += 1
            j = (j + 1) % rx.size
    assert seen > 0 and owned > 0


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
                       sriov={"ring_size": 16}, faults=faults, nic={"unknown_unicast": 0.1})
    s = sim_for(p, "sriov", packets=1200)
    checks = 0
    while not s.complete and s.engine.pending:
        s.engine.run(max_events=61)
        m = s.metrics
        assert m.offered == m.delivered + m.dropped + m.to_host + s.in_flight()
        checks += 1
    m = s.metrics
    assert checks > 10 and s.in_flight() == 0 and m.offered == m.delivered + m.dropped + m.to_host
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
    s = sim_for(four_vm_preset(sriov={"ring_size": 32}, iommu={"iotlb_entries": 128}), "sriov", packets=50)
    t = s.technique
    assert t.label() == "SR-IOV (VF 02:10.0…, MSI-X via the host)"
    o = t.options()
    assert (o["posted_interrupts"], o["x2apic"], o["iotlb_entries"], o["vfs"]) == (False, False, 128, 4)
    assert (o["itr"], o["superpages"], o["descriptors"]) == ("adaptive", False, "82599-adv")
    assert t.host_busy_ns() == 0
    s.run()
    q = t.queues()
    assert [(x.vm, x.name, x.kind, x.size) for x in q[:2]] == [("vm0", "rx", "82599-adv", 32), ("vm0", "tx", "82599-adv", 32)]
    assert len(q) == 8 and len({x.desc_gpa for x in q[:2]}) == 2
    rv = t.ring_views()
    assert len(rv) == 8 and rv[0].kind == "82599-adv" and "no exit" in rv[0].note and "adaptive ITR" in rv[0].note
    assert len(rv[0].rows) == 32 and rv[0].columns == ("idx", "fmt", "pkt_addr/info", "len", "status")
    assert {r[1] for r in rv[0].rows} == {"read", "wb"}
    assert any(r[1] == "wb" and r[4] == "DD|EOP" and r[3] == "1514" for r in rv[0].rows)
    assert rv[1].columns == ("idx", "fmt", "addr len", "cmd", "olinfo")
    assert {r[1] for r in rv[1].rows} == {"–"}            # vm0 sent nothing
    iv = t.iommu_view()
    assert not iv.idle_reason and [r[0] for r in iv.rows] == ["02:10.0", "02:10.2", "02:10.4", "02:10.6"]
    assert iv.rows[1][1] == "VF1 → vm1" and iv.rows[1][2] == "2"
    nv = t.nic_view()
    assert not nv.idle_reason and [r[1] for r in nv.rows] == ["02:00.0", "02:10.0", "02:10.2", "02:10.4", "02:10.6"]
    posted = sim_for(make_preset(host={"apicv": True, "vtd_posted_interrupts": True}), "sriov", packets=1).technique
    assert posted.label() == "SR-IOV (VF 02:10.0, VT-d posted MSI-X)"


def test_the_tx_ring_pane_shows_a_context_and_a_data_descriptor_per_frame():
    s = sim_for(one_vm(traffic={"direction": "tx", "sizes": 590}, sriov={"ring_size": 64}), "sriov", packets=20)
    s.run()
    tx = s.technique.ring_views()[1]
    kinds = [r[1] for r in tx.rows]
    assert kinds[:40] == ["ctxt", "data"] * 20
    assert tx.rows[0][2:4] == ("MACLEN 14", "DEXT|CTXT")
    assert tx.rows[1][3] == "EOP|RS" and tx.rows[1][2].endswith(" 590") and tx.rows[1][4] == "CC DD"


# -- the command line ---------------------------------------------------------------------------------
def test_cli_run_json():
    p = run_cli("run", "--technique", "sriov", "--packets", "500", "--json", check_rc=0)
    d = json.loads(p.stdout)
    assert d["technique"] == "sriov" and d["preset"] == "steady-stream"
    assert d["packets"] == {"offered": 500, "delivered": 500, "dropped": 0, "to_host": 0}
    assert d["copies_per_packet"] == 0
    by = d["exits"]["by_reason"]
    assert set(by) <= {"EXTERNAL_INTERRUPT", "APIC_ACCESS", "HLT"} and by["APIC_ACCESS"] == d["interrupts"]["injected"] > 0
    assert d["iommu"]["translations"] == 1500 and d["iommu"]["faults"] == 0
    p = run_cli("run", "--technique", "sriov", "--packets", "500", "--json",
                "--set", "host.apicv=true", "--set", "host.vtd_posted_interrupts=true", check_rc=0)
    e = json.loads(p.stdout)
    assert set(e["exits"]["by_reason"]) <= {"HLT"} and e["interrupts"]["posted"] > 0 and e["interrupts"]["host"] == 0
    assert e["latency_ns"]["p50"] < d["latency_ns"]["p50"]


# -- issue 14: the 82599 advanced descriptors in a RAM dump -------------------------------------------
def test_ram_dump_holds_82599_advanced_rx_write_back_and_tx_context_plus_data(tmp_path):
    """`iovtui run --dump-ram`: layout.json names the VF's rings 82599-adv; an RX
    descriptor the VF wrote back reads status_error DD|EOP and the frame's length
    (its buffer is gone from the read format), and each sent frame is a context
    descriptor (DEXT|DTYP_CTXT) and a data descriptor (DTYP_DATA|DEXT|IFCS|EOP|RS|len,
    olinfo PAYLEN << 14 | CC, DD once sent)."""
    d = tmp_path / "dump"
    run_cli("run", "--technique", "sriov", "--packets", "205", "--set", "traffic.direction=\"both\"",
            "--set", "traffic.sizes=590", "--dump-ram", str(d), check_rc=0)
    layout = json.loads((d / "layout.json").read_text())
    qs = {q["name"]: q for q in layout["queues"]}
    assert {q["kind"] for q in qs.values()} == {"82599-adv"} and qs["rx"]["desc_len"] == 16
    ram = (d / "vm0.ram").read_bytes()
    rx, tx = qs["rx"], qs["tx"]
    wb = []
    for i in range(rx["size"]):
        pkt_info, _hdr_info, _rss, status_error, length, _vlan = struct.unpack_from("<HHIIHH", ram, rx["desc_gpa"] + 16 * i)
        if status_error & 1:
            wb.append((pkt_info, status_error, length))
    assert wb and all(w == (0x0210, 0x3, 590) for w in wb)               # IPv4|UDP, DD|EOP, length
    # the rest are in the read format: pkt_addr, hdr_addr 0
    reads = [struct.unpack_from("<QQ", ram, rx["desc_gpa"] + 16 * i) for i in range(rx["size"])]
    assert sum(1 for a, h in reads if h == 0 and a) >= rx["size"] - len(wb) - 1
    frames = 0
    for i in range(0, tx["size"], 2):
        vml, seed, tucmd, mss = struct.unpack_from("<IIII", ram, tx["desc_gpa"] + 16 * i)
        addr, cmd, olinfo = struct.unpack_from("<QII", ram, tx["desc_gpa"] + 16 * (i + 1))
        if not cmd:
            continue
        frames += 1
        assert vml == 14 << 9 and tucmd == 0x20000000 | 0x00200000 and (seed, mss) == (0, 0)
        assert cmd == 0x00300000 | 0x20000000 | 0x02000000 | 0x01000000 | 0x08000000 | 590
        assert olinfo == (590 << 14) | 0x80 | 0x1                           # PAYLEN, CC, and DD written back
        assert ram[addr + 6:addr + 12] == bytes.fromhex("525400000001")    # the frame, in the buffer
    assert frames > 20


def test_unknown_unicast_goes_to_the_host_and_is_counted_in_json():
    p = run_cli("run", "--technique", "sriov", "--packets", "400", "--json",
                "--set", "nic.unknown_unicast=0.25", check_rc=0)
    d = json.loads(p.stdout)
    pk = d["packets"]
    assert pk["to_host"] > 50 and pk["dropped"] == 0
    assert pk["offered"] == pk["delivered"] + pk["dropped"] + pk["to_host"] == 400


def test_a_blocked_dma_leaves_the_old_bytes_and_the_guest_reads_a_stale_frame():
    """The IOMMU drops the posted write: the read-only buffers keep their bytes,
    the VF still writes back DD|EOP and the length, and the guest's NAPI
    narrates a stale frame.  The frame counts as dropped once."""
    p = one_vm(faults={"readonly_dma": 1.0}, sriov={"ring_size": 32})
    s, sink = traced(p, packets=60)
    mem = s.vms[0].mem
    ro = [r for r in mem.regions if "read-only" in r.label]
    for r in ro:                                          # the buffers' old contents
        mem.ram[r.start:r.end] = bytes([0xA5]) * (r.end - r.start)
    before = [bytes(mem.ram[r.start:r.end]) for r in ro]
    seen_wb = []
    rx = s.technique.ports[0].rx
    while not s.complete and s.engine.pending:
        s.engine.run(max_events=7)
        for i in range(rx.size):
            pkt_addr = rx.tokens[i]
            _pi, _hi, _rss, st, ln, _v = struct.unpack_from("<HHIIHH", mem.ram, rx.base + 16 * i)
            if st & 1 and pkt_addr is not None and any(r.start <= pkt_addr < r.end for r in ro):
                seen_wb.append((st, ln))
    d = s.summary()
    assert [bytes(mem.ram[r.start:r.end]) for r in ro] == before
    assert seen_wb and set(seen_wb) == {(0x3, 1514)}
    stale = [e for e in sink.events if e.kind == "ring" and e.data.get("stale")]
    faults = d["iommu"]["faults"]
    assert faults > 0 and len(stale) == faults
    assert "still holds its old bytes" in stale[0].msg and stale[0].msg.endswith("the frame it reads is stale")
    assert d["drops_by_reason"]["IOMMU blocked the DMA write (DMAR fault)"] == faults
    assert d["packets"]["delivered"] + d["packets"]["dropped"] == 60
    assert "RXE" not in json.dumps([e.to_dict() for e in sink.events])


def test_a_rogue_gpa_outside_ram_reads_nothing_valid():
    s, sink = traced(one_vm(faults={"unmapped_dma": 0.3}), packets=200)
    s.run()
    stale = [e for e in sink.events if e.kind == "ring" and e.data.get("stale")]
    assert stale and all(e.msg.endswith("is outside vm0's RAM: it reads nothing valid") for e in stale)
    assert len(stale) == s.summary()["iommu"]["faults"]


def test_dmar_fault_line_prints_the_page_aligned_address():
    """A read-only buffer at GPA page + 0x800: the DMAR line prints the page."""
    s, sink = traced(one_vm(faults={"readonly_dma": 1.0}), packets=40)
    s.run()
    faults = [e for e in sink.events if e.kind == "fault" and "DMAR" in e.msg]
    odd = [e for e in faults if e.data["addr"] & 0xFFF]
    assert odd, "some blocked buffers start mid-page"
    for e in faults:
        assert f"fault addr 0x{e.data['addr'] & ~0xFFF:x} [fault reason 0x05]" in e.msg
    assert all(int(line.split("fault addr ")[1].split()[0], 16) & 0xFFF == 0 for line in s.technique.iommu.faults)


def test_spoofed_frames_show_the_pf_log_line():
    p = one_vm(traffic={"direction": "tx", "rate": "1 Gb/s", "sizes": 590},
               faults={"spoofed_src": 0.2}, nic={"pf_watchdog_ms": 1.0})
    s, sink = traced(p, packets=800)
    s.run()
    logs = [e for e in sink.events if e.kind == "fault" and "Spoofed packets detected" in e.msg]
    assert logs
    counted = 0
    for e in logs:
        line = e.data["line"]
        assert line.startswith("ixgbe 0000:02:00.0 enp2s0f0: ") and line.endswith(" Spoofed packets detected")
        counted += int(line.split(": ")[1].split()[0])
        assert e.t % 1_000_000 == 0                    # the watchdog's ticks
    assert 0 < counted <= s.technique.nic.spoofed_total
    pane = s.technique.nic_view().lines
    assert pane[-1] == f"PF log: {logs[-1].data['line']}"


def test_the_hex_view_names_the_82599_formats():
    from iovtui.ui.screens.hexview import annotate_page
    s = sim_for(one_vm(traffic={"direction": "both"}), "sriov", packets=41)
    s.run()
    t, ram = s.technique, s.vms[0].mem.ram
    rx, tx = t.ports[0].rx, t.ports[0].tx
    rx_notes = [n[2] for n in annotate_page(t, 0, rx.base, bytes(ram[rx.base:rx.base + 4096]))]
    assert any("read: pkt_addr" in x for x in rx_notes)
    wb = [i for i in range(rx.size) if rx.status(i) & RXD_STAT_DD]
    assert wb
    page = (rx.base + 16 * wb[0]) & ~0xFFF
    notes = [n for n in annotate_page(t, 0, page, bytes(ram[page:page + 4096]))
             if n[2].startswith(f"rx desc[{wb[0]}] status_error")]
    assert notes and "(DD|EOP) length 1514" in notes[0][2] and notes[0][0] == rx.base + 16 * wb[0] + 8 - page
    tx_notes = [n[2] for n in annotate_page(t, 0, tx.base, bytes(ram[tx.base:tx.base + 4096]))]
    assert tx_notes[0].startswith("tx desc[0] context: vlan_macip_lens 0x00001c00 (MACLEN 14)")
    assert "cmd_type_len 0x2b3005ea (DTYP_DATA|DEXT|IFCS|EOP|RS, length 1514)" in tx_notes[2]
    assert tx_notes[3].endswith("(PAYLEN 1514 CC · written back: DD)")


# -- the untraced fast paths (Iommu.rx_dma, Iommu._misses, Nic.untagged_owned) ---------------------
FAST_PATH_CASES = [
    dict(iommu={"iotlb_entries": 1}),                       # the fetch's entry is gone by the write-back
    dict(iommu={"iotlb_entries": 3}, traffic={"direction": "both"}),
    dict(iommu={"iotlb_entries": 8, "superpages": True}),
    dict(iommu={"iotlb_entries": 4}, faults={"unmapped_dma": 0.2, "readonly_dma": 0.2}),
    dict(iommu={"iotlb_entries": 6}, faults={"foreign_vlan": 0.3}, traffic={"direction": "both"}),
    dict(vm=[{"name": "vm0", "mac": A}], iommu={"iotlb_entries": 2}),     # one VM: a decision repeats
]


@pytest.mark.parametrize("case", range(len(FAST_PATH_CASES)))
def test_an_untraced_run_is_the_traced_run(case):
    """Untraced, a received frame's three translations, the IOTLB misses and
    the switch's decision take shortcuts; every figure of the summary (IOTLB
    hits and misses, faults, the NIC's counts, latencies) and every byte of
    guest RAM is what the traced run, which takes none of them, gives."""
    sections = dict(FAST_PATH_CASES[case])
    preset = make_preset(**sections) if "vm" in sections else four_vm_preset(**sections)
    plain = sim_for(preset, "sriov", packets=600, seed=4)
    plain.run()
    traced_sim, sink = traced(preset, packets=600, seed=4)
    traced_sim.run()
    assert len(sink.events) > 1000
    a, b = plain.summary(), traced_sim.summary()
    assert a["iommu"]["iotlb_misses"] > 0 and (a["iommu"]["iotlb_hits"] > 0 or case == 0)
    assert a == b
    assert [bytes(vm.mem.ram) for vm in plain.vms] == [bytes(vm.mem.ram) for vm in traced_sim.vms]
    assert plain.technique.nic.decisions == traced_sim.technique.nic.decisions
    assert list(plain.technique.iommu.iotlb.items()) == list(traced_sim.technique.iommu.iotlb.items())
