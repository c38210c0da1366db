"""`iovtui run --pcap FILE` and the app's "Save capture", read back the way a
user's tools read them: with python-pcapng (another library than dpkt, which
writes them) and, where it is installed, Wireshark's tshark."""
import errno
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from pcapng import FileScanner
from pcapng.blocks import EnhancedPacket, InterfaceDescription, SectionHeader

from conftest import ROOT, TECHNIQUES, run_cli

#: python-pcapng 2.1.1 warns about its own option table on import of a block
pytestmark = pytest.mark.filterwarnings("ignore:Field type should not be:DeprecationWarning")

FORGED = "02:de:ad:be:ef:01"     # the source MAC the mac-spoofing guest forges (sim/paths/sriov.py)


# -- an independent reading of the file -------------------------------------------------------
def read(path):
    """(interfaces, records): each interface a dict of its IDB options, each
    record one EPB as python-pcapng decodes it."""
    ifaces, recs = [], []
    with open(path, "rb") as fh:
        for b in FileScanner(fh):
            if isinstance(b, SectionHeader):
                continue
            if isinstance(b, InterfaceDescription):
                o = b.options
                ifaces.append({"name": o["if_name"], "description": o.get("if_description", ""),
                               "mac": o.get("if_MACaddr"), "tsresol": b.timestamp_resolution,
                               "linktype": b.link_type})
            elif isinstance(b, EnhancedPacket):
                o = b.options
                flags = o["epb_flags"] if "epb_flags" in o else None
                recs.append({"iface": ifaces[b.interface_id]["name"],
                             "t": (b.timestamp_high << 32) | b.timestamp_low,
                             "data": bytes(b.packet_data), "len": b.packet_len,
                             "dir": flags.inout if flags is not None else None,
                             "comment": o["opt_comment"] if "opt_comment" in o else None,
                             "id": o["epb_packetid"] if "epb_packetid" in o else None})
    return ifaces, recs


def mac(b: bytes) -> str:
    return ":".join(f"{x:02x}" for x in b)


def eth(data: bytes) -> dict:
    """dst, src, the 802.1Q VID (0 untagged) and the IPv4 header's offset."""
    out = {"dst": mac(data[0:6]), "src": mac(data[6:12]), "vlan": 0}
    off = 12
    if data[12:14] == b"\x81\x00":
        out["vlan"] = struct.unpack_from("!H", data, 14)[0] & 0x0FFF
        off = 16
    out["ethertype"] = struct.unpack_from("!H", data, off)[0]
    out["ip"] = off + 2
    return out


def ip_checksum_ok(data: bytes, off: int) -> bool:
    """RFC 1071: the one's-complement sum over the header, checksum included, is 0xFFFF."""
    ihl = (data[off] & 0x0F) * 4
    s = sum(struct.unpack_from(f"!{ihl // 2}H", data, off))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s == 0xFFFF


def capture(tmp_path, preset, tech, packets=400, *extra):
    f = tmp_path / f"{preset}-{tech}.pcapng"
    p = run_cli("run", "--preset", preset, "--technique", tech, "--packets", str(packets),
                "--json", "--pcap", str(f), *extra, check_rc=0)
    return json.loads(p.stdout), f


def by_iface(recs, plain=True):
    """Records per (interface, direction), without (plain) or only (not plain) drop records."""
    return Counter((r["iface"], r["dir"]) for r in recs if (r["comment"] is None) == plain)


