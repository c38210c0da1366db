"""Intel 8254x (e1000) registers and legacy descriptor rings, in guest RAM.

Register offsets and bits from the Intel 8254x Software Developer's Manual
(and DOMAIN.md).  Descriptors are the legacy 16-byte formats::

    RX: u64 buffer addr, u16 length, u16 checksum, u8 status, u8 errors, u16 special
    TX: u64 buffer addr, u16 length, u8 cso, u8 cmd, u8 status, u8 css, u16 special

Ring ownership: the hardware owns descriptors head..tail-1; the driver
advances the tail (RDT/TDT), the hardware advances the head (RDH/TDH) and
sets DD in each descriptor it is done with.  :class:`LegacyRing` is the plain
ring (an SR-IOV VF's rings still use it); :class:`E1000Ring` is the emulated
e1000's ring as Linux's e1000 driver and QEMU's hw/net/e1000.c write it:

- RDT = next_to_use − 1 (e1000_alloc_rx_buffers), so the device owns
  RDH..RDT−1 (QEMU's e1000_has_rxbufs) and one posted buffer waits for the
  next tail write;
- RX write-back (e1000_receive_iov): status DD|EOP|IXSM (0x07), length =
  frame + 4 (the FCS: Linux leaves RCTL.SECRC clear and subtracts 4 in
  e1000_clean_rx_irq), frames under 60 bytes padded to 60;
- TX (e1000_tx_queue): a legacy descriptor with cmd EOP|IFCS|RS|IDE (0x8B), or
  with checksum offload a context descriptor (e1000_tx_csum: TUCSS, TUCSO,
  DEXT) followed by an extended data descriptor (DEXT, DTYP_D, POPTS_TXSM);
  QEMU writes DD back only to descriptors with RS (txdesc_writeback), so the
  driver checks DD on the frame's last descriptor (next_to_watch).

Coalesced MMIO (e1000_mmio_setup): every register but MDIC, ICR, ICS, IMS,
IMC, TCTL and TDT is in a coalesced range: KVM appends a write there to its
coalesced ring and re-enters the guest (:func:`coalesced`).
"""

from __future__ import annotations

import struct

from .memory import GuestMemory
from .views import QueueInfo, RingView

__all__ = [
    "REG", "REG_NAMES", "RegisterFile", "HeadTailRing", "LegacyRing", "E1000Ring", "ring_view", "coalesced",
    "COALESCED_EXCLUDED", "ICR_TXQE", "RXD_STAT_IXSM", "TXD_CMD_IDE", "TXD_CMD_DEXT", "TXD_DTYP_D",
    "TXD_POPTS_TXSM", "TXD_CMD_TCP", "ETH_ZLEN", "ETH_FCS_LEN", "TX_CMD_LINUX",
    "ICR_TXDW", "ICR_LSC", "ICR_RXSEQ", "ICR_RXDMT0", "ICR_RXT0", "IMS_ENABLE_MASK", "RXD_STAT_DD", "RXD_STAT_EOP",
    "TXD_CMD_EOP", "TXD_CMD_IFCS", "TXD_CMD_RS", "TXD_STAT_DD", "STATUS_FD", "STATUS_LU",
    "RX_DESC", "TX_DESC", "DESC_LEN", "ITR_UNIT_NS", "itr_register",
]

REG = {
    "CTRL": 0x0000, "STATUS": 0x0008, "MDIC": 0x0020, "ICR": 0x00C0, "ITR": 0x00C4, "ICS": 0x00C8,
    "IMS": 0x00D0, "IMC": 0x00D8, "RCTL": 0x0100, "TCTL": 0x0400,
    "RDBAL": 0x2800, "RDBAH": 0x2804, "RDLEN": 0x2808, "RDH": 0x2810, "RDT": 0x2818, "RDTR": 0x2820,
    "RADV": 0x282C, "TDBAL": 0x3800, "TDBAH": 0x3804, "TDLEN": 0x3808, "TDH": 0x3810, "TDT": 0x3818,
    "TIDV": 0x3820, "TADV": 0x382C,
}
REG_NAMES = {v: k for k, v in REG.items()}

#: QEMU's e1000_mmio_setup: registers kept out of the coalesced MMIO ranges
#: (a write to them, and every read, goes out to QEMU in userspace)
COALESCED_EXCLUDED = frozenset(REG[r] for r in ("MDIC", "ICR", "ICS", "IMS", "IMC", "TCTL", "TDT"))


