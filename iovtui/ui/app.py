"""The Textual app: five live panes over the asyncio driver.

The driver publishes frozen Frames; the app keeps only the newest and applies
it at most 30 times a second.  While paused with nothing new, the refresh
timer is paused too: no redraw work at all.
"""

from __future__ import annotations

import math
import os
import sys
import threading
import time
from collections import deque
from pathlib import Path
from typing import Iterable

from textual import events
from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import Footer, Static

from ..sim.driver import DEFAULT_SPEED_INDEX, SPEEDS, Driver, Frame
from ..sim.paths import available
from ..sim.preset import Preset
from ..sim.vmm import HOST_PROFILES
from ..sim.world import Simulation
from .panes import (ExitLogPane, FollowBar, GuestRamPane, HeaderBar, IommuPane, Narration, NicPane, PathStrip, RingPane,
                    StatsBar, header_text)
from .footer import KeysFooter
from .palette import PALETTES, TEXTUAL_THEME, THEMES, Look
from .screens.toosmall import TooSmallScreen   # the other screens load on first use

__all__ = ["IovApp", "create_app", "MAX_FPS", "MIN_W", "MIN_H", "too_small"]

MAX_FPS = 30
NOTICE_SECONDS = 4.0
#: while running, each narration line stays up at least this long (readable at ×1)
NARRATION_HOLD_S = 2.0
#: after ExitApp, how long Textual's shutdown may take before the process ends itself
EXIT_GRACE_S = 3.0
TECH_KEYS = {"1": "emulation", "2": "virtio", "3": "sriov"}
TECH_LABEL = {"emulation": "emulation", "virtio": "virtio", "sriov": "SR-IOV"}
TECH_NAMES = {"emulation": "device emulation", "virtio": "virtio", "sriov": "SR-IOV"}
PANE_IDS = ("ram", "ring", "exits", "iommu", "nic")
PANE_NAMES = {"ram": "Guest RAM", "ring": "Ring", "exits": "Exits", "iommu": "IOMMU", "nic": "NIC VFs"}
#: below this the five panes collapse into tabs (the focused pane fills the area)
WIDE_W, WIDE_H = 110, 32
#: below this nothing useful fits: the main screen says so until the terminal grows
MIN_W, MIN_H = 60, 16


def _too_small_message(small: str) -> str:
    return f"{small}.\n\nEnlarge the window to go on · q quits"


def too_small(width: int, height: int) -> str | None:
    """One line saying the terminal is too small and what is needed, or None."""
    if width >= MIN_W and height >= MIN_H:
        return None
    return (f"the terminal is {width}×{height}; iovtui needs at least {MIN_W}×{MIN_H} "
            f"(80×24 shows everything, 120×40 all five panes at once)")


