"""The hex view of one guest page, its fields annotated from the model's own layout."""

import struct

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static
from .base import SteadyResize

from ...sim.packet import parse_frame

__all__ = ["HexScreen", "hex_text", "annotate_page"]


class HexScreen(SteadyResize, ModalScreen):
    BINDINGS = [Binding("escape,enter,q", "app.pop_screen", "close")]

    def __init__(self, title: str, data: bytes, base: int, notes: list[tuple[int, int, str]]) -> None:
        super().__init__()
        self.title_text = title
        self.data = data
        self.base = base
        self.notes = notes

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="hex-box"):
            yield Static(Text(self.title_text, style="bold"), classes="title")
            yield Static(self._dump(), id="hex-dump")

    def _dump(self) -> Text:
        # 16 bytes a row when the box is wide enough for them and their ASCII, else 8
        box = min(110, int(self.app.size.width * 0.95)) - 5
        return hex_text(self.data, self.base, self.notes, per_row=16 if box >= 76 else 8)

    def on_resize(self) -> None:
        self.query_one("#hex-dump", Static).update(self._dump())


def hex_text(data: bytes, base: int, notes: list[tuple[int, int, str]], rows: int = 64,
             per_row: int = 16) -> Text:
    """``per_row`` bytes a row with their ASCII; annotated byte ranges are
    coloured and explained above the dump."""
    palette = ["#5fafff", "#87d787", "#d7af5f", "#af87ff", "#ff875f", "#5fd7d7"]
    colour = {}
    for k, (off, n, _label) in enumerate(notes):
        for i in range(off, min(off + n, len(data))):
            colour.setdefault(i, palette[k % len(palette)])
    out = Text()
    for k, (off, n, label) in enumerate(notes[:24]):
        out.append("■ ", style=palette[k % len(palette)])
        out.append(f"+0x{off:03x} ({n} B) {label}\n")
    out.append("\n")
    last = max((o + n for o, n, _ in notes), default=256)
    limit = min(len(data), max(rows * 16, (last + 15) // 16 * 16))
    for r in range(0, limit, per_row):
        out.append(f"{base + r:08x}  ", style="grey50")
        for i in range(r, r + per_row):
            out.append(f"{data[i]:02x} ", style=colour.get(i, "grey70"))
        out.append(" ")
        for i in range(r, r + per_row):
            ch = data[i]
            out.append(chr(ch) if 32 <= ch < 127 else ".", style=colour.get(i, "grey42"))
        out.append("\n")
    return out


DESC_FLAGS = ((1, "NEXT"), (2, "WRITE"), (4, "INDIRECT"))


def _flag_names(flags: int) -> str:
    names = [n for bit, n in DESC_FLAGS if flags & bit]
    return f"{flags} ({'|'.join(names)})" if names else str(flags)


def annotate_page(technique, vm_index: int, page_gpa: int, data: bytes) -> list[tuple[int, int, str]]:
    """What the bytes of a page are, from the model's own layout (rings, buffers)."""
    notes: list[tuple[int, int, str]] = []
    end = page_gpa + len(data)

    def inside(a: int) -> bool:
        return page_gpa <= a < end

    nics = getattr(technique, "nics", None) or getattr(technique, "ports", None) or []
    nic = nics[vm_index] if vm_index < len(nics) else None
    if nic is None:
        return notes
    # virtio rings (split here; the packed ring annotates itself)
    for q in (getattr(nic, "rxq", None), getattr(nic, "txq", None)):
        if q is None:
            continue
        if hasattr(q, "annotate"):         # the packed ring decodes its own layout
            notes.extend(q.annotate(page_gpa, data)[:max(0, 40 - len(notes))])
            continue
        for i in range(q.num):
            a = q.desc + 16 * i
            if inside(a) and len(notes) < 40:
                addr, ln, fl, nx = struct.unpack_from("<QIHH", data, a - page_gpa)
                notes.append((a - page_gpa, 16, f"{q.name} desc[{i}] addr 0x{addr:x} len {ln} flags {_flag_names(fl)} next {nx}"))
        if inside(q.avail):
            o = q.avail - page_gpa
            fl, idx = struct.unpack_from("<HH", data, o)
            notes.append((o, 2, f"{q.name} avail.flags = {fl}"))
            notes.append((o + 2, 2, f"{q.name} avail.idx = {idx}"))
            for k in range(min(q.num, 8)):
                head, = struct.unpack_from("<H", data, o + 4 + 2 * k)
                notes.append((o + 4 + 2 * k, 2, f"{q.name} avail.ring[{k}] = desc {head}"))
        if inside(q.used_event_addr):
            v, = struct.unpack_from("<H", data, q.used_event_addr - page_gpa)
            notes.append((q.used_event_addr - page_gpa, 2, f"{q.name} used_event = {v}"))
        if inside(q.used):
            o = q.used - page_gpa
            fl, idx = struct.unpack_from("<HH", data, o)
            notes.append((o, 2, f"{q.name} used.flags = {fl}"))
            notes.append((o + 2, 2, f"{q.name} used.idx = {idx}"))
            for k in range(min(q.num, 8)):
                eid, eln = struct.unpack_from("<II", data, o + 4 + 8 * k)
                notes.append((o + 4 + 8 * k, 8, f"{q.name} used.ring[{k}] id {eid} len {eln}"))
        if inside(q.avail_event_addr):
            v, = struct.unpack_from("<H", data, q.avail_event_addr - page_gpa)
            notes.append((q.avail_event_addr - page_gpa, 2, f"{q.name} avail_event = {v}"))
    # descriptor rings (e1000 legacy, VF 82599 advanced): a ring that annotates itself knows its formats
    for ring in (getattr(nic, "rx", None), getattr(nic, "tx", None)):
        if ring is None:
            continue
        if hasattr(ring, "annotate"):      # the ring decodes its own descriptor formats
            notes.extend(ring.annotate(page_gpa, data)[:max(0, 40 - len(notes))])
            continue
        for i in range(ring.size):
            a = ring.base + 16 * i
            if inside(a) and len(notes) < 40:
                addr, ln = struct.unpack_from("<QH", data, a - page_gpa)
                st = data[a - page_gpa + 12]
                notes.append((a - page_gpa, 16, f"{ring.kind} desc[{i}] addr 0x{addr:x} length {ln} status 0x{st:02x}"))
    # a received buffer: virtio_net_hdr + Ethernet frame
    region = technique.vms[vm_index].mem.region_at(page_gpa)
    if region is not None and region.role in ("rx_buf", "tx_buf"):
        hdr = 12 if hasattr(nic, "rxq") else 0
        for off in range(0, len(data), 2048):
            chunk = data[off + hdr:off + hdr + 64]
            if not any(chunk):
                continue
            if hdr:
                fl, gso, hl, gs, cs, co, nb = struct.unpack_from("<BBHHHHH", data, off)
                notes.append((off, 12, f"virtio_net_hdr flags {fl} gso_type {gso} hdr_len {hl} gso_size {gs} "
                                       f"csum_start {cs} csum_offset {co} num_buffers {nb}"))
            try:
                f = parse_frame(bytes(data[off + hdr:off + hdr + 64]))
            except struct.error:
                continue
            notes.append((off + hdr, 6, f"Ethernet destination {f['dst']}"))
            notes.append((off + hdr + 6, 6, f"Ethernet source {f['src']}"))
            et = 12 + (4 if f.get("vlan") else 0)
            notes.append((off + hdr + et, 2, f"EtherType 0x{f['ethertype']:04x}"))
            if "src_ip" in f:
                notes.append((off + hdr + et + 2, 20, f"IPv4 {f['src_ip']} → {f['dst_ip']} id {f['ip_id']}"))
                notes.append((off + hdr + et + 22, 8, f"UDP {f.get('sport')} → {f.get('dport')}"))
            if "seq" in f:
                notes.append((off + hdr + et + 30, 8, f"payload: packet #{f['seq']}"))
    return notes