def coalesced(off: int, write: bool) -> bool:
    """Whether KVM takes this access on its coalesced-MMIO path (only writes:
    KVM's coalesced_mmio device has no read handler)."""
    return write and off not in COALESCED_EXCLUDED

ICR_TXDW = 0x01      # transmit descriptor written back
ICR_TXQE = 0x02      # transmit queue empty (QEMU's start_xmit always sets it)
ICR_LSC = 0x04       # link status change
ICR_RXSEQ = 0x08     # receive sequence error
ICR_RXDMT0 = 0x10    # receive descriptor minimum threshold reached
ICR_RXT0 = 0x80      # receiver timer interrupt (a frame was received)
#: what Linux's e1000_irq_enable writes to IMS (e1000_hw.h IMS_ENABLE_MASK)
IMS_ENABLE_MASK = ICR_RXT0 | ICR_TXDW | ICR_RXDMT0 | ICR_RXSEQ | ICR_LSC
STATUS_FD = 0x01     # full duplex
STATUS_LU = 0x02     # link up
RXD_STAT_DD = 0x01
RXD_STAT_EOP = 0x02
RXD_STAT_IXSM = 0x04  # ignore checksum indication (QEMU sets it with EOP)
TXD_CMD_EOP = 0x01
TXD_CMD_IFCS = 0x02
TXD_CMD_RS = 0x08
TXD_CMD_DEXT = 0x20  # descriptor extension (context / extended data descriptor)
TXD_CMD_IDE = 0x80   # interrupt delay enable (Linux sets it: TIDV = 8)
TXD_CMD_TCP = 0x01   # context descriptor TUCMD: TCP (else UDP)
TXD_DTYP_D = 0x10    # byte 10 of an extended descriptor: DTYP = data (E1000_TXD_DTYP_D >> 16)
TXD_POPTS_TXSM = 0x02  # byte 13: insert the TCP/UDP checksum
TXD_STAT_DD = 0x01
#: what Linux's e1000 writes in a legacy TX descriptor (adapter->txd_cmd | IFCS)
TX_CMD_LINUX = TXD_CMD_EOP | TXD_CMD_IFCS | TXD_CMD_RS | TXD_CMD_IDE
ETH_ZLEN = 60        # QEMU pads shorter frames to this (e1000_receive_iov's min_buf)
ETH_FCS_LEN = 4

#: the ITR register counts the minimum inter-interrupt interval in 256 ns units
#: (8254x manual, 13.4.18); Linux writes 10^9 / (irq/s × 256)
ITR_UNIT_NS = 256

DESC_LEN = 16
RX_DESC = struct.Struct("<QHHBBH")   # addr, length, csum, status, errors, special
TX_DESC = struct.Struct("<QHBBBBH")  # addr, length, cso, cmd, status, css, special
_U8 = struct.Struct("<B")


class RegisterFile:
    """The device's registers with their side effects: ICR is read-to-clear
    (and write-1-to-clear), IMS sets mask bits, IMC clears them."""

    def __init__(self) -> None:
        self.regs: dict[int, int] = {off: 0 for off in REG.values()}
        self.regs[REG["STATUS"]] = STATUS_FD | STATUS_LU

    def read(self, off: int) -> int:
        v = self.regs.get(off, 0)
        if off == REG["ICR"]:
            self.regs[off] = 0
        elif off == REG["IMC"]:
            v = 0  # write-only
        return v

    def write(self, off: int, v: int) -> None:
        v &= 0xFFFFFFFF
        if off == REG["IMS"]:
            self.regs[off] |= v
        elif off == REG["IMC"]:
            self.regs[REG["IMS"]] &= ~v
        elif off == REG["ICR"]:
            self.regs[off] &= ~v
        else:
            self.regs[off] = v

    def set_itr_ns(self, ns: float) -> None:
        """Program interrupt moderation: at most one interrupt per ``ns`` (0: off)."""
        self.write(REG["ITR"], itr_register(ns))

    @property
    def itr_ns(self) -> int:
        """The moderation interval the ITR register holds, in ns (0: off)."""
        return (self.regs[REG["ITR"]] & 0xFFFF) * ITR_UNIT_NS

    def raise_cause(self, bits: int) -> None:
        self.regs[REG["ICR"]] |= bits

    @property
    def asserted(self) -> bool:
        """The interrupt line: some unmasked cause is pending."""
        return bool(self.regs[REG["ICR"]] & self.regs[REG["IMS"]])

    @property
    def icr(self) -> int:
        return self.regs[REG["ICR"]]

    @property
    def ims(self) -> int:
        return self.regs[REG["IMS"]]


