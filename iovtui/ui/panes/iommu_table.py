"""The IOMMU pane (and the table pane the NIC pane shares): a model
TableView, or the one sentence saying why it is idle."""

from __future__ import annotations

import re

from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual.binding import Binding
from textual.strip import Strip

from ...sim.driver import Frame
from .common import FOLLOW, FOLLOW_GLYPH, TitledPane, flow

__all__ = ["TablePane", "IommuPane", "pack_columns", "row_vm", "summary_items", "COLUMN_PRIORITY"]

_PCT = r"(\d) %"          # (compiled on first use, by re's cache)


#: which columns stay when the pane is too narrow for all of them: the lowest
#: number goes first (a column is shown whole or not at all, never cut)
COLUMN_PRIORITY = {
    "nic": {"fn": 9, "RID": 8, "vm": 9, "rx+tx": 7, "drop": 7, "MAC": 5, "vlan": 4, "link": 3, "spoof": 2,
            "trust": 1},
    "iommu": {"RID": 9, "device": 8, "IOVA (GPA)": 6, "HPA": 6, "perm": 4, "dom": 3},
}
SELECTED = Style(color="white", bold=True, bgcolor="#3a3a3a")
SELECTED_MARK = Style(color="#ffd75f", bold=True)
_GREY = Style(color="grey62")


def _text(line: str) -> Text:
    # a number and its per cent sign are one word: a wrap never splits "83.1 %"
    line = re.sub(_PCT, r"\1%", line)
    return Text(line, style="#d7af87" if line.startswith("DMAR") else "grey70", overflow="fold")


def row_vm(tv, row: tuple[str, ...]) -> str:
    """The VM a table row belongs to: the NIC's "vm" column, or the IOMMU's
    "device" column ("VF3 → vm3"); "" for a row of no VM (the PF)."""
    cols = tv.columns
    if "vm" in cols:
        return row[cols.index("vm")]
    if "device" in cols:
        dev = row[cols.index("device")]
        return dev.rpartition("→ ")[2] if "→ " in dev else ""
    return ""


def summary_items(summary) -> list:
    """The model's totals as items for one line: "63/63 VFs in use · rx 3,780 · …"
    (a count that is zero and says nothing new, e.g. to host, is left out)."""
    d = dict(summary)
    items: list = []
    if "VFs in use" in d:
        items.append([Segment(f"{d.pop('VFs in use'):,}/{d.pop('VFs', 0):,}", Style(bold=True)),
                      Segment(" VFs in use", _GREY)])
    for label, n in d.items():
        if n or label in ("rx", "tx", "dropped"):
            bad = label in ("dropped", "spoofed") and n
            items.append([Segment(f"{label} ", _GREY), Segment(f"{n:,}", Style(bold=True, color="#ff875f" if bad else None))])
    return [[Segment("Σ ", Style(color="#87afd7", bold=True))] + items[0]] + items[1:] if items else []


