"""Real KVM exit traces in, the model's exits out in the real tools' formats.

An I/O module (not part of the model): it reads what a user recorded on a
real KVM host and writes the model's exits the way those tools print theirs,
so that the two can be put side by side or diffed with ordinary tools.

Formats read (each recognised from the file itself):

- ``perf kvm stat report`` (its stdio table): tools/perf/builtin-kvm.c,
  ``print_vcpu_info()`` and ``print_result()``;
- ``trace-cmd report`` and ``perf script`` lines of the kvm:kvm_exit
  tracepoint: the ``TP_printk`` of ``TRACE_EVENT_KVM_EXIT`` in
  arch/x86/kvm/trace.h (``vcpu %u reason %s%s%s rip 0x%lx info1 0x%016llx
  info2 0x%016llx intr_info 0x%08x error_code 0x%08x``, with
  ``kvm_print_exit_reason()`` printing the name and a `` FAILED_VMENTRY``
  flag), and the older kernels' ``vcpu %u reason %s rip 0x%lx info %llx %llx``
  and, before the vcpu field, ``reason %s rip 0x%lx info %llx %llx``;
- ``kvm_stat --log`` / ``--log --csv`` / ``--once``: tools/kvm/kvm_stat/kvm_stat,
  ``StdFormat`` / ``CSVFormat`` / ``log()`` and ``batch()``; the fields are the
  tracepoints (``kvm_exit``, ``kvm_exit(EPT_MISCONFIG)`` …) or, with ``-d``,
  the debugfs counters (``exits``, ``halt_exits`` …).

Exit reason names are the VMX names of arch/x86/include/uapi/asm/vmx.h
(``VMX_EXIT_REASONS``); an unknown name, a truncated file or a file of
another format raises :class:`RealTraceError` with one line naming the line
and what was expected.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

__all__ = ["VMX_EXIT_REASONS", "RealTrace", "RealTraceError", "read_real", "parse_real", "ExitTimes",
           "format_kvm_stat", "format_perf_kvm", "compare_real", "render", "FORMAT_NAMES"]

#: arch/x86/include/uapi/asm/vmx.h, EXIT_REASON_* and VMX_EXIT_REASONS (the
#: names the kvm_exit tracepoint and perf kvm print)
VMX_EXIT_REASONS: dict[str, int] = {
    "EXCEPTION_NMI": 0, "EXTERNAL_INTERRUPT": 1, "TRIPLE_FAULT": 2, "INIT_SIGNAL": 3, "SIPI_SIGNAL": 4,
    "OTHER_SMI": 6, "INTERRUPT_WINDOW": 7, "NMI_WINDOW": 8, "TASK_SWITCH": 9, "CPUID": 10, "HLT": 12,
    "INVD": 13, "INVLPG": 14, "RDPMC": 15, "RDTSC": 16, "VMCALL": 18, "VMCLEAR": 19, "VMLAUNCH": 20,
    "VMPTRLD": 21, "VMPTRST": 22, "VMREAD": 23, "VMRESUME": 24, "VMWRITE": 25, "VMOFF": 26, "VMON": 27,
    "CR_ACCESS": 28, "DR_ACCESS": 29, "IO_INSTRUCTION": 30, "MSR_READ": 31, "MSR_WRITE": 32,
    "INVALID_STATE": 33, "MSR_LOAD_FAIL": 34, "MWAIT_INSTRUCTION": 36, "MONITOR_TRAP_FLAG": 37,
    "MONITOR_INSTRUCTION": 39, "PAUSE_INSTRUCTION": 40, "MCE_DURING_VMENTRY": 41, "TPR_BELOW_THRESHOLD": 43,
    "APIC_ACCESS": 44, "EOI_INDUCED": 45, "GDTR_IDTR": 46, "LDTR_TR": 47, "EPT_VIOLATION": 48,
    "EPT_MISCONFIG": 49, "INVEPT": 50, "RDTSCP": 51, "PREEMPTION_TIMER": 52, "INVVPID": 53, "WBINVD": 54,
    "XSETBV": 55, "APIC_WRITE": 56, "RDRAND": 57, "INVPCID": 58, "VMFUNC": 59, "ENCLS": 60, "RDSEED": 61,
    "PML_FULL": 62, "XSAVES": 63, "XRSTORS": 64, "UMWAIT": 67, "TPAUSE": 68, "BUS_LOCK": 74, "NOTIFY": 75,
    "TDCALL": 77,
}
_BY_NUMBER = {v: k for k, v in VMX_EXIT_REASONS.items()}
#: names older kernels printed for the same reason (7 was PENDING_INTERRUPT before Linux 5.9)
ALIASES = {"PENDING_INTERRUPT": "INTERRUPT_WINDOW"}

#: tools/kvm/kvm_stat/kvm_stat's own VMX_EXIT_REASONS (the kvm_exit(...) fields it
#: creates: vmx.h's list without OTHER_SMI and TDCALL)
KVM_STAT_VMX = [n for n in VMX_EXIT_REASONS if n not in ("OTHER_SMI", "TDCALL")]

#: kvm_stat -d (debugfs) counters that are one VMX exit reason each (arch/x86/kvm/x86.c
#: kvm_vcpu_stats_desc; the others, e.g. io_exits / mmio_exits, count exits to userspace)
DEBUGFS_REASONS = {"halt_exits": "HLT", "irq_exits": "EXTERNAL_INTERRUPT",
                   "irq_window_exits": "INTERRUPT_WINDOW", "nmi_window_exits": "NMI_WINDOW"}

FORMAT_NAMES = {
    "perf-kvm": "perf kvm stat report",
    "tracepoint": "kvm:kvm_exit trace (trace-cmd report / perf script)",
    "kvm_stat-log": "kvm_stat --log",
    "kvm_stat-csv": "kvm_stat --log --csv",
    "kvm_stat-once": "kvm_stat --once",
}

WHAT_IS_READ = ("a 'perf kvm stat report' table, 'trace-cmd report' or 'perf script' lines of kvm:kvm_exit, "
                "or 'kvm_stat --log', '--log --csv' or '--once' output")


class RealTraceError(Exception):
    """A file that cannot be read as a real trace: the message is one line."""


@dataclass
class RealTrace:
    """What a real host recorded: exits by VMX reason name."""

    path: str
    format: str                                  # a key of FORMAT_NAMES
    exits: dict[str, int]                        # VMX reason -> count
    total: int                                   # all exits (may exceed sum(exits): debugfs-only fields)
    seconds: float | None = None                 # how long the recording covered, when the file says
    per_second: dict[str, float] | None = None   # as the file measured it (kvm_stat --once's delta column)
    lines: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        return FORMAT_NAMES[self.format]

    def rate(self, seconds: float | None = None) -> tuple[dict[str, float], float] | None:
        """Exits per second by reason and in total, or None when the file
        does not say how long it covers (and ``seconds`` is not given)."""
        secs = seconds if seconds is not None else self.seconds
        if secs is None and self.per_second is not None:
            return dict(self.per_second), sum(self.per_second.values())
        if not secs:
            return None
        return {k: v / secs for k, v in self.exits.items()}, self.total / secs


def _reason(name: str, where: str) -> str:
    """A VMX reason name as the kernel spells it (a number printed by
    __print_symbolic for a value not in its table is looked up too)."""
    n = ALIASES.get(name, name)
    if n in VMX_EXIT_REASONS:
        return n
    if re.fullmatch(r"0x[0-9a-fA-F]+|\d+", name):
        num = int(name, 0)
        if num in _BY_NUMBER:
            return _BY_NUMBER[num]
    hint = " (an AMD host? iovtui models Intel VMX)" if name.lower() == name else ""
    raise RealTraceError(f"{where}: unknown exit reason {name!r}{hint}; expected a VMX name of "
                         "asm/vmx.h, e.g. EPT_MISCONFIG, HLT, EXTERNAL_INTERRUPT")


# -- reading -------------------------------------------------------------------------------
def read_real(path: str) -> RealTrace:
    """Read and parse ``path`` (RealTraceError on any problem)."""
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except FileNotFoundError:
        raise RealTraceError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise RealTraceError(f"{path}: is a directory; give the file the tool wrote") from None
    except OSError as e:
        raise RealTraceError(f"{path}: cannot read: {e.strerror or e}") from None
    if b"\0" in data[:4096]:
        raise RealTraceError(f"{path}: line 1: a binary file (a perf.data or trace.dat?); expected text: "
                             f"{WHAT_IS_READ} (run 'perf kvm stat report' or 'trace-cmd report' on it)")
    return parse_real(data.decode("utf-8", errors="replace"), path)


def parse_real(text: str, path: str = "<text>") -> RealTrace:
    lines = text.splitlines()
    cut = bool(text) and not text.endswith("\n")         # the last line has no newline: maybe cut off
    first = next((i for i, ln in enumerate(lines) if ln.strip()), None)
    if first is None:
        raise RealTraceError(f"{path}: the file is empty; expected {WHAT_IS_READ}")
    head = lines[first].strip()
    probe = lines[:400]
    if any(ln.startswith("Analyze events for ") for ln in probe) or re.match(r"\S+\s+Samples\s+Samples%", head):
        return _perf_kvm(lines, path, cut)
    if head.startswith("timestamp,"):
        return _kvm_stat_csv(lines, first, path, cut)
    if _is_banner(head):
        return _kvm_stat_log(lines, first, path, cut)
    if _ONCE.match(lines[first]):
        return _kvm_stat_once(lines, first, path, cut)
    if any(_TRACE.match(ln) for ln in probe):
        return _tracepoint(lines, path, cut)
    raise RealTraceError(f"{path}: line {first + 1}: not a format iovtui reads (it begins {head[:40]!r}); "
                         f"expected {WHAT_IS_READ}")


# perf kvm stat report ------------------------------------------------------------------------
# print_result(): "%*s " name (KVM_EVENT_NAME_LEN 40; 20 in older perf), "%10llu ", "%8.2f%% ",
# "%8.2f%% ", "%9.2fus ", "%9.2fus ", "%9.2fus ( +-%7.2f%% )"; then
# "\nTotal Samples:%lu, Total events handled time:%.2fus.\n"
# (the first perf kvm stat, 2012, printed no Min Time / Max Time columns)
_PERF_ROW = re.compile(r"^\s*(\S+)\s+(\d+)\s+(\d+\.\d+)%\s+(\d+\.\d+)%\s+(?:(\d+\.\d+)us\s+(\d+\.\d+)us\s+)?"
                       r"(\d+\.\d+)us(?:\s+\(\s*\+-\s*(\d+\.\d+)%\s*\))?\s*$")
_PERF_HEAD = re.compile(r"^\s*\S+\s+Samples\s+Samples%\s+Time%\s+(?:Min Time\s+Max Time\s+)?Avg time\s*$")
_PERF_TOTAL = re.compile(r"^Total Samples:(\d+), Total events handled time:(\d+\.\d+)us\.\s*$")


def _perf_kvm(lines: list[str], path: str, cut: bool) -> RealTrace:
    exits: dict[str, int] = {}
    state = "intro"
    n_lines = len(lines)
    for i, raw in enumerate(lines):
        ln = raw.rstrip()
        where = f"{path}: line {i + 1}"
        if not ln.strip():
            continue
        if state == "intro":
            if _PERF_HEAD.match(ln):
                event = ln.split()[0]
                if event != "VM-EXIT":
                    raise RealTraceError(f"{where}: this report is of {event} events; record and report "
                                         "the default '--event vmexit' (its first column is VM-EXIT)")
                state = "rows"
            continue
        if state == "rows":
            m = _PERF_ROW.match(ln)
            if m:
                name = _reason(m.group(1), where)
                exits[name] = exits.get(name, 0) + int(m.group(2))
                continue
            t = _PERF_TOTAL.match(ln)
            if t:
                total = int(t.group(1))
                if total != sum(exits.values()):
                    raise RealTraceError(f"{where}: Total Samples:{total} but the rows add up to "
                                         f"{sum(exits.values())}; the table is damaged")
                return RealTrace(path, "perf-kvm", exits, total, lines=n_lines)
            if i == n_lines - 1 and cut:
                raise RealTraceError(f"{where} is cut off: the file ends inside the table; expected a row "
                                     "'NAME SAMPLES SAMPLES% TIME% MINus MAXus AVGus ( +- PCT% )' and then "
                                     "'Total Samples:N, …'")
            raise RealTraceError(f"{where}: expected a row of the VM-EXIT table "
                                 "('NAME SAMPLES SAMPLES% TIME% MINus MAXus AVGus ( +- PCT% )') or "
                                 f"'Total Samples:N, Total events handled time:Tus.', got {ln.strip()[:50]!r}")
    if state == "intro":
        raise RealTraceError(f"{path}: line {n_lines}: no 'VM-EXIT  Samples  Samples%  Time%  Min Time  "
                             "Max Time  Avg time' header after 'Analyze events for …'; the report is incomplete")
    raise RealTraceError(f"{path}: line {n_lines}: the table ends without its 'Total Samples:N, Total events "
                         "handled time:Tus.' line; the file is cut short")


# trace-cmd report / perf script ------------------------------------------------------------
# trace-cmd: "   CPU 0/KVM-1234  [003]  5678.123456: kvm_exit:  vcpu 0 reason …"
#   (some versions print latency flags "d..1." between the CPU and the time)
# perf script: "   CPU 0/KVM  1234 [003]  5678.123456:  kvm:kvm_exit: vcpu 0 reason …"
_TRACE = re.compile(r"^\s*(?P<comm>.*?)\s+\[(?P<cpu>\d+)\]\s+(?:[a-zA-Z.0-9]{4,6}\s+)?(?P<ts>\d+\.\d+):"
                    r"\s+(?:(?P<sys>\w+):)?(?P<event>\w+):\s*(?P<rest>.*)$")
_EXIT_NEW = re.compile(r"^(?:vcpu (?P<vcpu>\d+) )?reason (?P<reason>\S+)(?: FAILED_VMENTRY)? rip 0x[0-9a-fA-F]+ "
                       r"(?:info1 0x[0-9a-fA-F]+ info2 0x[0-9a-fA-F]+ intr_info 0x[0-9a-fA-F]+ "
                       r"error_code 0x[0-9a-fA-F]+|info [0-9a-fA-F]+ [0-9a-fA-F]+)(?:\s.*)?$")
_EXIT_FORM = ("'kvm_exit: vcpu N reason NAME rip 0x… info1 0x… info2 0x… intr_info 0x… error_code 0x…' "
              "(or the older 'reason NAME rip 0x… info A B')")
#: what trace-cmd report prints before the events
_TRACE_HEAD = re.compile(r"^(version = |cpus=\d+|CPU ?\d+ is empty|CPU\d+ data recorded at|\s*#)")


def _tracepoint(lines: list[str], path: str, cut: bool) -> RealTrace:
    exits: dict[str, int] = {}
    t_first = t_last = None
    seen = False
    last = len(lines) - 1
    for i, raw in enumerate(lines):
        ln = raw.rstrip()
        if not ln.strip():
            continue
        where = f"{path}: line {i + 1}"
        m = _TRACE.match(ln)
        if m is None:
            if not seen and _TRACE_HEAD.match(ln):
                continue
            if i == last and cut:
                raise RealTraceError(f"{where} is cut off: expected a whole trace line, e.g. {_EXIT_FORM}")
            raise RealTraceError(f"{where}: expected a trace line ('COMM [CPU] SECONDS: EVENT: …' as "
                                 f"trace-cmd report and perf script print it), got {ln.strip()[:50]!r}")
        seen = True
        ts = float(m.group("ts"))
        t_first = ts if t_first is None else t_first
        t_last = ts
        if m.group("event") != "kvm_exit":
            continue
        e = _EXIT_NEW.match(m.group("rest").strip())
        if e is None:
            if i == last and cut:
                raise RealTraceError(f"{where} is cut off: expected {_EXIT_FORM}")
            raise RealTraceError(f"{where}: expected {_EXIT_FORM}, got {m.group('rest').strip()[:60]!r}")
        name = _reason(e.group("reason"), where)
        exits[name] = exits.get(name, 0) + 1
    if not exits:
        raise RealTraceError(f"{path}: line {len(lines)}: no kvm_exit events; record them with "
                             "'trace-cmd record -e kvm:kvm_exit' or 'perf record -e kvm:kvm_exit'")
    secs = (t_last - t_first) if t_first is not None and t_last > t_first else None
    return RealTrace(path, "tracepoint", exits, sum(exits.values()), seconds=secs, lines=len(lines))


# kvm_stat ------------------------------------------------------------------------------------
# fields: tracepoints ("kvm_exit", "kvm_exit(HLT)", "kvm_userspace_exit(MMIO)") or debugfs files
_FIELD = re.compile(r"^[a-z][a-z0-9_]*(\([A-Za-z0-9_]+\))?$")
# batch(): '%-42s%10d%10d' % (key, value, delta)
_ONCE = re.compile(r"^([a-z][a-z0-9_]*(?:\([A-Za-z0-9_]+\))?)\s+(\d+)\s+(-?\d+)\s*$")
_STAMP = "%Y-%m-%d %H:%M:%S"


def _is_banner(line: str) -> bool:
    words = line.split()
    return len(words) >= 2 and all(_FIELD.match(w) for w in words) and any(w.startswith("kvm_exit") or
                                                                           w == "exits" for w in words)


def _fields_to_exits(fields: dict[str, int], where: str) -> tuple[dict[str, int], int]:
    """Exits by reason and in total from kvm_stat fields (tracepoint children
    kvm_exit(R), or the debugfs counters)."""
    exits: dict[str, int] = {}
    total = None
    for key, v in fields.items():
        m = re.match(r"^kvm_exit\((\w+)\)$", key)
        if m:
            name = _reason(m.group(1), f"{where}: field {key}")
            exits[name] = exits.get(name, 0) + v
        elif key == "kvm_exit":
            total = v
        elif key in DEBUGFS_REASONS:
            exits.setdefault(DEBUGFS_REASONS[key], 0)
            if not any(k.startswith("kvm_exit(") for k in fields):
                exits[DEBUGFS_REASONS[key]] += v
        elif key == "exits" and total is None:
            total = v
    if total is None and not exits:
        raise RealTraceError(f"{where}: no exit fields; expected kvm_exit(REASON) fields (kvm_stat's "
                             "tracepoints, the default) or 'exits' (kvm_stat -d)")
    s = sum(exits.values())
    return {k: v for k, v in exits.items() if v}, max(s, total or 0)


def _stamp(text: str, where: str) -> datetime:
    try:
        return datetime.strptime(text, _STAMP)
    except ValueError:
        raise RealTraceError(f"{where}: expected a time 'YYYY-MM-DD HH:MM:SS' at the start of the row, "
                             f"got {text!r}") from None


def _log_rows(rows: list[tuple[int, datetime, list[int]]], keys: list[str], path: str, fmt: str,
              n_lines: int) -> RealTrace:
    if not rows:
        raise RealTraceError(f"{path}: line {n_lines}: a banner but no rows; kvm_stat writes one row "
                             "per interval (-s, 3 s by default): let it run longer")
    sums = [0] * len(keys)
    for _n, _t, vals in rows:
        for j, v in enumerate(vals):
            sums[j] += v
    exits, total = _fields_to_exits(dict(zip(keys, sums)), f"{path}: line {rows[0][0]}")
    notes = []
    if len(rows) >= 2:
        span = (rows[-1][1] - rows[0][1]).total_seconds()
        interval = span / (len(rows) - 1)
        secs = interval * len(rows) if span > 0 else None
    else:
        secs = None
        notes.append("one row only: its interval is unknown, so no rate per second")
    return RealTrace(path, fmt, exits, total, seconds=secs, lines=n_lines, notes=notes)


def _counts(vals: list[str], keys: list[str], where: str, cut_here: bool, expected: str) -> list[int]:
    """A kvm_stat log / csv row's counts, one per banner field, or one line
    saying what is wrong (a last line of a file that ends mid-line: cut off)."""
    if len(vals) != len(keys) or not all(re.fullmatch(r"-?\d+", v) for v in vals):
        if cut_here:
            raise RealTraceError(f"{where} is cut off: {len(vals)} of {len(keys)} values")
        raise RealTraceError(f"{where}: expected {expected}, got {len(vals)}")
    return [int(v) for v in vals]


def _kvm_stat_log(lines: list[str], first: int, path: str, cut: bool) -> RealTrace:
    # StdFormat: banner = each key + ' '; statline = time + ' %9d' per key; the
    # banner is printed again every 20 rows (log(), banner_repeat)
    keys = lines[first].split()
    rows = []
    last = len(lines) - 1
    for i in range(first + 1, len(lines)):
        ln = lines[i].rstrip()
        if not ln.strip():
            continue
        where = f"{path}: line {i + 1}"
        if _is_banner(ln.strip()):
            if ln.split() != keys:
                raise RealTraceError(f"{where}: a banner with other fields than line {first + 1}'s; "
                                     "expected the same fields (one kvm_stat run per file)")
            continue
        parts = ln.split()
        t = _stamp(" ".join(parts[:2]), where)
        rows.append((i + 1, t, _counts(parts[2:], keys, where, i == last and cut,
                                       f"{len(keys)} counts after the time (one per field of line {first + 1})")))
    return _log_rows(rows, keys, path, "kvm_stat-log", len(lines))


def _kvm_stat_csv(lines: list[str], first: int, path: str, cut: bool) -> RealTrace:
    # CSVFormat: banner 'timestamp' + ',key' per key; statline time + ',delta' per key
    keys = lines[first].strip().split(",")[1:]
    bad = next((k for k in keys if not _FIELD.match(k)), None)
    if bad is not None or not keys:
        raise RealTraceError(f"{path}: line {first + 1}: expected kvm_stat's csv banner "
                             f"'timestamp,FIELD,…' (fields like kvm_exit(HLT)), got field {bad!r}")
    rows = []
    last = len(lines) - 1
    for i in range(first + 1, len(lines)):
        ln = lines[i].strip()
        if not ln:
            continue
        where = f"{path}: line {i + 1}"
        if ln.startswith("timestamp,"):
            if ln.split(",")[1:] != keys:
                raise RealTraceError(f"{where}: a banner with other fields than line {first + 1}'s")
            continue
        parts = ln.split(",")
        t = _stamp(parts[0], where)
        rows.append((i + 1, t, _counts(parts[1:], keys, where, i == last and cut,
                                       f"{len(keys)} comma-separated counts after the time")))
    return _log_rows(rows, keys, path, "kvm_stat-csv", len(lines))


def _kvm_stat_once(lines: list[str], first: int, path: str, cut: bool) -> RealTrace:
    values: dict[str, int] = {}
    deltas: dict[str, int] = {}
    last = len(lines) - 1
    for i in range(first, len(lines)):
        ln = lines[i]
        if not ln.strip():
            continue
        m = _ONCE.match(ln)
        where = f"{path}: line {i + 1}"
        if m is None:
            if i == last and cut:
                raise RealTraceError(f"{where} is cut off: expected 'FIELD  TOTAL  DELTA' as kvm_stat --once "
                                     "prints it")
            raise RealTraceError(f"{where}: expected 'FIELD  TOTAL  DELTA' as kvm_stat --once prints it, "
                                 f"got {ln.strip()[:50]!r}")
        values[m.group(1)] = values.get(m.group(1), 0) + int(m.group(2))
        deltas[m.group(1)] = deltas.get(m.group(1), 0) + int(m.group(3))
    exits, total = _fields_to_exits(values, f"{path}: line {first + 1}")
    d_exits, _ = _fields_to_exits(deltas, f"{path}: line {first + 1}")
    # batch() reads the counters, sleeps one second and reads them again: the
    # delta column is that second's exits
    return RealTrace(path, "kvm_stat-once", exits, total, per_second={k: float(v) for k, v in d_exits.items()},
                     lines=len(lines))


# -- the model's exits in the tools' formats -------------------------------------------------------
class ExitTimes:
    """A trace sink that keeps, per exit reason, what ``perf kvm stat``
    keeps per event (tools/perf/util/stat.c ``update_stats``: count, mean and
    M2 by Welford's method, min, max) and the total time: from the exit to the
    vCPU's next VM entry.  For an exit that is the model's ``cost_ns``; for
    HLT it is the whole time the guest was halted (from ``start_ns``, when it
    went idle, to its re-entry), as perf measures kvm_exit → kvm_entry."""

    def __init__(self) -> None:
        self.stats: dict[str, list[float]] = {}    # reason -> [n, mean, M2, min, max, total]

    def reset(self) -> None:
        self.stats.clear()

    def __call__(self, ev) -> None:
        if ev.kind != "exit":
            return
        d = ev.data
        cost = d["cost_ns"]
        dur = cost
        if d["reason"] == "HLT" and d.get("start_ns") is not None:
            dur = max(cost, ev.t - max(0, d["start_ns"]) + cost)
        s = self.stats.get(d["reason"])
        if s is None:
            s = self.stats[d["reason"]] = [0, 0.0, 0.0, dur, dur, 0]
        s[0] += 1
        delta = dur - s[1]
        s[1] += delta / s[0]
        s[2] += delta * (dur - s[1])
        s[3] = min(s[3], dur)
        s[4] = max(s[4], dur)
        s[5] += dur


def format_perf_kvm(times: ExitTimes) -> str:
    """The model's exits as ``perf kvm stat report --stdio`` prints a
    system-wide recording (tools/perf/builtin-kvm.c ``print_result``, sorted
    by samples, the default ``--key sample``)."""
    out = ["", "", "Analyze events for all VMs, all VCPUs:", ""]
    name_len = 40                           # KVM_EVENT_NAME_LEN (util/kvm-stat.h)
    out.append(f"{'VM-EXIT':>{name_len}} {'Samples':>10} {'Samples%':>9} {'Time%':>9} {'Min Time':>11} "
               f"{'Max Time':>11} {'Avg time':>16} ")
    out.append("")
    st = times.stats
    total_count = sum(int(s[0]) for s in st.values())
    total_time = sum(s[5] for s in st.values())
    for name, s in sorted(st.items(), key=lambda kv: (-kv[1][0], kv[0])):
        n, mean, m2, mn, mx, t = s
        n = int(n)
        # stddev_stats(): the standard deviation of the mean; rel_stddev_stats(): as % of the mean
        sd = math.sqrt(m2 / (n - 1) / n) if n >= 2 else 0.0
        rel = 100.0 * sd / mean if mean else 0.0
        out.append(f"{name:>{name_len}} {n:10d} {n / total_count * 100:8.2f}% {t / total_time * 100:8.2f}% "
                   f"{mn / 1000:9.2f}us {mx / 1000:9.2f}us {t / n / 1000:9.2f}us ( +-{rel:7.2f}% )")
    out.append("")
    out.append(f"Total Samples:{total_count}, Total events handled time:{total_time / 1000:.2f}us.")
    out.append("")
    return "\n".join(out) + "\n"


def format_kvm_stat(summary: dict[str, Any]) -> str:
    """The model's exits as ``kvm_stat --once`` prints them (tools/kvm/kvm_stat
    ``batch()``: ``'%-42s%10d%10d' % (field, total, delta)``, fields sorted as
    kvm_stat sorts its keys).  The total is the run's; the delta column, which
    kvm_stat measures over one second, is the model's exits per second of
    virtual time.  The fields are the tracepoints the model knows: kvm_entry
    (one per exit), kvm_exit and its kvm_exit(REASON) children for every
    reason of kvm_stat's VMX table, kvm_userspace_exit."""
    ex = summary["exits"]
    secs = summary.get("virtual_time_ns", 0) / 1e9
    by = ex["by_reason"]
    fields: dict[str, int] = {"kvm_entry": ex["total"], "kvm_exit": ex["total"],
                              "kvm_userspace_exit": ex["userspace"]}
    for r in KVM_STAT_VMX:
        fields[f"kvm_exit({r})"] = by.get(r, 0)
    out = []
    # (kvm_stat sorts its internal keys, "kvm_exit(R) kvm_exit" for a child: the same order)
    for f in sorted(fields):
        v = fields[f]
        out.append("%-42s%10d%10d" % (f, v, round(v / secs) if secs else 0))
    return "\n".join(out) + "\n"


