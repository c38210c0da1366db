"""The sweep view (`S`): the three techniques' curves on the current preset,
offered load on a log scale across, the chosen measure up.

The points are ``sim.sweep.run_sweep``'s, computed in worker processes (a
process pool fed from a worker thread, so neither the main view nor this
screen waits for the model); each point is drawn as it arrives and a
progress line counts them.  Escape closes the view and stops the work.

The chart is textual-plotext's ``PlotextPlot`` (imported with this screen,
on first use).  Every technique has its own marker character as well as its
colour, and a legend line names them, so it reads under NO_COLOR and the
colour-blind palette (which maps the colours to Okabe–Ito, see ui.palette).
At the app's smallest size (60×16) the chart keeps its axes, curves and
legend with fewer ticks; below it the app's too-small cover says what is
needed, and the chart comes back when the window grows.
"""

from __future__ import annotations

import math
import multiprocessing
import threading
from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.css.query import NoMatches
from textual.widgets import Footer, Static
from textual_plotext import PlotextPlot

from ...sim.preset import Preset
from ...sim.sweep import (MEASURES, SWEEP_TECHNIQUES, TECH_LABELS, chart_series, default_jobs, log_rates,
                          preset_pps, rate_label, run_sweep)
from .base import SteadyResize

__all__ = ["SweepScreen", "SWEEP_MEASURES", "SWEEP_KEYS", "APP_RATES", "APP_PACKETS", "MARKERS"]

#: the measures in key order (1–6), and `m` cycles them
SWEEP_MEASURES = ("exits", "interrupts", "cpu", "p50", "p99", "throughput")
SHORT = {"exits": "exits/pkt", "interrupts": "irq/pkt", "cpu": "CPU/pkt", "p50": "p50", "p99": "p99",
         "throughput": "Gb/s"}
#: the loads the app sweeps, and packets per point (a sweep in seconds on two cores)
APP_RATES = tuple(log_rates(200, 1_000_000, 10))
APP_PACKETS = 2000
#: a marker character and a colour (Okabe–Ito) per technique: never colour alone
MARKERS = {"emulation": "o", "virtio": "x", "sriov": "+"}
COLOURS = {"emulation": (230, 159, 0), "virtio": (86, 180, 233), "sriov": (0, 158, 115)}
OPERATING = (204, 121, 167)
SWEEP_KEYS = [
    ("m / M", "next / previous measure: exits, interrupts, CPU per packet, latency p50, p99, throughput"),
    ("1–6", "pick a measure: 1 exits/pkt · 2 interrupts/pkt · 3 CPU/pkt · 4 p50 · 5 p99 · 6 Gb/s"),
    ("escape / S", "back to the main view (the sweep stops)"),
    ("?", "this help"),
    ("q", "quit"),
]


def _start_resource_tracker() -> None:
    """multiprocessing's resource tracker, which a spawned worker needs, is
    started with the process's stderr passed on; inside the app stderr is
    Textual's capture, whose fileno() is not a descriptor ("bad value(s) in
    fds_to_keep"), so start it with the real one."""
    import sys
    from multiprocessing import resource_tracker

    saved = sys.stderr
    try:
        if sys.__stderr__ is not None:
            sys.stderr = sys.__stderr__
        resource_tracker.ensure_running()
    finally:
        sys.stderr = saved


