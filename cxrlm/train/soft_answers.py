"""Soft yes/no answers in SFT: a row's yes/no answer is learned as a probability, not as 0 or 1.

A row opts in with a `yes_prob` column (P(yes) for its single yes/no question, null elsewhere): the loss on its
first answer token is then the cross-entropy against the two-token distribution P("Yes") = p, P("No") = 1 - p
over the whole vocabulary, so the row says how likely the finding is on this image, not only which answer wins
(distillation from a teacher's probabilities, e.g. cxrlm-tiny's label probes on its own tower, cxrlm_tiny.probes).
`cxrlm.train.sft` switches to `SoftAnswerCollator` and `soft_answer_trainer` when the training file has the column.
Not here: where the probabilities come from.
"""

from __future__ import annotations

import math

from cxrlm.errors import InputError

COLUMN = "yes_prob"


class SoftAnswerCollator:
    """Wraps an SFT collator for rows with a `yes_prob`: the first answer token ("Yes"/"No") leaves the 0/1 loss
    (its label becomes -100) and its position and probability go into the batch for `soft_answer_trainer`."""

    def __init__(self, inner, yes_id: int, no_id: int):
        self.inner, self.yes_id, self.no_id = inner, yes_id, no_id

    def __call__(self, examples: list[dict]):
        import torch

        soft = [ex.pop(COLUMN, None) for ex in examples]
        batch = self.inner(examples)
        labels = batch["labels"]
        positions = torch.full((len(examples),), -1)
        for i, p in enumerate(soft):
            if p is None or (isinstance(p, float) and math.isnan(p)):
                continue
            answer = int((labels[i] != -100).nonzero()[0])
            if int(labels[i, answer]) not in (self.yes_id, self.no_id):
                raise InputError("a row with a yes_prob must be a single yes/no question answered 'Yes.' or 'No.'")
            labels[i, answer], positions[i] = -100, answer
        batch["answer_positions"] = positions
        batch[COLUMN] = torch.tensor([p if p is not None else math.nan for p in soft], dtype=torch.float32)
        return batch


def soft_answer_loss(logits, labels, positions, yes_prob, yes_id: int, no_id: int):
    """Mean over supervised tokens of: the usual next-token cross-entropy, and at each soft row's answer token
    -(p log P(Yes) + (1 - p) log P(No)) over the whole vocabulary."""
    import torch

    logp = torch.log_softmax(logits[:, :-1].float(), -1)
    targets = labels[:, 1:]
    mask = targets != -100
    hard = -logp.gather(-1, targets.clamp_min(0).unsqueeze(-1)).squeeze(-1)[mask].sum()
    rows = (positions >= 0).nonzero().squeeze(-1)
    at = logp[rows, positions[rows] - 1]  # logp[:, t - 1] predicts labels[:, t]
    p = yes_prob[rows].to(at.dtype)
    soft = -(p * at[:, yes_id] + (1 - p) * at[:, no_id]).sum()
    return (hard + soft) / (mask.sum() + len(rows)).clamp_min(1)


def soft_answer_trainer(base, yes_id: int, no_id: int):
    """`base` (TRL's SFTTrainer) with `soft_answer_loss` as its loss."""

    class SoftAnswerTrainer(base):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            positions, yes_prob = inputs.pop("answer_positions"), inputs.pop(COLUMN)
            labels = inputs.pop("labels")
            outputs = model(**inputs, use_cache=False)
            loss = soft_answer_loss(outputs.logits, labels, positions, yes_prob, yes_id, no_id)
            if self.model_accepts_loss_kwargs and num_items_in_batch is not None:
                loss = loss / self.current_gradient_accumulation_steps  # Trainer then leaves accumulation to the loss
            return (loss, outputs) if return_outputs else loss

    return SoftAnswerTrainer


def answer_ids(tokenizer) -> tuple[int, int]:
    """The first tokens of the answers "Yes." and "No."."""
    return tokenizer.encode("Yes.", add_special_tokens=False)[0], tokenizer.encode("No.", add_special_tokens=False)[0]
