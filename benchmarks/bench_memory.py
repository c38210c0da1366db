"""Peak memory of long headless runs (a benchmark, not a test).

    python benchmarks/bench_memory.py [PACKETS ...]      (default 100000 1000000)

Runs `iovtui run --preset line-rate --technique virtio --set virtio.vhost=true
--packets N` once per N, each in its own process, and prints its wall time and
peak RSS (the process's own high-water mark).  Flat memory means the peaks
match.  The measuring code lives in `iovtui.bench` (also run by `iovtui bench`).
"""

from __future__ import annotations

import argparse

from iovtui.bench import rss_run


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("packets", nargs="*", type=int, default=[100_000, 1_000_000])
    args = ap.parse_args()
    print("# iovtui run --preset line-rate --technique virtio --set virtio.vhost=true, one process per run")
    for n in args.packets:
        r = rss_run(n)
        print(f"{n:>10,} packets  {r['wall_s']:>7.2f} s  peak RSS {r['peak_rss_mib']:.1f} MiB "
              f"({r['source']}; delivered {r['delivered']:,})")


if __name__ == "__main__":
    main()
