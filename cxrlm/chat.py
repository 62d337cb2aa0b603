"""The conversation about one study: the only place turns are built.

The first user turn carries every image of the study (then the prior's) and plain words about them (views, prior,
prior report); follow-ups carry the history. Every turn is re-sent in full (the plain engine keeps no cache
between turns); answers are streamed through `on_text` and also returned parsed, as a `ModelOutput`.
`CxrModel.predict`, `cxrlm report | chat`, the server and `cxrlm eval` all ask through a `Session`.
"""

from collections.abc import Callable, Sequence

from cxrlm.prompts.templates import task_prompt
from cxrlm.types import Message, ModelOutput, Study, Task, XrayImage


class Session:
    """`turns` continues an earlier conversation: (role, text) pairs, starting with the user's first question."""

    def __init__(self, model, study: XrayImage | Study, max_new_tokens: int | None = None,
                 turns: Sequence[tuple[str, str]] = ()):
        self.model = model
        self.study = study if isinstance(study, Study) else Study(images=[study])
        self.max_new_tokens = max_new_tokens
        self.history = [Message(role, text, n_images=len(study_images(self.study)) if i == 0 else 0)
                        for i, (role, text) in enumerate(turns)]

    def ask(self, text: str, on_text: Callable[[str], None] | None = None, task: Task | None = None,
            phrase: str | None = None) -> ModelOutput:
        """One question and its answer. `task` says what was asked; a free question (None) is parsed as whatever
        its answer carries (labels, report sections, boxes: cxrlm.prompts.parsers.answer_task)."""
        text = text.strip()
        if not text:
            raise ValueError("empty question")
        self.history.append(Message("user", text, n_images=0 if self.history else len(study_images(self.study))))
        generation = self.model.generate(self.messages(), self.study, self.max_new_tokens, on_text,
                                         mean_numbers=task == Task.GROUND)
        self.history.append(Message("assistant", generation.text))
        return self.model.structure(task, generation, self.study, phrase=phrase)

    def ask_task(self, task: Task, on_text: Callable[[str], None] | None = None,
                 phrase: str | None = None) -> ModelOutput:
        """The dialect's own question for a task (`ground` needs the phrase to locate)."""
        return self.ask(task_prompt(self.model.dialect, task, phrase), on_text, task=Task(task), phrase=phrase)

    def reason(self, on_text: Callable[[str], None] | None = None) -> ModelOutput:
        """The dialect's opening question (for NV-Reason: "Find abnormalities and support devices.")."""
        return self.ask_task(Task.REASON, on_text)

    def report(self, on_text: Callable[[str], None] | None = None) -> ModelOutput:
        """The dialect's reasoning turn (labels), then its report turn (findings, impression), as one output whose
        raw text is both answers, as streamed."""
        reasoning = self.reason(on_text)
        if on_text:
            on_text("\n\n")
        return reasoning.merged_with(self.ask_task(Task.REPORT, on_text))

    def messages(self) -> list[dict]:
        """The conversation as the model's chat format (what is sent each turn)."""
        adapter = self.model.adapter
        return [
            (opening_turn(adapter, m.text, self.study) if m.n_images else adapter.user_turn(m.text, 0))
            if m.role == "user" else adapter.assistant_turn(m.text)
            for m in self.history
        ]


def report(model, study: XrayImage | Study, max_new_tokens: int | None = None,
           on_text: Callable[[str], None] | None = None) -> ModelOutput:
    """What `cxrlm report`, `/v1/cxr/report` and `cxrlm eval` all give: `Session.report` on a new conversation."""
    return Session(model, study, max_new_tokens).report(on_text)


def opening_turn(adapter, prompt: str, study: Study) -> dict:
    """The first user turn: every image of the study (then the prior's) and what they are, then the question."""
    return adapter.user_turn(study_context(study) + prompt, len(study_images(study)))


def study_images(study: Study) -> list[XrayImage]:
    """The images in the order they are sent: the study's views, then the prior's."""
    return study.images + (study.prior.images if study.prior else [])


def study_context(study: Study) -> str:
    """Plain words about a multi-view study and its prior, for families with no native prior input.

    Nothing is said when there is one image and no prior, so single-image prompts stay exactly the dialect's.
    The model is never told of a prior it was not given.
    """
    parts = []
    if len(study.images) > 1:
        views = ", ".join(img.view_position or "unknown view" for img in study.images)
        parts.append(f"Current study: {len(study.images)} views ({views}).")
    if study.prior and study.prior.images:
        parts.append(f"The last {len(study.prior.images)} image(s) are the prior study, for comparison.")
    if study.prior_report:
        parts.append(f"Prior report: {study.prior_report.strip()}")
    return " ".join(parts) + ("\n" if parts else "")
