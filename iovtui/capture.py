"""pcapng out: the model's frames as Wireshark reads them.

:class:`PcapngWriter` is the :class:`iovtui.sim.capture.CaptureSink` that
``iovtui run --pcap FILE`` and the app's "Save capture" attach to a
:class:`~iovtui.sim.world.Simulation`.  It streams each frame to the file as
the model hands it over (nothing is kept, memory stays flat), with dpkt's
pcapng blocks: one Section Header, one Interface Description per interface
(``sim.capture.interfaces``: the wire, then each VM) with ``if_name``,
``if_description``, ``if_MACaddr``, ``if_speed`` and ``if_tsresol`` = 9
(timestamps are the model's virtual time in ns), then an Enhanced Packet
Block per frame with ``epb_flags`` (its direction), ``epb_packetid`` (the
model's packet number, the same on every interface the frame shows on) and,
for a frame the model dropped, an ``opt_comment`` with the reason.  pcapng
has no "dropped by policy" flag (epb_flags' error bits are link-layer errors,
epb_dropcount counts frames lost *before* this one), so the comment says it.

This module lives outside ``iovtui.sim`` because it imports dpkt, which the
model does not need.
"""

from __future__ import annotations

import struct
import sys
from typing import IO

from dpkt import pcapng

from . import __version__
from .sim.capture import CaptureError, interfaces

__all__ = ["PcapngWriter", "CaptureError", "open_capture"]

_LE = sys.byteorder == "little"
_SHB = pcapng.SectionHeaderBlockLE if _LE else pcapng.SectionHeaderBlock
_IDB = pcapng.InterfaceDescriptionBlockLE if _LE else pcapng.InterfaceDescriptionBlock
_EPB = pcapng.EnhancedPacketBlockLE if _LE else pcapng.EnhancedPacketBlock
_OPT = pcapng.PcapngOptionLE if _LE else pcapng.PcapngOption
_BO = "<" if _LE else ">"

#: pcapng option codes dpkt has no name for
EPB_FLAGS = 2
EPB_PACKETID = 5
#: epb_flags: inbound = 1, outbound = 2 (bits 0-1)
_END = _OPT(code=pcapng.PCAPNG_OPT_ENDOFOPT)


def _opt(code: int, data: bytes):
    return _OPT(code=code, data=data)


def _text(code: int, text: str):
    return _OPT(code=code, data=text.encode("utf-8"))


class PcapngWriter:
    """Streams a run's frames to ``fh`` (a binary file) as pcapng."""

    def __init__(self, fh: IO[bytes], sim, comment: str = "") -> None:
        self.fh = fh
        self.frames = 0
        self.ifaces = interfaces(sim)
        shb_opts = [_text(pcapng.PCAPNG_OPT_SHB_USERAPPL, f"iovtui {__version__}")]
        if comment:
            shb_opts.insert(0, _text(pcapng.PCAPNG_OPT_COMMENT, comment))
        shb = _SHB(opts=shb_opts + [_END])
        idbs = []
        for i in self.ifaces:
            idbs.append(_IDB(linktype=pcapng.DLT_EN10MB, snaplen=65535, opts=[
                _text(pcapng.PCAPNG_OPT_IF_NAME, i.name),
                _text(pcapng.PCAPNG_OPT_IF_DESCRIPTION, i.description),
                _opt(pcapng.PCAPNG_OPT_IF_MACADDR, bytes(int(x, 16) for x in i.mac.split(":"))),
                _opt(pcapng.PCAPNG_OPT_IF_SPEED, struct.pack(_BO + "Q", i.speed_bps)),
                _opt(pcapng.PCAPNG_OPT_IF_TSRESOL, b"\x09"),       # 10^-9 s: ns
                _END]))
        # dpkt's Writer puts the section header and the interfaces in place;
        # the packets are written as blocks below (Writer.writepkt would take
        # a timestamp of 0 ns, the run's first instant, for "now")
        try:
            pcapng.Writer(fh, shb=shb, idb=idbs)
        except OSError as e:
            raise CaptureError(e.strerror or str(e)) from None
        self._flags = {d: _opt(EPB_FLAGS, struct.pack(_BO + "I", d)) for d in (1, 2)}

    def frame(self, t: int, iface: int, direction: int, data: bytes, pkt_id: int,
              drop: str | None = None) -> None:
        opts = [self._flags[direction], _opt(EPB_PACKETID, struct.pack(_BO + "Q", pkt_id))]
        if drop is not None:
            opts.append(_text(pcapng.PCAPNG_OPT_COMMENT, f"dropped: {drop}"))
        opts.append(_END)
        epb = _EPB(iface_id=iface, ts_high=t >> 32, ts_low=t & 0xFFFFFFFF, pkt_data=bytes(data), opts=opts)
        try:
            self.fh.write(bytes(epb))
        except OSError as e:
            raise CaptureError(e.strerror or str(e)) from None
        self.frames += 1


def open_capture(sim, fh: IO[bytes], comment: str = "") -> PcapngWriter:
    """Attach a pcapng writer to ``sim`` (before it runs) and return it."""
    w = PcapngWriter(fh, sim, comment)
    sim.capture = w
    return w
