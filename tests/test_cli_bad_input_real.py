"""Bad input to the `realmodel` commands (parse, data, eval, sft, grpo) ends in one
`Error: ...` line naming the option and a non-zero exit, before anything is generated or
trained, and leaves no new folder behind (DESIGN.md §5: every run is a validated config).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from realmodel.commands import realmodel
from realmodel.training.config import grpo_preset, sft_preset
from tests.conftest import REPO, assert_clean_cli_error

BAD_UTF8 = b"caf\xe9 \xff\xfe 2 * 3 = 6\n"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> str:
    from realmodel_fixtures import save_tiny_checkpoint

    return str(save_tiny_checkpoint(tmp_path_factory))


def _invoke(args: list[str], stdin: bytes | str | None = None):
    return CliRunner().invoke(realmodel, args, input=stdin)


def _error(res, *words: str) -> str:
    """The clean one-line error of `res`, which names each of `words`."""
    assert_clean_cli_error(res)
    lines = [line for line in res.output.splitlines() if line.startswith("Error")]
    assert len(lines) == 1, res.output
    assert res.output.rstrip().splitlines()[-1] == lines[0], res.output  # it ends the output
    for word in words:
        assert word in lines[0], res.output
    return lines[0]


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


# ---- parse -------------------------------------------------------------------------------
def test_parse_refuses_a_non_utf8_input_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.txt"
    bad.write_bytes(BAD_UTF8)
    _error(_invoke(["parse", "--a", "2", "--b", "3", "--input", str(bad)]), "--input", "UTF-8")


def test_parse_refuses_a_non_utf8_markers_file(tmp_path: Path) -> None:
    bad, ok = tmp_path / "bad.txt", tmp_path / "ok.txt"
    bad.write_bytes(BAD_UTF8)
    ok.write_text("2 * 3 = 6\n", encoding="utf-8")
    res = _invoke(["parse", "--a", "2", "--b", "3", "--input", str(ok), "--markers", str(bad)])
    _error(res, "--markers", "UTF-8")


def test_parse_refuses_binary_stdin() -> None:
    _error(_invoke(["parse", "--a", "2", "--b", "3"], BAD_UTF8), "stdin", "UTF-8")


def test_parse_refuses_binary_stdin_in_a_real_process() -> None:
    """A real interpreter decodes stdin with surrogateescape under a C/UTF-8 locale, so the
    check must read bytes: the same error as in CliRunner, not exit 0."""
    env = {**os.environ, "LC_ALL": "C.UTF-8"}
    proc = subprocess.run([sys.executable, str(REPO / "cli.py"), "realmodel", "parse", "--a",
                           "2", "--b", "3"], input=BAD_UTF8, capture_output=True, env=env,
                          cwd=REPO, timeout=120)
    assert proc.returncode != 0, proc.stdout
    err = proc.stderr.decode().strip().splitlines()
    assert err and err[-1].startswith("Error:") and "stdin" in err[-1], proc.stderr
    assert b"Traceback" not in proc.stderr


def test_parse_utf8_stdin_still_parses() -> None:
    res = _invoke(["parse", "--a", "2", "--b", "3"], b"2 * 3 = 6\n")
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["correct"] is True


@pytest.mark.parametrize("option", ["--a", "--b"])
def test_parse_refuses_negative_operands(option: str) -> None:
    """The parser reads non-negative products only (DESIGN §5 tasks): -2 * 3 would silently
    parse to 'no answer'."""
    args = {"--a": "2", "--b": "3", option: "-2"}
    res = _invoke(["parse", *[x for kv in args.items() for x in kv]], "2 * 3 = 6")
    _error(res, option)


# ---- data --------------------------------------------------------------------------------
_DATA = ["data", "--n-train", "4", "--n-test", "2", "--ladder", "1x1,1x2", "--id-tasks", "1x1"]


def test_data_out_under_a_regular_file(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("x")
    res = _invoke([*_DATA, "--out", str(tmp_path / "afile" / "sub")])
    _error(res, "--out")
    assert (tmp_path / "afile").read_text() == "x"


def _sys_is_writable() -> bool:
    """/sys refuses new folders even to root (the unwritable path of these tests)."""
    probe = Path("/sys/ds-study-test")
    try:
        probe.mkdir()
    except OSError:
        return False
    probe.rmdir()  # pragma: no cover
    return True  # pragma: no cover


def test_data_out_unwritable() -> None:
    if _sys_is_writable():  # pragma: no cover
        pytest.skip("/sys is writable here")
    _error(_invoke([*_DATA, "--out", "/sys/ds-study-test/data"]), "--out")


def test_data_write_failure_leaves_no_folder(cwd: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A write that fails half-way (a full disk, here the second file) removes what the
    command created and names --out."""
    import errno

    from realmodel import tasks

    real, calls = tasks.write_records, []

    def full_disk(records: list, path: Path) -> None:
        calls.append(path)
        if len(calls) > 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(records, path)

    monkeypatch.setattr(tasks, "write_records", full_disk)
    _error(_invoke([*_DATA, "--out", "a/b/d"]), "--out", "No space left")
    assert len(calls) == 2 and _tree(cwd) == set()


