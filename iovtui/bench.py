"""`iovtui bench`: the project's performance aims, measured in one run.

Five sections, each printed next to its aim:

- **headless** — packets/s of the model per technique variant on the
  line-rate preset (1514-byte frames at line rate), tracing off, exactly as
  `iovtui run` runs it; packets over the run's process CPU time (the
  machine may be shared), best of R runs.
- **engine** — events/s of `sim.engine.Engine` against a bare `heapq` loop
  doing the same schedule/pop work (64 chains of events, each scheduling the
  next), so the engine's own overhead is visible.
- **first frame** — from starting a Python process to the first screen update
  after which the screen shows the full frame (headless, 120×40: the text
  Textual sends is kept on a character grid and checked for the words the
  real-terminal case looks for; the update is also encoded as it would be for
  a terminal), against a bare Textual app with five bordered panes, a header
  line and a footer, measured the same way: wall time and the child's CPU
  time (the fair figure on a shared machine). Each run is a fresh process so
  imports count; every child loads compiled bytecode from one private cache
  a warm-up run fills (as an installed package has it).
- **cpu** — process CPU time over wall time (1.0 = one core) of the app paused,
  and running at ×1, in a fresh process each.
- **real terminal** (when tmux exists) — each app in its own tmux server at
  120×40, paired runs alternating with the bare app: the pane's shell stamps
  the wall clock and execs the app; the time ends at the first
  ``capture-pane`` (polled every 5 ms) that shows the full frame (every
  pane's title, the stats line, the footer's keys); the app's CPU time by
  then is read from /proc (schedstat of its threads). Then iovtui's CPU at ×1
  there, read from outside (utime + stime in /proc/PID/stat) over wall time.
- **memory** — peak RSS of `iovtui run` (virtio with vhost, line rate) for a
  short and a ten-times-longer run in separate processes, each reporting its
  own high-water mark (VmHWM on Linux, else ``ru_maxrss``): flat memory means
  the long run peaks where the short one does.
- **dense host** — 126 VMs (two ports × 63 VFs) against one, the same packet
  count, line-rate 1514-byte frames, per technique: peak RSS (separate
  processes, with the guest pages the run really wrote beside it), CPU time
  of the run (with events per packet and CPU per event, so what is the
  model's mechanics — each VM sees 1/126 of the traffic, so fewer frames per
  interrupt — is told apart from cost per event), the same at equal load per
  VM (1 VM at the rate each of the 126 receives, a port's line rate / 63,
  against the 126 at line rate: the cost of the VM count itself), and the
  set-up cost of a run with 16 MiB against 1 GiB of guest RAM.

Textual is imported only in the child processes that measure the app (run as
``python -m iovtui.bench --worker ...``), never by the headless sections.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator

#: the aims the project set itself
AIM_PPS = 150_000            # virtio, 1500-byte packets
AIM_SRIOV_PPS = 100_000      # SR-IOV, 1500-byte packets
AIM_FIRST_FRAME_RATIO = 1.3  # × a bare Textual app
AIM_CPU_PAUSED = 1.0         # % of a core
AIM_CPU_RUNNING = 30.0       # % of a core at ×1
AIM_MEMORY_GROWTH = 0.10     # long run's peak RSS within 10 % of the short run's
AIM_DENSE_RSS_RATIO = 2.5    # peak RSS of a 126-VM run ≤ 2.5 × the 1-VM run's
AIM_DENSE_TIME_RATIO = 1.3   # CPU time of a 126-VM run ≤ 1.3 × the 1-VM run's (same packets)
AIM_SETUP_RAM_RATIO = 1.2    # set-up with 1 GiB of guest RAM ≤ 1.2 × with 16 MiB
DENSE_VMS = 126
AIM_SWEEP_S = 15.0           # wall s of a 3-technique × 10-point sweep of 20,000 packets each
SWEEP_POINTS = 10
DENSE_TECHNIQUES = ("emulation", "virtio", "sriov")


class BenchError(Exception):
    """A measurement could not be made: the message is one line."""


@dataclass(frozen=True)
class Settings:
    packets: int           # headless packets per run
    repeat: int            # headless runs per variant (best kept)
    events: int            # engine events per run
    frames: int            # first-frame processes per app (best kept)
    cpu_seconds: float     # wall seconds of CPU sampling per state
    memory_packets: tuple[int, int]
    dense_packets: int = 20_000
    sweep_packets: int = 20_000
    sweep_sequential: bool = True     # also time the same sweep in one process


FULL = Settings(packets=100_000, repeat=3, events=2_000_000, frames=5, cpu_seconds=5.0,
                memory_packets=(10_000, 100_000), dense_packets=20_000)
QUICK = Settings(packets=5_000, repeat=1, events=200_000, frames=2, cpu_seconds=1.5,
                 memory_packets=(1_000, 10_000), dense_packets=5_000, sweep_packets=2_000,
                 sweep_sequential=False)


# -- headless packets per second ---------------------------------------------------
def headless_cases(preset_name: str = "line-rate") -> Iterator[tuple[str, Any, str]]:
    """(label, preset, technique) for each built variant, as `compare` runs
    them on the lecture's host (no APICv), and SR-IOV again with APICv + VT-d
    posted interrupts ("sriov+posted", its fastest path)."""
    from .sim.compare import compare_cases, with_host_profile
    from .sim.preset import load_preset

    base = load_preset(preset_name)
    for label, tech, preset in compare_cases(base, "none"):
        yield label, preset, tech
    for label, tech, preset in compare_cases(with_host_profile(base, "apicv+pi"), "preset"):
        if tech == "sriov":
            yield "sriov+posted", preset, tech


VARIANT_NAMES = {"emulation": "emulation (e1000)", "virtio": "virtio (vhost off)",
                 "virtio+vhost": "virtio (vhost on)", "sriov": "SR-IOV (no APICv)",
                 "sriov+posted": "SR-IOV (APICv + VT-d PI)"}


def measure_headless(preset, technique: str, packets: int, repeat: int) -> tuple[float, dict]:
    """Best packets/s (over process CPU time) of ``repeat`` runs, and the last run's summary."""
    from .sim.world import Simulation

    best = 0.0
    summary: dict = {}
    for _ in range(repeat):
        sim = Simulation(preset, technique, seed=1, packets=packets)
        t0 = time.process_time()
        sim.run()
        dt = max(time.process_time() - t0, 1e-9)
        best = max(best, sim.metrics.offered / dt)
        summary = sim.summary()
    return best, summary


