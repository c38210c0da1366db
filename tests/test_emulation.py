"""Device emulation (QEMU e1000): exits, copies, ITR, conservation, bytes in RAM."""
import json

import pytest

from iovtui.sim.e1000 import (DESC_LEN, ICR_RXT0, REG, RX_DESC, RXD_STAT_DD, RXD_STAT_EOP, TX_DESC,
                              TXD_CMD_EOP, TXD_CMD_IFCS, TXD_CMD_RS, TXD_STAT_DD)
from iovtui.sim.packet import parse_frame
from iovtui.sim.preset import load_preset
from iovtui.sim.trace import ListSink, Trace

from conftest import four_vm_preset, make_preset, run_cli, sim_for


def run(preset, packets=400, seed=1, trace=False):
    tr = None
    sink = None
    if trace:
        tr = Trace()
        sink = ListSink()
        tr.add_sink(sink)
    s = sim_for(preset, "emulation", packets=packets, seed=seed, trace=tr)
    s.run()
    return s, s.summary(), (sink.events if sink else [])


def exits(events):
    return [e for e in events if e.kind == "exit"]


# -- one isolated packet -----------------------------------------------------------------

def test_one_isolated_packet_costs_7_to_8_exits(steady):
    s, d, ev = run(steady, packets=1, trace=True)
    assert d["packets"] == {"offered": 1, "delivered": 1, "dropped": 0}
    ex = exits(ev)
    # the trace and the counters agree (set-up exits are not counted, and happen at t=0 before traffic)
    data_path = [e for e in ex if e.t > 0]
    assert 7 <= d["exits"]["total"] <= 8 and len(data_path) == d["exits"]["total"]
    by = d["exits"]["by_reason"]
    assert by["EXTERNAL_INTERRUPT"] == 1                  # the injection
    assert by["APIC_WRITE"] == 1                          # the EOI
    assert by["EPT_MISCONFIG"] == d["exits"]["total"] - 2  # every register access
    assert set(by) == {"EXTERNAL_INTERRUPT", "APIC_WRITE", "EPT_MISCONFIG"}
    # every register access goes out to userspace QEMU; the interrupt and EOI are KVM's
    for e in data_path:
        assert e.data["where"] == ("userspace" if e.data["reason"] == "EPT_MISCONFIG" else "kernel")
        assert e.data["number"] == {"EPT_MISCONFIG": 49, "EXTERNAL_INTERRUPT": 1, "APIC_WRITE": 56}[e.data["reason"]]
    assert s.metrics.exits_user == by["EPT_MISCONFIG"]
    causes = [e.data["cause"].split(" (")[0] for e in data_path if e.data["reason"] == "EPT_MISCONFIG"]
    # Linux e1000_intr: ICR read, IMC write, STATUS read; NAPI refill: RDT write; e1000_irq_enable: IMS write
    for c in ("ICR read", "IMC write", "STATUS read", "RDT write", "IMS write"):
        assert c in causes, (c, causes)
    assert causes.index("ICR read") < causes.index("IMC write") < causes.index("RDT write") < causes.index("IMS write")
    order = [e.data["reason"] for e in data_path]
    assert order[0] == "EXTERNAL_INTERRUPT"               # the interrupt comes first, then the handler's exits


def test_each_exit_is_stamped_when_its_vcpu_takes_it(steady):
    """The interrupt handler's register accesses are emitted together but run
    one after another on the vCPU: each exit's start_ns is the end of the one
    before (the exit log and the narration show that time)."""
    _s, _d, ev = run(steady, packets=1, trace=True)
    ex = [e for e in exits(ev) if e.t > 0]
    handler = [e for e in ex if e.data["cause"].split(" (")[0] in ("ICR read", "IMC write", "STATUS read")][:3]
    assert len(handler) == 3 and len({e.t for e in handler}) == 1          # one action emitted them
    for a, b in zip(handler, handler[1:]):
        assert b.data["start_ns"] == a.data["start_ns"] + a.data["cost_ns"]
    assert all(e.data["start_ns"] >= e.t for e in ex)


def test_x2apic_eoi_is_an_msr_write(steady):
    _s, d, _ev = run(steady.with_options(sriov={"x2apic": True}), packets=1)
    by = d["exits"]["by_reason"]
    assert by.get("MSR_WRITE") == 1 and "APIC_WRITE" not in by


