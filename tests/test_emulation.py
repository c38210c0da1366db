"""Device emulation (QEMU e1000 + Linux's e1000 driver): exits and where KVM
takes them (coalesced MMIO), QEMU's interrupt mitigation, the guest's dynamic
ITR, the RDT cadence, the bytes in guest RAM, copies, conservation."""
import json
import struct

import pytest

from iovtui.sim.e1000 import DESC_LEN, ICR_RXT0, REG, RX_DESC, TX_DESC
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


def cli_trace(tmp_path, *args):
    """`iovtui run --technique emulation --json --trace FILE ARGS`: (summary, JSONL records)."""
    f = tmp_path / "t.jsonl"
    p = run_cli("run", "--technique", "emulation", "--json", "--trace", str(f), *args, check_rc=0)
    recs = [json.loads(line) for line in f.read_text().splitlines()[1:]]
    return json.loads(p.stdout), recs


def edges(events):
    """Times QEMU raised the e1000's INTx line (a rising edge)."""
    return [e.t for e in events if e.kind == "irq" and e.msg.startswith("QEMU e1000 raises INTx")]


LOW_RATE = {"rate": 200, "sizes": 1514}           # about 200 frames/s: an idle guest between frames


# -- 1. one isolated frame, coalesced MMIO ---------------------------------------------

def test_one_isolated_frame_exits_and_where_kvm_takes_them(tmp_path):
    """HLT wake-up, ICR read, IMC write, STATUS read (userspace), EOI (APIC_ACCESS,
    kernel), NAPI's RDT write (kernel: coalesced MMIO), IMS write, STATUS read (userspace)."""
    d, recs = cli_trace(tmp_path, "--preset", "steady-stream", "--packets", "1")
    ex = d["exits"]
    assert ex["total"] == 8
    assert ex["by_reason"] == {"HLT": 1, "EPT_MISCONFIG": 6, "APIC_ACCESS": 1}
    assert ex["kernel"] == 3 and ex["userspace"] == 5
    got = [(r["reason"], r["cause"].split(" (")[0] if r["reason"] == "EPT_MISCONFIG" else "", r["where"])
           for r in recs if r["kind"] == "exit" and r["t"] > 0]
    assert got == [
        ("HLT", "", "kernel"),
        ("EPT_MISCONFIG", "ICR read", "userspace"),
        ("EPT_MISCONFIG", "IMC write", "userspace"),
        ("EPT_MISCONFIG", "STATUS read", "userspace"),
        ("APIC_ACCESS", "", "kernel"),
        ("EPT_MISCONFIG", "RDT write", "kernel"),
        ("EPT_MISCONFIG", "IMS write", "userspace"),
        ("EPT_MISCONFIG", "STATUS read", "userspace"),
    ]
    rdt = [r for r in recs if r["kind"] == "exit" and r["cause"].startswith("RDT write")][0]
    assert "coalesced MMIO" in rdt["cause"] and rdt["number"] == 49
    assert "EXTERNAL_INTERRUPT" not in ex["by_reason"] and "APIC_WRITE" not in ex["by_reason"]


def test_kernel_and_userspace_counts_follow_the_register(tmp_path):
    """Every write to a coalesced register (RDT, ITR) is taken in KVM; reads and
    writes to MDIC/ICR/ICS/IMS/IMC/TCTL/TDT go to userspace QEMU; the JSON
    counters agree with the exit log."""
    d, recs = cli_trace(tmp_path, "--preset", "bursty-web", "--packets", "1500", "--set", "traffic.sizes=1514",
                        "--set", "traffic.burst_gap_us=2000.0")
    ex = [r for r in recs if r["kind"] == "exit"]
    assert d["exits"]["kernel"] == sum(r["where"] == "kernel" for r in ex)
    assert d["exits"]["userspace"] == sum(r["where"] == "userspace" for r in ex)
    assert d["exits"]["kernel"] + d["exits"]["userspace"] == d["exits"]["total"]
    seen = set()
    for r in ex:
        if r["reason"] != "EPT_MISCONFIG":
            assert r["where"] == "kernel"
            continue
        reg, op = r["cause"].split(" (")[0].split()
        seen.add((reg, op, r["where"]))
        coalesced_write = op == "write" and reg not in ("MDIC", "ICR", "ICS", "IMS", "IMC", "TCTL", "TDT")
        assert r["where"] == ("kernel" if coalesced_write else "userspace"), r
        assert ("coalesced MMIO" in r["cause"]) == coalesced_write
    assert {("RDT", "write", "kernel"), ("TDT", "write", "userspace"), ("ICR", "read", "userspace"),
            ("ITR", "write", "kernel")} <= seen


