"""The e1000 building blocks on their own: register file, legacy descriptors as
bytes in guest RAM, head/tail ownership, the ring view and layout entry."""
import struct

import pytest
from hypothesis import given, settings, strategies as st

from iovtui.sim.e1000 import (
    DESC_LEN, ICR_LSC, ICR_RXDMT0, ICR_RXSEQ, ICR_RXT0, IMS_ENABLE_MASK, ICR_TXDW, ITR_UNIT_NS, REG, RXD_STAT_DD, RXD_STAT_EOP, TXD_CMD_EOP,
    TXD_CMD_IFCS, TXD_CMD_RS, TXD_STAT_DD, LegacyRing, RegisterFile, itr_register, ring_view,
)
from iovtui.sim.memory import GuestMemory


def mem():
    return GuestMemory("vm0", 4 << 20, 0x1_0000_0000)


# -- registers -----------------------------------------------------------------------

def test_register_offsets_and_cause_bits_are_the_8254x_ones():
    expect = {"CTRL": 0x0000, "STATUS": 0x0008, "ICR": 0x00C0, "IMS": 0x00D0, "IMC": 0x00D8,
              "RDBAL": 0x2800, "RDLEN": 0x2808, "RDH": 0x2810, "RDT": 0x2818,
              "TDBAL": 0x3800, "TDLEN": 0x3808, "TDH": 0x3810, "TDT": 0x3818}
    for name, off in expect.items():
        assert REG[name] == off, name
    assert (ICR_TXDW, ICR_LSC, ICR_RXSEQ, ICR_RXDMT0, ICR_RXT0) == (0x01, 0x04, 0x08, 0x10, 0x80)
    assert IMS_ENABLE_MASK == 0x9D                 # Linux e1000: RXT0 | TXDW | RXDMT0 | RXSEQ | LSC
    assert (RXD_STAT_DD, RXD_STAT_EOP) == (0x01, 0x02)
    assert (TXD_CMD_EOP, TXD_CMD_IFCS, TXD_CMD_RS, TXD_STAT_DD) == (0x01, 0x02, 0x08, 0x01)


def test_icr_is_read_to_clear():
    r = RegisterFile()
    r.raise_cause(ICR_RXT0)
    r.raise_cause(ICR_TXDW)
    assert r.read(REG["ICR"]) == ICR_RXT0 | ICR_TXDW
    assert r.read(REG["ICR"]) == 0
    assert r.icr == 0
    # causes raised after the read are kept for the next read
    r.raise_cause(ICR_LSC)
    assert r.read(REG["ICR"]) == ICR_LSC


def test_icr_write_one_clears_only_those_bits():
    r = RegisterFile()
    r.raise_cause(ICR_RXT0 | ICR_TXDW)
    r.write(REG["ICR"], ICR_TXDW)
    assert r.icr == ICR_RXT0


def test_ims_sets_and_imc_clears_mask_bits():
    r = RegisterFile()
    assert r.ims == 0
    r.raise_cause(ICR_RXT0)
    assert not r.asserted                          # a cause with its mask bit clear does not interrupt
    r.write(REG["IMS"], ICR_TXDW)
    r.write(REG["IMS"], ICR_RXT0)                  # IMS ORs in: TXDW stays set
    assert r.ims == ICR_TXDW | ICR_RXT0
    assert r.asserted
    r.write(REG["IMC"], ICR_RXT0)                  # IMC clears only what it names
    assert r.ims == ICR_TXDW
    assert not r.asserted
    assert r.read(REG["IMC"]) == 0                 # write-only
    r.write(REG["IMC"], 0xFFFFFFFF)
    assert r.ims == 0
    assert r.icr == ICR_RXT0                       # masking never loses a cause
    r.write(REG["IMS"], ICR_RXT0)
    assert r.asserted


def test_status_reports_link_up_and_full_duplex():
    r = RegisterFile()
    assert r.read(REG["STATUS"]) & 0x03 == 0x03
    assert r.read(REG["STATUS"]) & 0x03 == 0x03   # reading STATUS has no side effect


