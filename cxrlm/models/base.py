"""`CxrModel`: one loaded checkpoint that answers CXR tasks in the project's one output schema.

The family record (cxrlm.models.families) formats turns, the engine produces text, the parsers turn text into
structure.
"""

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from cxrlm.engines.hf import Generation
from cxrlm.models.families import FAMILIES
from cxrlm.models.frames import view_region
from cxrlm.models.profiles import INTEGER_BOX_FORMATS, ModelProfile
from cxrlm.pathologies import CHEXPERT14, CLASSIFY_LABELS, label_phrase
from cxrlm.prompts import parsers
from cxrlm.prompts.templates import DIALECTS, task_prompt
from cxrlm.types import Label, ModelOutput, Study, Timings, XrayImage


class CxrModel:
    def __init__(self, name: str, profile: ModelProfile, engine, load_s: float = 0.0):
        self.name = name
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
        if task == "classify":
            return self.classify(study, labels or CLASSIFY_LABELS)
        if task not in ("reason", "report", "ground"):
            raise ValueError(f"unknown task {task!r}")
        # A dialect may ask earlier questions first, in the same conversation (M4CXR: findings, then the report).
        chain = self.dialect.report_chain if task == "report" else ()
        messages, steps = [], []
        for prompt in (*chain, task_prompt(self.dialect, task, phrase)):
            messages.append(self.adapter.user_turn(prompt, 0) if messages else self.first_turn(prompt, study))
            steps.append(self.generate([*messages], study, max_new_tokens, on_text, mean_numbers=task == "ground"))
            messages.append(self.adapter.assistant_turn(steps[-1].text))
        out = self.structure(task, _merged(steps), study, phrase=phrase)
        if chain:
            out.reasoning = "\n".join(step.text.strip() for step in steps[:-1]) or None
            out.labels = [Label(name) for name in parsers.parse_labels(out.reasoning or "")[0]]
        return out

    def predict_batch(self, images: list, task: str, *, phrases=None, max_new_tokens=None) -> list[ModelOutput]:
        """`predict` for many studies; an engine that batches (fast, remote) gets them all at once from threads."""
        phrases = phrases or [None] * len(images)
        if not getattr(self.engine, "concurrent", False):
            return [self.predict(img, task, phrase=p, max_new_tokens=max_new_tokens) for img, p in zip(images, phrases)]
        with ThreadPoolExecutor(max_workers=len(images) or 1) as pool:
            futures = [pool.submit(self.predict, img, task, phrase=p, max_new_tokens=max_new_tokens)
                       for img, p in zip(images, phrases)]
            return [f.result() for f in futures]

    def first_turn(self, prompt: str, study: Study) -> dict:
        """The opening user turn: every image of the study (then the prior's) and what they are, then the question."""
        return self.adapter.user_turn(_study_context(study) + prompt, len(study_images(study)))

    def generate(self, messages, study: Study, max_new_tokens=None, on_text=None, mean_numbers=False) -> Generation:
        """The engine's greedy answer; with `mean_numbers` (grounding), integer box coordinates are the expected
        value of the model's belief (cxrlm.engines.numbers) where the engine and tokenizer allow it. Fractions
        ("norm1") stay greedy: their digits after the point are not whole numbers."""
        images = [img.to_pil() for img in study_images(study)]
        messages = self._with_system(messages)
        max_new_tokens = max_new_tokens or self.profile.max_new_tokens
        mean = getattr(self.engine, "generate_mean_numbers", None)
        if mean_numbers and mean and self.profile.box_format in INTEGER_BOX_FORMATS:
            generation = mean(messages, images, max_new_tokens, on_text)
            if generation is not None:
                return generation
        return self.engine.generate(messages, images, max_new_tokens, on_text)

    def _with_system(self, messages: list[dict]) -> list[dict]:
        """The dialect's system prompt first (MedGemma's "You are an expert radiologist."), unless one is there."""
        if not self.dialect.system or (messages and messages[0]["role"] == "system"):
            return messages
        return [{"role": "system", "content": [{"type": "text", "text": self.dialect.system}]}, *messages]

    def structure(self, task: str, generation: Generation, study: Study, phrase: str | None = None) -> ModelOutput:
        """Parse a generation into a ModelOutput; boxes are mapped to the first image's original pixels."""
        image = study.images[0]
        text = generation.text
        out = ModelOutput(
            task=task,
            model=self.name,
            raw_text=text,
            image_size=image.size,
            timings=Timings(self.load_s, generation.preprocess_s, generation.generate_s, generation.new_tokens),
            warnings=[w for img in study.images for w in img.warnings],
        )
        split = parsers.split_reasoning(text)
        out.reasoning = split.reasoning
        out.answer = split.answer
        if task == "reason":
            if self.dialect.think_tags:
                out.warnings += split.warnings
            names, unknown = parsers.parse_labels(_label_list(split.answer, self.dialect.label_list_after))
            out.labels = [Label(name) for name in names]
            if unknown:
                out.warnings.append(f"ignored answer items that are not CheXpert-14 labels: {', '.join(unknown)}")
        if task == "report":
            out.findings, out.impression = parsers.parse_report(split.answer)
        out.boxes = parsers.parse_boxes(
            text, image.size, generation.input_size, default_label=phrase or "", box_format=self.profile.box_format,
            view=view_region(self.profile.box_frame, image.size),
        )
        if task == "ground" and not out.boxes:
            out.warnings.append("the model gave no box")
        return out

    def classify(self, study: Study, labels: tuple[str, ...] = CLASSIFY_LABELS) -> ModelOutput:
        """A probability per label (CheXpert-14 and the NIH-only names by default): the likelihood of "yes" to a
        per-label question, in one batch."""
        start = time.perf_counter()
        images = [img.to_pil() for img in study_images(study)]
        question = self.dialect.classify_question
        conversations = [
            self._with_system([self.first_turn(question.format(label=label_phrase(name)), study)]) for name in labels
        ]
        probs = self.engine.yes_probability(conversations, [images] * len(conversations))
        probabilities = {name: round(p, 4) for name, p in zip(labels, probs, strict=True)}
        image = study.images[0]
        return ModelOutput(
            task="classify",
            model=self.name,
            raw_text="",
            # `labels` stays in the schema's CheXpert-14 vocabulary; `probabilities` has every label asked about.
            labels=[Label(name, p, present=p >= 0.5) for name, p in probabilities.items() if name in CHEXPERT14],
            probabilities=probabilities,
            image_size=image.size,
            timings=Timings(self.load_s, None, time.perf_counter() - start, None),
            warnings=[w for img in study.images for w in img.warnings],
        )


def study_images(study: Study) -> list[XrayImage]:
    return study.images + (study.prior.images if study.prior else [])


def _study_context(study: Study) -> str:
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


def _label_list(answer: str, after: str) -> str:
    """The part of a sentence answer that lists labels ("The following are present: edema and ...")."""
    return answer.split(after, 1)[1] if after and after in answer else answer


def _merged(steps: list[Generation]) -> Generation:
    """One Generation for a chain of turns: the last text, the summed token counts and times."""
    if len(steps) == 1:
        return steps[0]
    return Generation(
        text=steps[-1].text,
        new_tokens=sum(step.new_tokens for step in steps),
        preprocess_s=sum(step.preprocess_s for step in steps),
        generate_s=sum(step.generate_s for step in steps),
        input_size=steps[-1].input_size,
    )