def test_a_coalesced_rdt_write_restarts_reception_only_at_the_next_userspace_exit():
    """The RX ring runs out of device-owned descriptors; the NAPI refill's RDT
    write is queued in KVM; QEMU reads the tap again only once the IMS write's
    userspace exit has flushed the coalesced ring."""
    p = make_preset(traffic={"pattern": "burst", "rate": "line", "sizes": 1514, "burst_size": 64,
                             "burst_gap_us": 2000.0}, emulation={"ring_size": 16})
    tr = Trace()
    ev = []
    holder = {}
    seen = []

    def rdt_mark():
        v = next(v for v in holder["sim"].technique.ring_views() if v.name == "rx")
        return dict(v.marks)["RDT"], v.note

    def sink(e):
        ev.append(e)
        if e.kind == "exit" and e.data["cause"].startswith("RDT write"):
            seen.append(("queued", e.data["value"] if "value" in e.data else None) + rdt_mark())
        elif e.kind == "reg" and e.data.get("reg") == "RDT":
            seen.append(("write", e.data["value"]) + rdt_mark())
        elif e.kind == "reg" and e.data.get("reg") == "IMS":
            seen.append(("ims", None) + rdt_mark())

    tr.add_sink(sink)
    s = holder["sim"] = sim_for(p, "emulation", packets=64, trace=tr)
    s.run()
    d = s.summary()
    assert d["packets"]["delivered"] == 64
    # what the ring pane shows: the device's RDT stays put while the write sits in KVM's
    # ring ("coalesced, not yet applied"), and moves at the next userspace exit
    k = next(i for i, x in enumerate(seen) if x[0] == "write")
    v = seen[k][1]
    assert seen[k + 1][0] == "queued" and seen[k + 1][2] != str(v)
    assert f"not yet applied: RDT ← {v}" in seen[k + 1][3]
    ims = next(x for x in seen[k + 1:] if x[0] == "ims")
    assert ims[2] == str(v) and "not yet applied" not in ims[3]
    stop = next(i for i, e in enumerate(ev) if "stops reading the tap" in e.msg)
    rdt = next(i for i in range(stop, len(ev)) if ev[i].kind == "exit" and ev[i].data["cause"].startswith("RDT write"))
    assert ev[rdt].data["where"] == "kernel"
    restart = next(i for i in range(stop, len(ev)) if ev[i].msg.startswith("QEMU e1000 reads RX descriptor"))
    user = next(i for i in range(rdt, len(ev)) if ev[i].kind == "exit" and ev[i].data["where"] == "userspace")
    assert rdt < user < restart
    flush = [i for i in range(rdt, restart) if ev[i].msg.startswith("QEMU flushes the coalesced-MMIO ring")]
    assert flush and "RDT ←" in ev[flush[0]].msg and flush[0] < user   # flushed as that exit begins
    # the device's RDT register (the ring view) changed only at that flush
    assert ev[user].data["cause"].split(" (")[0] in ("IMS write", "STATUS read", "ICR read")


# -- 2. QEMU's interrupt mitigation -------------------------------------------------

def test_low_load_one_interrupt_per_frame_raised_at_once():
    """About 200 frames/s: every frame's edge is raised as soon as QEMU writes it
    back (the first edge arms the timer, which expires long before the next frame)."""
    s, d, ev = run(make_preset(traffic=LOW_RATE), packets=50, trace=True)
    assert d["interrupts"]["injected"] == d["packets"]["delivered"] == 50
    copies = [e.t for e in ev if e.kind == "copy" and e.data.get("queue") == "rx"]
    assert edges(ev) == copies
    assert d["exits"]["per_packet"] == 8


def test_mitigation_keeps_128us_between_edges_and_postponed_edges_wait_for_the_timer():
    p = make_preset(traffic={"rate": "2 Gb/s", "sizes": 1514}, emulation={"itr_us": 50})  # ITR 195 < 500
    s, d, ev = run(p, packets=3000, trace=True)
    t = edges(ev)
    gaps = [b - a for a, b in zip(t, t[1:])]
    assert len(t) > 50 and min(gaps) >= 500 * 256          # the 500 × 256 ns floor
    assert gaps.count(500 * 256) > len(gaps) // 2          # e1000_mit_timer raises the postponed edge
    assert d["notifications"]["device_notify_suppressed"] > 0
    assert d["packets"]["delivered"] == 3000               # mitigation delays, never loses


