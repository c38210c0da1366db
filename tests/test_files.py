"""Files a command writes: nothing left behind by a failed or interrupted run,
complete traces end with a closing record, and replay says when one is
damaged (issue 16, items 6, 9 and 10)."""

import json
import os
import pathlib
import signal
import subprocess
import sys

import pytest

from conftest import ROOT, run_cli

SMALL_RAM = ('name = "small"\ndescription = "4 MiB of RAM, 4096-entry rings"\n'
             '[[vm]]\nname = "vm0"\nmac = "52:54:00:00:00:01"\nram = "4 MiB"\n'
             '[sriov]\nring_size = 4096\n[emulation]\nring_size = 4096\n')


def one_line_error(p, *needles):
    assert p.returncode == 2, (p.returncode, p.stdout, p.stderr)
    assert "Traceback" not in p.stderr and p.stderr.count("\n") == 1, p.stderr
    for n in needles:
        assert n in p.stderr, p.stderr


def listing(d):
    return sorted(str(p.relative_to(d)) for p in pathlib.Path(d).rglob("*"))


# -- 9. a command that fails leaves nothing behind ------------------------------------
def test_a_failed_run_leaves_no_file_and_no_directory(tmp_path):
    (tmp_path / "existing").write_text("a file, not a directory")
    before = listing(tmp_path)
    one_line_error(run_cli("run", "--packets", "30", "--trace", str(tmp_path / "new.jsonl"),
                           "--dump-ram", str(tmp_path / "existing") + "/"), "not a directory")
    assert listing(tmp_path) == before            # no 0-byte new.jsonl: the retry can succeed
    # a run the simulation refuses (no room for the rings) leaves neither the trace nor the new dump directory
    small = tmp_path / "small.toml"
    small.write_text(SMALL_RAM)
    before = listing(tmp_path)
    one_line_error(run_cli("run", "--preset", str(small), "--technique", "sriov", "--packets", "30",
                           "--trace", str(tmp_path / "new.jsonl"), "--dump-ram", str(tmp_path / "a" / "b")),
                   "vm[0].ram", "sriov.ring_size")
    assert listing(tmp_path) == before
    # and the retry that can succeed does
    run_cli("run", "--packets", "30", "--trace", str(tmp_path / "new.jsonl"),
            "--dump-ram", str(tmp_path / "a" / "b"), check_rc=0)
    assert {"new.jsonl", "a/b/vm0.ram", "a/b/layout.json"} <= set(listing(tmp_path))
    # with the modes a plain open() and mkdir() give (not a temporary file's 0600)
    (tmp_path / "ref").write_text("")
    (tmp_path / "refdir").mkdir()
    mode = (tmp_path / "ref").stat().st_mode
    assert (tmp_path / "new.jsonl").stat().st_mode == (tmp_path / "a" / "b" / "vm0.ram").stat().st_mode == mode
    assert (tmp_path / "a" / "b").stat().st_mode == (tmp_path / "refdir").stat().st_mode


