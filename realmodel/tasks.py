"""Multiplication tasks, the paper's prompt, and reproducible train/test splits (DESIGN.md §5).

A task `AxB` multiplies an A-digit by a B-digit number, operands uniform in
`[10^(n-1), 10^n - 1]`. The ladder is ordered by difficulty; training uses the in-distribution
(ID) tasks only (DESIGN §1, "Generalisation across tasks").
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

DEFAULT_LADDER = "1x1,1x2,2x2,2x3,3x3,3x4,4x4"
DEFAULT_ID = "1x1,1x2"
PROMPT_TEMPLATE = "Calculate {a} * {b}. Think step by step."

_TASK_RE = re.compile(r"^\s*(\d+)\s*[xX]\s*(\d+)\s*$")
MAX_DIGITS = 18  # keeps operands inside int64 for numpy sampling


@dataclass(frozen=True)
class MultiplicationTask:
    """`digits_a`-digit times `digits_b`-digit multiplication (DESIGN §5)."""

    digits_a: int
    digits_b: int

    def __post_init__(self) -> None:
        for d in (self.digits_a, self.digits_b):
            if not 1 <= int(d) <= MAX_DIGITS:
                raise ValueError(f"task digits must be in 1..{MAX_DIGITS}, got {d}")

    @property
    def name(self) -> str:
        return f"{self.digits_a}x{self.digits_b}"

    @property
    def difficulty(self) -> int:
        """Difficulty coordinate d(t) = total digits (DESIGN §1)."""
        return self.digits_a + self.digits_b

    @staticmethod
    def _uniform(rng: np.random.Generator, digits: int, n: int) -> np.ndarray:
        return rng.integers(10 ** (digits - 1), 10**digits, size=n, dtype=np.int64)

    def sample(self, rng: np.random.Generator, n: int) -> list[tuple[int, int]]:
        """`n` operand pairs, each operand uniform over its digit range."""
        a = self._uniform(rng, self.digits_a, n)
        b = self._uniform(rng, self.digits_b, n)
        return [(int(x), int(y)) for x, y in zip(a, b, strict=True)]

    def n_problems(self) -> int:
        """Number of distinct (a, b) pairs of this task."""
        return 9 * 10 ** (self.digits_a - 1) * 9 * 10 ** (self.digits_b - 1)


def parse_ladder(spec: str | Sequence[str]) -> list[MultiplicationTask]:
    """`"1x1,1x2,2x2"` -> tasks, in the given order; raises ValueError on a bad spec."""
    parts = spec.split(",") if isinstance(spec, str) else list(spec)
    parts = [p.strip() for p in parts if p.strip()]
    if not parts:
        raise ValueError(f"empty task ladder {spec!r}; expected e.g. '1x1,1x2,2x2'")
    tasks, seen = [], set()
    for part in parts:
        m = _TASK_RE.match(part)
        if not m:
            raise ValueError(f"bad task {part!r} in ladder {spec!r}; expected AxB, e.g. '2x3'")
        task = MultiplicationTask(int(m.group(1)), int(m.group(2)))
        if task.name in seen:
            raise ValueError(f"task {task.name} appears twice in ladder {spec!r}")
        seen.add(task.name)
        tasks.append(task)
    return tasks


def build_prompt(a: int, b: int) -> str:
    """The paper's user prompt (DESIGN §5)."""
    return PROMPT_TEMPLATE.format(a=a, b=b)


def chat_messages(a: int, b: int) -> list[dict[str, str]]:
    """The prompt as a one-turn chat, for `tokenizer.apply_chat_template`."""
    return [{"role": "user", "content": build_prompt(a, b)}]


def make_record(task: MultiplicationTask | str, a: int, b: int) -> dict[str, Any]:
    name = task.name if isinstance(task, MultiplicationTask) else str(task)
    return {"task": name, "a": int(a), "b": int(b), "answer": int(a) * int(b),
            "prompt": build_prompt(a, b)}