def test_data_out_empty_is_refused(cwd: Path) -> None:
    _error(_invoke([*_DATA, "--out", ""]), "--out")
    assert _tree(cwd) == set()


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_data_ft_share_must_be_finite(cwd: Path, value: str) -> None:
    _error(_invoke([*_DATA, "--ft-share", value, "--out", "d"]), "--ft-share")
    assert _tree(cwd) == set()


def test_data_seed_message_names_the_option(cwd: Path) -> None:
    _error(_invoke([*_DATA, "--seed", "-1", "--out", "d"]), "--seed")
    assert _tree(cwd) == set()


def test_data_still_writes(cwd: Path) -> None:
    res = _invoke([*_DATA, "--out", "d"])
    assert res.exit_code == 0, res.output
    assert (cwd / "d" / "sft_reflection.jsonl").exists()


# ---- eval (every case fails before the model is loaded or anything is generated) ---------
def _eval(tiny: str, *extra: str) -> list[str]:
    return ["eval", "--model", tiny, "--ladder", "1x1", "--id-tasks", "1x1", "--n", "1",
            "--max-new-tokens", "2", "--n-boot", "1", "--quiet", *extra]


def test_eval_device_lists_the_choices(tiny: str, cwd: Path) -> None:
    line = _error(_invoke(_eval(tiny, "--device", "bogus")), "--device")
    for choice in ("auto", "cpu", "cuda"):
        assert choice in line
    assert _tree(cwd) == set()


@pytest.mark.parametrize("option,value", [("--temperature", "nan"), ("--temperature", "inf"),
                                          ("--top-p", "nan"), ("--top-p", "0"),
                                          ("--seed", "-1"), ("--split-seed", "-1")])
def test_eval_refuses_nonsense_numbers(tiny: str, cwd: Path, option: str, value: str) -> None:
    _error(_invoke(_eval(tiny, option, value)), option)
    assert _tree(cwd) == set()


def _name(name: str, cwd: Path) -> str:
    """The name "ABS" stands for an absolute path in the test's folder (never under "/")."""
    return str(cwd.parent / "abs") if name == "ABS" else name


@pytest.mark.parametrize("name", ["../x", "a/b", "..", ".", "", "ABS"])
def test_eval_name_is_one_path_component(tiny: str, cwd: Path, name: str) -> None:
    _error(_invoke(_eval(tiny, "--name", _name(name, cwd), "--out", "out")), "--name")
    assert _tree(cwd) == set()
    assert not (cwd.parent / "x").exists() and not (cwd.parent / "abs").exists()


def test_eval_markers_must_be_utf8(tiny: str, cwd: Path, tmp_path: Path) -> None:
    bad = tmp_path / "markers.txt"
    bad.write_bytes(BAD_UTF8)
    _error(_invoke(_eval(tiny, "--markers", str(bad))), "--markers", "UTF-8")
    assert _tree(cwd) == set()


