"""Packets are real bytes: Ethernet II (+ optional 802.1Q), IPv4, UDP, payload.

Frame sizes here exclude the 4-byte FCS, as a NIC hands frames to software:
60..1514 bytes untagged, up to 1518 with a VLAN tag.  The first 8 payload
bytes carry the packet's sequence number, so anyone reading guest RAM (the
guest stack, a test, an outside program walking a RAM dump) can tell which
packet a buffer holds.
"""

from __future__ import annotations

import struct

__all__ = [
    "Packet", "FrameFactory", "stamp", "mac_bytes", "mac_str", "parse_frame", "ipv4_checksum",
    "ETH_P_IP", "ETH_P_8021Q", "MIN_FRAME", "MAX_FRAME", "WIRE_OVERHEAD", "BROADCAST",
    "strip_vlan", "insert_vlan",
]

ETH_P_IP = 0x0800
ETH_P_8021Q = 0x8100
MIN_FRAME = 60
MAX_FRAME = 1514
#: preamble + SFD (8) + FCS (4) + inter-frame gap (12) that the wire adds to a frame
WIRE_OVERHEAD = 24
BROADCAST = "ff:ff:ff:ff:ff:ff"
_SEQ = struct.Struct("!Q")
SEQ_OFFSET_UNTAGGED = 14 + 20 + 8


def mac_bytes(mac: str) -> bytes:
    return bytes(int(x, 16) for x in mac.split(":"))


def mac_str(b: bytes) -> str:
    return ":".join(f"{x:02x}" for x in b)


def ipv4_checksum(header: bytes | bytearray) -> int:
    s = 0
    for i in range(0, len(header), 2):
        s += (header[i] << 8) | header[i + 1]
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


class Packet:
    """One frame in flight: the bytes plus what the metrics need.

    A received frame is made from its flow's template (``FrameFactory.template``)
    the first time something reads ``frame`` (the device writing it into guest
    RAM, a capture, a VLAN strip): until then a frame waiting in a queue holds
    a reference to the shared template, not 1.5 KB of its own bytes, and a frame
    dropped before anyone reads it is never built.  The bytes are the same either
    way (``stamp``).
    """

    __slots__ = ("id", "t0", "size", "vm", "direction", "_frame", "_tpl", "dst", "src", "vlan", "t_done", "copies")

    def __init__(self, pid: int, t0: int, vm: int, direction: str, frame: bytes | bytearray | None,
                 dst: str, src: str, vlan: int, tpl: tuple | None = None) -> None:
        self.id = pid
        self.t0 = t0
        self.size = len(frame if frame is not None else tpl[0])
        self.vm = vm
        self.direction = direction
        self._frame = frame
        self._tpl = tpl
        self.dst = dst
        self.src = src
        self.vlan = vlan
        self.copies = 0      # data copies the host made of this packet (copies/packet counts delivered ones)
        self.t_done = -1

    @property
    def frame(self) -> bytes | bytearray:
        f = self._frame
        if f is None:
            f = self._frame = stamp(self._tpl, self.id)
            self._tpl = None
        return f

    @frame.setter
    def frame(self, v: bytes | bytearray) -> None:
        self._frame = v
        self._tpl = None

    def __repr__(self) -> str:  # pragma: no cover
        return f"Packet(#{self.id} {self.direction} {self.size}B {self.src}->{self.dst} vlan={self.vlan})"


