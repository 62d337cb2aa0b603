"""Label vocabularies (CheXpert 14, NIH ChestX-ray14) and the mapping between them, as data.

CheXpert 14 is the project's canonical answer vocabulary. Missing labels are NaN ("not labelled"),
following torchxrayvision's relabelling convention: 1 positive, 0 negative, NaN unknown.
"""

import difflib
import math
import re

CHEXPERT14 = (
    "No Finding",
    "Enlarged Cardiomediastinum",
    "Cardiomegaly",
    "Lung Lesion",
    "Lung Opacity",
    "Edema",
    "Consolidation",
    "Pneumonia",
    "Atelectasis",
    "Pneumothorax",
    "Pleural Effusion",
    "Pleural Other",
    "Fracture",
    "Support Devices",
)

NIH14 = (
    "Atelectasis",
    "Cardiomegaly",
    "Effusion",
    "Infiltration",
    "Mass",
    "Nodule",
    "Pneumonia",
    "Pneumothorax",
    "Consolidation",
    "Edema",
    "Emphysema",
    "Fibrosis",
    "Pleural_Thickening",
    "Hernia",
)

# NIH label -> the CheXpert label it is evidence for. Emphysema, Fibrosis and Hernia have no
# CheXpert counterpart (CheXpert folds them into nothing), so they map to None and are dropped.
NIH_TO_CHEXPERT = {
    "Atelectasis": "Atelectasis",
    "Cardiomegaly": "Cardiomegaly",
    "Effusion": "Pleural Effusion",
    "Infiltration": "Lung Opacity",
    "Mass": "Lung Lesion",
    "Nodule": "Lung Lesion",
    "Pneumonia": "Pneumonia",
    "Pneumothorax": "Pneumothorax",
    "Consolidation": "Consolidation",
    "Edema": "Edema",
    "Emphysema": None,
    "Fibrosis": None,
    "Pleural_Thickening": "Pleural Other",
    "Hernia": None,
}

# CheXpert label -> NIH labels it can be scored against (the inverse, for evaluating a CheXpert
# model on NIH ground truth). A CheXpert label with no NIH source is NaN on NIH data.
CHEXPERT_TO_NIH = {
    name: tuple(nih for nih, chx in NIH_TO_CHEXPERT.items() if chx == name) for name in CHEXPERT14
}

VOCABULARIES = {"chexpert14": CHEXPERT14, "nih14": NIH14}

# NIH-14 names for the very finding a CheXpert-14 label names (not only evidence for it, as Mass and Nodule are for
# Lung Lesion and Infiltration for Lung Opacity). Names spelled alike in both are one finding already.
SAME_FINDING = {"Effusion": "Pleural Effusion"}

# What `classify` scores: CheXpert-14, then the NIH-14 names CheXpert lacks, so NIH data is scored in its own words.
CLASSIFY_LABELS = (*CHEXPERT14, *(name for name in NIH14 if name not in CHEXPERT14))


def finding(name: str) -> str:
    """The finding a label name stands for, named in CheXpert-14 where it has the same finding: "Effusion" ->
    "Pleural Effusion". `classify` asks once per finding, so its names for one finding get one probability."""
    return SAME_FINDING.get(name, name)


def label_vocabularies(name: str) -> list[str]:
    """The vocabularies (VOCABULARIES keys) a label name belongs to: "Atelectasis" -> ["chexpert14", "nih14"]."""
    return [key for key, names in VOCABULARIES.items() if name in names]


def label_phrase(name: str) -> str:
    """How a label is asked about in a question: "Pleural_Thickening" -> "pleural thickening"."""
    return name.replace("_", " ").lower()


def reference_labels(labels: dict, source_labels: dict) -> dict[str, int | None]:
    """A record's truth over CLASSIFY_LABELS: its CheXpert labels, and the NIH-only names from NIH source labels."""
    out = {name: labels.get(name) for name in CHEXPERT14}
    for name in CLASSIFY_LABELS[len(CHEXPERT14):]:
        value = source_labels.get(name)
        out[name] = int(value) if value in (0, 1) else None
    return out

# Free-text spellings that models and reports use for a canonical CheXpert label.
CHEXPERT_ALIASES = {
    "no finding": "No Finding",
    "normal": "No Finding",
    "no abnormality": "No Finding",
    "no abnormalities": "No Finding",
    "no acute findings": "No Finding",
    "enlarged cardiomediastinum": "Enlarged Cardiomediastinum",
    "widened mediastinum": "Enlarged Cardiomediastinum",
    "mediastinal widening": "Enlarged Cardiomediastinum",
    "cardiomegaly": "Cardiomegaly",
    "enlarged heart": "Cardiomegaly",
    "lung lesion": "Lung Lesion",
    "mass": "Lung Lesion",
    "nodule": "Lung Lesion",
    "lung opacity": "Lung Opacity",
    "opacity": "Lung Opacity",
    "infiltration": "Lung Opacity",
    "infiltrate": "Lung Opacity",
    "edema": "Edema",
    "oedema": "Edema",
    "pulmonary edema": "Edema",
    "consolidation": "Consolidation",
    "pneumonia": "Pneumonia",
    "atelectasis": "Atelectasis",
    "pneumothorax": "Pneumothorax",
    "pleural effusion": "Pleural Effusion",
    "effusion": "Pleural Effusion",
    "pleural other": "Pleural Other",
    "pleural thickening": "Pleural Other",
    "fracture": "Fracture",
    "support devices": "Support Devices",
    "support device": "Support Devices",
    "devices": "Support Devices",
}


