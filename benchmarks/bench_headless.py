"""Headless packets per second, per technique (a benchmark, not a test).

    python benchmarks/bench_headless.py [--packets N] [--repeat R]

Runs the line-rate preset (1514-byte frames at line rate) with tracing off,
exactly as `iovtui run` does, and prints packets/s for each built technique
variant (virtio with vhost off and on, SR-IOV with posted interrupts off and
on).  Best of R runs.  The measuring code lives in `iovtui.bench` (also run
by `iovtui bench`).
"""

from __future__ import annotations

import argparse
import platform

from iovtui.bench import VARIANT_NAMES, headless_cases, measure_headless


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--packets", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    print(f"# headless packets/s · line-rate 1514 B · {args.packets:,} packets · best of {args.repeat}")
    print(f"# {platform.python_implementation()} {platform.python_version()} · {platform.machine()}")
    for label, preset, tech in headless_cases():
        pps, s = measure_headless(preset, tech, args.packets, args.repeat)
        print(f"{VARIANT_NAMES.get(label, label):<22} {pps:>10,.0f} pkt/s   (delivered {s['packets']['delivered']:,}, "
              f"exits/pkt {s['exits']['per_packet']:.3f})")


if __name__ == "__main__":
    main()
