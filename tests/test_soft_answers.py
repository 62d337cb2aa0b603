"""Soft yes/no answers in SFT (cxrlm.train.soft_answers): the loss, the collator, and SFT with them."""

import json
import math

import pytest
import torch
from train_samples import _user, _write, write_png

from cxrlm.errors import InputError
from cxrlm.train import soft_answers

YES, NO = 3, 4


def _labels(rows: list[list[int]]) -> torch.Tensor:
    return torch.tensor(rows)


def test_a_certain_soft_answer_is_the_usual_cross_entropy():
    logits = torch.randn(2, 5, 8)
    labels = _labels([[-100, -100, YES, 7, 2], [-100, -100, -100, NO, 2]])
    hard = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, 8), labels[:, 1:].reshape(-1))
    masked = labels.clone()
    masked[0, 2] = masked[1, 3] = -100
    positions, certain = torch.tensor([2, 3]), torch.tensor([1.0, 0.0])
    assert torch.allclose(soft_answers.soft_answer_loss(logits, masked, positions, certain, YES, NO), hard)
    halfway = soft_answers.soft_answer_loss(logits, masked, positions, torch.tensor([0.5, 0.5]), YES, NO)
    assert not torch.allclose(halfway, hard)


def test_a_soft_answer_is_learned_as_its_probability():
    logits = torch.zeros(1, 3, 8, requires_grad=True)
    optimizer = torch.optim.SGD([logits], lr=1.0)
    for _ in range(300):
        optimizer.zero_grad()
        soft_answers.soft_answer_loss(logits, _labels([[-100] * 3]), torch.tensor([2]), torch.tensor([0.9]), YES, NO).backward()
        optimizer.step()
    probs = logits[0, 1].detach().softmax(-1)
    assert probs[YES] / (probs[YES] + probs[NO]) == pytest.approx(0.9, abs=0.01)  # what `cxrlm classify` reads
    assert probs[YES] + probs[NO] > 0.95  # and the answer is still yes or no


class _Inner:
    def __call__(self, examples):
        return {"labels": _labels([ex["labels"] for ex in examples])}


def test_the_collator_moves_the_first_answer_token_to_the_soft_loss():
    collate = soft_answers.SoftAnswerCollator(_Inner(), YES, NO)
    batch = collate([{"labels": [-100, YES, 1, 2], "yes_prob": 0.25}, {"labels": [-100, -100, NO, 2], "yes_prob": None}])
    assert batch["labels"].tolist() == [[-100, -100, 1, 2], [-100, -100, NO, 2]]
    assert batch["answer_positions"].tolist() == [1, -1]
    assert batch["yes_prob"][0] == 0.25 and math.isnan(batch["yes_prob"][1])
    with pytest.raises(InputError, match="single yes/no question"):
        collate([{"labels": [-100, 7, 2, 2], "yes_prob": 0.5}])


@pytest.mark.slow
def test_sft_trains_on_soft_answers(tiny_checkpoint, tmp_path):
    from cxrlm.train import sft
    from cxrlm.train.config import SFTRecipe

    question = "Is there cardiomegaly on this chest X-ray? Answer yes or no."
    rows = []
    for i in range(4):
        answer = {"role": "assistant", "content": [{"type": "text", "text": "Yes." if i % 2 else "No."}]}
        rows.append({"messages": [_user(question), answer], "images": [write_png(tmp_path / f"{i}.png", i)],
                     "yes_prob": [0.2, 0.7, None, 0.9][i]})
    data = _write(tmp_path / "soft.jsonl", rows)
    out = sft.main(SFTRecipe(model=str(tiny_checkpoint), train_file=str(data), output_dir=str(tmp_path / "run"),
                             max_steps=2, per_device_train_batch_size=1, gradient_accumulation_steps=2,
                             learning_rate=1e-3, save_steps=1))
    (state,) = sorted(out.glob("checkpoint-2/trainer_state.json"))
    losses = [h["loss"] for h in json.loads(state.read_text())["log_history"] if "loss" in h]
    assert len(losses) == 2 and all(math.isfinite(v) and v > 0 for v in losses)


@pytest.mark.slow
@pytest.mark.parametrize("workers", [0, 1])
def test_a_soft_row_that_is_not_a_yes_no_answer_is_a_one_line_error(tiny_checkpoint, tmp_path, capsys, workers):
    import cxrlm.cli

    rows = [{"messages": [_user("Is there cardiomegaly on this chest X-ray? Answer yes or no."),
                          {"role": "assistant", "content": [{"type": "text", "text": "Maybe."}]}],
             "images": [write_png(tmp_path / f"{i}.png", i)], "yes_prob": 0.5} for i in range(2)]
    data = _write(tmp_path / "bad.jsonl", rows)
    code = cxrlm.cli.main(["train", "sft", f"model={tiny_checkpoint}", f"train_file={data}",
                           f"output_dir={tmp_path / 'run'}", "max_steps=1", f"dataloader_num_workers={workers}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err == ["error: a row with a yes_prob must be a single yes/no question answered 'Yes.' or 'No.'"]
