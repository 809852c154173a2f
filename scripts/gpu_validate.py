"""Issue 6 validation on SmolLM2: base eval -> SFT (reflection) -> eval, base -> GRPO -> eval.

    python scripts/gpu_validate.py OUT_DIR [--cpu-smoke] [--model M] [--steps N] ...

On a small ladder (ID 1x1,1x2; OOD 2x2,2x3 by default) it evaluates and calibrates
(p, q1, q2) per task for the base model, the SFT-reflection model and the GRPO model (all
trained from the base), and writes to OUT_DIR:

* `summary.csv`: one row per (model, task): accuracy and p̂, q̂1, q̂2 with CIs, n, truncation;
* `deltas.csv`: per (method, task) the change of p̂, q̂1, q̂2 and accuracy from the base;
* `curves.csv`: the periodic calibration logged during both trainings (step, task, p, q1, q2);
* `run_info.json`: device, wall times per phase, s/step, settings, package versions, and the
  verdict "did GRPO move q2 more than SFT did";
* `eval/<model>/` and `runs/<run>/`: the evaluations and training runs themselves.

`--cpu-smoke` shrinks everything (the cpu-smoke presets, a few held-out problems, short
generations) so that the whole path runs on 2 CPU cores in minutes. Without a GPU and without
--cpu-smoke it stops with a one-line message.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import pandas as pd  # noqa: E402

from realmodel.training.config import SMALL_LADDER, grpo_preset, sft_preset  # noqa: E402

COLUMNS = ["model", "task", "in_distribution", "n", "observed_accuracy",
           "observed_accuracy_ci_low", "observed_accuracy_ci_high", "p_hat", "p_hat_ci_low",
           "p_hat_ci_high", "q1_hat", "q1_hat_ci_low", "q1_hat_ci_high", "q2_hat",
           "q2_hat_ci_low", "q2_hat_ci_high", "predicted_accuracy", "truncated_rate",
           "answerless_rate", "mean_attempts", "mean_tokens"]
COMPONENTS = ("p_hat", "q1_hat", "q2_hat", "observed_accuracy")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out_dir", type=Path)
    ap.add_argument("--cpu-smoke", action="store_true",
                    help="cpu-smoke presets and small sizes: the whole path on the CPU")
    ap.add_argument("--model", default="smollm2-135m", help="base model (default SmolLM2)")
    ap.add_argument("--ladder", default=SMALL_LADDER)
    ap.add_argument("--id-tasks", default="1x1,1x2")
    ap.add_argument("--n-eval", type=int, default=None,
                    help="test problems per task (default 100; cpu-smoke 4)")
    ap.add_argument("--eval-max-new-tokens", type=int, default=None,
                    help="token limit of the evaluations (default 384; cpu-smoke 64)")
    ap.add_argument("--eval-batch-size", type=int, default=None)
    ap.add_argument("--sft-steps", type=int, default=None, help="default: the preset's")
    ap.add_argument("--grpo-steps", type=int, default=None, help="default: the preset's")
    ap.add_argument("--calib-every", type=int, default=None, help="default: the preset's")
    ap.add_argument("--calib-n", type=int, default=None, help="default: the preset's")
    ap.add_argument("--calib-max-new-tokens", type=int, default=None)
    ap.add_argument("--max-completion-length", type=int, default=None,
                    help="GRPO completion tokens (default: the preset's)")
    ap.add_argument("--seed", type=int, default=0)
    return ap.parse_args(argv)


def _settings(args: argparse.Namespace, device: str) -> dict[str, Any]:
    smoke = args.cpu_smoke
    return {
        "preset": "cpu-smoke" if smoke else "smol",
        "device": device,
        "n_eval": args.n_eval or (4 if smoke else 100),
        "eval_max_new_tokens": args.eval_max_new_tokens or (64 if smoke else 384),
        "eval_batch_size": args.eval_batch_size or (16 if smoke else 100),
    }


def _run_overrides(args: argparse.Namespace, s: dict[str, Any], root: Path) -> dict[str, Any]:
    return dict(model=args.model, ladder=args.ladder, id_tasks=args.id_tasks,
                output_root=str(root), seed=args.seed, device=s["device"],
                # the held-out pool does not depend on n_test (tasks.make_splits): the evals
                # and the in-training calibration both ask only held-out problems
                n_test=s["n_eval"], calib_every=args.calib_every,
                calib_n=args.calib_n, calib_max_new_tokens=args.calib_max_new_tokens)


def evaluate_model(model: str, name: str, args: argparse.Namespace, s: dict[str, Any],
                   out: Path) -> pd.DataFrame:
    from realmodel.evaluation import evaluate
    from realmodel.generation import GenerationConfig

    config = GenerationConfig(temperature=1.0, max_new_tokens=s["eval_max_new_tokens"],
                              seed=args.seed, batch_size=s["eval_batch_size"])
    result = evaluate(model, args.ladder, args.id_tasks, n=s["n_eval"], name=name,
                      out_root=out / "eval", config=config, device=s["device"],
                      split_seed=args.seed, progress=False, log=_log)
    table = result.table.copy()
    table.insert(0, "model", name)
    return table


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def deltas(summary: pd.DataFrame) -> pd.DataFrame:
    """Change of each component from the base, per trained model and task."""
    base = summary[summary["model"] == "base"].set_index("task")
    rows = []
    for model, group in summary[summary["model"] != "base"].groupby("model", sort=False):
        for r in group.itertuples():
            row = {"method": model, "task": r.task, "in_distribution": r.in_distribution}
            for c in COMPONENTS:
                row[f"d_{c}"] = getattr(r, c) - base.loc[r.task, c]
            rows.append(row)
    return pd.DataFrame(rows)


def q2_verdict(d: pd.DataFrame) -> dict[str, Any]:
    """Did GRPO move q2 more than SFT did? Mean |Δq̂2| over the tasks where both are defined
    (q̂2 is undefined for a model that made no decision after a wrong candidate)."""
    wide = d.pivot(index="task", columns="method", values="d_q2_hat")
    sft_col = next((c for c in wide.columns if c.startswith("sft")), None)
    if sft_col is None or "grpo" not in wide.columns:
        return {"answer": "undetermined", "reason": "a run is missing"}
    both = wide[[sft_col, "grpo"]].dropna()
    out: dict[str, Any] = {"tasks_compared": list(both.index)}
    if both.empty:
        out.update(answer="undetermined",
                   reason="q2 undefined (no decision after a wrong candidate) in every task")
        return out
    grpo_move, sft_move = both["grpo"].abs().mean(), both[sft_col].abs().mean()
    out.update(mean_abs_dq2_grpo=float(grpo_move), mean_abs_dq2_sft=float(sft_move),
               mean_dq2_grpo=float(both["grpo"].mean()), mean_dq2_sft=float(both[sft_col].mean()),
               answer="yes" if grpo_move > sft_move else "no")
    return out


def curves(runs: dict[str, Path]) -> pd.DataFrame:
    frames = []
    for method, path in runs.items():
        log = path / "calibration.parquet"
        if log.exists():
            frame = pd.read_parquet(log)
            frame.insert(0, "method", method)
            frames.append(frame)
    keep = ["method", "step", "task", "n", "observed_accuracy", "p_hat", "q1_hat", "q2_hat",
            "truncated_rate", "mean_tokens"]
    return pd.concat(frames, ignore_index=True)[keep] if frames else pd.DataFrame(columns=keep)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from realmodel.models import pick_device
    from realmodel.training.grpo import run_grpo
    from realmodel.training.runs import device_name, versions
    from realmodel.training.sft import run_sft

    device = "cpu" if args.cpu_smoke else pick_device("auto")
    if device == "cpu" and not args.cpu_smoke:
        print("error: no CUDA GPU here; run with --cpu-smoke for the CPU path", file=sys.stderr)
        return 2
    s = _settings(args, device)
    out = args.out_dir
    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    start_all = time.time()

    def timed(phase: str, fn: Any, *a: Any, **kw: Any) -> Any:
        _log(f"== {phase}")
        t0 = time.time()
        value = fn(*a, **kw)
        timings[phase] = round(time.time() - t0, 1)
        return value

    common = _run_overrides(args, s, out / "runs")
    sft_cfg = sft_preset(s["preset"], data="reflection", max_steps=args.sft_steps,
                         run_name="sft-reflection", **common)
    grpo_cfg = grpo_preset(s["preset"], max_steps=args.grpo_steps, run_name="grpo",
                           max_completion_length=args.max_completion_length, **common)
    tables = [timed("eval base", evaluate_model, args.model, "base", args, s, out)]
    sft_manifest = timed("train sft-reflection", run_sft, sft_cfg, log=_log)
    tables.append(timed("eval sft-reflection", evaluate_model, sft_manifest["final_model"],
                        "sft-reflection", args, s, out))
    grpo_manifest = timed("train grpo", run_grpo, grpo_cfg, log=_log)
    tables.append(timed("eval grpo", evaluate_model, grpo_manifest["final_model"], "grpo",
                        args, s, out))

    summary = pd.concat(tables, ignore_index=True)
    summary = summary[[c for c in COLUMNS if c in summary.columns]]
    summary.to_csv(out / "summary.csv", index=False, float_format="%.4f")
    d = deltas(summary)
    d.to_csv(out / "deltas.csv", index=False, float_format="%.4f")
    curves({"sft-reflection": Path(sft_manifest["final_model"]).parent,
            "grpo": Path(grpo_manifest["final_model"]).parent}).to_csv(
        out / "curves.csv", index=False, float_format="%.4f")
    verdict = q2_verdict(d)
    info = {
        "device": device, "device_name": device_name(device),
        "wall_time_s": round(time.time() - start_all, 1), "phases_s": timings,
        "sft_s_per_step": sft_manifest["s_per_step"], "sft_steps": sft_manifest["global_step"],
        "grpo_s_per_step": grpo_manifest["s_per_step"],
        "grpo_steps": grpo_manifest["global_step"],
        "settings": {**s, "model": args.model, "ladder": args.ladder,
                     "id_tasks": args.id_tasks, "seed": args.seed},
        "sft_config": sft_cfg.to_dict(), "grpo_config": grpo_cfg.to_dict(),
        "grpo_moved_q2_more_than_sft": verdict, "packages": versions(),
    }
    (out / "run_info.json").write_text(json.dumps(info, indent=2, default=str), encoding="utf-8")
    with pd.option_context("display.width", 200, "display.max_columns", 30):
        print(summary[["model", "task", "n", "observed_accuracy", "p_hat", "q1_hat", "q2_hat",
                       "truncated_rate"]].to_string(index=False, float_format="%.3f"))
    print(f"device {info['device_name']}; wall {info['wall_time_s']} s; phases {timings}")
    print(f"SFT {info['sft_steps']} steps at {info['sft_s_per_step']} s/step; GRPO "
          f"{info['grpo_steps']} steps at {info['grpo_s_per_step']} s/step")
    print(f"GRPO moved q2 more than SFT: {json.dumps(verdict)}")
    print(f"wrote {out}/summary.csv, deltas.csv, curves.csv, run_info.json")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Exception as exc:  # noqa: BLE001 - one line, not a traceback, on the GPU log
        print(f"error: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}",
              file=sys.stderr)
        sys.exit(1)
