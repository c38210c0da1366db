"""The IOMMU pane (and the table pane the NIC pane shares): a model
TableView, or the one sentence saying why it is idle."""

from __future__ import annotations

import re

from rich.text import Text

from rich.table import Table

from ...sim.driver import Frame
from .common import FOLLOW_GLYPH, TitledPane

__all__ = ["TablePane", "IommuPane", "pack_columns"]

_PCT = re.compile(r"(\d) %")


class TablePane(TitledPane):
    """The IOMMU or NIC pane: a table, or one sentence saying why it is idle."""

    def __init__(self, which: str, **kw) -> None:
        super().__init__(**kw)
        self.which = which
        self.border_title = "IOMMU (VT-d)" if which == "iommu" else "NIC"

    def content(self, frame: Frame):
        return (frame.iommu if self.which == "iommu" else frame.nic, self._followed(frame))

    def _followed(self, frame: Frame | None):
        """The row key (RID or VF name) of the followed packet's function,
        and the line saying what the IOMMU did with its buffer."""
        fv = frame.follow if frame is not None else None
        if fv is None or fv.pkt is None:
            return None
        if self.which == "iommu":
            if not fv.rid:
                return None
            if fv.fault:
                line = f"{FOLLOW_GLYPH} frame #{fv.pkt}: blocked — {fv.fault}"
            elif fv.hpa is not None and fv.gpa is not None:
                how = "IOTLB hit" if fv.iotlb_hit else "IOTLB miss, page walk"
                line = f"{FOLLOW_GLYPH} frame #{fv.pkt}: {fv.rid} GPA 0x{fv.gpa:x} → HPA 0x{fv.hpa:x} ({how})"
            else:
                line = f"{FOLLOW_GLYPH} frame #{fv.pkt}: {fv.rid}, not translated yet"
            return fv.rid, line
        return (fv.vf, f"{FOLLOW_GLYPH} frame #{fv.pkt} went through {fv.vf} ({fv.rid})") if fv.vf else None

    def render(self):
        f = self.frame
        if f is None:
            return Text("")
        tv = f.iommu if self.which == "iommu" else f.nic
        self.border_title = tv.title
        if tv.idle_reason:
            return Text(tv.idle_reason, style="italic grey62")
        followed = self._followed(f)
        rows = list(tv.rows)
        marked = -1
        if followed is not None:
            for i, row in enumerate(rows):
                if row[0] == followed[0]:
                    rows[i] = (f"{FOLLOW_GLYPH}{row[0]}",) + tuple(row[1:])
                    marked = i
                    break
        width = max(20, self.size.width)
        widths = [max([len(c)] + [len(r[k]) for r in rows]) for k, c in enumerate(tv.columns)]
        parts: list = []
        for group in pack_columns(widths, width):
            if parts:
                parts.append(Text(""))
            table = Table(box=None, pad_edge=False, expand=False, show_edge=False, header_style="bold grey70",
                          collapse_padding=True)
            for k in group:
                table.add_column(tv.columns[k], no_wrap=True, min_width=widths[k])
            for i, row in enumerate(rows):
                table.add_row(*(row[k] for k in group), style="bold black on #d787ff" if i == marked else None)
            parts.append(table)
        from rich.console import Group

        def text(line: str) -> Text:
            # a number and its per cent sign are one word: a wrap never splits "83.1 %"
            line = _PCT.sub(r"\1%", line)
            return Text(line, style="#d7af87" if line.startswith("DMAR") else "grey70", overflow="fold")
        extra = [Text(followed[1], style="#d787ff", overflow="fold")] if followed is not None else []
        return Group(*(text(line) for line in tv.head), *parts, *extra, *(text(line) for line in tv.lines))

    def on_resize(self) -> None:
        self.refresh()


def pack_columns(widths: list[int], width: int, gap: int = 1) -> list[list[int]]:
    """Split a table's columns into groups that each fit ``width``; every group
    after the first repeats column 0 (the function / RID) so rows stay
    identifiable.  No cell is ever truncated."""
    groups: list[list[int]] = [[]]
    used = 0
    for k, w in enumerate(widths):
        need = w + (gap if groups[-1] else 0)
        if groups[-1] and used + need > width and len(groups[-1]) > 1:
            groups.append([0])
            used = widths[0]
            need = w + gap
        groups[-1].append(k)
        used += need
    return groups


class IommuPane(TablePane):
    """VT-d: per RID the domain, mapped IOVA→HPA ranges, IOTLB, DMAR faults."""

    def __init__(self, **kw) -> None:
        super().__init__("iommu", **kw)