def test_itr_register_counts_256ns_units():
    assert ITR_UNIT_NS == 256
    r = RegisterFile()
    assert r.itr_ns == 0
    r.set_itr_ns(128_000)
    assert r.regs[REG["ITR"]] == 500
    assert r.itr_ns == 128_000
    assert 7_800 <= 1e9 / r.itr_ns <= 7_813        # "128 µs → about 7,800 irq/s"
    assert itr_register(100_000) == 391            # rounded to the unit
    assert itr_register(0) == 0
    assert itr_register(1e12) == 0xFFFF            # a 16-bit field
    r.set_itr_ns(0)
    assert r.itr_ns == 0


# -- descriptor bytes ----------------------------------------------------------------

def test_rx_descriptor_bytes():
    m = mem()
    rx = LegacyRing(m, "rx", 8, "rx ring")
    assert rx.base % 128 == 0 and m.role_at(rx.base) == "rx_ring"
    rx.post_rx(0x0123_4567_89AB_CDEF, "tok")
    rx.post_rx(0x2000, "tok2")
    d0 = bytes(m.ram[rx.base:rx.base + 16])
    assert d0[0:8] == (0x0123_4567_89AB_CDEF).to_bytes(8, "little")
    assert d0[8:16] == bytes(8)                    # length, csum, status, errors, special all zero
    assert m.u64(rx.base + 16) == 0x2000          # the next descriptor 16 bytes on
    assert rx.advance_tail() == 2
    slot, addr, _ = rx.hw_fetch()
    assert (slot, addr) == (0, 0x0123_4567_89AB_CDEF)
    rx.hw_done_rx(slot, 1514)
    d0 = bytes(m.ram[rx.base:rx.base + 16])
    assert d0[8:10] == (1514).to_bytes(2, "little")   # u16 length at 8
    assert d0[10:12] == b"\0\0"                        # u16 checksum at 10
    assert d0[12] == RXD_STAT_DD | RXD_STAT_EOP        # u8 status at 12
    assert d0[13] == 0                                 # u8 errors at 13
    assert d0[14:16] == b"\0\0"                        # u16 special at 14
    assert struct.calcsize("<QHHBBH") == DESC_LEN == 16
    # the second descriptor is untouched: still owned by the hardware, no DD
    assert m.ram[rx.base + 16 + 12] == 0 and rx.owner(1) == "device"


def test_device_reads_what_the_bytes_say():
    """The device side reads the descriptor from RAM, not from a Python shadow."""
    m = mem()
    rx = LegacyRing(m, "rx", 8, "rx ring")
    rx.post_rx(0x3000, "t")
    rx.advance_tail()
    struct.pack_into("<Q", m.ram, rx.base, 0x7777_0000)   # someone rewrites the address in RAM
    assert rx.hw_fetch()[1] == 0x7777_0000


def test_tx_descriptor_bytes_and_write_back():
    m = mem()
    tx = LegacyRing(m, "tx", 8, "tx ring")
    assert m.role_at(tx.base) == "tx_ring"
    tx.post_tx(0xDEAD_B000, 60, "frame")
    d = bytes(m.ram[tx.base:tx.base + 16])
    assert d[0:8] == (0xDEAD_B000).to_bytes(8, "little")  # u64 addr
    assert d[8:10] == (60).to_bytes(2, "little")          # u16 length
    assert d[10] == 0                                     # u8 cso
    assert d[11] == TXD_CMD_EOP | TXD_CMD_IFCS | TXD_CMD_RS == 0x0B   # u8 cmd
    assert d[12] == 0                                     # u8 status: not done
    assert d[13] == 0 and d[14:16] == b"\0\0"             # css, special
    assert tx.reap() is None                              # the driver cannot reclaim before DD
    tx.advance_tail()
    slot, addr, length = tx.hw_fetch()
    assert (slot, addr, length) == (0, 0xDEAD_B000, 60)
    tx.hw_done_tx(slot)
    d = bytes(m.ram[tx.base:tx.base + 16])
    assert d[12] == TXD_STAT_DD and d[11] == 0x0B         # DD set, cmd kept
    assert tx.head == 1 and tx.hw_fetch() is None
    assert tx.reap() == (0, "frame", 60)


# -- ownership, head and tail ---------------------------------------------------------

