"""The one-line bars: header, path strip, stats and narration."""

from __future__ import annotations

import re

from rich.text import Text
from textual.css.scalar import Scalar
from textual.reactive import reactive
from textual.widget import Widget

from ...sim.driver import Frame, speed_label
from .common import FOLLOW, FOLLOW_GLYPH, STAGE_MARKS, fmt_t as _fmt_t

__all__ = ["HeaderBar", "PathStrip", "Narration", "StatsBar", "FollowBar", "header_text"]


class Bar(Widget):
    """A bar of one or more lines of text.  Its height follows the text but
    only grows while the width stays the same: a narration that is one line
    now and two the next would make every pane below jump (and cost a
    layout pass per frame).  A new width fits the height to the text again."""

    text = reactive(Text(""))
    _lines = 0
    _width = 0

    def render(self) -> Text:
        return self.text

    def watch_text(self) -> None:
        self._relayout_if_needed()

    def on_resize(self) -> None:
        if self.size.width != self._width:   # (not the resize our own height change causes)
            self._lines = 0
        self._relayout_if_needed()

    def _relayout_if_needed(self) -> None:
        w = self.size.width
        if not w or not self.is_mounted:
            return
        self._width = w
        t = self.render()
        # (a line that fits is one line: no wrap to count them, at every frame)
        n = 1 if t.cell_len <= w and "\n" not in t.plain else max(1, len(t.wrap(self.app.console, w)))
        if n > self._lines:
            self._lines = n
            if self.size.height == n:
                # (auto already gives it n lines, the first time above all:
                # fix the height there without another layout pass over the screen)
                self.styles.set_rule("height", Scalar.from_number(n))
            else:
                self.styles.height = n


class HeaderBar(Bar):
    """The header; at narrow widths it drops the badge and tightens the
    separators rather than cutting the run state off; narrower still, it
    takes two lines."""

    variants: reactive[tuple[Text, ...]] = reactive(tuple)

    def watch_variants(self) -> None:
        self._relayout_if_needed()

    @property
    def text(self) -> Text:
        return self.variants[0] if self.variants else Text("")

    @text.setter
    def text(self, value: Text) -> None:
        self.variants = (value,)

    def render(self) -> Text:
        if not self.variants:
            return Text("")
        w = self.size.width
        for t in self.variants:
            if t.cell_len <= w:
                return t
        return self.variants[-1]


class PathStrip(Bar):
    """The stages of the path with the current one lit (a mark as well as a
    colour); lines break between stages, never inside one."""

    @staticmethod
    def build(frame: Frame, width: int = 10_000) -> Text:
        # the direction of the path shown: receive, or transmit
        t = Text(f" {frame.path_dir.upper()} path ", style="bold")
        col = 9
        for i, stage in enumerate(frame.stages, start=1):
            lit = i == frame.stage
            style = "bold black on #ffd75f" if lit else "#87afd7"
            item = f"{STAGE_MARKS[i]} {stage}" + (" ◀" if lit else "")
            if col > 9 and col + 4 + len(item) > width:
                t.append("\n     ─▶ ", style="grey50")
                col = 9
            elif col > 9:
                t.append(" ─▶ ", style="grey50")
                col += 4
            t.append(item, style=style)
            col += len(item)
        return t


#: " ⑤ 3,609.4 µs  [1/3] ": the stage mark, the time and the [k/n] before the message
_NARRATION_HEAD = r"^ \S [\d,.]+ \S+  (\[\d+/\d+\] )?"   # (compiled on first use, by re's cache)


class Narration(Bar):
    """The step's one line; when it wraps, the message continues under
    itself, not under the stage mark and the time."""

    def render(self) -> Text:
        t = self.text
        w = self.size.width
        m = re.match(_NARRATION_HEAD, t.plain)
        if not w or m is None or t.cell_len <= w:
            return t
        p = m.end()
        head, body = t.divide([p])
        out = head.copy()
        for i, line in enumerate(body.wrap(self.app.console, max(12, w - p))):
            if i:
                out.append("\n" + " " * p)
            out.append_text(line)
        return out

    @staticmethod
    def build(frame: Frame) -> Text:
        ev = frame.last_event
        if ev is None:
            return Text(" press n to step one event, space to run", style="italic grey62")
        mark = STAGE_MARKS[ev.stage] if 0 < ev.stage < len(STAGE_MARKS) else "·"
        k, n = frame.step_pos
        # [k/n]: one engine action did n things at this instant; n shows the next
        at = (f"[{k}/{n}] ", "#87afd7") if n > 1 else ("", "")
        msg = ev.msg
        if ev.kind == "exit":
            start = ev.data.get("start_ns", ev.t)
            if start > ev.t:                   # recorded now; its vCPU gets to it later
                msg += f" · its vCPU takes it at {_fmt_t(start)}"
            if ev.seq <= frame.setup_seq:
                msg += " · set-up, not counted"
        return Text.assemble((f" {mark} ", "bold #ffd75f"), (f"{_fmt_t(ev.t)}  ", "grey62"), at, (msg, ""))