def test_mitigation_honours_an_itr_above_the_floor():
    p = make_preset(traffic={"rate": "2 Gb/s", "sizes": 1514}, emulation={"itr_us": 1000})
    _s, _d, ev = run(p, packets=2000, trace=True)
    t = edges(ev)
    itr = round(1e9 / (1000 * 256))                        # InterruptThrottleRate=1000 → ITR 3906
    assert min(b - a for a, b in zip(t, t[1:])) >= itr * 256


def test_mitigation_off_one_edge_per_cause_and_itr_ignored():
    p = make_preset(traffic={"rate": "2 Gb/s", "sizes": 1514}, emulation={"itr_us": 1000, "mitigation": False})
    s, d, ev = run(p, packets=2000, trace=True)
    t = edges(ev)
    assert min(b - a for a, b in zip(t, t[1:])) < 128_000  # without the MIT flag QEMU ignores ITR
    assert s.technique.nics[0].regs.regs[REG["ITR"]] == 3906
    _s, on, _ = run(make_preset(traffic={"rate": "2 Gb/s", "sizes": 1514}), packets=2000)
    assert d["interrupts"]["injected"] > 3 * on["interrupts"]["injected"]


def test_interrupts_per_frame_fall_with_load():
    per = []
    for rate in (200, "500 Mb/s", "2 Gb/s"):
        _s, d, _ = run(make_preset(traffic={"rate": rate, "sizes": 1514}), packets=1500)
        per.append(d["interrupts"]["injected"] / d["packets"]["delivered"])
    assert per[0] == 1 and per[0] > per[1] > per[2]


# -- 3. Linux's dynamic ITR ----------------------------------------------------------

def test_dynamic_itr_writes_are_coalesced_exits_and_ramp_back_up():
    """Bursts of 64 frames, then a quiet gap: bulk traffic drops ITR to 4,000/s
    (976); the small polls after it ramp back 9k (434) → 14k (279) → 19k (205)."""
    p = load_preset("bursty-web").with_options(traffic={"sizes": 1514, "direction": "rx", "burst_gap_us": 2000.0})
    _s, d, ev = run(p, packets=1500, trace=True)
    writes = [e for e in exits(ev) if e.data["cause"].startswith("ITR write")]
    values = [e.data["value"] for e in ev if e.kind == "reg" and e.data["reg"] == "ITR"]
    assert len(writes) == len(values) > 8
    assert all(e.data["where"] == "kernel" and "coalesced MMIO" in e.data["cause"] for e in writes)
    assert values[:4] == [976, 434, 279, 205]
    assert set(values) <= {976, 434, 279, 205, 195}
    assert "20,000/s → 4,000 interrupts/s" in writes[0].data["cause"]


def test_fixed_itr_writes_no_itr_and_says_so(steady):
    s, d, ev = run(load_preset("interrupt-moderation").with_options(emulation={"itr_us": 128}), packets=1500,
                   trace=True)
    assert not [e for e in exits(ev) if e.data["cause"].startswith("ITR write")]
    assert s.technique.nics[0].regs.regs[REG["ITR"]] == 500      # InterruptThrottleRate=7812
    assert s.technique.options()["itr"] == "fixed" and "ITR fixed 128 µs" in s.technique.label()


def test_label_and_options(steady):
    s, _d, _ = run(steady, packets=1)
    assert s.technique.label() == "emulation (e1000, QEMU mitigation ≥ 128 µs, dynamic ITR)"
    assert s.technique.options() == {"mitigation": True, "itr": "dynamic", "itr_us": 0.0, "ring_size": 256,
                                     "tx_csum_offload": False}
    assert s.technique.nics[0].regs.regs[REG["ITR"]] == 195       # adapter->itr = 20,000/s
    s2, _d, _ = run(steady.with_options(emulation={"itr_us": 128, "ring_size": 64, "mitigation": False,
                                                   "tx_csum_offload": True}), packets=1)
    assert s2.technique.label() == "emulation (e1000, QEMU mitigation off, ITR fixed 128 µs, TX csum offload)"
    assert s2.technique.options()["ring_size"] == 64 and s2.technique.nics[0].rx.size == 64