# -- real next to the model ----------------------------------------------------------------------
def compare_real(real: RealTrace, summary: dict[str, Any], packets: int | None,
                 seconds: float | None = None) -> dict[str, Any]:
    """Rows of exits by reason, real next to model: per packet when the user
    said how many packets the recording covered, else per second (the
    model's: per second of virtual time)."""
    by = summary["exits"]["by_reason"]
    if packets:
        unit = "per packet"
        delivered = summary["packets"]["delivered"] or 1
        real_rate = {k: v / packets for k, v in real.exits.items()}
        real_total: float | None = real.total / packets
        model_rate = {k: v / delivered for k, v in by.items()}
        model_total = summary["exits"]["total"] / delivered
    else:
        unit = "per second"
        r = real.rate(seconds)
        real_rate, real_total = (r if r else ({}, None))
        secs = summary.get("virtual_time_ns", 0) / 1e9
        model_rate = {k: v / secs for k, v in by.items()} if secs else {}
        model_total = summary["exits"]["total"] / secs if secs else 0.0
    rate_known = bool(packets) or real_total is not None
    names = sorted(set(real.exits) | set(by), key=lambda k: (-(real.exits.get(k, 0)), -by.get(k, 0), k))
    rows = []
    for k in names:
        if not real.exits.get(k) and not by.get(k):
            continue
        rows.append({"reason": k, "number": VMX_EXIT_REASONS[k],
                     "real_count": real.exits.get(k, 0), "model_count": by.get(k, 0),
                     "real": real_rate.get(k, 0.0) if rate_known else None,
                     "model": model_rate.get(k, 0.0)})
    other = real.total - sum(real.exits.values())
    return {"unit": unit, "packets": packets, "rows": rows,
            "real_other": other,
            "real_total": real_total if rate_known else None, "model_total": model_total,
            "real_total_count": real.total, "model_total_count": summary["exits"]["total"]}


