"""Real-model validation of the DS hypothesis on SmolLM2 (DESIGN.md §4, §5): does GRPO move
q2 more than SFT does, in and out of distribution?

    python scripts/gpu_validate.py OUT_DIR [--cpu-smoke] [--model M] [--steps N] ...

Base SmolLM2 never writes a revision marker (q2 undefined), so the design starts from a short
SFT-reflection *warm start* that teaches the W -> RESAMPLE -> C format, then trains two arms
from that one checkpoint with the same number of optimizer steps and the same number of
sequences per step:

* (a) `grpo`: GRPO, correctness reward, beta 0.001 (k3 in the loss), 8 generations per prompt;
* (b) `sft-more`: more SFT-reflection on the same synthesized data.

It evaluates base, warm start, (a) and (b) on the ladder (ID 1x1, 1x2; OOD 2x2, 2x3 by
default), >= 64 held-out problems per task, calibrates (p, q1, q2) with 95 % CIs, logs the
periodic calibration during (a) and (b), and writes to OUT_DIR, each table rewritten after
every phase (a run cut short keeps what it finished):

* `summary.csv`: one row per (model, task): accuracy and p̂, q̂1, q̂2 with CIs, n, truncation;
* `deltas.csv`: per (method, task) the change of p̂, q̂1, q̂2 and accuracy from the model it
  was trained from (warm start from base; both arms from the warm start), with a 95 % CI
  (normal approximation, the two evaluations taken as independent samples: conservative,
  as both answer the same problems);
* `curves.csv`: the periodic calibration logged during (a) and (b) (step, task, p, q1, q2);
* `step_deltas.csv`: from that log, each arm's change from its first calibration to the last
  step both arms reached (same queries, equal optimizer steps);
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
import math
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import pandas as pd  # noqa: E402

from core.calibration import Z95  # noqa: E402
from realmodel.training.config import SMALL_LADDER, grpo_preset, sft_preset  # noqa: E402

COLUMNS = ["model", "task", "in_distribution", "n", "observed_accuracy",
           "observed_accuracy_ci_low", "observed_accuracy_ci_high", "p_hat", "p_hat_ci_low",
           "p_hat_ci_high", "q1_hat", "q1_hat_ci_low", "q1_hat_ci_high", "q2_hat",
           "q2_hat_ci_low", "q2_hat_ci_high", "predicted_accuracy", "truncated_rate",
           "answerless_rate", "mean_attempts", "mean_tokens"]
COMPONENTS = ("p_hat", "q1_hat", "q2_hat", "observed_accuracy")


# Models in evaluation order, and what each was trained from (deltas are taken against it).
MODELS = ("base", "warm", "sft-more", "grpo")
PARENT = {"warm": "base", "sft-more": "warm", "grpo": "warm"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out_dir", type=Path)
    ap.add_argument("--cpu-smoke", action="store_true",
                    help="cpu-smoke presets and small sizes: the whole path on the CPU")
    ap.add_argument("--model", default="smollm2-135m", help="base model (default SmolLM2)")
    ap.add_argument("--ladder", default=SMALL_LADDER)
    ap.add_argument("--id-tasks", default="1x1,1x2")
    ap.add_argument("--n-eval", type=int, default=None,
                    help="test problems per task (default 64; cpu-smoke 4)")
    ap.add_argument("--eval-max-new-tokens", type=int, default=None,
                    help="token limit of the evaluations (default 512; cpu-smoke 64)")
    ap.add_argument("--eval-batch-size", type=int, default=None)
    ap.add_argument("--warm-steps", type=int, default=None,
                    help="SFT-reflection warm-start steps (default 60; cpu-smoke 2)")
    ap.add_argument("--steps", type=int, default=None,
                    help="optimizer steps of each arm, GRPO and more SFT (default 20; "
                         "cpu-smoke 2)")
    ap.add_argument("--sequences-per-step", type=int, default=None,
                    help="completions per optimizer step in both arms (default 64 = 8 "
                         "prompts x 8 generations; cpu-smoke 8)")
    ap.add_argument("--grpo-max-seconds", type=float, default=None,
                    help="wall-clock cap on GRPO's optimisation (default 200; 0 = none)")
    ap.add_argument("--calib-every", type=int, default=None)
    ap.add_argument("--calib-n", type=int, default=None)
    ap.add_argument("--calib-max-new-tokens", type=int, default=None)
    ap.add_argument("--max-new-tokens", type=int, default=None,
                    help="GRPO completion tokens (default 256; cpu-smoke 32)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    for name in ("n_eval", "eval_max_new_tokens", "eval_batch_size", "warm_steps", "steps",
                 "sequences_per_step", "calib_n", "calib_max_new_tokens",
                 "max_new_tokens"):
        value = getattr(args, name)
        if value is not None and value < 1:
            ap.error(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    if args.grpo_max_seconds is not None and not 0 <= args.grpo_max_seconds < math.inf:
        ap.error("--grpo-max-seconds must be >= 0 and finite")
    return args


def _settings(args: argparse.Namespace, device: str) -> dict[str, Any]:
    """Sizes: the GPU defaults (sized to a 15-minute device session, scripts/gpu_validate.sh)
    or the CPU smoke's; explicit options win."""
    smoke = args.cpu_smoke
    default = {
        "preset": "cpu-smoke" if smoke else "smol",
        "n_eval": 4 if smoke else 64,
        "eval_max_new_tokens": 64 if smoke else 512,
        "eval_batch_size": 16 if smoke else 256,
        "warm_steps": 2 if smoke else 60,
        "steps": 2 if smoke else 20,
        "sequences_per_step": 8 if smoke else 64,
        "grpo_max_seconds": 0.0 if smoke else 200.0,
        "calib_every": 1 if smoke else 10,
        "calib_n": 4 if smoke else 32,
        "calib_max_new_tokens": 32 if smoke else 320,
        "max_new_tokens": 32 if smoke else 256,
    }
    chosen = {k: getattr(args, k, None) for k in default}
    return {"device": device, **{k: v if chosen[k] is None else chosen[k]
                                 for k, v in default.items()}}