def test_exit_count_comes_from_the_mechanics_not_a_constant(steady):
    """A back-to-back burst is handled in one NAPI poll: fewer exits per packet
    than an isolated packet, and the count moves with the refill batch."""
    _s, one, _ = run(steady, packets=1)
    burst = make_preset(traffic={"pattern": "burst", "rate": "line", "sizes": 1514})
    _s, many, _ = run(burst, packets=64)
    assert many["exits"]["per_packet"] < one["exits"]["per_packet"]
    assert many["exits"]["by_reason"]["EPT_MISCONFIG"] > one["exits"]["by_reason"]["EPT_MISCONFIG"]


def test_trace_stages_cover_the_six_step_flow(steady):
    s, _d, ev = run(steady, packets=1, trace=True)
    tech = s.technique
    assert len(tech.stages) == 6 and all(isinstance(x, str) and x for x in tech.stages)
    stages = {e.stage for e in ev}
    assert {1, 2, 3, 4, 5, 6} <= stages and stages <= set(range(7))
    # after the driver's set-up (stage 1 at t=0) the frame walks stages 2..6 in order
    start = next(i for i, e in enumerate(ev) if e.stage == 2)
    first = {}
    for i, e in enumerate(ev[start:]):
        if e.stage:
            first.setdefault(e.stage, i)
    assert first[2] < first[3] < first[4] < first[5] < first[6]
    assert first[1] > first[6]          # the refill's RDT write comes once the frame is read
    copy = [e for e in ev if e.kind == "copy"]
    assert copy and copy[0].stage == 4 and copy[0].data["bytes"] == 1514
    regs = [e for e in ev if e.kind == "reg"]
    assert any(e.data["reg"] == "ICR" and e.data["value"] == ICR_RXT0 for e in regs)
    assert all(REG[e.data["reg"]] == e.data["offset"] for e in regs)
    ims = [e.data["value"] for e in regs if e.data["reg"] == "IMS" and e.data["write"]]
    assert ims == [0x9D]                # e1000_irq_enable after the poll
    imc = [e.data["value"] for e in regs if e.data["reg"] == "IMC"]
    assert imc == [0xFFFFFFFF]          # e1000_intr masks everything


def test_trace_off_changes_nothing(steady):
    _s, a, _ = run(steady, packets=300, trace=True)
    _s, b, _ = run(steady, packets=300, trace=False)
    assert a == b


# -- copies ----------------------------------------------------------------------------------

@pytest.mark.parametrize("direction", ["rx", "tx", "both"])
def test_two_copies_per_packet(direction):
    p = make_preset(traffic={"direction": direction, "rate": "1 Gb/s", "sizes": "imix"})
    s, d, _ = run(p, packets=500)
    m = s.metrics
    assert d["packets"]["delivered"] == 500
    assert m.copies == 2 * m.delivered
    assert m.copy_bytes == 2 * m.bytes_delivered
    assert d["copies_per_packet"] == 2


# -- interrupt moderation -------------------------------------------------------------------

def test_itr_reduces_interrupts_per_packet():
    line = load_preset("line-rate")
    s_off, off, _ = run(line, packets=2000)
    s_on, on, _ = run(line.with_options(emulation={"itr_us": 128}), packets=2000)
    assert s_on.technique.nics[0].regs.regs[REG["ITR"]] == 500     # 128 µs in 256 ns units
    assert s_off.technique.nics[0].regs.regs[REG["ITR"]] == 0
    per_off = off["interrupts"]["injected"] / off["packets"]["delivered"]
    per_on = on["interrupts"]["injected"] / on["packets"]["delivered"]
    assert per_on < per_off
    assert on["exits"]["per_packet"] < off["exits"]["per_packet"]


def test_itr_allows_at_most_one_interrupt_per_interval():
    p = make_preset(traffic={"rate": "1 Gb/s", "sizes": 1514}, emulation={"itr_us": 50})
    s, d, ev = run(p, packets=1500, trace=True)
    times = [e.t for e in ev if e.kind == "exit" and e.data["reason"] == "EXTERNAL_INTERRUPT"]
    assert len(times) == d["interrupts"]["injected"] > 10
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert min(gaps) >= s.technique.nics[0].regs.itr_ns
    assert d["packets"]["delivered"] == 1500            # moderation delays, never loses


def test_label_and_options(steady):
    s, _d, _ = run(steady, packets=1)
    assert s.technique.label() == "emulation (e1000, ITR off)"
    assert s.technique.options() == {"itr_us": 0.0, "ring_size": 256}
    s2, _d, _ = run(steady.with_options(emulation={"itr_us": 128, "ring_size": 64}), packets=1)
    assert s2.technique.label() == "emulation (e1000, ITR 128 µs)"
    assert s2.technique.options() == {"itr_us": 128.0, "ring_size": 64}
    assert s2.technique.nics[0].rx.size == 64