def _num(v: float | None) -> str:
    if v is None:
        return "–"
    if v == 0:
        return "0"
    if abs(v) >= 100:
        return f"{v:,.0f}"
    if abs(v) >= 10:
        return f"{v:,.1f}"
    return f"{v:,.3f}"


def render(real: RealTrace, summary: dict[str, Any], cmp: dict[str, Any], fmt: str, label: str) -> str:
    """The comparison as text: table, csv, json or markdown."""
    import json as _json

    rows = cmp["rows"]
    unit = cmp["unit"]
    if fmt == "json":
        return _json.dumps({"real": {"file": real.path, "format": real.label, "seconds": real.seconds,
                                     "exits_total": real.total, "exits_by_reason": real.exits,
                                     "notes": real.notes},
                            "model": {"preset": summary["preset"], "technique": summary["technique"],
                                      "seed": summary["seed"], "packets": summary["packets"],
                                      "virtual_time_ns": summary["virtual_time_ns"]},
                            **cmp}, indent=2) + "\n"
    if fmt == "csv":
        u = "per_packet" if unit == "per packet" else "per_second"
        out = [f"reason,number,real_count,model_count,real_{u},model_{u}"]
        for r in rows:
            out.append(f"{r['reason']},{r['number']},{r['real_count']},{r['model_count']},"
                       f"{'' if r['real'] is None else round(r['real'], 6)},{round(r['model'], 6)}")
        rt = cmp["real_total"]
        out.append(f"total,,{cmp['real_total_count']},{cmp['model_total_count']},"
                   f"{'' if rt is None else round(rt, 6)},{round(cmp['model_total'], 6)}")
        return "\n".join(out) + "\n"
    secs = f", {real.seconds:,.3f} s" if real.seconds else ""
    head_real = f"real:  {real.path} ({real.label}{secs}, {real.total:,} exits)"
    vt = summary["virtual_time_ns"] / 1000
    head_model = (f"model: {label} · preset {summary['preset']} · seed {summary['seed']} "
                  f"({summary['packets']['delivered']:,} packets, {vt:,.1f} µs of virtual time)")
    per = f"exits {unit}" + (f" (real: {cmp['packets']:,} packets as given by --packets)" if cmp["packets"] else
                            " (model: per second of virtual time)")
    table = [(r["reason"], str(r["number"]), _num(r["real"]), _num(r["model"])) for r in rows]
    if cmp["real_other"]:
        table.append(("(other)", "–", _num(cmp["real_other"] / cmp["packets"]) if cmp["packets"] else
                      (_num(cmp["real_other"] / real.seconds) if real.seconds else "–"), "–"))
    table.append(("total", "", _num(cmp["real_total"]), _num(cmp["model_total"])))
    heads = ("exit reason", "no.", "real", "model")
    if fmt == "markdown":
        out = [f"**{head_real}**  ", f"**{head_model}**", "", per, "",
               "| " + " | ".join(heads) + " |", "| --- | ---: | ---: | ---: |"]
        out += ["| " + " | ".join(c) + " |" for c in table]
        return "\n".join(out) + "\n"
    w = [max(len(h), *(len(c[i]) for c in table)) for i, h in enumerate(heads)]
    out = [head_real, head_model, per, ""]
    fmt_row = lambda c: f"  {c[0]:<{w[0]}}  {c[1]:>{w[1]}}  {c[2]:>{w[2]}}  {c[3]:>{w[3]}}"  # noqa: E731
    out.append(fmt_row(heads))
    for i, c in enumerate(table):
        if i == len(table) - 1:
            out.append("  " + "-" * (sum(w) + 6))
        out.append(fmt_row(c))
    if real.total and not cmp["packets"] and cmp["real_total"] is None:
        out.append("")
        out.append("  (the file does not say how long it covers: pass --packets N, or --seconds S)")
    for n in real.notes:
        out.append(f"  note: {n}")
    return "\n".join(out) + "\n"
