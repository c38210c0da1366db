import json
import struct

from iovtui.sim.packet import parse_frame

from conftest import ROOT, run_cli

KEYS = {"technique", "preset", "seed", "packets", "exits", "interrupts", "copies_per_packet",
        "throughput_gbps", "latency_ns", "iommu"}


def test_run_json_has_the_design_keys():
    for tech in ("emulation", "virtio", "sriov"):
        p = run_cli("run", "--technique", tech, "--packets", "300", "--json", check_rc=0)
        d = json.loads(p.stdout)
        assert KEYS <= set(d)
        assert d["technique"] == tech and d["preset"] == "steady-stream" and d["seed"] == 1
        assert set(d["packets"]) == {"offered", "delivered", "dropped", "to_host"} and d["packets"]["offered"] == 300
        assert set(d["exits"]) == {"total", "per_packet", "by_reason", "kernel", "userspace", "setup_not_counted"}
        assert d["exits"]["kernel"] + d["exits"]["userspace"] == d["exits"]["total"]
        assert set(d["interrupts"]) == {"injected", "posted", "host"}
        assert set(d["latency_ns"]) == {"p50", "p99", "min", "max", "precision"}
        assert set(d["iommu"]) == {"translations", "iotlb_hits", "iotlb_misses", "faults"}
        assert isinstance(d["throughput_gbps"], float) and isinstance(d["exits"]["per_packet"], float)
        assert all(isinstance(v, int) for v in d["exits"]["by_reason"].values())


def test_human_summary():
    p = run_cli("run", "--packets", "200", check_rc=0)
    assert "VM exits" in p.stdout and "copies" in p.stdout and "throughput" in p.stdout


def one_line_error(p, *needles):
    assert p.returncode == 2, (p.stdout, p.stderr)
    assert "Traceback" not in p.stderr and p.stderr.count("\n") == 1, p.stderr
    for n in needles:
        assert n in p.stderr, p.stderr


def test_bad_input_exits_2_with_one_line(tmp_path):
    one_line_error(run_cli("run", "--preset", "nope"), "unknown preset", "steady-stream")
    one_line_error(run_cli("run", "--technique", "kvm"), 'unknown technique "kvm"', "emulation, virtio, sriov")
    one_line_error(run_cli("--technique", "kvm"), 'unknown technique "kvm"')
    one_line_error(run_cli("run", "--packets", "x"), "--packets", "1..10000000")
    one_line_error(run_cli("run", "--packets", "0"), "1..10000000")
    one_line_error(run_cli("run", "--seed", "-1"), "seed")
    bad = tmp_path / "bad.toml"
    bad.write_text("name = \n")
    one_line_error(run_cli("run", "--preset", str(bad)), str(bad), "line 1")
    rng = tmp_path / "range.toml"
    rng.write_text('name = "r"\ndescription = "d"\n[virtio]\nqueue_size = 3\n')
    one_line_error(run_cli("run", "--preset", str(rng)), "virtio.queue_size = 3", "power of two")
    one_line_error(run_cli("run", "--set", "virtio.vhots=true"), '"vhost"', "--set virtio.vhots=true:")
    # a bad --set names the --set, not the preset file it changes
    p = run_cli("run", "--set", "virtio.event_idx=true", "--set", "virtio.queue_size=3")
    one_line_error(p, "--set virtio.queue_size=3:", "power of two")
    assert "steady-stream.toml" not in p.stderr
    one_line_error(run_cli("run", "--set", "vm.name=x"), "--set vm.name=x:", "preset file")
    one_line_error(run_cli("run", "--trace", str(tmp_path / "no" / "dir" / "t.jsonl")), "does not exist")
    existing = tmp_path / "t.jsonl"
    existing.write_text("keep")
    one_line_error(run_cli("run", "--trace", str(existing)), "--force")
    assert existing.read_text() == "keep"
    one_line_error(run_cli("presets", "--validate", str(rng)), "queue_size")