class TablePane(TitledPane):
    """The IOMMU or NIC pane: a table, or one sentence saying why it is idle.

    Every row can be reached: the rows of the selected VM (``m``, the
    palette's "jump to VM…", a followed packet) are brought into view when
    the selection changes; focused, the arrows, PgUp / PgDn and Home / End
    scroll; a line says how many rows are above and below the window."""

    BINDINGS = [
        Binding("up", "rows('up')", show=False), Binding("down", "rows('down')", show=False),
        Binding("pageup", "rows('pageup')", show=False), Binding("pagedown", "rows('pagedown')", show=False),
        Binding("home", "rows('home')", show=False), Binding("end", "rows('end')", show=False),
    ]

    def __init__(self, which: str, **kw) -> None:
        super().__init__(**kw)
        self.which = which
        self.border_title = "IOMMU (VT-d)" if which == "iommu" else "NIC"
        self.vm_index = 0        # the selected VM (the app sets it with the RAM and ring panes)
        self.top = 0             # the first row in the window
        self._visible = 1        # rows the window showed last
        self._rows = 0
        self._pinned = True      # keep the selected VM's rows in view (until the user scrolls)
        self._scroll_vm: str | None = None

    def table(self, frame: Frame | None = None):
        f = frame if frame is not None else self.frame
        return None if f is None else (f.iommu if self.which == "iommu" else f.nic)

    def content(self, frame: Frame):
        return (self.table(frame), self._followed(frame))

    def update_frame(self, frame: Frame) -> None:
        super().update_frame(frame)
        title = self.table(frame).title
        if self.border_title != title:
            self.border_title = title

    def _cache_key(self) -> tuple:
        return super()._cache_key() + (self.top, self.vm_index)

    def selected_vm(self) -> str:
        f = self.frame
        if f is None or not f.memory:
            return ""
        return f.memory[min(self.vm_index, len(f.memory) - 1)].vm

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

    # -- scrolling ---------------------------------------------------------------------
    def action_rows(self, how: str) -> None:
        vis, n = max(1, self._visible), self._rows
        top = {"up": self.top - 1, "down": self.top + 1, "pageup": self.top - max(1, vis - 1),
               "pagedown": self.top + max(1, vis - 1), "home": 0, "end": n - vis}.get(how, self.top)
        self._pinned = False           # the user's window stays until the selection changes
        self.top = max(0, min(top, n - vis))
        self.refresh()

    _row_at: dict = {}

    def on_click(self, event) -> None:
        """A click on a VM's row selects that VM (as ``m`` and "Jump to VM…" do)."""
        tv, f = self.table(), self.frame
        i = self._row_at.get(event.y)
        if tv is None or f is None or i is None or i >= len(tv.rows):
            return
        names = [m.vm for m in f.memory]
        vm = row_vm(tv, tv.rows[i])
        select = getattr(self.app, "select_vm", None)
        if vm in names and select is not None and vm != self.selected_vm():
            select(names.index(vm))

    def on_mouse_scroll_down(self, event) -> None:
        event.stop()
        for _ in range(3):
            self.action_rows("down")

    def on_mouse_scroll_up(self, event) -> None:
        event.stop()
        for _ in range(3):
            self.action_rows("up")

    # -- layout ----------------------------------------------------------------------------
    def _columns(self, tv, width: int) -> tuple[list[int], list[int], list[str]]:
        """(the columns shown, every column's width, the names of those left
        out): whole columns, the least telling ones dropped first."""
        widths = [len(c) for c in tv.columns]
        for row in tv.rows:
            for k, c in enumerate(row):
                if len(c) > widths[k]:
                    widths[k] = len(c)
        shown = list(range(len(tv.columns)))
        prio = COLUMN_PRIORITY.get(self.which, {})
        while len(shown) > 1 and 1 + sum(widths[k] for k in shown) + len(shown) - 1 > width:
            gone = min(shown[1:], key=lambda k: (prio.get(tv.columns[k], 5), -k))
            shown.remove(gone)
        hidden = [c for k, c in enumerate(tv.columns) if k not in shown]
        return shown, widths, hidden

    def _text_lines(self, text: Text, w: int) -> list[Strip]:
        con = self.app.console
        return [Strip(line).crop_extend(0, w, None)
                for line in con.render_lines(text, con.options.update_width(max(1, w)), pad=True)]

    def render_line(self, y: int) -> Strip:
        return self._cached(y, self._build)

    def _build(self) -> list[Strip]:
        w, h = self.size.width, self.size.height
        tv = self.table()
        if tv is None or not w:
            return [Strip.blank(w)] * h
        if tv.idle_reason:
            return self._text_lines(Text(tv.idle_reason, style="italic grey62"), w)[:h]
        top: list[Strip] = flow(summary_items(tv.summary), w, Style()) if tv.summary else []
        for line in tv.head:
            top += self._text_lines(_text(line), w)
        shown, widths, hidden = self._columns(tv, w)
        head = " " + " ".join(f"{tv.columns[k]:<{widths[k]}}" for k in shown)
        top.append(Strip([Segment(head, Style(bold=True, color="grey70"))]).crop_extend(0, w, None))
        followed = self._followed(self.frame)
        # the lines under the table, each one whole (wrapped) or not at all
        tail_groups: list[list[Strip]] = []
        if followed is not None:
            tail_groups.append(self._text_lines(Text(followed[1], style="#d787ff", overflow="fold"), w))
        for line in tv.lines:
            tail_groups.append(self._text_lines(_text(line), w))
        tail = [s for g in tail_groups for s in g]
        n = self._rows = len(tv.rows)
        avail = max(1, h - len(top))
        vm = self.selected_vm()
        sel = [i for i, row in enumerate(tv.rows) if vm and row_vm(tv, row) == vm]
        if vm != self._scroll_vm:      # a new selection: bring its rows into view
            self._scroll_vm, self._pinned = vm, True
        status_h, status = 0, []
        for _ in range(3):             # the status line's own height (1, or 2 when narrow) takes room
            room = max(1, avail - status_h)
            # every row if they fit (the lines under the table get what is left);
            # if not, the rows get at least two thirds of the room
            vis = n if n <= room else max(1, min(room, max(room - len(tail), 3, room - room // 3)))
            first = self._window(n, vis, sel)
            status = self._status(first, vis, n, hidden, w) if vis < n or hidden else []
            if len(status) == status_h:
                break
            status_h = len(status)
        # lines the tail cannot use (its next line does not fit whole) go to the rows
        used = len(top) + vis + len(status)
        for g in tail_groups:
            if used + len(g) > h:
                break
            used += len(g)
        if vis < n and used < h:
            vis = min(n, vis + h - used)
            first = self._window(n, vis, sel)
            status = self._status(first, vis, n, hidden, w)
        self.top, self._visible = first, vis
        marked = followed[0] if followed is not None else None
        rows: list[Strip] = []
        self._row_at = {len(top) + k: i for k, i in enumerate(range(first, min(n, first + vis)))}
        for i in range(first, min(n, first + vis)):
            row = tv.rows[i]
            text = " ".join(f"{row[k]:<{widths[k]}}" for k in shown)
            if marked is not None and row[0] == marked:
                segs = [Segment(FOLLOW_GLYPH, FOLLOW), Segment(text, FOLLOW)]
            elif i in sel:
                segs = [Segment("▸", SELECTED_MARK), Segment(text, SELECTED)]
            else:
                segs = [Segment(" " + text)]
            rows.append(Strip(segs).crop_extend(0, w, None))
        out = top + rows + status
        for g in tail_groups:
            if len(out) + len(g) > h:
                break
            out += g
        return out[:h]

    def _window(self, n: int, vis: int, sel: list[int]) -> int:
        first = self.top
        if self._pinned and sel:
            # the selected VM's rows a third of the way down (all of them if they fit):
            # the same place for the same selection and size, so the window stays calm
            i0, i1 = sel[0], sel[-1]
            first = i0 - min(vis // 3, max(0, vis - (i1 - i0 + 1)))
        return max(0, min(first, n - vis))

    def _status(self, first: int, vis: int, n: int, hidden: list[str], w: int) -> list[Strip]:
        items: list = []
        hint = None
        if vis < n:
            last = min(n, first + vis)
            items += [f"rows {first + 1:,}–{last:,} of {n:,}", f"↑ {first:,} more", f"↓ {n - last:,} more"]
            hint = "↑↓ PgUp PgDn Home End scroll" if self.has_focus else "tab here to scroll"
        if hidden:
            items.append(f"hidden: {', '.join(hidden)}")
        style = Style(color="#87afd7")
        out = flow(items + [hint] if hint else items, w, style)
        return out if len(out) == 1 or not hint else flow(items, w, style)    # the hint goes first

    def render(self):
        """The whole table as Rich renderables (every row, unscrolled): what
        a wide enough terminal would show, for tools and tests."""
        from rich.console import Group
        f = self.frame
        tv = self.table()
        if tv is None:
            return Text("")
        if tv.idle_reason:
            return Text(tv.idle_reason, style="italic grey62")
        followed = self._followed(f)
        shown, widths, _hidden = self._columns(tv, 10_000)
        head = Text(" " + " ".join(f"{tv.columns[k]:<{widths[k]}}" for k in shown), style="bold grey70")
        rows = []
        for row in tv.rows:
            mark = FOLLOW_GLYPH if followed is not None and row[0] == followed[0] else " "
            rows.append(Text(mark + " ".join(f"{row[k]:<{widths[k]}}" for k in shown), no_wrap=True))
        summary = []
        if tv.summary:
            items = summary_items(tv.summary)
            summary = [Text(" " + " · ".join("".join(seg.text for seg in item) for item in items))]
        extra = [Text(followed[1], style="#d787ff", overflow="fold")] if followed is not None else []
        return Group(*summary, *(_text(line) for line in tv.head), head, *rows, *extra, *(_text(line) for line in tv.lines))


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
