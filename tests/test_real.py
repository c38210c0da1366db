"""`iovtui real FILE` and `iovtui run --format kvm_stat|perf-kvm` (issue 18, points 3-4).

The sample files in tests/data/real/ are written in the formats the real
tools print, from their print code (see tests/data/real/README.md for each
file's source):

- perf_kvm_report.txt: tools/perf/builtin-kvm.c print_vcpu_info() and
  print_result() ("%*s " KVM_EVENT_NAME_LEN 40, "%10llu ", "%8.2f%% " …,
  "\\nTotal Samples:%lu, Total events handled time:%.2fus.");
  perf_kvm_report_2012.txt: the first perf kvm stat (decode_str_len 20, no
  Min/Max columns, the old name PENDING_INTERRUPT);
- trace_cmd_report.txt, perf_script.txt: arch/x86/kvm/trace.h
  TRACE_EVENT_KVM_EXIT's TP_printk "vcpu %u reason %s%s%s rip 0x%lx info1
  0x%016llx info2 0x%016llx intr_info 0x%08x error_code 0x%08x", behind
  trace-cmd report's "COMM-PID [CPU] SECS: EVENT:" and perf script's
  "COMM PID [CPU] SECS: kvm:kvm_exit:" prefixes;
  trace_old_kernel.txt: the older TP_printk "reason %s rip 0x%lx info %llx %llx";
- kvm_stat_log.txt / kvm_stat.csv / kvm_stat_once.txt / kvm_stat_debugfs_log.txt:
  tools/kvm/kvm_stat/kvm_stat StdFormat (banner: each key + ' ', rows: time +
  ' %9d' per key), CSVFormat ('timestamp,key,…' / 'time,delta,…'), batch()
  ('%-42s%10d%10d'), and the debugfs counters of kvm_stat -d.
"""

import json
import os
import re

import pytest

from conftest import ROOT, run_cli

DATA = ROOT / "tests" / "data" / "real"


def real_json(name, *args):
    p = run_cli("real", str(DATA / name), "--format", "json", *args, check_rc=0)
    return json.loads(p.stdout)


def one_line_error(p, *needles):
    assert p.returncode == 2, (p.stdout, p.stderr)
    assert "Traceback" not in p.stderr and p.stderr.count("\n") == 1, p.stderr
    assert p.stdout == ""
    for n in needles:
        assert n in p.stderr, p.stderr


# -- every format is read, recognised from the file itself -----------------------------------
@pytest.mark.parametrize("name, fmt, exits", [
    ("perf_kvm_report.txt", "perf kvm stat report",
     {"EXTERNAL_INTERRUPT": 365634, "EPT_MISCONFIG": 240872, "HLT": 98214, "APIC_ACCESS": 77340,
      "MSR_WRITE": 31122, "IO_INSTRUCTION": 2051, "EPT_VIOLATION": 977}),
    ("perf_kvm_report_2012.txt", "perf kvm stat report",
     {"APIC_ACCESS": 65381, "EXTERNAL_INTERRUPT": 16031, "CPUID": 5360, "HLT": 4496, "EPT_VIOLATION": 2667,
      "INTERRUPT_WINDOW": 2242, "EXCEPTION_NMI": 1332, "IO_INSTRUCTION": 383, "CR_ACCESS": 310}),
    ("trace_cmd_report.txt", "kvm:kvm_exit trace",
     {"EPT_MISCONFIG": 3, "EXTERNAL_INTERRUPT": 1, "HLT": 2, "MSR_WRITE": 1, "EPT_VIOLATION": 1}),
    ("perf_script.txt", "kvm:kvm_exit trace",
     {"EPT_MISCONFIG": 3, "EXTERNAL_INTERRUPT": 1, "HLT": 1, "MSR_WRITE": 1}),
    ("trace_old_kernel.txt", "kvm:kvm_exit trace",
     {"EPT_MISCONFIG": 2, "IO_INSTRUCTION": 1, "INTERRUPT_WINDOW": 1, "HLT": 1}),
    ("kvm_stat_log.txt", "kvm_stat --log",
     {"APIC_ACCESS": 8960, "EPT_MISCONFIG": 35980, "EXTERNAL_INTERRUPT": 4510, "HLT": 17920, "MSR_WRITE": 5980}),
    ("kvm_stat.csv", "kvm_stat --log --csv",
     {"APIC_ACCESS": 8960, "EPT_MISCONFIG": 35980, "EXTERNAL_INTERRUPT": 4510, "HLT": 17920, "MSR_WRITE": 5980}),
    ("kvm_stat_once.txt", "kvm_stat --once",
     {"APIC_ACCESS": 1000, "EPT_MISCONFIG": 4050, "HLT": 2050, "MSR_WRITE": 1050}),
    ("kvm_stat_debugfs_log.txt", "kvm_stat --log",
     {"HLT": 11900, "EXTERNAL_INTERRUPT": 2980, "INTERRUPT_WINDOW": 78}),
])
def test_each_format_is_recognised_and_counted(name, fmt, exits):
    d = real_json(name)
    assert d["real"]["format"].startswith(fmt)
    assert d["real"]["exits_by_reason"] == exits
    # the rows name each reason with its asm/vmx.h number, real next to model
    rows = {r["reason"]: r for r in d["rows"]}
    for k, v in exits.items():
        assert rows[k]["real_count"] == v
    assert rows["HLT"]["number"] == 12


