"""The command line: the app by default, and headless subcommands.

Every bad input ends in one line on stderr naming what was wrong and what is
allowed, and exit status 2 — never a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import sys
import tomllib
from pathlib import Path
from typing import Any, Sequence

from . import __version__

EXIT_BAD_INPUT = 2

#: the compare table's short names of the host profiles (sim.vmm.HOST_PROFILES)
HOST_SHORT = {"none": "no APICv", "apicv": "APICv", "apicv+pi": "APICv+PI"}


class CliError(Exception):
    """Bad input: the message is the one line to print."""


# -- argument types ------------------------------------------------------------
def _int_range(lo: int, hi: int, what: str):
    def conv(s: str) -> int:
        try:
            v = int(s, 0)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{what} must be an integer {lo}..{hi}, got {s!r}") from None
        if not lo <= v <= hi:
            raise argparse.ArgumentTypeError(f"{what} must be {lo}..{hi}, got {v}")
        return v
    return conv


def _speed(s: str) -> float:
    try:
        v = float(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"speed must be a number 0.001..1000 (×1 = 1 µs per wall ms), got {s!r}") from None
    if not 0.001 <= v <= 1000:
        raise argparse.ArgumentTypeError(f"speed must be 0.001..1000 (×1 = 1 µs per wall ms), got {v:g}")
    return v


#: --until: the units it takes (ns per unit) and the longest run it allows
TIME_UNITS = {"ns": 1, "us": 1_000, "µs": 1_000, "μs": 1_000, "ms": 1_000_000, "s": 1_000_000_000}
MAX_UNTIL_NS = 60 * 1_000_000_000
UNTIL_FORMS = "nanoseconds (750000) or a number with ns, us (µs), ms or s: 750us, 2ms, 1.5s"


def parse_time(s: str) -> int:
    """A virtual time as ``--until`` takes it, in ns: ``750us``, ``2ms``,
    ``1.5s``, ``100ns`` or a bare number of nanoseconds."""
    text = s.strip().replace(" ", "").replace("_", "").replace(",", "")
    num, unit = text, "ns"
    for u in sorted(TIME_UNITS, key=len, reverse=True):
        if text.lower().endswith(u) and text[:-len(u)]:
            num, unit = text[:-len(u)], u
            break
    try:
        v = float(num)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{s!r} is not a time; give {UNTIL_FORMS}") from None
    ns = v * TIME_UNITS[unit]
    if not ns > 0 or ns != ns:
        raise argparse.ArgumentTypeError(f"{s!r}: the time must be more than 0; give {UNTIL_FORMS}")
    if ns > MAX_UNTIL_NS:
        raise argparse.ArgumentTypeError(f"{s!r}: at most {MAX_UNTIL_NS // 10**9} s of virtual time; "
                                         f"give {UNTIL_FORMS}")
    return max(1, round(ns))


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit 2
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def _add_app_options(p: argparse.ArgumentParser) -> None:
    """The app's options: the bare `iovtui` command and `serve` share them."""
    p.add_argument("--preset", default="steady-stream", help="preset name or TOML file (default steady-stream)")
    p.add_argument("--technique", default=None,
                   help="emulation | virtio | sriov (default: the preset's technique, else virtio)")
    p.add_argument("--seed", type=_int_range(0, 2**32 - 1, "seed"), default=1, help="random seed (default 1)")
    p.add_argument("--speed", type=_speed, default=1.0, help="×1 = 1 µs of virtual time per wall-clock ms")
    p.add_argument("--theme", choices=("dark", "light"), default="dark", help="colour theme (t switches it)")
    p.add_argument("--palette", choices=("default", "colorblind"), default="default",
                   help="colorblind: the Okabe–Ito colours (every state also has a glyph or word)")
    p.add_argument("--presenter", action="store_true",
                   help="for projectors: one pane at a time, high contrast, bold")
    p.add_argument("--predict", action="store_true", help="start in predict-then-reveal mode (g)")


