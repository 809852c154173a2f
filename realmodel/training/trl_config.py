"""The TRL config a run passes to its trainer (DESIGN.md §5): ``SFTConfig`` / ``GRPOConfig``.

One function builds it from a run config (config.py), for the run itself (sft.py, grpo.py)
and for ``--print-config`` (``preview``), so that what is printed is what trains. Its
keyword arguments, later ones winning:

1. ``RUN_DEFAULTS``: TRL fields the run sets differently from TRL and that have no run-config
   field (no progress bars, checkpoints by steps, completion-only SFT loss, colocated vLLM);
   a ``--config`` file may change them;
2. the fields derived from the run config: the shared names as they are (learning_rate,
   loss_type, lr_scheduler_type, report_to, ...) and the aliases (``max_new_tokens`` ->
   ``max_completion_length``, ``backend`` -> ``use_vllm``, ``device`` -> ``use_cpu``), with
   ``output_dir`` = ``<output_root>/<run_name>/checkpoints``;
3. ``cfg.trl_args``: every other TRL field a ``--config`` file gave (never one of 2.).

TRL and transformers then validate the whole (their ``__post_init__``); a ValueError or an
unknown field becomes a ``TrlConfigError`` with a one-line message. TensorBoard writes under
``<run>/tensorboard`` unless ``TENSORBOARD_LOGGING_DIR`` says otherwise (runs.py).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from core.errors import ExpectedError, one_line
from realmodel.training.config import GRPORunConfig, SFTRunConfig, TrainRunConfig
from realmodel.training.runs import CHECKPOINTS, run_dir

RUN_DEFAULTS: dict[str, dict[str, Any]] = {
    "sft": dict(save_strategy="steps", disable_tqdm=True, dataloader_num_workers=0,
                completion_only_loss=True, packing=False),
    "grpo": dict(save_strategy="steps", disable_tqdm=True, dataloader_num_workers=0,
                 vllm_mode="colocate", log_completions=False),
}


class TrlConfigError(ExpectedError, ValueError):
    """TRL or transformers refused the config (message: one line)."""


def trl_class(method: str) -> type:
    """trl.SFTConfig or trl.GRPOConfig (imports TRL)."""
    import trl

    return {"sft": trl.SFTConfig, "grpo": trl.GRPOConfig}[method]


def trl_kwargs(cfg: TrainRunConfig, out: Path, device: str, use_vllm: bool = False
               ) -> dict[str, Any]:
    """The keyword arguments of the run's TRL config (see the module docstring), for the run
    folder `out` on `device`; `use_vllm` is GRPO's generation backend, resolved (runs.py)."""
    derived: dict[str, Any] = dict(
        output_dir=str(Path(out) / CHECKPOINTS),
        run_name=cfg.name(),  # what trackio / wandb / mlflow call the run
        learning_rate=cfg.learning_rate,
        lr_scheduler_type=cfg.lr_scheduler_type,
        num_train_epochs=cfg.num_train_epochs,
        max_steps=cfg.max_steps,
        per_device_train_batch_size=cfg.per_device_train_batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        optim=cfg.optim,
        weight_decay=cfg.weight_decay,
        # transformers 5: warmup_steps >= 1 counts steps, a float in [0, 1) is a ratio
        warmup_steps=cfg.warmup_steps or cfg.warmup_ratio,
        bf16=cfg.bf16,
        gradient_checkpointing=cfg.gradient_checkpointing,
        save_steps=cfg.save_steps,
        save_total_limit=cfg.save_total_limit,
        logging_steps=cfg.logging_steps,
        report_to=list(cfg.report_to),
        seed=cfg.seed,
        use_cpu=device == "cpu",
    )
    if isinstance(cfg, SFTRunConfig):
        derived.update(max_length=cfg.max_length)
    if isinstance(cfg, GRPORunConfig):
        derived.update(
            num_generations=cfg.num_generations,
            beta=cfg.beta,
            temperature=cfg.temperature,
            max_completion_length=cfg.max_new_tokens,
            steps_per_generation=cfg.steps_per_generation or None,
            num_iterations=cfg.num_iterations,
            epsilon=cfg.epsilon,
            loss_type=cfg.loss_type,
            mask_truncated_completions=cfg.mask_truncated_completions,
            scale_rewards=cfg.scale_rewards,
            use_vllm=use_vllm,
            vllm_gpu_memory_utilization=cfg.vllm_gpu_memory_utilization,
        )
    return {**RUN_DEFAULTS[cfg.METHOD], **derived, **cfg.trl_args}


def build(cfg: TrainRunConfig, out: Path, device: str, use_vllm: bool = False) -> Any:
    """The run's TRL config object, validated by TRL (TrlConfigError: one line)."""
    return _construct(trl_class(cfg.METHOD), trl_kwargs(cfg, out, device, use_vllm))


def _construct(cls: type, kwargs: dict[str, Any], as_cuda_here: bool = False) -> Any:
    name = f"trl.{cls.__name__}"
    try:
        if not as_cuda_here:
            return cls(**kwargs)
        # transformers refuses bf16 without a GPU when it validates: build as on the CPU
        # and set use_cpu back, so that the printed config is the one a GPU run gets
        args = cls(**{**kwargs, "use_cpu": True})
        args.use_cpu = kwargs.get("use_cpu", False)
        return args
    except TypeError as exc:  # an unexpected keyword: a field this TRL version lacks
        raise TrlConfigError(f"{name}: {one_line(exc)}") from None
    except ValueError as exc:
        raise TrlConfigError(f"{name}: {one_line(exc)}") from None


def target_device(cfg: TrainRunConfig) -> str:
    """The device a run of `cfg` trains on: its `device`, with "auto" resolved here (CUDA
    when present, or when bf16 asks for it: then the run needs a GPU machine)."""
    import torch

    if cfg.device != "auto":
        return cfg.device
    return "cuda" if torch.cuda.is_available() or cfg.bf16 else "cpu"


def preview(cfg: TrainRunConfig) -> tuple[Any, str]:
    """(the TRL config a run of `cfg` would pass to its trainer, the device it assumes),
    without loading the model or making the run folder: what `--print-config` prints and
    what the CLI validates before a run starts. A GPU run is built as on a GPU even where
    this machine has none (its bf16 is checked when the run starts, runs.check_can_start)."""
    import torch

    from realmodel.generation import vllm_available

    device = target_device(cfg)
    cuda = device.startswith("cuda")
    vllm = isinstance(cfg, GRPORunConfig) and (
        cfg.backend == "vllm" or (cfg.backend == "auto" and cuda and vllm_available()))
    kwargs = trl_kwargs(cfg, run_dir(cfg), device, vllm)
    args = _construct(trl_class(cfg.METHOD), kwargs,
                      as_cuda_here=not device == "cpu" and not torch.cuda.is_available())
    return args, device


def to_json(args: Any) -> dict[str, Any]:
    """Every field of a TRL config as JSON values (enums as their values, hub tokens hidden:
    `TrainingArguments.to_dict`)."""
    return json.loads(json.dumps(args.to_dict(), default=str))