def test_dump_ram_can_be_walked_from_layout_json(tmp_path):
    d = tmp_path / "dump"
    run_cli("run", "--packets", "40", "--dump-ram", str(d), check_rc=0)
    layout = json.loads((d / "layout.json").read_text())
    vm = layout["vms"][0]
    ram = (d / f"{vm['name']}.ram").read_bytes()
    assert len(ram) == vm["ram_bytes"]
    rx = next(q for q in layout["queues"] if q["vm"] == vm["name"] and q["name"] == "rx")
    assert rx["kind"] == "virtio-split" and rx["event_idx"] is True
    used_idx = struct.unpack_from("<H", ram, rx["used_gpa"] + 2)[0]
    assert struct.unpack_from("<H", ram, rx["avail_gpa"] + 2)[0] >= used_idx > 0
    slot = (used_idx - 1) % rx["size"]
    head, length = struct.unpack_from("<II", ram, rx["used_gpa"] + 4 + 8 * slot)
    addr, dlen, flags, _n = struct.unpack_from("<QIHH", ram, rx["desc_gpa"] + 16 * head)
    assert flags & 2 and length <= dlen
    frame = parse_frame(ram[addr + 12:addr + length])
    assert frame["dst"] == vm["mac"] and frame["ethertype"] == 0x0800
    # the other techniques list their rings with their kind
    for tech, kind in (("emulation", "e1000-legacy"), ("sriov", "82599-adv")):
        dd = tmp_path / tech
        run_cli("run", "--technique", tech, "--packets", "20", "--dump-ram", str(dd), check_rc=0)
        qs = json.loads((dd / "layout.json").read_text())["queues"]
        assert {q["kind"] for q in qs} == {kind} and {q["name"] for q in qs} == {"rx", "tx"}
    p = run_cli("run", "--packets", "10", "--dump-ram", str(d))
    assert p.returncode == 2 and "--force" in p.stderr
    run_cli("run", "--packets", "10", "--dump-ram", str(d), "--force", check_rc=0)


def test_presets_command(tmp_path):
    p = run_cli("presets", check_rc=0)
    assert "steady-stream" in p.stdout and "line-rate" in p.stdout
    ok = tmp_path / "ok.toml"
    ok.write_text('name = "ok"\ndescription = "fine"\n')
    assert "ok" in run_cli("presets", "--validate", str(ok), check_rc=0).stdout


def test_replay_reopens_the_traced_run(tmp_path):
    from iovtui.cli import trace_run

    t = tmp_path / "run.jsonl"
    run_cli("run", "--technique", "sriov", "--preset", "rogue-dma", "--seed", "7", "--packets", "50",
            "--set", "sriov.posted_interrupts=true", "--trace", str(t), check_rc=0)
    r = trace_run(str(t))
    assert r["technique"] == "sriov" and r["seed"] == 7 and r["preset"].name == "rogue-dma"
    # the old key still works: it means APICv with VT-d posted interrupts
    assert r["preset"].host["apicv"] is True and r["preset"].host["vtd_posted_interrupts"] is True


async def test_replay_at_opens_on_that_event_of_the_traced_run(tmp_path):
    """`iovtui replay FILE --at SEQ`: the app, paused, narrating the trace's
    event SEQ, with the run's packet count; n goes on with SEQ+1."""
    import json

    from iovtui.cli import trace_run
    from iovtui.ui.app import create_app

    t = tmp_path / "run.jsonl"
    run_cli("run", "--technique", "sriov", "--packets", "40", "--trace", str(t), check_rc=0)
    lines = [json.loads(x) for x in t.read_text().splitlines()]
    events = {e["seq"]: e for e in lines[1:] if e["kind"] != "end"}
    r = trace_run(str(t))
    assert r["packets"] == 40
    for seq in (3, 44, max(events)):           # set-up, the middle of an action, the last
        app = create_app(r["preset"], r["technique"], seed=r["seed"], packets=r["packets"], at_event=seq)
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.pause(0.1)
            assert not app.driver.running
            assert events[seq]["msg"] in app.w_narration.text.plain
            # the exit log holds the run's exits up to that event
            want = [e["seq"] for e in lines[1:] if e["kind"] == "exit" and e["seq"] <= seq]
            assert list(app.w_exits.seqs) == want[-len(app.w_exits.seqs):] if want else not app.w_exits.seqs
            assert bool(app.w_exits.seqs) == bool(want)
            if seq + 1 in events:
                await pilot.press("n")
                await pilot.pause(0.05)
                assert events[seq + 1]["msg"][:60] in app.w_narration.text.plain.replace("\n", "")
                await pilot.press("b")
                await pilot.pause(0.05)
                assert events[seq]["msg"][:60] in app.w_narration.text.plain.replace("\n", "")
            else:
                assert app.driver.sim.complete
    one_line_error(run_cli("replay", str(t), "--at", "999999"), "numbered 1..")
    one_line_error(run_cli("replay", str(t), "--at", "0"), "--at")


