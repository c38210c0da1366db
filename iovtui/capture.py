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

import os
import re
import struct
import sys
import tempfile
from pathlib import Path
from typing import IO, Callable

from dpkt import pcapng

from . import __version__
from .sim.capture import CaptureError, interfaces

__all__ = ["PcapngWriter", "CaptureError", "open_capture", "save_capture", "capture_name"]

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
        # one block and one packet-id option, refilled for every frame (a third
        # cheaper than new dpkt objects each time)
        self._epb = _EPB()
        self._pid = _opt(EPB_PACKETID, bytes(8))
        self._q = struct.Struct(_BO + "Q")

    def frame(self, t: int, iface: int, direction: int, data: bytes, pkt_id: int,
              drop: str | None = None) -> None:
        pid = self._pid
        pid.data = self._q.pack(pkt_id)
        if drop is None:
            opts = [self._flags[direction], pid, _END]
        else:
            opts = [self._flags[direction], pid, _text(pcapng.PCAPNG_OPT_COMMENT, f"dropped: {drop}"), _END]
        epb = self._epb
        epb.iface_id = iface
        epb.ts_high = t >> 32
        epb.ts_low = t & 0xFFFFFFFF
        epb.pkt_data = bytes(data)
        epb.opts = opts
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


def capture_name(preset: str, technique: str, n: int) -> str:
    """``iovtui-<preset>-<technique>-N.pcapng`` (the preset's name made safe for a file name)."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", preset).strip("._") or "preset"
    return f"iovtui-{safe}-{technique}-{n}.pcapng"


def save_capture(make_sim: Callable, events: int, preset: str, technique: str,
                 directory: str | os.PathLike = ".") -> tuple[Path, int, int]:
    """The app's "Save capture": the run so far (``events`` engine actions of
    ``make_sim``'s run, re-run headless: see ``sim.driver.rerun``) as a
    pcapng file in ``directory`` named by :func:`capture_name` with the first
    N that is free (never overwriting).  The file appears whole or not at all:
    written under a temporary name, then linked to its name (which fails
    rather than replace a file that appeared meanwhile).  Returns (path,
    frames, virtual time in ns); raises :class:`CaptureError` (the OS's
    reason) if it cannot be written."""
    from .sim.driver import rerun

    d = Path(directory)
    try:
        fd, tmp_name = tempfile.mkstemp(dir=d, prefix=".iovtui-capture.", suffix=".part")
    except OSError as e:
        raise CaptureError(f"{d.resolve()}: {e.strerror or e}") from None
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as fh:
            writer: list[PcapngWriter] = []

            def attach(sim) -> None:
                comment = (f"iovtui app: preset {preset}, technique {technique}, seed {sim.seed}, "
                           f"the run's first {events:,} events; timestamps are the model's virtual time (ns from 0)")
                writer.append(open_capture(sim, fh, comment))
            sim = rerun(make_sim, events, attach)
            try:
                fh.flush()
            except OSError as e:
                raise CaptureError(e.strerror or str(e)) from None
        tmp.chmod(0o666 & ~_UMASK)           # as open() would have made it (mkstemp: 0600)
        n = 1
        while True:
            path = d / capture_name(preset, technique, n)
            try:
                os.link(tmp, path)          # atomic, and never over an existing file
                break
            except FileExistsError:
                n += 1
            except OSError:
                # no hard links here (some FUSE / FAT file systems): claim the name, then replace it
                try:
                    open(path, "xb").close()
                except FileExistsError:
                    n += 1
                    continue
                os.replace(tmp, path)
                break
        return path, writer[0].frames, sim.engine.now
    except OSError as e:
        raise CaptureError(f"{d.resolve()}: {e.strerror or e}") from None
    finally:
        try:
            tmp.unlink()
        except OSError:
            pass


def _umask() -> int:
    m = os.umask(0)
    os.umask(m)
    return m


#: read once, on import (the app imports this module on its main thread; a
#: worker thread setting the process's umask even briefly could race)
_UMASK = _umask()
