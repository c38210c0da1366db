"""The IOMMU pane (and the table pane the NIC pane shares): a model
TableView, or the one sentence saying why it is idle."""

from __future__ import annotations

from rich.text import Text

from rich.table import Table

from ...sim.driver import Frame
from .common import TitledPane

__all__ = ["TablePane", "IommuPane"]


class TablePane(TitledPane):
    """The IOMMU or NIC pane: a table, or one sentence saying why it is idle."""

    def __init__(self, which: str, **kw) -> None:
        super().__init__(**kw)
        self.which = which
        self.border_title = "IOMMU (VT-d)" if which == "iommu" else "NIC"

    def content(self, frame: Frame):
        return frame.iommu if self.which == "iommu" else frame.nic

    def render(self):
        f = self.frame
        if f is None:
            return Text("")
        tv = f.iommu if self.which == "iommu" else f.nic
        self.border_title = tv.title
        if tv.idle_reason:
            return Text(tv.idle_reason, style="italic grey62")
        table = Table(box=None, pad_edge=False, expand=False, show_edge=False, header_style="bold grey70")
        for k, c in enumerate(tv.columns):
            # identity columns (function, RID, MAC / IOVA) never shrink; counters may
            keep = max([len(c)] + [len(r[k]) for r in tv.rows]) if k < 3 else None
            table.add_column(c, no_wrap=True, overflow="ellipsis", min_width=keep)
        for row in tv.rows:
            table.add_row(*row)
        from rich.console import Group
        return Group(table, *(Text(line, style="#d7af87" if line.startswith("DMAR") else "grey70",
                                   overflow="fold") for line in tv.lines))



class IommuPane(TablePane):
    """VT-d: per RID the domain, mapped IOVA→HPA ranges, IOTLB, DMAR faults."""

    def __init__(self, **kw) -> None:
        super().__init__("iommu", **kw)