def test_hardware_owns_head_to_tail_minus_one():
    m = mem()
    rx = LegacyRing(m, "rx", 8, "rx ring")
    for i in range(5):
        rx.post_rx(0x1000 * (i + 1), i)
    # posted but tail not written: the hardware owns nothing yet
    assert rx.hw_owned() == 0 and rx.hw_fetch() is None
    assert rx.advance_tail() == 5
    assert [rx.owner(i) for i in range(8)] == ["device"] * 5 + ["driver"] * 3
    for _ in range(2):
        s, _a, _l = rx.hw_fetch()
        rx.hw_done_rx(s, 100)
    assert rx.head == 2 and rx.hw_owned() == 3
    assert [rx.owner(i) for i in range(5)] == ["used", "used", "device", "device", "device"]
    # the driver reaps only descriptors with DD, in order
    assert rx.reap()[1] == 0 and rx.reap()[1] == 1 and rx.reap() is None
    assert m.ram[rx.base + 12] == 0                       # status cleared after the driver consumed it


def test_driver_never_fills_the_last_slot_and_head_wraps():
    m = mem()
    rx = LegacyRing(m, "rx", 8, "rx ring")
    tokens = iter(range(10_000))
    seen = []
    for _round in range(6):
        while rx.unused():
            rx.post_rx(0x1000, next(tokens))
        rx.advance_tail()
        assert rx.hw_owned() == 7                        # never all 8: head == tail means empty
        while (got := rx.hw_fetch()) is not None:
            rx.hw_done_rx(got[0], 64)
        assert rx.head == rx.tail
        while (got := rx.reap()) is not None:
            seen.append(got[1])
    assert seen == list(range(len(seen))) and len(seen) == 42
    assert rx.head == 42 % 8


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from(["post", "tail", "hw", "reap"]), max_size=200),
       st.sampled_from([8, 16, 64]))
def test_ring_against_a_reference_model(ops, size):
    """Random driver/device interleavings: FIFO order, ownership, bytes."""
    m = mem()
    rx = LegacyRing(m, "rx", size, "rx ring")
    posted = []      # tokens posted, not yet handed to hw
    hw = []          # tokens the hardware owns (in order)
    done = []        # tokens with DD, not yet reaped
    reaped = []
    n = 0
    for op in ops:
        if op == "post" and rx.unused():
            rx.post_rx(0x10_0000 + 2048 * (n % size), n)
            posted.append(n)
            n += 1
        elif op == "tail":
            rx.advance_tail()
            hw += posted
            posted = []
        elif op == "hw":
            got = rx.hw_fetch()
            if not hw:
                assert got is None
            else:
                rx.hw_done_rx(got[0], 100 + hw[0] % 100)
                done.append(hw.pop(0))
        elif op == "reap":
            got = rx.reap()
            if not done:
                assert got is None
            else:
                t = done.pop(0)
                assert got[1] == t and got[2] == 100 + t % 100
                reaped.append(t)
        assert rx.hw_owned() == len(hw) < size
        assert rx.unused() == size - 1 - len(posted) - len(hw) - len(done)
    assert reaped == list(range(len(reaped)))


def test_bad_ring_arguments():
    with pytest.raises(ValueError):
        LegacyRing(mem(), "bogus", 8, "x")
    with pytest.raises(ValueError):
        LegacyRing(mem(), "rx", 12, "x")   # RDLEN must be a multiple of 128 bytes


# -- views ------------------------------------------------------------------------------

def test_ring_view_rows_marks_and_owners():
    m = mem()
    rx = LegacyRing(m, "rx", 8, "rx ring")
    for i in range(3):
        rx.post_rx(0x20_0000 + 0x800 * i, i)
    rx.advance_tail()
    s, _a, _l = rx.hw_fetch()
    rx.hw_done_rx(s, 1514)
    v = ring_view("vm0", rx, "e1000-legacy")
    assert (v.vm, v.name, v.kind, v.size, v.base_gpa) == ("vm0", "rx", "e1000-legacy", 8, rx.base)
    assert v.columns[:3] == ("idx", "addr", "len") and len(v.rows) == 8
    assert v.rows[0] == ("0", "0x00200000", "1514", "DD|EOP")
    assert v.rows[1][:3] == ("1", "0x00200800", "0") and "DD" not in v.rows[1][3]
    marks = dict(v.marks)
    assert marks["RDH"] == "1" and marks["RDT"] == "3"
    assert v.owners[:4] == ("used", "device", "device", "driver")
    assert v.active == 0
    tx = LegacyRing(m, "tx", 8, "tx ring")
    tx.post_tx(0x30_0000, 60, "f")
    tv = ring_view("vm0", tx, "e1000-legacy")
    assert set(dict(tv.marks)) >= {"TDH", "TDT"}
    assert tv.rows[0][3].startswith("EOP|IFCS|RS")
    # explicit register names (VF rings) still work
    assert "tail" in dict(ring_view("vm0", rx, "vf-legacy", "head", "tail").marks)