class FrameFactory:
    """Builds frames from a per-flow template, patching only what changes
    (IP id with an incremental checksum update, RFC 1624, and the sequence
    number in the payload), so a million frames cost little."""

    def __init__(self) -> None:
        self._templates: dict[tuple, tuple[bytearray, int, int]] = {}

    def template(self, dst: str, src: str, vlan: int, src_ip: str, dst_ip: str,
                 size: int, sport: int = 40000, dport: int = 5201) -> tuple:
        """The flow's template: ``stamp(template, seq)`` builds its frame ``seq``
        (a generator keeps it per stream, so each frame costs one copy and two
        patches, not a lookup of eight fields)."""
        key = (dst, src, vlan, src_ip, dst_ip, size, sport, dport)
        tpl = self._templates.get(key)
        if tpl is None:
            buf, ip_off, base_csum = self._template(*key)
            # the IP id, the checksum and the sequence number are patched in one go, with
            # the bytes between them (flags/fragment, TTL, protocol; the addresses and the
            # UDP header) as the template has them
            tpl = (buf, ip_off, ~base_csum & 0xFFFF, bytes(buf[ip_off + 6:ip_off + 10]),
                   bytes(buf[ip_off + 12:ip_off + 28]))
            self._templates[key] = tpl
        return tpl

    def build(self, dst: str, src: str, vlan: int, src_ip: str, dst_ip: str,
              size: int, seq: int, sport: int = 40000, dport: int = 5201) -> bytearray:
        return stamp(self.template(dst, src, vlan, src_ip, dst_ip, size, sport, dport), seq)

    @staticmethod
    def _template(dst: str, src: str, vlan: int, src_ip: str, dst_ip: str,
                  size: int, sport: int, dport: int) -> tuple[bytearray, int, int]:
        l2 = bytearray(mac_bytes(dst) + mac_bytes(src))
        if vlan:
            l2 += struct.pack("!HH", ETH_P_8021Q, vlan & 0x0FFF)
        l2 += struct.pack("!H", ETH_P_IP)
        ip_off = len(l2)
        total_ip = size - ip_off
        if total_ip < 28 + 8:
            raise ValueError(f"frame size {size} too small for IPv4+UDP+sequence number")
        udp_len = total_ip - 20
        ip = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, total_ip, 0, 0x4000, 64, 17, 0,
                                   bytes(int(x) for x in src_ip.split(".")),
                                   bytes(int(x) for x in dst_ip.split("."))))
        csum = ipv4_checksum(ip)
        ip[10:12] = struct.pack("!H", csum)
        udp = struct.pack("!HHHH", sport, dport, udp_len, 0)  # UDP checksum 0: optional on IPv4
        payload = bytearray(udp_len - 8)
        fill = b"iovtui "
        for i in range(8, len(payload)):
            payload[i] = fill[i % len(fill)]
        return bytearray(l2 + ip + udp + payload), ip_off, csum


#: IP id, (flags/fragment, TTL, protocol), header checksum, (addresses, UDP header), sequence number
_STAMP = struct.Struct("!H4sH16sQ")


def stamp(tpl: tuple, seq: int) -> bytearray:
    """Frame ``seq`` of a flow (``FrameFactory.template``): the IP id is the
    sequence number's low 16 bits, the header checksum updated incrementally
    (RFC 1624: HC' = ~(~HC + ~m + m') with m = 0 in the template; the template
    keeps ~HC), and the
    full sequence number in the first 8 payload bytes."""
    buf, ip_off, not_csum, mid, mid16 = tpl
    frame = bytearray(buf)
    ident = seq & 0xFFFF
    s = not_csum + ident
    _STAMP.pack_into(frame, ip_off + 4, ident, mid, ~((s & 0xFFFF) + (s >> 16)) & 0xFFFF, mid16, seq)
    return frame


def parse_frame(b: bytes) -> dict:
    """Decode the headers of a frame (used by the hex view, tests and tools)."""
    out: dict = {"dst": mac_str(b[0:6]), "src": mac_str(b[6:12]), "vlan": 0}
    off = 12
    ethertype = struct.unpack_from("!H", b, off)[0]
    if ethertype == ETH_P_8021Q:
        out["vlan"] = struct.unpack_from("!H", b, off + 2)[0] & 0x0FFF
        off += 4
        ethertype = struct.unpack_from("!H", b, off)[0]
    out["ethertype"] = ethertype
    off += 2
    out["l3_offset"] = off
    if ethertype == ETH_P_IP and len(b) >= off + 28:
        ver_ihl, _tos, total, ident, _frag, ttl, proto, csum = struct.unpack_from("!BBHHHBBH", b, off)
        out.update(ip_total=total, ip_id=ident, ttl=ttl, proto=proto, ip_csum=csum,
                   src_ip=".".join(str(x) for x in b[off + 12:off + 16]),
                   dst_ip=".".join(str(x) for x in b[off + 16:off + 20]),
                   ip_csum_ok=ipv4_checksum(b[off:off + (ver_ihl & 0xF) * 4]) == 0)
        if proto == 17:
            sport, dport, ulen, _uc = struct.unpack_from("!HHHH", b, off + 20)
            out.update(sport=sport, dport=dport, udp_len=ulen)
            if len(b) >= off + 36:
                out["seq"] = _SEQ.unpack_from(b, off + 28)[0]
    return out


def strip_vlan(pkt: Packet) -> None:
    """Remove the 802.1Q tag (a port VLAN delivers untagged frames to the guest)."""
    f = pkt.frame
    if len(f) >= 18 and f[12] == 0x81 and f[13] == 0x00:
        pkt.frame = f[:12] + f[16:]
        pkt.size = len(pkt.frame)
        pkt.vlan = 0


def insert_vlan(pkt: Packet, vid: int) -> None:
    """Add an 802.1Q tag with ``vid`` (a port VLAN tags frames on egress)."""
    f = pkt.frame
    pkt.frame = f[:12] + struct.pack("!HH", ETH_P_8021Q, vid & 0x0FFF) + f[12:]
    pkt.size = len(pkt.frame)
    pkt.vlan = vid