def test_replay_bad_input(tmp_path):
    one_line_error(run_cli("replay", str(tmp_path / "missing.jsonl")), "no such trace file")
    junk = tmp_path / "junk.jsonl"
    junk.write_text('{"hello": 1}\n')
    one_line_error(run_cli("replay", str(junk)), "not an iovtui trace")


def test_the_app_needs_a_terminal():
    """Without one (a pipe, /dev/null), Textual would spin a core for ever:
    one line instead, naming what to use."""
    p = run_cli()
    one_line_error(p, "needs a terminal", "iovtui run", "iovtui serve")
    p = run_cli("replay", "nope.jsonl")
    one_line_error(p, "no such trace file")


def test_replay_refuses_a_preset_that_changed_or_is_gone(tmp_path):
    """The header keeps the preset file's absolute path and SHA-256: a replay
    of another run than the one recorded is refused with one line."""
    import json
    import shutil

    from iovtui.cli import trace_run

    mine = tmp_path / "my.toml"
    shutil.copy(ROOT / "presets" / "steady-stream.toml", mine)
    t = tmp_path / "t.jsonl"
    run_cli("run", "--preset", "my.toml", "--packets", "20", "--trace", str(t), cwd=tmp_path, check_rc=0)
    head = json.loads(t.read_text().splitlines()[0])
    assert head["preset_source"] == str(mine.resolve()) and len(head["preset_sha256"]) == 64
    elsewhere = tmp_path / "sub"
    elsewhere.mkdir()
    assert trace_run(str(t))["preset"].source == str(mine.resolve())   # found from any directory
    mine.write_text(mine.read_text().replace("count = ", "count = 1"))
    one_line_error(run_cli("replay", str(t), cwd=elsewhere), "has changed since the trace was recorded")
    mine.unlink()
    one_line_error(run_cli("replay", str(t), cwd=elsewhere), "which is gone")


# -- run --until: a run stopped at a virtual time -----------------------------------------
def test_until_stops_the_run_and_every_packet_is_accounted_for():
    """At every --until instant, for every technique: offered = delivered +
    dropped + in_flight (+ to the host), the clock reads the --until time,
    and the run is not complete."""
    for tech in ("emulation", "virtio", "sriov"):
        seen = []
        for until, ns in (("50us", 50_000), ("750µs", 750_000), ("1234567", 1_234_567), ("2ms", 2_000_000)):
            d = json.loads(run_cli("run", "--preset", "line-rate", "--technique", tech, "--until", until,
                                   "--json", check_rc=0).stdout)
            pk = d["packets"]
            assert pk["offered"] == pk["delivered"] + pk["dropped"] + d["in_flight"] + d.get("to_host", 0), (tech, until, d)
            assert d["virtual_time_ns"] == d["until_ns"] == ns and d["complete"] is False
            seen.append((pk["offered"], d["exits"]["total"], d["in_flight"]))
        assert seen == sorted(seen) and seen[0] < seen[-1]       # a later instant, more of the run
        assert any(f > 0 for _o, _e, f in seen)                  # something was on its way


def test_until_with_packets_stops_at_whichever_comes_first():
    short = json.loads(run_cli("run", "--packets", "20", "--until", "1s", "--json", check_rc=0).stdout)
    assert short["complete"] is True and short["packets"]["offered"] == 20 and short["in_flight"] == 0
    assert short["virtual_time_ns"] < 10**9
    cut = json.loads(run_cli("run", "--packets", "5000", "--until", "100us", "--json", check_rc=0).stdout)
    assert cut["complete"] is False and cut["virtual_time_ns"] == 100_000 and cut["packets"]["offered"] < 5000
    assert "--until" in run_cli("run", "--help", check_rc=0).stdout