def test_queue_info_for_layout_json():
    m = mem()
    rx = LegacyRing(m, "rx", 16, "rx ring")
    q = rx.queue_info("vm0", "e1000-legacy").to_json()
    assert q["kind"] == "e1000-legacy" and q["size"] == 16 and q["desc_gpa"] == rx.base
    assert q["avail_gpa"] is None and q["used_gpa"] is None and q["vm"] == "vm0" and q["name"] == "rx"


# -- the emulated e1000's ring (Linux e1000 + QEMU hw/net/e1000.c) ----------------------

from iovtui.sim.e1000 import (COALESCED_EXCLUDED, E1000Ring, RXD_STAT_IXSM, TX_CMD_LINUX, TXD_CMD_DEXT,  # noqa: E402
                              TXD_CMD_IDE, TXD_DTYP_D, TXD_POPTS_TXSM, coalesced)
from iovtui.sim.packet import FrameFactory  # noqa: E402


def test_coalesced_mmio_ranges_are_qemus():
    """e1000_mmio_setup: everything but MDIC, ICR, ICS, IMS, IMC, TCTL, TDT; only writes."""
    assert {REG[r] for r in ("MDIC", "ICR", "ICS", "IMS", "IMC", "TCTL", "TDT")} == COALESCED_EXCLUDED
    assert (REG["MDIC"], REG["ICS"], REG["TCTL"], REG["ITR"]) == (0x0020, 0x00C8, 0x0400, 0x00C4)
    for r in ("RDT", "ITR", "CTRL", "RDTR", "RADV", "TADV", "TIDV", "RDH"):
        assert coalesced(REG[r], True), r
        assert not coalesced(REG[r], False), r           # a read always goes to userspace
    for r in ("MDIC", "ICR", "ICS", "IMS", "IMC", "TCTL", "TDT"):
        assert not coalesced(REG[r], True), r


def test_e1000_rdt_is_next_to_use_minus_one():
    m = mem()
    rx = E1000Ring(m, "rx", 8, "rx ring")
    while rx.unused():
        rx.post_rx(0x1000, "t")
    assert rx.next_to_use == 7
    assert rx.advance_tail() == 6                      # e1000_alloc_rx_buffers writes i - 1
    assert rx.tail == 0 and rx.hw_owned() == 0         # the device's RDT changes only when the write reaches it
    rx.set_tail(6)
    assert rx.hw_owned() == 6                          # RDH..RDT-1: one posted buffer held back
    assert [rx.owner(i) for i in range(8)] == ["device"] * 6 + ["driver"] * 2
    rx.next_to_use = 0
    assert rx.advance_tail() == 7                      # wraps


def test_e1000_rx_write_back_bytes_and_the_driver_strips_the_fcs():
    m = mem()
    rx = E1000Ring(m, "rx", 8, "rx ring")
    rx.post_rx(0x4000, "a")
    rx.post_rx(0x5000, "b")
    rx.post_rx(0x6000, "c")
    rx.set_tail(rx.advance_tail())
    s, _a, _l = rx.hw_fetch()
    rx.hw_done_rx(s, 1514)
    s2, _a, _l = rx.hw_fetch()
    rx.hw_done_rx(s2, 42)                              # a runt: QEMU pads it to 60
    d0 = bytes(m.ram[rx.base:rx.base + 16])
    assert d0[8:10] == (1518).to_bytes(2, "little")   # frame + 4 (FCS; RCTL.SECRC clear)
    assert d0[12] == 0x07 == RXD_STAT_DD | RXD_STAT_EOP | RXD_STAT_IXSM
    assert m.ram[rx.base + 16 + 8] == 64               # 60 + 4
    assert rx.owner(0) == "used"
    assert rx.reap() == (0, "a", 1514)                 # e1000_clean_rx_irq: length -= 4
    assert rx.reap() == (1, "b", 60)
    assert m.ram[rx.base + 12] == 0