def run_configs(args: argparse.Namespace, s: dict[str, Any], root: Path,
                warm_model: str) -> dict[str, Any]:
    """The three training runs: warm start (from the base), then both arms from `warm_model`,
    with the same optimizer steps and completions per step."""
    common = dict(ladder=args.ladder, id_tasks=args.id_tasks, output_root=str(root),
                  seed=args.seed, device=s["device"],
                  # the held-out pool does not depend on n_test (tasks.make_splits): the
                  # evaluations and the in-training calibration ask only held-out problems
                  n_test=max(s["n_eval"], s["calib_n"]), calib_every=s["calib_every"],
                  calib_n=s["calib_n"], calib_max_new_tokens=s["calib_max_new_tokens"],
                  calib_batch_size=4 * s["calib_n"])
    arm = dict(common, model=warm_model, max_steps=s["steps"],
               per_device_train_batch_size=s["sequences_per_step"],
               gradient_accumulation_steps=1, save_steps=10**6)
    return {
        "warm": sft_preset(s["preset"], data="reflection", model=args.model,
                           max_steps=s["warm_steps"], run_name="warm-sft-reflection",
                           **dict(common, calib_every=0, save_steps=10**6)),
        "sft-more": sft_preset(s["preset"], data="reflection", run_name="sft-more", **arm),
        "grpo": grpo_preset(s["preset"], run_name="grpo", num_generations=8 if
                            s["sequences_per_step"] % 8 == 0 else 2,
                            max_new_tokens=s["max_new_tokens"],
                            max_train_seconds=s["grpo_max_seconds"], **arm),
    }


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
    _log(f"{name}: " + "; ".join(
        f"{r.task} acc {r.observed_accuracy:.2f} p {r.p_hat:.2f} q1 {r.q1_hat:.2f} "
        f"q2 {r.q2_hat:.2f} trunc {r.truncated_rate:.2f}" for r in table.itertuples()))
    return table


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _se(row: Any, stat: str) -> float:
    """Standard error from a 95 % CI's half width (nan where the CI is undefined)."""
    return (row[f"{stat}_ci_high"] - row[f"{stat}_ci_low"]) / (2 * Z95)


def _delta_columns(row: Any, ref: Any) -> dict[str, float]:
    """d_<stat> = row - ref for each component, with a 95 % CI taking the two as independent
    samples (conservative where both answered the same problems)."""
    out = {}
    for c in COMPONENTS:
        d = row[c] - ref[c]
        half = Z95 * math.hypot(_se(row, c), _se(ref, c))
        out.update({f"d_{c}": d, f"d_{c}_ci_low": d - half, f"d_{c}_ci_high": d + half})
    return out


