"""The split virtqueue against the virtio 1.x layout (linux/virtio_ring.h)."""
import re
import struct
from pathlib import Path

from hypothesis import given, settings, strategies as st

from iovtui.sim.memory import GuestMemory
from iovtui.sim.virtqueue import (VIRTIO_RING_F_EVENT_IDX, VRING_AVAIL_F_NO_INTERRUPT, VRING_DESC_F_INDIRECT,
                                  VRING_DESC_F_NEXT, VRING_DESC_F_WRITE, VRING_USED_F_NO_NOTIFY, Virtqueue,
                                  need_event, vring_size)

HEADER = Path("/usr/include/linux/virtio_ring.h")


def mem():
    return GuestMemory("vm", 4 << 20, 0x1_0000_0000)


def test_flag_values_match_the_header():
    assert (VRING_DESC_F_NEXT, VRING_DESC_F_WRITE, VRING_DESC_F_INDIRECT) == (1, 2, 4)
    assert VRING_USED_F_NO_NOTIFY == 1 and VRING_AVAIL_F_NO_INTERRUPT == 1 and VIRTIO_RING_F_EVENT_IDX == 29
    if HEADER.exists():
        text = HEADER.read_text()
        for name, val in [("VRING_DESC_F_NEXT", 1), ("VRING_DESC_F_WRITE", 2), ("VRING_DESC_F_INDIRECT", 4),
                          ("VRING_USED_F_NO_NOTIFY", 1), ("VRING_AVAIL_F_NO_INTERRUPT", 1),
                          ("VIRTIO_RING_F_EVENT_IDX", 29)]:
            m = re.search(rf"#define\s+{name}\s+(\d+)", text)
            assert m and int(m.group(1)) == val, name


def test_vring_size_formula():
    assert vring_size(256) == 10246
    for n in (1, 2, 64, 128, 1024, 32768):
        expect = ((16 * n + 2 * (3 + n) + 4095) & ~4095) + 2 * 3 + 8 * n
        assert vring_size(n) == expect


def test_layout_offsets_and_alignment():
    q = Virtqueue(mem(), "rx", 256, event_idx=True)
    assert q.desc % 16 == 0 and q.avail % 2 == 0 and q.used % 4 == 0
    assert q.avail == q.desc + 16 * 256
    assert q.used == (q.avail + 2 * (3 + 256) + 4095) & ~4095
    assert q.used_event_addr == q.avail + 4 + 2 * 256
    assert q.avail_event_addr == q.used + 4 + 8 * 256
    assert q.used + 6 + 8 * 256 - q.desc == vring_size(256)


def test_descriptor_bytes_after_add_buf():
    m = mem()
    q = Virtqueue(m, "rx", 8, event_idx=False)
    head = q.add_buf(0x12345678, 1530, True, "tok")
    raw = bytes(m.ram[q.desc + 16 * head:q.desc + 16 * head + 16])
    addr, ln, flags, _next = struct.unpack("<QIHH", raw)
    assert (addr, ln, flags) == (0x12345678, 1530, VRING_DESC_F_WRITE)
    assert raw[:8] == (0x12345678).to_bytes(8, "little")          # u64 addr @0, little-endian
    assert raw[8:12] == (1530).to_bytes(4, "little")              # u32 len @8
    flags_b, idx_b = struct.unpack_from("<HH", m.ram, q.avail)
    assert idx_b == 1 and struct.unpack_from("<H", m.ram, q.avail + 4)[0] == head


def test_used_ring_bytes_after_push():
    m = mem()
    q = Virtqueue(m, "rx", 8, event_idx=False)
    q.add_buf(0x2000, 100, True, "a")
    head, addr, ln, fl = q.pop()
    q.push(head, 42)
    assert struct.unpack_from("<H", m.ram, q.used + 2)[0] == 1
    assert struct.unpack_from("<II", m.ram, q.used + 4)[0:2] == (head, 42)
    assert q.get_buf() == ("a", 42, head)


def vring_need_event(event, new, old):
    # direct transcription of the C in virtio_ring.h
    return ((new - event - 1) & 0xFFFF) < ((new - old) & 0xFFFF)


