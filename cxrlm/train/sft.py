"""Supervised fine-tuning of a CXR vision-language model on TRL's SFTTrainer: `main(SFTRecipe) -> output folder`.

Rows are conversations (`messages`) with image paths (`images`); TRL's vision collator applies the chat template
and the processor per batch, masks everything but the assistant's tokens (`assistant_only_loss`) and never
truncates unless `max_length` is set (truncation would cut image tokens). Rows with a `yes_prob` get soft yes/no
answers (cxrlm.train.soft_answers). Full fine-tuning, LoRA or QLoRA. Not here: recipe parsing (config.py) and the
CLI (cxrlm/cli/train.py).
"""

from __future__ import annotations

from pathlib import Path

from cxrlm.errors import ConfigError
from cxrlm.train import build, soft_answers
from cxrlm.train.config import SFTRecipe
from cxrlm.train.data import SFT_COLUMNS, ImageLoadingCollator, read_dataset


def main(recipe: SFTRecipe) -> Path:
    from trl import SFTConfig, SFTTrainer

    train_dataset = read_dataset(recipe.train_file, SFT_COLUMNS, recipe.max_samples)
    eval_dataset = read_dataset(recipe.eval_file, SFT_COLUMNS) if recipe.eval_file else None
    model, processor = build.load_for_training(recipe)
    soft = soft_answers.COLUMN in train_dataset.column_names
    answers = soft_answers.answer_ids(processor.tokenizer) if soft else ()
    try:
        args = SFTConfig(
            **build.trainer_arguments(recipe),
            max_length=recipe.max_length,
            assistant_only_loss=recipe.assistant_only_loss,
            eval_strategy="steps" if eval_dataset is not None else "no",
            eval_steps=recipe.save_steps,
            remove_unused_columns=not soft,  # TRL would drop the yes_prob column before the collator sees it
        )
        trainer = (soft_answers.soft_answer_trainer(SFTTrainer, *answers) if soft else SFTTrainer)(
            model=model,
            args=args,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            processing_class=processor,
            peft_config=build.lora_config(recipe),
            callbacks=[build.progress_callback()],
        )
    except ValueError as err:  # TRL's checks of argument combinations are the user's to fix
        raise ConfigError(f"SFT setup rejected: {str(err).splitlines()[0]}") from None
    trainer.data_collator = ImageLoadingCollator(trainer.data_collator)
    if soft:
        trainer.data_collator = soft_answers.SoftAnswerCollator(trainer.data_collator, *answers)
    build.run_training(trainer, recipe)
    return build.save_checkpoint(trainer, processor, recipe)