# -- what the file holds ------------------------------------------------------------------------
@pytest.mark.parametrize("tech", TECHNIQUES)
@pytest.mark.parametrize("preset", ["steady-stream", "tx-stream"])
def test_frames_per_interface_match_the_summary(tmp_path, preset, tech):
    s, f = capture(tmp_path, preset, tech)
    ifaces, recs = read(f)
    names = [i["name"] for i in ifaces]
    assert names[0].startswith("wire (") and names[1:] == ["vm0 (eth0)"]
    assert all(i["linktype"] == 1 and i["tsresol"] == 1e-9 for i in ifaces)      # Ethernet, ns
    n = by_iface(recs)
    pk = s["packets"]
    wire_in, wire_out = n[(names[0], "inbound")], n[(names[0], "outbound")]
    vm_in, vm_out = n[("vm0 (eth0)", "inbound")], n[("vm0 (eth0)", "outbound")]
    # every offered frame came from the wire (rx) or was queued by the guest's driver (tx);
    # every delivered one was read by the guest (rx) or left on the wire (tx)
    assert wire_in + vm_out == pk["offered"] == 400
    assert vm_in + wire_out == pk["delivered"]
    assert sum(1 for r in recs if r["comment"]) == pk["dropped"]
    if preset == "tx-stream":
        assert wire_in == vm_in == 0 and vm_out == 400
    else:
        assert vm_out == wire_out == 0 and wire_in == 400


@pytest.mark.parametrize("tech", TECHNIQUES)
def test_two_ports_two_wires(tmp_path, tech):
    """dense-host (two ports): each port's link is its own wire interface, after the
    VMs' for port 1, and a frame is on its own VM's port's wire."""
    s, f = capture(tmp_path, "dense-host", tech, 600)
    ifaces, recs = read(f)
    names = [i["name"] for i in ifaces]
    assert names[0] == "wire (enp2s0f0)" and names[-1] == "wire (enp2s0f1)"
    assert names[1:-1] == [f"vm{i} (eth0)" for i in range(48)]
    # the preset puts vm0..vm23 on port 0 and vm24..vm47 on port 1 (README "A dense host")
    guest_port = {}
    for r in recs:
        if r["iface"].startswith("vm") and r["comment"] is None:
            guest_port[r["id"]] = 0 if int(r["iface"][2:].split()[0]) < 24 else 1
    wires = {r["id"]: names.index(r["iface"]) for r in recs if r["iface"].startswith("wire") and r["comment"] is None}
    both = set(guest_port) & set(wires)
    assert len(both) > 400
    assert all(wires[i] == (0 if guest_port[i] == 0 else len(names) - 1) for i in both)
    n = by_iface(recs)
    assert n[(names[0], "inbound")] > 0 and n[(names[-1], "inbound")] > 0


def test_the_capture_does_not_change_the_run(tmp_path):
    s, _f = capture(tmp_path, "vlan-isolation", "sriov", 300)
    plain = json.loads(run_cli("run", "--preset", "vlan-isolation", "--technique", "sriov", "--packets", "300",
                               "--json", check_rc=0).stdout)
    assert s == plain


@pytest.mark.parametrize("tech", ["sriov", "virtio"])
def test_vlan_tags_as_the_switch_left_them(tmp_path, tech):
    s, f = capture(tmp_path, "vlan-isolation", tech)
    ifaces, recs = read(f)
    wire = ifaces[0]["name"]
    macs = {"vm0 (eth0)": "52:54:00:00:00:01", "vm1 (eth0)": "52:54:00:00:00:02"}
    assert [i["mac"] for i in ifaces[1:]] == list(macs.values())
    from_wire = [eth(r["data"]) for r in recs if r["iface"] == wire and r["comment"] is None]
    # on the wire: tagged for the VMs' VLANs, one in ten for a VLAN next to theirs
    assert {e["vlan"] for e in from_wire} == {100, 200, 101, 201}
    assert all(e["dst"] in macs.values() for e in from_wire)
    # in each guest: untagged (a port VLAN is stripped before the guest sees the frame), its own MAC
    guest = [(r["iface"], eth(r["data"])) for r in recs if r["iface"] in macs]
    assert guest and all(e["vlan"] == 0 and e["ethertype"] == 0x0800 and e["dst"] == macs[i] for i, e in guest)
    assert len(guest) == s["packets"]["delivered"]
    # the dropped ones: the foreign-VLAN frames, as they came, with the reason
    drops = [r for r in recs if r["comment"]]
    assert Counter(r["comment"].removeprefix("dropped: ") for r in drops) == Counter(s["drops_by_reason"])
    for r in drops:
        e = eth(r["data"])
        assert r["iface"] == wire and r["dir"] == "inbound" and e["vlan"] in (101, 201)
        assert f"VLAN {e['vlan']}" in r["comment"]


