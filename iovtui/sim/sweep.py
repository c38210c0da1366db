"""Load sweeps: each technique across offered loads, one run per point.

A point is exactly ``iovtui run --preset P --technique T --packets N --seed S
--set traffic.rate=R`` (plus the point's other ``--set`` words, see
:func:`point_preset`): its figures are read from that run's summary (the
``run --json`` object), never computed again here; only the divisions by
delivered packets (interrupts, kicks, exits of one reason) are made, the way
the summary's own ``exits.per_packet`` is.

Points are independent seeded runs, so they can run in parallel processes
(:func:`run_sweep`, ``concurrent.futures.ProcessPoolExecutor``) and the
result, reassembled in order, is the same whatever the number of jobs.

No textual or rich here: the CLI (``iovtui sweep``) and the app's sweep screen
both draw from :func:`run_sweep`'s rows.
"""

from __future__ import annotations

import math
import os
import re
import signal
from typing import Any, Callable, Iterable, Sequence

from .preset import Preset

__all__ = ["SWEEP_TECHNIQUES", "DEFAULT_RATES", "MEASURES", "MAX_RATE", "MIN_RATE", "MAX_POINTS",
           "parse_rate_text", "parse_rates", "log_rates", "rate_label", "point_preset", "offered_pps",
           "preset_pps", "how_load_applies", "run_point", "run_sweep", "default_jobs", "SweepError",
           "measure_value", "chart_series", "TECH_LABELS"]

SWEEP_TECHNIQUES = ("emulation", "virtio", "sriov")
#: the offered loads (packets/s) a sweep runs without --rates / --from
DEFAULT_RATES = (200.0, 2_000.0, 20_000.0, 200_000.0, 1_000_000.0)
MIN_RATE = 1.0                 # what traffic.rate accepts (sim.preset.parse_rate)
MAX_RATE = 100e6
MIN_POINTS, MAX_POINTS = 2, 50
RATE_FORMS = "packets/s, 1 pps..100 Mpps, as 200, 2k, 1.5M or 20kpps"

#: what a curve can show: name → (axis label with unit, row key, scale)
MEASURES: dict[str, tuple[str, str, float]] = {
    "exits": ("VM exits per packet", "exits_per_packet", 1.0),
    "interrupts": ("interrupts per packet", "irq_per_packet", 1.0),
    "cpu": ("host CPU per packet (µs)", "cpu_ns_per_packet", 1e-3),
    "p50": ("latency p50 (µs)", "p50_ns", 1e-3),
    "p99": ("latency p99 (µs)", "p99_ns", 1e-3),
    "throughput": ("throughput (Gb/s)", "throughput_gbps", 1.0),
}


class SweepError(ValueError):
    """A bad sweep argument; ``str(err)`` is the one line to show."""


# -- rates -------------------------------------------------------------------------
_RATE_RX = re.compile(r"([0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)\s*([kmg]?)\s*(pps)?", re.I)
_MULT = {"": 1.0, "k": 1e3, "m": 1e6, "g": 1e9}


def parse_rate_text(s: str) -> float:
    """``"200"``, ``"2k"``, ``"1.5M"``, ``"20kpps"`` → packets/s (1..100 M)."""
    text = s.strip().replace("_", "").replace(",", "")
    m = _RATE_RX.fullmatch(text)
    if not m:
        raise SweepError(f"rate {s!r} is not a rate; give {RATE_FORMS}")
    v = float(m.group(1)) * _MULT[m.group(2).lower()]
    if not MIN_RATE <= v <= MAX_RATE or v != v:
        raise SweepError(f"rate {s!r} is {v:,.6g} packets/s; give {RATE_FORMS}")
    return v


def parse_rates(text: str) -> list[float]:
    """A comma-separated list of rates, kept in the order given, each once."""
    parts = [p for p in (x.strip() for x in text.split(",")) if p]
    if not parts:
        raise SweepError(f"--rates is empty; give a comma-separated list of {RATE_FORMS}")
    if len(parts) > MAX_POINTS:
        raise SweepError(f"--rates gives {len(parts)} rates; at most {MAX_POINTS}")
    rates = [parse_rate_text(p) for p in parts]
    if len(set(rates)) != len(rates):
        raise SweepError("--rates names a rate twice; give each once")
    return rates