def deltas(summary: pd.DataFrame) -> pd.DataFrame:
    """Change of each component from the model each one was trained from (`PARENT`), per
    task, with a 95 % CI taking the two evaluations as independent samples."""
    by_model = {m: g.set_index("task") for m, g in summary.groupby("model", sort=False)}
    rows = []
    for model, parent in PARENT.items():
        if model not in by_model or parent not in by_model:
            continue
        ref = by_model[parent]
        for task, r in by_model[model].iterrows():
            b = ref.loc[task]
            row: dict[str, Any] = {"method": model, "from": parent, "task": task,
                                   "in_distribution": r["in_distribution"]}
            rows.append({**row, **_delta_columns(r, b)})
    return pd.DataFrame(rows)


def q2_verdict(d: pd.DataFrame) -> dict[str, Any]:
    """Did GRPO move q2 more than more SFT did, from the same warm start? Per split (ID, OOD):
    mean Δq̂2 of each arm over the tasks where both are defined, and the tasks where the CIs
    of the two arms' Δq̂2 do not overlap (q̂2 is undefined for a model that made no decision
    after a wrong candidate)."""
    arms = d[d["method"].isin(["grpo", "sft-more"])] if not d.empty else d
    if arms.empty or set(arms["method"]) != {"grpo", "sft-more"}:
        return {"answer": "undetermined", "reason": "an arm is missing"}
    out: dict[str, Any] = {}
    for split, ids in (("in_distribution", True), ("out_of_distribution", False)):
        part = arms[arms["in_distribution"] == ids]
        wide = part.pivot(index="task", columns="method", values="d_q2_hat").dropna()
        if wide.empty:
            out[split] = {"answer": "undetermined",
                          "reason": "q2 undefined (no decision after a wrong candidate)"}
            continue
        lo = part.pivot(index="task", columns="method", values="d_q2_hat_ci_low")
        hi = part.pivot(index="task", columns="method", values="d_q2_hat_ci_high")
        separated = [t for t in wide.index
                     if lo.loc[t, "grpo"] > hi.loc[t, "sft-more"]
                     or hi.loc[t, "grpo"] < lo.loc[t, "sft-more"]]
        g, f = wide["grpo"], wide["sft-more"]
        out[split] = {
            "tasks": list(wide.index), "mean_dq2_grpo": float(g.mean()),
            "mean_dq2_sft_more": float(f.mean()), "mean_abs_dq2_grpo": float(g.abs().mean()),
            "mean_abs_dq2_sft_more": float(f.abs().mean()),
            "tasks_where_cis_separate": separated,
            "answer": ("yes" if g.abs().mean() > f.abs().mean()
                       else "no" if g.abs().mean() < f.abs().mean() else "tie"),
        }
    return out


def curves(runs: dict[str, Path]) -> pd.DataFrame:
    frames = []
    for method, path in runs.items():
        log = path / "calibration.parquet"
        if log.exists():
            frame = pd.read_parquet(log)
            frame.insert(0, "method", method)
            frames.append(frame)
    keep = ["method", "step", "task", "in_distribution", "n"] + [
        f"{c}{end}" for c in COMPONENTS for end in ("", "_ci_low", "_ci_high")] + [
        "truncated_rate", "mean_tokens"]
    return pd.concat(frames, ignore_index=True)[keep] if frames else pd.DataFrame(columns=keep)


def step_deltas(curve: pd.DataFrame) -> pd.DataFrame:
    """Change of each component between the first calibration of each arm and the last step
    that every arm reached, on the same held-out calibration queries: the like-for-like
    comparison of the arms at equal optimizer steps (CIs as in `deltas`)."""
    if curve.empty:
        return pd.DataFrame()
    step = int(curve.groupby("method")["step"].max().min())
    rows = []
    for method, g in curve.groupby("method", sort=False):
        first = g[g["step"] == g["step"].min()].set_index("task")
        last = g[g["step"] == step].set_index("task")
        for task, r in last.iterrows():
            b = first.loc[task]
            row: dict[str, Any] = {"method": method, "from_step": int(b["step"]),
                                   "to_step": step, "task": task,
                                   "in_distribution": r["in_distribution"], "n": r["n"]}
            rows.append({**row, **_delta_columns(r, b)})
    return pd.DataFrame(rows)