def headless(packets: int, repeat: int) -> dict[str, Any]:
    rows = []
    for label, preset, tech in headless_cases():
        pps, s = measure_headless(preset, tech, packets, repeat)
        rows.append({"variant": label, "name": VARIANT_NAMES.get(label, label), "technique": tech,
                     "packets_per_s": round(pps, 1),
                     "delivered": s["packets"]["delivered"], "exits_per_packet": s["exits"]["per_packet"]})
    virtio = [r["packets_per_s"] for r in rows if r["technique"] == "virtio"]
    sriov = [r["packets_per_s"] for r in rows if r["technique"] == "sriov"]
    return {"preset": "line-rate", "packet_bytes": 1514, "packets": packets, "repeat": repeat,
            "results": rows, "aim_virtio_packets_per_s": AIM_PPS, "aim_sriov_packets_per_s": AIM_SRIOV_PPS,
            "meets_aim": bool(virtio) and max(virtio) >= AIM_PPS and bool(sriov) and max(sriov) >= AIM_SRIOV_PPS}


# -- engine against a bare heap ------------------------------------------------------
_CHAINS = 64


def _delays() -> list[int]:
    import random

    r = random.Random(7)
    return [r.randrange(1, 2000) for _ in range(1024)]


def engine_events_per_s(n: int) -> float:
    from .sim.engine import Engine

    eng = Engine(seed=1)
    delays = _delays()
    after = eng.after

    def tick(i: int) -> None:
        j = i + _CHAINS
        if j < n:
            after(delays[j & 1023], tick, j)

    for i in range(min(_CHAINS, n)):
        eng.at(delays[i], tick, i)
    t0 = time.perf_counter()
    ran = eng.run()
    dt = time.perf_counter() - t0
    assert ran == n, (ran, n)
    return n / dt


def heapq_events_per_s(n: int) -> float:
    """The same work with nothing but heapq: push (time, seq, action, args), pop, call."""
    import heapq

    heap: list = []
    push, pop = heapq.heappush, heapq.heappop
    delays = _delays()
    state = [0, 0]  # now, seq

    def tick(i: int) -> None:
        j = i + _CHAINS
        if j < n:
            state[1] += 1
            push(heap, (state[0] + delays[j & 1023], state[1], tick, (j,)))

    for i in range(min(_CHAINS, n)):
        state[1] += 1
        push(heap, (delays[i], state[1], tick, (i,)))
    t0 = time.perf_counter()
    ran = 0
    while heap:
        t, _s, action, args = pop(heap)
        state[0] = t
        action(*args)
        ran += 1
    dt = time.perf_counter() - t0
    assert ran == n, (ran, n)
    return n / dt


def engine(n: int, repeat: int) -> dict[str, Any]:
    e = max(engine_events_per_s(n) for _ in range(repeat))
    h = max(heapq_events_per_s(n) for _ in range(repeat))
    return {"events": n, "repeat": repeat, "engine_events_per_s": round(e, 1),
            "heapq_events_per_s": round(h, 1), "engine_vs_heapq": round(e / h, 3)}


# -- child processes ---------------------------------------------------------------------
def _child(args: list[str], timeout: float, first_line: bool = False) -> tuple[str, float]:
    """Run ``python -m iovtui.bench --worker ARGS`` (or ``python ARGS`` when
    ``args[0]`` is ``-m`` or ``-c``); returns (stdout, wall seconds).  With ``first_line``
    the wall time ends when the first line arrives.  The child is killed if
    we are interrupted."""
    argv = [sys.executable] + (args if args[0] in ("-m", "-c") else ["-m", "iovtui.bench", "--worker", *args])
    env = _child_env()
    label = " ".join(["iovtui", *args[2:]] if args[0] == "-c" else args)
    t0 = time.perf_counter()
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                         stdin=subprocess.DEVNULL)
    try:
        t_line = None
        if first_line:
            assert p.stdout is not None
            line = p.stdout.readline()
            t_line = time.perf_counter() - t0
            rest, err = p.communicate(timeout=timeout)
            out = line + rest
        else:
            out, err = p.communicate(timeout=timeout)
        wall = time.perf_counter() - t0
    except subprocess.TimeoutExpired:
        p.kill()
        p.communicate()
        raise BenchError(f"{label}: no answer in {timeout:g} s") from None
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    if p.returncode in (-2, 130):           # the child saw the Ctrl-C first
        raise KeyboardInterrupt
    if p.returncode != 0:
        last = (err.strip().splitlines() or ["(no output)"])[-1]
        raise BenchError(f"{label} failed (status {p.returncode}): {last}")
    return out, (t_line if t_line is not None else wall)


#: bytecode for the child processes: a private cache (``PYTHONPYCACHEPREFIX``)
#: that a warm-up run fills, so that every timed process of either app loads
#: compiled modules, as an installed package does (pip compiles at install).
#: Without it, under ``PYTHONDONTWRITEBYTECODE`` (or a read-only checkout)
#: iovtui's own modules were compiled from source in every timed run while
#: Textual's came from site-packages' caches: 50-60 ms of the first frame
#: that no installed iovtui pays.
_PYCACHE: list[str] = []


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("TEXTUAL", None)
    env.pop("COLUMNS", None)           # (pytest-xdist sets them; they would override the size)
    env.pop("LINES", None)
    if _PYCACHE:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = _PYCACHE[0]
    return env


class _bytecode_cache:
    """``with _bytecode_cache():`` the children share one private bytecode cache."""

    def __enter__(self) -> None:
        import tempfile

        self._dir = tempfile.TemporaryDirectory(prefix="iovtui-bench-pyc-")
        _PYCACHE[:] = [self._dir.name]

    def __exit__(self, *exc) -> None:
        _PYCACHE.clear()
        self._dir.cleanup()


def _json_line(out: str) -> dict:
    for line in out.splitlines():
        if line.startswith("{"):
            return json.loads(line)
    raise BenchError(f"no result in child output: {out[:200]!r}")


def first_frame(runs: int) -> dict[str, Any]:
    """Process start to the first paint that shows the full frame (the words
    of ``_FULL``, as the real-terminal case looks for them), headless at
    120×40: wall time seen from here, and the child's own CPU time then."""
    totals: dict[str, list[float]] = {"iovtui": [], "bare": []}
    cpus: dict[str, list[float]] = {"iovtui": [], "bare": []}
    inner: dict[str, list[float]] = {"iovtui": [], "bare": []}
    for which in ("bare", "iovtui"):          # warm-up: fills the bytecode cache, not timed
        _child(["first-frame", which], timeout=120, first_line=True)
    for _ in range(runs):                     # alternate, so drift hits both alike
        for which in ("bare", "iovtui"):
            out, t = _child(["first-frame", which], timeout=60, first_line=True)
            d = _json_line(out)
            totals[which].append(t)
            cpus[which].append(d["cpu_s"])
            inner[which].append(d["app_s"])
    o, b = min(totals["iovtui"]), min(totals["bare"])
    oc, bc = min(cpus["iovtui"]), min(cpus["bare"])
    oi, bi = min(inner["iovtui"]), min(inner["bare"])
    return {"runs": runs, "size": "120x40",
            "iovtui_ms": round(o * 1000, 1), "bare_ms": round(b * 1000, 1), "ratio": round(o / b, 3),
            "iovtui_cpu_ms": round(oc * 1000, 1), "bare_cpu_ms": round(bc * 1000, 1),
            "cpu_ratio": round(oc / bc, 3),
            "iovtui_app_ms": round(oi * 1000, 1), "bare_app_ms": round(bi * 1000, 1),
            "app_ratio": round(oi / bi, 3),
            "aim_ratio": AIM_FIRST_FRAME_RATIO,
            "meets_aim": o / b <= AIM_FIRST_FRAME_RATIO and oc / bc <= AIM_FIRST_FRAME_RATIO}