def log_rates(lo: float, hi: float, points: int) -> list[float]:
    """``points`` rates from ``lo`` to ``hi``, evenly spaced on a log scale,
    each rounded to 3 significant figures (the ends exact)."""
    if not lo < hi:
        raise SweepError(f"--from {rate_label(lo)} must be below --to {rate_label(hi)}")
    if not MIN_POINTS <= points <= MAX_POINTS:
        raise SweepError(f"--points must be {MIN_POINTS}..{MAX_POINTS}, got {points}")
    step = math.log(hi / lo) / (points - 1)
    out = [lo] + [float(f"{lo * math.exp(step * i):.3g}") for i in range(1, points - 1)] + [hi]
    return list(dict.fromkeys(out))            # (rounding can merge two close ones)


def rate_label(pps: float) -> str:
    """200, 2k, 1.5M: a rate as the CLI takes it."""
    for unit, scale in (("M", 1e6), ("k", 1e3)):
        if pps >= scale:
            return f"{pps / scale:.3g}{unit}"
    return f"{pps:.3g}"


def _toml_number(v: float) -> int | float:
    return int(v) if float(v).is_integer() else v


# -- a point -----------------------------------------------------------------------
def offered_pps(sim) -> float | None:
    """The mean rate (packets/s) at which ``sim``'s traffic generator offers
    frames, all streams together: the configured rate, capped by each port's
    link (``Traffic.interval_ns``), burst gaps included.  None for ping-pong
    (a closed loop: its rate is its round trip)."""
    tr = sim.traffic
    if tr.pattern == "pingpong":
        return None
    sizes = sim.preset.traffic["sizes"]
    total_w = sum(w for _s, w in sizes)
    shares = [st.share for st in tr.streams] or [1.0]
    pps = 0.0
    for share in shares:
        mean = sum(tr.interval_ns(s, share) * w for s, w in sizes) / total_w
        if tr.pattern == "burst":
            mean += tr.burst_gap_ns / tr.burst_size
        pps += 1e9 / mean
    return pps


def preset_pps(preset: Preset, technique: str = "virtio") -> float | None:
    """The preset's own offered load in packets/s (its operating point), or
    None for ping-pong."""
    from .world import Simulation

    if preset.traffic["pattern"] == "pingpong":
        return None
    return offered_pps(Simulation(preset, technique, seed=1, packets=1))


def point_preset(preset: Preset, rate: float, technique: str = "virtio") -> tuple[Preset, list[str]]:
    """``preset`` with its offered load set to ``rate`` packets/s in total, and
    the ``--set`` words that make the same preset for ``iovtui run``.

    ``traffic.rate`` is already the total over every VM and port (the
    generator shares it round-robin, two ports by their share of the VMs), so
    setting it to the rate scales every stream at once.  A burst preset keeps
    its burst size and the pace inside a burst, and its gap between bursts is
    set so that the mean is the rate (down to 0.1 µs; above the burst's pace
    the pace is raised to the rate)."""
    if preset.traffic["pattern"] == "pingpong":
        raise SweepError(f"preset {preset.name!r} is ping-pong traffic: its load is set by the round trip, "
                         "not by a rate; sweep an open-loop preset (steady, burst or poisson)")
    if preset.traffic["pattern"] != "burst":
        sets = [f"traffic.rate={_toml_number(rate)}"]
        return preset.with_options(via="--set " + sets[0], traffic={"rate": _toml_number(rate)}), sets
    no_gap = preset.with_options(traffic={"burst_gap_us": 0.1})
    pace = preset_pps(no_gap, technique) or rate
    bs = preset.traffic["burst_size"]
    gap_us = bs * (1e6 / rate - 1e6 / pace)
    if gap_us > 1e6:                           # (traffic.burst_gap_us is at most 1 s)
        low = bs / (1 + bs / pace)
        raise SweepError(f"rate {rate_label(rate)} pps is below what preset {preset.name!r} can offer: its "
                         f"bursts of {bs} may be at most 1 s apart; give rates of at least {math.ceil(low):,} pps")
    traffic: dict[str, Any] = {}
    if gap_us < 0.1:
        gap_us = 0.1
        traffic["rate"] = _toml_number(rate)
    traffic["burst_gap_us"] = round(gap_us, 3)
    sets = [f"traffic.{k}={v}" for k, v in traffic.items()]
    return preset.with_options(via="--set " + " --set ".join(sets), traffic=traffic), sets


