"""Predict-then-reveal: questions about the step that is about to happen.

The driver runs one engine action, hands the trace events it produced to
:meth:`Quiz.consider`, and — when a question applies — rewinds to just before
that action (deterministic replay), so the learner sees the state *before*
and answers; then the action runs and the answer is revealed.

A question's right answer is read from the events the model emitted, never
computed here: whether a kick exited is whether an exit followed it, which
VF got the frame is what the switch event says, and so on.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Sequence

from .trace import TraceEvent

__all__ = ["Question", "Reveal", "Quiz", "KINDS", "candidates"]

#: the kinds of question, in the words the help screen uses
KINDS = {
    "kick": "will this kick exit?",
    "notify": "will the backend interrupt the guest?",
    "switch": "which VF (or VM) receives this frame?",
    "iommu": "will the IOMMU translate or fault?",
    "register": "what does this register access cost?",
    "interrupt": "does this interrupt make the vCPU exit?",
}


@dataclass(frozen=True)
class Question:
    kind: str
    prompt: str
    choices: tuple[tuple[str, str], ...]    # (key, text)
    answer: str                             # the key of the right choice
    explanation: tuple[str, ...]            # the revealed events, one line each
    stage: int = 0

    def choice_text(self, key: str) -> str:
        return next((t for k, t in self.choices if k == key), "")


@dataclass(frozen=True)
class Reveal:
    question: Question
    chosen: str
    right: bool


def _keys(n: int) -> list[str]:
    """The answer keys: digits 1..n — no letter, since the main view's
    letters step (n), step back (b), switch host (a), compare (c)…"""
    return [str(i + 1) for i in range(n)]


def _choices(texts: Sequence[str]) -> tuple[tuple[str, str], ...]:
    return tuple(zip(_keys(len(texts)), texts))


def _answer(choices: tuple[tuple[str, str], ...], text: str) -> str:
    return next(k for k, t in choices if t == text)


def candidates(events: Sequence[TraceEvent], sim: Any) -> list[Question]:
    """Every question the events of one engine action can answer, in the
    order the events happened."""
    out: list[Question] = []
    evs = list(events)
    switch = [e for e in evs if e.kind == "switch" and e.data.get("dst")]
    for i, ev in enumerate(evs):
        d = ev.data
        k = ev.kind
        later = evs[i + 1:]
        if k == "kick" and "kicked" in d:
            q = d.get("queue", "").upper()
            ch = _choices(("yes — it kicks: a write to the notify register, a VM exit",
                           "no — the device asked not to be kicked; no exit"))
            kick_exits = [e.msg for e in evs[:i] if e.kind == "exit" and "kick" in e.data.get("cause", "")][-1:]
            out.append(Question(
                "kick", f"{ev.vm}'s virtio-net driver has just added buffers to its {q} ring. "
                        f"Will it kick the device (and so cause a VM exit)?",
                ch, ch[0][0] if d["kicked"] else ch[1][0], tuple(kick_exits + [ev.msg]), ev.stage))
        elif k == "irq" and "notified" in d:
            q = d.get("queue", "")
            ch = _choices(("yes — it signals the irqfd: an interrupt for the guest",
                           "no — the guest asked not to be interrupted (suppressed)"))
            out.append(Question(
                "notify", f"The virtio backend has just put a buffer in {ev.vm}'s {q} used ring. "
                          f"Will it interrupt the guest?",
                ch, ch[0][0] if d["notified"] else ch[1][0], (ev.msg,), ev.stage))
        elif k == "switch" and d.get("dst") and len(switch) == 1:
            sq = _switch_question(ev, sim, dropped=None)
            if sq is not None:
                out.append(sq)
        elif k == "drop" and ev.stage == 2 and d.get("dst") and d.get("direction") == "rx" and not switch:
            sq = _switch_question(ev, sim, dropped=d.get("reason", ""))
            if sq is not None:
                out.append(sq)
        elif k == "dma" and ev.stage == 3 and d.get("rid") and d.get("gpa") is not None:
            gpa = d["gpa"]
            ch = _choices(("translates it from the IOTLB (a hit)",
                           "walks the page tables (an IOTLB miss), then translates it",
                           "blocks it — a DMAR fault; nothing reaches RAM"))
            res = next((e for e in later if e.kind in ("iommu", "fault")
                        and e.data.get("gpa", e.data.get("addr")) == gpa), None)
            if res is None:
                continue
            if res.kind == "fault":
                ans = ch[2][0]
            else:
                ans = ch[0][0] if res.data.get("hit") else ch[1][0]
            out.append(Question(
                "iommu", f"{d['rid']} is about to DMA-write a frame to GPA 0x{gpa:x} in {ev.vm}. "
                         f"What does the IOMMU do?", ch, ans, (ev.msg, res.msg), ev.stage))
        elif k == "reg":
            ex = next((e for e in later if e.kind == "exit"), None)
            if ex is None:
                continue
            what = f"{'writes' if d.get('write') else 'reads'} {d.get('reg', '?')} (offset 0x{d.get('offset', 0):04x})"
            ch = _choices(("nothing special — a plain memory access, no exit",
                           "a VM exit handled inside KVM (kernel)",
                           "a VM exit handled by QEMU in userspace"))
            ans = ch[2][0] if ex.data.get("where") == "userspace" else ch[1][0]
            out.append(Question("register", f"{ev.vm}'s e1000 driver {what}. What happens?",
                                ch, ans, (ev.msg, ex.msg), ev.stage))
        elif k == "irq" and d.get("mode") in ("injected", "posted", "coalesced") and d.get("source"):
            # Vmm.deliver_irq: the answer depends on the vCPU's state and the host profile
            ch = _choices(("a VM exit (EXTERNAL_INTERRUPT); KVM injects it on the next entry",
                           "no exit — a posted interrupt goes straight to the guest",
                           "no EXTERNAL_INTERRUPT — it is taken at the vCPU's next VM entry or wake-up",
                           "nothing new — the same vector is already pending (coalesced)"))
            state = d.get("state", "running")
            if d["mode"] == "coalesced":
                ans = ch[3][0]
            elif state in ("halted", "in_exit"):
                ans = ch[2][0]
            else:
                ans = ch[1][0] if d["mode"] == "posted" else ch[0][0]
            where = {"halted": "is halted (the guest ran out of work and executed HLT)",
                     "in_exit": "is inside a VM exit",
                     "running": "is running guest code"}.get(state, "is running guest code")
            host = sim.host.label() if getattr(sim, "host", None) is not None else ""
            exits = [e.msg for e in evs[:i] if e.kind == "exit"][-1:]
            out.append(Question("interrupt", f"{d['source']} raises an interrupt for {ev.vm}; its vCPU "
                                             f"{where} ({host}). What happens?",
                                ch, ans, tuple(exits + [ev.msg]), ev.stage))
    return out


def _switch_question(ev: TraceEvent, sim: Any, dropped: str | None) -> Question | None:
    """Which VF (or VM) gets the frame — None when there is only one to
    choose (the question would give its own answer)."""
    d = ev.data
    dst = d["dst"]
    vlan = d.get("vlan")
    nic = getattr(sim.technique, "nic", None)
    if nic is not None:
        ports = [(f.name, f"{f.name} ({f.mac}{f', VLAN ' + str(f.vlan) if f.vlan else ''}) → {f.vm_name}")
                 for f in nic.vfs if f.vm is not None]
        who = "the NIC's embedded switch"
        unit = "VF"
    else:
        ports = [(vm.name, f"{vm.name}'s tap ({vm.mac}{f', VLAN ' + str(vm.vlan) if vm.vlan else ''})")
                 for vm in sim.vms]
        who = "the host bridge"
        unit = "VM"
    if len(ports) < 2:
        return None
    target = None if dropped is not None else (d.get("vf") or ev.vm)
    if len(ports) > 6:
        # a dense host: six choices, the right one among them (in the NIC's order)
        keep = {name for name, _t in ports if name == target}
        keep.update([name for name, _t in ports if name != target][:6 - len(keep)])
        ports = [p for p in ports if p[0] in keep]
    texts = [t for _n, t in ports][:6] + ["none — the frame is dropped"]
    ch = _choices(texts)
    if dropped is not None:
        ans = ch[-1][0]
    else:
        ans = next((ch[i][0] for i, (name, _t) in enumerate(ports[:6]) if name == target), ch[-1][0])
    tag = f" VLAN {vlan}" if vlan else ""
    return Question("switch", f"A frame for destination MAC {dst}{tag} arrives from the wire. "
                              f"Which {unit} does {who} deliver it to?", ch, ans, (ev.msg,), 2)


class Quiz:
    """Decides which candidate questions to ask and keeps the score.

    Each kind of question is asked the first time it can be, then about one
    time in ``every`` (drawn from the quiz's own seeded generator, never the
    model's, so asking changes nothing in the run)."""

    def __init__(self, seed: int = 1, every: int = 8) -> None:
        self.rng = random.Random(f"quiz-{seed}")
        self.every = every
        self.seen: dict[str, int] = {}
        self.asked = 0
        self.right = 0
        self.by_kind: dict[str, list[int]] = {}       # kind -> [right, asked]

    def consider(self, events: Sequence[TraceEvent], sim: Any) -> Question | None:
        for q in candidates(events, sim):
            n = self.seen.get(q.kind, 0)
            self.seen[q.kind] = n + 1
            if n == 0 or self.rng.randrange(self.every) == 0:
                return q
        return None

    def grade(self, q: Question, chosen: str) -> Reveal:
        right = chosen == q.answer
        self.asked += 1
        self.right += right
        k = self.by_kind.setdefault(q.kind, [0, 0])
        k[0] += right
        k[1] += 1
        return Reveal(q, chosen, right)

    @property
    def score(self) -> tuple[int, int]:
        return self.right, self.asked