def test_until_dump_and_trace_are_that_instant(tmp_path):
    """virtio RX at line rate, stopped mid-run: the dump's RX used ring is
    ahead of what the driver has cleaned (the used entries past the delivered
    frames point at buffers holding frames for this VM), and no trace record
    is later than the --until time."""
    seen_ahead = False
    for until in ("300us", "750us", "1100us"):
        d, t = tmp_path / f"d{until}", tmp_path / f"t{until}.jsonl"
        s = json.loads(run_cli("run", "--preset", "line-rate", "--technique", "virtio", "--until", until,
                               "--json", "--dump-ram", str(d), "--trace", str(t), check_rc=0).stdout)
        until_ns = s["until_ns"]
        lines = t.read_text().splitlines()
        assert json.loads(lines[0])["until_ns"] == until_ns
        assert max(json.loads(x)["t"] for x in lines[1:]) <= until_ns < s["virtual_time_ns"] + 1
        layout = json.loads((d / "layout.json").read_text())
        ram = (d / "vm0.ram").read_bytes()
        vm = layout["vms"][0]
        rx = next(q for q in layout["queues"] if q["vm"] == "vm0" and q["name"] == "rx")
        used_idx = struct.unpack_from("<H", ram, rx["used_gpa"] + 2)[0]
        delivered = s["packets"]["delivered"]
        assert used_idx >= delivered
        mac = bytes(int(x, 16) for x in vm["mac"].split(":"))
        for i in range(delivered, used_idx):          # written back by the device, not cleaned yet
            seen_ahead = True
            elem = rx["used_gpa"] + 4 + 8 * (i % rx["size"])
            desc_id, length = struct.unpack_from("<II", ram, elem)
            addr = struct.unpack_from("<Q", ram, rx["desc_gpa"] + 16 * desc_id)[0]
            frame = ram[addr + rx["hdr_len"]:addr + length]
            assert frame[:6] == mac and parse_frame(frame)["dst"] == vm["mac"]
    assert seen_ahead


def test_until_bad_values_exit_2_with_one_line():
    for bad in ("5 parsecs", "-3", "0", "0us", "100s", "ms", "nan"):
        p = run_cli("run", "--until", bad)
        one_line_error(p, "--until", repr(bad), "750us", "2ms", "1.5s")


# -- [host] and the old sriov keys -------------------------------------------------------------
OLD_KEYS = 'name = "old"\ndescription = "old keys"\n[sriov]\nposted_interrupts = true\nx2apic = true\n'


def warnings_in(stderr):
    return [line for line in stderr.splitlines() if "is deprecated" in line]


def test_old_sriov_keys_still_work_with_one_warning_each(tmp_path):
    p = run_cli("run", "--technique", "sriov", "--packets", "300", "--json",
                "--set", "sriov.posted_interrupts=true", check_rc=0)
    assert warnings_in(p.stderr) == [
        "iovtui: warning: --set sriov.posted_interrupts=true: sriov.posted_interrupts is deprecated; "
        "use [host] apicv = true and vtd_posted_interrupts = true"]
    d = json.loads(p.stdout)
    assert d["host"] == {"apicv": True, "x2apic": False, "vtd_posted_interrupts": True}
    assert d["interrupts"]["host"] == 0 and "EXTERNAL_INTERRUPT" not in d["exits"]["by_reason"]
    old = tmp_path / "old.toml"
    old.write_text(OLD_KEYS)
    for args in (("run", "--preset", str(old), "--packets", "50", "--set", "virtio.vhost=true"),
                 ("compare", "--preset", str(old), "--packets", "50", "--format", "json"),
                 ("presets", "--validate", str(old))):
        w = warnings_in(run_cli(*args, check_rc=0).stderr)
        assert len(w) == 2, (args, w)                 # once each, under the file's name
        assert all(str(old) in line for line in w) and "[host] x2apic" in w[1]
    # the app says it before it starts (here it cannot: no terminal)
    p = run_cli("--preset", str(old))
    assert len(warnings_in(p.stderr)) == 2 and p.returncode == 2
    # a file in the new terms says nothing
    assert not warnings_in(run_cli("run", "--preset", "posted-interrupts", "--packets", "50", check_rc=0).stderr)


def test_host_keys_can_be_set_in_any_order():
    d = json.loads(run_cli("run", "--preset", "modern-host", "--technique", "virtio", "--packets", "300", "--json",
                           "--set", "host.apicv=false", "--set", "host.vtd_posted_interrupts=false",
                           check_rc=0).stdout)
    assert d["host"] == {"apicv": False, "x2apic": True, "vtd_posted_interrupts": False}
    assert d["exits"]["by_reason"].get("MSR_WRITE", 0) > 0          # x2APIC without APICv: the EOI is a WRMSR
    one_line_error(run_cli("run", "--set", "host.vtd_posted_interrupts=true"),
                   "--set host.vtd_posted_interrupts=true", "host.apicv = true")


