"""Intel 82599 advanced descriptor rings (what an SR-IOV VF and ixgbevf use), in guest RAM.

Layouts from Linux drivers/net/ethernet/intel/ixgbe/ixgbe_type.h, all 16 bytes::

    union ixgbe_adv_rx_desc
      read:        u64 pkt_addr, u64 hdr_addr
      write-back:  u16 pkt_info, u16 hdr_info, u32 rss, u32 status_error, u16 length, u16 vlan
    union ixgbe_adv_tx_desc
      read:        u64 buffer_addr, u32 cmd_type_len, u32 olinfo_status
      write-back:  u64 rsvd, u32 nxtseq_seed, u32 status
    struct ixgbe_adv_tx_context_desc
                   u32 vlan_macip_lens, u32 seqnum_seed, u32 type_tucmd_mlhl, u32 mss_l4len_idx

The VF's driver (ixgbevf) posts RX buffers in the read format
(``ixgbevf_alloc_rx_buffers``: pkt_addr, and hdr_addr = 0 in the next
descriptor so its stale write-back is cleared) and writes the tail register
with next_to_use (``ixgbevf_write_tail``).  The VF writes the frame and then
the write-back format over the same 16 bytes, DD in status_error.  Each
transmitted frame takes two descriptors: a context descriptor
(``ixgbevf_tx_csum`` → ``ixgbevf_tx_ctxtdesc``: ixgbevf writes one for every
frame) and an advanced data descriptor (``ixgbevf_tx_map``:
cmd_type_len = DTYP_DATA|DEXT|IFCS|EOP|RS|length, olinfo_status =
PAYLEN << 14 | CC); the VF writes back DD into the data descriptor's status
(the model sets only the STA bits, in place).
"""

from __future__ import annotations

import struct

from .e1000 import HeadTailRing
from .memory import GuestMemory
from .views import QueueInfo, RingView

__all__ = ["AdvRxRing", "AdvTxRing", "adv_ring_view", "KIND",
           "RXD_STAT_DD", "RXD_STAT_EOP", "TXD_STAT_DD", "ADVTXD_DTYP_DATA", "ADVTXD_DTYP_CTXT",
           "TXD_CMD_EOP", "TXD_CMD_IFCS", "TXD_CMD_RS", "TXD_CMD_DEXT", "ADVTXD_CC",
           "ADVTXD_PAYLEN_SHIFT", "ADVTXD_MACLEN_SHIFT", "RXDADV_PKTTYPE_IPV4", "RXDADV_PKTTYPE_UDP"]

#: the QueueInfo / RingView kind (layout.json)
KIND = "82599-adv"
DESC_LEN = 16

# ixgbe_type.h
RXD_STAT_DD = 0x01          # IXGBE_RXD_STAT_DD
RXD_STAT_EOP = 0x02         # IXGBE_RXD_STAT_EOP
RXDADV_PKTTYPE_IPV4 = 0x0010
RXDADV_PKTTYPE_UDP = 0x0200
TXD_STAT_DD = 0x01          # IXGBE_TXD_STAT_DD
TXD_CMD_EOP = 0x01000000    # IXGBE_TXD_CMD_EOP
TXD_CMD_IFCS = 0x02000000   # IXGBE_TXD_CMD_IFCS
TXD_CMD_RS = 0x08000000     # IXGBE_TXD_CMD_RS
TXD_CMD_DEXT = 0x20000000   # IXGBE_TXD_CMD_DEXT
ADVTXD_DTYP_CTXT = 0x00200000
ADVTXD_DTYP_DATA = 0x00300000
ADVTXD_PAYLEN_SHIFT = 14
ADVTXD_MACLEN_SHIFT = 9
ADVTXD_CC = 0x00000080      # Check Context: always set when the Tx switch is on (VFs)

_QQ = struct.Struct("<QQ")
_Q = struct.Struct("<Q")
_RXWB = struct.Struct("<HHIIHH")    # pkt_info, hdr_info, rss, status_error, length, vlan
_TXD = struct.Struct("<QII")        # buffer_addr, cmd_type_len, olinfo_status
_CTX = struct.Struct("<IIII")       # vlan_macip_lens, seqnum_seed, type_tucmd_mlhl, mss_l4len_idx
_U32 = struct.Struct("<I")
_U16 = struct.Struct("<H")


