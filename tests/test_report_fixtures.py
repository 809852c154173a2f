"""Synthetic inputs in the output contracts of sweep / train / realmodel (for report tests).

Every folder carries a run record (core.records) as its writer will: a sweep's config is its
grid (the layout of sim.sweep.GridConfig.to_dict, the fields the report reads), a train run's
its TrainConfig, an eval's the run key with the model. `write_train` runs the real `train`
job and records it only where sim.training_run does not yet write a record itself.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd

from core.records import RecordError, finish_record, read_record, start_record

TASKS = ("T1", "T2", "T3")


def write_sweep(root: Path, name: str = "demo") -> Path:
    """outputs/sweeps/<name>/results.parquet + manifest.json, 3 agents per cell."""
    rng = np.random.default_rng(0)
    rows = []
    cells = [("surrogate", "RL"), ("kl", "KL only"), ("sft", "SFT (reflection)")]
    for objective, regime in cells:
        for tm in ("per-token", "sequence"):
            for length in (10.0, 100.0, 1000.0):
                for agent in range(3):
                    scale = length if objective == "kl" and tm == "per-token" else 2.0
                    row = {"cell_id": f"{objective}/{tm}/{length:g}", "objective": objective,
                           "regime": regime, "beta": 0.001, "token_model": tm,
                           "optimiser": "sgd", "length": length, "agent": agent,
                           "seed": agent, "steps": 10,
                           "ratio": scale * (1 + 0.1 * rng.standard_normal())}
                    for i, t in enumerate(TASKS):
                        p = float(np.clip(0.8 - 0.3 * i + 0.05 * rng.standard_normal(), 0, 1))
                        row |= {f"p[{t}]": p, f"q1[{t}]": 0.9, f"q2[{t}]": 0.3,
                                f"acc[{t}]": p}
                    rows.append(row)
    run = root / "sweeps" / name
    run.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_parquet(run / "results.parquet")
    grid = {"lengths": [10, 100, 1000], "objectives": ["surrogate", "kl", "sft"],
            "betas": [0.001], "token_models": ["per-token", "sequence"], "optimisers": ["sgd"],
            "seed": 0,
            "training": {"steps": 10, "n_agents": 3, "max_attempts": 8,
                         "kl_placement": "in-loss", "kl_estimator": "k3"},
            "ladder": {"names": list(TASKS), "difficulty": [1.0, 2.0, 3.0],
                       "in_distribution": [True, False, False],
                       "length_scales": [1.0, 3.0, 3.0]}}
    start_record(run, "sweep", grid)
    finish_record(run, cells_computed=len(cells) * 6)
    return run


def write_train(root: Path, name: str = "demo") -> Path:
    """outputs/train/<name>/ written by the real `train` job (sim.training_run), two agents."""
    from sim.training_run import TrainConfig, train_and_write

    cfg = TrainConfig(objective="surrogate+kl", beta=0.01, length=10.0, steps=8, n_agents=2,
                      n_queries=4, ref_update_every=4)
    run, _ = train_and_write(cfg, name, root / "train", progress=False)
    try:
        read_record(run)
    except RecordError:  # sim.training_run still writes its old manifest
        start_record(run, "train", asdict(cfg))
        finish_record(run)
    return run


def write_real(root: Path) -> Path:
    """outputs/real/<run>/calibration.csv in realmodel.evaluation's layout: base and grpo."""
    stats = ("observed_accuracy", "p_hat", "p_pooled", "q1_hat", "q2_hat",
             "predicted_accuracy", "echo_p_ft")
    real = root / "real"
    for run, accs in (("base-smol", (0.7, 0.3, 0.05)), ("grpo-smol", (0.9, 0.6, 0.2))):
        rows = []
        for t, a, ident in zip(("1x1", "1x2", "2x2"), accs, (True, True, False), strict=True):
            row = {"task": t, "n": 100, "in_distribution": ident}
            for s in stats:
                v = {"q1_hat": 0.9, "q2_hat": 0.2, "echo_p_ft": 0.1}.get(s, a)
                row |= {s: v, f"{s}_ci_low": max(v - 0.08, 0), f"{s}_ci_high": min(v + 0.08, 1)}
            rows.append(row)
        d = real / run
        d.mkdir(parents=True, exist_ok=True)
        pd.DataFrame(rows).to_csv(d / "calibration.csv", index=False)
        start_record(d, "eval", {"model": "smollm2-135m", "tasks": ["1x1", "1x2", "2x2"],
                                 "id_tasks": ["1x1", "1x2"], "n": 100})
        finish_record(d)
    return real