# -- conservation, faults, determinism -------------------------------------------------------

@pytest.mark.parametrize("direction", ["rx", "tx", "both"])
@pytest.mark.parametrize("ring_full", [False, True])
def test_conservation_at_every_step(direction, ring_full):
    p = make_preset(traffic={"direction": direction, "rate": "line", "sizes": "imix", "pattern": "poisson"},
                    emulation={"ring_size": 16, "itr_us": 30}, faults={"ring_full": ring_full})
    s = sim_for(p, "emulation", packets=2500)
    checks = 0
    while s.engine.pending and not s.engine.halted:
        s.engine.run(max_events=17)
        m = s.metrics
        assert m.offered == m.delivered + m.dropped + s.in_flight(), checks
        checks += 1
    m = s.metrics
    assert checks > 50 and m.offered == 2500
    assert m.offered == m.delivered + m.dropped + s.in_flight()
    if not ring_full or direction == "tx":
        assert s.in_flight() == 0
    assert m.corrupt == 0


def test_ring_full_fault_stops_refills_and_drops_at_the_tap():
    p = make_preset(traffic={"rate": "line", "sizes": 1514}, emulation={"ring_size": 64},
                    faults={"ring_full": True})
    s, d, ev = run(p, packets=2000, trace=True)
    rdt = [e for e in exits(ev) if e.t > 0 and e.data["cause"].startswith("RDT write")]
    assert rdt == []                                     # the guest never hands buffers back
    assert d["packets"]["delivered"] == 63               # the 63 buffers posted at start-up (one slot kept free)
    assert d["packets"]["dropped"] > 0
    assert any("tap queue full" in r for r in d["drops_by_reason"])
    assert d["packets"]["offered"] == d["packets"]["delivered"] + d["packets"]["dropped"] + d["in_flight"]
    nic = s.technique.nics[0]
    assert nic.rx.head == nic.rx.tail                    # RDH caught up with RDT: QEMU waits


def test_same_seed_same_summary():
    p = make_preset(traffic={"pattern": "poisson", "rate": "2 Gb/s", "sizes": "imix", "direction": "both"},
                    emulation={"itr_us": 20})
    a = json.dumps(run(p, packets=800, seed=5)[1], sort_keys=True)
    b = json.dumps(run(p, packets=800, seed=5)[1], sort_keys=True)
    c = json.dumps(run(p, packets=800, seed=6)[1], sort_keys=True)
    assert a == b
    assert a != c


# -- bytes in guest RAM ------------------------------------------------------------------------

def test_rx_buffers_hold_the_real_frames(steady):
    """At the moment QEMU writes a frame back, the descriptor bytes say DD|EOP
    with the length, and the buffer they point at parses as the frame."""
    tr = Trace()
    checked = []
    holder = {}

    def sink(e):
        if e.kind != "copy" or e.data.get("queue") != "rx":
            return
        s = holder["sim"]
        vm = s.vms[0]
        rx = s.technique.nics[0].rx
        gpa, slot = e.data["gpa"], e.data["desc"]
        addr, length, _csum, status, errors, _sp = RX_DESC.unpack_from(vm.mem.ram, rx.base + DESC_LEN * slot)
        assert addr == gpa and length == e.data["bytes"] == 1514 and errors == 0
        assert status == RXD_STAT_DD | RXD_STAT_EOP
        f = parse_frame(vm.mem.read(gpa, length))
        assert f["dst"] == vm.mac and f["dst_ip"] == vm.ip
        assert f["ethertype"] == 0x0800 and f["proto"] == 17 and f["ip_csum_ok"]
        assert f["ip_total"] == length - 14
        checked.append(f["seq"])

    tr.add_sink(sink)
    s = holder["sim"] = sim_for(steady, "emulation", packets=40, trace=tr)
    s.run()
    assert len(checked) == 40 and len(set(checked)) == 40
    assert s.metrics.corrupt == 0 and s.summary()["corrupt_frames"] == 0
    # the driver consumed them: status cleared, the slots refilled (length 0 again)
    rx = s.technique.nics[0].rx
    assert rx.next_to_clean == 40 and s.vms[0].mem.ram[rx.base + 12] == 0