def how_load_applies(preset: Preset) -> str:
    """One line saying how a sweep's rate reaches this preset's traffic."""
    t = preset.traffic
    n = len(preset.vms) if t["targets"] == "all" else len(t["targets"])
    ports = len({v.port for v in preset.vms})
    who = f"{n} VMs round-robin" if n > 1 else "one VM"
    if ports > 1:
        who += f" on {ports} ports, each port carrying its VMs' share"
    line = f"the rate is the total offered load (traffic.rate, packets/s), shared by {who}"
    if t["pattern"] == "burst":
        line += (f"; bursts of {t['burst_size']} keep their pace, the gap between them is set so the "
                 "mean is the rate")
    elif t["pattern"] == "poisson":
        line += "; Poisson arrivals around that mean"
    elif t["pattern"] == "steady":
        # simplified: a real sender's timer and NIC bunch frames, which lets one interrupt carry
        # several at loads far below saturation (the measured guests' curves fall from 2k frames/s)
        line += ("; steady arrivals are exactly periodic, so frames share an interrupt only once the "
                 "host or guest is busy when the next one comes (real senders bunch frames: try "
                 "--set traffic.pattern=\"poisson\")")
    return line + "; a link never carries more than its line rate (offered_pps says what it carried)"


def _per(n: float, delivered: int) -> float | None:
    return round(n / delivered, 4) if delivered else None


def row_from_summary(technique: str, rate: float, s: dict[str, Any], offered: float | None,
                     sets: Sequence[str]) -> dict[str, Any]:
    """One point's figures, read from its run's summary (``run --json``)."""
    pk = s["packets"]
    d = pk["delivered"]
    irq = s["interrupts"]
    return {
        "technique": technique,
        "rate_pps": _toml_number(rate),
        "offered_pps": round(offered, 1) if offered is not None else None,
        "offered": pk["offered"], "delivered": d, "dropped": pk["dropped"],
        "delivered_ratio": round(d / pk["offered"], 4) if pk["offered"] else None,
        "exits_per_packet": s["exits"]["per_packet"] if d else None,
        "exits_by_reason_per_packet": {k: _per(v, d) for k, v in s["exits"]["by_reason"].items()},
        "irq_per_packet": _per(irq["injected"] + irq["posted"], d),
        "host_irq_per_packet": _per(irq["host"], d),
        "kicks_per_packet": _per(s["notifications"]["kicks"], d),
        "copies_per_packet": s["copies_per_packet"] if d else None,
        "cpu_ns_per_packet": s["cpu_ns_per_packet"] if d else None,
        "p50_ns": s["latency_ns"]["p50"] if d else None,
        "p99_ns": s["latency_ns"]["p99"] if d else None,
        "throughput_gbps": s["throughput_gbps"],
        "drops_by_reason": dict(s["drops_by_reason"]),
        "set": list(sets),
    }


def run_point(job: tuple[Preset, str, float, int | None, int, Sequence[str]]) -> dict[str, Any]:
    """One point: (the point's preset from :func:`point_preset`, technique,
    rate, packets, seed, its --set words) → its row.  A top-level function,
    so a process pool can send it to a worker."""
    from .world import Simulation

    p, technique, rate, packets, seed, sets = job
    sim = Simulation(p, technique, seed=seed, packets=packets)
    sim.run()
    return row_from_summary(technique, rate, sim.summary(), offered_pps(sim), sets)


def measure_value(row: dict[str, Any], measure: str) -> float | None:
    """The figure a chart of ``measure`` (a MEASURES name) plots for a row."""
    _label, key, scale = MEASURES[measure]
    v = row.get(key)
    return None if v is None else v * scale


