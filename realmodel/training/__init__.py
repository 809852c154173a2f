"""Real-model training (DESIGN.md §2, §5): SFT and GRPO with TRL, periodic calibration of p, q1, q2.

config.py     frozen run configs (SFTRunConfig, GRPORunConfig) and the presets
runs.py       what both runs share: folders, splits, model, TRL arguments, run record
sft.py        SFT on the synthesized sets (TRL SFTTrainer, completion-only loss, LoRA option)
grpo.py       GRPO on a correctness reward (TRL GRPOTrainer, beta 0.001, vLLM colocated)
callbacks.py  periodic calibration and Parquet logs (TrainerCallbacks)
commands.py   `realmodel sft`, `realmodel grpo`

torch / transformers / trl are imported inside functions: importing this package is cheap.
"""