def cpu(seconds: float) -> dict[str, Any]:
    res = {}
    for state in ("paused", "running"):
        out, _ = _child(["cpu", state, repr(seconds)], timeout=60 + 2 * seconds)
        res[state] = _json_line(out)
    paused, running = 100 * res["paused"]["cpu"], 100 * res["running"]["cpu"]
    return {"seconds": seconds, "preset": "steady-stream", "technique": "virtio", "speed": 1.0,
            "paused_percent": round(paused, 2), "running_percent": round(running, 2),
            "frames_running": res["running"]["frames"],
            "aim_paused_percent": AIM_CPU_PAUSED, "aim_running_percent": AIM_CPU_RUNNING,
            "meets_aim": paused < AIM_CPU_PAUSED and running <= AIM_CPU_RUNNING}


# -- a real terminal: tmux at 120×40 ----------------------------------------------------
TERM_W, TERM_H = 120, 40
#: what must be on screen before a frame counts as full: every pane's title
#: (or the bare app's word), the stats line and the footer's keys
_FULL = {"iovtui": ("Guest RAM", "Descriptor ring", "VMM exit log", "IOMMU", "NIC", "exits/pkt", "q quit"),
         "bare": ("header", "ram", "ring", "exits", "iommu", "nic", "^p palette")}


def have_tmux() -> bool:
    import shutil

    return shutil.which("tmux") is not None and os.path.isdir("/proc/self")


class _Tmux:
    """A private tmux server (its own socket) with one 120×40 window running
    ``argv``; the pane's first process writes the wall clock (ns) to a file
    just before it execs the app, so the time counted starts at the app's
    process start, as a shell's ``exec`` starts it."""

    def __init__(self, argv: list[str]) -> None:
        import shlex
        import tempfile

        self.sock = f"iovtui-bench-{os.getpid()}-{time.monotonic_ns()}"
        fd, self.stamp = tempfile.mkstemp(prefix="iovtui-bench-")
        os.close(fd)
        pairs = [("TERM", "xterm-256color"), ("COLORTERM", "truecolor")]
        if _PYCACHE:                         # (see _child_env)
            pairs.append(("PYTHONPYCACHEPREFIX", _PYCACHE[0]))
        # COLUMNS / LINES (pytest-xdist's workers set them) would override the pane's size in Textual
        env = "-u COLUMNS -u LINES " + ("-u PYTHONDONTWRITEBYTECODE " if _PYCACHE else "") + " ".join(
            f"{k}={shlex.quote(v)}" for k, v in pairs)
        inner = f"date +%s%N > {shlex.quote(self.stamp)}; exec env {env} {shlex.join(argv)}"
        self._tmux("new-session", "-d", "-x", str(TERM_W), "-y", str(TERM_H), "-s", "b", "-c", os.getcwd(),
                   f"sh -c {shlex.quote(inner)}")

    def _tmux(self, *args: str) -> str:
        p = subprocess.run(["tmux", "-L", self.sock, "-f", "/dev/null", *args], capture_output=True, text=True,
                           stdin=subprocess.DEVNULL, timeout=20)
        if p.returncode != 0 and args[0] != "kill-server":
            raise BenchError(f"tmux {args[0]} failed: {(p.stderr.strip() or '(no output)').splitlines()[-1]}")
        return p.stdout

    def screen(self) -> str:
        return self._tmux("capture-pane", "-p", "-t", "b")

    def pid(self) -> int:
        return int(self._tmux("display-message", "-p", "-t", "b", "#{pane_pid}").strip())

    def started_ns(self) -> int:
        for _ in range(200):
            with open(self.stamp, encoding="ascii") as fh:
                txt = fh.read().strip()
            if txt:
                return int(txt)
            time.sleep(0.005)
        raise BenchError("tmux: the pane never started")

    def close(self) -> None:
        self._tmux("kill-server")
        try:
            os.unlink(self.stamp)
        except OSError:
            pass


def _app_argv(which: str, preset: str = "steady-stream", technique: str | None = "virtio") -> list[str]:
    if which == "iovtui":
        return [sys.executable, "-m", "iovtui", "--preset", preset] + (["--technique", technique] if technique else [])
    return [sys.executable, "-m", "iovtui.bench", "--worker", "bare-app"]


def _proc_cpu_ns(pid: int) -> int:
    """CPU time (ns) the process's threads have run so far (schedstat: ns, not ticks)."""
    total = 0
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return 0
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat", encoding="ascii") as fh:
                total += int(fh.read().split()[0])
        except (OSError, ValueError, IndexError):
            pass
    return total


def terminal_first_frame_once(which: str, timeout: float = 30.0) -> tuple[float, float]:
    """(seconds from the app's process start to the first capture of its
    pane that shows the full frame (polled every 5 ms), the CPU seconds the
    app's process had used by then)."""
    tm = _Tmux(_app_argv(which))
    try:
        want = _FULL[which]
        deadline = time.monotonic() + timeout
        pid = None
        while True:
            if pid is None:
                try:
                    pid = tm.pid()
                except (BenchError, ValueError):
                    pass
            scr = tm.screen()
            if all(w in scr for w in want):
                t_seen = time.time_ns()
                cpu_ns = _proc_cpu_ns(pid) if pid else 0
                break
            if time.monotonic() > deadline:
                raise BenchError(f"{which} in tmux: no full frame in {timeout:g} s")
            time.sleep(0.005)
        return (t_seen - tm.started_ns()) / 1e9, cpu_ns / 1e9
    finally:
        tm.close()


