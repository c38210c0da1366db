"""The VMM exit log: one line per exit, bounded; or kvm_stat-style totals."""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import Iterable

from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual.strip import Strip

from ...sim.driver import Frame
from ...sim.trace import TraceEvent
from .common import FOLLOW, FOLLOW_GLYPH, TitledPane, fmt_t as _fmt_t

__all__ = ["ExitLogPane"]


#: kvm_stat's CurAvg/s here: over the last this many frames (about 1 s at 30 frames/s)
RATE_FRAMES = 30
#: and not before this many (a first interval of one or two frames says nothing)
MIN_RATE_FRAMES = 5


class ExitLogPane(TitledPane):
    """One line per VM exit (bounded: the newest ``maxlen``)."""

    def __init__(self, maxlen: int = 500, **kw) -> None:
        super().__init__(**kw)
        #: the newest ``maxlen`` exits, (event, in the set-up) each; a line's
        #: Text is made when it is drawn (``lines``): in a busy run most exits
        #: scroll past between two frames and are never on screen
        self._exits: deque[tuple[TraceEvent, bool]] = deque(maxlen=maxlen)
        self._texts: dict[tuple[int, bool], Text] = {}   # the lines drawn last, by (seq, set-up)
        self.seqs: deque[int] = deque(maxlen=maxlen)     # the trace seq of each line's exit
        self._followed: frozenset = frozenset()
        self.border_title = "VMM exit log"
        self.aggregate = False           # kvm_stat-style totals instead of one line per exit
        #: (virtual time, exits by reason) of the last frames: CurAvg/s is
        #: taken over them (about a second of wall clock), not one frame
        self._history: deque[tuple[int, dict]] = deque(maxlen=RATE_FRAMES)
        self._rates: dict[str, float] = {}

    def toggle_aggregate(self) -> None:
        self.aggregate = not self.aggregate
        self.border_title = "VMM exits · kvm_stat" if self.aggregate else "VMM exit log"
        self._key = None
        self.refresh()

    def kvm_stat_rows(self) -> list[tuple[str, int, float, float]]:
        """(event, Total, %Total, CurAvg/s) like kvm_stat; the rate is per
        second of virtual time over the last RATE_FRAMES frames."""
        f = self.frame
        if f is None:
            return []
        by = f.summary["exits"]["by_reason"]
        total = sum(by.values()) or 1
        rows = [(f"kvm_exit({name})", n, 100.0 * n / total, self._rates.get(name)) for name, n in by.items()]
        return sorted(rows, key=lambda r: (-r[1], r[0]))     # ties keep their order

    def _track_rates(self, frame: Frame) -> None:
        by = frame.summary["exits"]["by_reason"]
        h = self._history
        if h and frame.t_ns < h[-1][0]:          # a run started again (step back replays)
            h.clear()
        if h and frame.t_ns == h[-1][0]:
            return
        h.append((frame.t_ns, dict(by)))
        t0, by0 = h[0]
        if len(h) < MIN_RATE_FRAMES:             # too short an interval to say a rate
            self._rates = {}
        elif frame.t_ns > t0:
            dt = (frame.t_ns - t0) / 1e9
            self._rates = {k: (v - by0.get(k, 0)) / dt for k, v in by.items()}

    def content(self, frame: Frame):
        return self.serial

    serial = 0

    def add_events(self, events: Iterable[TraceEvent]) -> None:
        """Add the exits among ``events`` (every event published since the
        last frame drawn: frames the app skipped still bring their exits)."""
        setup_seq = self.frame.setup_seq if self.frame is not None else 0
        exits, seqs = self._exits, self.seqs
        for ev in events:
            if ev.kind != "exit":
                continue
            exits.append((ev, ev.seq <= setup_seq))
            seqs.append(ev.seq)
            self.serial += 1
        if self.serial != self._seen:
            self._seen = self.serial
            self._key = None
            self.refresh()

    _seen = 0

    @staticmethod
    def _line(ev: TraceEvent, setup: bool) -> Text:
        d = ev.data
        where = d.get("where", "")
        user = where == "userspace"
        # stamped when it is recorded (never after the clock: in time order
        # across VMs); the set-up's exits are shown but not counted
        return Text.assemble(
            (f"{_fmt_t(ev.t):>11} ", "grey62"), (f"{ev.vm} ", "#87afd7"),
            (f"{d.get('reason', '')} {d.get('number', '')}", "bold #ffaf5f" if user else "bold #87d787"),
            (f" {'⇧ user' if user else '⌂ kvm'}", "#ffaf5f" if user else "#87d787"),
            (f" {d.get('cost_ns', 0) / 1000:,.2f} µs", "grey62"),
            (f" · {d.get('cause', '')}", ""),
            (" · set-up, not counted" if setup else "", "italic grey62"),
        )

    def _text(self, ev: TraceEvent, setup: bool, made: dict) -> Text:
        key = (ev.seq, setup)
        t = self._texts.get(key) or self._line(ev, setup)
        made[key] = t
        return t

    @property
    def lines(self) -> "_Lines":
        """The log's lines, oldest first (one per exit kept, at most ``maxlen``)."""
        return _Lines(self._exits, self._line)

    def clear_log(self) -> None:
        self._exits.clear()
        self._texts = {}
        self.seqs.clear()
        self.serial += 1
        self._key = None
        self.refresh()

    def update_frame(self, frame: Frame) -> None:
        self.frame = frame     # add_events decides whether to redraw
        self._track_rates(frame)
        followed = frozenset(frame.follow.exits) if frame.follow is not None else frozenset()
        if followed != self._followed:
            self._followed = followed
            self.serial += 1
            self._key = None
            self.refresh()
        if self.aggregate:
            self._key = None
            self.refresh()

    def clear_rates(self) -> None:
        self._history.clear()
        self._rates = {}

    def render_line(self, y: int) -> Strip:
        return self._cached(y, self._build)

    def _build(self) -> list[Strip]:
        w, h = self.size.width, self.size.height
        if self.aggregate:
            rows = self.kvm_stat_rows()
            # kvm_stat's own names when they fit; the bare reason when the pane is narrow
            full = 1 + 28 + 9 + 7 + 10 <= w
            name_w = 28 if full else max([len("kvm_exit()")] + [len(r[0]) - len("kvm_exit()") for r in rows])
            label = "event" if full else "kvm_exit()"
            head = Strip([Segment(f" {label:<{name_w}}{'Total':>9}{'%Total':>7}{'CurAvg/s':>10}",
                                  Style(bold=True, color="grey70"))]).crop_extend(0, w, None)
            out = [head]
            for name, n, pct, rate in rows[: max(0, h - 1)]:
                if not full:
                    name = name[len("kvm_exit("):-1]
                shown = f"{rate:>10,.0f}" if rate is not None else f"{'–':>10}"
                out.append(Strip([Segment(f" {name:<{name_w}}{n:>9,}{pct:>7.1f}{shown}")]).crop_extend(0, w, None))
            if len(out) == 1:
                out.append(Strip([Segment(" no exits yet", Style(color="grey50", italic=True))]).crop_extend(0, w, None))
            n = f.setup_exits if (f := self.frame) is not None else 0
            if n and len(out) < h:       # the one rule: the set-up's exits are not counted
                out.append(Strip([Segment(f" + {n:,} set-up exit{'s' if n != 1 else ''} not counted",
                                          Style(color="grey50", italic=True))]).crop_extend(0, w, None))
            return out
        if not self._exits:
            return [Strip([Segment(" no exits yet", Style(color="grey50", italic=True))]).crop_extend(0, w, None)]
        # newest at the bottom; an exit too wide for one line continues on a
        # second, indented line (its cause), so nothing is cut off
        console = self.app.console
        out: list[Strip] = []
        followed = self._followed
        made: dict = {}                  # the Texts of the lines drawn now (kept for the next build)
        for (ev, setup), seq in zip(reversed(self._exits), reversed(self.seqs)):
            if len(out) >= h:
                break
            t = self._text(ev, setup, made)
            if seq in followed:        # an exit on the followed packet's way: marked and tinted
                t = Text.assemble((FOLLOW_GLYPH, FOLLOW), t[1:])
                t.stylize("on #3a2a4a")
            if t.cell_len <= w:
                out.append(Strip(list(t.render(console))).crop_extend(0, w, None))
                continue
            # head: time, VM, reason and number; then, indented: kernel or
            # userspace, cost and cause, wrapped as needed
            plain = t.plain
            cut = min((i for i in (plain.find(" ⌂ "), plain.find(" ⇧ ")) if i > 0), default=-1)
            head, tail = t.divide([cut]) if cut > 0 else (t, Text(""))
            wrapped = list(tail.wrap(console, max(8, w - 6)))
            for part in reversed(wrapped):
                out.append(Strip(list((Text("     ") + part).render(console))).crop_extend(0, w, None))
            head.truncate(w, overflow="ellipsis")
            out.append(Strip(list(head.render(console))).crop_extend(0, w, None))
        self._texts = made
        out.reverse()
        return out[-h:]


class _Lines(Sequence):
    """The exit log's lines as a read-only sequence of Texts, each made when
    it is read (``maxlen`` as the deque of exits behind it has it)."""

    def __init__(self, exits: deque, line) -> None:
        self._exits, self._make = exits, line
        self.maxlen = exits.maxlen

    def __len__(self) -> int:
        return len(self._exits)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self._make(*x) for x in list(self._exits)[i]]
        return self._make(*self._exits[i])
