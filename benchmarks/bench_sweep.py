"""The main job's wall time, cold and warm, this tree vs a baseline (DESIGN.md §2-§4).

The main job is `python3 cli.py sweep --lengths 10..1000` (its default grid: 7 objectives x
16 lengths, 16 agents, 150 steps). Each measurement runs it as a fresh subprocess in a
`git archive` export of a commit (no __pycache__, no Numba cache: a fresh clone), from
process start to exit:

  cold  the first run in a new export (every .pyc and every Numba kernel built);
  warm  the next run in the same export (caches in place).

The same is done for a baseline commit (default `main`) in the same run, interleaved, so the
old/new ratio is measured side by side under the same load. Each is repeated; min, median
and max are printed with the targets (warm <= 5 s, cold <= 12 s on 2 cores), plus the sweep's
own "done in" time and the load average (the machine may be shared: figures are noisy).

    python benchmarks/bench_sweep.py [--repeats 3] [--baseline main] [--new HEAD|worktree]

`--new worktree` measures the working tree (tracked and untracked files as they are) rather
than a commit.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
JOB = ["cli.py", "sweep", "--lengths", "10..1000", "--no-progress"]
TARGETS = {"warm": 5.0, "cold": 12.0}


def export(ref: str, dest: Path) -> Path:
    """A clean copy of `ref` (or of the working tree for "worktree") in `dest`."""
    dest.mkdir(parents=True)
    if ref == "worktree":
        files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others",
                                "--exclude-standard"], cwd=REPO, check=True,
                               capture_output=True).stdout.split(b"\0")
        for name in filter(None, files):
            src = REPO / name.decode()
            if src.is_file():
                (dest / name.decode()).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, dest / name.decode())
        return dest
    archive = subprocess.run(["git", "archive", ref], cwd=REPO, check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return dest


def run_job(tree: Path, out: Path, name: str) -> tuple[float, float]:
    """(wall s of the whole process, the sweep's own "done in" s) of one run of the job."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("NUMBA_CACHE_DIR", "PYTHONPATH", "PYTHONDONTWRITEBYTECODE")}
    start = time.perf_counter()
    res = subprocess.run([sys.executable, *JOB, "--out", str(out), "--name", name], cwd=tree,
                         env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if res.returncode != 0:
        raise SystemExit(f"the job failed in {tree}:\n{res.stderr[-2000:]}")
    summary = json.loads(res.stdout.strip().splitlines()[-1])
    if summary["computed"] != 112:
        raise SystemExit(f"expected 112 cells computed, got {summary}")
    return wall, float(summary["wall_s"])


def stats(values: list[float]) -> str:
    return (f"min {min(values):6.2f}  median {statistics.median(values):6.2f}  "
            f"max {max(values):6.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--baseline", default="main", help="commit to compare with ('' = none)")
    ap.add_argument("--new", default="HEAD", help="commit to measure, or 'worktree'")
    ap.add_argument("--cold-runs", type=int, default=None,
                    help="cold runs (fresh exports) of each side [all repeats]; the other "
                         "repeats run warm in the last export")
    args = ap.parse_args()
    cold_runs = args.repeats if args.cold_runs is None else min(args.cold_runs, args.repeats)
    sides = {"new": args.new} | ({"old": args.baseline} if args.baseline else {})
    times: dict[tuple[str, str, str], list[float]] = {}
    loads = [os.getloadavg()[0]]
    with tempfile.TemporaryDirectory(prefix="bench_sweep_") as tmp:
        trees: dict[str, Path] = {}
        for rep in range(args.repeats):
            for side, ref in sides.items():
                phases = ("cold", "warm") if rep < cold_runs else ("warm",)
                if rep < cold_runs:
                    if side in trees:
                        shutil.rmtree(trees[side])
                    trees[side] = export(ref, Path(tmp) / f"{side}{rep}")
                tree = trees[side]
                for phase in phases:
                    wall, inner = run_job(tree, Path(tmp) / "out", f"{side}{rep}{phase}")
                    times.setdefault((side, phase, "wall"), []).append(wall)
                    times.setdefault((side, phase, "inner"), []).append(inner)
                    loads.append(os.getloadavg()[0])
                    print(f"  run {rep + 1} {side:3s} ({ref}) {phase}: {wall:6.2f} s wall, "
                          f"sweep's own {inner:6.2f} s", flush=True)
    print(f"\nmain job: {' '.join(JOB[1:])} (112 cells x 16 agents x 150 steps), "
          f"{os.cpu_count()} cores, {args.repeats} warm and {cold_runs} cold runs each")
    print(f"load average (1 min) during the runs: {stats(loads)} -- a shared machine: "
          "absolute times are noisy, ratios are measured side by side")
    for phase in ("warm", "cold"):
        for side, ref in sides.items():
            wall, inner = times[(side, phase, "wall")], times[(side, phase, "inner")]
            target = (f"  target <= {TARGETS[phase]:g} s: "
                      f"{'met' if min(wall) <= TARGETS[phase] else 'NOT met'} (best run)"
                      if side == "new" else "")
            print(f"{phase} {side} ({ref}): wall {stats(wall)} s; sweep's own "
                  f"{stats(inner)} s{target}")
        if "old" in sides:
            ratio = (statistics.median(times[("old", phase, "wall")])
                     / statistics.median(times[("new", phase, "wall")]))
            inner = (statistics.median(times[("old", phase, "inner")])
                     / statistics.median(times[("new", phase, "inner")]))
            print(f"{phase} old/new (medians): wall {ratio:.2f}x, sweep's own {inner:.2f}x")


if __name__ == "__main__":
    main()
