"""`CxrModel`: one loaded checkpoint that answers CXR tasks in the project's one output schema.

The conversation (cxrlm.chat.Session) builds the turns, the family record (cxrlm.models.families) formats
them, the engine produces text, the parsers turn text into structure.
"""

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from cxrlm import box_formats
from cxrlm.chat import Session, opening_turn, report, study_images
from cxrlm.engines import numbers
from cxrlm.engines.base import Generation
from cxrlm.models.families import FAMILIES
from cxrlm.models.profiles import ModelProfile
from cxrlm.pathologies import CHEXPERT14, CLASSIFY_LABELS, finding, label_phrase
from cxrlm.prompts import parsers
from cxrlm.prompts.templates import DIALECTS, task_prompt
from cxrlm.types import PREDICT_TASKS, Label, ModelOutput, Study, Task, Timings, XrayImage

# A box's score is the mean over its four coordinates of the model's probability that the coordinate lies within
# BOX_TOLERANCE of a side (5 units of 0-100) of its expected value; under LOW_BOX_SCORE the output warns. On
# cxrlm-tiny's lung boxes (6 NIH images) it is about 0.8 (coordinate sd about 5.5 units). A phrase outside the
# model's declared grounding vocabulary scores 0: a peaked belief about coordinates is no evidence about a phrase
# the model never learned (cxrlm-tiny's "heart" box, the whole thorax, is as peaked as its lung boxes).
BOX_TOLERANCE = 0.05
LOW_BOX_SCORE = 0.5


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
            score_of=self._box_scorer(generation),
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
        if (study.prior or study.prior_report) and not self.profile.priors:
            out.warnings.append(f"{self.name} was not trained to read a study against a prior (its profile has no "
                                "`priors`): the prior went in as extra images and words, and any comparison in "
                                "its answer is unvalidated")
        if task == Task.REASON:
            if self.dialect.think_tags:
                out.warnings += split.warnings
            names, unknown = parsers.parse_labels(parsers.label_list(split.answer, self.dialect.label_list_after))
            out.labels = [Label(name) for name in names]
            if unknown:
                out.warnings.append(f"ignored answer items that are not CheXpert-14 labels: {', '.join(unknown)}")
        if task == Task.REPORT:
            out.findings, out.impression = parsers.parse_report(split.answer)
        if task == Task.GROUND:
            out.warnings += self._grounding_warnings(out, phrase)
        return out

    def _box_scorer(self, generation: Generation):
        """score_of(start, end) for parse_boxes: the box's mean coordinate confidence (cxrlm.engines.numbers), from
        the beliefs of the four numbers written at those offsets; None where the engine decoded greedily."""
        if not generation.numbers:
            return None
        fmt = box_formats.FORMATS.get(self.profile.box_format)  # None: "auto"
        side = (fmt and fmt.scale) or max(generation.input_size or (0, 0)) or 100
        tolerance = BOX_TOLERANCE * side

        def score(start: int, end: int) -> float | None:
            inside = [b for b in generation.numbers if start <= b.start and b.end <= end]
            if len(inside) != 4:
                return None
            return round(sum(numbers.confidence(b.values, tolerance) for b in inside) / 4, 4)

        return score

    def _grounding_warnings(self, out: ModelOutput, phrase: str | None) -> list[str]:
        """Warnings for a grounding answer; a phrase outside the declared vocabulary sets its boxes' scores to 0."""
        if not out.boxes:
            return ["the model gave no box"]
        warnings = []
        low = [b.score for b in out.boxes if b.score is not None and b.score < LOW_BOX_SCORE]
        if low:
            warnings.append(f"box score {min(low):.2f} (under {LOW_BOX_SCORE}): the model's belief about the "
                            "coordinates is spread wide")
        known = self.profile.grounding_phrases
        if phrase and known is not None and phrase.strip().lower() not in known:
            beliefs = [b.score for b in out.boxes if b.score is not None]
            held = f" (coordinate confidence {max(beliefs):.2f})" if beliefs else ""
            warnings.append(f"{phrase!r} is not among what {self.name} was trained to locate ({', '.join(known)}): "
                            f"its box is not evidence of where that is; score set to 0{held}")
            for box in out.boxes:
                box.score = 0.0
        return warnings

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

    def heatmap(self, study: Study, task: Task | str, subject: str, answer: str | None = None,
                method: str = "gradient"):
        """Which regions of the first image moved an answer: [height, width] of the original image, summing to 1
        (cxrlm.heatmaps). classify: `subject` is the label whose yes log-odds is explained; ground: the phrase, and
        `answer` the model's answer text, whose box coordinates' log-probability is explained."""
        from cxrlm import heatmaps
        from cxrlm.errors import ConfigError

        if not self.engine.capabilities.heatmaps:
            raise ConfigError(f"the {type(self.engine).__name__} engine computes no heatmaps here: use --engine hf "
                              "(without --quantize)")
        if task == Task.CLASSIFY:
            question = self.dialect.classify_question.format(label=label_phrase(subject))
            answer = None
        elif task == Task.GROUND:
            question = task_prompt(self.dialect, Task.GROUND, subject)
        else:
            raise ValueError(f"heatmaps explain classify and ground answers, not {task}")
        messages = self._with_system([self.first_turn(question, study)])
        images = [img.to_pil() for img in study_images(study)]
        scores = self.engine.saliency(messages, images, answer, method)
        return heatmaps.to_original(scores, study.images[0].size)


def _rounded(probabilities: dict[str, float]) -> dict[str, float]:
    return {name: round(p, 4) for name, p in probabilities.items()}