def test_kvm_stat_total_includes_what_debugfs_does_not_split():
    d = real_json("kvm_stat_debugfs_log.txt")
    assert d["real"]["exits_total"] == 59000            # the 'exits' column, summed over the rows
    assert d["real_other"] == 59000 - (11900 + 2980 + 78)


def test_per_packet_when_the_user_says_how_many():
    d = real_json("trace_cmd_report.txt", "--packets", "4", "--technique", "emulation")
    assert d["unit"] == "per packet"
    rows = {r["reason"]: r for r in d["rows"]}
    assert rows["EPT_MISCONFIG"]["real"] == pytest.approx(3 / 4)
    assert d["real_total"] == pytest.approx(8 / 4)
    # the model ran with the same packet count
    assert d["model"]["packets"]["offered"] == 4
    assert rows["EPT_MISCONFIG"]["model"] == pytest.approx(
        rows["EPT_MISCONFIG"]["model_count"] / d["model"]["packets"]["delivered"])


def test_per_second_from_the_files_own_clock():
    # kvm_stat --log: three rows 3 s apart cover 9 s
    d = real_json("kvm_stat_log.txt")
    assert d["unit"] == "per second" and d["real"]["seconds"] == pytest.approx(9.0)
    assert d["real_total"] == pytest.approx(73350 / 9)
    # trace-cmd: from the first to the last timestamp
    d = real_json("trace_cmd_report.txt")
    assert d["real"]["seconds"] == pytest.approx(1720.000948 - 1720.000100, abs=1e-9)
    # the model's rate is per second of virtual time
    secs = d["model"]["virtual_time_ns"] / 1e9
    for r in d["rows"]:
        assert r["model"] == pytest.approx(r["model_count"] / secs)
    # kvm_stat --once measured one second: its delta column is the rate
    d = real_json("kvm_stat_once.txt")
    assert {r["reason"]: r["real"] for r in d["rows"] if r["real_count"]} == {
        "APIC_ACCESS": 990, "EPT_MISCONFIG": 4010, "HLT": 2040, "MSR_WRITE": 1040}


def test_perf_report_has_no_clock_so_seconds_or_packets_are_asked_for():
    p = run_cli("real", str(DATA / "perf_kvm_report.txt"), check_rc=0)
    assert "pass --packets N, or --seconds S" in p.stdout
    d = real_json("perf_kvm_report.txt", "--seconds", "10")
    assert d["real_total"] == pytest.approx(816210 / 10)


def test_table_csv_markdown():
    p = run_cli("real", str(DATA / "kvm_stat_log.txt"), "--technique", "emulation", check_rc=0)
    assert "kvm_stat --log" in p.stdout and "exits per second" in p.stdout
    line = next(ln for ln in p.stdout.splitlines() if ln.strip().startswith("EPT_MISCONFIG"))
    assert re.match(r"\s+EPT_MISCONFIG\s+49\s+3,998\s+[\d,]+$", line), line
    p = run_cli("real", str(DATA / "kvm_stat_log.txt"), "--format", "csv", check_rc=0)
    lines = p.stdout.splitlines()
    assert lines[0] == "reason,number,real_count,model_count,real_per_second,model_per_second"
    assert any(ln.startswith("EPT_MISCONFIG,49,35980,") for ln in lines)
    assert lines[-1].startswith("total,,73350,")
    p = run_cli("real", str(DATA / "kvm_stat_log.txt"), "--format", "markdown", check_rc=0)
    assert "| exit reason | no. | real | model |" in p.stdout