def test_bad_emulation_option_is_one_line_and_exit_2():
    p = run_cli("run", "--technique", "emulation", "--set", "emulation.mitigation=3", "--packets", "1")
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert "mitigation" in p.stderr and len(p.stderr.strip().splitlines()) == 1


# -- 4. RDT every 16 buffers and at the end of the poll ---------------------------------

def test_rdt_written_every_16_buffers_and_once_at_the_end_of_a_poll():
    p = make_preset(traffic={"pattern": "burst", "rate": "line", "sizes": 1514, "burst_size": 40,
                             "burst_gap_us": 3000.0})
    _s, _d, ev = run(p, packets=200, trace=True)
    polls = []
    cur = None
    for e in ev:
        if e.kind == "exit" and e.data["cause"].startswith("ICR read"):
            cur = {"read": 0, "rdt": 0}
            polls.append(cur)
        elif cur is not None and e.kind == "ring" and "NAPI poll sees DD" in e.msg:
            cur["read"] += 1
        elif cur is not None and e.kind == "exit" and e.data["cause"].startswith("RDT write"):
            cur["rdt"] += 1
    big = [q for q in polls if q["read"] > 16]
    assert big, polls
    for q in polls:
        if q["read"]:
            assert q["rdt"] == q["read"] // 16 + (1 if q["read"] % 16 else 0), q


# -- 5. bytes -------------------------------------------------------------------------------

def test_rdt_is_next_to_use_minus_one(tmp_path):
    _d, recs = cli_trace(tmp_path, "--preset", "bursty-web", "--packets", "600", "--set", "traffic.direction=\"rx\"")
    posted = 255                                           # e1000_configure: E1000_DESC_UNUSED buffers
    writes = [r for r in recs if r["kind"] == "reg" and r.get("reg") == "RDT"]
    assert len(writes) > 5
    for r in writes:
        posted += int(r["msg"].split(" · ")[1].split()[0])  # "n new RX buffers"
        assert r["value"] == (posted - 1) % 256, r["msg"]


def test_rx_descriptor_status_0x07_and_length_frame_plus_fcs(steady):
    """At the moment QEMU writes a frame back, the descriptor says DD|EOP|IXSM
    with length = frame + 4; the buffer it points at parses as the frame."""
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
        assert addr == gpa and length == e.data["bytes"] + 4 and errors == 0
        assert status == 0x07
        f = parse_frame(vm.mem.read(gpa, length - 4))
        assert f["dst"] == vm.mac and f["dst_ip"] == vm.ip
        assert f["ethertype"] == 0x0800 and f["proto"] == 17 and f["ip_csum_ok"]
        checked.append((f["seq"], length))

    tr.add_sink(sink)
    p = steady.with_options(traffic={"sizes": [60, 1514]})
    s = holder["sim"] = sim_for(p, "emulation", packets=40, trace=tr)
    s.run()
    assert len(checked) == 40 and len({c[0] for c in checked}) == 40
    assert {c[1] for c in checked} == {64, 1518}
    assert s.metrics.corrupt == 0 and s.summary()["corrupt_frames"] == 0
    # the driver consumed them: status cleared
    rx = s.technique.nics[0].rx
    assert rx.next_to_clean == 40 and s.vms[0].mem.ram[rx.base + 12] == 0


def test_ram_dump_rx_length_and_tx_cmd(tmp_path):
    d = tmp_path / "rx"
    run_cli("run", "--technique", "emulation", "--preset", "steady-stream", "--packets", "1",
            "--dump-ram", str(d), check_rc=0)
    lay = json.loads((d / "layout.json").read_text())
    ram = (d / "vm0.ram").read_bytes()
    rx = next(q for q in lay["queues"] if q["name"] == "rx")
    assert rx["kind"] == "e1000-legacy"
    _addr, length, _cs, status, _err, _sp = RX_DESC.unpack_from(ram, rx["desc_gpa"])
    assert length == 1518 and status == 0                 # frame + FCS; the driver cleared DD
    t = tmp_path / "tx"
    run_cli("run", "--technique", "emulation", "--preset", "tx-stream", "--packets", "3",
            "--dump-ram", str(t), check_rc=0)
    lay = json.loads((t / "layout.json").read_text())
    ram = (t / "vm0.ram").read_bytes()
    tx = next(q for q in lay["queues"] if q["name"] == "tx")
    for i in range(3):
        _addr, length, _cso, cmd, _st, _css, _sp = TX_DESC.unpack_from(ram, tx["desc_gpa"] + 16 * i)
        assert cmd == 0x8B and length > 0                  # EOP|IFCS|RS|IDE


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
        assert cmd == 0x8B and length == 256
        f = parse_frame(vm.mem.read(addr, length))
        assert f["src"] == vm.mac and f["ip_csum_ok"]
        seen += 1
    assert seen == 30
    assert tx.head == tx.tail == 30                     # the device model walked TDH up to TDT
    tdt = [e for e in exits(ev) if e.data["cause"].startswith("TDT write")]
    assert len(tdt) == 30 and all(e.data["where"] == "userspace" for e in tdt)
    # QEMU's start_xmit sets TXQE with TXDW: the handler reads ICR = 0x03
    icr = [e.data["value"] for e in ev if e.kind == "reg" and e.data["reg"] == "ICR"]
    assert icr and all(v & 0x03 == 0x03 for v in icr)