def test_tx_descriptors_and_frames_in_guest_ram():
    p = make_preset(traffic={"direction": "tx", "rate": "200 Mb/s", "sizes": 256})
    s, d, ev = run(p, packets=30, trace=True)
    assert d["packets"]["delivered"] == 30 and s.metrics.corrupt == 0
    vm = s.vms[0]
    tx = s.technique.nics[0].tx
    seen = 0
    for i in range(tx.size):
        addr, length, _cso, cmd, status, _css, _sp = TX_DESC.unpack_from(vm.mem.ram, tx.base + DESC_LEN * i)
        if not addr:
            continue
        assert cmd == TXD_CMD_EOP | TXD_CMD_IFCS | TXD_CMD_RS and length == 256
        assert status in (0, TXD_STAT_DD)
        f = parse_frame(vm.mem.read(addr, length))
        assert f["src"] == vm.mac and f["ip_csum_ok"]
        seen += 1
    assert seen == 30
    assert tx.head == tx.tail == 30                     # the device model walked TDH up to TDT
    tdt = [e for e in exits(ev) if e.data["cause"].startswith("TDT write")]
    assert len(tdt) == 30 and all(e.data["where"] == "userspace" for e in tdt)


# -- several VMs -------------------------------------------------------------------------------

def test_one_e1000_per_vm_and_the_bridge_switches_by_mac():
    p = four_vm_preset(traffic={"rate": "2 Gb/s", "sizes": 1514})
    s, d, _ = run(p, packets=800)
    tech = s.technique
    assert len(tech.nics) == 4 and d["packets"]["delivered"] == 800
    assert sorted(s.metrics.delivered_by_vm) == ["vm0", "vm1", "vm2", "vm3"]
    for nic in tech.nics:
        vm = nic.vm
        n = 0
        for i in range(nic.rx.size):
            addr, length, *_ = RX_DESC.unpack_from(vm.mem.ram, nic.rx.base + DESC_LEN * i)
            if length:
                assert parse_frame(vm.mem.read(addr, length))["dst"] == vm.mac
                n += 1
        assert n > 0
    # each VM's ring lives in that VM's RAM; views and layout entries line up
    qs = tech.queues()
    assert len(qs) == 8 and {q.kind for q in qs} == {"e1000-legacy"}
    views = tech.ring_views()
    assert len(views) == 8
    for q, v in zip(qs, views):
        assert (q.vm, q.name, q.desc_gpa, q.size) == (v.vm, v.name, v.base_gpa, v.size)
        assert q.avail_gpa is None and q.used_gpa is None
    rxv = [v for v in views if v.name == "rx"][0]
    regs = tech.nics[0].regs.regs
    assert dict(rxv.marks)["RDH"] == str(regs[REG["RDH"]]) and dict(rxv.marks)["RDT"] == str(regs[REG["RDT"]])


def test_foreign_vlan_frames_are_dropped_by_the_host_bridge():
    p = make_preset(vm=[{"name": "vm0", "mac": "52:54:00:00:00:01", "vlan": 10}],
                    traffic={"rate": "1 Gb/s"}, faults={"foreign_vlan": 0.3})
    s, d, _ = run(p, packets=600)
    assert d["packets"]["dropped"] > 0 and d["packets"]["delivered"] > 0
    assert all("VLAN" in r for r in d["drops_by_reason"])
    assert d["packets"]["offered"] == d["packets"]["delivered"] + d["packets"]["dropped"]
    assert s.metrics.corrupt == 0


def test_cpu_accounting_includes_the_device_model(steady):
    s, d, _ = run(steady, packets=200)
    tech = s.technique
    model = sum(n.model.busy_ns for n in tech.nics)
    assert model >= 200 * s.costs["qemu_e1000_pkt_ns"]
    assert tech.host_busy_ns() >= model + 200 * s.costs["host_stack_ns"]


# -- the command line ----------------------------------------------------------------------------

def test_cli_run_json():
    p = run_cli("run", "--technique", "emulation", "--packets", "300", "--json", check_rc=0)
    d = json.loads(p.stdout)
    for k in ("technique", "preset", "seed", "packets", "exits", "interrupts", "copies_per_packet",
              "throughput_gbps", "latency_ns", "iommu"):
        assert k in d, k
    assert d["technique"] == "emulation"
    assert set(d["packets"]) >= {"offered", "delivered", "dropped"}
    assert set(d["exits"]) >= {"total", "per_packet", "by_reason"}
    assert set(d["interrupts"]) >= {"injected", "posted"}
    assert set(d["latency_ns"]) >= {"p50", "p99"}
    assert set(d["iommu"]) >= {"translations", "iotlb_hits", "iotlb_misses", "faults"}
    assert d["packets"]["delivered"] == 300 and d["copies_per_packet"] == 2
    assert d["exits"]["by_reason"]["EPT_MISCONFIG"] > 0 and d["interrupts"]["posted"] == 0
    assert d["iommu"]["translations"] == 0