class IovApp(App):
    CSS_PATH = Path(__file__).with_name("app.tcss")
    TITLE = "iovtui"
    # below WIDE_W columns or WIDE_H rows the five panes collapse into tabs (app.tcss)
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (WIDE_W, "-wide")]
    VERTICAL_BREAKPOINTS = [(0, "-short"), (WIDE_H, "-tall")]
    TECH_GROUP = Binding.Group("technique", compact=True)
    SPEED_GROUP = Binding.Group("speed", compact=True)
    BINDINGS = [
        # one footer item "1–3 technique" (a compact group read as the number 123)
        Binding("1", "technique('emulation')", "technique", key_display="1–3"),
        Binding("2", "technique('virtio')", "virtio", show=False),
        Binding("3", "technique('sriov')", "SR-IOV", show=False),
        Binding("space", "toggle_pause", "pause"),
        Binding("n", "step", "step"),
        Binding("b", "step_back", "back", show=False),
        Binding("plus,equals_sign", "faster", "faster", key_display="+", group=SPEED_GROUP),
        Binding("minus", "slower", "slower", key_display="-", group=SPEED_GROUP),
        Binding("e", "toggle('event_idx')", "event idx", show=False),
        Binding("v", "toggle('vhost')", "vhost", show=False),
        Binding("o", "toggle('ring')", "split/packed", show=False),
        Binding("a", "host_profile", "host"),
        Binding("i", "host_profile", "host", show=False),      # (was posted interrupts: now a host profile)
        Binding("r", "next_ring", "ring", show=False),
        Binding("m", "next_vm", "next VM", show=False),
        Binding("k", "kvm_stat", "kvm_stat", show=False),
        Binding("f", "follow", "follow", show=False),
        Binding("g", "predict", "predict", show=False),
        Binding("t", "theme", "theme", show=False),
        Binding("w", "save_capture", "save capture", show=False),
        Binding("tab", "focus_next_pane", "pane", show=False, priority=True),
        Binding("shift+tab", "focus_prev_pane", "pane", show=False, priority=True),
        Binding("p", "presets", "presets"),
        Binding("c", "compare", "compare"),
        Binding("S", "sweep", "sweep", show=False),
        Binding("question_mark", "help", "help", key_display="?"),
        Binding("q", "quit", "quit"),
        Binding("ctrl+c", "quit", "quit", show=False, priority=True),
        Binding("left", "ram(-1,0)", show=False), Binding("right", "ram(1,0)", show=False),
        Binding("up", "ram(0,-1)", show=False), Binding("down", "ram(0,1)", show=False),
        Binding("enter", "hex", "hex view", show=False),
    ]
    KEY_HELP = [
        ("1 / 2 / 3", "device emulation · virtio · SR-IOV (same preset and seed)"),
        ("space", "pause / run"),
        ("n", "step one event (the narration line explains it; [2/3] marks the 2nd of 3 things "
              "one action did at the same instant)"),
        ("b", "step back one event (deterministic replay from the seed)"),
        ("+ / -", "faster / slower (×1 = 1 µs of virtual time per wall-clock ms)"),
        ("p", "presets: pick a scenario (restarts with the same seed)"),
        ("c", "compare: the three techniques on the same seeded traffic, live, side by side"),
        ("S", "sweep: the three techniques' curves across offered load (exits, interrupts, CPU, latency, "
              "throughput per packet), computed in the background; m switches the measure"),
        ("e", "virtio: event idx on/off"),
        ("v", "virtio: vhost-net on/off"),
        ("o", "virtio: split ⇄ packed virtqueue (virtio 1.1: one descriptor ring, AVAIL/USED bits, wrap "
              "counters, event suppression areas; restarts like 1/2/3)"),
        ("a", "host profile: no APICv → APICv → APICv + VT-d posted interrupts, for every technique "
              "(restarts the same workload; VT-d PI changes only SR-IOV; the header shows it; i does the same)"),
        ("tab / shift+tab", "focus the next / previous pane (tabs at small sizes)"),
        ("arrows", "Guest RAM: move the page cursor · IOMMU / NIC pane: scroll its rows (PgUp, PgDn, Home, "
                   "End too); the pane that has the focus takes them"),
        ("enter", "Guest RAM: hex view of the selected page; Ring: of the page holding the marked descriptor; fields annotated"),
        ("r", "Descriptor ring: next ring (rx / tx) of the focused VM"),
        ("m", "focus the next VM (Guest RAM, Descriptor ring, IOMMU and NIC rows follow it; "
              "ctrl+p \"Jump to VM…\" picks one by name)"),
        ("k", "exit log ⇄ kvm_stat view (event, Total, %Total, CurAvg/s)"),
        ("f", "follow the next frame: its buffer, descriptor, exits, IOMMU entry and VF marked ◆"),
        ("g", "predict-then-reveal: before certain steps a question (will this kick exit? which VF? "
              "will the IOMMU fault?); a digit (1–4…) answers, n continues after the answer; "
              "the score is in the header"),
        ("w", "save capture: the run so far as a pcapng file for Wireshark, in the current directory "
              "(iovtui-<preset>-<technique>-N.pcapng, never over a file)"),
        ("t", "light ⇄ dark theme (also --theme; --palette colorblind, --presenter; NO_COLOR is honoured)"),
        ("?", "this help"),
        ("ctrl+p", "command palette (every action)"),
        ("q", "quit"),
    ]

    def __init__(self, preset: Preset, technique: str, seed: int = 1, speed: float = 1.0,
                 packets: int | None = None, start_paused: bool = False, theme: str = "dark",
                 palette: str = "default", presenter: bool = False, predict: bool = False,
                 replay: bool = False) -> None:
        super().__init__()
        self.replay = replay                 # `iovtui replay FILE`: the header says so
        self.show_hint = True                # "space pauses, n steps" until the user first does
        self._narr_since = -NARRATION_HOLD_S
        if self.console.is_dumb_terminal:
            # TERM=dumb (or unknown): Rich assumes an 80×25 console, so the first
            # Resize says 80×25 while the driver's says the real size; the main
            # screen then lays itself out for both in turn, for ever (see
            # screens/base.py SteadyResize).  Start from the size the driver will report.
            import shutil
            self.console.size = tuple(shutil.get_terminal_size())
        self.look = Look(theme, palette, contrast=presenter, no_style_safe=self.no_color)
        self._filters.insert(1, self.look)     # after ANSI → truecolor, before NO_COLOR's monochrome
        self.theme = TEXTUAL_THEME[theme]
        self.presenter = presenter
        if presenter:          # one pane at a time, full size, at every terminal size
            self.HORIZONTAL_BREAKPOINTS = [(0, "-narrow")]
        self.preset = preset
        self.technique = technique
        self.seed = seed
        self.packets = packets if packets is not None else 10**9
        self.start_paused = start_paused
        self.driver = Driver(self._factory(), speed_index=_speed_index(speed), max_fps=MAX_FPS)
        self.driver.view_vm = 0          # frames carry the selected VM's rings (select_vm)
        self._pending_events: deque = deque(maxlen=2000)   # events of frames not drawn yet
        self.driver.predict = predict
        self._latest: Frame | None = None
        self._applied: Frame | None = None
        self.frames_applied = 0
        self.active_pane = "ram"
        self.notice_text = ""
        self.notice_until = 0.0
        self._asking = False                 # a QuestionScreen is open
        self._resume_after_question = False
        self._was_running = False
        self.real = None                     # a real host's trace for the compare view (iovtui.real)
        self.real_packets: int | None = None

    # -- the model ----------------------------------------------------------------
    def _factory(self):
        preset, tech, seed, packets = self.preset, self.technique, self.seed, self.packets
        return lambda trace: Simulation(preset, tech, seed=seed, packets=packets, trace=trace)

    def _on_frame(self, frame: Frame) -> None:
        # only the newest frame is drawn, but every frame's events reach the
        # exit log (two frames between redraws, e.g. a tick and a pause, lost exits)
        self._pending_events.extend(frame.events)
        self._latest = frame
        if self._timer is not None:
            self._timer.resume()

    # -- layout --------------------------------------------------------------------
    def get_default_screen(self) -> Screen:
        from .screens.base import MainScreen
        # the breakpoint classes for the size known now, before the first
        # style pass (the first Resize sets them again: a style pass over every
        # widget less when they already match)
        w, h = self.size
        classes = {c: False for _, c in self.HORIZONTAL_BREAKPOINTS + self.VERTICAL_BREAKPOINTS}
        for size, points in ((w, self.HORIZONTAL_BREAKPOINTS), (h, self.VERTICAL_BREAKPOINTS)):
            for point, c in sorted(points, reverse=True):
                if size >= point:
                    classes[c] = True
                    break
        return MainScreen(id="_default", classes=" ".join(c for c, on in classes.items() if on))

    def compose(self) -> ComposeResult:
        self.w_header = HeaderBar(id="header")
        self.w_path = PathStrip(id="path")
        self.w_tabs = Static("", id="tabs")
        # the active pane's classes (_mark_active) from the start: no style pass at mount
        act = self.active_pane
        top, side = act in ("ram", "ring"), act in ("iommu", "nic")
        self.w_ram, self.w_ring, self.w_exits, self.w_iommu, self.w_nic = (
            cls(id=pid, classes="pane active" if pid == act else "pane")
            for cls, pid in ((GuestRamPane, "ram"), (RingPane, "ring"), (ExitLogPane, "exits"),
                             (IommuPane, "iommu"), (NicPane, "nic")))
        self.w_stats = StatsBar(id="stats")
        self.w_follow = FollowBar(id="follow")
        self.w_narration = Narration(id="narration")
        self.panes = {"ram": self.w_ram, "ring": self.w_ring, "exits": self.w_exits,
                      "iommu": self.w_iommu, "nic": self.w_nic}
        yield self.w_header
        yield self.w_path
        yield self.w_tabs
        with Vertical(id="main"):
            with Horizontal(id="top", classes="row active" if top else "row") as self.w_top:
                yield self.w_ram
                yield self.w_ring
            with Horizontal(id="bottom", classes="row" if top else "row active") as self.w_bottom:
                yield self.w_exits
                with Vertical(id="side", classes="active" if side else "") as self.w_side:
                    yield self.w_iommu
                    yield self.w_nic
        yield self.w_stats
        yield self.w_follow
        yield self.w_narration
        self.w_footer = KeysFooter()
        # its keys in the first frame (Textual's Footer composes them only at
        # the first bindings signal, one refresh later; it recomposes then anyway)
        self.w_footer.set_reactive(Footer._bindings_ready, True)
        self._fit_footer(self.size.width)   # (for the size known now: no recompose at the first Resize)
        yield self.w_footer
        self.w_too_small = Static("", id="too-small")
        yield self.w_too_small

    def on_load(self) -> None:
        """SIGTERM (kill, a terminal emulator closing, ``serve`` stopping)
        ends the app as ctrl+c does: the run stops, the terminal is restored
        (main screen, cursor shown, mouse tracking off) and the exit status
        is 0, ctrl+c's.  Without this Python's default ended the process at
        once, in the alternate screen with the mouse still tracked."""
        import asyncio
        import signal

        try:
            asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, self._on_sigterm)
        except (NotImplementedError, RuntimeError, ValueError, AttributeError):
            pass                         # not the main thread, or no Unix signals: the default stays

    def _on_sigterm(self) -> None:
        self.exit()

    def on_mount(self) -> None:
        self._timer = None
        self.driver.subscribe(self._on_frame)
        self.driver.resend_history()     # (replay --at ran the run before the app subscribed)
        self._timer = self.set_interval(1 / MAX_FPS, self._apply_latest)
        self._mark_active()
        self.w_ram.focus()
        if self.start_paused:
            self.driver.publish()
        else:
            self.driver.resume()         # the first frame says "running" (it was "paused" for a frame)
        self._apply_latest()             # the first frame is on screen at once
        # the run starts once that frame is drawn: no slice of the model before it
        self.call_after_refresh(self._start_run)

    def _start_run(self) -> None:
        if self._unmounted:
            return
        self.driver.start()              # (resumed in on_mount unless it starts paused)
        if self.real is not None:        # `iovtui --real FILE`: open on the compare view, which shows it
            self.call_after_refresh(self.action_compare)

    async def on_unmount(self) -> None:
        self._unmounted = True
        await self.driver.stop()

    _unmounted = False

    async def on_exit_app(self) -> None:
        """Textual's ExitApp (q, Ctrl-C, SIGTERM, a browser tab closing):
        stop the run and the redraw timer first, and make sure the process
        ends.  Textual 8.2.8's shutdown can spin for ever on full repaints
        when a browser session is resized and closed while the app is still
        starting (a headless browser taking a screenshot does exactly that);
        such a process ignores SIGTERM and would keep a core busy after
        `serve` stops.  If the app has not unmounted EXIT_GRACE_S seconds
        after ExitApp, the process restores the terminal and exits."""
        if self._timer is not None:
            self._timer.stop()
        await self.driver.stop()
        if not self.is_headless:
            threading.Thread(target=self._exit_watchdog, daemon=True, name="iovtui-exit").start()

    def _exit_watchdog(self) -> None:
        time.sleep(EXIT_GRACE_S)
        if self._unmounted:
            return
        try:
            out = sys.__stdout__
            if out is not None and out.isatty():     # leave the alternate screen, show the cursor, mouse off
                out.write("\x1b[?1000l\x1b[?1003l\x1b[?1006l\x1b[?2004l\x1b[?25h\x1b[?1049l")
                out.flush()
                restore_terminal()
            sys.__stderr__.write(f"iovtui: the app did not close within {EXIT_GRACE_S:g} s; ended it\n")
            sys.__stderr__.flush()
        finally:
            os._exit(0)

    def on_resize(self, event: events.Resize) -> None:
        footer = getattr(self, "w_footer", None)
        if footer is None:
            return
        width = event.size.width          # (self.size may still be the old one here)
        small = too_small(width, event.size.height)
        self.screen_stack[0].set_class(small is not None, "-tiny")
        if small is not None:            # the run goes on; the keys still work
            self.w_too_small.update(_too_small_message(small))
        top = self.screen_stack[-1] if self.screen_stack else None
        if small is None and isinstance(top, TooSmallScreen):
            self.pop_screen()            # back to the modal or the compare view, as it was
        elif small is not None and top is not None and top is not self.screen_stack[0]:
            # over a modal, which cannot be shrunk usefully; a moment after
            # Textual has resized the screens (pushed during the resize,
            # neither it nor the modal is drawn again until the next key)
            self.set_timer(0.1, self._cover_too_small)
        if self._fit_footer(width):
            footer.refresh(recompose=True)
        if self._applied is not None:       # the path strip breaks between stages for the new width
            self.w_path.text = PathStrip.build(self._applied, width)
            self.w_stats.text = StatsBar.build(self._applied, width)

    _footer_roomy = True

    def _fit_footer(self, width: int) -> bool:
        """The footer's keys for ``width`` columns; True if that changed them."""
        footer = self.w_footer
        # at 80 columns every footer key fits only without the palette hint and
        # the host key (both are in ? help and the palette; the key always works)
        wide = width >= 100
        # below 80 columns (down to the 60 minimum) the speed keys, presets and
        # compare leave the footer too, so that what stays is never cut
        roomy = width >= 80
        if footer.show_command_palette == wide and self._footer_roomy == roomy:
            return False
        footer.set_reactive(Footer.show_command_palette, wide)
        self._footer_roomy = roomy
        self._show_in_footer("a", wide)
        for key in ("plus", "equals_sign", "minus", "p", "c"):
            self._show_in_footer(key, roomy)
        return True

    def _show_in_footer(self, key: str, show: bool) -> None:
        """Show or hide one key's binding in the footer (Bindings are frozen:
        the app's map gets a copy with ``show`` changed)."""
        import dataclasses

        keymap = self._bindings.key_to_bindings
        if key in keymap:
            keymap[key] = [dataclasses.replace(b, show=show) for b in keymap[key]]

    def _cover_too_small(self) -> None:
        """Say the terminal is too small over the screen on top (for the size
        it is now: resizes may have come since this was asked for)."""
        small = too_small(*self.size)
        top = self.screen_stack[-1] if self.screen_stack else None
        if small is None or top is None or top is self.screen_stack[0]:
            return
        if isinstance(top, TooSmallScreen):
            top.update(_too_small_message(small))
        else:
            self.push_screen(TooSmallScreen(_too_small_message(small)))
        self.refresh(layout=True)

    @property
    def compact(self) -> bool:
        """True when the panes are shown as tabs (set by the breakpoints)."""
        s = self.screen_stack[0] if self.screen_stack else None
        return bool(s) and (s.has_class("-narrow") or s.has_class("-short"))

    def _mark_active(self) -> None:
        for pid, pane in self.panes.items():
            pane.set_class(pid == self.active_pane, "active")
        top = self.active_pane in ("ram", "ring")
        self.w_top.set_class(top, "active")
        self.w_bottom.set_class(not top, "active")
        self.w_side.set_class(self.active_pane in ("iommu", "nic"), "active")
        from rich.text import Text
        t = Text(" ")
        for pid in PANE_IDS:
            active = pid == self.active_pane
            t.append(f" {PANE_NAMES[pid]} ", style="bold black on #87afd7" if active else "#9e9e9e")
            t.append(" ")
        # (hex: Textual's style parser knows no "grey62"; it gave up on the style, slowly, every render)
        t.append(" tab: next pane", style="italic #7f7f7f")
        self.w_tabs.update(t)

    # -- applying frames (≤ 30 per second) ----------------------------------------------
    def _apply_latest(self) -> None:
        f = self._latest
        if f is None or f is self._applied:
            if not self.driver.running and self._timer is not None:
                self._timer.pause()      # paused and unchanged: no work at all
            return
        self._applied = f
        self.frames_applied += 1
        name, hint, rp = self.preset.name, self.show_hint, self.replay
        variants = [header_text(f, name, hint=hint, replay=rp), header_text(f, name, compact=True, hint=hint, replay=rp)]
        # narrower, the hint takes the first of two lines (the host profile and the run stay on the second)
        variants.append(header_text(f, name, compact="two-lines", hint=hint, replay=rp))
        self.w_header.variants = tuple(variants)
        self.w_path.text = PathStrip.build(f, self.w_path.size.width or self.size.width)
        self.w_stats.text = StatsBar.build(f, self.w_stats.size.width or self.size.width)
        self._apply_follow(f)
        now = time.monotonic()
        if self.notice_text and now < self.notice_until:
            from rich.text import Text
            self.w_narration.text = Text.assemble((" ⚑ ", "bold #ff875f"), (self.notice_text, "#ff875f"))
            self._narr_since = -NARRATION_HOLD_S
        elif not f.running or now - self._narr_since >= NARRATION_HOLD_S:
            # running, a line stays up NARRATION_HOLD_S before the newest
            # replaces it; paused or stepping, it follows every step
            self.w_narration.text = Narration.build(f)
            self._narr_since = now if f.running else -NARRATION_HOLD_S
        for pane in self.panes.values():
            pane.update_frame(f)
        self.w_exits.add_events(self._pending_events)
        self._pending_events.clear()
        if f.question is not None and not self._asking:
            # asked while running: the run goes on once the answer is seen
            self._resume_after_question = self._was_running
            self._asking = True
            from .screens.predict import QuestionScreen
            scr = QuestionScreen(f.question, f.score)
            self.push_screen(scr, lambda reveal, scr=scr: self._question_closed(reveal, scr.step_after))
        self._was_running = f.running

    def _apply_follow(self, f: Frame) -> None:
        fv = f.follow
        self.w_follow.display = fv is not None and not self.screen_stack[0].has_class("-tiny")
        self.w_follow.text = FollowBar.build(f)
        if fv is None or fv.pkt is None:
            return
        # the RAM grid and the ring pane turn to the followed packet's VM and queue
        names = [m.vm for m in f.memory]
        if fv.vm in names and self.w_ram.vm_index != names.index(fv.vm):
            self.w_ram.vm_index = self.w_ring.vm_index = names.index(fv.vm)
            self.w_iommu.vm_index = self.w_nic.vm_index = self.driver.view_vm = names.index(fv.vm)
            for pane in (self.w_ram, self.w_ring, self.w_iommu, self.w_nic):
                pane._key = None
                pane.update_frame(f)
        if fv.queue:
            mine = [r for r in f.rings if r.vm == fv.vm]
            cur = self.w_ring.ring()
            if cur is not None and cur.name != fv.queue:
                for k, r in enumerate(mine):
                    if r.name == fv.queue:
                        self.w_ring.ring_index = k
                        self.w_ring._key = None
                        self.w_ring.update_frame(f)
                        break

    # -- predict-then-reveal --------------------------------------------------------------
    def answer_question(self, key: str | None):
        """The QuestionScreen's answer (None: skipped); the driver grades it
        and runs the step."""
        return self.driver.answer(key)

    def _question_closed(self, _reveal, step_after: bool = False) -> None:
        self._asking = False
        if self._resume_after_question and self.driver.predict:
            self.driver.resume()
        elif step_after:                 # n after the reveal: continue, one step on
            self.action_step()

    def notice(self, text: str) -> None:
        """One line in place of the narration, kept for a few seconds even
        while frames keep coming (and until the next frame while paused)."""
        self.notice_text = text
        self.notice_until = time.monotonic() + NOTICE_SECONDS
        self.driver.publish()

    def _on_notify(self, event) -> None:
        """One toast at a time: a new one replaces the one showing (Textual
        stacks them; random keys in the compare view built a column of
        "That key acts on the main view" down half the screen).  Textual's
        own handler, which runs after this one, adds the new toast."""
        self._notifications.clear()

    def _reset_exit_log(self) -> None:
        """A new run or a replay: the next frame brings the recent exits again."""
        self._pending_events.clear()
        self.w_exits.clear_log()
        self.w_exits.clear_rates()

    # -- actions -----------------------------------------------------------------------
    def _cannot_run(self, preset: Preset, tech: str) -> str | None:
        """Why ``tech`` cannot lay out ``preset``'s rings in guest RAM (the
        PresetError's one line), or None if it can."""
        from ..sim.preset import PresetError

        try:
            Simulation(preset, tech, packets=1)
        except PresetError as e:
            return str(e)
        return None

    def _off_subject(self, tech: str) -> str | None:
        """A line saying the preset is about another technique than ``tech``
        (None if it is about ``tech``, or about every technique)."""
        about = self.preset.technique
        if not about or about == tech:
            return None
        key = next(k for k, t in TECH_KEYS.items() if t == about)
        return (f"the preset {self.preset.name} is about {TECH_LABEL[about]} (press {key}); on "
                f"{TECH_LABEL[tech]} what it demonstrates does not happen")

    def action_technique(self, name: str) -> None:
        if name not in available():
            self.notice(f"{name} is not built in this version; available: {', '.join(available())}")
            return
        why = self._cannot_run(self.preset, name)
        if why:                  # stay on the current run
            self.notice(f"{TECH_LABEL[name]} cannot run this preset: {why}")
            return
        self.technique = name
        self._reset_exit_log()
        self.driver.restart(self._factory())
        off = self._off_subject(name)
        if off:
            self.notice(off)

    def action_toggle_pause(self) -> None:
        self.show_hint = False
        self.notice_until = 0.0
        self.driver.toggle()

    def action_step(self) -> None:
        self.show_hint = False
        self.notice_until = 0.0          # the step's own explanation replaces any notice
        self.driver.step()

    def action_step_back(self) -> None:
        self.notice_until = 0.0
        self._reset_exit_log()
        self.driver.step_back()

    def action_faster(self) -> None:
        self.driver.faster()

    def action_slower(self) -> None:
        self.driver.slower()

    def action_toggle(self, what: str) -> None:
        p = self.preset
        if what == "event_idx":
            if self.technique != "virtio":
                self.notice("event idx applies to virtio (press 2)")
                return
            self.preset = p.with_options(virtio={"event_idx": not p.virtio["event_idx"]})
        elif what == "vhost":
            if self.technique != "virtio":
                self.notice("vhost applies to virtio (press 2)")
                return
            self.preset = p.with_options(virtio={"vhost": not p.virtio["vhost"]})
        elif what == "ring":
            if self.technique != "virtio":
                self.notice("the split / packed ring applies to virtio (press 2)")
                return
            ring = "packed" if p.virtio["ring"] == "split" else "split"
            qs = p.virtio["queue_size"]
            if ring == "split" and (qs & (qs - 1) or qs > 1024):
                self.notice(f"the split ring needs a power-of-two queue size up to 1,024 (virtio.queue_size = "
                            f"{qs:,}): staying on the packed ring")
                return
            self.preset = p.with_options(virtio={"ring": ring})
            self._reset_exit_log()
            self.driver.restart(self._factory())
            self.notice(f"virtio {ring} ring — restarted" + (
                ": one ring of 16-byte descriptors; AVAIL/USED bits against each side's wrap counter "
                "say whose a slot is" if ring == "packed" else ""))
            return
        self._reset_exit_log()
        self.driver.restart(self._factory())

    def action_host_profile(self) -> None:
        """The next host profile (no APICv → APICv → APICv + VT-d posted
        interrupts → no APICv) on the same workload, restarted like 1/2/3;
        x2APIC stays as the preset has it."""
        names = list(HOST_PROFILES)
        now = self.driver.sim.host.profile
        nxt = names[(names.index(now) + 1) % len(names)]
        self.preset = self.preset.with_options(host=dict(HOST_PROFILES[nxt]))
        self._reset_exit_log()
        self.driver.restart(self._factory())
        host = self.driver.sim.host
        msg = f"{host.label()} — restarted"
        if nxt == "apicv+pi" and self.technique != "sriov":
            msg += (f"; VT-d posted interrupts change only SR-IOV (an assigned VF's MSI-X): "
                    f"{TECH_NAMES[self.technique]} runs as with APICv (press 3)")
        elif nxt == "apicv":
            msg += "; interrupts are posted and an edge vector's EOI no longer exits"
        self.notice(msg)

    def action_next_ring(self) -> None:
        self._clear_notice()             # (an older notice is about something else)
        self.w_ring.cycle()

    def action_kvm_stat(self) -> None:
        self._clear_notice()
        self.w_exits.toggle_aggregate()

    def _clear_notice(self) -> None:
        if self.notice_until:
            self.notice_until = 0.0
            self.driver.publish()

    def action_follow(self) -> None:
        f = self._latest or self._applied          # what the follow bar shows
        fv = f.follow if f is not None else None
        if fv is not None and fv.state in ("delivered", "dropped"):
            self.driver.follow(True)           # that one is done: follow the next frame
        else:
            self.driver.follow()

    # -- look: theme, palette, presenter ----------------------------------------------------
    def _relook(self) -> None:
        self.theme = TEXTUAL_THEME[self.look.theme]
        main = self.screen_stack[0] if self.screen_stack else None
        if main is not None:
            narrow = self.presenter or self.size.width < WIDE_W
            main.set_class(narrow, "-narrow")
            main.set_class(not narrow, "-wide")
            main.set_class(self.presenter, "-presenter")
        for screen in self.screen_stack:
            for w in screen.walk_children():
                w.refresh()
            screen.refresh()

    def action_theme(self) -> None:
        self.look.theme = "light" if self.look.theme == "dark" else "dark"
        self._relook()

    def set_palette(self, palette: str) -> None:
        self.look.palette = palette
        self._relook()

    def set_presenter(self, on: bool) -> None:
        self.presenter = self.look.contrast = on
        self.HORIZONTAL_BREAKPOINTS = [(0, "-narrow")] if on else type(self).HORIZONTAL_BREAKPOINTS
        self._relook()

    def action_predict(self) -> None:
        on = self.driver.set_predict()
        self.notice("predict-then-reveal on: a question comes before certain steps (space or n)" if on
                    else "predict-then-reveal off")

    def action_next_vm(self) -> None:
        n = len(self.driver.sim.vms)
        if n < 2:
            self.notice("this preset has one VM")
            return
        self.select_vm((self.w_ram.vm_index + 1) % n)

    def select_vm(self, i: int) -> None:
        """Guest RAM, the descriptor ring and the IOMMU / NIC panes turn to VM
        ``i`` (the tables bring its rows into view)."""
        for pane in (self.w_ram, self.w_ring, self.w_iommu, self.w_nic):
            pane.vm_index = i
            pane._key = None
            pane.frame = None
        self.w_ram.cursor = 0
        self.driver.view_vm = i
        self.driver.publish()

    def action_jump_vm(self) -> None:
        """The palette's "Jump to VM…": a fuzzy list of the VMs by name."""
        from textual.command import SimpleCommand, SimpleProvider

        from .screens.command import IovCommandPalette
        vms = self.driver.sim.vms
        if len(vms) < 2:
            self.notice("this preset has one VM")
            return
        from .panes import row_vm
        nic = self._applied.nic if self._applied is not None else None
        fn = {row_vm(nic, row): f"{row[0]} {row[1]}" for row in nic.rows} if nic is not None else {}
        cmds = [SimpleCommand(vm.name, lambda i=vm.index: self.select_vm(i),
                              " · ".join(x for x in (fn.get(vm.name, ""), vm.mac, f"VLAN {vm.vlan}" if vm.vlan else "")
                                         if x)) for vm in vms]
        self.push_screen(IovCommandPalette(providers=[SimpleProvider(self.screen_stack[0], cmds)],
                                           placeholder=f"Jump to VM… ({len(vms)} VMs: type part of a name)"))

    def on_descendant_focus(self, event: events.DescendantFocus) -> None:
        """Focus decides which pane the keys act on (a click as well as tab):
        the arrows move the RAM cursor there, scroll the IOMMU / NIC rows there."""
        for pid, pane in getattr(self, "panes", {}).items():
            if event.widget is pane and pid != self.active_pane:
                self.active_pane = pid
                self._mark_active()

    def _focus_pane(self, step: int) -> None:
        i = PANE_IDS.index(self.active_pane)
        self.active_pane = PANE_IDS[(i + step) % len(PANE_IDS)]
        self._mark_active()
        self.panes[self.active_pane].focus()
        for pane in self.panes.values():
            pane.refresh()

    def action_focus_next_pane(self) -> None:
        if self.screen is not self.screen_stack[0]:
            return
        self._focus_pane(1)

    def action_focus_prev_pane(self) -> None:
        if self.screen is not self.screen_stack[0]:
            return
        self._focus_pane(-1)

    def action_presets(self) -> None:
        from ..sim.preset import PresetError, _load_file, list_presets

        items = []
        for name, path, origin in list_presets():
            try:
                items.append((name, _load_file(path).description, origin))
            except PresetError as e:
                items.append((name, f"(invalid: {e})", origin))
        from .screens.presets import PresetScreen
        self.push_screen(PresetScreen(items, self.preset.name), self._preset_chosen)

    def _preset_chosen(self, name: str | None) -> None:
        if not name:
            return
        from ..sim.preset import PresetError, load_preset
        try:
            preset = load_preset(name)
        except PresetError as e:
            self.notice(str(e))
            return
        tech = preset.technique or self.technique      # open where the preset's story is
        why = self._cannot_run(preset, tech)
        if why:                  # stay on the current run
            self.notice(why)
            return
        self.preset, self.technique = preset, tech
        self._reset_exit_log()
        self.w_ram.vm_index = self.w_ring.vm_index = self.w_iommu.vm_index = self.w_nic.vm_index = 0
        self.driver.view_vm = 0
        self.w_ring.ring_index = None        # the ring where the new preset's traffic is
        self.driver.restart(self._factory())

    def action_compare(self) -> None:
        """The compare view; this run pauses while it is open (one simulation
        set at a time) and resumes as it was when it closes."""
        from ..sim.preset import PresetError

        was_running = self.driver.running
        self.driver.pause()

        def closed(_result: object) -> None:
            if was_running:
                self.driver.resume()

        try:
            from .screens.compare import CompareScreen
            screen = CompareScreen(self.preset, seed=self.seed, packets=self.packets,
                                   speed_index=self.driver.speed_index,
                                   real=self.real, real_packets=self.real_packets)
        except PresetError as e:      # a technique cannot lay out its rings: stay on this run
            self.notice(f"compare cannot run this preset: {e}")
            closed(None)
            return
        self.push_screen(screen, closed)

    def action_sweep(self) -> None:
        """The sweep view: this preset's load curves, computed in worker
        processes while the main run goes on (its screen and textual-plotext
        load here, on first use)."""
        from .screens.sweep import SweepScreen
        self.push_screen(SweepScreen(self.preset, seed=self.seed))

    def action_save_capture(self) -> None:
        """The run so far as a pcapng file: the driver's run is re-run
        headless to the same event in a worker thread with a capture
        attached (the app computes nothing); a toast names the file."""
        from ..capture import save_capture

        make_sim, events = self.driver.capture_point()
        preset, tech = self.preset.name, self.technique

        def work() -> None:
            try:
                path, frames, t = save_capture(make_sim, events, preset, tech, os.getcwd())
            except Exception as e:          # CaptureError (the OS's reason), or anything else: one line
                self.call_from_thread(self.notify, f"Save capture failed: {e}", title="Save capture",
                                      severity="error", timeout=8)
                return
            self.call_from_thread(self.notify, f"{path.name}\n{frames:,} frames, the run's first "
                                  f"{t / 1000:,.1f} µs ({events:,} events)", title="Capture saved", timeout=6)

        self.run_worker(work, thread=True, group="capture", exit_on_error=False)

    def action_real_trace(self) -> None:
        """Ask for a real trace's path; the compare view then shows it."""
        from .screens.realpath import RealPathScreen

        def chosen(trace) -> None:
            if trace is not None:
                self.real = trace
                self.action_compare()

        self.push_screen(RealPathScreen(), chosen)

    def action_help(self) -> None:
        from ..sim.paths import stage_table
        from .screens.help import HelpScreen
        self.push_screen(HelpScreen(self.KEY_HELP, stage_table(), stage_table(tx=True)))

    def action_ram(self, dx: int, dy: int) -> None:
        if self.active_pane == "ram":
            self.w_ram.move(dx, dy)

    def action_hex(self) -> None:
        """enter: the hex view of the Guest RAM pane's selected page, or of the
        page that holds the ring pane's marked descriptor (every ring iovtui
        draws has 16-byte descriptors: virtio split and packed, e1000, 82599)."""
        what, mark = "", None
        if self.active_pane == "ram":
            index, gpa = self.w_ram.vm_index, self.w_ram.selected_gpa()
        elif self.active_pane == "ring":
            pane = self.w_ring
            ring = pane.ring()
            if ring is None:
                return
            row = pane._followed_row(pane.frame)
            if row is None:
                row = max(ring.active, 0)
            desc = ring.base_gpa + 16 * row
            names = [v.name for v in self.driver.sim.vms]
            index, gpa = (names.index(ring.vm) if ring.vm in names else 0), desc & ~0xFFF
            what, mark = f" · {ring.name} descriptor {row} at 0x{desc:x}", desc - gpa
        else:
            return
        if gpa is None:
            return
        sim = self.driver.sim
        vm = sim.vms[index]
        data = vm.mem.read(gpa, 4096)
        r = vm.mem.region_at(gpa)
        from .screens.hexview import HexScreen, annotate_page
        notes = annotate_page(sim.technique, index, gpa, data)
        if mark is not None:             # the marked descriptor's fields first
            notes.sort(key=lambda n: not (n[0] < mark + 16 and mark < n[0] + n[1]))
        title = f"{vm.name} page GPA 0x{gpa:x} · {r.label if r else 'free'}{what} · escape closes"
        self.push_screen(HexScreen(title, data, gpa, notes))

    def action_command_palette(self) -> None:
        """ctrl+p: the palette, unless one is open already anywhere in the
        stack (Textual looks only at the top screen: under the too-small
        cover a second palette had the first one's id, DuplicateIds) or the
        terminal is too small to show it."""
        from textual.command import CommandPalette

        from .screens.command import IovCommandPalette
        if not self.use_command_palette or isinstance(self.screen, TooSmallScreen):
            return
        if any(isinstance(s, CommandPalette) for s in self.screen_stack):
            return
        self.push_screen(IovCommandPalette(id="--command-palette"))

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        """The palette offers what the screen it was opened on can do: the
        main view everything; the compare view its own run; any other
        screen (help, hex view, presets, a question) only the look."""
        yield from super().get_system_commands(screen)
        compare = sys.modules.get("iovtui.ui.screens.compare")   # loaded if a compare view was opened
        if compare is not None and isinstance(screen, compare.CompareScreen):
            yield SystemCommand("Compare: pause / run", "key space", screen.action_toggle_pause)
            yield SystemCommand("Compare: step one instant", "key n", screen.action_step)
            yield SystemCommand("Compare: step back", "key b", screen.action_step_back)
            yield SystemCommand("Compare: faster", "key +", screen.action_faster)
            yield SystemCommand("Compare: slower", "key -", screen.action_slower)
            yield SystemCommand("Compare: next host profile (no APICv → APICv → APICv + VT-d PI)", "key a",
                                screen.action_host_profile)
            yield SystemCommand("Compare: three techniques ⇄ virtio split beside packed", "key o",
                                screen.action_rings)
            yield SystemCommand("Close the compare view", "key esc", screen.action_close)
        sweep = sys.modules.get("iovtui.ui.screens.sweep")       # loaded if a sweep view was opened
        if sweep is not None and isinstance(screen, sweep.SweepScreen):
            yield SystemCommand("Sweep: next measure", "key m", lambda: screen.action_measure(1))
            yield SystemCommand("Close the sweep view", "key esc", screen.action_close)
        if screen is self.screen_stack[0]:
            yield from self._main_commands()
        yield from self._look_commands()

    def _look_commands(self) -> Iterable[SystemCommand]:
        yield SystemCommand("Theme: light ⇄ dark", "key t", self.action_theme)
        other = "default" if self.look.palette == "colorblind" else "colorblind"
        yield SystemCommand(f"Palette: {'colour-blind safe (Okabe–Ito)' if other == 'colorblind' else 'default'}",
                            "every colour also has a glyph or a word", lambda: self.set_palette(other))
        yield SystemCommand(f"Presenter mode {'off' if self.presenter else 'on'}",
                            "one pane at a time, high contrast, bold", lambda: self.set_presenter(not self.presenter))

    def _main_commands(self) -> Iterable[SystemCommand]:
        for key, tech in TECH_KEYS.items():
            yield SystemCommand(f"Technique: {TECH_NAMES[tech]}", f"key {key}",
                                lambda t=tech: self.action_technique(t))
        yield SystemCommand("Pause / run", "key space", self.action_toggle_pause)
        yield SystemCommand("Step one event", "key n", self.action_step)
        yield SystemCommand("Step back one event", "key b", self.action_step_back)
        yield SystemCommand("Faster", "key +", self.action_faster)
        yield SystemCommand("Slower", "key -", self.action_slower)
        yield SystemCommand("Toggle event idx (virtio)", "key e", lambda: self.action_toggle("event_idx"))
        yield SystemCommand("Toggle vhost (virtio)", "key v", lambda: self.action_toggle("vhost"))
        yield SystemCommand("Split ⇄ packed virtqueue (virtio)", "key o", lambda: self.action_toggle("ring"))
        yield SystemCommand("Host profile: no APICv → APICv → APICv + VT-d posted interrupts", "key a",
                            self.action_host_profile)
        yield SystemCommand("Next descriptor ring", "key r", self.action_next_ring)
        yield SystemCommand("Focus the next VM", "key m", self.action_next_vm)
        yield SystemCommand("Jump to VM…", "pick any VM by name: Guest RAM, ring, IOMMU and NIC panes turn to it",
                            self.action_jump_vm)
        yield SystemCommand("Exit log ⇄ kvm_stat view", "key k", self.action_kvm_stat)
        yield SystemCommand("Follow the next frame", "key f", self.action_follow)
        yield SystemCommand("Predict-then-reveal on/off", "key g", self.action_predict)
        yield SystemCommand("Next pane", "key tab", self.action_focus_next_pane)
        yield SystemCommand("Hex view of the selected page", "key enter", self.action_hex)
        yield SystemCommand("Presets: pick a scenario", "key p", self.action_presets)
        yield SystemCommand("Compare the three techniques side by side", "key c", self.action_compare)
        yield SystemCommand("Sweep load…", "key S: the three techniques' curves across offered load on this preset",
                            self.action_sweep)
        yield SystemCommand("Save capture", "key w: the run so far as a pcapng file (Wireshark), in the current "
                            "directory", self.action_save_capture)
        yield SystemCommand("Compare with a real trace…", "perf kvm stat / trace-cmd / kvm_stat output: "
                            "its exits next to the model's", self.action_real_trace)
        yield SystemCommand("Help: every key", "key ?", self.action_help)


