"""The `?` overlay: every key."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static
from .base import SteadyResize

from rich.table import Table

__all__ = ["HelpScreen", "SIMPLIFIED"]

#: said plainly, so nobody mistakes a simplification for the real thing
SIMPLIFIED = (
    "The guest runs nothing but the network path: when it runs out of that work its vCPU executes "
    "HLT (exit 12) and the next interrupt wakes it; there is no timer tick, no scheduler and no other "
    "program in it, so a saturated run shows no HLT exits.",
    "The host profile (a, [host]) is one of three platforms, no APICv, APICv, APICv + VT-d posted "
    "interrupts, the same for every VM, with the guest's APIC in xAPIC or x2APIC mode. Halt-polling's "
    "time and the TSC-deadline MSR_WRITE a NOHZ guest makes going idle are not modelled; an assigned "
    "VF's host interrupt (no VT-d PI) is taken on another CPU than the vCPU's.",
    "Each software cost (vCPU, host threads) varies around its table value by costs.jitter (default 0.1: "
    "a shifted exponential with the cost as its mean and a 10 % spread; 0 makes every cost exact); the wire "
    "and the VF's DMA engine do not vary. Real hosts vary more (scheduling, C-states), which batches "
    "interrupts at lower loads than here. The e1000 driver's 2-second watchdog is left out.",
    "NAPI runs as in Linux: a poll takes up to its weight (64) and stays scheduled when it used all of it; "
    "__do_softirq runs NET_RX at most 10 times or 2 ms, then ksoftirqd/0 polls. Simplified: ksoftirqd gets "
    "the vCPU at once and its switch costs nothing (no other task competes for it), and with one RX queue "
    "per vCPU netdev_budget (300) never binds.",
    "Costs are order-of-magnitude defaults from the literature (any preset's [costs] overrides them); "
    "exits, copies and interrupts per packet come from the mechanics, not from those numbers.",
    "One engine action can do several things at one virtual instant; n narrates them one by one "
    "([k/n]) while the panes show the state after all of them.",
    "The IOMMU maps guest RAM with 4 KiB pages unless [iommu] superpages = true (2 MiB, as Linux uses "
    "where the IOMMU allows), so the IOTLB misses once per page of buffers; a device's context entry "
    "is cached after its first DMA.",
    "One vCPU and one queue per VM; the e1000 is the legacy descriptor format; virtio uses split "
    "rings in the legacy contiguous layout, or (o) the packed ring.",
    "The packed ring (o): one descriptor per buffer and devices that complete in order, as on the split "
    "ring; upstream vhost-net has no packed ring, so with vhost on the model runs vhost's batching with "
    "QEMU's packed rules (as a vhost-user backend would); any queue size 256..32768 is taken for packed "
    "(virtio 1.1; QEMU's own virtio-net asks a power of two up to 1,024). Ring cache lines count the distinct 64-byte lines written, "
    "one set per side per instant.",
    "Two NIC ports ([nic] ports = 2) are two links at line rate each, and each PF has its own VFs, "
    "switch and spoof log; but the host's receive softirq and transmit path (emulation, virtio) are "
    "one for both ports, and a frame between VMs on different ports leaves on one port's wire and is "
    "not brought back by the outside switch.",
)


class HelpScreen(SteadyResize, ModalScreen):
    BINDINGS = [Binding("escape,question_mark,q", "app.pop_screen", "close")]

    def __init__(self, keys: list[tuple[str, str]], stages: list[tuple[str, tuple[str, ...]]] = (),
                 tx_stages: list[tuple[str, tuple[str, ...]]] = ()) -> None:
        super().__init__()
        self.keys = keys
        self.stages = list(stages)
        self.tx_stages = list(tx_stages)

    def compose(self) -> ComposeResult:
        t = Table(box=None, show_header=False, pad_edge=False)
        t.add_column(style="bold #ffd75f", no_wrap=True)
        t.add_column()
        for k, d in self.keys:
            t.add_row(k, d)
        with VerticalScroll(id="help-box"):
            yield Static(Text("iovtui keys", style="bold"), classes="title")
            yield Static(t)
            for title, table in (("The receive path", self.stages), ("The transmit path", self.tx_stages)):
                if not table:
                    continue
                yield Static(Text(f"\n{title}, step by step — the narration and the path strip number "
                                  "each event with its step; the same number is the same step in each technique:",
                                  style="bold"))
                yield Static(_stage_grid(table))
            yield Static(Text("\nWhat the model simplifies", style="bold"))
            yield Static(Text("\n".join("· " + line for line in SIMPLIFIED), style="grey70"))
            yield Static(Text("All actions are also in the command palette (ctrl+p). escape closes.",
                              style="italic grey62"))


def _stage_grid(stages: list[tuple[str, tuple[str, ...]]]) -> Table:
    st = Table(box=None, pad_edge=False, header_style="bold grey70")
    st.add_column("", style="bold #ffd75f", no_wrap=True)
    names = {"emulation": "emulation (e1000)", "virtio": "virtio", "sriov": "SR-IOV + VT-d"}
    for name, _s in stages:
        st.add_column(names.get(name, name))
    marks = "⓪①②③④⑤⑥"
    for i in range(max(len(s) for _n, s in stages)):
        st.add_row(marks[i + 1] if i + 1 < len(marks) else str(i + 1),
                   *(s[i] if i < len(s) else "" for _n, s in stages))
    return st
