"""Pure scoring functions: lists in, floats or dicts out. No model, no file I/O, no torch.

text (BLEU, ROUGE-L, CIDEr-D, METEOR), labels (AUROC, F1, CE-F1), boxes (IoU, AP/mAP, soft F1), vqa (answer
accuracy), bootstrap (confidence intervals, paired tests), model_based (optional radeval metrics).
Training rewards call these too, so they must stay cheap and side-effect free.
"""