def look_args(args: argparse.Namespace) -> list[str]:
    """The app's look options as command-line words (for `serve`)."""
    out = ["--theme", args.theme, "--palette", args.palette]
    return out + ["--presenter"] * bool(args.presenter) + ["--predict"] * bool(args.predict)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="iovtui", description="How a packet reaches a VM: device emulation, virtio, SR-IOV.")
    p.add_argument("--version", action="version", version=f"iovtui {__version__}")
    _add_app_options(p)
    p.add_argument("--real", metavar="FILE", default=None,
                   help="a real host's exits (perf kvm stat report, trace-cmd report, kvm_stat --log …) "
                        "to show next to the model's in the compare view, which opens on it")
    p.add_argument("--real-packets", type=_int_range(1, 10**12, "--real-packets"), default=None, metavar="N",
                   help="packets the --real recording covered: exits per packet (default per second)")
    sub = p.add_subparsers(dest="command", parser_class=_Parser, metavar="COMMAND")

    r = sub.add_parser("run", help="run a preset headless and print the results",
                       description="Run a preset headless and print the results. The run ends when every "
                                   "offered packet (--packets, or the preset's traffic.count) is delivered or "
                                   "dropped, or at --until, whichever comes first.")
    r.add_argument("--preset", default="steady-stream", help="preset name or TOML file")
    r.add_argument("--technique", default=None,
                   help="emulation | virtio | sriov (default: the preset's technique, else virtio)")
    r.add_argument("--packets", type=_int_range(1, 10_000_000, "packets"), default=None,
                   help="packets to offer (default: the preset's traffic.count)")
    r.add_argument("--until", type=parse_time, default=None, metavar="TIME",
                   help="stop at this virtual time (750us, 2ms, 1.5s, or nanoseconds), or when the "
                        "packets are done, whichever comes first; the summary, --trace and --dump-ram "
                        "are that instant's (in_flight: packets still on their way)")
    r.add_argument("--seed", type=_int_range(0, 2**32 - 1, "seed"), default=1)
    r.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help='override a preset key, e.g. --set virtio.vhost=true (TOML value)')
    r.add_argument("--json", action="store_true", help="print one JSON object")
    r.add_argument("--trace", metavar="FILE.jsonl", help="write every event as JSON lines")
    r.add_argument("--dump-ram", metavar="DIR", help="write DIR/<vm>.ram and DIR/layout.json")
    r.add_argument("--pcap", metavar="FILE.pcapng",
                   help="write the frames as a pcapng capture for Wireshark (the wire and each VM's eth0)")
    r.add_argument("--force", action="store_true", help="overwrite existing --trace / --dump-ram / --pcap files")
    r.add_argument("--format", choices=("kvm_stat", "perf-kvm"), default=None,
                   help="print the exits as 'kvm_stat --once' or 'perf kvm stat report' print theirs "
                        "(to diff against a real host's; 'iovtui real' reads them back)")

    rl = sub.add_parser("real", help="a real KVM host's exits (perf kvm stat, trace-cmd, kvm_stat) next to the model's",
                        description="Read exits a real KVM host recorded (perf kvm stat report, trace-cmd report / "
                                    "perf script of kvm:kvm_exit, kvm_stat --log / --csv / --once; recognised "
                                    "from the file) and print them by reason next to the model's, per packet "
                                    "with --packets, else per second (the model's: of virtual time).")
    rl.add_argument("file", metavar="FILE")
    rl.add_argument("--preset", default="steady-stream", help="preset name or TOML file (default steady-stream)")
    rl.add_argument("--technique", default=None,
                    help="emulation | virtio | sriov (default: the preset's technique, else virtio)")
    rl.add_argument("--packets", type=_int_range(1, 10_000_000, "packets"), default=None,
                    help="packets the recording covered (e.g. from 'ip -s link'): exits per packet, and the "
                         "model runs that many; default: exits per second")
    rl.add_argument("--seconds", type=float, default=None, metavar="S",
                    help="how long the recording covered, for a file that does not say (perf kvm stat report)")
    rl.add_argument("--seed", type=_int_range(0, 2**32 - 1, "seed"), default=1)
    rl.add_argument("--format", choices=("table", "csv", "json", "markdown"), default="table")

    c = sub.add_parser("compare", help="run one preset through every technique, side by side",
                       description="Run the same seeded traffic through emulation, virtio (vhost off and on) "
                                   "and SR-IOV, headless, under each host profile (no APICv, APICv, APICv + "
                                   "VT-d posted interrupts), and print one row each.")
    c.add_argument("--preset", default="steady-stream", help="preset name or TOML file (default steady-stream)")
    c.add_argument("--packets", type=_int_range(1, 10_000_000, "packets"), default=None,
                   help="packets per variant (default: the preset's traffic.count)")
    c.add_argument("--seed", type=_int_range(0, 2**32 - 1, "seed"), default=1, help="random seed (default 1)")
    c.add_argument("--format", choices=("table", "json", "csv", "markdown"), default="table",
                   help="table (rich), json, csv (one column per exit reason) or markdown")
    from .sim.vmm import HOST_PROFILES      # the choices of sim.compare.HOST_CHOICES

    c.add_argument("--virtio-rings", action="store_true",
                   help="virtio with the split ring beside virtio with the packed ring (vhost off and on), same "
                        "seed: kicks and interrupts per packet and the distinct 64-byte lines of ring memory "
                        "each writes per packet (host profile: the preset's unless --host says)")
    c.add_argument("--host", choices=("all", "preset", *HOST_PROFILES), default=None,
                   help="host profile for every technique: all (each variant under none, apicv and apicv+pi; "
                        "the default; with --virtio-rings: preset), preset (the preset's own [host]), none (no APICv), apicv, apicv+pi "
                        "(APICv + VT-d posted interrupts: changes SR-IOV only); x2APIC stays the preset's")

    sw = sub.add_parser("sweep", help="each technique across offered loads: the curves papers draw",
                        description="Run each technique on one preset at several offered loads (traffic.rate "
                                    "in packets/s, the total over every VM), one seeded run per point, in "
                                    "parallel processes, and print per point: delivered/offered, exits per "
                                    "packet by reason, interrupts, kicks and copies per packet, host CPU per "
                                    "packet, p50/p99 latency, drops. A point is exactly 'iovtui run "
                                    "--set traffic.rate=R' (the JSON's \"set\" says what was set).")
    sw.add_argument("--preset", default="steady-stream", help="preset name or TOML file (default steady-stream)")
    sw.add_argument("--techniques", default="emulation,virtio,sriov", metavar="LIST",
                    help="comma-separated: emulation, virtio, sriov (default all three)")
    sw.add_argument("--rates", default=None, metavar="LIST",
                    help="offered loads, comma-separated packets/s: 200,2k,20k,200k,1M (the default)")
    sw.add_argument("--from", dest="rate_from", default=None, metavar="RATE",
                    help="lowest load of a log-spaced range (with --to and --points)")
    sw.add_argument("--to", dest="rate_to", default=None, metavar="RATE", help="highest load of the range")
    sw.add_argument("--points", type=_int_range(2, 50, "--points"), default=None,
                    help="points of the --from/--to range, 2..50 (default 12)")
    sw.add_argument("--packets", type=_int_range(1, 10_000_000, "packets"), default=None,
                    help="packets per point (default: the preset's traffic.count)")
    sw.add_argument("--seed", type=_int_range(0, 2**32 - 1, "seed"), default=1, help="random seed (default 1)")
    sw.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                    help="override a preset key for every point, as run --set does")
    sw.add_argument("--format", choices=("table", "csv", "json", "markdown"), default="table")
    sw.add_argument("--jobs", type=_int_range(1, 256, "--jobs"), default=None,
                    help="worker processes (default: one per core; 1 runs in this process); "
                         "the output is the same whatever the number")
    sw.add_argument("--svg", metavar="FILE.svg", default=None,
                    help="also write the chart (log-scale load on x, --measure on y) as an SVG picture")
    sw.add_argument("--measure", choices=("exits", "interrupts", "cpu", "p50", "p99", "throughput"),
                    default="exits", help="what the --svg chart shows on y (default exits per packet)")
    sw.add_argument("--force", action="store_true", help="overwrite an existing --svg file")

    rp = sub.add_parser("replay", help="reopen the app at the run a --trace file recorded")
    rp.add_argument("file", metavar="FILE.jsonl")
    rp.add_argument("--at", type=_int_range(1, 2**63 - 1, "--at"), default=None, metavar="SEQ",
                    help="open on the event with this seq (the trace's \"seq\" field), paused; "
                         "default: the start of the run")
    rp.add_argument("--speed", type=_speed, default=1.0)
    for opt in ("--theme", "--palette", "--presenter"):
        act = next(a for a in p._actions if opt in a.option_strings)
        rp._add_action(act)

    pr = sub.add_parser("presets", help="list presets, or validate a preset file")
    pr.add_argument("--validate", metavar="FILE", help="check a preset file and exit")

    sv = sub.add_parser("serve", help="serve the app in a web browser (needs the serve extra: textual-serve)")
    sv.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1, loopback only)")
    sv.add_argument("--port", type=_int_range(1, 65535, "port"), default=8000, help="TCP port (default 8000)")
    sv.add_argument("--public-url", metavar="URL", default=None,
                    help="the address browsers use to reach the server (default http://HOST:PORT)")
    _add_app_options(sv)

    b = sub.add_parser("bench", help="measure speed, first frame, CPU and memory against their aims")
    b.add_argument("--quick", action="store_true", help="small runs: seconds, not minutes (figures are rough)")
    b.add_argument("--json", action="store_true", help="print one JSON object")
    return p


# -- shared helpers --------------------------------------------------------------
def _stderr_once():
    """An ``on_warning`` callback for list_presets / load_preset: each line
    once on stderr (e.g. an unreadable user presets directory, skipped)."""
    said: set[str] = set()

    def warn(line: str) -> None:
        if line not in said:
            said.add(line)
            print(f"iovtui: warning: {line}", file=sys.stderr)
    return warn


_WARN_ONCE = _stderr_once()


