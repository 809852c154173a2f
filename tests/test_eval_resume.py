"""Interrupted `realmodel eval` runs lose and change nothing (realmodel/evaluation.py,
realmodel/generation.py; DESIGN.md §5: one sample per query at temperature 1.0).

* a resumed run samples exactly what an uninterrupted run with the same seed samples;
* responses.jsonl and manifest.json are replaced atomically, never truncated in place;
* a failed run leaves its manifest marked, not "running", and a folder it created and filled
  with nothing is removed.
"""

from __future__ import annotations

import json
import re
import shutil
import types
from pathlib import Path
from typing import Any

import pytest

from core.records import MANIFEST, read_record
from realmodel import responses
from realmodel.evaluation import RESPONSES, evaluate, read_responses
from realmodel.generation import GenerationConfig, GenerationResult

LADDER = "1x1,1x2"
QUIET: dict[str, Any] = {"progress": False, "log": lambda m: None}


@pytest.fixture(scope="module")
def tiny() -> tuple[Any, Any]:
    pytest.importorskip("transformers")
    from realmodel.models import tiny_random_model

    return tiny_random_model(seed=0)


def _config(batch_size: int = 2, samples: int = 2) -> GenerationConfig:
    return GenerationConfig(temperature=1.0, max_new_tokens=8, samples_per_prompt=samples,
                            batch_size=batch_size, seed=11)


def _texts(path: Path) -> dict[tuple[str, int], str]:
    rows = read_responses(path)
    assert len({(r["id"], r["sample"]) for r in rows}) == len(rows)
    return {(r["id"], r["sample"]): r["response"] for r in rows}


class StopAfter:
    """Delegates to a real generator and raises after `batches` calls (an interruption)."""

    def __init__(self, inner: Any, batches: int, exc: BaseException) -> None:
        self.inner, self.batches, self.exc = inner, batches, exc
        self.config, self.backend = inner.config, inner.backend

    def generate(self, prompts: list[str], **kwargs: Any) -> list[GenerationResult]:
        if self.batches <= 0:
            raise self.exc
        self.batches -= 1
        return self.inner.generate(prompts, **kwargs)


# ---- 5. a resumed run samples what an uninterrupted one samples ------------------------------
def test_resumed_eval_matches_an_uninterrupted_run(tmp_path: Path, tiny: Any) -> None:
    from realmodel.generation import TransformersGenerator

    config = _config()
    full = evaluate(tiny, LADDER, "1x1", n=3, name="full", out_root=tmp_path, config=config,
                    **QUIET)
    assert full.n_generated == 6
    expected = _texts(tmp_path / "full" / RESPONSES)
    assert len(expected) == 12 and len(set(expected.values())) > 1  # sampled, not constant
    # Interrupted after its first batch (a new process would start a new generator)...
    cut = StopAfter(TransformersGenerator(*tiny, config), 1, KeyboardInterrupt("stop"))
    with pytest.raises(KeyboardInterrupt):
        evaluate(tiny, LADDER, "1x1", n=3, name="cut", out_root=tmp_path, config=config,
                 generator=cut, **QUIET)
    assert len(read_responses(tmp_path / "cut" / RESPONSES)) == 4
    # ... then resumed: the same responses, query by query.
    resumed = evaluate(tiny, LADDER, "1x1", n=3, name="cut", out_root=tmp_path, config=config,
                       **QUIET)
    assert resumed.n_generated == 4
    assert _texts(tmp_path / "cut" / RESPONSES) == expected


def test_resume_mid_batch_with_another_batch_size(tmp_path: Path, tiny: Any) -> None:
    """Batch composition does not matter: a run cut after 3 of 6 queries and resumed with
    batch size 4 (not part of the run key) samples what batch size 2 sampled."""
    evaluate(tiny, LADDER, "1x1", n=3, name="full", out_root=tmp_path, config=_config(),
             **QUIET)
    expected = _texts(tmp_path / "full" / RESPONSES)
    shutil.copytree(tmp_path / "full", tmp_path / "cut")
    path = tmp_path / "cut" / RESPONSES
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:6]))  # queries 1-3 of 6, i.e. half of the second batch
    res = evaluate(tiny, LADDER, "1x1", n=3, name="cut", out_root=tmp_path,
                   config=_config(batch_size=4), **QUIET)
    assert res.n_generated == 3
    assert _texts(path) == expected