def test_tx_checksum_offload_context_and_data_descriptors(tmp_path):
    d = tmp_path / "csum"
    p = run_cli("run", "--technique", "emulation", "--preset", "tx-stream", "--packets", "4", "--json",
                "--set", "emulation.tx_csum_offload=true", "--dump-ram", str(d), check_rc=0)
    assert json.loads(p.stdout)["packets"]["delivered"] == 4
    lay = json.loads((d / "layout.json").read_text())
    ram = (d / "vm0.ram").read_bytes()
    base = next(q for q in lay["queues"] if q["name"] == "tx")["desc_gpa"]
    for k in range(4):
        c = base + 32 * k
        ipcss, ipcso, ipcse, tucss, tucso, tucse, cmd_len = struct.unpack_from("<BBHBBHI", ram, c)
        assert (ipcss, ipcso, ipcse) == (0, 0, 0)
        assert (tucss, tucso, tucse) == (34, 40, 0)        # UDP header at 34, its checksum at 34 + 6
        assert cmd_len >> 24 == 0x20 and cmd_len & 0x00F00000 == 0   # DEXT, DTYP context
        addr, length, dtyp, cmd, _st, popts, _sp = TX_DESC.unpack_from(ram, c + 16)
        assert dtyp == 0x10 and cmd == 0xAB and popts == 0x02 and addr and length  # DTYP_D, DEXT|0x8B, TXSM