# -- malformed files: one line naming the line and what was expected, exit 2 ----------------------
def test_unknown_reason():
    one_line_error(run_cli("real", str(DATA / "bad_unknown_reason.txt")),
                   "line 9", "unknown exit reason 'HALTED'", "VMX name")
    one_line_error(run_cli("real", str(DATA / "bad_svm_reason.txt")),
                   "line 1", "unknown exit reason 'npf'", "AMD")


def test_truncated_files():
    one_line_error(run_cli("real", str(DATA / "bad_truncated_trace.txt")),
                   "line 9 is cut off", "kvm_exit: vcpu N reason NAME")
    one_line_error(run_cli("real", str(DATA / "bad_truncated_perf.txt")),
                   "line 12", "Total Samples:", "cut short")
    one_line_error(run_cli("real", str(DATA / "bad_truncated_kvm_stat.txt")),
                   "line 4 is cut off", "2 of 8 values")


def test_wrong_format_empty_missing_binary(tmp_path):
    one_line_error(run_cli("real", str(DATA / "bad_wrong_format.txt")),
                   "line 1: not a format iovtui reads", "perf kvm stat report")
    one_line_error(run_cli("real", str(DATA / "bad_empty.txt")), "the file is empty", "kvm_stat")
    one_line_error(run_cli("real", str(tmp_path / "nope.txt")), "no such file")
    data = tmp_path / "perf.data"
    data.write_bytes(b"PERFILE2\0\0\0\x01" * 20)
    one_line_error(run_cli("real", str(data)), "binary file", "perf kvm stat report")


def test_damaged_lines_inside_a_file(tmp_path):
    t = (DATA / "trace_cmd_report.txt").read_text().splitlines()
    bad = tmp_path / "t.txt"
    bad.write_text("\n".join(t[:4] + ["garbage in the middle"] + t[4:]) + "\n")
    one_line_error(run_cli("real", str(bad)), "line 5: expected a trace line")
    t = (DATA / "trace_cmd_report.txt").read_text()
    bad.write_text(t.replace("info1 0x0000000000000000 info2", "info1 0x0000000000000000", 1))
    one_line_error(run_cli("real", str(bad)), "line 3: expected 'kvm_exit: vcpu N reason NAME")
    p = (DATA / "perf_kvm_report.txt").read_text()
    bad.write_text(p.replace("Total Samples:816210", "Total Samples:816211"))
    one_line_error(run_cli("real", str(bad)), "Total Samples:816211 but the rows add up to 816210")
    k = (DATA / "kvm_stat_log.txt").read_text().splitlines()
    bad.write_text("\n".join(k[:2] + ["2024-05-14 10:2x:15 1 2 3 4 5 6 7 8"] + k[2:]) + "\n")
    one_line_error(run_cli("real", str(bad)), "line 3: expected a time 'YYYY-MM-DD HH:MM:SS'")


# -- the model's exits in the tools' own formats ----------------------------------------------------
GOLDEN = {
    "kvm_stat": ("golden_kvm_stat.txt", ("--technique", "virtio")),
    "perf-kvm": ("golden_perf_kvm.txt", ("--technique", "emulation")),
}
RUN = ("run", "--preset", "steady-stream", "--seed", "1", "--packets", "500")


@pytest.mark.parametrize("fmt", sorted(GOLDEN))
def test_golden_output(fmt):
    """One example of each, for a fixed preset, seed and packet count
    (IOVTUI_REGEN_GOLDEN=1 rewrites them after an intended model change).  The
    exits' times are pinned, so the costs are exact (costs.jitter = 0)."""
    name, tech = GOLDEN[fmt]
    p = run_cli(*RUN, *tech, "--set", "costs.jitter=0", "--format", fmt, check_rc=0)
    path = DATA / name
    if os.environ.get("IOVTUI_REGEN_GOLDEN"):
        path.write_text(p.stdout)
    assert p.stdout == path.read_text()


