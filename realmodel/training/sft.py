"""SFT on the synthesized trajectory sets with TRL's SFTTrainer (DESIGN.md §2, §5).

The training set is `realmodel.synthesis.build_sft_dataset` over the ID training problems
("reflection": W -> RESAMPLE -> C -> STOP chains and verified T -> T chains; "no-reflection":
one correct attempt). Each example is a conversational prompt-completion pair (the paper's user
prompt, the synthesized assistant answer): TRL renders both with the model's chat template -
the template `realmodel eval` samples with - and, with `completion_only_loss=True`, the loss
covers the completion tokens only. LoRA (peft) is an option of the run config.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from realmodel.training import runs, trl_config
from realmodel.training.config import SFTRunConfig


def conversational_examples(cfg: SFTRunConfig, train: list[dict[str, Any]]) -> list[dict]:
    """Prompt-completion pairs as chat messages, from the synthesized data set."""
    from realmodel.synthesis import build_sft_dataset

    examples = build_sft_dataset(train, cfg.data, ft_share=cfg.ft_share,
                                 n_reflections=cfg.n_reflections, seed=cfg.seed)
    return [{"prompt": [{"role": "user", "content": ex["prompt"]}],
             "completion": [{"role": "assistant", "content": ex["completion"]}]}
            for ex in examples]


def run_sft(cfg: SFTRunConfig, resume: bool = False,
            log: Callable[[str], None] = print) -> dict[str, Any]:
    """Fine-tune `cfg.model`; returns the run record (`core.records`; runs.py
    lists the files and the record's fields)."""
    from datasets import Dataset
    from trl import SFTTrainer

    out, checkpoint = runs.prepare_run_dir(cfg, resume)
    train, queries = runs.splits(cfg)
    dataset = Dataset.from_list(conversational_examples(cfg, train))
    model, tokenizer, device = runs.load_policy(cfg)
    args = trl_config.build(cfg, out, device)  # completion-only loss: trl_config.RUN_DEFAULTS
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=runs.lora_config(cfg),
        callbacks=runs.callbacks(cfg, out, tokenizer, queries, log),
    )
    runs.attach(trainer, out)
    log(f"SFT {cfg.name()}: {len(dataset)} {cfg.data} examples, model {cfg.model} on "
        f"{device}, {'LoRA' if cfg.use_lora else 'full fine-tuning'}, output {out}")
    return runs.train_and_save(trainer, tokenizer, cfg, out, checkpoint, device)