class FollowBar(Bar):
    """While a packet is followed (``f``): where it is, what carries it, the
    exits on its VM while it is in flight, and its newest step."""

    @staticmethod
    def build(frame: Frame) -> Text:
        fv = frame.follow
        if fv is None:
            return Text("")
        head = (f" {FOLLOW_GLYPH} ", FOLLOW)
        sep = (" · ", "grey42")
        if fv.pkt is None:
            return Text.assemble(head, ("following: waiting for the next frame to appear", "#d787ff"),
                                 sep, ("f stops", "grey62"))
        parts: list = [head, (f"frame #{fv.pkt} ", "bold #d787ff"), (f"→ {fv.vm}", "#d787ff")]
        if fv.state == "delivered":
            lat = f" in {_fmt_t(fv.latency_ns)}" if fv.latency_ns is not None else ""
            parts += [sep, (f"✓ delivered{lat}", "bold #87d787")]
        elif fv.state == "dropped":
            parts += [sep, (f"✗ dropped: {fv.drop_reason}", "bold #ff875f")]
        elif fv.stage:
            parts += [sep, (f"{STAGE_MARKS[fv.stage]} {frame.stages[fv.stage - 1]}", "bold")]
        if fv.desc is not None:
            parts += [sep, (f"{fv.queue} desc {fv.desc}".lstrip(), "")]
        if fv.gpa is not None:
            parts += [sep, (f"GPA 0x{fv.gpa:x}" + (f" → HPA 0x{fv.hpa:x}" if fv.hpa is not None else ""), "")]
        if fv.vf:
            parts += [sep, (f"{fv.vf} {fv.rid}", "")]
        parts += [sep, (f"{fv.exit_count} exit{'s' if fv.exit_count != 1 else ''} on {fv.vm} on its way", "")]
        done = fv.state in ("delivered", "dropped")
        parts += [sep, ("f: follow the next frame" if done else "f stops", "grey62")]
        t = Text.assemble(*parts)
        if fv.journey and not done:
            _t, stage, msg = fv.journey[-1]
            mark = STAGE_MARKS[stage] if 0 < stage < len(STAGE_MARKS) else "·"
            t.append_text(Text.assemble(("\n   ", ""), (f"{mark} ", "bold #d787ff"), (msg, "grey70")))
        return t


class StatsBar(Bar):
    """The counters; at a narrow width they break between items (never
    inside one), and no line starts with a separator."""

    @staticmethod
    def build(frame: Frame, width: int = 10_000) -> Text:
        s = frame.summary
        pk = s["packets"]
        lat = s["latency_ns"]
        irq = s["interrupts"]
        some = pk["delivered"] > 0        # per packet means per delivered packet: none yet, no figure
        items = [
            Text.assemble(("exits/pkt ", "grey62"), (f"{s['exits']['per_packet']:.2f}" if some else "–", "bold")),
            Text.assemble(("copies/pkt ", "grey62"),
                          (f"{s['copies_per_packet']:.2f}".rstrip("0").rstrip(".") if some else "–", "bold")),
            Text.assemble(("irq ", "grey62"), (f"{irq['injected']:,}", "bold"),
                          (f" +{irq['posted']:,} posted" if irq["posted"] else "", "grey62")),
            Text(f"{s['throughput_gbps']:.2f} Gb/s", style="bold"),
            Text.assemble(("p50 ", "grey62"), (_fmt_t(lat["p50"]) if some else "–", "bold"), (" p99 ", "grey62"),
                          (_fmt_t(lat["p99"]) if some else "–", "bold")),
            Text.assemble(("pkts ", "grey62"), (f"{pk['delivered']:,}/{pk['offered']:,}", "bold"),
                          (f" ✗{pk['dropped']:,}" if pk["dropped"] else "", "bold #ff875f")),
            Text.assemble(("t = ", "grey62"), (_fmt_t(frame.t_ns), "bold")),
        ]
        # one line at every width: what does not fit is left out, the least
        # telling first (copies, irq, Gb/s, pkts, exits, latency); the clock stays
        order = [1, 2, 3, 5, 0, 4]
        keep = list(range(len(items)))
        while keep and 1 + sum(items[i].cell_len for i in keep) + 3 * (len(keep) - 1) > width and order:
            gone = order.pop(0)
            keep.remove(gone)
        out = Text(" ")
        for k, i in enumerate(keep):
            if k:
                out.append(" │ ", style="grey42")
            out.append_text(items[i])
        out.truncate(max(1, width))
        return out


def header_text(frame: Frame, preset: str, compact: bool | str = False, hint: bool = False,
                replay: bool = False) -> Text:
    """``hint``: say how to pause and step (until the user first does);
    ``replay``: this run is ``iovtui replay`` of a trace file."""
    state = ("▶ running", "bold #87d787") if frame.running else ("‖ paused", "bold #ffd75f")
    if frame.complete:
        state = ("■ complete", "bold #87afd7")
    if frame.predict:
        right, asked = frame.score
        state = (f"{state[0]} · ? predict {right}/{asked}", state[1])
    if replay:
        state = (f"⟲ replay · {state[0]}", state[1])
    if hint and not frame.complete:
        tip = "space pauses, n steps" if frame.running else "space runs, n steps"
        state = (state[0], state[1]), (f" ({tip})", "italic #ffd75f")
    else:
        state = (state, ("", ""))
    host = (frame.host, "#d7afff")
    if compact:
        # the run state first, so it is never the part a narrow terminal loses;
        # if it still does not fit, the run's identity goes on a second line
        sep = (" · ", "grey42")
        t = Text.assemble((" "), *state, sep, (frame.label, "bold"), sep, host, sep, (preset, ""), sep,
                          (f"seed {frame.seed}", ""), sep, (speed_label(frame.speed), ""))
        if compact == "two-lines":
            # with the hint, the first line names only the technique
            label = frame.technique if hint else frame.label
            t = Text.assemble((" "), *state, sep, (label, "bold"), ("\n "), host, sep, (preset, ""), sep,
                              (f"seed {frame.seed}", ""), sep, (speed_label(frame.speed), ""))
        return t
    sep = ("  ·  ", "grey42")
    return Text.assemble((" iovtui ", "bold black on #87afd7"), (" "), (frame.label, "bold"), sep, host, sep,
                         (preset, ""), sep, (f"seed {frame.seed}", ""), sep, (speed_label(frame.speed), ""),
                         sep, *state)
