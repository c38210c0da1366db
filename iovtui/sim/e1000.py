"""Intel 8254x (e1000) registers and legacy descriptor rings, in guest RAM.

Register offsets and bits from the Intel 8254x Software Developer's Manual
(and DOMAIN.md).  Descriptors are the legacy 16-byte formats::

    RX: u64 buffer addr, u16 length, u16 checksum, u8 status, u8 errors, u16 special
    TX: u64 buffer addr, u16 length, u8 cso, u8 cmd, u8 status, u8 css, u16 special

Ring ownership: the hardware owns descriptors head..tail-1; the driver
advances the tail (RDT/TDT), the hardware advances the head (RDH/TDH) and
sets DD in each descriptor it is done with.  The same ring class serves the
emulated e1000 and an SR-IOV VF's rings.
"""

from __future__ import annotations

import struct

from .memory import GuestMemory
from .views import QueueInfo, RingView

__all__ = [
    "REG", "REG_NAMES", "RegisterFile", "LegacyRing", "ring_view",
    "ICR_TXDW", "ICR_LSC", "ICR_RXSEQ", "ICR_RXDMT0", "ICR_RXT0", "IMS_ENABLE_MASK", "RXD_STAT_DD", "RXD_STAT_EOP",
    "TXD_CMD_EOP", "TXD_CMD_IFCS", "TXD_CMD_RS", "TXD_STAT_DD", "STATUS_FD", "STATUS_LU",
    "RX_DESC", "TX_DESC", "DESC_LEN", "ITR_UNIT_NS", "itr_register",
]

REG = {
    "CTRL": 0x0000, "STATUS": 0x0008, "ICR": 0x00C0, "ITR": 0x00C4, "IMS": 0x00D0, "IMC": 0x00D8,
    "RDBAL": 0x2800, "RDBAH": 0x2804, "RDLEN": 0x2808, "RDH": 0x2810, "RDT": 0x2818,
    "TDBAL": 0x3800, "TDBAH": 0x3804, "TDLEN": 0x3808, "TDH": 0x3810, "TDT": 0x3818,
}
REG_NAMES = {v: k for k, v in REG.items()}

ICR_TXDW = 0x01      # transmit descriptor written back
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
TXD_CMD_EOP = 0x01
TXD_CMD_IFCS = 0x02
TXD_CMD_RS = 0x08
TXD_STAT_DD = 0x01

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


class LegacyRing:
    """One legacy descriptor ring (RX or TX) in guest RAM."""

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

    # -- driver side ---------------------------------------------------------
    def unused(self) -> int:
        """E1000_DESC_UNUSED: descriptors the driver may still fill."""
        ntc, ntu = self.next_to_clean, self.next_to_use
        return (0 if ntc > ntu else self.size) + ntc - ntu - 1

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
    def hw_owned(self) -> int:
        return (self.tail - self.head) % self.size

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

    def owner(self, i: int) -> str:
        if (i - self.head) % self.size < self.hw_owned():
            return "device"
        if self.tokens[i] is not None:
            return "used"   # done by the hardware, not yet cleaned by the driver
        return "driver"

    def queue_info(self, vm: str, kind: str) -> QueueInfo:
        return QueueInfo(vm, self.name, kind, self.size, self.base,
                         extra={"desc_len": DESC_LEN, "head": self.head, "tail": self.tail})


def ring_view(vm: str, ring: LegacyRing, kind: str, head_reg: str | None = None, tail_reg: str | None = None,
              note: str = "") -> RingView:
    """The ring as it stands in guest RAM: one row per 16-byte descriptor, the
    owner of each, and the head/tail registers (RDH/RDT or TDH/TDT by default)."""
    if head_reg is None:
        head_reg = "RDH" if ring.kind == "rx" else "TDH"
    if tail_reg is None:
        tail_reg = "RDT" if ring.kind == "rx" else "TDT"
    rows = []
    owners = []
    ram = ring.mem.ram
    for i in range(ring.size):
        d = ring.base + DESC_LEN * i
        if ring.kind == "rx":
            addr, length, _csum, status, errors, _sp = RX_DESC.unpack_from(ram, d)
            st = "|".join(n for b, n in ((RXD_STAT_DD, "DD"), (RXD_STAT_EOP, "EOP")) if status & b) or "–"
            rows.append((str(i), f"0x{addr:08x}", str(length), st))
        else:
            addr, length, _cso, cmd, status, _css, _sp = TX_DESC.unpack_from(ram, d)
            c = "|".join(n for b, n in ((TXD_CMD_EOP, "EOP"), (TXD_CMD_IFCS, "IFCS"), (TXD_CMD_RS, "RS")) if cmd & b)
            st = "DD" if status & TXD_STAT_DD else "–"
            rows.append((str(i), f"0x{addr:08x}", str(length), f"{c or '–'} {st}"))
        owners.append(ring.owner(i))
    cols = ("idx", "addr", "len", "status" if ring.kind == "rx" else "cmd status")
    marks = ((head_reg, str(ring.head)), (tail_reg, str(ring.tail)),
             ("next_to_clean", str(ring.next_to_clean)), ("hw owns", str(ring.hw_owned())))
    return RingView(vm, ring.name, kind, ring.size, cols, tuple(rows), tuple(owners), marks,
                    ring.last_touched, ring.base, note or "hardware owns head..tail-1; the driver advances the tail")