def _speed_index(speed: float) -> int:
    target = speed * SPEEDS[DEFAULT_SPEED_INDEX]
    return min(range(len(SPEEDS)), key=lambda i: abs(math.log(SPEEDS[i]) - math.log(target)))


_TERMIOS: list = []


def remember_terminal() -> None:
    """Keep the terminal's settings (the CLI calls this before the app
    starts) so that a forced exit can put them back."""
    try:
        import termios
        _TERMIOS[:] = [termios.tcgetattr(sys.stdin.fileno())]
    except Exception:           # no terminal (a browser session), or no termios
        pass


def freeze_imports() -> None:
    """Before the app starts (the CLI calls this, having turned collection
    off while the app's modules load): what the imports made (modules,
    classes, functions, tables: about 45,000 objects, none of them ever
    garbage) leaves the collector's generations (``gc.freeze``), so no
    collection walks them again, and collection is on again.  The one full
    collection that fell inside the first frame took 13-15 ms of it, the
    young-generation ones while the modules loaded 5-6 ms, and while running
    every full collection walked them too.  Only for a process that runs one
    app: what is frozen is never collected."""
    import gc

    gc.freeze()
    gc.enable()              # (the CLI turns collection off while the app's modules load)


def restore_terminal() -> None:
    try:
        import termios
        if _TERMIOS:
            termios.tcsetattr(sys.stdin.fileno(), termios.TCSADRAIN, _TERMIOS[0])
    except Exception:           # no terminal (a browser session), or no termios
        pass


def create_app(preset: Preset, technique: str, seed: int = 1, speed: float = 1.0,
               packets: int | None = None, start_paused: bool = False, theme: str = "dark",
               palette: str = "default", presenter: bool = False, predict: bool = False,
               at_event: int | None = None, replay: bool = False, real=None,
               real_packets: int | None = None) -> IovApp:
    """The one factory the CLI, `serve` and the tests use.  ``at_event``:
    open paused on the trace event with that seq (``iovtui replay --at``)."""
    if theme not in THEMES or palette not in PALETTES:
        raise ValueError(f"theme must be one of {THEMES}, palette one of {PALETTES}")
    app = IovApp(preset, technique, seed=seed, speed=speed, packets=packets,
                 start_paused=start_paused or at_event is not None,
                 theme=theme, palette=palette, presenter=presenter, predict=predict, replay=replay)
    app.real, app.real_packets = real, real_packets       # `iovtui --real FILE`: shown in the compare view
    if at_event is not None:
        app.driver.seek_event(at_event)
    return app