def _flags(v: int, names) -> str:
    return "|".join(n for b, n in names if v & b) or "–"


class _AdvRing(HeadTailRing):
    """An 82599 VF ring: head (VFRDH / VFTDH) and tail (VFRDT / VFTDT) as the
    e1000's, with the advanced descriptor formats."""

    def queue_info(self, vm: str, kind: str = KIND) -> QueueInfo:
        return QueueInfo(vm, self.name, kind, self.size, self.base,
                         extra={"desc_len": DESC_LEN, "head": self.head, "tail": self.tail,
                                "format": "82599 advanced (SRRCTL.DESCTYPE = ADV_ONEBUF)"})


class AdvRxRing(_AdvRing):
    """An 82599 advanced RX ring (one buffer per descriptor)."""

    def __init__(self, mem: GuestMemory, size: int, label: str) -> None:
        super().__init__(mem, "rx", size, label)

    # -- the driver ----------------------------------------------------------
    def post_rx(self, buf_gpa: int, token: object) -> int:
        """ixgbevf_alloc_rx_buffers, one buffer: pkt_addr in the read format, and
        hdr_addr = 0 in the next descriptor (which clears its old status_error)."""
        i = self.next_to_use
        ram = self.mem.ram
        _Q.pack_into(ram, self.base + DESC_LEN * i, buf_gpa)
        self.tokens[i] = token
        j = (i + 1) % self.size
        _Q.pack_into(ram, self.base + DESC_LEN * j + 8, 0)
        self.next_to_use = j
        self.last_touched = i
        return i

    def status(self, i: int) -> int:
        return _U32.unpack_from(self.mem.ram, self.base + DESC_LEN * i + 8)[0]

    def reap(self) -> tuple[int, object, int] | None:
        """ixgbevf_clean_rx_irq, one descriptor: DD set → ``(slot, token, length)``."""
        i = self.next_to_clean
        if i == self.next_to_use:
            return None
        d = self.base + DESC_LEN * i
        ram = self.mem.ram
        if not ram[d + 8] & RXD_STAT_DD:
            return None
        length = _U16.unpack_from(ram, d + 12)[0]
        token = self.tokens[i]
        self.tokens[i] = None
        self.next_to_clean = (i + 1) % self.size
        self.last_touched = i
        return i, token, length

    # -- the VF ----------------------------------------------------------------
    def hw_fetch(self) -> tuple[int, int, int] | None:
        """The read-format descriptor at head, if the VF owns one: ``(slot, pkt_addr, 0)``."""
        if self.head == self.tail:
            return None
        i = self.head
        addr = _Q.unpack_from(self.mem.ram, self.base + DESC_LEN * i)[0]
        return i, addr, 0

    def hw_done_rx(self, i: int, length: int, pkt_info: int = RXDADV_PKTTYPE_IPV4 | RXDADV_PKTTYPE_UDP) -> None:
        """The write-back format over the same 16 bytes: DD|EOP, length; advance head."""
        _RXWB.pack_into(self.mem.ram, self.base + DESC_LEN * i, pkt_info, 0, 0,
                        RXD_STAT_DD | RXD_STAT_EOP, length, 0)
        self.head = (i + 1) % self.size
        self.last_touched = i

    # -- the hex view --------------------------------------------------------------
    def annotate(self, page_gpa: int, data: bytes) -> list[tuple[int, int, str]]:
        out = []
        end = page_gpa + len(data)
        for i in range(self.size):
            a = self.base + DESC_LEN * i
            if not page_gpa <= a < end or len(out) >= 40:
                continue
            o = a - page_gpa
            pi, _hi, rss, st, ln, vlan = _RXWB.unpack_from(data, o)
            if st & RXD_STAT_DD:
                out.append((o, 8, f"rx desc[{i}] write-back: pkt_info 0x{pi:04x} rss 0x{rss:x}"))
                out.append((o + 8, 8, f"rx desc[{i}] status_error 0x{st:x} "
                                      f"({_flags(st, ((RXD_STAT_DD, 'DD'), (RXD_STAT_EOP, 'EOP')))}) "
                                      f"length {ln} vlan {vlan}"))
            else:
                pkt, hdr = _QQ.unpack_from(data, o)
                out.append((o, 8, f"rx desc[{i}] read: pkt_addr 0x{pkt:x}"))
                out.append((o + 8, 8, f"rx desc[{i}] read: hdr_addr 0x{hdr:x} (DD clear)"))
        return out