#: the techniques' names on a chart's legend, and the marker each has (never colour alone)
TECH_LABELS = {"emulation": "device emulation (e1000)", "virtio": "virtio", "sriov": "SR-IOV"}


def chart_series(rows: Sequence[dict[str, Any]], measure: str) -> dict[str, list[tuple[float, float]]]:
    """technique → [(offered pps, value)] for a chart of ``measure``, in
    rate order; a point with no figure (nothing delivered) is left out."""
    out: dict[str, list[tuple[float, float]]] = {}
    for r in rows:
        v = measure_value(r, measure)
        x = r["offered_pps"] or r["rate_pps"]
        pts = out.setdefault(r["technique"], [])
        if v is not None:
            pts.append((float(x), float(v)))
    for pts in out.values():
        pts.sort()
    return out


# -- the sweep ---------------------------------------------------------------------
def default_jobs() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def _quiet_worker() -> None:
    # Ctrl-C goes to the whole process group: the parent stops the workers,
    # so a worker does not print a traceback of its own
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def run_sweep(preset: Preset, techniques: Iterable[str], rates: Sequence[float], packets: int | None,
              seed: int, jobs: int | None = None,
              on_point: Callable[[int, int, dict[str, Any]], None] | None = None,
              stop: Callable[[], bool] | None = None, mp_context=None,
              pool: bool = False) -> list[dict[str, Any]]:
    """Every technique × rate, in that order (technique-major).  ``jobs``
    processes (default: one per core); one job, or one point, runs in this
    process, unless ``pool`` (the app: the model never runs in its
    process).  ``on_point(done, total, row)`` after each point arrives (in
    the order they finish); ``stop()`` true ends the sweep early (the rows
    so far, in order).  Every point is checked to be runnable first, so a
    preset a technique cannot lay out fails before any work."""
    from .world import Simulation

    techniques = list(techniques)
    for t in techniques:
        Simulation(preset, t, packets=1)          # PresetError: it cannot lay out its rings
    points = [point_preset(preset, r) for r in rates]   # SweepError for ping-pong
    jobs_list = [(p, t, r, packets, seed, sets) for t in techniques for r, (p, sets) in zip(rates, points)]
    total = len(jobs_list)
    n_jobs = min(jobs or default_jobs(), total)
    results: list[dict[str, Any] | None] = [None] * total
    done = 0
    if n_jobs <= 1 and not pool:
        for i, job in enumerate(jobs_list):
            if stop is not None and stop():
                break
            results[i] = run_point(job)
            done += 1
            if on_point is not None:
                on_point(done, total, results[i])
        return [r for r in results if r is not None]
    import concurrent.futures as cf

    ex = cf.ProcessPoolExecutor(max_workers=n_jobs, mp_context=mp_context, initializer=_quiet_worker)
    try:
        futs = {ex.submit(run_point, job): i for i, job in enumerate(jobs_list)}
        pending = set(futs)
        while pending:
            finished, pending = cf.wait(pending, timeout=0.2, return_when=cf.FIRST_COMPLETED)
            for f in finished:
                i = futs[f]
                results[i] = f.result()
                done += 1
                if on_point is not None:
                    on_point(done, total, results[i])
            if stop is not None and stop():
                break
    except cf.process.BrokenProcessPool:
        _stop_workers(ex)
        raise SweepError("a worker process died (killed, or out of memory?); try fewer --jobs or "
                         "fewer --packets") from None
    except BaseException:
        _stop_workers(ex)
        raise
    if pending:
        _stop_workers(ex)
    else:
        ex.shutdown(wait=True)
    return [r for r in results if r is not None]


def _stop_workers(ex) -> None:
    """Cancel what has not started and end the workers now (a point can take
    seconds; Python 3.11's executor has no terminate of its own, and its
    shutdown forgets the processes, so they are taken first)."""
    procs = list((getattr(ex, "_processes", None) or {}).values())
    for p in procs:
        try:
            p.terminate()
        except Exception:
            pass
    ex.shutdown(wait=False, cancel_futures=True)
    for p in procs:
        try:
            p.join(2)
        except Exception:
            pass
