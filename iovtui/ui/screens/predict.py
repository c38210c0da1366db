"""Predict-then-reveal: the question about the next step, then its answer."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

from ...sim.quiz import Question, Reveal

__all__ = ["QuestionScreen"]


class QuestionScreen(ModalScreen):
    """Asks ``question``; a digit answers it (never a letter: the main
    view's letters step, step back, switch host…).  The app's driver grades
    the answer and runs the step; the screen then shows right or wrong and
    what the model did.  After the reveal, n continues (closes and steps on,
    or lets a running run go on) and enter, space or escape close it; before
    it, enter, space or escape skip the question (the step runs, ungraded)."""

    BINDINGS = [Binding("escape,enter,space", "close", "close", show=False),
                Binding("n", "next", "continue", show=False),
                *(Binding(str(i), f"answer('{i}')", show=False) for i in range(1, 10)),
                Binding("q", "app.quit", "quit", show=False)]

    def __init__(self, question: Question, score: tuple[int, int]) -> None:
        super().__init__()
        self.question = question
        self.score = score
        self.reveal: Reveal | None = None
        self.step_after = False          # closed with n: the app steps on (when paused)

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="question-box"):
            yield Static(self._text(), id="question-text")

    def _text(self) -> Text:
        q = self.question
        right, asked = self.score
        t = Text.assemble(("predict, then see  ", "bold #ffd75f"), (f"score {right}/{asked}\n\n", "grey62"),
                          (q.prompt + "\n\n", "bold"))
        r = self.reveal
        for key, text in q.choices:
            if r is None:
                t.append_text(Text.assemble((f"  {key}  ", "bold black on #ffd75f"), (f" {text}\n", "")))
                continue
            if key == q.answer:
                mark, style = "✓", "bold #87d787"
            elif key == r.chosen:
                mark, style = "✗", "bold #ff875f"
            else:
                mark, style = " ", "grey50"
            t.append_text(Text.assemble((f"  {mark} {key}  ", style), (f"{text}\n", style)))
        if r is None:
            keys = [k for k, _t in q.choices]
            t.append(f"\n{keys[0]}–{keys[-1]} answers, then the step runs · enter/space/escape: skip · q: quit",
                     style="italic grey62")
            return t
        verdict = ("✓ Right. ", "bold #87d787") if r.right else (f"✗ Not this time: it is ({q.answer}). ", "bold #ff875f")
        t.append_text(Text.assemble("\n", verdict, ("What the model did:\n", "bold")))
        for line in q.explanation:
            t.append(f"  • {line}\n", style="#d7d7af")
        t.append("\nn: continue · enter / space / escape: close", style="italic grey62")
        return t

    def action_answer(self, key: str) -> None:
        if self.reveal is not None or key not in {k for k, _t in self.question.choices}:
            return
        self.reveal = self.app.answer_question(key)
        if self.reveal is not None:
            self.score = (self.score[0] + self.reveal.right, self.score[1] + 1)
        self.query_one("#question-text", Static).update(self._text())

    def action_next(self) -> None:
        if self.reveal is None:          # answer first (or skip with enter)
            return
        self.step_after = True
        self.dismiss(self.reveal)

    def action_close(self) -> None:
        if self.reveal is None:           # skipped: the step runs, ungraded
            self.app.answer_question(None)
        self.dismiss(self.reveal)