def test_spoofed_frames_show_the_forged_source(tmp_path):
    s, f = capture(tmp_path, "mac-spoofing", "sriov")
    ifaces, recs = read(f)
    wire, vm = ifaces[0]["name"], ifaces[1]["name"]
    drops = [r for r in recs if r["comment"]]
    assert len(drops) == s["packets"]["dropped"] > 0
    assert {r["comment"] for r in drops} == {f"dropped: {k}" for k in s["drops_by_reason"]}
    assert all("spoofed source MAC" in r["comment"] and r["iface"] == vm and r["dir"] == "outbound"
               and eth(r["data"])["src"] == FORGED for r in drops)
    # what the guest wrote carried the forged MAC; nothing with it reached the wire
    queued = {r["id"]: eth(r["data"])["src"] for r in recs if r["iface"] == vm and r["comment"] is None}
    assert all(queued[r["id"]] == FORGED for r in drops)
    sent = [eth(r["data"]) for r in recs if r["iface"] == wire]
    assert len(sent) == s["packets"]["delivered"] and all(e["src"] == "52:54:00:00:00:01" for e in sent)


def test_iommu_faults_are_dropped_frames_with_the_reason(tmp_path):
    s, f = capture(tmp_path, "rogue-dma", "sriov")
    _ifaces, recs = read(f)
    drops = [r for r in recs if r["comment"]]
    assert s["iommu"]["faults"] > 0 and len(drops) == s["packets"]["dropped"] > 0
    assert Counter(r["comment"] for r in drops) == Counter({f"dropped: {k}": v for k, v in s["drops_by_reason"].items()})
    assert all("IOMMU" in r["comment"] and "DMAR fault" in r["comment"] for r in drops)
    # a frame the IOMMU kept out of RAM never reaches the guest
    read_ids = {r["id"] for r in recs if r["iface"] == "vm0 (eth0)"}
    assert not read_ids & {r["id"] for r in drops}


@pytest.mark.parametrize("tech", TECHNIQUES)
@pytest.mark.parametrize("preset", ["multi-tenant", "tx-stream"])
def test_checksums_timestamps_and_macs(tmp_path, preset, tech):
    s, f = capture(tmp_path, preset, tech, 400)
    ifaces, recs = read(f)
    assert recs
    for r in recs:
        e = eth(r["data"])
        assert e["ethertype"] == 0x0800 and ip_checksum_ok(r["data"], e["ip"]), r
        assert r["len"] == len(r["data"])
    last = {}
    for r in recs:                       # virtual time never goes back, on any interface
        assert r["t"] >= last.get(r["iface"], 0)
        last[r["iface"]] = r["t"]
    assert max(last.values()) <= s["virtual_time_ns"]
    # one frame's records in causal order: from the wire before the guest reads it,
    # queued by the guest before it leaves on the wire (matched by epb_packetid)
    first_seen = {}
    for r in recs:
        first_seen.setdefault((r["id"], r["iface"]), r["t"])
    wire = ifaces[0]["name"]
    pairs = 0
    for (pid, iface), t in first_seen.items():
        if iface != wire and (pid, wire) in first_seen:
            rx = preset != "tx-stream"
            assert (first_seen[(pid, wire)] < t) if rx else (t < first_seen[(pid, wire)]), (pid, iface)
            pairs += 1
    assert pairs >= s["packets"]["delivered"] // 2
    for i in ifaces[1:]:                 # each VM's interface: its MAC; frames to it, frames from it
        got = {eth(r["data"])["dst"] for r in recs if r["iface"] == i["name"] and r["dir"] == "inbound"}
        sent = {eth(r["data"])["src"] for r in recs if r["iface"] == i["name"] and r["dir"] == "outbound"}
        assert got <= {i["mac"], "ff:ff:ff:ff:ff:ff"} and sent <= {i["mac"]} and (got or sent)