def _load(preset: str, overrides: Sequence[str] = (), on_warning=None):
    from .sim.preset import PresetError, load_preset

    try:
        p = load_preset(preset, on_warning=on_warning or _WARN_ONCE)
        sets = []
        for item in overrides:
            if "=" not in item or "." not in item.split("=", 1)[0]:
                raise CliError(f"--set {item!r}: expected SECTION.KEY=VALUE, e.g. virtio.vhost=true")
            key, val = item.split("=", 1)
            sec, k = key.split(".", 1)
            try:
                v = tomllib.loads(f"v = {val}")["v"]
            except tomllib.TOMLDecodeError:
                v = val  # a bare word: take it as a string
            if sec == "vm":
                raise CliError(f"--set {item}: [[vm]] tables cannot be set from the command line; "
                               "write a preset file")
            sets.append((item, sec, k, v))
        base_warnings = list(p.warnings)
        if len(sets) > 1:
            # all together first: keys that depend on each other (host.apicv and
            # host.vtd_posted_interrupts) may be set in any order
            together: dict[str, dict] = {}
            for _item, sec, k, v in sets:
                together.setdefault(sec, {})[k] = v
            try:
                return _warned(p.with_options(via="--set " + " --set ".join(i for i, *_ in sets), **together),
                               base_warnings, sets)
            except PresetError:
                pass                         # each on its own below, so the error names the one
        for item, sec, k, v in sets:
            p = p.with_options(via=f"--set {item}", **{sec: {k: v}})
        return _warned(p, base_warnings, sets)
    except PresetError as e:
        raise CliError(str(e)) from None


def _warned(p, file_warnings: list[str], sets) -> Any:
    """``p`` with its warnings said once each: the preset file's own, and
    one for each --set of a deprecated key (not the file's again under the
    name of an unrelated --set)."""
    import dataclasses

    lines = list(file_warnings)
    for item, sec, k, _v in sets:
        tail = f": {sec}.{k} is deprecated; "
        for w in p.warnings:
            if tail in w:
                lines.append(f"--set {item}{tail}{w.split(tail, 1)[1]}")
                break
    return dataclasses.replace(p, warnings=list(dict.fromkeys(lines)))


def _warn(preset) -> None:
    """Each of the preset's warnings (deprecated keys), once, on stderr."""
    for line in preset.warnings:
        print(f"iovtui: warning: {line}", file=sys.stderr)


def _check_technique(name: str) -> str:
    from .sim.paths import TECHNIQUES, available

    have = available()
    if name not in have:
        if name in TECHNIQUES:
            raise CliError(f"technique \"{name}\" is not built yet; available: {', '.join(have)}")
        raise CliError(f"unknown technique \"{name}\"; available: {', '.join(have)}")
    return name


def _new_file(path: str, force: bool, what: str) -> Path:
    p = Path(path)
    if p.exists() and not force:
        raise CliError(f"{what} {path} already exists; pass --force to overwrite it")
    if p.parent and not p.parent.exists():
        raise CliError(f"{what} {path}: directory {p.parent} does not exist")
    return p


#: before a run whose trace will be larger than this, say how large on stderr
BIG_TRACE_BYTES = 1 << 30
#: packets of the shorter of the two prefix runs that measure a trace's bytes per packet
TRACE_PREFIX_PACKETS = 2000


def _size(n: float) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:,.1f} {unit}"
    return f"{n:,.0f} B"