def itr_register(ns: float) -> int:
    """The ITR value for a minimum interval of ``ns`` (rounded to 256 ns units)."""
    return min(0xFFFF, max(0, round(ns / ITR_UNIT_NS)))


class HeadTailRing:
    """What every Intel head/tail descriptor ring shares (the e1000's legacy
    rings and the 82599 VF's advanced ones): 16-byte descriptors in guest RAM,
    the device's head and tail registers, the driver's next_to_use /
    next_to_clean shadows, and who owns each descriptor."""

    def __init__(self, mem: GuestMemory, kind: str, size: int, label: str) -> None:
        if kind not in ("rx", "tx"):
            raise ValueError("kind is rx or tx")
        if size < 8 or size % 8:
            raise ValueError("ring size must be a multiple of 8 (RDLEN is 128-byte aligned)")
        self.mem = mem
        self.kind = kind
        self.name = kind
        self.size = size
        self.base = mem.alloc(DESC_LEN * size, 128, "rx_ring" if kind == "rx" else "tx_ring", label)
        # device registers (RDH/RDT or TDH/TDT)
        self.head = 0
        self.tail = 0
        # driver shadows (Linux e1000_rx_ring / e1000_tx_ring)
        self.next_to_use = 0
        self.next_to_clean = 0
        self.tokens: list[object | None] = [None] * size
        self.last_touched = -1

    def unused(self) -> int:
        """E1000_DESC_UNUSED / ixgbevf_desc_unused: descriptors the driver may still fill."""
        ntc, ntu = self.next_to_clean, self.next_to_use
        return (0 if ntc > ntu else self.size) + ntc - ntu - 1

    def hw_owned(self) -> int:
        return (self.tail - self.head) % self.size

    def owner(self, i: int) -> str:
        if (i - self.head) % self.size < self.hw_owned():
            return "device"
        if self.tokens[i] is not None:
            return "used"   # done by the hardware, not yet cleaned by the driver
        return "driver"


class LegacyRing(HeadTailRing):
    """One legacy descriptor ring (RX or TX) in guest RAM."""

    # -- driver side ---------------------------------------------------------
    def post_rx(self, buf_gpa: int, token: object) -> int:
        """Give the hardware an empty buffer (the tail register is written later)."""
        i = self.next_to_use
        RX_DESC.pack_into(self.mem.ram, self.base + DESC_LEN * i, buf_gpa, 0, 0, 0, 0, 0)
        self.tokens[i] = token
        self.next_to_use = (i + 1) % self.size
        self.last_touched = i
        return i

    def post_tx(self, buf_gpa: int, length: int, token: object) -> int:
        i = self.next_to_use
        TX_DESC.pack_into(self.mem.ram, self.base + DESC_LEN * i, buf_gpa, length, 0,
                          TXD_CMD_EOP | TXD_CMD_IFCS | TXD_CMD_RS, 0, 0, 0)
        self.tokens[i] = token
        self.next_to_use = (i + 1) % self.size
        self.last_touched = i
        return i

    def advance_tail(self) -> int:
        """The driver hands every posted descriptor to the hardware: the new
        tail (RDT/TDT) value, which the caller writes to the register."""
        self.tail = self.next_to_use
        return self.tail

    def status(self, i: int) -> int:
        """The status byte (offset 12 in both the RX and the TX layout)."""
        return self.mem.ram[self.base + DESC_LEN * i + 12]

    def reap(self) -> tuple[int, object, int] | None:
        """Next descriptor the hardware is done with (DD set): ``(slot, token, length)``."""
        i = self.next_to_clean
        if i == self.next_to_use or not self.status(i) & 0x01:
            return None
        d = self.base + DESC_LEN * i
        length = struct.unpack_from("<H", self.mem.ram, d + 8)[0]
        self.mem.ram[d + 12] = 0  # the driver clears the status once consumed
        token = self.tokens[i]
        self.tokens[i] = None
        self.next_to_clean = (i + 1) % self.size
        self.last_touched = i
        return i, token, length

    # -- device side ---------------------------------------------------------
    def hw_fetch(self) -> tuple[int, int, int] | None:
        """The descriptor at head, if the hardware owns one: ``(slot, addr, length)``."""
        if self.head == self.tail:
            return None
        i = self.head
        d = self.base + DESC_LEN * i
        addr, length = struct.unpack_from("<QH", self.mem.ram, d)
        return i, addr, length

    def hw_done_rx(self, i: int, length: int) -> None:
        """Write back length and DD|EOP, advance head."""
        d = self.base + DESC_LEN * i
        struct.pack_into("<H", self.mem.ram, d + 8, length)
        self.mem.ram[d + 12] = RXD_STAT_DD | RXD_STAT_EOP
        self.head = (i + 1) % self.size
        self.last_touched = i

    def hw_done_tx(self, i: int) -> None:
        self.mem.ram[self.base + DESC_LEN * i + 12] |= TXD_STAT_DD
        self.head = (i + 1) % self.size
        self.last_touched = i

    def queue_info(self, vm: str, kind: str) -> QueueInfo:
        return QueueInfo(vm, self.name, kind, self.size, self.base,
                         extra={"desc_len": DESC_LEN, "head": self.head, "tail": self.tail})

    def row(self, i: int) -> tuple[str, ...]:
        """Descriptor ``i`` as the ring pane shows it, decoded from RAM."""
        d = self.base + DESC_LEN * i
        ram = self.mem.ram
        if self.kind == "rx":
            addr, length, _csum, status, _errors, _sp = RX_DESC.unpack_from(ram, d)
            return (str(i), f"0x{addr:08x}", str(length), _rx_status(status))
        addr, length, _cso, cmd, status, _css, _sp = TX_DESC.unpack_from(ram, d)
        c = "|".join(n for b, n in _TX_CMD_NAMES if cmd & b)
        st = "DD" if status & TXD_STAT_DD else "–"
        return (str(i), f"0x{addr:08x}", str(length), f"{c or '–'} {st}")


