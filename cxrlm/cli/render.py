"""Plain-text rendering of a ModelOutput for people; the research-use notice always comes first."""

from cxrlm.types import ModelOutput, Task


def render_text(out: ModelOutput) -> str:
    lines = [f"[{out.disclaimer}]", *([f"[model notice: {out.model_notice}]"] if out.model_notice else []),
             f"model: {out.model}   task: {out.task}"]
    if out.reasoning:
        lines += ["", "Reasoning:", _indent(out.reasoning)]
    if out.task == Task.CLASSIFY:
        lines += ["", "Label probabilities:", f"  ({_calibration_line(out.calibration)})"]
        vocabularies = out.vocabularies  # a name's vocabulary tells NIH "Effusion" from CheXpert "Pleural Effusion"
        lines += [f"  {name:<28} {p:.3f}  {', '.join(vocabularies[name])}"
                  for name, p in sorted(out.probabilities.items(), key=lambda kv: -kv[1])]
    elif out.labels or out.task in (Task.REASON, Task.REPORT):
        names = ", ".join(label.name for label in out.labels) or "(none parsed)"
        lines += ["", f"Labels: {names}"]
    if out.findings:
        lines += ["", "Findings:", _indent(out.findings)]
    if out.impression:
        lines += ["", "Impression:", _indent(out.impression)]
    if out.boxes:
        lines += ["", "Boxes (pixels of the original image):"]
        lines += [f"  {b.label or '-'}: [{', '.join(f'{v:.0f}' for v in b.xyxy)}]"
                  + (f" score {b.score:.2f}" if b.score is not None else "") for b in out.boxes]
    if not (out.reasoning or out.findings or out.labels or out.boxes) and out.raw_text.strip():
        lines += ["", "Raw output:", _indent(out.raw_text.strip())]
    if out.warnings:
        lines += [""] + [f"warning: {w}" for w in out.warnings]
    t = out.timings
    if t.generate_s is not None:
        rate = f", {t.tokens_per_s:.1f} tokens/s" if t.tokens_per_s else ""
        lines += ["", f"({t.generate_s:.2f} s{rate})"]
    return "\n".join(lines)


def _calibration_line(calibration: dict | None) -> str:
    if calibration:
        return f"probabilities: calibrated ({calibration['fitted_on']})"
    return "uncalibrated: raw yes-token likelihoods"


def _indent(text: str) -> str:
    return "\n".join("  " + line for line in text.strip().splitlines())