class AdvTxRing(_AdvRing):
    """An 82599 advanced TX ring: a context descriptor and a data descriptor per frame."""

    def __init__(self, mem: GuestMemory, size: int, label: str) -> None:
        super().__init__(mem, "tx", size, label)
        #: slot -> "ctxt" | "data" (what the driver last wrote there)
        self.types: list[str] = [""] * size

    def free(self) -> int:
        return self.unused()

    def post_tx(self, buf_gpa: int, length: int, token: object, maclen: int = 14) -> int:
        """ixgbevf_tx_ctxtdesc + ixgbevf_tx_map for one single-buffer frame; returns
        the data descriptor's slot (the ``next_to_watch``)."""
        ram = self.mem.ram
        c = self.next_to_use
        _CTX.pack_into(ram, self.base + DESC_LEN * c, maclen << ADVTXD_MACLEN_SHIFT, 0,
                       TXD_CMD_DEXT | ADVTXD_DTYP_CTXT, 0)
        self.types[c] = "ctxt"
        i = (c + 1) % self.size
        cmd = ADVTXD_DTYP_DATA | TXD_CMD_DEXT | TXD_CMD_IFCS | TXD_CMD_EOP | TXD_CMD_RS | length
        _TXD.pack_into(ram, self.base + DESC_LEN * i, buf_gpa, cmd,
                       (length << ADVTXD_PAYLEN_SHIFT) | ADVTXD_CC)
        self.types[i] = "data"
        self.tokens[i] = token
        self.next_to_use = (i + 1) % self.size
        self.last_touched = i
        return i

    def reap(self) -> tuple[int, object, int] | None:
        """ixgbevf_clean_tx_irq, one frame: the context descriptor and the data
        descriptor whose status has DD → ``(data slot, token, length)``."""
        c = self.next_to_clean
        if c == self.next_to_use:
            return None
        i = (c + 1) % self.size
        d = self.base + DESC_LEN * i
        ram = self.mem.ram
        if not ram[d + 12] & TXD_STAT_DD:
            return None
        length = _U32.unpack_from(ram, d + 8)[0] & 0xFFFF
        token = self.tokens[i]
        self.tokens[i] = None
        self.next_to_clean = (i + 1) % self.size
        self.last_touched = i
        return i, token, length

    def hw_fetch(self) -> tuple[int, int, int] | None:
        """The next frame the VF owns: ``(data slot, buffer_addr, length)``."""
        if self.head == self.tail:
            return None
        i = (self.head + 1) % self.size        # head is at the frame's context descriptor
        addr, cmd, _ol = _TXD.unpack_from(self.mem.ram, self.base + DESC_LEN * i)
        return i, addr, cmd & 0xFFFF

    def hw_done_tx(self, i: int) -> None:
        """RS was set: the VF writes DD into the data descriptor's status; head
        moves past the frame's two descriptors."""
        self.mem.ram[self.base + DESC_LEN * i + 12] |= TXD_STAT_DD
        self.head = (i + 1) % self.size
        self.last_touched = i

    def annotate(self, page_gpa: int, data: bytes) -> list[tuple[int, int, str]]:
        out = []
        end = page_gpa + len(data)
        for i in range(self.size):
            a = self.base + DESC_LEN * i
            if not page_gpa <= a < end or len(out) >= 40 or not self.types[i]:
                continue
            o = a - page_gpa
            if self.types[i] == "ctxt":
                vml, seed, tucmd, mss = _CTX.unpack_from(data, o)
                out.append((o, 16, f"tx desc[{i}] context: vlan_macip_lens 0x{vml:08x} (MACLEN "
                                   f"{vml >> ADVTXD_MACLEN_SHIFT & 0x7F}) seqnum_seed 0x{seed:x} "
                                   f"type_tucmd_mlhl 0x{tucmd:08x} (DEXT|DTYP_CTXT) mss_l4len_idx 0x{mss:x}"))
            else:
                addr, cmd, ol = _TXD.unpack_from(data, o)
                out.append((o, 8, f"tx desc[{i}] data: buffer_addr 0x{addr:x}"))
                out.append((o + 8, 4, f"tx desc[{i}] cmd_type_len 0x{cmd:08x} ({_cmd_names(cmd)}, "
                                      f"length {cmd & 0xFFFF})"))
                out.append((o + 12, 4, f"tx desc[{i}] olinfo_status 0x{ol:08x} (PAYLEN "
                                       f"{ol >> ADVTXD_PAYLEN_SHIFT}{' CC' if ol & ADVTXD_CC else ''}"
                                       f"{' · written back: DD' if ol & TXD_STAT_DD else ''})"))
        return out