@pytest.mark.parametrize("tech", TECHNIQUES)
def test_until_ends_the_capture_and_guest_frames_are_the_ram_bytes(tmp_path, tech):
    """The capture stops at --until; the frames a guest read are the bytes
    --dump-ram holds at that buffer's GPA (virtio: after the 12-byte
    virtio-net header; the descriptor table says which GPAs are buffers)."""
    dump = tmp_path / "ram"
    s, f = capture(tmp_path, "steady-stream", tech, 5000, "--until", "2ms", "--dump-ram", str(dump))
    assert not s["complete"]
    _ifaces, recs = read(f)
    assert max(r["t"] for r in recs) <= 2_000_000
    pk = s["packets"]
    n = by_iface(recs)
    assert n[("vm0 (eth0)", "inbound")] == pk["delivered"] >= 3
    assert sum(v for (i, d), v in n.items() if d == "inbound" and i.startswith("wire")) == pk["offered"]
    ram = (dump / "vm0.ram").read_bytes()
    layout = json.loads((dump / "layout.json").read_text())
    rxq = next(q for q in layout["queues"] if q["vm"] == "vm0" and q["name"] == "rx")
    bufs = {struct.unpack_from("<Q", ram, rxq["desc_gpa"] + 16 * i)[0] for i in range(rxq["size"])}
    hdr = rxq.get("hdr_len", 0)
    guest = [r["data"] for r in recs if r["iface"] == "vm0 (eth0)"]
    for frame in guest[-3:]:             # the newest reads: their buffers are not refilled yet
        at = ram.find(frame)
        assert at >= 0 and ram.find(frame, at + 1) == -1
        if tech != "sriov":              # (an 82599 write-back overwrites the descriptor's address)
            assert at - hdr in bufs, hex(at)


