"""Real-model training (DESIGN.md §2, §5): SFT and GRPO with TRL, periodic calibration of p, q1, q2.

config.py       frozen run configs (SFTRunConfig, GRPORunConfig) and the presets
checks.py       their validation helpers, the TRL names the run sets itself
config_file.py  `--config FILE`: run-config and TRL fields, preset < file < options
trl_config.py   the final SFTConfig / GRPOConfig of a run (and of `--print-config`)
runs.py         what both runs share: folders, splits, model, callbacks, run record
sft.py          SFT on the synthesized sets (TRL SFTTrainer, completion-only loss, LoRA option)
grpo.py         GRPO on a correctness reward (TRL GRPOTrainer, beta 0.001, vLLM colocated)
callbacks.py    periodic calibration (logged through the trainer too) and Parquet logs
commands.py     `realmodel sft`, `realmodel grpo`

torch / transformers / trl are imported inside functions: importing this package is cheap.
docs/trl_vs_verl.md compares the GRPO settings with verl's, the paper's trainer.
"""
