"""A dense host (issue 15): 63 VFs per port, two ports, up to 126 VMs for
every technique; guest RAM lazily backed without changing a dumped byte."""
import hashlib
import json

import pytest

from iovtui.sim.preset import preset_from_dict

from conftest import TECHNIQUES, run_cli, sim_for


def write_preset(tmp_path, vms, nic=None, traffic=None, faults=None, name="dense"):
    """A preset file with ``vms`` VMs (or a list of [[vm]] tables)."""
    tables = vms if isinstance(vms, list) else [{"name": f"vm{i}"} for i in range(vms)]
    lines = [f'name = "{name}"', 'description = "test"', "[traffic]"]
    for k, v in (traffic or {"pattern": "steady", "rate": "line", "sizes": 1514, "count": 2000}).items():
        lines.append(f"{k} = {json.dumps(v)}")
    for sec, kv in (("nic", nic or {}), ("faults", faults or {})):
        lines.append(f"[{sec}]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in kv.items()]
    for t in tables:
        lines.append("[[vm]]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in t.items()]
    p = tmp_path / f"{name}.toml"
    p.write_text("\n".join(lines) + "\n")
    return p


def one_line_error(p):
    assert p.returncode == 2, (p.returncode, p.stdout, p.stderr)
    assert "Traceback" not in p.stderr and p.stderr.count("\n") == 1, p.stderr
    return p.stderr


# -- limits -------------------------------------------------------------------------------
@pytest.mark.parametrize("setting, needles", [
    ("nic.vfs=64", ("nic.vfs = 64", "1..63")),
    ("nic.vfs=0", ("nic.vfs = 0", "1..63")),
    ("nic.ports=3", ("nic.ports = 3", "1..2")),
    ("nic.ports=0", ("nic.ports = 0", "1..2")),
])
def test_vfs_and_ports_out_of_range_are_one_line_exit_2(setting, needles):
    err = one_line_error(run_cli("run", "--preset", "steady-stream", "--set", setting))
    assert all(n in err for n in needles), err


def test_more_vms_than_ports_times_vfs_is_one_line_exit_2(tmp_path):
    p = write_preset(tmp_path, 9, nic={"vfs": 4, "ports": 2})
    err = one_line_error(run_cli("run", "--preset", str(p)))
    assert "nic.ports = 2 × nic.vfs = 4" in err and "9 VMs" in err and "ports × vfs" in err, err
    p = write_preset(tmp_path, 127, nic={"vfs": 63, "ports": 2})
    err = one_line_error(run_cli("run", "--preset", str(p)))
    assert "127 [[vm]] tables" in err and "1..126" in err, err


def test_a_vm_port_must_exist_and_have_a_free_vf(tmp_path):
    p = write_preset(tmp_path, [{"name": "a", "port": 1}], nic={"vfs": 2})
    err = one_line_error(run_cli("run", "--preset", str(p)))
    assert "vm[0].port = 1" in err and "0..0" in err, err
    p = write_preset(tmp_path, [{"name": n, "port": 1} for n in "abc"], nic={"vfs": 2, "ports": 2})
    err = one_line_error(run_cli("run", "--preset", str(p)))
    assert "3 VMs name port 1" in err and "nic.vfs = 2" in err, err


def test_63_vfs_on_each_of_two_ports_take_126_vms(tmp_path):
    p = write_preset(tmp_path, 126, nic={"vfs": 63, "ports": 2})
    r = run_cli("run", "--preset", str(p), "--technique", "sriov", "--packets", "300", "--json", check_rc=0)
    assert json.loads(r.stdout)["options"]["vfs"] == 126


# -- RIDs of both ports ---------------------------------------------------------------------
def two_port_preset(vms=4, direction="rx", **nic):
    return preset_from_dict({
        "name": "two", "description": "two ports",
        "traffic": {"pattern": "steady", "rate": "line", "sizes": 1514, "count": 400, "direction": direction},
        "nic": {"vfs": 2, "ports": 2, **nic},
        "vm": [{"name": f"vm{i}"} for i in range(vms)],
    }, "<test>")


def test_both_ports_pfs_and_vfs_have_the_sr_iov_capabilitys_rids():
    nic = sim_for(two_port_preset(), "sriov").technique.nic_view()
    assert nic.columns[:2] == ("fn", "RID")
    rows = [(r[0], r[1], r[7]) for r in nic.rows]
    # PF n = function n; VF k of a PF = PF + First VF Offset (128) + k × VF Stride (2)
    assert rows == [("PF0", "02:00.0", "host"), ("VF0.0", "02:10.0", "vm0"), ("VF0.1", "02:10.2", "vm1"),
                    ("PF1", "02:00.1", "host"), ("VF1.0", "02:10.1", "vm2"), ("VF1.1", "02:10.3", "vm3")]
    assert "2 ports" in nic.title and "02:00.0, 02:00.1" in nic.title
    # other offsets: the arithmetic, not a table
    nic = sim_for(two_port_preset(pf_rid="05:00.0", first_vf_offset=16, vf_stride=4), "sriov").technique.nic_view()
    assert [r[1] for r in nic.rows] == ["05:00.0", "05:02.0", "05:02.4", "05:00.1", "05:02.1", "05:02.5"]


def test_one_port_keeps_its_names_and_rids():
    nic = sim_for(two_port_preset(vms=2, ports=1), "sriov").technique.nic_view()
    assert [(r[0], r[1]) for r in nic.rows] == [("PF", "02:00.0"), ("VF0", "02:10.0"), ("VF1", "02:10.2")]


def test_the_trace_and_iommu_pane_name_a_port_1_vf_by_its_rid(tmp_path):
    p = write_preset(tmp_path, [{"name": "a"}, {"name": "b", "port": 1}], nic={"vfs": 4, "ports": 2})
    t = tmp_path / "t.jsonl"
    run_cli("run", "--preset", str(p), "--technique", "sriov", "--packets", "20", "--trace", str(t), check_rc=0)
    ev = [json.loads(x) for x in t.read_text().splitlines()[1:]]
    sw = {(e["vm"], e["rid"]) for e in ev if e["kind"] == "switch"}
    assert sw == {("a", "02:10.0"), ("b", "02:10.1")}
    io = sim_for(two_port_preset(vms=3), "sriov").technique.iommu_view()
    assert {r[0] for r in io.rows} == {"02:10.0", "02:10.2", "02:10.1"}


def test_conflicting_rids_and_pf_function_are_one_line(tmp_path):
    p = write_preset(tmp_path, 2, nic={"vfs": 4, "ports": 2, "vf_stride": 1})
    err = one_line_error(run_cli("run", "--preset", str(p)))
    assert "share a RID" in err and "vf_stride" in err, err
    p = write_preset(tmp_path, 2, nic={"vfs": 4, "ports": 2, "pf_rid": "02:00.7"})
    err = one_line_error(run_cli("run", "--preset", str(p)))
    assert 'nic.pf_rid = "02:00.7"' in err and "function 0..6" in err, err


def test_spoofed_frames_on_port_1_are_logged_by_port_1s_pf(tmp_path):
    p = write_preset(tmp_path, [{"name": "a"}, {"name": "b", "port": 1}], nic={"vfs": 2, "ports": 2,
                     "pf_watchdog_ms": 0.05}, traffic={"direction": "tx", "targets": ["b"], "count": 200},
                     faults={"spoofed_src": 0.5})
    t = tmp_path / "t.jsonl"
    run_cli("run", "--preset", str(p), "--technique", "sriov", "--trace", str(t), check_rc=0)
    logs = [json.loads(x)["line"] for x in t.read_text().splitlines()[1:] if '"source":"PF"' in x]
    assert logs and all(x.startswith("ixgbe 0000:02:00.1 enp2s0f1: ") and x.endswith(" Spoofed packets detected")
                        for x in logs), logs


@pytest.mark.parametrize("direction", ["rx", "tx"])
def test_two_ports_are_two_links(direction):
    """Line rate to (or from) VMs on both ports: each link carries its own 10 Gb/s."""
    one = sim_for(two_port_preset(2, direction, vfs=2), "sriov", packets=3000)     # both VMs on port 0
    two = sim_for(two_port_preset(2, direction, vfs=1), "sriov", packets=3000)     # one VM on each port
    for s in (one, two):
        s.run()
    g1, g2 = one.summary()["throughput_gbps"], two.summary()["throughput_gbps"]
    assert g1 < 10 < 1.8 * g1 < g2 < 20


# -- 126 VMs for every technique ----------------------------------------------------------
@pytest.mark.parametrize("tech", TECHNIQUES)
def test_126_vms_account_for_every_packet(tmp_path, tech):
    p = write_preset(tmp_path, 126, nic={"vfs": 63, "ports": 2},
                     traffic={"pattern": "poisson", "direction": "both", "rate": "12 Gb/s", "sizes": "imix",
                              "count": 1500})
    t = tmp_path / "t.jsonl"
    for extra in ((), ("--until", "150000")):
        r = run_cli("run", "--preset", str(p), "--technique", tech, "--json", "--trace", str(t), "--force",
                    *extra, check_rc=0)
        d = json.loads(r.stdout)
        pk = d["packets"]
        assert pk["delivered"] + pk["dropped"] + pk["to_host"] + d["in_flight"] == pk["offered"], d
        if extra:
            assert d["in_flight"] > 0 and not d["complete"]
        else:
            assert pk["offered"] == 1500 and d["in_flight"] == 0
            # every VM is named in the trace: each got and delivered frames
            ev = [json.loads(x) for x in t.read_text().splitlines()[1:]]
            assert {e["vm"] for e in ev if e["kind"] == "deliver"} == {f"vm{i}" for i in range(126)}


# -- guest RAM: lazily backed, the same bytes ---------------------------------------------------
#: sha256 of each file `iovtui run --preset multi-tenant --technique T --seed 3 --packets 600
#: --dump-ram DIR` wrote with the code before lazy backing was checked (main at be7bd29)
MAIN_DUMP_SHA256 = {
    "emulation": {
        "layout.json": "55d377ff66d2a0485d65494ceadfd82f07a091fb5a1af9f3072a7d158a92ee73",
        "vm0.ram": "661070a574fc7cbc167931c03fac533e76bd427f2c04e789bcf9f558b57728c2",
        "vm1.ram": "34eec66519f0438e36c828857d4df8da4aa876a6e0974b45512c6a0f35aee1cc",
        "vm2.ram": "969061fda3541afa49eb36e9dbb81ea87d61783a157202db8656ef1781d91974",
        "vm3.ram": "41af891c0bfb4294373d5dec08f58065308c7a7d3ab46f999c11e061f3ba2bdb",
    },
    "virtio": {
        "layout.json": "31640a2378ac366fe38701270f3a6680e8786e8a4b2f8096dd7b5f16285b00a0",
        "vm0.ram": "197164ed08528e81fa72165170ed0bc84d2ad1806afc80765a0351184e7bee88",
        "vm1.ram": "fbf87e070f8a4b725c0a31abaebd5747d11de2ca7699677d43c5e1068c98a1f4",
        "vm2.ram": "235215e0c8d1188af98f13d3d29bf4451960f1dc1ee3eba800ad1e82f8bcd33a",
        "vm3.ram": "7dc5a63f287614a7841fe668176ecc8c18954bb01ea85a55d81cbfa4a22f01a9",
    },
    "sriov": {
        "layout.json": "9307ec9e255dbafffd177129adf1f6d2ee12ff103a33acd8dd3eddfda593de9f",
        "vm0.ram": "292ed8d0b1dd995aa821d5cb3970ea28bd937c24ee18817664d1b2fef26b8194",
        "vm1.ram": "baca9240a4ddd55515116b9a838550b72f16400509087d6c111ef6dcb7a088b7",
        "vm2.ram": "29f2618b6bbfc0a43a7576bd350ae716106d6a20bea9b8e673c9509c61087814",
        "vm3.ram": "810243843b81321606f34bdca05b17b7b3afa6643bed9e4b25a43cbd027f1465",
    },
}


@pytest.mark.parametrize("tech", TECHNIQUES)
def test_a_ram_dump_is_byte_identical_to_mains(tmp_path, tech):
    """Pins main's exact bytes, so the costs are exact (costs.jitter = 0, as main had them)."""
    d = tmp_path / "dump"
    run_cli("run", "--preset", "multi-tenant", "--technique", tech, "--seed", "3", "--packets", "600",
            "--set", "costs.jitter=0", "--dump-ram", str(d), check_rc=0)
    got = {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in d.iterdir()}
    assert got == MAIN_DUMP_SHA256[tech]


def test_a_checkpoint_copy_of_guest_ram_reads_the_same_bytes():
    """The app's step-back checkpoints copy guest RAM sparsely: every byte the same."""
    import copy

    s = sim_for(two_port_preset(vms=2), "sriov", packets=200)
    s.run()
    for vm in s.vms:
        c = copy.deepcopy(vm.mem)
        assert c.ram[:] == vm.mem.ram[:] and c.ram[:] != bytes(vm.mem.size)


@pytest.mark.parametrize("tech", TECHNIQUES)
def test_a_frame_can_carry_only_the_shown_vms_rings(tech):
    """A dense host's frame need not build every VM's descriptor table: the
    driver's view_vm picks whose rings the Frame carries (default: all)."""
    import asyncio

    from iovtui.sim.driver import Driver
    from iovtui.sim.preset import load_preset
    from iovtui.sim.world import Simulation

    async def frames():
        p = load_preset("dense-host")
        d = Driver(lambda tr: Simulation(p, tech, seed=1, trace=tr))
        d.sim.run(max_events=3000)
        every = d.frame()
        d.view_vm = 30
        return every, d.frame()

    every, one = asyncio.run(frames())
    assert {r.vm for r in every.rings} == {f"vm{i}" for i in range(48)}
    assert [r.vm for r in one.rings] == ["vm30", "vm30"]
    assert [r for r in every.rings if r.vm == "vm30"] == list(one.rings)
    assert len(one.memory) == 48


@pytest.mark.parametrize("tech", TECHNIQUES)
def test_which_vf_questions_on_a_dense_host_offer_the_right_answer(tech):
    """48 VMs: the predict question shows six choices; the VF (or VM) that
    really gets the frame is one of them, never "dropped" instead."""
    from iovtui.sim.driver import Driver
    from iovtui.sim.preset import load_preset
    from iovtui.sim.world import Simulation

    p = load_preset("dense-host").with_options(traffic={"direction": "rx"})
    d = Driver(lambda tr: Simulation(p, tech, seed=1, trace=tr))
    d.set_predict(True)
    d.view_vm = 0                       # (one VM's rings: frames stay small)
    last = [None]                       # the newest frame (the reveal, after an answer)
    d.subscribe(lambda f: last.__setitem__(0, f))
    seen = []
    for _ in range(3000):
        d.step()
        q = d.question
        if q is None:
            continue
        r = d.answer(q.answer)
        if q.kind == "switch":
            got = next(e for e in last[0].events if e.msg == q.explanation[0])     # the reveal's events
            who = got.data.get("vf") or got.vm
            text = dict(q.choices)[q.answer]
            assert text.startswith(who + " ") or text.startswith(who + "'s"), (text, who)
            seen.append(who)
        assert r.right
    assert len(seen) >= 2 and any(w not in ("VF0.0", "VF0.1", "VF0.2", "vm0", "vm1", "vm2") for w in seen), seen


@pytest.mark.parametrize("steps", [40, 8000])
def test_the_ram_pane_flashes_the_writes_since_the_previous_frame(steps):
    """Each published frame names the guest-RAM writes since the one before
    (what the RAM pane flashes): the frames QEMU copied into the RX buffers,
    GPA and length as the trace says, oldest first; past the log's 512 writes
    between two frames, the newest 512 (the write log is kept compact, one per
    VM: its entries must still come back as they were written)."""
    from iovtui.sim.driver import Driver
    from iovtui.sim.preset import load_preset
    from iovtui.sim.trace import ListSink
    from iovtui.sim.world import Simulation

    p = load_preset("steady-stream")
    d = Driver(lambda trace: Simulation(p, "emulation", seed=3, packets=10**6, trace=trace))
    d.publish()
    for _ in range(2):
        sink = ListSink()
        d.sim.engine.trace.add_sink(sink)
        d.sim.engine.run(max_events=steps)
        d.sim.engine.trace.remove_sink(sink)
        f = d.publish()
        copied = [(e.data["gpa"], e.data["bytes"], "QEMU e1000") for e in sink.events
                  if e.kind == "copy" and e.data.get("queue") == "rx"]
        assert copied and (len(copied) > 512) == (steps > 1000), len(copied)
        assert f.memory[0].fresh_writes == tuple(copied[-512:])
    assert d.publish().memory[0].fresh_writes == ()          # nothing new since
