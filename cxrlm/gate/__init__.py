"""The input gate: is this a chest radiograph, and which view? Run on every image before any model work.

Two checks, in order. The DICOM attributes the reader kept (cxrlm.io.dicom: Modality, BodyPartExamined,
ImageType; a non-radiograph Modality is already refused there, before decoding, with `modality_phrase`'s words),
then the image itself (cxrlm.gate.classifier: a small MLP on image statistics, fitted by `cxrlm gate fit`, its
held-out figures in docs/GATE.md). A clear non-chest image is refused with one line naming the reason; a borderline
one passes with a warning; the view estimate fills the study's view positions where neither file nor user gave one.

Modes: "on" refuses, "warn" only warns (research use on unusual images), "off" skips the gate.
"""

from __future__ import annotations

from cxrlm.errors import InputError
from cxrlm.types import FRONTAL_VIEWS, Study, XrayImage

MODES = ("on", "warn", "off")
CHEST_BODY_PARTS = ("CHEST", "THORAX", "LUNG", "CHEST_TO_PELVIS")
MODALITY_PHRASES = {  # what an image of a non-radiograph Modality is, in a refusal
    "CT": "looks like a CT slice", "MR": "looks like an MR image", "US": "looks like an ultrasound image",
    "NM": "looks like a nuclear-medicine image", "PT": "looks like a PET image", "MG": "looks like a mammogram",
    "XA": "looks like an angiogram", "RF": "looks like a fluoroscopy frame", "SEG": "is a segmentation",
    "SR": "is a structured report", "RTDOSE": "is a radiotherapy dose map", "IO": "looks like a dental image",
    "PX": "looks like a panoramic dental image", "OP": "looks like an eye photograph",
}  # fmt: skip
VIEW_NAMES = {"frontal": "FRONTAL", "lateral": "LATERAL"}  # the gate's estimate as a view position
ALL_VIEWS = ("frontal", "lateral")


class GateRefusal(InputError):
    """The gate refused an image: the message names why and how to override."""


def modality_phrase(modality: str) -> str:
    return MODALITY_PHRASES.get(modality, "is not a radiograph")


def check_study(study: Study, mode: str = "on") -> None:
    """Gate every image of the study and of its prior; fill view positions from the estimate."""
    for image in study.images + (study.prior.images if study.prior else []):
        check_image(image, mode)
    fill_views(study.images)
    if study.prior:
        fill_views(study.prior.images)


def check_image(image: XrayImage, mode: str = "on", override: str = "--gate warn") -> None:
    """Refuse (mode "on") or annotate one loaded image. The score is kept in metadata["gate_*"] for fill_views."""
    if mode not in MODES:
        raise InputError(f"gate mode {mode!r}: use one of {', '.join(MODES)}")
    if mode == "off" or "gate_chest_score" in image.metadata:  # already gated (a stored upload)
        return
    refusals = _attribute_refusals(image)
    image_type = _image_type(image)
    if image_type[1:2] == ["SECONDARY"]:  # PRIMARY/SECONDARY; DERIVED alone is also set by lossy compression
        image.warnings.append(f"DICOM ImageType is {'/'.join(image_type[:2])}: a secondary image (screen capture or "
                              "reformat), not the original radiograph: check the source")
    from cxrlm.gate.classifier import shipped

    classifier = shipped()
    score = classifier.score(image.pixels, float(image.metadata.get("colour_saturation", 0.0)))
    image.metadata.update(gate_chest_score=round(score.chest, 3), gate_view=score.view,
                          gate_view_score=round(score.view_score, 3))  # flat: stored with a server upload
    if score.chest < classifier.thresholds["refuse_below"]:
        refusals.append(f"not a chest radiograph: {_looks_like(image, score)} (score {score.chest:.2f})")
    elif score.chest < classifier.thresholds["warn_below"]:
        image.warnings.append(f"may not be a chest radiograph (gate score {score.chest:.2f}): check the image")
    if refusals and mode == "on":
        raise GateRefusal(f"{image.source}: {refusals[0]} (override for research: {override})")
    image.warnings += [f"gate: {reason}" for reason in refusals]


def fill_views(images: list[XrayImage]) -> None:
    """Where neither the file nor the user gave a view, use the gate's estimate (FRONTAL or LATERAL) of an image
    it did not judge a non-chest image."""
    from cxrlm.gate.classifier import THRESHOLDS

    for image in images:
        meta = image.metadata
        if image.view_position is None and meta.get("gate_chest_score", 0.0) >= THRESHOLDS["refuse_below"]:
            image.view_position = VIEW_NAMES[meta["gate_view"]]
            image.warnings.append(f"view {image.view_position} estimated from the image "
                                  f"(score {meta['gate_view_score']:.2f}): give --view if known")


def check_views(study: Study, accepted, model_name: str, mode: str = "on", override: str = "--gate warn") -> None:
    """A model that reads frontal views only refuses a study without one, and warns about any lateral it gets."""
    if mode == "off" or "lateral" in accepted:
        return
    images = study.images
    laterals = [image for image in images if image.view_position and image.view_position not in FRONTAL_VIEWS]
    if laterals and len(laterals) == len(images):
        message = f"lateral view: {model_name} reads frontal views only: add the frontal view of the study"
        if mode == "on":
            raise GateRefusal(f"{message} (override for research: {override})")
        laterals[0].warnings.append(f"gate: {message}")
    elif laterals:
        laterals[0].warnings.append(f"{model_name} reads frontal views only: the lateral view is extra context")


def _attribute_refusals(image: XrayImage) -> list[str]:
    body_part = str(image.metadata.get("BodyPartExamined") or "").strip().upper()
    if body_part and body_part not in CHEST_BODY_PARTS:
        return [f"DICOM BodyPartExamined is {body_part}, not chest"]
    return []


def _image_type(image: XrayImage) -> list[str]:
    return [part.strip().upper() for part in str(image.metadata.get("ImageType") or "").split("\\")]


def _looks_like(image: XrayImage, score) -> str:
    from cxrlm.gate.classifier import LOOKS_LIKE

    if float(image.metadata.get("colour_saturation", 0.0)) > 0.05:
        return "looks like a colour photograph or drawing"
    return f"looks like {LOOKS_LIKE[score.looks_like]}"
