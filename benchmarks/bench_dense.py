"""Peak RSS of a dense host against one VM over packet counts (a benchmark, not a test).

    python benchmarks/bench_dense.py [PACKETS ...]      (default 5000 10000 15000 20000)

For each count and technique, one process runs the bench's dense preset with 1
VM and one with 126 (two ports × 63 VFs, line rate, 1514-byte frames), as
`iovtui bench`'s dense case does, and prints both peaks, their ratio, the guest
pages the runs really wrote, and the floor: the 1-VM process plus the pages the
126 VMs' frames fill (each frame lands in its own 2 KiB RX buffer until every
VM has used all 256), the least a faithful run can peak at.  The measuring
code lives in `iovtui.bench`.
"""

from __future__ import annotations

import argparse

from iovtui.bench import AIM_DENSE_RSS_RATIO, dense_rss


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("packets", nargs="*", type=int, default=[5_000, 10_000, 15_000, 20_000])
    args = ap.parse_args()
    print(f"# peak RSS, 1 VM against 126, one process per run · aim ≤ {AIM_DENSE_RSS_RATIO}×")
    print(f"{'packets':>8}  {'technique':<10} {'1 VM':>9} {'126 VMs':>9} {'ratio':>7} {'written':>10} {'floor':>7}")
    for n in args.packets:
        for r in dense_rss(n)["results"]:
            print(f"{n:>8,}  {r['technique']:<10} {r['one_peak_rss_mib']:>5.1f} MiB {r['dense_peak_rss_mib']:>5.1f} MiB"
                  f" {r['ratio']:>6.2f}× {r['dense_guest_written_mib']:>6.1f} MiB {r['floor_ratio']:>6.2f}×", flush=True)


if __name__ == "__main__":
    main()