def test_tx_checksum_offload_in_the_ring_view_and_the_hex_view():
    from iovtui.ui.screens.hexview import annotate_page

    p = make_preset(traffic={"direction": "tx", "rate": "200 Mb/s", "sizes": 256},
                    emulation={"tx_csum_offload": True})
    s, d, _ = run(p, packets=5)
    assert d["packets"]["delivered"] == 5 and s.metrics.corrupt == 0
    tech = s.technique
    tv = next(v for v in tech.ring_views() if v.name == "tx")
    assert tv.rows[0][1] == "context" and "DEXT UDP css 34 cso 40" in tv.rows[0][3]
    assert tv.rows[1][3].startswith("EOP|IFCS|RS|DEXT|IDE")
    tx = tech.nics[0].tx
    page = tx.base & ~0xFFF
    data = bytes(s.vms[0].mem.ram[page:page + 4096])
    notes = annotate_page(tech, 0, page, data)
    labels = [n[2] for n in notes if (page + n[0] - tx.base) // 16 in (0, 1) and page + n[0] >= tx.base]
    assert any(lab.startswith("tx desc[0] context: tucss 34 tucso 40") for lab in labels), labels
    assert any(lab.startswith("tx desc[1] data:") and "popts 0x02 (TXSM)" in lab for lab in labels), labels


# -- narration, stages -------------------------------------------------------------------------

def test_trace_stages_cover_the_six_step_flow(steady):
    s, _d, ev = run(steady, packets=1, trace=True)
    tech = s.technique
    assert len(tech.stages) == 6 and all(isinstance(x, str) and x for x in tech.stages)
    stages = {e.stage for e in ev}
    assert {1, 2, 3, 4, 5, 6} <= stages and stages <= set(range(7))
    start = next(i for i, e in enumerate(ev) if e.stage == 2)
    first = {}
    for i, e in enumerate(ev[start:]):
        if e.stage:
            first.setdefault(e.stage, i)
    assert first[2] < first[3] < first[4] < first[5] < first[6]
    assert first[1] > first[6]          # the refill's RDT write comes once the frame is read
    copy = [e for e in ev if e.kind == "copy"]
    assert copy and copy[0].stage == 4 and copy[0].data["bytes"] == 1514 and "DD|EOP|IXSM" in copy[0].msg
    regs = [e for e in ev if e.kind == "reg" and e.data["reg"] in REG]
    assert any(e.data["reg"] == "ICR" and e.data["value"] == ICR_RXT0 for e in regs)
    assert all(REG[e.data["reg"]] == e.data["offset"] for e in regs)
    ims = [e.data["value"] for e in regs if e.data["reg"] == "IMS" and e.data["write"]]
    assert ims == [0x9D]                # e1000_irq_enable after the poll
    imc = [e.data["value"] for e in regs if e.data["reg"] == "IMC"]
    assert imc == [0xFFFFFFFF]          # e1000_intr masks everything


def test_each_exit_is_stamped_when_its_vcpu_takes_it(steady):
    _s, _d, ev = run(steady, packets=1, trace=True)
    ex = [e for e in exits(ev) if e.t > 0]
    handler = [e for e in ex if e.data["cause"].split(" (")[0] in ("ICR read", "IMC write", "STATUS read")][:3]
    assert len(handler) == 3 and len({e.t for e in handler}) == 1          # one action emitted them
    for a, b in zip(handler, handler[1:]):
        assert b.data["start_ns"] == a.data["start_ns"] + a.data["cost_ns"]
    # (the HLT exit is stamped from when the guest went idle)
    assert all(e.data["start_ns"] >= e.t for e in ex if e.data["reason"] != "HLT")


def test_x2apic_eoi_is_an_msr_write(steady):
    _s, d, _ev = run(steady.with_options(host={"x2apic": True}), packets=1)
    by = d["exits"]["by_reason"]
    assert by.get("MSR_WRITE") == 1 and "APIC_WRITE" not in by and "APIC_ACCESS" not in by


def test_apicv_eoi_of_the_level_triggered_intx_still_exits(steady):
    _s, d, _ev = run(steady.with_options(host={"apicv": True}), packets=1)
    assert d["exits"]["by_reason"].get("EOI_INDUCED") == 1


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


# -- conservation, faults, determinism -------------------------------------------------------

@pytest.mark.parametrize("direction", ["rx", "tx", "both"])
@pytest.mark.parametrize("ring_full", [False, True])
@pytest.mark.parametrize("csum", [False, True])
def test_conservation_at_every_step(direction, ring_full, csum):
    p = make_preset(traffic={"direction": direction, "rate": "line", "sizes": "imix", "pattern": "poisson"},
                    emulation={"ring_size": 16, "tx_csum_offload": csum}, faults={"ring_full": ring_full})
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
    # 63 buffers posted at start-up (one slot kept free), RDT = 62: the device owns 62
    assert d["packets"]["delivered"] == 62
    assert d["packets"]["dropped"] > 0
    assert any("tap queue full" in r for r in d["drops_by_reason"])
    assert d["packets"]["offered"] == d["packets"]["delivered"] + d["packets"]["dropped"] + d["in_flight"]
    nic = s.technique.nics[0]
    assert nic.rx.head == nic.rx.tail == 62              # RDH caught up with RDT: QEMU waits


def test_same_seed_same_summary():
    p = make_preset(traffic={"pattern": "poisson", "rate": "2 Gb/s", "sizes": "imix", "direction": "both"},
                    emulation={"itr_us": 20})
    a = json.dumps(run(p, packets=800, seed=5)[1], sort_keys=True)
    b = json.dumps(run(p, packets=800, seed=5)[1], sort_keys=True)
    c = json.dumps(run(p, packets=800, seed=6)[1], sort_keys=True)
    assert a == b
    assert a != c


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
                assert parse_frame(vm.mem.read(addr, length - 4))["dst"] == vm.mac
                n += 1
        assert n > 0
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
    assert set(d["exits"]) >= {"total", "per_packet", "by_reason", "kernel", "userspace"}
    assert d["packets"]["delivered"] == 300 and d["copies_per_packet"] == 2
    assert d["exits"]["by_reason"]["EPT_MISCONFIG"] > 0 and d["interrupts"]["posted"] == 0
    assert d["options"]["mitigation"] is True and d["options"]["itr"] == "dynamic"
    assert d["iommu"]["translations"] == 0