def test_a_run_interrupted_mid_trace_leaves_nothing_and_said_how_big_it_would_be(tmp_path):
    """Ctrl-C while the trace is being written: no trace file, no temporary,
    no dump directory; before it started, the run said the trace would pass 1 GiB."""
    work = tmp_path / "work"
    work.mkdir()
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    p = subprocess.Popen([sys.executable, "-m", "iovtui", "run", "--packets", "10000000",
                          "--trace", str(work / "t.jsonl"), "--dump-ram", str(work / "new" / "dump")],
                         cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # wait (no time limit but the test's) until the trace is being written
        while p.poll() is None and not any(f.is_file() and f.stat().st_size > 100_000 for f in work.rglob("*")):
            subprocess.run(["sleep", "0.05"])
        assert p.poll() is None, p.communicate()
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 130, (out, err)
    assert "Traceback" not in err, err
    assert listing(work) == [], listing(work)
    est = [line for line in err.splitlines() if "t.jsonl will be about" in line]
    assert est and "GiB" in est[0] and "10,000,000 packets" in est[0], err


def test_no_size_warning_for_a_small_trace(tmp_path):
    p = run_cli("run", "--packets", "200", "--trace", str(tmp_path / "t.jsonl"), check_rc=0)
    assert "will be about" not in p.stderr


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_disk_full_is_one_line():
    one_line_error(run_cli("run", "--packets", "3000", "--trace", "/dev/full", "--force"),
                   "trace file /dev/full", "No space left on device")


# -- 10. a complete trace ends with a closing record; replay says when one is damaged ----
def traced(tmp_path, name="t.jsonl", packets="40"):
    t = tmp_path / name
    run_cli("run", "--packets", packets, "--trace", str(t), check_rc=0)
    return t


def test_a_complete_trace_ends_with_a_closing_record(tmp_path):
    t = traced(tmp_path)
    lines = [json.loads(x) for x in t.read_text().splitlines()]
    end = lines[-1]
    assert end["kind"] == "end" and end["complete"] is True
    assert end["events"] == len(lines) - 2 == lines[-2]["seq"]
    assert end["t"] == lines[-2]["t"]


def test_replay_refuses_a_truncated_or_corrupt_trace_naming_the_line(tmp_path):
    t = traced(tmp_path)
    text = t.read_text()
    lines = text.splitlines(keepends=True)
    n = len(lines)
    cut = tmp_path / "cut.jsonl"
    cut.write_text("".join(lines[:-1]))                    # the closing record is missing
    one_line_error(run_cli("replay", str(cut)), "truncated", f"line {n - 1}", "closing record")
    half = tmp_path / "half.jsonl"
    half.write_text("".join(lines[:20]) + lines[20][:25])  # cut off in the middle of line 21
    one_line_error(run_cli("replay", str(half)), "truncated at line 21")
    bad = tmp_path / "bad.jsonl"
    bad.write_text("".join(lines[:4]) + "\x00\x00garbage\n" + "".join(lines[5:]))
    one_line_error(run_cli("replay", str(bad)), "line 5 is corrupt")
    bad.write_text("".join(lines[:-1]) + '{"kind": "end", "t": 1\n')    # a damaged last line
    one_line_error(run_cli("replay", str(bad)), f"line {n} is corrupt")


def test_replay_validates_every_header_value(tmp_path):
    t = traced(tmp_path)
    lines = t.read_text().splitlines(keepends=True)
    head = json.loads(lines[0])
    for key, value, allowed in [("seed", "seven", "integer 0..4294967295"), ("seed", -1, "0..4294967295"),
                                ("seed", True, "integer"),
                                ("packets", 10**9, "1..10000000"), ("packets", "40", "1..10000000"),
                                ("technique", "kvm", "emulation, virtio, sriov"),
                                ("overrides", "virtio.vhost=true", "a list of"),
                                ("overrides", [1], "a list of"),
                                ("until_ns", "1ms", "1..60000000000"), ("until_ns", 0, "1..60000000000"),
                                ("preset", 3, "preset name"), ("preset_sha256", "xyz", "64 hex digits")]:
        f = tmp_path / f"h-{key}.jsonl"
        f.write_text(json.dumps({**head, key: value}) + "\n" + "".join(lines[1:]))
        one_line_error(run_cli("replay", str(f)), f'"{key}"', allowed)
    f = tmp_path / "no-seed.jsonl"
    f.write_text(json.dumps({k: v for k, v in head.items() if k != "seed"}) + "\n" + "".join(lines[1:]))
    one_line_error(run_cli("replay", str(f)), 'no "seed"')


# -- 6. an unreadable user presets directory: skipped with one line ----------------------
@pytest.fixture
def unreadable_user_presets(tmp_path, monkeypatch):
    """$XDG_CONFIG_HOME/iovtui/presets exists but reading it is refused (as
    another user's is, under an inherited HOME)."""
    d = tmp_path / "cfg" / "iovtui" / "presets"
    d.mkdir(parents=True)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))

    def refuse(orig):
        def f(self, *a, **k):
            if self == d or d in self.parents:
                raise PermissionError(13, "Permission denied", str(self))
            return orig(self, *a, **k)
        return f

    for name in ("glob", "is_file", "is_dir", "iterdir"):
        monkeypatch.setattr(pathlib.Path, name, refuse(getattr(pathlib.Path, name)))
    return d


def test_an_unreadable_user_presets_directory_is_skipped_with_one_line(unreadable_user_presets, capsys):
    from iovtui.cli import main

    for argv, rc in ((["presets"], 0), (["run", "--packets", "20"], 0), (["run", "--preset", "nope"], 2)):
        assert main(argv) == rc
        out, err = capsys.readouterr()
        said = [line for line in err.splitlines() if "skipping user presets" in line]
        assert len(said) == 1, err
        assert str(unreadable_user_presets) in said[0] and "Permission denied" in said[0]
        if argv == ["presets"]:
            assert "steady-stream" in out


def test_a_trace_from_before_the_closing_record_is_named_by_its_version(tmp_path):
    """A version-1 trace (no closing record then) is refused for its version,
    not called truncated."""
    t = traced(tmp_path)
    lines = t.read_text().splitlines(keepends=True)
    old = tmp_path / "old.jsonl"
    old.write_text(json.dumps({**json.loads(lines[0]), "version": 1}) + "\n" + "".join(lines[1:-1]))
    one_line_error(run_cli("replay", str(old)), "trace format version 1", "reads version 2")