def estimate_trace_bytes(preset, tech: str, seed: int, packets: int, until_ns: int | None) -> int:
    """The size a ``--trace`` of this run will have, from two prefixes of the
    same run (n and 2n packets): the longer one's bytes, plus the rest of the
    packets at the rate of the packets between the two (a run's first
    packets, before its queues fill, can cost twice the bytes of the later
    ones); with ``until_ns``, at most the longer prefix's bytes per virtual ns
    times ``until_ns``."""
    from .sim.trace import SizeSink, Trace
    from .sim.world import Simulation

    def prefix(n: int) -> tuple[int, int]:
        tr = Trace()
        size = SizeSink()
        tr.add_sink(size)
        sim = Simulation(preset, tech, seed=seed, packets=n, trace=tr)
        sim.run(until_ns=until_ns)
        return size.bytes, sim.engine.now

    n = min(TRACE_PREFIX_PACKETS, max(1, packets // 2))
    a, _ = prefix(n)
    c, now = prefix(2 * n)
    est = c + max(0, c - a) / n * max(0, packets - 2 * n)
    if until_ns is not None and now:
        est = min(est, c * until_ns / now)
    return int(est)


def _umask() -> int:
    m = os.umask(0)
    os.umask(m)
    return m


class _Outputs:
    """The files a run writes, each under a temporary name in its own
    directory until the run has succeeded (then renamed into place with
    os.replace); on failure or Ctrl-C, :meth:`discard` removes the
    temporaries and every directory the command created."""

    def __init__(self) -> None:
        self.pending: list[tuple[Path, Path]] = []      # (temporary, final)
        self.created_dirs: list[Path] = []              # made by this command, outermost first
        self.dump_tmpdir: Path | None = None            # a new dump directory, under a temporary name

    def temp_for(self, final: Path) -> Path:
        import tempfile

        fd, name = tempfile.mkstemp(dir=final.parent, prefix=f".{final.name}.", suffix=".part")
        os.close(fd)
        tmp = Path(name)
        tmp.chmod(0o666 & ~_umask())         # as open() would have made it (mkstemp: 0600)
        self.pending.append((tmp, final))
        return tmp

    def make_dirs(self, d: Path) -> None:
        """Create ``d``'s missing parents (remembered, to remove on failure)."""
        missing = []
        for a in [d, *d.parents]:
            if a.exists():
                break
            missing.append(a)
        for a in reversed(missing):
            a.mkdir()
            self.created_dirs.append(a)

    def commit(self) -> None:
        for tmp, final in self.pending:
            os.replace(tmp, final)
        self.pending.clear()
        self.created_dirs.clear()

    def discard(self) -> None:
        import shutil

        for tmp, _final in self.pending:
            try:
                if tmp.is_dir():
                    shutil.rmtree(tmp)
                else:
                    tmp.unlink()
            except OSError:
                pass
        self.pending.clear()
        for d in reversed(self.created_dirs):
            try:
                d.rmdir()
            except OSError:
                pass
        self.created_dirs.clear()


# -- subcommands ---------------------------------------------------------------------
def cmd_run(args: argparse.Namespace) -> int:
    out = _Outputs()
    try:
        return _run(args, out)
    except BaseException:
        out.discard()        # a failed or interrupted run leaves nothing behind
        raise


def _run(args: argparse.Namespace, out: _Outputs) -> int:
    from .sim.capture import CaptureError
    from .sim.preset import PresetError
    from .sim.trace import JsonlSink, Trace
    from .sim.world import Simulation

    if args.json and args.format:
        raise CliError(f"--json and --format {args.format} are two outputs; give one")
    preset = _load(args.preset, args.set)
    tech = _check_technique(args.technique or preset.technique or "virtio")
    _warn(preset)
    trace = Trace()
    times = None
    if args.format == "perf-kvm":             # each exit's time, as perf kvm stat measures it
        from .real import ExitTimes

        times = ExitTimes()
        trace.add_sink(times)
    fh = sink = None
    tpath = None
    if args.trace:
        tpath = _new_file(args.trace, args.force, "trace file")
    dump_dir = None
    if args.dump_ram:
        dump_dir = Path(args.dump_ram)
        if dump_dir.exists() and not dump_dir.is_dir():
            raise CliError(f"--dump-ram {args.dump_ram}: exists and is not a directory")
        if dump_dir.is_dir():
            if not os.access(dump_dir, os.W_OK):
                raise CliError(f"--dump-ram {args.dump_ram}: directory is not writable")
            clash = [n for n in ["layout.json"] + [f"{v.name}.ram" for v in preset.vms]
                     if (dump_dir / n).exists()]
            if clash and not args.force:
                raise CliError(f"--dump-ram {args.dump_ram}: {clash[0]} already exists; pass --force to overwrite")
        else:
            # a new directory: made under a temporary name beside it, renamed on success
            try:
                out.make_dirs(dump_dir.parent)
                import tempfile

                out.dump_tmpdir = Path(tempfile.mkdtemp(dir=dump_dir.parent, prefix=f".{dump_dir.name}.",
                                                        suffix=".part"))
                out.dump_tmpdir.chmod(0o777 & ~_umask())      # as mkdir would have (mkdtemp: 0700)
                out.pending.append((out.dump_tmpdir, dump_dir))
            except OSError as e:
                raise CliError(f"--dump-ram {args.dump_ram}: cannot create directory: {e.strerror}") from None
    cap_fh = _open_capture_file(args, out) if args.pcap else None
    if tpath is not None:
        packets = args.packets if args.packets is not None else preset.traffic["count"]
        if packets > BIG_TRACE_BYTES // 20_000:     # no technique writes 20 kB a packet
            try:
                est = estimate_trace_bytes(preset, tech, args.seed, packets, args.until)
            except PresetError as e:
                raise CliError(str(e)) from None
            if est > BIG_TRACE_BYTES:
                print(f"iovtui: the trace {args.trace} will be about {_size(est)} "
                      f"({packets:,} packets × {est / packets:,.0f} B)", file=sys.stderr)
        # a regular file (new or --force) is written under a temporary name;
        # a device or pipe (/dev/null, a FIFO) is written in place
        in_place = tpath.exists() and not tpath.is_file()
        try:
            fh = open(tpath if in_place else out.temp_for(tpath), "w", encoding="utf-8")
        except OSError as e:
            raise CliError(f"trace file {args.trace}: cannot write: {e.strerror}") from None
        src, digest = _preset_file(preset.source)
        sink = JsonlSink(fh, {"preset": preset.name, "preset_source": src, "preset_sha256": digest,
                              "seed": args.seed, "technique": tech, "packets": packets,
                              "overrides": list(args.set),
                              **({"until_ns": args.until} if args.until else {})})
        trace.add_sink(sink)
    try:
        try:
            try:
                sim = Simulation(preset, tech, seed=args.seed, packets=args.packets, trace=trace)
            except PresetError as e:
                raise CliError(str(e)) from None
            if cap_fh is not None:
                _attach_capture(sim, cap_fh, args, tech)
            if times is not None:
                times.reset()                 # the drivers' set-up is not counted (Metrics.reset_setup)
            sim.run(until_ns=args.until)
            if sink is not None:
                sink.end(sim.engine.now, complete=sim.complete)
            if cap_fh is not None:
                _close_capture(cap_fh)
        finally:
            if fh is not None:
                fh.close()
            if cap_fh is not None and not cap_fh.closed:
                with contextlib.suppress(OSError):
                    cap_fh.close()
    except CaptureError as e:
        raise CliError(f"capture file {args.pcap}: cannot write: {e}") from None
    except OSError as e:
        if fh is None:
            raise
        raise CliError(f"trace file {args.trace}: cannot write: {e.strerror or e}") from None
    except MemoryError as e:
        raise CliError(str(e)) from None
    summary = sim.summary()
    if args.until is not None:
        # where the run ended: at --until, or complete before it
        summary["until_ns"] = args.until
        summary["complete"] = sim.complete
    if dump_dir is not None:
        try:
            write_ram_dump(sim, dump_dir, out)
        except OSError as e:
            raise CliError(f"--dump-ram {args.dump_ram}: cannot write: {e.strerror or e}") from None
    try:
        out.commit()
    except OSError as e:
        raise CliError(f"cannot put the output in place: {e.strerror or e}") from None
    if args.json:
        print(json.dumps(summary, indent=2))
    elif args.format == "kvm_stat":
        from .real import format_kvm_stat

        sys.stdout.write(format_kvm_stat(summary))
    elif times is not None:
        from .real import format_perf_kvm

        sys.stdout.write(format_perf_kvm(times))
    else:
        print(human_summary(summary, sim.technique.label()))
    return 0


def _open_capture_file(args: argparse.Namespace, out: _Outputs):
    """The --pcap file, opened as --trace's is: refused if it exists without
    --force, a regular file written under a temporary name (renamed on
    success), a device or pipe written in place."""
    cpath = _new_file(args.pcap, args.force, "capture file")
    in_place = cpath.exists() and not cpath.is_file()
    try:
        return open(cpath if in_place else out.temp_for(cpath), "wb")
    except OSError as e:
        raise CliError(f"capture file {args.pcap}: cannot write: {e.strerror}") from None


def _attach_capture(sim, fh, args: argparse.Namespace, tech: str) -> None:
    from .capture import open_capture

    # the command that makes this run again (plain numbers: --until in ns)
    until = f" --until {args.until}" if args.until is not None else ""
    sets = "".join(f" --set {s}" for s in args.set)
    comment = (f"iovtui run --preset {args.preset} --technique {tech} --seed {args.seed} "
               f"--packets {sim.packets_target}{until}{sets}; timestamps are the model's virtual time (ns from 0)")
    open_capture(sim, fh, comment)


def _close_capture(fh) -> None:
    from .sim.capture import CaptureError

    try:
        fh.close()
    except OSError as e:
        raise CaptureError(e.strerror or str(e)) from None


def cmd_real(args: argparse.Namespace) -> int:
    from . import real
    from .sim.preset import PresetError
    from .sim.world import Simulation

    if args.seconds is not None and not 0 < args.seconds < 1e9:
        raise CliError(f"--seconds must be more than 0, got {args.seconds:g}")
    try:
        trace = real.read_real(args.file)
    except real.RealTraceError as e:
        raise CliError(str(e)) from None
    preset = _load(args.preset)
    tech = _check_technique(args.technique or preset.technique or "virtio")
    _warn(preset)
    try:
        sim = Simulation(preset, tech, seed=args.seed, packets=args.packets)
    except PresetError as e:
        raise CliError(str(e)) from None
    sim.run()
    summary = sim.summary()
    cmp = real.compare_real(trace, summary, args.packets, args.seconds)
    sys.stdout.write(real.render(trace, summary, cmp, args.format, sim.technique.label()))
    return 0


def write_ram_dump(sim, d: Path, out: _Outputs | None = None) -> None:
    """``d/<vm>.ram`` and ``d/layout.json``; with ``out``, each written under a
    temporary name (or into ``out``'s new temporary directory) for
    ``out.commit`` to put in place."""
    # the mapping itself, not a bytes copy: pages the run never wrote read as the
    # kernel's zero page and cost nothing (126 VMs × 16 MiB copied would be 2 GiB)
    files = [(f"{vm.name}.ram", vm.mem.ram) for vm in sim.vms]
    layout = {
        "vms": [{"name": vm.name, "mac": vm.mac, "ram_bytes": vm.mem.size} for vm in sim.vms],
        "queues": [q.to_json() for q in sim.technique.queues()],
    }
    files.append(("layout.json", (json.dumps(layout, indent=2) + "\n").encode("utf-8")))
    for name, data in files:
        if out is None:
            (d / name).write_bytes(data)
        elif out.dump_tmpdir is not None:
            (out.dump_tmpdir / name).write_bytes(data)
        else:
            out.temp_for(d / name).write_bytes(data)


def human_summary(s: dict[str, Any], label: str) -> str:
    pk = s["packets"]
    ex = s["exits"]
    reasons = ", ".join(f"{k} {v}" for k, v in sorted(ex["by_reason"].items(), key=lambda kv: -kv[1])) or "none"
    lat = s["latency_ns"]
    io = s["iommu"]
    lines = [
        f"{label} · preset {s['preset']} · seed {s['seed']}",
        f"  packets     offered {pk['offered']:,}  delivered {pk['delivered']:,}  dropped {pk['dropped']:,}"
        + (f"  to host {pk['to_host']:,}" if pk.get("to_host") else ""),
        f"  VM exits    {ex['total']:,} ({ex['per_packet']:.3f} per packet): {reasons}",
        f"  interrupts  injected {s['interrupts']['injected']:,}  posted {s['interrupts']['posted']:,}",
        f"  copies      {s['copies_per_packet']:.2f} per packet",
        f"  throughput  {s['throughput_gbps']:.2f} Gb/s   latency p50 {lat['p50'] / 1000:,.2f} µs  p99 {lat['p99'] / 1000:,.2f} µs",
    ]
    if io["translations"] or io["faults"]:
        lines.append(f"  IOMMU       {io['translations']:,} translations, IOTLB hits {io['iotlb_hits']:,} "
                     f"misses {io['iotlb_misses']:,}, faults {io['faults']:,}")
    if s.get("drops_by_reason"):
        lines.append("  drops       " + "; ".join(f"{k}: {v}" for k, v in s["drops_by_reason"].items()))
    if "until_ns" in s:
        t = s["virtual_time_ns"] / 1000
        how = "complete" if s["complete"] else f"stopped by --until, {s['in_flight']:,} in flight"
        lines.append(f"  ended       t = {t:,.3f} µs ({how})")
    return "\n".join(lines)


COMPARE_COLUMNS = ("variant", "technique", "host", "exits_per_packet", "top_exits", "interrupts_injected",
                   "interrupts_posted", "interrupts_host", "copies_per_packet", "cpu_ns_per_packet",
                   "throughput_gbps", "p50_ns", "p99_ns", "iotlb_hit_rate", "iommu_faults", "delivered", "dropped")


def compare_rows(preset, packets: int | None, seed: int, host: str = "all",
                 rings: bool = False) -> list[dict[str, Any]]:
    """One row per variant (sim.compare.COMPARE_VARIANTS; with ``rings`` the
    split and packed virtio variants, RING_VARIANTS) under each host profile
    ``host`` asks for (see sim.compare.compare_cases)."""
    from .sim.compare import compare_cases
    from .sim.world import Simulation

    rows = []
    for label, tech, p in compare_cases(preset, host, rings):
        sim = Simulation(p, tech, seed=seed, packets=packets)
        sim.run()
        d = sim.summary()
        io = d["iommu"]
        looked = io["iotlb_hits"] + io["iotlb_misses"]
        top = sorted(d["exits"]["by_reason"].items(), key=lambda kv: -kv[1])[:3]
        rows.append({
            "variant": label, "technique": tech,
            "host": sim.host.profile, "host_label": sim.host.label(), "host_options": d["host"],
            "exits_per_packet": d["exits"]["per_packet"],
            "exits_by_reason": d["exits"]["by_reason"],
            "top_exits": " ".join(f"{k}:{v}" for k, v in top) or "–",
            "interrupts_injected": d["interrupts"]["injected"],
            "interrupts_posted": d["interrupts"]["posted"],
            "interrupts_host": d["interrupts"]["host"],
            "copies_per_packet": d["copies_per_packet"],
            # vCPU and host-thread time per delivered packet: where the exits' cost shows
            "cpu_ns_per_packet": d["cpu_ns_per_packet"],
            "throughput_gbps": d["throughput_gbps"],
            "p50_ns": d["latency_ns"]["p50"], "p99_ns": d["latency_ns"]["p99"],
            "iotlb_hit_rate": round(io["iotlb_hits"] / looked, 4) if looked else None,
            "iommu_faults": io["faults"],
            "delivered": d["packets"]["delivered"], "dropped": d["packets"]["dropped"],
        })
        if rings:
            n = d["notifications"]
            per = sim.metrics.per_packet
            lines = d["ring_cache_lines"]
            rows[-1].update({
                "ring": lines["ring"], "queue_size": d["options"]["queue_size"],
                "kicks_per_packet": round(per(n["kicks"]), 4),
                "interrupts_per_packet": round(per(n["device_notify"]), 4),
                "kicks": n["kicks"], "kicks_suppressed": n["kicks_suppressed"],
                "device_notify": n["device_notify"], "device_notify_suppressed": n["device_notify_suppressed"],
                "ring_lines_per_packet": lines["per_packet"],
                "ring_lines_rx": lines["rx"], "ring_lines_tx": lines["tx"],
            })
    return rows


RING_COLUMNS = ("variant", "ring", "queue_size", "host", "kicks_per_packet", "interrupts_per_packet", "ring_lines_per_packet",
                "ring_lines_rx", "ring_lines_tx", "exits_per_packet", "cpu_ns_per_packet", "throughput_gbps",
                "delivered", "dropped")


def _print_ring_rows(rows: list[dict[str, Any]], fmt: str, title: str) -> None:
    """compare --virtio-rings in the table, csv or markdown format."""
    if fmt == "csv":
        from .csvout import spread_csv

        print(spread_csv(rows, RING_COLUMNS, []), end="")
        return
    heads = ("variant", "host", "slots", "kicks/pkt", "irqs/pkt", "ring lines/pkt", "lines rx/tx", "exits/pkt",
             "CPU µs/pkt", "Gb/s", "delivered")

    def cells(r):
        return (r["variant"], HOST_SHORT[r["host"]], f"{r['queue_size']:,}", f"{r['kicks_per_packet']:.3f}", f"{r['interrupts_per_packet']:.3f}",
                f"{r['ring_lines_per_packet']:.3f}", f"{r['ring_lines_rx']:,}/{r['ring_lines_tx']:,}",
                f"{r['exits_per_packet']:.3f}", f"{r['cpu_ns_per_packet'] / 1000:,.2f}", f"{r['throughput_gbps']:.2f}",
                f"{r['delivered']:,}" + (f" ✗{r['dropped']:,}" if r["dropped"] else ""))
    if fmt == "markdown":
        print(f"**{title}**\n")
        print("| " + " | ".join(heads) + " |")
        print("|" + "|".join(" --- " if i < 2 else " ---: " for i in range(len(heads))) + "|")
        for r in rows:
            print("| " + " | ".join(cells(r)) + " |")
        return
    from rich import box
    from rich.console import Console
    from rich.table import Table

    t = Table(title=title, title_justify="left", pad_edge=False, box=box.SIMPLE_HEAD, padding=(0, 1),
              collapse_padding=True)
    for i, h in enumerate(heads):
        t.add_column(h, justify="left" if i < 2 else "right", no_wrap=True)
    for i, r in enumerate(rows):
        if i and r["host"] != rows[i - 1]["host"]:
            t.add_section()
        t.add_row(*cells(r))
    from rich.measure import Measurement

    con = Console()
    need = Measurement.get(con, con.options.update(width=1000), t).maximum
    if con.width < need:   # wider than a narrow (or piped) console, as compare's own table
        con = Console(width=need)
    try:
        con.print(t)
        con.print("ring lines: the distinct 64-byte lines of ring memory written per delivered packet "
                  "(split: descriptor table, avail and used rings; packed: the descriptor ring and the two "
                  "event areas), one set per side (driver, device) per instant, summed", highlight=False)
    except BrokenPipeError:
        pass


def cmd_compare(args: argparse.Namespace) -> int:
    from .csvout import spread_csv
    from .sim.preset import PresetError

    preset = _load(args.preset)
    _warn(preset)
    host = args.host or ("preset" if args.virtio_rings else "all")
    from .sim.paths import available

    if args.virtio_rings and "virtio" not in available():
        raise CliError("compare --virtio-rings: the virtio technique is not built in this version")
    try:
        rows = compare_rows(preset, args.packets, args.seed, host, args.virtio_rings)
    except PresetError as e:           # a technique cannot lay out its rings in this guest RAM
        raise CliError(str(e)) from None
    if args.format == "json":
        print(json.dumps({"preset": preset.name, "seed": args.seed, "host": host,
                          **({"virtio_rings": True} if args.virtio_rings else {}), "results": rows}, indent=2))
        return 0
    if args.virtio_rings:
        profiles = list(dict.fromkeys(r["host_label"] for r in rows))
        _print_ring_rows(rows, args.format, f"{preset.name} · seed {args.seed} · virtio split ⇄ packed"
                         + (f" · {profiles[0]}" if len(profiles) == 1 else ""))
        return 0
    if args.format == "csv":
        # every exit reason any variant saw is a column of its own (0 where none)
        print(spread_csv(rows, [c for c in COMPARE_COLUMNS if c != "top_exits"],
                         [("exits_by_reason", "exits_", "")]), end="")
        return 0
    heads = ("variant", "host", "exits/pkt", "top exits", "irq inj", "irq posted", "host irq", "copies/pkt",
             "CPU µs/pkt", "Gb/s", "p50 µs", "p99 µs", "IOTLB hits", "DMAR faults", "delivered", "dropped")
    profiles = list(dict.fromkeys(r["host_label"] for r in rows))
    title = f"{preset.name} · seed {args.seed}" + (f" · {profiles[0]}" if len(profiles) == 1 else "")

    def cells(r):
        hit = "–" if r["iotlb_hit_rate"] is None else f"{100 * r['iotlb_hit_rate']:.1f} %"
        return (r["variant"], HOST_SHORT[r["host"]], f"{r['exits_per_packet']:.3f}", r["top_exits"],
                f"{r['interrupts_injected']:,}", f"{r['interrupts_posted']:,}", f"{r['interrupts_host']:,}",
                f"{r['copies_per_packet']:g}", f"{r['cpu_ns_per_packet'] / 1000:,.2f}",
                f"{r['throughput_gbps']:.2f}", f"{r['p50_ns'] / 1000:,.2f}", f"{r['p99_ns'] / 1000:,.2f}", hit,
                f"{r['iommu_faults']:,}", f"{r['delivered']:,}", f"{r['dropped']:,}")
    if args.format == "markdown":
        print(f"**{title}**\n")
        print("| " + " | ".join(heads) + " |")
        print("|" + "|".join(" --- " if i in (0, 1, 3) else " ---: " for i in range(len(heads))) + "|")
        for r in rows:
            print("| " + " | ".join(c.replace("|", "\\|") for c in cells(r)) + " |")
        return 0
    from rich.console import Console
    from rich.table import Table

    faults = any(r["iommu_faults"] for r in rows)
    several = len(profiles) > 1
    short = ("variant", *(("host",) if several else ()), "exits/pkt", "irq inj/posted/host", "copies",
             "CPU µs/pkt", "Gb/s", "p50/p99 µs", "IOTLB", *(("DMAR faults",) if faults else ()), "delivered ✗dropped")
    from rich import box

    t = Table(title=title, title_justify="left", pad_edge=False,
              box=box.SIMPLE_HEAD, padding=(0, 1), collapse_padding=True)
    for i, h in enumerate(short):
        t.add_column(h, justify="left" if i < (2 if several else 1) else "right", no_wrap=True)
    for i, r in enumerate(rows):
        c = cells(r)
        if several and i and r["host"] != rows[i - 1]["host"]:
            t.add_section()
        t.add_row(c[0], *((c[1],) if several else ()), c[2], f"{c[4]}/{c[5]}/{c[6]}", c[7], c[8], c[9],
                  f"{c[10]}/{c[11]}", c[12], *((c[13],) if faults else ()),
                  f"{c[14]}" + (f" ✗{c[15]}" if r["dropped"] else ""))
    from rich.measure import Measurement

    class _Console(Console):
        def on_broken_pipe(self) -> None:    # `| head`: quietly, exit 0 as every command does (main)
            self.quiet = True
            raise BrokenPipeError

    con = _Console()
    need = Measurement.get(con, con.options.update(width=1000), t).maximum
    if con.width < need:   # a comparison needs its columns: wider than a narrow (or piped) console
        con = _Console(width=need)
    con.print(t)
    if several:
        con.print("hosts: " + " | ".join(label.removeprefix("host: ") for label in profiles), highlight=False)
    con.print("exits by reason:")
    for r in rows:
        who = f"{r['variant']} · {HOST_SHORT[r['host']]}" if several else r["variant"]
        con.print(f"  {who:<{24 if several else 13}} {r['top_exits']}", highlight=False)
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from .sim import sweep as sw
    from .sim.preset import PresetError

    try:
        techs = [t.strip() for t in args.techniques.split(",") if t.strip()]
        allowed = ", ".join(sw.SWEEP_TECHNIQUES)
        if not techs:
            raise CliError(f"--techniques is empty; give some of {allowed}")
        for t in techs:
            if t not in sw.SWEEP_TECHNIQUES:
                raise CliError(f"--techniques: unknown technique \"{t}\"; allowed: {allowed}")
            _check_technique(t)
        if len(set(techs)) != len(techs):
            raise CliError("--techniques names a technique twice; give each once")
        ranged = args.rate_from is not None or args.rate_to is not None or args.points is not None
        if args.rates is not None and ranged:
            raise CliError("--rates and --from/--to/--points are two ways to give the loads; give one")
        if ranged:
            if args.rate_from is None or args.rate_to is None:
                raise CliError("--from and --to go together (e.g. --from 1k --to 10M --points 12)")
            rates = sw.log_rates(sw.parse_rate_text(args.rate_from), sw.parse_rate_text(args.rate_to),
                                 12 if args.points is None else args.points)
        else:
            rates = sw.parse_rates(args.rates) if args.rates is not None else list(sw.DEFAULT_RATES)
    except sw.SweepError as e:
        raise CliError(str(e)) from None
    if args.svg and Path(args.svg).exists() and not Path(args.svg).is_file():
        raise CliError(f"--svg {args.svg} is not a regular file (a directory or a device); give a file name")
    svg = _new_file(args.svg, args.force, "--svg file") if args.svg else None
    preset = _load(args.preset, args.set)
    _warn(preset)
    from .sweepout import Progress, render, svg_text

    bar = Progress(len(techs) * len(rates))
    try:
        rows = sw.run_sweep(preset, techs, rates, args.packets, args.seed, jobs=args.jobs, on_point=bar)
    except sw.SweepError as e:
        raise CliError(str(e)) from None
    except PresetError as e:            # a technique cannot lay out its rings in this guest RAM
        raise CliError(str(e)) from None
    finally:
        bar.close()
    meta = {"preset": preset.name, "seed": args.seed,
            "packets": args.packets if args.packets is not None else preset.traffic["count"],
            "techniques": techs, "rates_pps": [int(r) if float(r).is_integer() else r for r in rates],
            "load": sw.how_load_applies(preset), "overrides": list(args.set)}
    if svg is not None:
        # under a temporary name in the same directory, renamed into place (never a half-written file)
        outs = _Outputs()
        try:
            outs.temp_for(svg).write_text(svg_text(rows, args.measure, preset.name, sw.preset_pps(preset),
                                                   args.seed), encoding="utf-8")
            outs.commit()
        except OSError as e:
            outs.discard()
            raise CliError(f"--svg {args.svg}: cannot write: {e.strerror or e}") from None
        except BaseException:
            outs.discard()
            raise
    sys.stdout.write(render(rows, args.format, meta))
    return 0


def cmd_presets(args: argparse.Namespace) -> int:
    from .sim.preset import PresetError, _load_file, list_presets
    from .sim.world import check_runnable

    if args.validate:
        path = Path(args.validate)
        if not path.is_file():
            raise CliError(f"{args.validate}: no such file")
        try:
            p = _load_file(path)
            check_runnable(p)          # every technique can lay out its rings in each VM's RAM
        except PresetError as e:
            raise CliError(str(e)) from None
        _warn(p)
        print(f"{path}: ok — {p.name}: {p.description}")
        return 0
    rows = []
    for name, path, origin in list_presets(on_warning=_WARN_ONCE):
        try:
            p = _load_file(path)
            rows.append((name, p.description, len(p.vms), p.traffic["pattern"], p.technique or "–", origin))
        except PresetError as e:
            rows.append((name, f"(invalid: {e})", 0, "-", "-", origin))
    if not rows:
        print("no presets found")
        return 0
    w = max(len(r[0]) for r in rows)
    print(f"{'name':<{w}}  vms  pattern   technique  description")
    for name, desc, nvm, pat, tech, origin in rows:
        mark = " (user)" if origin == "user" else ""
        print(f"{name:<{w}}  {nvm:>3}  {pat:<8}  {tech:<9}  {desc}{mark}")
    return 0


def _preset_file(source: str) -> tuple[str, str | None]:
    """A preset's file as an absolute path, and the SHA-256 of its bytes
    (so a replay can tell whether it is still the same preset)."""
    import hashlib

    p = Path(source)
    if not p.is_file():
        return source, None
    return str(p.resolve()), hashlib.sha256(p.read_bytes()).hexdigest()


def _header_problem(head: dict[str, Any]) -> str | None:
    """What is wrong with a trace header's values (None if nothing): the
    key, and what it may be."""
    from .sim.paths import available

    def is_int(v):
        return isinstance(v, int) and not isinstance(v, bool)

    checks = [
        ("preset", lambda v: isinstance(v, str) and v != "", "a preset name (a non-empty string)"),
        ("seed", lambda v: is_int(v) and 0 <= v <= 2**32 - 1, "an integer 0..4294967295"),
        ("technique", lambda v: v in available(), "one of " + ", ".join(available())),
        ("packets", lambda v: is_int(v) and 1 <= v <= 10_000_000, "an integer 1..10000000"),
    ]
    optional = [
        ("preset_source", lambda v: isinstance(v, str), "a file path (a string)"),
        ("preset_sha256", lambda v: v is None or (isinstance(v, str) and len(v) == 64
                                                  and all(c in "0123456789abcdef" for c in v)),
         "64 hex digits or null"),
        ("overrides", lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v),
         'a list of "SECTION.KEY=VALUE" strings'),
        ("until_ns", lambda v: is_int(v) and 1 <= v <= MAX_UNTIL_NS, f"an integer 1..{MAX_UNTIL_NS} (ns)"),
    ]
    for key, ok, allowed in checks + optional:
        if key not in head:
            if (key, ok, allowed) in checks:
                return f"the header has no \"{key}\" (it must be {allowed})"
            continue
        if not ok(head[key]):
            return f"the header's \"{key}\" is {json.dumps(head[key])[:60]}; it must be {allowed}"
    return None


def check_trace_body(path: str) -> None:
    """Refuse (CliError, one line) a trace whose body is damaged: a line that
    is not a JSON record (its number given), or no closing record at the end
    (the trace was cut short)."""
    from .sim.trace import END_KIND

    n = 0
    last = None
    with open(path, "rb") as fh:
        fh.readline()                     # the header (checked by trace_run)
        n = 1
        for raw in fh:
            n += 1
            line = raw.rstrip(b"\r\n")
            # a cheap test on every line (a trace may be gigabytes), json on the suspects
            if not (line.startswith(b"{") and line.endswith(b"}")):
                if not raw.endswith(b"\n") and last is not None:
                    raise CliError(f"{path}: truncated at line {n:,}: the last line is cut off and the "
                                   "closing record is missing; the trace is incomplete, record it again")
                raise CliError(f"{path}: line {n:,} is corrupt (not a JSON record); "
                               "the trace was damaged, record it again")
            last = line
    end = None
    if last is not None:
        try:
            end = json.loads(last)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise CliError(f"{path}: line {n:,} is corrupt (not a JSON record); "
                           "the trace was damaged, record it again") from None
    if not isinstance(end, dict) or end.get("kind") != END_KIND:
        raise CliError(f"{path}: truncated after line {n:,}: no closing record (\"kind\": \"{END_KIND}\"), "
                       "so the run that wrote it did not finish; record it again")


def trace_run(path: str) -> dict[str, Any]:
    """The run a trace file's header describes: preset (with overrides), technique, seed."""
    from .sim.trace import TRACE_FORMAT_VERSION

    try:
        with open(path, encoding="utf-8") as fh:
            first = fh.readline()
    except FileNotFoundError:
        raise CliError(f"{path}: no such trace file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise CliError(f"{path}: cannot read trace file: {e}") from None
    try:
        head = json.loads(first)
    except json.JSONDecodeError:
        head = None
    if not isinstance(head, dict) or head.get("format") != "iovtui-trace":
        raise CliError(f"{path}: not an iovtui trace (the first line must be the header written by 'iovtui run --trace')")
    if head.get("version") != TRACE_FORMAT_VERSION:
        raise CliError(f"{path}: trace format version {head.get('version')!r}; this iovtui reads version {TRACE_FORMAT_VERSION}")
    bad = _header_problem(head)
    if bad:
        raise CliError(f"{path}: {bad}")
    try:
        check_trace_body(path)
    except OSError as e:
        raise CliError(f"{path}: cannot read trace file: {e.strerror or e}") from None
    src = head.get("preset_source") or ""
    digest = head.get("preset_sha256")
    name = head["preset"]
    if src and Path(src).is_file():
        name = src
    elif src and not _is_shipped(src):
        raise CliError(f"{path}: the trace was recorded with the preset file {src}, which is gone")
    preset = _load(name, head.get("overrides") or [])
    if digest and _preset_file(preset.source)[1] != digest:
        if name == src:
            raise CliError(f"{path}: the preset file {src} has changed since the trace was recorded, "
                           "so the replay would be another run; restore it, or record the trace again")
        raise CliError(f"{path}: the preset {name!r} is not the one the trace was recorded with "
                       "(another iovtui version?), so the replay would be another run; record the trace again")
    return {"preset": preset, "technique": _check_technique(head["technique"]),
            "seed": head["seed"], "packets": head["packets"]}


def _is_shipped(source: str) -> bool:
    """Whether a recorded preset path was one of iovtui's own presets (which
    another installation keeps elsewhere: its name finds it there)."""
    from .sim.preset import preset_dirs

    here = Path(source).resolve().parent
    shipped = [d.resolve() for origin, d in preset_dirs() if origin == "shipped"]
    # this installation's presets, or another installation's (…/iovtui/presets, a checkout's presets/)
    return here in shipped or (here.name == "presets" and (here.parent.name == "iovtui"
                                                            or (here.parent / "iovtui").is_dir()))


def _last_seq(path: str) -> int:
    """The seq of the trace file's last event (0 if it has none)."""
    with open(path, "rb") as fh:
        fh.seek(0, os.SEEK_END)
        size = fh.tell()
        fh.seek(max(0, size - 65536))
        tail = fh.read().splitlines()
    for line in reversed(tail):
        try:
            ev = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError):
            continue
        if isinstance(ev, dict) and isinstance(ev.get("seq"), int):
            return ev["seq"]
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    run = trace_run(args.file)
    if args.at is not None:
        last = _last_seq(args.file)
        if args.at > last:
            raise CliError(f"{args.file}: --at {args.at}: the trace's events are numbered 1..{last}")
    from .ui.app import create_app, freeze_imports, remember_terminal

    _check_terminal_size()
    _warn(run["preset"])
    remember_terminal()
    from .sim.preset import PresetError

    freeze_imports()
    try:
        app = create_app(run["preset"], run["technique"], seed=run["seed"], speed=args.speed,
                         packets=run["packets"], start_paused=True, theme=args.theme, palette=args.palette,
                         presenter=args.presenter, at_event=args.at, replay=True)
    except PresetError as e:
        raise CliError(str(e)) from None
    app.run()
    return getattr(app, "return_code", 0) or 0


def cmd_app(args: argparse.Namespace) -> int:
    preset = _load(args.preset)
    tech = _check_technique(args.technique or preset.technique or "virtio")
    _warn(preset)
    real = None
    if args.real is not None:
        from .real import RealTraceError, read_real

        try:
            real = read_real(args.real)
        except RealTraceError as e:
            raise CliError(str(e)) from None
    elif args.real_packets is not None:
        raise CliError("--real-packets needs --real FILE (the recording it counts the packets of)")
    import gc

    gc.disable()            # (until freeze_imports: what the app's imports make is never garbage)
    try:
        try:
            from .ui.app import create_app, freeze_imports, remember_terminal
        except ModuleNotFoundError as e:
            if e.name and e.name.startswith("iovtui.ui"):
                raise CliError("the terminal app is not built yet; use 'iovtui run'") from None
            raise
        _check_terminal_size()
        remember_terminal()
        freeze_imports()
    finally:
        gc.enable()
    from .sim.preset import PresetError

    try:
        app = create_app(preset=preset, technique=tech, seed=args.seed, speed=args.speed, theme=args.theme,
                         palette=args.palette, presenter=args.presenter, predict=args.predict,
                         real=real, real_packets=args.real_packets)
    except PresetError as e:        # the technique cannot lay out its rings in this guest RAM
        raise CliError(str(e)) from None
    app.run()
    return getattr(app, "return_code", 0) or 0


def _check_terminal_size() -> None:
    """Refuse to start in a terminal too small for the app (a browser session,
    whose size arrives later, is not checked; a later shrink shows a message
    in the app instead)."""
    from .ui.app import too_small

    if os.environ.get("TEXTUAL_DRIVER"):
        return
    for name, stream in (("standard input", sys.stdin), ("standard output", sys.stdout)):
        if stream is None or not stream.isatty():
            # (Textual would spin a core reading a closed input for ever)
            raise CliError(f"the app needs a terminal, and {name} is not one; use 'iovtui run' for a "
                           "headless run, or 'iovtui serve' for a browser")
    try:
        size = os.get_terminal_size(sys.stdout.fileno())
    except OSError:
        return
    small = too_small(size.columns, size.lines)
    if small and size.columns and size.lines:        # 0×0: a pty nobody sized, not a tiny one
        raise CliError(f"{small}; enlarge it, or use 'iovtui run' for a headless run")


def cmd_serve(args: argparse.Namespace) -> int:
    preset = _load(args.preset)
    tech = _check_technique(args.technique or preset.technique or "virtio")
    from . import serve as srv

    try:
        import textual_serve.server  # noqa: F401  (the optional extra)
    except ModuleNotFoundError:
        raise CliError(srv.INSTALL_HINT) from None
    if not args.host.strip():
        raise CliError("--host is empty; give an address: 127.0.0.1 (this machine only, the default) "
                       "or 0.0.0.0 (every interface)")
    cmd = srv.app_command(args.preset, tech, args.seed, args.speed, extra=look_args(args))
    try:
        rc = srv.serve(cmd, args.host, args.port, args.public_url)
    except socket.gaierror as e:
        raise CliError(f"cannot listen on {args.host}:{args.port}: {args.host!r} is not an address "
                       f"or a known host name ({e.strerror or e})") from None
    except OSError as e:
        raise CliError(f"cannot listen on {args.host}:{args.port}: {e.strerror or e}") from None
    print("iovtui: server stopped", file=sys.stderr)
    return rc


def cmd_bench(args: argparse.Namespace) -> int:
    from . import bench

    try:
        return bench.main(quick=args.quick, as_json=args.json)
    except bench.BenchError as e:   # not bad input: a measurement failed
        print(f"iovtui: bench failed: {e}", file=sys.stderr)
        return 1


def main(argv: Sequence[str] | None = None) -> int:
    global _WARN_ONCE
    _WARN_ONCE = _stderr_once()      # each warning once per command
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "run":
            return cmd_run(args)
        if args.command == "presets":
            return cmd_presets(args)
        if args.command == "compare":
            return cmd_compare(args)
        if args.command == "sweep":
            return cmd_sweep(args)
        if args.command == "real":
            return cmd_real(args)
        if args.command == "replay":
            return cmd_replay(args)
        if args.command == "serve":
            return cmd_serve(args)
        if args.command == "bench":
            return cmd_bench(args)
        return cmd_app(args)
    except CliError as e:
        print(f"iovtui: error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("iovtui: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        try:
            sys.stdout.close()
        except Exception:
            pass
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
