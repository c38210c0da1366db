"""Headless packets per second, per technique (a benchmark, not a test).

    python benchmarks/bench_headless.py [--packets N] [--repeat R]

Runs the line-rate preset (1514-byte frames at line rate) with tracing
off, exactly as `iovtui run` does, and prints packets/s for each built
technique (virtio with vhost off and on).  Best of R runs.
"""

from __future__ import annotations

import argparse
import platform
import time

from iovtui.sim.paths import available
from iovtui.sim.preset import load_preset
from iovtui.sim.world import Simulation


def measure(preset, technique: str, packets: int, repeat: int) -> tuple[float, dict]:
    best = 0.0
    summary: dict = {}
    for _ in range(repeat):
        sim = Simulation(preset, technique, seed=1, packets=packets)
        t0 = time.perf_counter()
        sim.run()
        dt = time.perf_counter() - t0
        best = max(best, sim.metrics.offered / dt)
        summary = sim.summary()
    return best, summary


def cases():
    base = load_preset("line-rate")
    for tech in available():
        if tech == "virtio":
            yield "virtio (vhost off)", base.with_options(virtio={"vhost": False}), tech
            yield "virtio (vhost on)", base.with_options(virtio={"vhost": True}), tech
        elif tech == "sriov":
            yield "sriov (posted off)", base, tech
            yield "sriov (posted on)", base.with_options(sriov={"posted_interrupts": True}), tech
        else:
            yield tech, base, tech


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--packets", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    print(f"# headless packets/s · line-rate 1514 B · {args.packets:,} packets · best of {args.repeat}")
    print(f"# {platform.python_implementation()} {platform.python_version()} · {platform.machine()}")
    for name, preset, tech in cases():
        pps, s = measure(preset, tech, args.packets, args.repeat)
        print(f"{name:<22} {pps:>10,.0f} pkt/s   (delivered {s['packets']['delivered']:,}, "
              f"exits/pkt {s['exits']['per_packet']:.3f})")


if __name__ == "__main__":
    main()
