"""`iovtui sweep`: each technique across offered loads, as a user runs it.

The figures are not pinned (the model's load behaviour changes with issue
19's NAPI and jitter work): a point is compared with `iovtui run` for the
same settings, and the outputs with each other.
"""
import csv
import errno
import io
import json
import os
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET

import pytest

from conftest import ROOT, run_cli

TECHS = ("emulation", "virtio", "sriov")
SMALL = ("--packets", "150", "--rates", "500,20k,1M")


def sweep(*args, rc=0):
    p = run_cli("sweep", *args)
    assert p.returncode == rc, (p.returncode, p.stdout, p.stderr)
    return p


@pytest.fixture(scope="module")
def as_json():
    return json.loads(sweep(*SMALL, "--format", "json", "--jobs", "1").stdout)


def test_csv_parses_with_one_row_per_technique_and_rate():
    p = sweep(*SMALL, "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(p.stdout)))
    assert [(r["technique"], r["rate_pps"]) for r in rows] == [
        (t, r) for t in TECHS for r in ("500", "20000", "1000000")]
    for r in rows:
        assert int(r["offered"]) == 150 and int(r["delivered"]) + int(r["dropped"]) <= 150
        for col in ("exits_per_packet", "irq_per_packet", "kicks_per_packet", "copies_per_packet",
                    "cpu_ns_per_packet", "p50_ns", "p99_ns", "delivered_ratio", "offered_pps"):
            float(r[col])                              # every figure is a number
        assert any(k.startswith("exits_") and k.endswith("_per_packet") and k != "exits_per_packet"
                   for k in r)
    assert p.stderr == ""                              # no progress bar when stderr is not a terminal


def test_json_structure(as_json):
    d = as_json
    assert d["preset"] == "steady-stream" and d["seed"] == 1 and d["techniques"] == list(TECHS)
    assert d["rates_pps"] == [500, 20000, 1000000] and "total offered load" in d["load"]
    assert len(d["points"]) == 9
    keys = {"technique", "rate_pps", "offered_pps", "delivered_ratio", "exits_per_packet",
            "exits_by_reason_per_packet", "irq_per_packet", "kicks_per_packet", "copies_per_packet",
            "cpu_ns_per_packet", "p50_ns", "p99_ns", "drops_by_reason", "dropped", "set"}
    for pt in d["points"]:
        assert keys <= set(pt)
        assert pt["set"] == [f"traffic.rate={pt['rate_pps']}"]
        # the link carries at most its line rate: 1 M offered 1514-byte frames is fewer on the wire
        assert pt["offered_pps"] <= pt["rate_pps"]
    over = [pt for pt in d["points"] if pt["rate_pps"] == 1000000]
    assert all(pt["offered_pps"] < 1e6 for pt in over)


def test_table_has_the_columns():
    out = sweep(*SMALL).stdout
    for head in ("technique", "rate", "offered pps", "delivered", "exits/pkt", "top exits/pkt", "irq/pkt",
                 "kicks/pkt", "copies", "CPU µs/pkt", "p50/p99 µs", "drops", "steady-stream", "load:"):
        assert head in out, head
    assert sum(line.split()[0] in TECHS for line in out.splitlines() if line.split()) == 9
    md = sweep(*SMALL, "--format", "markdown").stdout
    assert md.count("\n| ") == 11 and "| technique | rate |" in md


def test_the_output_is_the_same_whatever_the_jobs(as_json):
    two = json.loads(sweep(*SMALL, "--format", "json", "--jobs", "2").stdout)
    assert two == as_json
    a = sweep(*SMALL, "--format", "csv", "--jobs", "1").stdout
    b = sweep(*SMALL, "--format", "csv", "--jobs", "2").stdout
    assert a == b


@pytest.mark.parametrize("preset,tech,rate", [("steady-stream", "emulation", "20000"),
                                              ("steady-stream", "sriov", "1000000"),
                                              ("multi-tenant", "virtio", "50000"),
                                              ("bursty-web", "emulation", "20000")])
def test_a_point_is_run_with_that_rate_and_seed(preset, tech, rate):
    pt = json.loads(sweep("--preset", preset, "--techniques", tech, "--rates", rate, "--packets", "300",
                          "--seed", "7", "--format", "json").stdout)["points"][0]
    sets = [w for s in pt["set"] for w in ("--set", s)]
    s = json.loads(run_cli("run", "--preset", preset, "--technique", tech, "--packets", "300", "--seed", "7",
                           *sets, "--json", check_rc=0).stdout)
    d = s["packets"]["delivered"]
    assert pt["delivered"] == d and pt["dropped"] == s["packets"]["dropped"]
    assert pt["exits_per_packet"] == s["exits"]["per_packet"]
    assert pt["exits_by_reason_per_packet"] == {k: round(v / d, 4) for k, v in s["exits"]["by_reason"].items()}
    irq = s["interrupts"]
    assert pt["irq_per_packet"] == round((irq["injected"] + irq["posted"]) / d, 4)
    assert pt["kicks_per_packet"] == round(s["notifications"]["kicks"] / d, 4)
    assert pt["copies_per_packet"] == s["copies_per_packet"]
    assert pt["cpu_ns_per_packet"] == s["cpu_ns_per_packet"]
    assert (pt["p50_ns"], pt["p99_ns"]) == (s["latency_ns"]["p50"], s["latency_ns"]["p99"])
    assert pt["drops_by_reason"] == s["drops_by_reason"]
    assert pt["throughput_gbps"] == s["throughput_gbps"]


def test_set_applies_to_every_point():
    d = json.loads(sweep("--techniques", "virtio", "--rates", "2k", "--packets", "200", "--set",
                         "virtio.vhost=false", "--format", "json").stdout)
    s = json.loads(run_cli("run", "--technique", "virtio", "--packets", "200", "--set", "virtio.vhost=false",
                           "--set", "traffic.rate=2000", "--json", check_rc=0).stdout)
    assert d["points"][0]["copies_per_packet"] == s["copies_per_packet"] == 2


def test_a_range_is_log_spaced():
    d = json.loads(sweep("--techniques", "sriov", "--from", "1k", "--to", "10M", "--points", "5",
                         "--packets", "100", "--format", "json").stdout)
    assert d["rates_pps"] == [1000, 10000, 100000, 1000000, 10000000]


@pytest.mark.parametrize("args,says", [
    (("--techniques", "virtio,foo"), "allowed: emulation, virtio, sriov"),
    (("--rates", "0"), "1 pps..100 Mpps"),
    (("--rates", "-5"), "1 pps..100 Mpps"),
    (("--rates", "200M"), "1 pps..100 Mpps"),
    (("--rates", "fast"), "200, 2k, 1.5M or 20kpps"),
    (("--from", "10k", "--to", "1k"), "must be below --to"),
    (("--from", "1k", "--to", "10k", "--points", "1"), "--points must be 2..50"),
    (("--from", "1k", "--to", "10k", "--points", "51"), "--points must be 2..50"),
    (("--from", "1k"), "--from and --to go together"),
    (("--preset", "no-such-preset"), "available:"),
    (("--rates", "2k", "--from", "1k", "--to", "10k"), "give one"),
    (("--preset", "pingpong"), "open-loop preset"),
    (("--preset", "bursty-web", "--rates", "10,1k"), "give rates of at least"),
    (("--jobs", "0"), "1..256"),
    (("--measure", "speed"), "invalid choice"),
])
def test_bad_input_is_one_line_and_exit_2(args, says):
    p = sweep(*args, "--packets", "50", rc=2)
    assert p.stdout == "" and says in p.stderr and len(p.stderr.strip().splitlines()) == 1
    assert "Traceback" not in p.stderr


def test_ctrl_c_is_one_line_exit_130_and_the_workers_stop():
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    # points of 10 M packets: minutes each, so a command that waited for its workers would not end
    p = subprocess.Popen([sys.executable, "-m", "iovtui", "sweep", "--packets", "10000000", "--jobs", "2"],
                         cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         start_new_session=True)
    # wait until the workers exist (the pool's processes are this one's children)
    for _ in range(100):
        kids = subprocess.run(["pgrep", "-P", str(p.pid)], capture_output=True, text=True).stdout.split()
        if len(kids) >= 2:
            break
        time.sleep(0.1)
    time.sleep(0.5)
    os.killpg(p.pid, signal.SIGINT)
    try:
        p.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        pytest.fail("Ctrl-C did not stop the sweep's workers")
    # the workers are gone when the command ends (not left to finish their points)
    left = subprocess.run(["pgrep", "-g", str(p.pid)], capture_output=True, text=True).stdout.split()
    if left:
        os.killpg(p.pid, signal.SIGKILL)
    out, err = p.communicate(timeout=30)
    assert left == []
    assert p.returncode == 130 and out == ""
    assert err.strip() == "iovtui: interrupted", err


# -- --svg --------------------------------------------------------------------------------------
def test_svg_is_xml_with_axes_units_legend_and_title(tmp_path):
    f = tmp_path / "curve.svg"
    p = sweep(*SMALL, "--format", "csv", "--svg", str(f), "--measure", "interrupts")
    assert len(list(csv.DictReader(io.StringIO(p.stdout)))) == 9        # stdout is still the CSV
    root = ET.parse(f).getroot()
    assert root.tag.endswith("svg")
    texts = [t.text or "" for t in root.iter() if t.tag.endswith("text")]
    joined = "\n".join(texts)
    assert "offered load (packets/s, log scale)" in texts and "interrupts per packet" in texts
    assert "steady-stream: interrupts per packet against offered load (seed 1)" in texts
    for label in ("device emulation (e1000)", "virtio", "SR-IOV"):
        assert label in texts
    assert "1k pps" in joined and "100k pps" in joined                      # the log axis, labelled in pps
    # one marker shape per technique: the three series' dots differ by element
    ns = "{http://www.w3.org/2000/svg}"
    shapes = set()
    for g in root.iter(ns + "g"):
        cls = (g.get("class") or "").split()
        if "series" in cls:
            dots = {el.tag for el in g.iter() if "dot" in (el.get("class") or "")}
            if dots:
                shapes.add(frozenset(dots))
    assert len(shapes) == 3
    # the same sweep writes the same file
    g = tmp_path / "again.svg"
    sweep(*SMALL, "--format", "csv", "--svg", str(g), "--measure", "interrupts")
    assert g.read_bytes() == f.read_bytes()
    cpu = tmp_path / "cpu.svg"
    sweep(*SMALL, "--svg", str(cpu), "--measure", "cpu")
    assert "host CPU per packet (µs)" in cpu.read_text()


def test_svg_refuses_to_overwrite_without_force(tmp_path):
    f = tmp_path / "c.svg"
    f.write_text("keep me")
    p = sweep(*SMALL, "--svg", str(f), rc=2)
    assert "already exists; pass --force" in p.stderr and f.read_text() == "keep me" and p.stdout == ""
    sweep(*SMALL, "--svg", str(f), "--force")
    ET.parse(f)


@pytest.mark.parametrize("where,says", [("missing/dir/c.svg", "does not exist"), (".", "not a regular file")])
def test_svg_bad_places(tmp_path, where, says):
    p = sweep(*SMALL, "--svg", str(tmp_path / where), rc=2)
    assert says in p.stderr and len(p.stderr.strip().splitlines()) == 1 and p.stdout == ""


def test_svg_unwritable_dir(tmp_path):
    p = sweep(*SMALL, "--svg", "/proc/iovtui-sweep.svg", rc=2)
    assert "--svg /proc/iovtui-sweep.svg: cannot write" in p.stderr and len(p.stderr.strip().splitlines()) == 1


def test_svg_disk_full_leaves_nothing(tmp_path, monkeypatch, capsys):
    from iovtui import cli

    def full(*_a, **_k):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(cli.os, "replace", full)
    f = tmp_path / "c.svg"
    rc = cli.main(["sweep", "--techniques", "virtio", "--rates", "2k", "--packets", "50", "--jobs", "1",
                   "--svg", str(f)])
    err = capsys.readouterr().err
    assert rc == 2 and "No space left on device" in err and len(err.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


def test_no_color_table_has_no_escapes():
    env_out = subprocess.run([sys.executable, "-m", "iovtui", "sweep", *SMALL], cwd=ROOT, capture_output=True,
                             text=True, env=dict(os.environ, PYTHONPATH=str(ROOT), NO_COLOR="1",
                                                 FORCE_COLOR="1"), timeout=120)
    assert env_out.returncode == 0 and "\x1b[" not in env_out.stdout


def test_bench_has_a_sweep_case():
    import dataclasses

    from iovtui import bench

    st = dataclasses.replace(bench.QUICK, sweep_packets=60, sweep_sequential=True)
    w = bench.sweep(st)
    assert w["techniques"] == 3 and w["points"] == 10 and w["meets_aim"] is None
    assert [r["points"] for r in w["runs"]] == [30] * len(w["runs"]) and w["runs"][-1]["jobs"] == 1
    assert all(r["packets_total"] == 30 * 60 and r["cpu_s"] > 0 and r["wall_s"] > 0 for r in w["runs"])
    text = "\n".join(bench._render_sweep(w))
    assert "3 techniques × 10 loads" in text and "s CPU" in text


def test_the_progress_bar_goes_to_a_terminal_stderr_and_stdout_stays_json():
    import pty

    master, slave = pty.openpty()
    try:
        p = subprocess.run([sys.executable, "-m", "iovtui", "sweep", *SMALL, "--format", "json", "--jobs", "1"],
                           cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)), stdout=subprocess.PIPE,
                           stderr=slave, timeout=120)
        os.close(slave)
        slave = None
        seen = b""
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:
                break
            if not chunk:
                break
            seen += chunk
    finally:
        if slave is not None:
            os.close(slave)
        os.close(master)
    assert p.returncode == 0
    assert len(json.loads(p.stdout)["points"]) == 9                 # stdout: only the JSON
    bar = seen.decode()
    assert "sweep ▕" in bar and "9/9 points" in bar and "1/9 points" in bar
    assert bar.endswith("\r\x1b[2K")                              # and the bar is cleared at the end