def test_eval_out_under_a_regular_file(tiny: str, tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("x")
    _error(_invoke(_eval(tiny, "--out", str(tmp_path / "afile" / "sub"))), "--out")


def test_eval_out_unwritable(tiny: str) -> None:
    if _sys_is_writable():  # pragma: no cover
        pytest.skip("/sys is writable here")
    _error(_invoke(_eval(tiny, "--out", "/sys/ds-study-test")), "--out")


# ---- sft / grpo: run configs -------------------------------------------------------------
@pytest.mark.parametrize("field,value", [
    ("learning_rate", math.inf), ("learning_rate", math.nan), ("num_train_epochs", math.inf),
    ("num_train_epochs", math.nan), ("weight_decay", math.nan), ("weight_decay", math.inf),
    ("calib_temperature", math.nan), ("calib_temperature", math.inf),
    ("optim", "bogus_optim"), ("run_name", "../x"), ("run_name", "a/b"), ("run_name", ".."),
    ("output_root", ""), ("seed", 2**32),
])
def test_run_configs_refuse_nonsense(field: str, value: object) -> None:
    # max_steps > 0 makes the epochs irrelevant to the step count, but inf stays nonsense
    for build in (sft_preset, grpo_preset):
        with pytest.raises(ValueError, match=field):
            build("cpu-smoke", **{field: value})


@pytest.mark.parametrize("field,value", [("beta", math.nan), ("beta", math.inf),
                                         ("temperature", math.nan), ("temperature", math.inf),
                                         ("epsilon", math.nan), ("epsilon", math.inf)])
def test_grpo_config_refuses_non_finite(field: str, value: float) -> None:
    with pytest.raises(ValueError, match=field):
        grpo_preset("cpu-smoke", **{field: value})


def test_valid_optimiser_names_pass() -> None:
    assert sft_preset("cpu-smoke", optim="sgd").optim == "sgd"
    assert grpo_preset("cpu-smoke", optim="adafactor").optim == "adafactor"


_SMOKE = ["--preset", "cpu-smoke", "--ladder", "1x1,1x2", "--id-tasks", "1x1", "--n-train",
          "8", "--n-test", "4", "--calib-n", "2", "--max-steps", "1",
          "--calib-max-new-tokens", "4"]


def _train(method: str, tiny: str, *extra: str) -> list[str]:
    return [method, *_SMOKE, "--model", tiny, *extra]


@pytest.mark.parametrize("method,option,value", [
    ("sft", "--epochs", "inf"), ("sft", "--epochs", "nan"), ("sft", "--lr", "inf"),
    ("sft", "--lr", "nan"), ("sft", "--optim", "bogus_optim"), ("sft", "--ft-share", "nan"),
    ("grpo", "--beta", "nan"), ("grpo", "--beta", "inf"), ("grpo", "--temperature", "nan"),
    ("grpo", "--temperature", "inf"), ("grpo", "--lr", "inf"), ("grpo", "--optim", "bogus"),
    ("sft", "--seed", "-1"), ("sft", "--batch-size", "0"), ("sft", "--lora-r", "0"),
    ("grpo", "--num-generations", "1"), ("sft", "--calib-n", "100"),
    ("sft", "--seed", str(2**32)), ("grpo", "--seed", "99999999999999999999999"),
])
def test_train_commands_refuse_nonsense_naming_the_option(tiny: str, cwd: Path, method: str,
                                                          option: str, value: str) -> None:
    _error(_invoke(_train(method, tiny, option, value)), option)
    assert _tree(cwd) == set()


def test_train_optim_error_lists_transformers_names(tiny: str, cwd: Path) -> None:
    line = _error(_invoke(_train("sft", tiny, "--optim", "bogus_optim")), "--optim")
    assert "adamw_torch" in line and "sgd" in line


def test_grpo_batch_multiple_names_the_options(tiny: str, cwd: Path) -> None:
    _error(_invoke(_train("grpo", tiny, "--batch-size", "3")), "--batch-size",
           "--num-generations")


def test_print_config_refuses_nonsense_too(tiny: str, cwd: Path) -> None:
    _error(_invoke(_train("grpo", tiny, "--lr", "inf", "--print-config")), "--lr")


@pytest.mark.parametrize("method", ["sft", "grpo"])
@pytest.mark.parametrize("name", ["../x", "a/b", "..", ".", "", "ABS"])
def test_run_name_is_one_path_component(tiny: str, cwd: Path, method: str, name: str) -> None:
    _error(_invoke(_train(method, tiny, "--name", _name(name, cwd), "--out", "out")),
           "--name")
    assert _tree(cwd) == set()
    assert not (cwd.parent / "x").exists() and not (cwd.parent / "abs").exists()


@pytest.mark.parametrize("method", ["sft", "grpo"])
@pytest.mark.parametrize("extra,words", [
    (["--bf16"], ["bf16"]),
    (["--model", "/nonexistent/model"], ["/nonexistent/model"]),
    (["--device", "cuda"], ["cuda"]),
])
def test_failed_start_leaves_no_folder(tiny: str, cwd: Path, method: str, extra: list[str],
                                       words: list[str]) -> None:
    if "cuda" in extra:
        pytest.importorskip("torch")
        import torch

        if torch.cuda.is_available():  # pragma: no cover - a GPU machine
            pytest.skip("a CUDA GPU is present")
    _error(_invoke(_train(method, tiny, *extra)), *words)
    assert _tree(cwd) == set()


def test_grpo_backend_vllm_without_vllm_leaves_no_folder(tiny: str, cwd: Path) -> None:
    from realmodel.generation import vllm_available

    if vllm_available():  # pragma: no cover - a vLLM machine
        pytest.skip("vLLM is available")
    _error(_invoke(_train("grpo", tiny, "--backend", "vllm")), "--backend")
    assert _tree(cwd) == set()


@pytest.mark.parametrize("method", ["sft", "grpo"])
def test_out_under_a_regular_file(tiny: str, tmp_path: Path, method: str) -> None:
    (tmp_path / "afile").write_text("x")
    _error(_invoke(_train(method, tiny, "--out", str(tmp_path / "afile" / "sub"))),
           "--out")


@pytest.mark.parametrize("method", ["sft", "grpo"])
def test_a_failure_after_the_folder_is_made_removes_it(tiny: str, cwd: Path, method: str,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever fails between creating the run folder and training (here: loading the
    model) leaves no new folder."""
    from realmodel.training import runs

    def broken(cfg: object) -> None:
        raise runs.TrainingError("cannot load the policy")

    monkeypatch.setattr(runs, "load_policy", broken)
    _error(_invoke(_train(method, tiny)), "cannot load the policy")
    assert _tree(cwd) == set()


def test_a_failure_keeps_a_folder_that_was_there(tiny: str, cwd: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Only what the failed command made is removed."""
    from realmodel.training import runs

    def broken(cfg: object) -> None:
        raise runs.TrainingError("cannot load the policy")

    monkeypatch.setattr(runs, "load_policy", broken)
    keep = cwd / "outputs" / "real" / "grpo-cpu-smoke" / "notes.txt"
    keep.parent.mkdir(parents=True)
    keep.write_text("mine")
    _error(_invoke(_train("grpo", tiny)), "cannot load the policy")
    assert keep.read_text() == "mine"


def test_a_failed_training_marks_the_manifest_failed(tiny: str, tmp_path: Path) -> None:
    """A run that dies in `trainer.train` leaves its manifest at "failed" with the error,
    not at "running"."""
    from realmodel.training import runs

    class Broken:
        def train(self, resume_from_checkpoint: object = None) -> None:
            raise RuntimeError("boom\nsecond line")

    cfg = sft_preset("cpu-smoke", model=tiny, output_root=str(tmp_path))
    out = tmp_path / cfg.name()
    out.mkdir()
    with pytest.raises(RuntimeError, match="boom"):
        runs.train_and_save(Broken(), None, cfg, out, None, "cpu")
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "failed"
    assert "RuntimeError: boom" in manifest["error"]