def test_kvm_stat_output_is_kvm_stats_batch_format():
    p = run_cli(*RUN, "--technique", "emulation", "--format", "kvm_stat", check_rc=0)
    s = json.loads(run_cli(*RUN, "--technique", "emulation", "--json", check_rc=0).stdout)
    lines = p.stdout.splitlines()
    # '%-42s%10d%10d': the name left in 42 columns, two right-aligned 10-column numbers
    assert all(len(ln) == 62 and re.match(r"^[a-z_()A-Z]+ +\d+ +\d+$", ln) for ln in lines), lines
    rows = {ln[:42].rstrip(): (int(ln[42:52]), int(ln[52:62])) for ln in lines}
    assert rows["kvm_exit"][0] == s["exits"]["total"]
    for reason, n in s["exits"]["by_reason"].items():
        assert rows[f"kvm_exit({reason})"][0] == n
    assert rows["kvm_exit(CPUID)"] == (0, 0)           # every reason of kvm_stat's table, as kvm_stat lists them
    secs = s["virtual_time_ns"] / 1e9
    assert rows["kvm_exit"][1] == round(s["exits"]["total"] / secs)
    # kvm_stat sorts its keys: kvm_entry, kvm_exit, its children, then kvm_userspace_exit
    assert [ln[:42].rstrip() for ln in lines][:3] == ["kvm_entry", "kvm_exit", "kvm_exit(APIC_ACCESS)"]
    assert lines[-1].startswith("kvm_userspace_exit")


@pytest.mark.parametrize("tech", ["emulation", "virtio"])
def test_perf_kvm_output_is_perfs_print_result(tech):
    # (virtio's set-up takes an exit, which the counts leave out as the summary does)
    p = run_cli(*RUN, "--technique", tech, "--format", "perf-kvm", check_rc=0)
    s = json.loads(run_cli(*RUN, "--technique", tech, "--json", check_rc=0).stdout)
    lines = p.stdout.splitlines()
    assert lines[:4] == ["", "", "Analyze events for all VMs, all VCPUs:", ""]
    assert lines[4] == ("%40s %10s %9s %9s %11s %11s %16s " % ("VM-EXIT", "Samples", "Samples%", "Time%",
                                                               "Min Time", "Max Time", "Avg time"))
    rows = [ln for ln in lines[6:] if ln.strip() and not ln.startswith("Total")]
    counts = {}
    for ln in rows:
        m = re.match(r"^ {0,40}(\S+) +(\d+) +([\d.]+)% +([\d.]+)% +([\d.]+)us +([\d.]+)us +([\d.]+)us "
                     r"\( \+- *[\d.]+% \)$", ln)
        assert m and len(ln.split("us ")[0]) == 40 + 1 + 10 + 1 + 9 + 1 + 9 + 1 + 9, ln
        counts[m.group(1)] = int(m.group(2))
        assert float(m.group(5)) <= float(m.group(7)) <= float(m.group(6))     # min <= avg <= max
    assert counts == s["exits"]["by_reason"]
    assert list(counts.values()) == sorted(counts.values(), reverse=True)     # --key sample
    assert sum(float(ln.split("%")[0].split()[-1]) for ln in rows) == pytest.approx(100, abs=0.05)
    assert re.match(rf"^Total Samples:{s['exits']['total']}, Total events handled time:\d+\.\d\dus\.$",
                    lines[-2]), lines[-2]


def test_round_trip_perf_kvm(tmp_path):
    """`iovtui real` reads iovtui's own perf-kvm output back: with the same
    packet count, the real column is the model's."""
    out = tmp_path / "perf.txt"
    out.write_text(run_cli(*RUN, "--technique", "emulation", "--format", "perf-kvm", check_rc=0).stdout)
    d = json.loads(run_cli("real", str(out), "--technique", "emulation", "--packets", "500", "--format", "json",
                           check_rc=0).stdout)
    assert d["rows"] and all(r["real_count"] == r["model_count"] for r in d["rows"])
    assert all(r["real"] == pytest.approx(r["model"]) for r in d["rows"])
    assert d["real_total"] == pytest.approx(d["model_total"])