def _key(text: str) -> str:
    return re.sub(r"[^a-z ]+", " ", text.lower().replace("_", " ")).strip()


_ALIAS_KEYS = {_key(alias): name for alias, name in CHEXPERT_ALIASES.items()}
_ALIAS_KEYS.update({_key(name): name for name in CHEXPERT14})
_ALIAS_KEYS.update({_key(nih): chx for nih, chx in NIH_TO_CHEXPERT.items() if chx})


def normalize_label(text: str, cutoff: float = 0.85) -> str | None:
    """Map free text ("pleural effusions", "Cardiomegally", "Effusion") to a CheXpert-14 name, or None."""
    key = _key(text)
    key = re.sub(r"\s+", " ", key)
    if not key:
        return None
    if key in _ALIAS_KEYS:
        return _ALIAS_KEYS[key]
    if key.endswith("s") and key[:-1] in _ALIAS_KEYS:  # plurals: "effusions", "nodules"
        return _ALIAS_KEYS[key[:-1]]
    close = difflib.get_close_matches(key, list(_ALIAS_KEYS), n=1, cutoff=cutoff)
    return _ALIAS_KEYS[close[0]] if close else None


def canonical_name(name: str) -> str:
    """Accept a CheXpert or NIH name (any case, underscores or spaces) and return the vocabulary spelling."""
    key = _key(name)
    for vocab in (CHEXPERT14, NIH14):
        for label in vocab:
            if _key(label) == key:
                return label
    raise KeyError(name)


def nih_to_chexpert(labels: dict[str, float]) -> dict[str, float]:
    """Relabel NIH values (1/0/NaN) into CheXpert 14: a label is 1 if any source is 1, 0 if all are 0, else NaN.

    "No Finding" is 1 when every NIH label is 0 and 0 when any is positive.
    """
    out = {}
    for chx in CHEXPERT14:
        sources = [labels.get(nih, math.nan) for nih in CHEXPERT_TO_NIH[chx]]
        out[chx] = _combine(sources)
    values = [labels.get(nih, math.nan) for nih in NIH14]
    if any(v == 1 for v in values):
        out["No Finding"] = 0.0
    elif values and all(v == 0 for v in values):
        out["No Finding"] = 1.0
    return out


def chexpert_to_nih(labels: dict[str, float]) -> dict[str, float]:
    """Relabel CheXpert values into NIH 14. NIH labels with no CheXpert source are NaN.

    Lung Lesion cannot tell Mass from Nodule, so both get its value; likewise Lung Opacity -> Infiltration.
    """
    return {nih: float(labels.get(chx, math.nan)) if chx else math.nan for nih, chx in NIH_TO_CHEXPERT.items()}


def _combine(values: list[float]) -> float:
    if not values:
        return math.nan
    if any(v == 1 for v in values):
        return 1.0
    if all(v == 0 for v in values):
        return 0.0
    return math.nan


# VinDr-CXR (Nguyen et al., 2022) findings -> the CheXpert label each is evidence for; None = no counterpart.
# The 22 local labels come with boxes; the last 6 are image-level ("global") impressions.
# Choices follow CheXpert's own grouping: interstitial patterns and infiltrates are Lung Opacity, every
# mass-like lesion (nodule, mass, cavity, cyst, tumour) is Lung Lesion, aortic enlargement widens the
# cardiomediastinal silhouette. Emphysema, fibrosis, calcification, COPD and TB have no CheXpert label.
VINDR_TO_CHEXPERT = {
    "Aortic enlargement": "Enlarged Cardiomediastinum",
    "Atelectasis": "Atelectasis",
    "Calcification": None,
    "Cardiomegaly": "Cardiomegaly",
    "Clavicle fracture": "Fracture",
    "Consolidation": "Consolidation",
    "Edema": "Edema",
    "Emphysema": None,
    "Enlarged PA": None,
    "ILD": "Lung Opacity",
    "Infiltration": "Lung Opacity",
    "Lung Opacity": "Lung Opacity",
    "Lung cavity": "Lung Lesion",
    "Lung cyst": "Lung Lesion",
    "Mediastinal shift": None,
    "Nodule/Mass": "Lung Lesion",
    "Other lesion": None,
    "Pleural effusion": "Pleural Effusion",
    "Pleural thickening": "Pleural Other",
    "Pneumothorax": "Pneumothorax",
    "Pulmonary fibrosis": None,
    "Rib fracture": "Fracture",
    "COPD": None,
    "Lung tumor": "Lung Lesion",
    "Pneumonia": "Pneumonia",
    "Tuberculosis": None,
    "Other diseases": None,
    "Other disease": None,
    "No finding": "No Finding",
}
VINDR_LOCAL = tuple(list(VINDR_TO_CHEXPERT)[:22])
