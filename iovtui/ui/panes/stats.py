"""The one-line bars: header, path strip, stats and narration."""

from __future__ import annotations

from rich.text import Text
from textual.reactive import reactive
from textual.widget import Widget

from ...sim.driver import Frame, speed_label
from .common import STAGE_MARKS, fmt_t as _fmt_t

__all__ = ["HeaderBar", "PathStrip", "Narration", "StatsBar", "header_text"]


class HeaderBar(Widget):
    text = reactive(Text(""))

    def render(self) -> Text:
        return self.text


class PathStrip(Widget):
    text = reactive(Text(""))

    def render(self) -> Text:
        return self.text

    @staticmethod
    def build(frame: Frame) -> Text:
        t = Text(" path ", style="bold")
        for i, stage in enumerate(frame.stages, start=1):
            lit = i == frame.stage
            style = "bold black on #ffd75f" if lit else "#87afd7"
            t.append(f"{STAGE_MARKS[i]} {stage}", style=style)
            if i < len(frame.stages):
                t.append(" ─▶ ", style="grey50")
        return t


class Narration(Widget):
    text = reactive(Text(""))

    def render(self) -> Text:
        return self.text

    @staticmethod
    def build(frame: Frame) -> Text:
        ev = frame.last_event
        if ev is None:
            return Text(" press n to step one event, space to run", style="italic grey62")
        mark = STAGE_MARKS[ev.stage] if 0 < ev.stage < len(STAGE_MARKS) else "·"
        return Text.assemble((f" {mark} ", "bold #ffd75f"), (f"{_fmt_t(ev.t)}  ", "grey62"), (ev.msg, ""))


class StatsBar(Widget):
    text = reactive(Text(""))

    def render(self) -> Text:
        return self.text

    @staticmethod
    def build(frame: Frame) -> Text:
        s = frame.summary
        pk = s["packets"]
        lat = s["latency_ns"]
        irq = s["interrupts"]
        sep = (" │ ", "grey42")
        return Text.assemble(
            (" exits/pkt ", "grey62"), (f"{s['exits']['per_packet']:.2f}", "bold"), sep,
            ("copies/pkt ", "grey62"), (f"{s['copies_per_packet']:.2f}".rstrip("0").rstrip("."), "bold"), sep,
            ("irq ", "grey62"), (f"{irq['injected']:,}", "bold"),
            (f" +{irq['posted']:,} posted" if irq["posted"] else "", "grey62"), sep,
            (f"{s['throughput_gbps']:.2f} Gb/s", "bold"), sep,
            ("p50 ", "grey62"), (_fmt_t(lat["p50"]), "bold"), (" p99 ", "grey62"), (_fmt_t(lat["p99"]), "bold"), sep,
            ("pkts ", "grey62"), (f"{pk['delivered']:,}/{pk['offered']:,}", "bold"),
            (f" ✗{pk['dropped']:,}" if pk["dropped"] else "", "bold #ff875f"), sep,
            ("t = ", "grey62"), (_fmt_t(frame.t_ns), "bold"),
        )


def header_text(frame: Frame, preset: str) -> Text:
    state = ("▶ running", "bold #87d787") if frame.running else ("‖ paused", "bold #ffd75f")
    if frame.complete:
        state = ("■ complete", "bold #87afd7")
    sep = ("  ·  ", "grey42")
    return Text.assemble((" iovtui ", "bold black on #87afd7"), (" "), (frame.label, "bold"), sep,
                         (preset, ""), sep, (f"seed {frame.seed}", ""), sep, (speed_label(frame.speed), ""),
                         sep, state)
