"""`CxrModel`: one loaded checkpoint that answers CXR tasks in the project's one output schema.

The conversation (cxrlm.chat.Session) builds the turns, the family record (cxrlm.models.families) formats
them, the engine produces text, the parsers turn text into structure.
"""

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from cxrlm import box_formats
from cxrlm.chat import Session, opening_turn, report, study_images
from cxrlm.engines.base import Generation
from cxrlm.models.families import FAMILIES
from cxrlm.models.profiles import ModelProfile
from cxrlm.pathologies import CHEXPERT14, CLASSIFY_LABELS, finding, label_phrase
from cxrlm.prompts import parsers
from cxrlm.prompts.templates import DIALECTS
from cxrlm.types import PREDICT_TASKS, Label, ModelOutput, Study, Task, Timings, XrayImage


class CxrModel:
    def __init__(self, name: str, profile: ModelProfile, engine, load_s: float = 0.0, calibration=None):
        self.name = name
        self.calibration = calibration  # cxrlm.models.calibration.Calibration, applied to classify probabilities
        self.profile = profile
        self.engine = engine
        self.load_s = load_s
        self.dialect = DIALECTS[profile.dialect]
        self.adapter = FAMILIES[profile.family]  # user_turn(text, n_images), assistant_turn(text)

    @property
    def template_version(self) -> str:
        return self.dialect.version

    def predict(
        self,
        image: XrayImage | Study,
        task: str,
        *,
        phrase: str | None = None,
        max_new_tokens: int | None = None,
        on_text: Callable[[str], None] | None = None,
        labels: tuple[str, ...] | None = None,
    ) -> ModelOutput:
        study = image if isinstance(image, Study) else Study(images=[image])
        if task not in PREDICT_TASKS:
            raise ValueError(f"unknown task {task!r}; choose from {', '.join(PREDICT_TASKS)}")
        if task == Task.CLASSIFY:
            return self.classify(study, labels or CLASSIFY_LABELS)
        if task == Task.REPORT:
            return report(self, study, max_new_tokens, on_text)
        return Session(self, study, max_new_tokens).ask_task(task, on_text, phrase)

    def predict_batch(self, images: list, task: str, *, phrases=None, max_new_tokens=None) -> list[ModelOutput]:
        """`predict` for many studies; an engine that batches (fast, remote) gets them all at once from threads."""
        phrases = phrases or [None] * len(images)
        if not self.engine.capabilities.concurrent:
            return [self.predict(img, task, phrase=p, max_new_tokens=max_new_tokens) for img, p in zip(images, phrases)]
        with ThreadPoolExecutor(max_workers=len(images) or 1) as pool:
            futures = [pool.submit(self.predict, img, task, phrase=p, max_new_tokens=max_new_tokens)
                       for img, p in zip(images, phrases)]
            return [f.result() for f in futures]

    def first_turn(self, prompt: str, study: Study) -> dict:
        """A one-question conversation's user turn (classify asks one per label)."""
        return opening_turn(self.adapter, prompt, study)

    def generate(self, messages, study: Study, max_new_tokens=None, on_text=None, mean_numbers=False) -> Generation:
        """The engine's greedy answer; with `mean_numbers` (grounding), integer box coordinates are the expected
        value of the model's belief (cxrlm.engines.numbers) where the engine and tokenizer allow it. Fractions
        ("norm1") stay greedy: their digits after the point are not whole numbers."""
        images = [img.to_pil() for img in study_images(study)]
        messages = self._with_system(messages)
        max_new_tokens = max_new_tokens or self.profile.max_new_tokens
        whole = box_formats.whole_numbers(self.profile.box_format)
        if mean_numbers and whole and self.engine.capabilities.mean_numbers:
            return self.engine.generate_mean_numbers(messages, images, max_new_tokens, on_text)
        return self.engine.generate(messages, images, max_new_tokens, on_text)

    def _with_system(self, messages: list[dict]) -> list[dict]:
        """The dialect's system prompt first (MedGemma's "You are an expert radiologist."), unless one is there."""
        if not self.dialect.system or (messages and messages[0]["role"] == "system"):
            return messages
        return [{"role": "system", "content": [{"type": "text", "text": self.dialect.system}]}, *messages]

    def structure(self, task: Task | None, generation: Generation, study: Study, phrase: str | None = None
                  ) -> ModelOutput:
        """Parse a generation into a ModelOutput; boxes are mapped to the first image's original pixels.
        `task` None (a free chat question): the task is what the text carries (parsers.answer_task)."""
        image = study.images[0]
        text = generation.text
        boxes = parsers.parse_boxes(
            text, image.size, generation.input_size, default_label=phrase or "", box_format=self.profile.box_format,
            view=box_formats.view_region(self.profile.box_frame, image.size),
        )
        task = task or parsers.answer_task(text, self.dialect.label_list_after, bool(boxes))
        split = parsers.split_reasoning(text)
        out = ModelOutput(
            task=Task(task),
            model=self.name,
            raw_text=text,
            reasoning=split.reasoning,
            answer=split.answer,
            boxes=boxes,
            image_size=image.size,
            timings=Timings(self.load_s, generation.preprocess_s, generation.generate_s, generation.new_tokens),
            warnings=[w for img in study.images for w in img.warnings],
            model_notice=self.profile.notice,
        )
        if task == Task.REASON:
            if self.dialect.think_tags:
                out.warnings += split.warnings
            names, unknown = parsers.parse_labels(parsers.label_list(split.answer, self.dialect.label_list_after))
            out.labels = [Label(name) for name in names]
            if unknown:
                out.warnings.append(f"ignored answer items that are not CheXpert-14 labels: {', '.join(unknown)}")
        if task == Task.REPORT:
            out.findings, out.impression = parsers.parse_report(split.answer)
        if task == Task.GROUND and not out.boxes:
            out.warnings.append("the model gave no box")
        return out

    def classify(self, study: Study, labels: tuple[str, ...] = CLASSIFY_LABELS) -> ModelOutput:
        """A probability per label (CheXpert-14 and the NIH-only names by default): the likelihood of "yes" to a
        per-finding question, in one batch. Names of one finding in two vocabularies (NIH "Effusion", CheXpert
        "Pleural Effusion") are asked once and share its probability."""
        start = time.perf_counter()
        images = [img.to_pil() for img in study_images(study)]
        question = self.dialect.classify_question
        findings = list(dict.fromkeys(finding(name) for name in labels))
        conversations = [
            self._with_system([self.first_turn(question.format(label=label_phrase(name)), study)]) for name in findings
        ]
        probs = self.engine.yes_probability(conversations, [images] * len(conversations))
        by_finding = dict(zip(findings, probs, strict=True))
        raw = {name: by_finding[finding(name)] for name in labels}
        calibrated = self.calibration.apply(raw) if self.calibration else raw
        probabilities = _rounded(calibrated)
        image = study.images[0]
        return ModelOutput(
            task="classify",
            model=self.name,
            raw_text="",
            # `labels` stays in the schema's CheXpert-14 vocabulary; `probabilities` has every label asked about.
            labels=[Label(name, p, present=p >= 0.5) for name, p in probabilities.items() if name in CHEXPERT14],
            probabilities=probabilities,
            calibration=self.calibration.output_field(_rounded(raw)) if self.calibration else None,
            image_size=image.size,
            timings=Timings(self.load_s, None, time.perf_counter() - start, None),
            warnings=[w for img in study.images for w in img.warnings],
            model_notice=self.profile.notice,
        )


def _rounded(probabilities: dict[str, float]) -> dict[str, float]:
    return {name: round(p, 4) for name, p in probabilities.items()}