_TX_CMD_NAMES = ((TXD_CMD_EOP, "EOP"), (TXD_CMD_IFCS, "IFCS"), (TXD_CMD_RS, "RS"), (TXD_CMD_DEXT, "DEXT"),
                 (TXD_CMD_IDE, "IDE"))


def _rx_status(status: int) -> str:
    return "|".join(n for b, n in ((RXD_STAT_DD, "DD"), (RXD_STAT_EOP, "EOP"), (RXD_STAT_IXSM, "IXSM"))
                    if status & b) or "–"


#: a context descriptor's slot (the frame's buffer is in the next descriptor)
CONTEXT = object()


class E1000Ring(LegacyRing):
    """An emulated e1000's ring, written as Linux's e1000 driver and QEMU's
    device model write it (see the module docstring).  The tail register
    (``tail``) changes only when the device applies a tail write
    (:meth:`set_tail`): with coalesced MMIO that is later than the guest's
    write."""

    def __init__(self, mem: GuestMemory, kind: str, size: int, label: str, csum_offload: bool = False) -> None:
        super().__init__(mem, kind, size, label)
        self.csum_offload = csum_offload
        #: first descriptor of a frame -> its last (Linux's buffer_info[first].next_to_watch;
        #: a TX ring's only: e1000_clean_rx_irq checks each descriptor's own DD)
        self.watch: list[int] = [0] * size if kind == "tx" else []

    # -- driver side ---------------------------------------------------------
    def descs_per_frame(self) -> int:
        return 2 if self.kind == "tx" and self.csum_offload else 1

    def advance_tail(self) -> int:
        """The tail value the driver writes: RDT = next_to_use − 1
        (e1000_alloc_rx_buffers), TDT = next_to_use (e1000_tx_queue).  The
        device's ``tail`` is set when the write reaches it (:meth:`set_tail`)."""
        if self.kind == "rx":
            return (self.next_to_use - 1) % self.size
        return self.next_to_use

    def set_tail(self, v: int) -> None:
        self.tail = v % self.size

    def post_tx(self, buf_gpa: int, length: int, token: object, frame: bytes | None = None) -> int:
        """e1000_tx_csum + e1000_tx_map/e1000_tx_queue for one frame; returns
        the slot of its (last) data descriptor."""
        first = i = self.next_to_use
        ram = self.mem.ram
        if self.csum_offload:
            # e1000_tx_csum: a context descriptor.  ipcss/ipcso/ipcse = 0 (ip_config = 0),
            # tucss = start of the L4 header, tucso = where its checksum goes, tucse = 0,
            # cmd_and_length = DEXT (| TCP for a TCP frame), tcp_seg_setup = 0
            css, cso, tcp = _l4_offsets(frame)
            d = self.base + DESC_LEN * i
            struct.pack_into("<IBBHI4x", ram, d, 0, css, cso, 0, ((TXD_CMD_DEXT | tcp) << 24))
            self.tokens[i] = CONTEXT
            i = (i + 1) % self.size
            # e1000_tx_queue: an extended data descriptor: length | DTYP_D | DEXT | cmd,
            # upper: POPTS_TXSM in the options byte
            d = self.base + DESC_LEN * i
            struct.pack_into("<QHBBBBH", ram, d, buf_gpa, length, TXD_DTYP_D, TX_CMD_LINUX | TXD_CMD_DEXT,
                             0, TXD_POPTS_TXSM, 0)
        else:
            TX_DESC.pack_into(ram, self.base + DESC_LEN * i, buf_gpa, length, 0, TX_CMD_LINUX, 0, 0, 0)
        self.tokens[i] = token
        self.watch[first] = i
        self.next_to_use = (i + 1) % self.size
        self.last_touched = i
        return i

    def reap(self) -> tuple[int, object, int] | None:
        """RX (e1000_clean_rx_irq): the next descriptor with DD; its length
        minus the 4-byte FCS.  TX (e1000_clean_tx_irq): the next frame whose
        last descriptor has DD; all of its descriptors are cleaned."""
        i = self.next_to_clean
        if i == self.next_to_use:
            return None
        ram = self.mem.ram
        if self.kind == "rx":
            d = self.base + DESC_LEN * i
            if not ram[d + 12] & RXD_STAT_DD:
                return None
            length = struct.unpack_from("<H", ram, d + 8)[0] - ETH_FCS_LEN
            ram[d + 12] = 0
            token = self.tokens[i]
            self.tokens[i] = None
            self.next_to_clean = (i + 1) % self.size
            self.last_touched = i
            return i, token, length
        eop = self.watch[i]
        e = self.base + DESC_LEN * eop
        if not ram[e + 12] & TXD_STAT_DD:
            return None
        length = struct.unpack_from("<H", ram, e + 8)[0]
        token = self.tokens[eop]
        while True:
            ram[self.base + DESC_LEN * i + 12] = 0   # tx_desc->upper.data = 0
            self.tokens[i] = None
            if i == eop:
                break
            i = (i + 1) % self.size
        self.next_to_clean = (eop + 1) % self.size
        self.last_touched = eop
        return eop, token, length

    # -- device side ---------------------------------------------------------
    def hw_tx_desc(self) -> tuple[int, str, int, int] | None:
        """QEMU's start_xmit/process_tx_desc: the descriptor at TDH as
        ``(slot, kind, addr, length)``, kind ``context`` | ``data`` | ``legacy``."""
        if self.head == self.tail:
            return None
        i = self.head
        d = self.base + DESC_LEN * i
        addr, length, dtyp, cmd = struct.unpack_from("<QHBB", self.mem.ram, d)
        if cmd & TXD_CMD_DEXT:
            if not dtyp & TXD_DTYP_D:
                return i, "context", 0, 0      # no buffer: e1000x_read_tx_ctx_descr
            return i, "data", addr, length
        return i, "legacy", addr, length

    def hw_done_rx(self, i: int, length: int) -> None:
        """e1000_receive_iov: length = padded frame + FCS, status DD|EOP|IXSM."""
        d = self.base + DESC_LEN * i
        struct.pack_into("<H", self.mem.ram, d + 8, max(length, ETH_ZLEN) + ETH_FCS_LEN)
        self.mem.ram[d + 12] = RXD_STAT_DD | RXD_STAT_EOP | RXD_STAT_IXSM
        self.head = (i + 1) % self.size
        self.last_touched = i

    def hw_done_tx(self, i: int) -> None:
        """txdesc_writeback: DD only where the driver asked for it (RS)."""
        d = self.base + DESC_LEN * i
        if self.mem.ram[d + 11] & TXD_CMD_RS:
            self.mem.ram[d + 12] |= TXD_STAT_DD
        self.head = (i + 1) % self.size
        self.last_touched = i

    def owner(self, i: int) -> str:
        if (i - self.head) % self.size < self.hw_owned():
            return "device"
        if self.tokens[i] is not None and self.status(self.watch[i] if self.tokens[i] is CONTEXT else i) & 0x01:
            return "used"   # written back by the device, not yet cleaned by the driver
        return "driver"

    # -- views ---------------------------------------------------------------
    def row(self, i: int) -> tuple[str, ...]:
        d = self.base + DESC_LEN * i
        ram = self.mem.ram
        if self.kind == "rx" or not ram[d + 11] & TXD_CMD_DEXT or ram[d + 10] & TXD_DTYP_D:
            return super().row(i)
        _ip, tucss, tucso, _tucse, cmd_len = struct.unpack_from("<IBBHI", self.mem.ram, d)
        proto = "TCP" if (cmd_len >> 24) & TXD_CMD_TCP else "UDP"
        return (str(i), "context", "–", f"DEXT {proto} css {tucss} cso {tucso}")

    def annotate(self, page_gpa: int, data: bytes) -> list[tuple[int, int, str]]:
        """What each descriptor of this ring that lies in the page says:
        ``(offset in page, length, label)`` for the hex view."""
        out: list[tuple[int, int, str]] = []
        end = page_gpa + len(data)
        lo = max(0, (page_gpa - self.base) // DESC_LEN)
        hi = min(self.size, -(-(end - self.base) // DESC_LEN))
        for i in range(lo, hi):
            a = self.base + DESC_LEN * i
            if not page_gpa <= a < end:
                continue
            o = a - page_gpa
            if self.kind == "rx":
                addr, ln, _cs, st, err, _sp = RX_DESC.unpack_from(data, o)
                out.append((o, 16, f"rx desc[{i}] addr 0x{addr:x} length {ln} status 0x{st:02x} "
                                   f"({_rx_status(st)}) errors 0x{err:02x}"))
                continue
            cmd = data[o + 11]
            if cmd & TXD_CMD_DEXT and not data[o + 10] & TXD_DTYP_D:
                _ip, tucss, tucso, tucse, cmd_len = struct.unpack_from("<IBBHI", data, o)
                out.append((o, 16, f"tx desc[{i}] context: tucss {tucss} tucso {tucso} tucse {tucse} "
                                   f"cmd 0x{cmd_len >> 24:02x} (DEXT{'|TCP' if (cmd_len >> 24) & 1 else ''})"))
            elif cmd & TXD_CMD_DEXT:
                addr, ln, dtyp, cmd, st, popts, _sp = TX_DESC.unpack_from(data, o)
                out.append((o, 16, f"tx desc[{i}] data: addr 0x{addr:x} length {ln} dtyp 0x{dtyp >> 4:x} (D) "
                                   f"dcmd 0x{cmd:02x} ({'|'.join(n for b, n in _TX_CMD_NAMES if cmd & b)}) "
                                   f"status 0x{st:02x} popts 0x{popts:02x} (TXSM)"))
            else:
                addr, ln, cso, cmd, st, css, _sp = TX_DESC.unpack_from(data, o)
                out.append((o, 16, f"tx desc[{i}] addr 0x{addr:x} length {ln} cmd 0x{cmd:02x} "
                                   f"({'|'.join(n for b, n in _TX_CMD_NAMES if cmd & b) or '–'}) status 0x{st:02x}"))
        return out


def _l4_offsets(frame: bytes | None) -> tuple[int, int, int]:
    """(tucss, tucso, TCP bit) for an IPv4 frame: skb_checksum_start_offset and
    csum_offset (6 for UDP, 16 for TCP)."""
    if frame is None or len(frame) < 34:
        return 34, 40, 0
    off = 14
    if frame[12:14] == b"\x81\x00":
        off = 18
    ihl = (frame[off] & 0x0F) * 4
    css = off + ihl
    tcp = frame[off + 9] == 6
    return css, css + (16 if tcp else 6), TXD_CMD_TCP if tcp else 0


def ring_view(vm: str, ring: LegacyRing, kind: str, head_reg: str | None = None, tail_reg: str | None = None,
              note: str = "") -> RingView:
    """The ring as it stands in guest RAM: one row per 16-byte descriptor, the
    owner of each, and the head/tail registers (RDH/RDT or TDH/TDT by default)."""
    if head_reg is None:
        head_reg = "RDH" if ring.kind == "rx" else "TDH"
    if tail_reg is None:
        tail_reg = "RDT" if ring.kind == "rx" else "TDT"
    rows = tuple(ring.row(i) for i in range(ring.size))
    owners = tuple(ring.owner(i) for i in range(ring.size))
    cols = ("idx", "addr", "len", "status" if ring.kind == "rx" else "cmd status")
    marks = ((head_reg, str(ring.head)), (tail_reg, str(ring.tail)),
             ("next_to_clean", str(ring.next_to_clean)), ("hw owns", str(ring.hw_owned())))
    return RingView(vm, ring.name, kind, ring.size, cols, rows, owners, marks,
                    ring.last_touched, ring.base, note or "hardware owns head..tail-1; the driver advances the tail")