def write_tables(out: Path, tables: dict[str, pd.DataFrame], run_dirs: dict[str, Path],
                 info: dict[str, Any]) -> dict[str, Any]:
    """(Re)write summary, deltas, curves and run_info from what has finished so far."""
    summary = pd.concat([tables[m] for m in MODELS if m in tables], ignore_index=True)
    summary = summary[[c for c in COLUMNS if c in summary.columns]]
    summary.to_csv(out / "summary.csv", index=False, float_format="%.4f")
    d = deltas(summary)
    d.to_csv(out / "deltas.csv", index=False, float_format="%.4f")
    curve = curves(run_dirs)
    curve.to_csv(out / "curves.csv", index=False, float_format="%.4f")
    step_deltas(curve).to_csv(out / "step_deltas.csv", index=False, float_format="%.4f")
    info["grpo_moved_q2_more_than_sft"] = q2_verdict(d)
    (out / "run_info.json").write_text(json.dumps(info, indent=2, default=str),
                                       encoding="utf-8")
    return {"summary": summary, "deltas": d}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from realmodel.models import pick_device, resolve_model
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
    start_all = time.time()
    timings: dict[str, float] = {}
    tables: dict[str, pd.DataFrame] = {}
    run_dirs: dict[str, Path] = {}
    records: dict[str, dict[str, Any]] = {}  # run records (core.records) of the training runs
    info: dict[str, Any] = {
        "status": "running", "device": device, "device_name": device_name(device),
        "phases_s": timings, "settings": {**s, "model": args.model, "ladder": args.ladder,
                                          "id_tasks": args.id_tasks, "seed": args.seed},
        "packages": versions(),
    }

    def timed(phase: str, fn: Any, *a: Any, **kw: Any) -> Any:
        _log(f"== {phase} (t = {time.time() - start_all:.0f} s)")
        t0 = time.time()
        value = fn(*a, **kw)
        timings[phase] = round(time.time() - t0, 1)
        info["wall_time_s"] = round(time.time() - start_all, 1)
        return value

    def train(name: str, cfg: Any) -> str:
        runner = run_grpo if name == "grpo" else run_sft
        record = timed(f"train {name}", runner, cfg, log=_log)
        records[name] = record
        final = record["results"]["final_model"]
        run_dirs[name] = Path(final).parent
        info["runs"] = {k: {f: r["results"].get(f) for f in (
            "global_step", "s_per_step", "train_time_s", "calibration_time_s",
            "stopped_by_time_budget_at", "train_metrics")}
            | {"wall_time_s": r["wall_time_s"], "config": r["config"]}
            for k, r in records.items()}
        return final

    def evaluate_and_write(model: str, name: str) -> None:
        tables[name] = timed(f"eval {name}", evaluate_model, model, name, args, s, out)
        write_tables(out, tables, {k: v for k, v in run_dirs.items() if k != "warm"}, info)

    # every config is built (and validated) before the first phase; the arms' model is set
    # to the warm start's checkpoint once it exists
    cfgs = run_configs(args, s, out / "runs", warm_model=args.model)
    evaluate_and_write(str(resolve_model(args.model)), "base")
    warm = train("warm", cfgs["warm"])
    evaluate_and_write(warm, "warm")
    cfgs = run_configs(args, s, out / "runs", warm_model=warm)
    # the cheap arm first: a run cut short by the device's time limit still has both arms
    # only if GRPO, the longer one, comes last with its own wall-clock cap
    evaluate_and_write(train("sft-more", cfgs["sft-more"]), "sft-more")
    evaluate_and_write(train("grpo", cfgs["grpo"]), "grpo")
    info["status"] = "done"
    result = write_tables(out, tables, {k: v for k, v in run_dirs.items() if k != "warm"},
                          info)

    summary, verdict = result["summary"], info["grpo_moved_q2_more_than_sft"]
    with pd.option_context("display.width", 200, "display.max_columns", 30):
        print(summary[["model", "task", "n", "observed_accuracy", "p_hat", "q1_hat", "q2_hat",
                       "truncated_rate"]].to_string(index=False, float_format="%.3f"))
        d = result["deltas"]
        print(d[["method", "from", "task", "d_q2_hat", "d_q2_hat_ci_low", "d_q2_hat_ci_high",
                 "d_observed_accuracy"]].to_string(index=False, float_format="%.3f"))
    print(f"device {info['device_name']}; wall {info['wall_time_s']} s; phases {timings}")
    for name, record in records.items():
        res = record["results"]
        print(f"{name}: {res['global_step']} steps at {res['s_per_step']} s/step"
              + (f" (time cap hit at step {res['stopped_by_time_budget_at']})"
                 if res.get("stopped_by_time_budget_at") is not None else ""))
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