HELD_OUT_POOL = 1000  # an ID task holds out at most this many problems (and at most half)
SPLIT_RULE = "v2-fixed-pool"  # bump when the split rule changes (recorded in run manifests)
_CHUNK = 64  # fixed draw size, so a stream never depends on how much of it is used


def _task_rng(task: MultiplicationTask, seed: int, stream: int) -> np.random.Generator:
    """A generator of its own per (seed, task, stream): a task's problems do not depend on
    the other tasks of the ladder."""
    return np.random.default_rng([int(seed), task.digits_a, task.digits_b, stream])


def _distinct_stream(task: MultiplicationTask, seed: int, n: int) -> list[tuple[int, int]]:
    """The first `n` distinct problems of the task's held-out stream (n <= n_problems):
    the same sequence whatever `n`, so a shorter one is a prefix of a longer one."""
    rng = _task_rng(task, seed, 0)
    out: list[tuple[int, int]] = []
    seen: set[tuple[int, int]] = set()
    while len(out) < n:
        for pair in task.sample(rng, _CHUNK):
            if pair not in seen:
                seen.add(pair)
                out.append(pair)
                if len(out) == n:
                    break
    return out


def held_out_pool_size(task: MultiplicationTask, in_distribution: bool) -> int:
    """Size of the task's held-out pool: min(HELD_OUT_POOL, half of its problems) for an ID
    task (training never draws from it), all of its problems for an OOD task."""
    n = task.n_problems()
    return min(HELD_OUT_POOL, n // 2) if in_distribution else n


def held_out_pool(task: MultiplicationTask, in_distribution: bool,
                  seed: int = 0) -> list[tuple[int, int]]:
    """The ID task's held-out pool: the first `held_out_pool_size` problems of its stream."""
    return _distinct_stream(task, seed, held_out_pool_size(task, in_distribution))


def held_out_problems(task: MultiplicationTask, in_distribution: bool, n: int,
                  seed: int = 0) -> list[tuple[int, int]]:
    """The task's first `n` test problems: the pool's problems in stream order (distinct),
    then, past the pool's size (tiny tasks: 1x1 has 81 problems, an ID 1x1 holds out 40),
    uniform draws with replacement from the pool. A prefix of the list for any larger `n`."""
    size = held_out_pool_size(task, in_distribution)
    pairs = _distinct_stream(task, seed, min(n, size))
    if n > size:
        rng = _task_rng(task, seed, 1)
        extra: list[int] = []
        while len(extra) < n - size:
            extra.extend(int(i) for i in rng.integers(0, size, _CHUNK))
        pairs += [pairs[i] for i in extra[: n - size]]
    return pairs


def split_spec(
    ladder: str | Sequence[MultiplicationTask],
    id_tasks: str | Sequence[MultiplicationTask] = DEFAULT_ID,
    seed: int = 0,
) -> dict[str, Any]:
    """What fixes the held-out problems (recorded beside a trained model): two runs whose
    specs agree on `id_tasks`, `seed` and `rule` hold out the same problems per task."""
    ladder_t = parse_ladder(ladder) if isinstance(ladder, str) else list(ladder)
    id_t = parse_ladder(id_tasks) if isinstance(id_tasks, str) else list(id_tasks)
    return {"ladder": [t.name for t in ladder_t], "id_tasks": sorted(t.name for t in id_t),
            "seed": int(seed), "rule": SPLIT_RULE, "held_out_pool": HELD_OUT_POOL}


def same_held_out(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """True if two `split_spec`s hold out the same problems (the ladder does not matter)."""
    keys = ("id_tasks", "seed", "rule", "held_out_pool")
    return all(a.get(k) == b.get(k) for k in keys)


def make_splits(
    ladder: str | Sequence[MultiplicationTask],
    id_tasks: str | Sequence[MultiplicationTask] = DEFAULT_ID,
    n_train: int = 20000,
    n_test: int = 100,
    seed: int = 0,
) -> dict[str, list[dict[str, Any]]]:
    """Train (`n_train`, balanced over the ID tasks) and test (`n_test` per ladder task) splits.

    Each task has a fixed held-out pool that does not depend on `n_test` (nor on the other
    tasks): the first `held_out_pool_size` distinct problems of a stream seeded by (seed,
    task) - for an ID task min(1000, half its problems), for an OOD task all of them. The
    test problems are `held_out_problems(task, n_test)`: the pool in stream order, then (past its
    size, e.g. 1x1 with 81 problems of which an ID 1x1 holds out 40) uniform draws with
    replacement from the pool. So the test set for a smaller `n_test` is a prefix of the one
    for a larger, and `realmodel eval --n m` never asks a training problem whatever m.
    Training draws are uniform with replacement outside the ID tasks' pools. Deterministic
    for a seed (DESIGN §5); `split_spec` describes the rule for run manifests.
    """
    ladder_t = parse_ladder(ladder) if isinstance(ladder, str) else list(ladder)
    id_t = parse_ladder(id_tasks) if isinstance(id_tasks, str) else list(id_tasks)
    names = {t.name for t in ladder_t}
    missing = [t.name for t in id_t if t.name not in names]
    if missing:
        raise ValueError(f"ID tasks {missing} are not on the ladder {sorted(names)}")
    if n_train < 0 or n_test < 0:
        raise ValueError("n_train and n_test must be >= 0")
    id_names = {t.name for t in id_t}
    test: list[dict[str, Any]] = []
    for task in ladder_t:
        pairs = held_out_problems(task, task.name in id_names, n_test, seed)
        test.extend(make_record(task, a, b) for a, b in pairs)
    train: list[dict[str, Any]] = []
    if n_train and id_t:
        rng = np.random.default_rng([int(seed), 0, 0, 2])
        shares = [n_train // len(id_t) + (i < n_train % len(id_t)) for i in range(len(id_t))]
        for task, share in zip(id_t, shares, strict=True):
            pool = set(held_out_pool(task, True, seed))
            pairs: list[tuple[int, int]] = []
            while len(pairs) < share:
                for pair in task.sample(rng, max(16, 2 * (share - len(pairs)))):
                    if pair not in pool:
                        pairs.append(pair)
                        if len(pairs) == share:
                            break
            train.extend(make_record(task, a, b) for a, b in pairs)
        order = rng.permutation(len(train))
        train = [train[i] for i in order]
    return {"train": train, "test": test}


def write_records(records: Sequence[dict[str, Any]], path: Path) -> None:
    """JSONL (one record a line); a `.parquet` twin is written beside it via pandas."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as fh:
        for rec in records:
            fh.write(json.dumps(rec) + "\n")
    import pandas as pd

    pd.DataFrame(list(records)).to_parquet(path.with_suffix(".parquet"), index=False)


def write_splits(splits: dict[str, list[dict[str, Any]]], out_dir: str | Path) -> list[Path]:
    """`<out_dir>/<split>.jsonl` and `<split>.parquet` per split; returns the JSONL paths."""
    out_dir = Path(out_dir)
    paths = []
    for split, records in splits.items():
        path = out_dir / f"{split}.jsonl"
        write_records(records, path)
        paths.append(path)
    return paths


def load_records(path: str | Path) -> list[dict[str, Any]]:
    """Records from a `.jsonl` or `.parquet` file written by `write_records`."""
    path = Path(path)
    if path.suffix == ".parquet":
        import pandas as pd

        df = pd.read_parquet(path)
        return [{k: (int(v) if k in ("a", "b", "answer") else v) for k, v in row.items()}
                for row in df.to_dict("records")]
    with path.open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def load_splits(out_dir: str | Path, fmt: str = "jsonl") -> dict[str, list[dict[str, Any]]]:
    """Inverse of `write_splits` (`fmt` = "jsonl" or "parquet")."""
    out_dir = Path(out_dir)
    files = sorted(out_dir.glob(f"*.{fmt}"))
    if not files:
        raise FileNotFoundError(f"no *.{fmt} splits in {out_dir}")
    return {f.stem: load_records(f) for f in files}
