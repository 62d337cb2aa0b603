"""A conversation about one study: the images go with the first user turn, follow-ups carry the history.

Every turn is re-sent in full (the plain engine keeps no cache between turns); answers are streamed through
`on_text` and also returned parsed, as a `ModelOutput`.
"""

from collections.abc import Callable

from cxrlm.models.base import study_images
from cxrlm.prompts.templates import task_prompt
from cxrlm.types import Message, ModelOutput, Study, XrayImage


class Session:
    def __init__(self, model, study: XrayImage | Study, max_new_tokens: int | None = None):
        self.model = model
        self.study = study if isinstance(study, Study) else Study(images=[study])
        self.max_new_tokens = max_new_tokens
        self.history: list[Message] = []

    def ask(self, text: str, on_text: Callable[[str], None] | None = None, task: str = "chat") -> ModelOutput:
        text = text.strip()
        if not text:
            raise ValueError("empty question")
        self.history.append(Message("user", text, n_images=0 if self.history else len(study_images(self.study))))
        generation = self.model.generate(self.messages(), self.study, self.max_new_tokens, on_text)
        self.history.append(Message("assistant", generation.text))
        return self.model.structure(task, generation, self.study)

    def reason(self, on_text: Callable[[str], None] | None = None) -> ModelOutput:
        """The dialect's opening question (for NV-Reason: "Find abnormalities and support devices.")."""
        return self.ask(task_prompt(self.model.dialect, "reason"), on_text, task="reason")

    def messages(self) -> list[dict]:
        """The conversation as the model's chat format (what is sent each turn)."""
        adapter = self.model.adapter
        return [
            (self.model.first_turn(m.text, self.study) if m.n_images else adapter.user_turn(m.text, 0))
            if m.role == "user" else adapter.assistant_turn(m.text)
            for m in self.history
        ]