def test_generator_samples_by_key_not_by_batch(tiny: Any) -> None:
    from realmodel.generation import TransformersGenerator

    prompts = [f"Calculate {a} * 7. Think step by step." for a in (2, 3, 4)]
    keys = ["1x1/0", "1x1/1", "1x1/2"]
    together = TransformersGenerator(*tiny, _config(batch_size=3)).generate(prompts, keys=keys)
    alone = [TransformersGenerator(*tiny, _config(batch_size=3)).generate([p], keys=[k])
             for p, k in zip(prompts, keys, strict=True)]
    assert [r.text for r in together] == [r.text for pair in alone for r in pair]
    reordered = TransformersGenerator(*tiny, _config(batch_size=2)).generate(
        prompts[::-1], keys=keys[::-1])
    assert [r.text for r in reordered] == [r.text for pair in alone[::-1] for r in pair]
    # The key, not the prompt, picks the randomness: one prompt under two keys differs.
    twice = TransformersGenerator(*tiny, _config(samples=1)).generate(
        [prompts[0]] * 2, keys=["x/0", "x/1"])
    assert twice[0].text != twice[1].text


# ---- 6. atomic rewrites ----------------------------------------------------------------------
class _Scripted:
    backend = "scripted"

    def __init__(self, config: GenerationConfig, fail_at: int | None = None,
                 exc: BaseException | None = None) -> None:
        self.config, self.fail_at, self.calls = config, fail_at, 0
        self.exc = exc or RuntimeError("CUDA error: an illegal memory access\nsecond line")

    def generate(self, prompts: list[str]) -> list[GenerationResult]:
        if self.fail_at is not None and self.calls >= self.fail_at:
            raise self.exc
        self.calls += 1
        out = []
        for p in prompts:
            a, b = map(int, re.findall(r"\d+", p))
            out += [GenerationResult(f"So {a} * {b} = {a * b}.", 9, False)] * \
                self.config.samples_per_prompt
        return out


def _run(tmp_path: Path, gen: Any, name: str = "r") -> Any:
    return evaluate("scripted", LADDER, "1x1", n=4, name=name, out_root=tmp_path,
                    config=gen.config, generator=gen, **QUIET)


def test_responses_rewrite_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = GenerationConfig(batch_size=2)
    _run(tmp_path, _Scripted(config))
    path = tmp_path / "r" / RESPONSES
    before = path.read_text()
    assert len(before.splitlines()) == 8

    calls = {"n": 0}

    def dumps(obj: Any, *args: Any, **kwargs: Any) -> str:
        calls["n"] += 1
        if calls["n"] == 3:  # a crash while the kept rows are being rewritten
            raise OSError("No space left on device")
        return json.dumps(obj, *args, **kwargs)

    fake = types.SimpleNamespace(dumps=dumps, loads=json.loads,
                                 JSONDecodeError=json.JSONDecodeError)
    monkeypatch.setattr(responses, "json", fake)
    with pytest.raises(OSError, match="No space left"):
        _run(tmp_path, _Scripted(config))
    monkeypatch.undo()
    assert path.read_text() == before  # not truncated to the two rows written before it
    assert sorted(p.name for p in path.parent.iterdir() if p.name.startswith(".")) == []
    record = read_record(tmp_path / "r")
    assert record["status"] == "failed" and "No space left" in record["error"]
    assert _run(tmp_path, _Scripted(config)).n_generated == 0  # resumes from the intact file


