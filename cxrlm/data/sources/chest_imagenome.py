"""Chest ImaGenome 1.0.0 (PhysioNet): scene graphs for MIMIC-CXR images - anatomy boxes and findings.

Published layout under --root (unzip silver_dataset/scene_graph.zip in place):
  silver_dataset/scene_graph/<dicom_id>_SceneGraph.json
     image_id, patient_id, study_id, viewpoint, gender,
     objects: [{bbox_name: "right lung", original_x1, original_y1, original_x2, original_y2,
                original_width?, original_height?, x1..y2 (224 px, ignored)}],
     attributes: [{bbox_name, attributes: [["anatomicalfinding|yes|lung opacity", ...], ...], phrases: [...]}]
  files/p10/p10000032/s50414267/<dicom_id>.jpg   MIMIC-CXR-JPG's files/ folder, linked or copied here
`original_*` coordinates are pixels of the full-size MIMIC image; they are rescaled when the stored
JPEG has another size. Findings said "yes" anywhere become 1, "no" everywhere 0, in both the source
vocabulary and, where one exists, the CheXpert label; tubes, lines and devices set Support Devices.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

from cxrlm.data.manifest import ManifestRecord, empty_labels, make_box
from cxrlm.data.sources.common import clip_xyxy, existing_image, read_json, scale_xyxy, view_position
from cxrlm.data.sources.mimic_cxr import study_dir
from cxrlm.errors import InputError

SCENE_GRAPHS = "silver_dataset/scene_graph"
DEVICE_CATEGORIES = ("tubesandlines", "devices")
# Chest ImaGenome finding names -> CheXpert (the CheXpert labeler's mention lists group them this way).
IMAGENOME_TO_CHEXPERT = {
    "lung opacity": "Lung Opacity",
    "airspace opacity": "Lung Opacity",
    "infiltration": "Lung Opacity",
    "interstitial lung disease": "Lung Opacity",
    "increased reticular markings/ild pattern": "Lung Opacity",
    "pleural effusion": "Pleural Effusion",
    "costophrenic angle blunting": "Pleural Effusion",
    "atelectasis": "Atelectasis",
    "linear/patchy atelectasis": "Atelectasis",
    "lobar/segmental collapse": "Atelectasis",
    "enlarged cardiac silhouette": "Cardiomegaly",
    "pulmonary edema/hazy opacity": "Edema",
    "vascular congestion": "Edema",
    "pneumothorax": "Pneumothorax",
    "hydropneumothorax": "Pneumothorax",
    "consolidation": "Consolidation",
    "pneumonia": "Pneumonia",
    "mass/nodule (not otherwise specified)": "Lung Lesion",
    "multiple masses/nodules": "Lung Lesion",
    "lung lesion": "Lung Lesion",
    "cavitation": "Lung Lesion",
    "rib fracture": "Fracture",
    "fracture": "Fracture",
    "mediastinal widening": "Enlarged Cardiomediastinum",
    "superior mediastinal mass/enlargement": "Enlarged Cardiomediastinum",
    "pleural/parenchymal scarring": "Pleural Other",
}


def finding_votes(graph: dict) -> dict[str, int]:
    """Source vocabulary: finding -> 1 if any phrase says yes, else 0. Device mentions key as 'device:<name>'."""
    votes: dict[str, int] = {}
    for region in graph.get("attributes", []):
        for phrase_attributes in region.get("attributes", []):
            for attribute in phrase_attributes:
                category, _, rest = attribute.partition("|")
                answer, _, name = rest.partition("|")
                if category in DEVICE_CATEGORIES:
                    name = f"device:{name}"
                elif category not in ("anatomicalfinding", "disease"):
                    continue
                votes[name] = max(votes.get(name, 0), 1 if answer == "yes" else 0)
    return votes


def chexpert_labels(votes: dict[str, int]) -> dict[str, int | None]:
    labels = empty_labels()
    grouped = defaultdict(list)
    for name, value in votes.items():
        label = "Support Devices" if name.startswith("device:") else IMAGENOME_TO_CHEXPERT.get(name)
        if label:
            grouped[label].append(value)
    for label, values in grouped.items():
        labels[label] = max(values)
    if any(labels[name] == 1 for name in labels if name != "Support Devices"):
        labels["No Finding"] = 0
    return labels


def anatomy_boxes(graph: dict, size: tuple[int, int]) -> list[dict]:
    boxes = []
    for obj in graph.get("objects", []):
        xyxy = [float(obj[f"original_{k}"]) for k in ("x1", "y1", "x2", "y2")]
        if obj.get("original_width") and obj.get("original_height"):
            xyxy = scale_xyxy(xyxy, (float(obj["original_width"]), float(obj["original_height"])), size)
        xyxy = clip_xyxy(xyxy, size)
        if xyxy[2] > xyxy[0] and xyxy[3] > xyxy[1]:
            boxes.append(make_box(obj["bbox_name"], xyxy, "anatomy"))
    return boxes


def records(root: Path) -> Iterator[ManifestRecord]:
    folder = root / SCENE_GRAPHS
    paths = sorted(folder.glob("*_SceneGraph.json"))
    if not paths:
        raise InputError(f"no *_SceneGraph.json under {folder}; unzip silver_dataset/scene_graph.zip there")
    for path in paths:
        graph = read_json(path)
        dicom_id = graph.get("image_id") or path.name.removesuffix("_SceneGraph.json")
        subject, study = str(graph["patient_id"]), str(graph["study_id"])
        found = existing_image(root, f"{study_dir(subject, study)}/{dicom_id}.jpg")
        if found is None:
            continue
        image, size = found
        votes = finding_votes(graph)
        yield ManifestRecord(
            dataset="chest-imagenome",
            study_id=study,
            patient_id=subject,
            image=image,
            view_position=view_position(graph.get("viewpoint")),
            labels=chexpert_labels(votes),
            source_labels=votes,
            boxes=anatomy_boxes(graph, size),
            width=size[0],
            height=size[1],
            extra={"dicom_id": dicom_id, "sex": graph.get("gender")},
        )
