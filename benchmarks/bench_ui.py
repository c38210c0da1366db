"""UI benchmarks (not tests): start-to-first-frame and CPU use.

    python benchmarks/bench_ui.py [--seconds S]

1. Start-to-first-frame: wall time from constructing the app to the end of
   its first screen refresh (which, for iovtui, shows the first Frame),
   against a bare Textual app with five bordered panes, a header and a
   footer (headless, 120×40, best of 5 each, measured the same way).
2. CPU while paused and while running at the default speed: process CPU time
   over S seconds of wall time divided by S (1.0 = one full core).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

from textual.app import App, ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import Footer, Static

from iovtui.sim.preset import load_preset
from iovtui.ui.app import create_app


class BareApp(App):
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


async def first_frame(make) -> float:
    """Wall time from constructing the app to the end of its first screen
    refresh (for iovtui that refresh already shows the first Frame: it is
    applied in on_mount).  Measured the same way for both apps."""
    t0 = time.perf_counter()
    app = make()
    painted: asyncio.Future = asyncio.get_running_loop().create_future()

    def mark() -> None:
        if not painted.done():
            painted.set_result(time.perf_counter())

    app.call_later(lambda: app.call_after_refresh(mark))
    async with app.run_test(size=(120, 40)):
        t1 = await painted
        if hasattr(app, "frames_applied"):
            assert app.frames_applied > 0
    return t1 - t0


async def cpu(paused: bool, seconds: float) -> float:
    app = create_app(load_preset("steady-stream"), "virtio", start_paused=paused)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause(0.5)
        c0, w0 = time.process_time(), time.perf_counter()
        await asyncio.sleep(seconds)
        c1, w1 = time.process_time(), time.perf_counter()
        frames = app.frames_applied
    return (c1 - c0) / (w1 - w0), frames


async def main(seconds: float) -> None:
    preset = load_preset("steady-stream")
    bare = [await first_frame(BareApp) for _ in range(5)]
    ours = [await first_frame(lambda: create_app(preset, "virtio")) for _ in range(5)]
    b, o = min(bare), min(ours)
    print(f"start-to-first-frame: iovtui {o * 1000:.0f} ms, bare five-pane app {b * 1000:.0f} ms "
          f"→ {o / b:.2f}× (median {statistics.median(ours) * 1000:.0f} vs {statistics.median(bare) * 1000:.0f} ms)")
    p, pf = await cpu(True, seconds)
    r, rf = await cpu(False, seconds)
    print(f"CPU while paused:  {100 * p:.1f} % of a core over {seconds:g} s")
    print(f"CPU while running: {100 * r:.1f} % of a core over {seconds:g} s at the default speed")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=5.0)
    asyncio.run(main(ap.parse_args().seconds))