def test_round_trip_kvm_stat(tmp_path):
    out = tmp_path / "kvm_stat.txt"
    out.write_text(run_cli(*RUN, "--technique", "sriov", "--format", "kvm_stat", check_rc=0).stdout)
    d = json.loads(run_cli("real", str(out), "--technique", "sriov", "--packets", "500", "--format", "json",
                           check_rc=0).stdout)
    assert d["rows"] and all(r["real_count"] == r["model_count"] for r in d["rows"])
    # per second: the delta column is the model's rate, rounded to whole exits as kvm_stat prints it
    # (the model now runs the preset's own packet count: the same steady rate, not the same run)
    d = json.loads(run_cli("real", str(out), "--technique", "sriov", "--format", "json", check_rc=0).stdout)
    for r in d["rows"]:
        assert r["real"] == pytest.approx(r["model"], abs=1 + 0.02 * r["model"])


def test_run_format_errors():
    one_line_error(run_cli(*RUN, "--json", "--format", "kvm_stat"), "--json and --format kvm_stat")
    p = run_cli(*RUN, "--format", "wireshark")
    assert p.returncode == 2 and "kvm_stat" in p.stderr and "perf-kvm" in p.stderr


# -- the compare view shows a real trace next to the model's columns ---------------------------
async def test_app_real_opens_the_compare_view_with_the_real_column():
    from iovtui.real import read_real
    from iovtui.sim.preset import load_preset
    from iovtui.ui.app import create_app
    from iovtui.ui.screens import CompareScreen

    a = create_app(load_preset("steady-stream"), "virtio", real=read_real(str(DATA / "kvm_stat_log.txt")))
    async with a.run_test(size=(120, 40)) as pilot:
        await pilot.pause(0.5)
        scr = a.screen
        assert isinstance(scr, CompareScreen) and scr.w_real.display
        lines = scr.w_real.lines()
        assert "kvm_stat_log.txt" in lines[0] and "exits per second" in lines[0]
        assert lines[1].split() == ["exit", "reason", "real", "emulation", "virtio", "sriov"]
        row = next(ln for ln in lines if ln.startswith("EPT_MISCONFIG"))
        assert row.split()[1] == "3,998"                       # 35,980 exits over 9 s
        assert lines[-1].split()[:2] == ["total", "8,150"]
        # the model's columns are the running runs' exits per second of virtual time
        col = scr.w_grid.frame.columns[0]
        hlt = col.summary["exits"]["by_reason"].get("HLT", 0) * 1e9 / col.t_ns
        assert col.t_ns > 0 and hlt > 0
        # the pane sits between the columns and the footer, overlapping neither
        assert scr.w_grid.region.bottom <= scr.w_real.region.y < scr.w_footer.region.y


async def test_palette_asks_for_a_real_trace_path():
    from iovtui.sim.preset import load_preset
    from iovtui.ui.app import create_app
    from iovtui.ui.screens import CompareScreen

    a = create_app(load_preset("steady-stream"), "virtio", start_paused=True)
    async with a.run_test(size=(120, 40)) as pilot:
        await pilot.pause(0.2)
        cmds = {c.title: c for c in a.get_system_commands(a.screen)}
        cmds["Compare with a real trace…"].callback()
        await pilot.pause(0.2)
        from textual.widgets import Input
        inp = a.screen.query_one(Input)
        inp.value = str(DATA / "bad_unknown_reason.txt")
        await pilot.press("enter")
        await pilot.pause(0.2)
        assert "unknown exit reason 'HALTED'" in str(a.screen.query_one("#real-error").render())
        inp.value = str(DATA / "perf_script.txt")
        await pilot.press("enter")
        await pilot.pause(0.5)
        assert isinstance(a.screen, CompareScreen) and a.screen.w_real is not None
        assert "perf_script.txt" in a.screen.w_real.lines()[0]


def test_app_real_bad_file_is_one_line():
    one_line_error(run_cli("--real", str(DATA / "bad_empty.txt")), "the file is empty")
    one_line_error(run_cli("--real-packets", "5"), "--real-packets needs --real FILE")