def _cmd_names(cmd: int) -> str:
    dtyp = {ADVTXD_DTYP_DATA: "DTYP_DATA", ADVTXD_DTYP_CTXT: "DTYP_CTXT"}.get(cmd & 0x00F00000, "DTYP ?")
    return "|".join([dtyp] + [n for b, n in ((TXD_CMD_DEXT, "DEXT"), (TXD_CMD_IFCS, "IFCS"),
                                              (TXD_CMD_EOP, "EOP"), (TXD_CMD_RS, "RS")) if cmd & b])


def adv_ring_view(vm: str, ring: _AdvRing, note: str = "") -> RingView:
    """The ring as the bytes in guest RAM say: each descriptor in the read or
    the write-back format (DD tells them apart, as the driver does)."""
    rows = []
    owners = []
    ram = ring.mem.ram
    for i in range(ring.size):
        d = ring.base + DESC_LEN * i
        if ring.kind == "rx":
            pi, _hi, _rss, st, ln, _vlan = _RXWB.unpack_from(ram, d)
            if st & RXD_STAT_DD:
                rows.append((str(i), "wb", f"info 0x{pi:04x}", str(ln),
                             _flags(st, ((RXD_STAT_DD, "DD"), (RXD_STAT_EOP, "EOP")))))
            else:
                pkt, hdr = _QQ.unpack_from(ram, d)
                rows.append((str(i), "read", f"0x{pkt:08x}", "–", "–"))
        else:
            t = ring.types[i]
            if t == "ctxt":
                vml, _seed, _tucmd, _mss = _CTX.unpack_from(ram, d)
                rows.append((str(i), "ctxt", f"MACLEN {vml >> ADVTXD_MACLEN_SHIFT & 0x7F}",
                             "DEXT|CTXT", "–"))
            elif t == "data":
                addr, cmd, ol = _TXD.unpack_from(ram, d)
                rows.append((str(i), "data", f"0x{addr:08x} {cmd & 0xFFFF}", "EOP|RS",
                             ("CC DD" if ol & TXD_STAT_DD else "CC") if ol & ADVTXD_CC else "–"))
            else:
                rows.append((str(i), "–", "–", "–", "–"))
        owners.append(ring.owner(i))
    # short headings: the hex view names every field in full (read = pkt_addr/hdr_addr,
    # wb = the write-back pkt_info/rss/status_error/length/vlan; ctxt/data for TX)
    cols = (("idx", "fmt", "pkt_addr/info", "len", "status") if ring.kind == "rx"
            else ("idx", "fmt", "addr len", "cmd", "olinfo"))
    reg = "VFRD" if ring.kind == "rx" else "VFTD"
    marks = ((f"{reg}H", str(ring.head)), (f"{reg}T", str(ring.tail)),
             ("next_to_clean", str(ring.next_to_clean)), ("hw owns", str(ring.hw_owned())))
    return RingView(vm, ring.name, KIND, ring.size, cols, tuple(rows), tuple(owners), marks,
                    ring.last_touched, ring.base, note)