class SweepScreen(SteadyResize, Screen):
    """Full-size: a title line, the chart, the legend and progress, the keys."""

    DEFAULT_CSS = """
    SweepScreen { layout: vertical; }
    SweepScreen #sweep-title { height: 1; padding: 0 1; text-style: bold; }
    SweepScreen #sweep-plot { height: 1fr; }
    SweepScreen #sweep-legend { height: auto; padding: 0 1; }
    """
    BINDINGS = [
        Binding("m", "measure(1)", "next measure"),
        Binding("M", "measure(-1)", "previous", show=False),
        *[Binding(str(i + 1), f"pick({i})", SHORT[m], show=False) for i, m in enumerate(SWEEP_MEASURES)],
        Binding("escape,S", "close", "close", key_display="esc"),
        Binding("question_mark", "help", "help", key_display="?"),
        # the main view's keys do nothing here (they would act on the run behind)
        Binding("space,n,b,plus,equals_sign,minus,a,i,p,c,e,v,r,k,f,g,w,enter,left,right,up,down", "main_only",
                show=False),
    ]

    def __init__(self, preset: Preset, seed: int = 1, packets: int | None = None,
                 rates: tuple[float, ...] | None = None, jobs: int | None = None) -> None:
        super().__init__()
        self.preset = preset
        self.seed = seed
        self.packets = packets if packets is not None else APP_PACKETS
        self.rates = rates if rates is not None else APP_RATES
        self.techniques = SWEEP_TECHNIQUES
        #: leave a core to the app when there are few
        self.jobs = jobs if jobs is not None else max(1, default_jobs() - 1)
        self.measure = "exits"
        self.rows: list[dict[str, Any]] = []
        self.total = len(self.techniques) * len(self.rates)
        self.done = 0
        self.operating: float | None = None
        self.error: str | None = None
        self.finished = False
        self._cancel = threading.Event()

    def compose(self) -> ComposeResult:
        yield Static(id="sweep-title")
        yield PlotextPlot(id="sweep-plot")
        yield Static(id="sweep-legend")
        yield Footer()

    def on_mount(self) -> None:
        self._redraw()
        self.run_worker(self._work, thread=True, group="sweep", exit_on_error=False)

    # -- the work (a thread; the points run in processes) ---------------------------------
    def _work(self) -> None:
        try:
            op = preset_pps(self.preset)
            self.app.call_from_thread(self._set_operating, op)
            # spawned workers: forking a process that runs Textual's threads is unsafe
            _start_resource_tracker()
            run_sweep(self.preset, self.techniques, self.rates, self.packets, self.seed, jobs=self.jobs,
                      on_point=self._arrived, stop=self._cancel.is_set,
                      mp_context=multiprocessing.get_context("spawn"), pool=True)
        except Exception as e:          # SweepError (ping-pong), PresetError: one line on screen
            if not self._cancel.is_set():
                self.app.call_from_thread(self._failed, str(e))
            return
        if not self._cancel.is_set():
            self.app.call_from_thread(self._finish)

    def _arrived(self, done: int, _total: int, row: dict[str, Any]) -> None:
        if not self._cancel.is_set():
            self.app.call_from_thread(self._add, done, row)

    def _set_operating(self, pps: float | None) -> None:
        self.operating = pps
        self._redraw()

    def _add(self, done: int, row: dict[str, Any]) -> None:
        self.done = done
        self.rows.append(row)
        self._redraw()

    def _finish(self) -> None:
        self.finished = True
        self._redraw()

    def _failed(self, why: str) -> None:
        self.error = why
        self._redraw()

    # -- drawing -------------------------------------------------------------------------
    def _progress(self) -> str:
        if self.error:
            return f"✗ {self.error}"
        if self.finished:
            return f"✓ {self.total} points · {self.packets:,} packets each · seed {self.seed}"
        width = 20
        fill = round(width * self.done / self.total) if self.total else width
        return (f"computing ▕{'█' * fill}{'░' * (width - fill)}▏ {self.done}/{self.total} points "
                f"({self.jobs} process{'es' if self.jobs > 1 else ''}, {self.packets:,} packets each)")

    def _redraw(self) -> None:
        if not self.is_mounted:
            return
        label = MEASURES[self.measure][0]
        keys = " ".join(f"{i + 1} {SHORT[m].removesuffix('/pkt')}" for i, m in enumerate(SWEEP_MEASURES))
        try:
            title = self.query_one("#sweep-title", Static)
        except NoMatches:                 # a redraw asked for by a resize while the screen goes away
            return
        title.update(f"Sweep · {self.preset.name} · {label}")
        legend = Text()
        for t in self.techniques:          # each marker in its curve's colour, its name beside it
            legend.append(MARKERS[t], style="bold #{:02x}{:02x}{:02x}".format(*COLOURS[t]))
            legend.append(f" {TECH_LABELS[t]}  ")
        if self.operating:
            legend.append("┊", style="#{:02x}{:02x}{:02x}".format(*OPERATING))
            legend.append(f" this preset ({rate_label(self.operating)} pps)")
        legend.append(f"\n{self._progress()}\nmeasure: m next · {keys} · esc closes")
        self.query_one("#sweep-legend", Static).update(legend)
        self._draw(self.query_one("#sweep-plot", PlotextPlot))

    def _draw(self, plot: PlotextPlot) -> None:
        plt = plot.plt
        plt.clear_figure()
        label, _key, _scale = MEASURES[self.measure]
        series = chart_series(sorted(self.rows, key=lambda r: (r["technique"], r["rate_pps"])), self.measure)
        xs = [x for pts in series.values() for x, _ in pts] + list(self.rates)
        if self.operating:
            xs.append(self.operating)
        lo, hi = math.floor(math.log10(min(xs))), math.ceil(math.log10(max(xs)))
        ticks = list(range(lo, hi + 1))
        plt.xticks(ticks, [rate_label(10 ** t) for t in ticks])
        plt.xlim(lo, hi)
        ys = [y for pts in series.values() for _, y in pts]
        top = max(ys) if ys else 1.0
        plt.ylim(0, top * 1.1 if top > 0 else 1.0)
        for t in self.techniques:
            pts = series.get(t, [])
            if pts:
                plt.plot([math.log10(x) for x, _ in pts], [y for _, y in pts], marker=MARKERS[t],
                         color=COLOURS[t])
        if self.operating:
            plt.vline(math.log10(self.operating), OPERATING)
        plt.xlabel("offered load (packets/s, log scale)")
        plt.ylabel(label)
        plot.refresh()

    def on_resize(self) -> None:
        self.call_after_refresh(self._redraw)

    # -- keys ------------------------------------------------------------------------------
    def action_measure(self, step: int) -> None:
        i = SWEEP_MEASURES.index(self.measure)
        self.measure = SWEEP_MEASURES[(i + step) % len(SWEEP_MEASURES)]
        self._redraw()

    def action_pick(self, i: int) -> None:
        self.measure = SWEEP_MEASURES[i]
        self._redraw()

    def action_help(self) -> None:
        from .help import HelpScreen
        self.app.push_screen(HelpScreen(SWEEP_KEYS))

    def action_main_only(self) -> None:
        self.notify("That key acts on the main view: escape returns to it.", timeout=3)

    def action_close(self) -> None:
        self._cancel.set()              # the worker thread stops the processes
        self.dismiss(None)

    def on_unmount(self) -> None:
        self._cancel.set()