def test_manifest_write_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = GenerationConfig(batch_size=2)
    _run(tmp_path, _Scripted(config))
    manifest_path = tmp_path / "r" / MANIFEST
    done = json.loads(manifest_path.read_text())
    real_write_text = Path.write_text

    def half_write_text(self: Path, data: str, *args: Any, **kwargs: Any) -> int:
        if MANIFEST in self.name:  # the disk fills up halfway through the manifest
            real_write_text(self, data[: len(data) // 2], *args, **kwargs)
            raise OSError("No space left on device")
        return real_write_text(self, data, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", half_write_text)
    with pytest.raises(OSError, match="No space left"):
        _run(tmp_path, _Scripted(config))
    monkeypatch.undo()
    assert json.loads(manifest_path.read_text()) == done  # the old manifest, whole
    assert [p.name for p in manifest_path.parent.iterdir() if p.name.startswith(".")] == []


# ---- 7. leftovers of a failed run -------------------------------------------------------------
def test_failed_eval_marks_its_manifest(tmp_path: Path) -> None:
    config = GenerationConfig(batch_size=2)
    with pytest.raises(RuntimeError, match="illegal memory access"):
        _run(tmp_path, _Scripted(config, fail_at=1))
    record = read_record(tmp_path / "r")
    assert record["status"] == "failed"
    assert record["error"] == "RuntimeError: CUDA error: an illegal memory access"
    assert record["results"]["n_generated_this_run"] == 2
    assert len(read_responses(tmp_path / "r" / RESPONSES)) == 2  # the first batch is kept
    res = _run(tmp_path, _Scripted(config))
    assert res.n_generated == 6
    record = read_record(tmp_path / "r")
    assert record["status"] == "done" and record["error"] is None
    assert [s["status"] for s in record["results"]["previous_sessions"]] == ["failed"]


def test_interrupted_eval_is_marked_interrupted(tmp_path: Path) -> None:
    config = GenerationConfig(batch_size=2)
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path, _Scripted(config, fail_at=2, exc=KeyboardInterrupt()))
    record = read_record(tmp_path / "r")
    assert record["status"] == "interrupted" and record["error"].startswith("KeyboardInterrupt")


@pytest.mark.parametrize("exc", [RuntimeError("out of memory"), KeyboardInterrupt()])
def test_failed_eval_removes_the_empty_folder_it_created(tmp_path: Path,
                                                         exc: BaseException) -> None:
    config = GenerationConfig(batch_size=2)
    root = tmp_path / "outputs" / "real"  # created by the run, like its own folder
    with pytest.raises(type(exc)):
        evaluate("scripted", LADDER, "1x1", n=4, name="r", out_root=root, config=config,
                 generator=_Scripted(config, fail_at=0, exc=exc), **QUIET)
    assert list(tmp_path.iterdir()) == []


def test_failed_eval_keeps_a_folder_it_did_not_create(tmp_path: Path) -> None:
    config = GenerationConfig(batch_size=2)
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "notes.txt").write_text("mine")
    with pytest.raises(RuntimeError):
        _run(tmp_path, _Scripted(config, fail_at=0))
    assert (tmp_path / "r" / "notes.txt").read_text() == "mine"
    assert read_record(tmp_path / "r")["status"] == "failed"


def test_eval_survives_an_over_long_number(tmp_path: Path) -> None:
    """A response with a 5,000-digit number (past Python's int <-> str limit) is stored and
    calibrated as a wrong answer, not a crash (realmodel/parsing.py, MAX_INT_DIGITS)."""
    config = GenerationConfig(batch_size=2)

    class Degenerate(_Scripted):
        def generate(self, prompts: list[str]) -> list[GenerationResult]:
            return [GenerationResult("The answer is " + "9" * 5000, 4096, False)
                    for _ in prompts]

    res = _run(tmp_path, Degenerate(config))
    rows = read_responses(tmp_path / "r" / RESPONSES)
    assert len(rows) == 8 and all(r["parse"]["final_answer"] == "9" * 5000 for r in rows)
    assert (res.table["observed_accuracy"] == 0.0).all() and (res.table["p_hat"] == 0.0).all()
