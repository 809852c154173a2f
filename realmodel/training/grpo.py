"""GRPO with a correctness reward, TRL's GRPOTrainer (DESIGN.md §2, §5).

Reward: 1.0 when the completion's final answer - parsed by `realmodel.parsing` (the parser the
calibration uses) - equals a * b, else 0.0. Group of `num_generations` (paper: 8) completions
per prompt, group-relative advantages (std scaling unless `scale_rewards="none"`, Dr.GRPO),
KL to the initial policy with coefficient `beta` = 0.001 set explicitly (TRL's default is 0.0,
which drops the reference model): TRL's per-token estimator is k3 = exp(-x) - 1 + x with
x = log pi - log pi_ref, i.e. verl's `low_var_kl`, placed *in the loss* (DESIGN §2). With LoRA
the reference is the base with the adapter disabled; otherwise TRL loads a frozen copy from
the model's path. Generation uses vLLM colocated on the training GPU when `backend` is "vllm",
or "auto" and vLLM is installed with a GPU present; else transformers `generate` (TRL's
`use_vllm`). `max_new_tokens` is TRL's `max_completion_length`. The loss aggregation
(`loss_type`, default "dapo" = verl's token-mean), the LR schedule and the masking of truncated
completions are run-config choices (config.py, docs/trl_vs_verl.md); the whole `GRPOConfig` is
built by trl_config.py, a `--config` file's other TRL fields included.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from realmodel.training import runs, trl_config
from realmodel.training.config import GRPORunConfig


def _text(completion: Any) -> str:
    """A completion as text: a string, or a conversational list of messages."""
    if isinstance(completion, str):
        return completion
    return "".join(m.get("content", "") for m in completion if m.get("role") == "assistant")


def correctness_reward(
    completions: Sequence[Any],
    a: Sequence[int],
    b: Sequence[int],
    task: Sequence[str] | None = None,
    log_metric: Callable[[str, float], None] | None = None,
    **_: Any,
) -> list[float]:
    """TRL reward function: `realmodel.parsing.reward_correct` per completion. The dataset's
    `a`, `b` (and `task`) columns arrive as keyword lists aligned with `completions`; with
    TRL's `log_metric`, the mean reward per task is logged too (`reward/<task>`)."""
    from realmodel.parsing import reward_correct

    rewards = [reward_correct(_text(c), int(x), int(y))
               for c, x, y in zip(completions, a, b, strict=True)]
    if log_metric is not None and task is not None:
        by_task: dict[str, list[float]] = {}
        for name, r in zip(task, rewards, strict=True):
            by_task.setdefault(name, []).append(r)
        for name, values in by_task.items():
            log_metric(f"reward/{name}", sum(values) / len(values))
    return rewards


def prompt_examples(train: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Conversational prompts (rendered by TRL with the model's chat template) + answer columns."""
    return [{"prompt": [{"role": "user", "content": r["prompt"]}], "a": int(r["a"]),
             "b": int(r["b"]), "task": r["task"]} for r in train]


def run_grpo(cfg: GRPORunConfig, resume: bool = False, log: Callable[[str], None] = print,
             reward_funcs: Sequence[Callable[..., list[float]]] = (correctness_reward,),
             ) -> dict[str, Any]:
    """Train `cfg.model` with GRPO; returns the run record (`core.records`; runs.py
    lists the files and the record's fields).

    `reward_funcs` (TRL reward functions, summed) default to the correctness reward; a
    random test model never answers correctly, so its smoke test passes a denser one.
    """
    from datasets import Dataset
    from trl import GRPOTrainer

    out, checkpoint = runs.prepare_run_dir(cfg, resume)
    train, queries = runs.splits(cfg)
    dataset = Dataset.from_list(prompt_examples(train))
    model, tokenizer, device = runs.load_policy(cfg)
    vllm = runs.use_vllm(cfg, device)
    args = trl_config.build(cfg, out, device, use_vllm=vllm)
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=list(reward_funcs),
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=runs.lora_config(cfg),
        callbacks=runs.callbacks(cfg, out, tokenizer, queries, log),
    )
    runs.attach(trainer, out)
    prompts_per_step = (cfg.per_device_train_batch_size * cfg.gradient_accumulation_steps
                        // cfg.num_generations)
    log(f"GRPO {cfg.name()}: {len(dataset)} prompts, {prompts_per_step} prompts x "
        f"{cfg.num_generations} generations per step, beta {cfg.beta}, loss {cfg.loss_type}, "
        f"lr schedule {cfg.lr_scheduler_type}, model {cfg.model} on "
        f"{device}, generation {'vLLM colocated' if vllm else 'transformers'}, "
        f"{'LoRA' if cfg.use_lora else 'full fine-tuning'}, output {out}")
    return runs.train_and_save(trainer, tokenizer, cfg, out, checkpoint, device)