# -- Wireshark's own reading ------------------------------------------------------------------
def test_tshark_reads_it(tmp_path):
    if shutil.which("tshark") is None:
        pytest.skip("tshark is not installed (apt-get install tshark): the python-pcapng reading above still ran")
    s, f = capture(tmp_path, "vlan-isolation", "sriov")
    p = subprocess.run(["tshark", "-r", str(f), "-o", "ip.check_checksum:TRUE", "-T", "fields", "-E", "separator=|",
                        "-e", "frame.interface_name", "-e", "frame.comment", "-e", "vlan.id", "-e", "eth.dst",
                        "-e", "ip.checksum.status", "-e", "frame.time_epoch"],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    rows = [line.split("|") for line in p.stdout.splitlines()]
    per = Counter((r[0], bool(r[1])) for r in rows)
    assert per[("wire (enp2s0f0)", False)] == s["packets"]["offered"]
    assert per[("vm0 (eth0)", False)] + per[("vm1 (eth0)", False)] == s["packets"]["delivered"]
    assert per[("wire (enp2s0f0)", True)] == s["packets"]["dropped"]
    assert Counter(r[1].removeprefix("dropped: ") for r in rows if r[1]) == Counter(s["drops_by_reason"])
    assert {r[4] for r in rows} == {"1"}                             # 1 = Good
    assert {r[2] for r in rows if r[0] != "wire (enp2s0f0)"} == {""}  # untagged in the guests
    assert {r[2] for r in rows if r[0] == "wire (enp2s0f0)"} == {"100", "101", "200", "201"}
    times = [float(r[5]) for r in rows]
    assert times == sorted(times) and times[-1] <= s["virtual_time_ns"] / 1e9


# -- the CLI's errors --------------------------------------------------------------------------
def _one_line_exit_2(p):
    assert p.returncode == 2, (p.returncode, p.stderr)
    assert len(p.stderr.strip().splitlines()) == 1 and "Traceback" not in p.stderr, p.stderr
    return p.stderr.strip()


def test_an_existing_file_needs_force(tmp_path):
    f = tmp_path / "c.pcapng"
    f.write_bytes(b"mine")
    p = run_cli("run", "--packets", "50", "--pcap", str(f))
    assert "already exists" in _one_line_exit_2(p) and "--force" in p.stderr
    assert f.read_bytes() == b"mine"
    run_cli("run", "--packets", "50", "--pcap", str(f), "--force", check_rc=0)
    _i, recs = read(f)
    assert len(recs) == 100 and sorted(os.listdir(tmp_path)) == ["c.pcapng"]


def test_an_unwritable_place_is_one_line_and_no_file(tmp_path):
    ro = tmp_path / "read-only"
    ro.mkdir()
    ro.chmod(0o555)
    # root writes anywhere a mode allows it not to; sysfs refuses new files even to root
    unwritable = "/sys/iovtui-test.pcapng" if os.geteuid() == 0 else str(ro / "c.pcapng")
    for where, why in [(unwritable, "cannot write: Permission denied"),
                       (str(tmp_path / "no-such-dir" / "c.pcapng"), f"directory {tmp_path / 'no-such-dir'} does not exist")]:
        p = run_cli("run", "--packets", "50", "--pcap", where)
        line = _one_line_exit_2(p)
        assert line == f"iovtui: error: capture file {where}: {why}", line
        assert not os.path.exists(where)
    assert os.listdir(ro) == []


def test_a_full_device_is_one_line(tmp_path):
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full on this system")
    p = run_cli("run", "--packets", "300", "--pcap", "/dev/full", "--force")
    assert "No space left on device" in _one_line_exit_2(p)


def test_a_full_disk_leaves_no_file(tmp_path, monkeypatch, capsys):
    """The file system fills up half way through the capture (a file object
    whose writes fail with ENOSPC after 64 kB): one line, exit 2, and neither
    the capture nor its temporary is left."""
    from iovtui import cli

    real_open = cli._open_capture_file

    class Filling:
        def __init__(self, fh):
            self.fh, self.n = fh, 0

        def write(self, b):
            self.n += len(b)
            if self.n > 65536:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return self.fh.write(b)

        def __getattr__(self, name):
            return getattr(self.fh, name)

    monkeypatch.setattr(cli, "_open_capture_file", lambda args, out: Filling(real_open(args, out)))
    f = tmp_path / "c.pcapng"
    rc = cli.main(["run", "--packets", "2000", "--pcap", str(f)])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err == f"iovtui: error: capture file {f}: cannot write: No space left on device"
    assert os.listdir(tmp_path) == []


def test_ctrl_c_leaves_no_file(tmp_path):
    f = tmp_path / "c.pcapng"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    p = subprocess.Popen([sys.executable, "-m", "iovtui", "run", "--packets", "5000000", "--pcap", str(f)],
                         cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        for _ in range(600):             # until the capture is being written
            if any(n.endswith(".part") and os.path.getsize(tmp_path / n) > 0 for n in os.listdir(tmp_path)):
                break
            time.sleep(0.05)
        p.send_signal(signal.SIGINT)
        p.communicate(timeout=60)
    finally:
        p.kill()
    assert p.returncode != 0 and os.listdir(tmp_path) == []


# -- the app's "Save capture" ------------------------------------------------------------------
async def _wait_for(pilot, cond, seconds=30.0):
    for _ in range(int(seconds / 0.05)):
        if cond():
            return True
        await pilot.pause(0.05)
    return cond()


def _toasts(a):
    return [n.message for n in a._notifications]


async def test_the_app_saves_the_run_so_far(tmp_path, monkeypatch):
    """w writes what the run shows so far (same counts as its summary at that
    event) to ./iovtui-<preset>-<technique>-N.pcapng, never over a file, and
    a toast names it; where it cannot write, the toast says why."""
    from iovtui.sim.preset import load_preset
    from iovtui.ui.app import create_app

    monkeypatch.chdir(tmp_path)
    (tmp_path / "iovtui-vlan-isolation-sriov-1.pcapng").write_bytes(b"someone else's")
    a = create_app(load_preset("vlan-isolation"), "sriov", seed=1, start_paused=True)
    async with a.run_test(size=(120, 40)) as pilot:
        a.driver.sim.engine.run(max_events=4000)       # as if it had played a while
        a.driver.publish()
        m = a.driver.sim.metrics
        offered, delivered, dropped = m.offered, m.delivered, m.dropped
        assert dropped > 0
        await pilot.press("w")
        f = tmp_path / "iovtui-vlan-isolation-sriov-2.pcapng"
        assert await _wait_for(pilot, lambda: any(f.name in t for t in _toasts(a)))
        assert (tmp_path / "iovtui-vlan-isolation-sriov-1.pcapng").read_bytes() == b"someone else's"
        _ifaces, recs = read(f)
        assert sum(1 for r in recs if r["iface"].startswith("wire") and r["comment"] is None) == offered
        assert sum(1 for r in recs if r["iface"].startswith("vm")) == delivered
        assert sum(1 for r in recs if r["comment"]) == dropped
        assert f"{len(recs):,} frames" in next(t for t in _toasts(a) if f.name in t)
        await pilot.press("w")                          # again: the next free name
        assert await _wait_for(pilot, lambda: (tmp_path / "iovtui-vlan-isolation-sriov-3.pcapng").exists())
        assert await _wait_for(pilot, lambda: any("sriov-3.pcapng" in t for t in _toasts(a)))
        assert sorted(n for n in os.listdir(tmp_path) if n.startswith(".")) == []
        # a directory it cannot write to
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o555)
        monkeypatch.chdir("/sys" if os.geteuid() == 0 else ro)
        await pilot.press("w")
        assert await _wait_for(pilot, lambda: any(t.startswith("Save capture failed:") for t in _toasts(a)))
        assert "Permission denied" in next(t for t in _toasts(a) if t.startswith("Save capture failed:"))


async def test_save_capture_from_the_command_palette(tmp_path, monkeypatch):
    from iovtui.sim.preset import load_preset
    from iovtui.ui.app import create_app

    monkeypatch.chdir(tmp_path)
    a = create_app(load_preset("steady-stream"), "virtio", seed=1, start_paused=True)
    async with a.run_test(size=(120, 40)) as pilot:
        a.driver.sim.engine.run(max_events=500)
        await pilot.press("ctrl+p")
        await pilot.pause(0.2)
        await pilot.press(*"Save capture")
        await pilot.pause(0.5)
        await pilot.press("enter")
        f = tmp_path / "iovtui-steady-stream-virtio-1.pcapng"
        assert await _wait_for(pilot, lambda: any(f.name in t for t in _toasts(a)))
        _ifaces, recs = read(f)
        assert len(recs) == a.driver.sim.metrics.offered + a.driver.sim.metrics.delivered > 0


def test_a_frame_for_another_machine_shows_its_own_destination(tmp_path):
    """[nic] unknown_unicast: the wire's record is the frame as it came, addressed to a MAC no VF owns."""
    s, f = capture(tmp_path, "steady-stream", "sriov", 300, "--set", "nic.unknown_unicast=0.2")
    _ifaces, recs = read(f)
    stray = [r for r in recs if eth(r["data"])["dst"] not in ("52:54:00:00:00:01",)]
    assert len(stray) == s["packets"]["to_host"] > 0
    assert all(r["iface"] == "wire (enp2s0f0)" and r["dir"] == "inbound" for r in stray)


def test_the_model_and_a_run_without_pcap_do_not_load_the_capture_library():
    """iovtui/sim stays free of the capture library; only --pcap / Save capture load it."""
    code = ("import sys, iovtui.cli, iovtui.sim.driver, iovtui.sim.capture; "
            "rc = iovtui.cli.main(['run', '--packets', '20', '--json']); "
            "assert rc == 0 and 'dpkt' not in sys.modules, sorted(m for m in sys.modules if 'dpkt' in m)")
    p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                       env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert p.returncode == 0, p.stderr
