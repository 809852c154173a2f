"""Tasks, splits and SFT synthesis (realmodel/tasks.py, realmodel/synthesis.py; DESIGN.md §5)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from realmodel.commands import realmodel
from realmodel.parsing import RESAMPLE, STOP, parse_response
from realmodel.synthesis import build_sft_dataset, no_reflection_example, reflection_example
from realmodel.tasks import (
    DEFAULT_ID,
    DEFAULT_LADDER,
    MultiplicationTask,
    build_prompt,
    chat_messages,
    load_records,
    load_splits,
    make_splits,
    parse_ladder,
    write_splits,
)


def test_task_sampling_ranges() -> None:
    task = MultiplicationTask(2, 3)
    assert task.name == "2x3"
    pairs = task.sample(np.random.default_rng(0), 2000)
    a = np.array([p[0] for p in pairs])
    b = np.array([p[1] for p in pairs])
    assert a.min() >= 10 and a.max() <= 99 and b.min() >= 100 and b.max() <= 999
    assert a.min() < 15 and a.max() > 94  # covers the range


def test_parse_ladder() -> None:
    assert [t.name for t in parse_ladder(DEFAULT_LADDER)] == DEFAULT_LADDER.split(",")
    assert [t.name for t in parse_ladder(" 1x1 , 2X3 ")] == ["1x1", "2x3"]
    for bad in ("", "1x", "x2", "1*2", "1x1,1x1", "0x2", "a,b"):
        with pytest.raises(ValueError):
            parse_ladder(bad)


def test_prompt() -> None:
    assert build_prompt(12, 34) == "Calculate 12 * 34. Think step by step."
    content = "Calculate 1 * 2. Think step by step."
    assert chat_messages(1, 2) == [{"role": "user", "content": content}]


def test_splits_balanced_disjoint_deterministic() -> None:
    s1 = make_splits(DEFAULT_LADDER, DEFAULT_ID, n_train=2001, n_test=100, seed=3)
    s2 = make_splits(DEFAULT_LADDER, DEFAULT_ID, n_train=2001, n_test=100, seed=3)
    assert s1 == s2
    assert s1 != make_splits(DEFAULT_LADDER, DEFAULT_ID, n_train=2001, n_test=100, seed=4)
    train, test = s1["train"], s1["test"]
    assert Counter(r["task"] for r in train) == {"1x1": 1001, "1x2": 1000}
    assert Counter(r["task"] for r in test) == {t: 100 for t in DEFAULT_LADDER.split(",")}
    assert not {(r["a"], r["b"]) for r in train} & {(r["a"], r["b"]) for r in test}
    for r in train + test:
        assert r["answer"] == r["a"] * r["b"] and r["prompt"] == build_prompt(r["a"], r["b"])
        assert set(r) == {"task", "a", "b", "answer", "prompt"}
    # Distinct test problems where the task is big enough.
    big = [r for r in test if r["task"] == "2x2"]
    assert len({(r["a"], r["b"]) for r in big}) == 100


@pytest.mark.parametrize("n_test, n", [(100, 30), (100, 200), (4, 100), (30, 1), (100, 100)])
def test_eval_queries_never_training_problems(n_test: int, n: int) -> None:
    """`realmodel eval --n n` holds out what a run with `n_test` held out (DESIGN.md §5):
    the test draws do not depend on n_test (when they did, 13/30 1x1 eval queries were
    training problems)."""
    ladder, ids = "1x1,1x2,2x2", "1x1,1x2"
    train = make_splits(ladder, ids, n_train=4000, n_test=n_test, seed=1)["train"]
    seen = {(r["a"], r["b"]) for r in train}
    queries = make_splits(ladder, ids, n_train=0, n_test=n, seed=1)["test"]
    assert Counter(r["task"] for r in queries) == {"1x1": n, "1x2": n, "2x2": n}
    assert not [r for r in queries if (r["a"], r["b"]) in seen]


def test_test_split_is_a_prefix_whatever_n() -> None:
    def per_task(n: int) -> dict[str, list[tuple[int, int]]]:
        out: dict[str, list[tuple[int, int]]] = {}
        for r in make_splits("1x1,1x2,2x2", "1x1,1x2", n_train=0, n_test=n, seed=2)["test"]:
            out.setdefault(r["task"], []).append((r["a"], r["b"]))
        return out

    small, large = per_task(30), per_task(300)
    for task, pairs in small.items():
        assert large[task][:30] == pairs
    # The ID 1x1 holds out 40 of its 81 problems: all 40 once, then draws from them.
    assert len(set(large["1x1"][:40])) == 40 and set(large["1x1"]) == set(large["1x1"][:40])
    # A task's problems do not depend on the rest of the ladder; training not on n_test.
    alone = make_splits("2x2", [], n_train=0, n_test=30, seed=2)["test"]
    assert [(r["a"], r["b"]) for r in alone] == small["2x2"]
    assert (make_splits("1x1,1x2", "1x1,1x2", n_train=50, n_test=5, seed=2)["train"]
            == make_splits("1x1,1x2", "1x1,1x2", n_train=50, n_test=80, seed=2)["train"])


def test_splits_reject_unknown_id_task() -> None:
    with pytest.raises(ValueError, match="not on the ladder"):
        make_splits("2x2,3x3", "1x1")


def test_write_and_load_splits(tmp_path: Path) -> None:
    splits = make_splits("1x1,1x2,2x2", "1x1,1x2", n_train=50, n_test=5, seed=0)
    write_splits(splits, tmp_path)
    assert (tmp_path / "train.parquet").exists() and (tmp_path / "test.jsonl").exists()
    assert load_splits(tmp_path) == splits
    assert load_splits(tmp_path, fmt="parquet") == splits
    assert load_records(tmp_path / "test.parquet") == splits["test"]


# ---- synthesis ----------------------------------------------------------------------------
LADDER = parse_ladder(DEFAULT_LADDER + ",2x1,1x4,5x5")


@pytest.mark.parametrize("ft, k", [(True, 1), (True, 2), (True, 3), (False, 0), (False, 1),
                                   (False, 2)])
def test_reflection_round_trip(ft: bool, k: int) -> None:
    rng = np.random.default_rng(k + 10 * ft)
    for task in LADDER:
        for a, b in task.sample(rng, 60):
            text, built = reflection_example(a, b, rng, ft=ft, n_reflections=k)
            parsed = parse_response(text, a, b)
            assert list(parsed.attempts) == built, text
            assert len(built) == k + 1
            assert built[0].correct is (not ft)
            assert all(att.correct for att in built[1:])
            assert [att.decision for att in built] == [RESAMPLE] * k + [STOP]
            assert parsed.correct and parsed.final_answer == a * b


def test_no_reflection_round_trip() -> None:
    rng = np.random.default_rng(0)
    for task in LADDER:
        for a, b in task.sample(rng, 200):
            text = no_reflection_example(a, b, rng)
            parsed = parse_response(text, a, b)
            assert len(parsed.attempts) == 1 and parsed.correct, text
            assert parsed.attempts[0].decision == STOP


def test_ft_needs_a_reflection() -> None:
    with pytest.raises(ValueError):
        reflection_example(2, 3, np.random.default_rng(0), ft=True, n_reflections=0)


def test_build_sft_dataset() -> None:
    records = make_splits("1x1,1x2,2x2", "1x1,1x2", n_train=400, n_test=5, seed=0)["train"]
    refl = build_sft_dataset(records, "reflection", ft_share=0.5, n_reflections=1, seed=1)
    assert refl == build_sft_dataset(records, "reflection", ft_share=0.5, n_reflections=1,
                                     seed=1)
    assert len(refl) == len(records)
    assert set(refl[0]) == {"prompt", "completion", "task", "a", "b"}
    first_wrong = [not parse_response(r["completion"], r["a"], r["b"]).attempts[0].correct
                   for r in refl]
    assert 0.4 < np.mean(first_wrong) < 0.6  # F->T share
    assert all(parse_response(r["completion"], r["a"], r["b"]).correct for r in refl)
    all_ft = build_sft_dataset(records, "reflection", ft_share=1.0, seed=2)
    assert all(len(parse_response(r["completion"], r["a"], r["b"]).attempts) == 2
               and not parse_response(r["completion"], r["a"], r["b"]).attempts[0].correct
               for r in all_ft)
    plain = build_sft_dataset(records, "no-reflection", seed=0)
    assert all(len(parse_response(r["completion"], r["a"], r["b"]).attempts) == 1
               for r in plain)
    assert plain[0]["prompt"] == build_prompt(plain[0]["a"], plain[0]["b"])
    with pytest.raises(ValueError):
        build_sft_dataset(records, "other")


def test_cli_data(tmp_path: Path) -> None:
    res = CliRunner().invoke(realmodel, ["data", "--ladder", "1x1,1x2,2x2", "--n-train", "40",
                                         "--n-test", "3", "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    for name in ("train", "test", "sft_reflection", "sft_no_reflection"):
        assert (tmp_path / f"{name}.jsonl").exists() and (tmp_path / f"{name}.parquet").exists()
    assert len(load_records(tmp_path / "sft_reflection.jsonl")) == 40


def test_cli_bad_ladder_is_one_line() -> None:
    res = CliRunner().invoke(realmodel, ["data", "--ladder", "1x1,zz"])
    assert res.exit_code == 2
    assert not isinstance(res.exception, ValueError)  # a usage error, no traceback
    assert res.output.strip().splitlines()[-1] == (
        "Error: Invalid value for '--ladder': bad task 'zz' in ladder '1x1,zz'; "
        "expected AxB, e.g. '2x3'")
    for cmd in ("data", "eval"):
        res = CliRunner().invoke(realmodel, [cmd, "--ladder", "1x1,2x2", "--id-tasks", "1x2"])
        assert res.exit_code == 2
        assert res.output.strip().splitlines()[-1] == (
            "Error: Invalid value for '--id-tasks': 1x2 not on --ladder '1x1,2x2'")