def terminal_first_frame(runs: int) -> dict[str, Any]:
    t: dict[str, list[float]] = {"iovtui": [], "bare": []}
    c: dict[str, list[float]] = {"iovtui": [], "bare": []}
    for which in ("bare", "iovtui"):          # warm-up (bytecode cache, tmux), not timed
        terminal_first_frame_once(which)
    for _ in range(runs):                     # paired, alternating
        for which in ("bare", "iovtui"):
            wall, cpu_s = terminal_first_frame_once(which)
            t[which].append(wall)
            c[which].append(cpu_s)
    o, b = min(t["iovtui"]), min(t["bare"])
    oc, bc = min(c["iovtui"]), min(c["bare"])
    med = sorted(x / y for x, y in zip(t["iovtui"], t["bare"]))[len(t["bare"]) // 2]
    cpu_ratio = oc / bc if bc else 0.0
    return {"runs": runs, "size": f"{TERM_W}x{TERM_H}", "terminal": "tmux",
            "iovtui_ms": round(o * 1000, 1), "bare_ms": round(b * 1000, 1), "ratio": round(o / b, 3),
            "median_pair_ratio": round(med, 3),
            "iovtui_cpu_ms": round(oc * 1000, 1), "bare_cpu_ms": round(bc * 1000, 1),
            "cpu_ratio": round(cpu_ratio, 3),
            "aim_ratio": AIM_FIRST_FRAME_RATIO,
            "meets_aim": o / b <= AIM_FIRST_FRAME_RATIO and (not bc or cpu_ratio <= AIM_FIRST_FRAME_RATIO)}


def _proc_cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
        f = fh.read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")   # utime + stime


def terminal_cpu(seconds: float, preset: str = "steady-stream", technique: str | None = "virtio") -> dict[str, Any]:
    """iovtui running at ×1 in tmux at 120×40: the process's CPU time (read
    from /proc, from outside) over wall time, after 2 s of settling
    (``technique`` None: the preset's own)."""
    tm = _Tmux(_app_argv("iovtui", preset, technique))
    try:
        deadline = time.monotonic() + 30
        while not all(w in tm.screen() for w in _FULL["iovtui"]):
            if time.monotonic() > deadline:
                raise BenchError("iovtui in tmux: no full frame in 30 s")
            time.sleep(0.05)
        pid = tm.pid()
        time.sleep(2.0)
        c0, w0 = _proc_cpu_s(pid), time.perf_counter()
        time.sleep(seconds)
        c1, w1 = _proc_cpu_s(pid), time.perf_counter()
    finally:
        tm.close()
    running = 100 * (c1 - c0) / (w1 - w0)
    return {"seconds": seconds, "size": f"{TERM_W}x{TERM_H}", "terminal": "tmux", "preset": preset,
            "technique": technique or "the preset's", "speed": 1.0, "running_percent": round(running, 2),
            "aim_running_percent": AIM_CPU_RUNNING, "meets_aim": running <= AIM_CPU_RUNNING}


def memory(packets: tuple[int, int]) -> dict[str, Any]:
    runs = [rss_run(n) for n in packets]
    short, long_ = runs[0]["peak_rss_mib"], runs[-1]["peak_rss_mib"]
    growth = (long_ - short) / short
    return {"preset": "line-rate", "variant": "virtio+vhost", "runs": runs,
            "growth_percent": round(100 * growth, 2),
            "aim_growth_percent": 100 * AIM_MEMORY_GROWTH, "meets_aim": growth <= AIM_MEMORY_GROWTH}


def rss_run(packets: int) -> dict[str, Any]:
    """`iovtui run --packets N` (line-rate, virtio with vhost) in a fresh
    process: its wall time and peak RSS.

    The child reports its own peak: VmHWM from /proc/self/status on Linux
    (the high-water mark of this process image), else ru_maxrss.  The
    kernel's ru_maxrss for a child is not used on Linux because it carries
    over the parent's high-water mark from the fork/exec that started it.
    """
    d, wall = _rss_child(packets)
    return {"packets": packets, "delivered": d["delivered"], "wall_s": round(wall, 2),
            "peak_rss_mib": round(d["peak_rss_kib"] / 1024, 1), "source": d["source"]}


# -- a dense host: 126 VMs against one -----------------------------------------------------
def dense_preset(vms: int, ram: str = "16 MiB", packets: int = 20_000, rate: Any = "line"):
    """``vms`` VMs at ``rate`` (default line rate), 1514-byte frames: one port up
    to 63 VMs, else two ports of 63 VFs (VMs fill port 0's VFs first)."""
    from .sim.preset import preset_from_dict

    ports = 1 if vms <= 63 else 2
    return preset_from_dict({
        "name": f"bench-{vms}-vms", "description": f"{vms} VMs at line rate (iovtui bench)",
        "traffic": {"pattern": "steady", "direction": "rx", "rate": rate, "sizes": 1514, "count": packets},
        "nic": {"vfs": -(-vms // ports), "ports": ports},
        "vm": [{"name": f"vm{i}", "ram": ram} for i in range(vms)],
    }, f"<bench {vms} VMs>")


#: the dense preset's frame size
DENSE_FRAME = 1514


def dense_per_vm_pps() -> float:
    """The rate each VM of the DENSE_VMS run receives: a port's line rate
    (1514-byte frames with the wire's preamble, SFD and gap) shared by the
    port's VFs (two ports × 63), in packets/s."""
    from .sim.packet import WIRE_OVERHEAD

    p = dense_preset(DENSE_VMS, packets=1)
    line_pps = p.nic["line_rate_gbps"] * 1e9 / ((DENSE_FRAME + WIRE_OVERHEAD) * 8)
    return line_pps / p.nic["vfs"]


def _cpu_of_run(preset, tech: str, packets: int, repeat: int) -> tuple[float, int]:
    """(best CPU seconds of ``repeat`` runs, engine events of the run)."""
    from .sim.world import Simulation

    best, events = float("inf"), 0
    for _ in range(repeat):
        sim = Simulation(preset, tech, seed=1, packets=packets)
        c0 = time.process_time()
        sim.run()
        best = min(best, time.process_time() - c0)
        events = sim.engine.events_run
    return best, events


def dense_time(packets: int, repeat: int) -> dict[str, Any]:
    """CPU time (time.process_time) of the run, 1 VM against DENSE_VMS, best of ``repeat``.

    Two comparisons, the same packet count: the aim's, 1 VM at line rate
    against DENSE_VMS at line rate (``one_*``: one VM takes all the frames, so
    its interrupts and polls carry many frames each, or its queues drop them);
    and at equal load per VM (``eq_*``): 1 VM at the rate each of the
    DENSE_VMS VMs receives (a port's line rate over its 63 VFs) against the
    same DENSE_VMS run, which isolates the cost of the number of VMs itself
    from the mechanics of a VM seeing 1/DENSE_VMS of the frames."""
    eq_pps = dense_per_vm_pps()
    rows = []
    for tech in DENSE_TECHNIQUES:
        row: dict[str, Any] = {"technique": tech}
        for key, preset in (("one", dense_preset(1, packets=packets)),
                            ("dense", dense_preset(DENSE_VMS, packets=packets)),
                            ("eq_one", dense_preset(1, packets=packets, rate=round(eq_pps, 3)))):
            best, events = _cpu_of_run(preset, tech, packets, repeat)
            row[f"{key}_cpu_s"] = round(best, 4)
            row[f"{key}_events_per_packet"] = round(events / packets, 3)
            row[f"{key}_us_per_event"] = round(1e6 * best / max(events, 1), 3)
        row["ratio"] = round(row["dense_cpu_s"] / row["one_cpu_s"], 3)
        row["per_event_ratio"] = round(row["dense_us_per_event"] / row["one_us_per_event"], 3)
        row["eq_ratio"] = round(row["dense_cpu_s"] / row["eq_one_cpu_s"], 3)
        row["eq_per_event_ratio"] = round(row["dense_us_per_event"] / row["eq_one_us_per_event"], 3)
        rows.append(row)
    return {"vms": DENSE_VMS, "packets": packets, "repeat": repeat, "results": rows,
            "eq_rate_pps": round(eq_pps, 1),
            "aim_ratio": AIM_DENSE_TIME_RATIO, "meets_aim": all(r["ratio"] <= AIM_DENSE_TIME_RATIO for r in rows),
            "eq_meets_aim": all(r["eq_ratio"] <= AIM_DENSE_TIME_RATIO for r in rows)}


def dense_rss(packets: int) -> dict[str, Any]:
    """Peak RSS of a 1-VM and a DENSE_VMS run, each in a fresh process."""
    rows = []
    for tech in DENSE_TECHNIQUES:
        row: dict[str, Any] = {"technique": tech}
        for n, key in ((1, "one"), (DENSE_VMS, "dense")):
            out, _ = _child(["rss-vms", str(n), str(packets), tech], timeout=3600)
            d = _json_line(out)
            row[f"{key}_peak_rss_mib"] = round(d["peak_rss_kib"] / 1024, 1)
            row[f"{key}_guest_written_mib"] = round(d["guest_pages"] * 4 / 1024, 1)
        row["ratio"] = round(row["dense_peak_rss_mib"] / row["one_peak_rss_mib"], 3)
        # the least a faithful run can peak at: the 1-VM process plus the guest
        # pages the 126 VMs' frames really fill beyond the one VM's
        extra = row["dense_guest_written_mib"] - row["one_guest_written_mib"]
        row["floor_ratio"] = round((row["one_peak_rss_mib"] + extra) / row["one_peak_rss_mib"], 3)
        rows.append(row)
    return {"vms": DENSE_VMS, "packets": packets, "results": rows, "aim_ratio": AIM_DENSE_RSS_RATIO,
            "meets_aim": all(r["ratio"] <= AIM_DENSE_RSS_RATIO for r in rows)}


def setup_cost(repeat: int) -> dict[str, Any]:
    """CPU time to build a run (rings, buffers, IOMMU tables) with 16 MiB and 1 GiB of guest RAM."""
    from .sim.world import Simulation

    rows = []
    for tech in DENSE_TECHNIQUES:
        row: dict[str, Any] = {"technique": tech}
        for ram, key in (("16 MiB", "small"), ("1 GiB", "large")):
            preset = dense_preset(1, ram=ram)
            best = float("inf")
            for _ in range(max(repeat, 3)):
                c0 = time.process_time()
                Simulation(preset, tech, seed=1, packets=1)
                best = min(best, time.process_time() - c0)
            row[f"{key}_ms"] = round(1000 * best, 3)
        row["ratio"] = round(row["large_ms"] / max(row["small_ms"], 1e-6), 3)
        rows.append(row)
    return {"rams": ["16 MiB", "1 GiB"], "results": rows, "aim_ratio": AIM_SETUP_RAM_RATIO,
            # within the aim's ratio, or less than a millisecond apart (timer noise)
            "meets_aim": all(r["ratio"] <= AIM_SETUP_RAM_RATIO or r["large_ms"] - r["small_ms"] < 1.0
                             for r in rows)}


def dense(st: "Settings", progress: Callable[[str], None]) -> dict[str, Any]:
    progress(f"dense host: {DENSE_VMS} VMs against 1, {st.dense_packets:,} packets, peak RSS …")
    rss = dense_rss(st.dense_packets)
    progress(f"dense host: {DENSE_VMS} VMs against 1, CPU time …")
    cpu_ = dense_time(st.dense_packets, st.repeat)
    progress("dense host: set-up with 16 MiB and 1 GiB of guest RAM …")
    setup = setup_cost(st.repeat)
    return {"rss": rss, "time": cpu_, "setup": setup,
            "meets_aim": rss["meets_aim"] and cpu_["meets_aim"] and setup["meets_aim"]}


def _render_dense(d: dict[str, Any]) -> list[str]:
    r, t, s = d["rss"], d["time"], d["setup"]
    out = [f"dense host · {r['vms']} VMs (2 ports × 63 VFs) against 1 · line rate, 1514-byte frames"
           f" · {r['packets']:,} packets"]
    out.append(f"  peak RSS, separate processes   {'1 VM':>9} {str(r['vms']) + ' VMs':>9} {'ratio':>7}"
               f"   guest pages written (1 / {r['vms']})   floor")
    for row in r["results"]:
        floor = f"   {row['floor_ratio']:.2f}×" if "floor_ratio" in row else ""
        out.append(f"  {row['technique']:<30} {row['one_peak_rss_mib']:>5.1f} MiB {row['dense_peak_rss_mib']:>5.1f} MiB"
                   f" {row['ratio']:>6.2f}×   {row['one_guest_written_mib']:,.1f} / {row['dense_guest_written_mib']:,.1f} MiB"
                   f"{floor}")
    out.append(f"  aim ≤ {r['aim_ratio']}× · {_mark(r['meets_aim'])}"
               f"   (the written pages are frames really in the VMs' RX buffers; floor: the 1-VM"
               f" process plus those pages, the least a faithful run can peak at)")
    out.append(f"  CPU time of the run             {'1 VM':>9} {str(t['vms']) + ' VMs':>9} {'ratio':>7}"
               f"   events/packet   µs/event (ratio)")
    for row in t["results"]:
        out.append(f"  {row['technique']:<30} {row['one_cpu_s']:>7.3f} s {row['dense_cpu_s']:>7.3f} s {row['ratio']:>6.2f}×"
                   f"   {row['one_events_per_packet']:>5.2f} / {row['dense_events_per_packet']:<5.2f}"
                   f"   {row['one_us_per_event']:.2f} / {row['dense_us_per_event']:.2f} ({row['per_event_ratio']:.2f}×)")
    out.append(f"  aim ≤ {t['aim_ratio']}× · {_mark(t['meets_aim'])}"
               f"   (more events per packet is the mechanics: each VM gets 1/{t['vms']} of the frames)")
    if "eq_rate_pps" in t:
        out.append(f"  at equal load per VM: 1 VM at {t['eq_rate_pps']:,.0f} pkt/s (a port's line rate / 63)"
                   f" against {t['vms']} VMs at line rate")
        for row in t["results"]:
            out.append(f"  {row['technique']:<30} {row['eq_one_cpu_s']:>7.3f} s {row['dense_cpu_s']:>7.3f} s"
                       f" {row['eq_ratio']:>6.2f}×   {row['eq_one_events_per_packet']:>5.2f} / "
                       f"{row['dense_events_per_packet']:<5.2f}   {row['eq_one_us_per_event']:.2f} / "
                       f"{row['dense_us_per_event']:.2f} ({row['eq_per_event_ratio']:.2f}×)")
        out.append(f"  the cost of the VM count itself · ≤ {t['aim_ratio']}× {_mark(t['eq_meets_aim'])}"
                   f" (for information: the aim is the row above)")
    out.append(f"  set-up of a run, CPU            {'16 MiB':>9} {'1 GiB':>9} {'ratio':>7}")
    for row in s["results"]:
        out.append(f"  {row['technique']:<30} {row['small_ms']:>6.1f} ms {row['large_ms']:>6.1f} ms {row['ratio']:>6.2f}×")
    out.append(f"  aim ≤ {s['aim_ratio']}×, or under 1 ms apart (independent of guest RAM) · {_mark(s['meets_aim'])}"
               f"   (SR-IOV maps all guest RAM: one lazily built last-level table per 2 MiB)")
    return out


# -- the machine -----------------------------------------------------------------------
def machine() -> dict[str, Any]:
    cpu_model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu_model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    ram = None
    try:
        with open("/proc/meminfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("MemTotal:"):
                    ram = round(int(line.split()[1]) / (1024 * 1024), 1)
                    break
    except OSError:
        pass
    os_name = platform.platform(terse=True)
    try:
        os_name = platform.freedesktop_os_release().get("PRETTY_NAME", os_name)
    except (OSError, AttributeError):
        pass
    return {"cpu": cpu_model, "cores": os.cpu_count(), "ram_gib": ram,
            "python": f"{platform.python_implementation()} {platform.python_version()}",
            "os": f"{os_name} ({platform.system()} {platform.machine()})",
            "date": time.strftime("%Y-%m-%d")}


# -- a load sweep ----------------------------------------------------------------------
def _sweep_once(packets: int, jobs: int) -> dict[str, Any]:
    """Wall and CPU time (this process and its workers) of `iovtui sweep
    --preset steady-stream --from 200 --to 1M --points 10 --packets N --jobs J`."""
    from .sim.preset import load_preset
    from .sim.sweep import SWEEP_TECHNIQUES, log_rates, run_sweep

    preset = load_preset("steady-stream")
    rates = log_rates(200, 1_000_000, SWEEP_POINTS)
    t0, c0 = time.perf_counter(), os.times()
    rows = run_sweep(preset, SWEEP_TECHNIQUES, rates, packets, 1, jobs=jobs)
    t1, c1 = time.perf_counter(), os.times()
    cpu_s = (c1.user - c0.user + c1.system - c0.system
             + c1.children_user - c0.children_user + c1.children_system - c0.children_system)
    return {"jobs": jobs, "wall_s": round(t1 - t0, 2), "cpu_s": round(cpu_s, 2), "points": len(rows),
            "packets_total": sum(r["offered"] for r in rows)}


def sweep(st: "Settings") -> dict[str, Any]:
    """The sweep `iovtui sweep` runs by default across its processes (one per
    core), and, in the full bench, the same sweep in one process."""
    from .sim.sweep import SWEEP_TECHNIQUES, default_jobs

    runs = [_sweep_once(st.sweep_packets, default_jobs())]
    if st.sweep_sequential and runs[0]["jobs"] > 1:
        runs.append(_sweep_once(st.sweep_packets, 1))
    par = runs[0]
    return {"preset": "steady-stream", "techniques": len(SWEEP_TECHNIQUES), "points": SWEEP_POINTS,
            "packets": st.sweep_packets, "runs": runs, "aim_wall_s": AIM_SWEEP_S,
            "meets_aim": par["wall_s"] < AIM_SWEEP_S if st.sweep_packets >= 20_000 else None}


def _render_sweep(w: dict[str, Any]) -> list[str]:
    out = [f"sweep · {w['preset']}, {w['techniques']} techniques × {w['points']} loads (200 pkt/s … 1 M) · "
           f"{w['packets']:,} packets a point"]
    for run_ in w["runs"]:
        who = f"{run_['jobs']} process{'es' if run_['jobs'] > 1 else ''}"
        out.append(f"  {who:<14} {run_['wall_s']:>7.2f} s wall  {run_['cpu_s']:>7.2f} s CPU"
                   f"  ({run_['packets_total'] / max(run_['cpu_s'], 1e-9):,.0f} packets per CPU second)")
    if w["meets_aim"] is None:
        out.append(f"  aim < {w['aim_wall_s']:g} s wall at 20,000 packets a point (not measured by --quick)")
    else:
        out.append(f"  aim < {w['aim_wall_s']:g} s wall · {_mark(w['meets_aim'])} (the machine is shared: "
                   "the CPU time is the steadier figure)")
    return out


# -- the run ---------------------------------------------------------------------------
def _progress(msg: str) -> None:
    if sys.stderr.isatty():
        sys.stderr.write("\r\033[K" + msg)
        sys.stderr.flush()


def run(quick: bool = False, progress: Callable[[str], None] = _progress) -> dict[str, Any]:
    with _bytecode_cache():
        return _run(quick, progress)


def _run(quick: bool, progress: Callable[[str], None]) -> dict[str, Any]:
    st = QUICK if quick else FULL
    res: dict[str, Any] = {"quick": quick, "machine": machine()}
    progress(f"headless: {st.packets:,} packets × {st.repeat} per variant …")
    res["headless"] = headless(st.packets, st.repeat)
    progress(f"engine: {st.events:,} events …")
    res["engine"] = engine(st.events, st.repeat)
    progress(f"first frame: {st.frames} processes per app …")
    res["first_frame"] = first_frame(st.frames)
    progress(f"CPU: {st.cpu_seconds:g} s paused, {st.cpu_seconds:g} s running …")
    res["cpu"] = cpu(st.cpu_seconds)
    if have_tmux():
        progress(f"first frame in tmux {TERM_W}×{TERM_H}: {st.frames} paired runs …")
        res["first_frame_terminal"] = terminal_first_frame(st.frames)
        progress(f"CPU in tmux {TERM_W}×{TERM_H}: {st.cpu_seconds:g} s running …")
        res["cpu_terminal"] = terminal_cpu(st.cpu_seconds)
        progress(f"CPU in tmux {TERM_W}×{TERM_H}: {st.cpu_seconds:g} s running dense-host …")
        res["cpu_terminal_dense"] = terminal_cpu(st.cpu_seconds, "dense-host", None)
    progress(f"memory: {' and '.join(f'{n:,}' for n in st.memory_packets)} packets …")
    res["memory"] = memory(st.memory_packets)
    res["dense"] = dense(st, progress)
    progress(f"sweep: 3 techniques × {SWEEP_POINTS} loads × {st.sweep_packets:,} packets …")
    res["sweep"] = sweep(st)
    progress("")
    return res


def _mark(ok: bool) -> str:
    return "✓ met" if ok else "✗ not met"


def render(r: dict[str, Any]) -> str:
    m = r["machine"]
    out = [f"iovtui bench{' --quick' if r['quick'] else ''} · {m['date']} · {m['cpu']} · {m['cores']} cores"
           f" · {m['ram_gib']} GiB · {m['python']} · {m['os']}", ""]
    h = r["headless"]
    out.append(f"headless · {h['preset']}, {h['packet_bytes']}-byte frames · {h['packets']:,} packets"
               f" · best of {h['repeat']}")
    out.append(f"  {'variant':<20} {'packets/s':>11} {'delivered':>11} {'exits/pkt':>10}")
    for row in h["results"]:
        out.append(f"  {row['name']:<20} {row['packets_per_s']:>11,.0f} {row['delivered']:>11,}"
                   f" {row['exits_per_packet']:>10.3f}")
    best = max((x["packets_per_s"] for x in h["results"] if x["technique"] == "virtio"), default=0)
    best_sriov = max((x["packets_per_s"] for x in h["results"] if x["technique"] == "sriov"), default=0)
    out.append(f"  aim ≥ {h['aim_virtio_packets_per_s']:,} pkt/s on virtio (best {best:,.0f}), "
               f"≥ {h.get('aim_sriov_packets_per_s', AIM_SRIOV_PPS):,} on SR-IOV (best {best_sriov:,.0f}) · "
               f"CPU time · {_mark(h['meets_aim'])}")
    out.append("")
    e = r["engine"]
    out.append(f"engine · {e['events']:,} events in {_CHAINS} chains, each scheduling the next · best of {e['repeat']}")
    out.append(f"  {'sim.engine':<14} {e['engine_events_per_s']:>11,.0f} events/s")
    out.append(f"  {'bare heapq':<14} {e['heapq_events_per_s']:>11,.0f} events/s")
    out.append(f"  the engine runs at {e['engine_vs_heapq']:.2f}× a bare heap loop")
    out.append("")
    f = r["first_frame"]
    out.append(f"first frame · process start to the first paint showing the full frame, headless"
               f" {f['size'].replace('x', '×')}, best of {f['runs']} (wall · CPU)")
    out.append(f"  {'iovtui':<14} {f['iovtui_ms']:>8,.0f} ms · {f['iovtui_cpu_ms']:>5,.0f} ms CPU"
               f"   (construct → paint {f['iovtui_app_ms']:,.0f} ms)")
    out.append(f"  {'bare Textual':<14} {f['bare_ms']:>8,.0f} ms · {f['bare_cpu_ms']:>5,.0f} ms CPU"
               f"   (construct → paint {f['bare_app_ms']:,.0f} ms)")
    out.append(f"  ratio {f['ratio']:.2f}× · CPU {f['cpu_ratio']:.2f}× (construct → paint {f['app_ratio']:.2f}×)"
               f" · aim ≤ {f['aim_ratio']}× · {_mark(f['meets_aim'])}")
    out.append("")
    c = r["cpu"]
    out.append(f"CPU · {c['preset']}, {c['technique']}, {c['seconds']:g} s each · process CPU / wall (100 % = one core)")
    out.append(f"  {'paused':<14} {c['paused_percent']:>7.1f} %   aim < {c['aim_paused_percent']:g} %")
    out.append(f"  {'running ×1':<14} {c['running_percent']:>7.1f} %   aim ≤ {c['aim_running_percent']:g} %"
               f"   ({c['frames_running']} frames applied)")
    out.append(f"  {_mark(c['meets_aim'])}")
    out.append("")
    if "first_frame_terminal" in r:
        f, c = r["first_frame_terminal"], r["cpu_terminal"]
        out.append(f"real terminal · tmux {f['size'].replace('x', '×')} · process start to the first capture"
                   f" showing the full frame · best of {f['runs']} paired runs")
        out.append(f"  {'iovtui':<14} {f['iovtui_ms']:>8,.0f} ms · {f['iovtui_cpu_ms']:>5,.0f} ms CPU")
        out.append(f"  {'bare Textual':<14} {f['bare_ms']:>8,.0f} ms · {f['bare_cpu_ms']:>5,.0f} ms CPU")
        out.append(f"  ratio {f['ratio']:.2f}× (median of pairs {f['median_pair_ratio']:.2f}×) · CPU {f['cpu_ratio']:.2f}×"
                   f" · aim ≤ {f['aim_ratio']}× · {_mark(f['meets_aim'])}")
        for c in (r["cpu_terminal"], r.get("cpu_terminal_dense")):
            if c is None:
                continue
            out.append(f"  running ×1 {c['running_percent']:>7.1f} % of a core over {c['seconds']:g} s (CPU time from /proc)"
                       f" · {c['preset']}, {c['technique']} · aim ≤ {c['aim_running_percent']:g} % · {_mark(c['meets_aim'])}")
        out.append("")
    mm = r["memory"]
    out.append(f"memory · peak RSS of `iovtui run` ({mm['preset']}, {mm['variant']}), separate processes")
    for run_ in mm["runs"]:
        out.append(f"  {run_['packets']:>9,} packets {run_['peak_rss_mib']:>8.1f} MiB   {run_['wall_s']:>6.2f} s")
    out.append(f"  growth {mm['growth_percent']:+.1f} % · aim flat (≤ +{mm['aim_growth_percent']:g} %)"
               f" · {_mark(mm['meets_aim'])}")
    if "dense" in r:
        out.append("")
        out.extend(_render_dense(r["dense"]))
    if "sweep" in r:
        out.append("")
        out.extend(_render_sweep(r["sweep"]))
    if r["quick"]:
        out.append("")
        out.append("(--quick: small runs, rough figures; run `iovtui bench` for the real ones)")
    return "\n".join(out)


def main(quick: bool = False, as_json: bool = False) -> int:
    try:
        res = run(quick)
    finally:
        _progress("")
    if as_json:
        print(json.dumps(res, indent=2))
    else:
        print(render(res))
    return 0


# -- workers: the measurements that need Textual, each in a fresh process ----------------
class _Screen:
    """The text a terminal shows, kept from the updates Textual sends it
    (a full ``LayoutUpdate`` or the changed ``ChopsUpdate`` pieces)."""

    def __init__(self, width: int, height: int) -> None:
        self.rows = [[" "] * width for _ in range(height)]

    def _put(self, x: int, y: int, strip) -> None:
        if not 0 <= y < len(self.rows):
            return
        row = self.rows[y]
        for ch in "".join(seg.text for seg in strip):
            if 0 <= x < len(row):
                row[x] = ch
            x += 1

    def apply(self, update) -> None:
        if hasattr(update, "chops"):
            for y, _x1, _x2 in update.spans:
                for x, strip in update.chops[y].items():
                    if strip is not None:
                        self._put(x, y, strip)
        elif hasattr(update, "strips") and hasattr(update, "region"):
            for i, strip in enumerate(update.strips):
                self._put(update.region.x, update.region.y + i, strip)

    def shows(self, words) -> bool:
        text = "\n".join("".join(r) for r in self.rows)
        return all(w in text for w in words)


def _worker_first_frame(which: str) -> None:
    t_start = time.perf_counter()
    import asyncio

    if which == "iovtui":
        import gc

        from iovtui.sim.preset import load_preset

        preset = load_preset("steady-stream")
        gc.disable()                          # as `iovtui` (cli.cmd_app) starts the app
        from iovtui.ui.app import create_app, freeze_imports

        freeze_imports()

        def make():
            return create_app(preset, "virtio")
    elif which == "bare":
        make = _bare_app_class()
    else:
        raise SystemExit(f"unknown app {which!r}")
    want = _FULL[which]

    async def measure() -> None:
        # construct, run at 120×40 and watch what Textual sends the screen:
        # the time ends with the first update after which every word of the
        # full frame is on it (for both apps the same test as in tmux)
        t0 = time.perf_counter()
        app = make()
        full: asyncio.Future = asyncio.get_running_loop().create_future()
        screen = _Screen(TERM_W, TERM_H)
        display = app._display

        def shown(scr, update) -> None:
            display(scr, update)
            if update is None or full.done() or not hasattr(update, "render_segments"):
                return
            update.render_segments(app.console)   # what a terminal would be sent (headless skips it)
            screen.apply(update)
            if screen.shows(want):
                full.set_result((time.perf_counter(), time.process_time()))

        app._display = shown
        async with app.run_test(size=(TERM_W, TERM_H)):
            try:
                t1, c1 = await asyncio.wait_for(full, 30)
            except asyncio.TimeoutError:
                raise SystemExit(f"{which}: no full frame in 30 s") from None
            if hasattr(app, "frames_applied") and not app.frames_applied:
                raise SystemExit("first paint without a frame")
            print(json.dumps({"app_s": t1 - t0, "cpu_s": c1, "since_start_s": t1 - t_start}), flush=True)

    asyncio.run(measure())


def _bare_app_class():
    from textual.app import App, ComposeResult
    from textual.containers import Horizontal, Vertical
    from textual.widgets import Footer, Static

    class BareApp(App):
        """Five bordered panes, a header and a footer (as benchmarks/bench_ui.py always had it)."""

        CSS = "Static { border: round $primary; height: 1fr; width: 1fr; }"

        def compose(self) -> ComposeResult:
            yield Static("header", classes="h")
            with Vertical():
                with Horizontal():
                    yield Static("ram")
                    yield Static("ring")
                with Horizontal():
                    yield Static("exits")
                    yield Static("iommu")
                    yield Static("nic")
            yield Footer()

    return BareApp


def _worker_cpu(state: str, seconds: float) -> None:
    import asyncio

    from iovtui.sim.preset import load_preset
    from iovtui.ui.app import create_app

    async def measure() -> None:
        app = create_app(load_preset("steady-stream"), "virtio", start_paused=(state == "paused"))
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.pause(0.5)
            c0, w0 = time.process_time(), time.perf_counter()
            await asyncio.sleep(seconds)
            c1, w1 = time.process_time(), time.perf_counter()
            frames = app.frames_applied
        print(json.dumps({"cpu": (c1 - c0) / (w1 - w0), "frames": frames}), flush=True)

    asyncio.run(measure())


def _peak_rss_kib() -> tuple[float, str]:
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return float(line.split()[1]), "VmHWM"
    except OSError:
        pass
    import resource

    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return (r / 1024 if sys.platform == "darwin" else float(r)), "ru_maxrss"


#: the child of the memory case: `iovtui run …` exactly as `python -m iovtui run …`
#: runs it (the CLI is a program to the bench, never a module it imports),
#: with a hook that prints the process's own peak RSS when it exits
_RSS_CHILD = (
    "import atexit, json, runpy, sys\n"
    "from iovtui.bench import _peak_rss_kib\n"
    "def report():\n"
    "    kib, source = _peak_rss_kib()\n"
    "    print('@peak ' + json.dumps({'peak_rss_kib': kib, 'source': source}), flush=True)\n"
    "atexit.register(report)\n"
    "sys.argv[0] = 'iovtui'\n"
    "runpy.run_module('iovtui', run_name='__main__', alter_sys=True)\n"
)


def _rss_child(packets: int) -> tuple[dict, float]:
    """(summary + peak, wall seconds) of one `iovtui run` process."""
    out, wall = _child(["-c", _RSS_CHILD, "run", "--preset", "line-rate", "--technique", "virtio",
                        "--set", "virtio.vhost=true", "--packets", str(packets), "--json"], timeout=3600)
    run_out, _, peak = out.rpartition("@peak ")
    try:
        summary, d = json.loads(run_out), json.loads(peak)
    except ValueError:
        raise BenchError(f"no result in child output: {out[:200]!r}") from None
    d["delivered"] = summary["packets"]["delivered"]
    return d, wall


def _worker_rss_vms(vms: int, packets: int, technique: str) -> None:
    """A run of ``vms`` VMs (bench's dense preset) in this fresh process: its
    peak RSS, and how many guest pages hold bytes (written by the run)."""
    from iovtui.sim.world import Simulation

    sim = Simulation(dense_preset(vms, packets=packets), technique, seed=1, packets=packets)
    sim.run()
    kib, source = _peak_rss_kib()
    zero = bytes(4096)
    pages = 0
    for vm in sim.vms:       # only up to what a layout or a write reached (the rest was never written)
        ram, top = vm.mem.ram, max(vm.mem.used, vm.mem.high_water)
        pages += sum(1 for off in range(0, top, 4096) if ram[off:off + 4096] != zero)
    print(json.dumps({"peak_rss_kib": kib, "source": source, "guest_pages": pages,
                      "delivered": sim.metrics.delivered}), flush=True)


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "--worker":
        if sys.argv[2] == "bare-app":
            _bare_app_class()().run()
        elif sys.argv[2] == "first-frame":
            _worker_first_frame(sys.argv[3])
        elif sys.argv[2] == "cpu":
            _worker_cpu(sys.argv[3], float(sys.argv[4]))
        elif sys.argv[2] == "rss-vms":
            _worker_rss_vms(int(sys.argv[3]), int(sys.argv[4]), sys.argv[5])
        else:
            raise SystemExit(f"unknown worker {sys.argv[2]!r}")
    else:
        raise SystemExit("use 'iovtui bench'")