def test_compare_into_a_closed_pipe_exits_0_quietly():
    """`iovtui compare | head -1`: the reader has gone; like every other
    command, exit 0 with nothing on stderr (not rich's exit 1)."""
    import os
    import subprocess
    import sys

    from conftest import ROOT

    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    for args in (["compare", "--packets", "100"], ["compare", "--packets", "100", "--format", "csv"],
                 ["run", "--packets", "100"], ["presets"]):
        r, w = os.pipe()
        os.close(r)                       # nobody reads: the first write meets a broken pipe
        try:
            p = subprocess.run([sys.executable, "-m", "iovtui", *args], stdout=w, stderr=subprocess.PIPE,
                               text=True, cwd=ROOT, env=env, timeout=120)
        finally:
            os.close(w)
        assert (p.returncode, p.stderr) == (0, ""), (args, p.returncode, p.stderr)


SMALL_RAM = ('name = "small"\ndescription = "4 MiB of RAM, 4096-entry rings"\n'
             '[[vm]]\nname = "vm0"\nmac = "52:54:00:00:00:01"\nram = "4 MiB"\n'
             '[sriov]\nring_size = 4096\n[emulation]\nring_size = 4096\n')


def test_a_preset_no_technique_can_lay_out_is_refused_in_one_line(tmp_path):
    """4 MiB of guest RAM cannot hold a 4096-entry ring's buffers: validate
    refuses it (naming the key, the need and the limit), and compare and run
    say so in one line instead of a traceback."""
    small = tmp_path / "small.toml"
    small.write_text(SMALL_RAM)
    one_line_error(run_cli("presets", "--validate", str(small)), "vm[0].ram = 4 MiB", "ring_size", "need",
                   "at least")
    one_line_error(run_cli("compare", "--preset", str(small), "--packets", "50"), "vm[0].ram", "ring_size")
    one_line_error(run_cli("run", "--preset", str(small), "--technique", "sriov", "--packets", "50"),
                   "vm[0].ram", "sriov.ring_size")


def test_the_presets_technique_is_the_default_and_the_command_line_wins():
    s = json.loads(run_cli("run", "--preset", "rogue-dma", "--packets", "60", "--json", check_rc=0).stdout)
    assert s["technique"] == "sriov" and s["iommu"]["faults"] > 0     # where its story happens
    s = json.loads(run_cli("run", "--preset", "interrupt-moderation", "--packets", "60", "--json",
                           check_rc=0).stdout)
    assert s["technique"] == "emulation"
    s = json.loads(run_cli("run", "--preset", "rogue-dma", "--technique", "virtio", "--packets", "60", "--json",
                           check_rc=0).stdout)
    assert s["technique"] == "virtio"
    s = json.loads(run_cli("run", "--preset", "steady-stream", "--packets", "60", "--json", check_rc=0).stdout)
    assert s["technique"] == "virtio"                                 # a preset about every technique
    rows = {line.split()[0]: line.split()[3] for line in run_cli("presets", check_rc=0).stdout.splitlines()[1:]}
    assert rows["rogue-dma"] == "sriov" and rows["posted-interrupts"] == "sriov"
    assert rows["vhost-on"] == "virtio" and rows["steady-stream"] == "–"


def test_the_app_opens_on_the_presets_technique(monkeypatch):
    """The bare `iovtui --preset rogue-dma` opens the app on SR-IOV."""
    import iovtui.cli as cli
    import iovtui.ui.app as app_mod

    seen = {}

    class Stop(Exception):
        pass

    def fake_create_app(preset, technique, **kw):
        seen["technique"] = technique
        raise Stop

    monkeypatch.setattr(app_mod, "create_app", fake_create_app)
    monkeypatch.setattr(cli, "_check_terminal_size", lambda: None)
    for argv, want in ((["--preset", "rogue-dma"], "sriov"), (["--preset", "rogue-dma", "--technique", "emulation"],
                                                              "emulation"), (["--preset", "pingpong"], "virtio")):
        try:
            cli.main(argv)
        except Stop:
            pass
        assert seen.pop("technique") == want, argv