def test_e1000_tx_legacy_descriptor_is_cmd_0x8b():
    m = mem()
    tx = E1000Ring(m, "tx", 8, "tx ring")
    assert tx.descs_per_frame() == 1
    tx.post_tx(0xDEAD_B000, 60, "frame")
    d = bytes(m.ram[tx.base:tx.base + 16])
    assert d[11] == 0x8B == TX_CMD_LINUX == TXD_CMD_EOP | TXD_CMD_IFCS | TXD_CMD_RS | TXD_CMD_IDE
    assert tx.advance_tail() == 1 and tx.tail == 0
    tx.set_tail(1)
    assert tx.hw_tx_desc() == (0, "legacy", 0xDEAD_B000, 60)
    tx.hw_done_tx(0)
    assert m.ram[tx.base + 12] == TXD_STAT_DD
    assert tx.reap() == (0, "frame", 60) and m.ram[tx.base + 12] == 0


def test_e1000_tx_checksum_offload_context_then_data_descriptor():
    m = mem()
    tx = E1000Ring(m, "tx", 8, "tx ring", csum_offload=True)
    frame = FrameFactory().build("52:54:00:00:00:02", "52:54:00:00:00:01", 0, "10.0.0.1", "10.0.0.2", 128, 7)
    assert tx.descs_per_frame() == 2
    slot = tx.post_tx(0x7000, 128, "f", bytes(frame))
    assert slot == 1 and tx.next_to_use == 2
    c = bytes(m.ram[tx.base:tx.base + 16])
    assert c[0:4] == bytes(4)                          # ip_config = 0
    assert (c[4], c[5], c[6:8]) == (34, 40, b"\0\0")   # tucss, tucso (UDP csum at +6), tucse
    assert c[8:11] == bytes(3) and c[11] == TXD_CMD_DEXT == 0x20 and c[12:16] == bytes(4)
    d = bytes(m.ram[tx.base + 16:tx.base + 32])
    assert d[0:8] == (0x7000).to_bytes(8, "little") and d[8:10] == (128).to_bytes(2, "little")
    assert d[10] == TXD_DTYP_D and d[11] == TX_CMD_LINUX | TXD_CMD_DEXT == 0xAB and d[13] == TXD_POPTS_TXSM
    tx.set_tail(tx.advance_tail())
    assert tx.hw_tx_desc() == (0, "context", 0, 0)
    tx.hw_done_tx(0)
    assert m.ram[tx.base + 12] == 0                    # no RS on the context descriptor: no DD written
    assert tx.reap() is None                           # the driver watches the frame's last descriptor
    assert tx.hw_tx_desc()[:2] == (1, "data")
    tx.hw_done_tx(1)
    assert m.ram[tx.base + 16 + 12] == TXD_STAT_DD
    assert tx.reap() == (1, "f", 128) and tx.next_to_clean == 2
    assert tx.unused() == 7


def test_e1000_ring_annotate_names_the_fields():
    m = mem()
    tx = E1000Ring(m, "tx", 8, "tx ring", csum_offload=True)
    tx.post_tx(0x7000, 128, "f", None)
    rx = E1000Ring(m, "rx", 8, "rx ring")
    rx.post_rx(0x9000, "r")
    rx.set_tail(1)
    rx.hw_done_rx(0, 100)
    for ring in (tx, rx):
        page = ring.base & ~0xFFF
        data = bytes(m.ram[page:page + 4096])
        notes = ring.annotate(page, data)
        assert len(notes) == 8 and all(ln == 16 for _o, ln, _t in notes)
        assert notes[0][0] == ring.base - page
    txn = tx.annotate(tx.base & ~0xFFF, bytes(m.ram[tx.base & ~0xFFF:(tx.base & ~0xFFF) + 4096]))
    assert txn[0][2].startswith("tx desc[0] context: tucss 34 tucso 40 tucse 0 cmd 0x20")
    assert txn[1][2].startswith("tx desc[1] data: addr 0x7000 length 128") and "dcmd 0xab" in txn[1][2]
    rxn = rx.annotate(rx.base & ~0xFFF, bytes(m.ram[rx.base & ~0xFFF:(rx.base & ~0xFFF) + 4096]))
    assert rxn[0][2] == "rx desc[0] addr 0x9000 length 104 status 0x07 (DD|EOP|IXSM) errors 0x00"
