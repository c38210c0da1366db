"""UI benchmarks (not tests): start-to-first-frame and CPU use.

    python benchmarks/bench_ui.py [--seconds S] [--runs N]

1. Start-to-first-frame: from starting a Python process to the first screen
   update that shows the full frame (every pane's title, the stats line, the
   footer's keys), against a bare Textual app with five bordered panes, a
   header and a footer (headless, 120×40, best of N each, measured the same
   way; each run a fresh process, so imports count): wall and CPU time.  The
   construct-to-paint part alone is shown too.
2. CPU while paused and while running at the default speed: process CPU time
   over S seconds of wall time divided by S (1.0 = one full core).

The measuring code lives in `iovtui.bench` (also run by `iovtui bench`).
"""

from __future__ import annotations

import argparse

from iovtui.bench import _bytecode_cache, cpu, first_frame


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    with _bytecode_cache():
        f = first_frame(args.runs)
    print(f"start-to-first-frame: iovtui {f['iovtui_ms']:.0f} ms, bare five-pane app {f['bare_ms']:.0f} ms "
          f"→ {f['ratio']:.2f}×; CPU {f['iovtui_cpu_ms']:.0f} vs {f['bare_cpu_ms']:.0f} ms → {f['cpu_ratio']:.2f}× "
          f"(construct → paint {f['iovtui_app_ms']:.0f} vs {f['bare_app_ms']:.0f} ms, {f['app_ratio']:.2f}×)")
    c = cpu(args.seconds)
    print(f"CPU while paused:  {c['paused_percent']:.1f} % of a core over {args.seconds:g} s")
    print(f"CPU while running: {c['running_percent']:.1f} % of a core over {args.seconds:g} s at the default speed")


if __name__ == "__main__":
    main()