def test_need_event_truth_table():
    rows = [  # (event, new, old, expected)
        (0, 1, 0, True), (1, 1, 0, False), (0, 2, 1, False), (5, 6, 5, True), (5, 10, 3, True),
        (10, 10, 3, False), (65535, 0, 65535, True), (65534, 1, 65533, True), (2, 1, 0, False),
    ]
    for event, new, old, want in rows:
        assert need_event(event, new, old) is want, (event, new, old)
    for event in range(0, 65536, 4093):
        for new in range(0, 65536, 8191):
            for delta in (0, 1, 2, 7, 300):
                old = (new - delta) & 0xFFFF
                assert need_event(event, new, old) == vring_need_event(event, new, old)


def test_indexes_wrap_past_65535():
    m = mem()
    q = Virtqueue(m, "rx", 8, event_idx=True, start_idx=65530)
    seen = []
    for i in range(20):
        q.add_buf(0x10000 + 0x800 * (i % 8), 64, True, i)
        h, addr, ln, fl = q.pop()
        q.push(h, i + 1)
        tok, ln2, _ = q.get_buf()
        seen.append((tok, ln2))
    assert seen == [(i, i + 1) for i in range(20)]
    assert q.avail_idx() == (65530 + 20) & 0xFFFF == 14
    assert q.used_idx_ram() == 14
    # the slot of entry k is idx % N
    assert struct.unpack_from("<H", m.ram, q.avail + 4 + 2 * (13 % 8))[0] == q.last_touched


def test_event_idx_off_uses_the_flags():
    m = mem()
    q = Virtqueue(m, "tx", 8, event_idx=False)
    q.add_buf(0x1000, 64, False, 1)
    assert q.kick_prepare() is True
    q.disable_notify()                      # device sets NO_NOTIFY
    q.add_buf(0x1800, 64, False, 2)
    assert q.kick_prepare() is False
    q.pop()
    assert q.should_notify() is True        # NO_INTERRUPT clear
    q.disable_cb()
    assert struct.unpack_from("<H", m.ram, q.avail)[0] == VRING_AVAIL_F_NO_INTERRUPT
    assert q.should_notify() is False


def test_event_idx_on_uses_the_event_indexes():
    m = mem()
    q = Virtqueue(m, "rx", 8, event_idx=True)
    for i in range(4):
        q.add_buf(0x1000 * (i + 1), 64, True, i)
    q.enable_cb_prepare()                    # used_event = 0
    h, *_ = q.pop(); q.push(h, 1)
    assert q.should_notify() is True         # first notification always
    h, *_ = q.pop(); q.push(h, 1)
    assert q.should_notify() is False        # used_event 0 already passed
    q.get_buf(); q.get_buf()
    q.enable_cb_prepare()                    # used_event = 2
    h, *_ = q.pop(); q.push(h, 1)
    assert q.should_notify() is True
    assert struct.unpack_from("<H", m.ram, q.used_event_addr)[0] == 2


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 65535), st.lists(st.sampled_from(["add", "pop", "push", "get"]), max_size=120),
       st.sampled_from([4, 8, 16]))
def test_ring_matches_a_fifo_reference(start, ops, n):
    """Random driver/device operations against a simple reference model."""
    q = Virtqueue(mem(), "rx", n, event_idx=True, start_idx=start)
    avail, popped, used = [], [], []   # reference FIFOs of tokens
    counter = 0
    for op in ops:
        if op == "add":
            ok = q.add_buf(0x100000 + 0x800 * (counter % n), 100, True, counter)
            if len(avail) + len(popped) + len(used) < n:
                assert ok is not None
                avail.append(counter)
            else:
                assert ok is None
            counter += 1
        elif op == "pop":
            got = q.pop()
            if avail:
                assert got is not None
                popped.append((got[0], avail.pop(0)))
            else:
                assert got is None
        elif op == "push" and popped:
            head, tok = popped.pop(0)
            q.push(head, tok + 1)
            used.append(tok)
        elif op == "get":
            got = q.get_buf()
            if used:
                tok = used.pop(0)
                assert got[0] == tok and got[1] == tok + 1
            else:
                assert got is None
        assert q.num_free == n - len(avail) - len(popped) - len(used)
        assert (q.avail_idx() - q.last_avail_idx) & 0xFFFF == len(avail)
