"""Hardening of the `train` and `sweep` commands (DESIGN.md §2-§4): bad input is one
`Error: ...` line and a non-zero exit before any work; grid files are typed strictly; lengths
are bounded; non-finite results are never written; cells carry a checksum verified on resume;
interrupted sweeps leave no worker processes; concurrent sweeps never delete each other's
temporary files."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

import cli
import sim.lengths as lengths_mod
import sim.sweep as sweep_mod
from core.records import manifest_path, read_record
from sim.grid import GridConfig, TrainingConfig
from sim.grid_files import build_grid, load_grid_file
from sim.lengths import parse_lengths
from sim.sweep import run_sweep
from sim.training_run import TrainConfig
from tests.conftest import assert_clean_cli_error

REPO = Path(__file__).resolve().parent.parent
MAX_LENGTH = 10**6  # the documented bounds of sim.lengths
MAX_POINTS = 10_000
TINY = TrainingConfig(steps=3, n_agents=2)
CHEAP_SWEEP = ["--no-progress", "--workers", "1", "--steps", "2", "--agents", "2",
               "--objectives", "surrogate"]
CHEAP_TRAIN = ["--steps", "2", "--agents", "1"]


def _one_line_error(res, *fragments: str) -> None:
    assert_clean_cli_error(res)
    lines = [ln for ln in res.output.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), res.output
    for frag in fragments:
        assert frag in lines[0], (frag, res.output)


def _sweep(tmp_path: Path, *argv: str):
    return CliRunner().invoke(cli.main, ["sweep", "--out", str(tmp_path / "out"), *CHEAP_SWEEP,
                                         *argv])


def _train(tmp_path: Path, *argv: str):
    return CliRunner().invoke(cli.main, ["train", "--out", str(tmp_path / "out"), *CHEAP_TRAIN,
                                         *argv])


def _nothing_written(tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert not out.exists() or not any(out.rglob("*")), list(out.rglob("*"))


def _only_a_failed_record(run: Path, kind: str, *fragments: str) -> None:
    """A run that started and then failed leaves its run record, status "failed", and no
    outputs (core.records)."""
    assert [p.name for p in run.iterdir()] == ["manifest.json"], list(run.iterdir())
    record = read_record(run)
    assert record["kind"] == kind and record["status"] == "failed", record["status"]
    for frag in fragments:
        assert frag in record["error"], (frag, record["error"])


# ------------------------------------------------------------------ seeds beyond 64 bits


@pytest.mark.parametrize("seed", [str(10**30), str(2**64)])
def test_train_seed_beyond_64_bits_is_one_line(tmp_path, seed) -> None:
    res = _train(tmp_path, "--seed", seed)
    _one_line_error(res, "--seed", str(2**64 - 1))
    _nothing_written(tmp_path)


def test_sweep_seed_beyond_64_bits_is_one_line(tmp_path) -> None:
    res = _sweep(tmp_path, "--lengths", "10", "--seed", str(2**64))
    _one_line_error(res, "--seed")
    _nothing_written(tmp_path)


def test_grid_file_seed_beyond_64_bits_names_key_and_file(tmp_path) -> None:
    grid = tmp_path / "big_seed.toml"
    grid.write_text(f'lengths = "10"\nseed = {2**64}\n')
    res = _sweep(tmp_path, "--grid", str(grid))
    _one_line_error(res, "seed", "big_seed.toml")
    _nothing_written(tmp_path)


def test_configs_refuse_seeds_outside_uint64() -> None:
    with pytest.raises(ValueError, match="seed"):
        GridConfig(lengths=(10,), seed=2**64, training=TINY)
    with pytest.raises(ValueError, match="seed"):
        TrainConfig(seed=2**64)
    GridConfig(lengths=(10,), seed=2**64 - 1, training=TINY)  # the largest accepted


def test_largest_seed_runs_after_small_ones_in_one_process(tmp_path) -> None:
    """Numba would reuse an (int64, ...) build of the stream seeding for a later Python int
    >= 2**63 and fail ("int too big to convert"): the population seeds as uint64."""
    small = GridConfig(lengths=(10,), objectives=("surrogate",), seed=0, training=TINY)
    run_sweep(small, "s0", tmp_path, workers=1, progress=False)
    big = GridConfig(lengths=(10,), objectives=("surrogate",), seed=2**64 - 1, training=TINY)
    res = run_sweep(big, "s1", tmp_path, workers=1, progress=False)
    assert (res.results["seed"].astype("uint64") == np.uint64(2**64 - 1)).all()


# ------------------------------------------------------------------ strict grid-file types

GRID_SNIPPETS = [
    ("[training]\nwrong_length_ratio = inf\n", "wrong_length_ratio"),
    ("[training]\nwrong_length_ratio = nan\n", "wrong_length_ratio"),
    ("lengths = 10.7\n", "lengths"),
    ("lengths = [10, 20.5]\n", "lengths"),
    ("lengths = [true, 10]\n", "lengths"),
    ("lengths = {a = 1}\n", "lengths"),
    ("seed = 1.5\n", "seed"),
    ("seed = true\n", "seed"),
    ("seed = 1e30\n", "seed"),
    ("betas = [true]\n", "betas"),
    ('betas = ["a"]\n', "betas"),
    ("betas = 5\nobjectives = 3\n", "objectives"),
    ("points = 1.5\nlengths = \"10..100\"\n", "points"),
    ("points = true\nlengths = \"10..100\"\n", "points"),
    ("name = 5\n", "name"),
    ('name = ""\n', "name"),
    ("training = 5\n", "training"),
    ("[training]\nsteps = 1.5\n", "steps"),
    ("[training]\nsteps = true\n", "steps"),
    ('[training]\nsteps = "5"\n', "steps"),
    ("[training]\nlr = inf\n", "lr"),
    ('[training]\nlr = "0.1"\n', "lr"),
    ("[training]\nstd_scaling = 1\n", "std_scaling"),
    ("[training]\nref_update_every = 2.5\n", "ref_update_every"),
    ('[ladder]\nnames = "T1"\n', "names"),
    ("[ladder]\nbase_q1 = true\n", "base_q1"),
    ("[ladder]\nlength_scales = [nan, 1.0, 1.0]\n", "length_scales"),
    ("[ladder]\nin_distribution = [1, 1, 0, 0, 0, 0, 0]\n", "in_distribution"),
]


@pytest.mark.parametrize("snippet, key", GRID_SNIPPETS)
def test_grid_file_types_are_strict(tmp_path, snippet, key) -> None:
    grid = tmp_path / "typed.toml"
    grid.write_text(snippet if "lengths" in snippet else f'lengths = "10"\n{snippet}')
    with pytest.raises(ValueError, match=key) as info:
        build_grid(load_grid_file(grid))
    assert "typed.toml" in str(info.value)
    res = _sweep(tmp_path, "--grid", str(grid))
    _one_line_error(res, key, "typed.toml")
    _nothing_written(tmp_path)


YAML_SNIPPETS = [
    ("lengths: [10, 20]\nseed: .nan\n", "seed"),
    ('lengths: "10"\nobjectives: [null]\n', "objectives"),
    ('lengths: "10"\nbetas: [.inf]\n', "betas"),
    ('lengths: "10"\ntraining: {n_agents: 2.0, lr: .nan}\n', "lr"),
]


@pytest.mark.parametrize("snippet, key", YAML_SNIPPETS)
def test_yaml_grid_types_are_strict(tmp_path, snippet, key) -> None:
    grid = tmp_path / "typed.yaml"
    grid.write_text(snippet)
    res = _sweep(tmp_path, "--grid", str(grid))
    _one_line_error(res, key, "typed.yaml")
    _nothing_written(tmp_path)


def test_integral_floats_still_read_as_integers(tmp_path) -> None:
    grid = tmp_path / "ok.toml"
    grid.write_text('lengths = [10.0, 20]\nseed = 3.0\n[training]\nsteps = 5.0\n')
    _, g = build_grid(load_grid_file(grid))
    assert g.lengths == (10, 20) and g.seed == 3 and g.training.steps == 5
    assert all(type(x) is int for x in (*g.lengths, g.seed, g.training.steps))
    # inf is a real setting of a transfer length scale (no transfer): still accepted
    grid.write_text("[ladder]\nlength_scales = [inf, 3.0, 3.0]\n"
                    "shared_trainable = [true, false, false]\n")
    _, g = build_grid(load_grid_file(grid))
    assert g.ladder.length_scales[0] == float("inf")


def test_grid_file_not_utf8_names_file(tmp_path) -> None:
    grid = tmp_path / "binary.toml"
    grid.write_bytes(b"\xff\xfe\x00")
    res = _sweep(tmp_path, "--grid", str(grid))
    _one_line_error(res, "binary.toml")
    _nothing_written(tmp_path)


# ------------------------------------------------------------------ lengths and finiteness


@pytest.mark.parametrize("spec", [
    "1e11", str(MAX_LENGTH + 1), "100000000000", str(10**20), f"10..{10**25}",
    f"1..10:{10**30}", "9" * 5000, f"1..{MAX_LENGTH}:1",
])
def test_parse_lengths_refuses_huge_or_malformed(spec) -> None:
    with pytest.raises(ValueError) as info:
        parse_lengths(spec)
    assert "\n" not in str(info.value) and len(str(info.value)) < 300


def test_parse_lengths_bounds() -> None:
    assert (lengths_mod.MAX_LENGTH, lengths_mod.MAX_POINTS) == (MAX_LENGTH, MAX_POINTS)
    assert parse_lengths(str(MAX_LENGTH)).tolist() == [MAX_LENGTH]
    assert parse_lengths(f"10..{MAX_LENGTH}", points=3).tolist() == [10, 3162, MAX_LENGTH]
    with pytest.raises(ValueError, match="points"):
        parse_lengths("10..1000", points=MAX_POINTS + 1)
    with pytest.raises(ValueError, match="points"):
        parse_lengths("10..1000", points=True)


@pytest.mark.parametrize("argv, frag", [
    (["--lengths", str(10**20)], "lengths"),
    (["--lengths", "100000000000"], str(MAX_LENGTH)),
    (["--lengths", "10..1000", "--points", str(10**9)], "points"),
])
def test_sweep_cli_lengths_bounded(tmp_path, argv, frag) -> None:
    res = _sweep(tmp_path, *argv)
    _one_line_error(res, frag)
    _nothing_written(tmp_path)


def test_grid_lengths_and_wrong_lengths_bounded(tmp_path) -> None:
    with pytest.raises(ValueError, match="length"):
        GridConfig(lengths=(MAX_LENGTH + 1,), training=TINY)
    with pytest.raises(ValueError, match="L_W"):
        GridConfig(lengths=(10, 1000),
                   training=TrainingConfig(steps=3, n_agents=2, wrong_length_ratio=1e300))
    grid = tmp_path / "huge.toml"
    grid.write_text("lengths = [1e11]\n")
    res = _sweep(tmp_path, "--grid", str(grid))
    _one_line_error(res, "lengths", "huge.toml")


@pytest.mark.parametrize("argv, frag", [
    (["--length", "inf"], "--length"),
    (["--length", "1e11"], "--length"),
    (["--length", "1e300"], "--length"),
    (["--wrong-length", "1e300"], "--wrong-length"),
    (["--lr", "inf"], "--lr"),
    (["--beta", "inf"], "beta"),
])
def test_train_cli_refuses_non_finite_or_huge(tmp_path, argv, frag) -> None:
    res = _train(tmp_path, *argv)
    _one_line_error(res, frag)
    _nothing_written(tmp_path)


def _nan_cell(real):
    def fake(grid, batch):
        out = real(grid, batch)
        for cell_id, df in out:
            if cell_id.endswith("__L20"):
                df.loc[0, "p[T1]"] = np.nan
        return out
    return fake


def test_non_finite_cell_fails_loudly_and_is_not_written(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(sweep_mod, "run_batch", _nan_cell(sweep_mod.run_batch))
    g = GridConfig(lengths=(10, 20, 30), objectives=("surrogate+kl",), training=TINY)
    with pytest.raises(ValueError, match=r"non-finite.*p\[T1\]"):
        run_sweep(g, "nf", tmp_path, workers=1, progress=False)
    cells = sorted(p.name for p in (tmp_path / "nf" / "cells").glob("*.parquet"))
    assert not any("L20" in c for c in cells)
    assert not (tmp_path / "nf" / "results.parquet").exists()


def test_ratio_columns_may_be_undefined(tmp_path) -> None:
    """The KL alone never moves pi away from pi_ref: its ratio is 0/0 by design (DESIGN §3)."""
    g = GridConfig(lengths=(10,), objectives=("kl",), training=TINY)
    res = run_sweep(g, "kl", tmp_path, workers=1, progress=False)
    assert res.results["ratio[kl]"].isna().all()


def test_train_non_finite_history_fails_loudly(tmp_path, monkeypatch) -> None:
    import sim.training_run as tr

    real = tr.run_training

    def fake(cfg, progress=False):
        model, history = real(cfg, progress=progress)
        history.loc[history["step"] == 1, "w_s"] = np.inf
        return model, history

    monkeypatch.setattr(tr, "run_training", fake)
    res = _train(tmp_path, "--name", "nf")
    assert_clean_cli_error(res)  # after the progress bar: the work had started
    last = res.output.strip().splitlines()[-1]
    assert last.startswith("Error: ") and "non-finite" in last and "w_s" in last, res.output
    _only_a_failed_record(tmp_path / "out" / "nf", "train", "non-finite", "w_s")


# ------------------------------------------------------------------ cell checksums


def _flip_data_page_byte(path: Path, column: str) -> None:
    """Flip one byte inside `column`'s pages so the file still reads, with a wrong value."""
    meta = pq.ParquetFile(path).metadata
    names = [meta.row_group(0).column(i).path_in_schema for i in range(meta.num_columns)]
    col = meta.row_group(0).column(names.index(column))
    start = col.dictionary_page_offset or col.data_page_offset
    end = start + col.total_compressed_size
    original = pq.read_table(path).column(column).to_pylist()
    raw = path.read_bytes()
    for pos in range(end - 1, start, -1):
        data = bytearray(raw)
        data[pos] ^= 0x5A
        path.write_bytes(bytes(data))
        try:
            values = pq.read_table(path).column(column).to_pylist()
        except Exception:  # noqa: BLE001 - this byte broke decoding: try another one
            continue
        if values != original:
            return
    raise AssertionError("found no byte whose flip leaves the file readable")


def test_corrupt_cell_recomputed_on_resume(tmp_path, capsys) -> None:
    g = GridConfig(lengths=(10, 20), objectives=("surrogate",), training=TINY)
    first = run_sweep(g, "ck", tmp_path, workers=1, progress=False)
    victim = tmp_path / "ck" / "cells" / f"{g.cells()[1].cell_id}.parquet"
    _flip_data_page_byte(victim, "ood_accuracy")
    pq.read_metadata(victim)  # the footer is intact: the old resume check accepted it
    capsys.readouterr()
    second = run_sweep(g, "ck", tmp_path, workers=1, progress=False)
    assert second.computed == (victim.stem,) and len(second.skipped) == 1
    assert "checksum" in capsys.readouterr().err
    pd.testing.assert_frame_equal(first.results, second.results)


def test_cells_store_a_checksum_and_legacy_cells_are_recomputed(tmp_path, capsys) -> None:
    g = GridConfig(lengths=(10,), objectives=("surrogate",), training=TINY)
    run_sweep(g, "legacy", tmp_path, workers=1, progress=False)
    cell = tmp_path / "legacy" / "cells" / f"{g.cells()[0].cell_id}.parquet"
    meta = pq.read_schema(cell).metadata
    assert sweep_mod.CHECKSUM_KEY in meta and len(meta[sweep_mod.CHECKSUM_KEY]) == 64
    pd.read_parquet(cell).to_parquet(cell, index=False)  # no checksum: an older version's cell
    capsys.readouterr()
    res = run_sweep(g, "legacy", tmp_path, workers=1, progress=False)
    assert res.computed == (cell.stem,)
    assert "checksum" in capsys.readouterr().err


# ------------------------------------------------------------------ killed sweeps


def _children(pid: int) -> set[int]:
    try:
        import psutil

        try:
            return {c.pid for c in psutil.Process(pid).children(recursive=True)}
        except psutil.NoSuchProcess:
            return set()
    except ImportError:  # /proc scan
        kids = set()
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                except (OSError, IndexError, ValueError):
                    continue
                if ppid == pid:
                    kids.add(int(entry.name))
        return kids


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _reap(proc: subprocess.Popen) -> None:
    """Kill what is left of a sweep started in its own session, and wait for it."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def _sigint_as_from_a_terminal() -> None:
    """Popen preexec_fn: SIGINT at its default in the sweep, as under a terminal's Ctrl-C. A test
    runner started with SIGINT ignored (`cmd &` in a script, nohup) passes SIG_IGN on, and
    Python keeps an inherited SIG_IGN (as it should: nohup's meaning)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGKILL])
def test_killed_sweep_leaves_no_workers(tmp_path, sig) -> None:
    # two cells (L matters to the KL) of 2048 agents: as many agents as make the sweep use
    # worker processes (sim.sweep.PROCESS_POOL_MIN_AGENTS), one batch each, of many seconds:
    # without cleanup the workers would outlive the sweep by that long
    agents = sweep_mod.PROCESS_POOL_MIN_AGENTS // 2
    args = [sys.executable, "cli.py", "sweep", "--lengths", "10..20:10", "--objectives",
            "surrogate+kl", "--steps", "20000", "--agents", str(agents), "--workers", "2",
            "--name", "o", "--out", str(tmp_path), "--no-progress"]
    proc = subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True, preexec_fn=_sigint_as_from_a_terminal)
    try:
        deadline = time.time() + 60
        workers: set[int] = set()
        while time.time() < deadline:
            workers = {p for p in _children(proc.pid)
                       if "spawn_main" in Path(f"/proc/{p}/cmdline").read_text(errors="replace")}
            if len(workers) >= 2:
                break
            time.sleep(0.1)
        assert len(workers) >= 2, "the sweep never started its workers"
        # let them import and start computing: importing takes ~2.5 s of CPU, and a worker
        # killed before it (a loaded machine) leaves on its own only once it has imported
        deadline = time.time() + 90
        while time.time() < deadline and min(_cpu_seconds(p) for p in workers) < 5.0:
            time.sleep(0.2)
        os.kill(proc.pid, sig)
        proc.wait(timeout=10)
        deadline = time.time() + 5
        while time.time() < deadline and any(_alive(p) for p in workers):
            time.sleep(0.1)
        left = [p for p in workers if _alive(p)]
        assert not left, f"orphan workers after {sig.name}: {left}"
        if sig != signal.SIGKILL:
            assert proc.returncode == 128 + sig, proc.returncode
            assert b"rerun the same command to resume" in proc.stderr.read()
            # the run record says so: never left at "running"
            man = read_record(tmp_path / "o")
            assert man["kind"] == "sweep" and man["status"] == "interrupted", man["status"]
            assert man["error"].startswith(("KeyboardInterrupt", "SweepInterrupted"))
    finally:
        _reap(proc)


# ------------------------------------------------------------------ concurrent sweeps


def test_temp_names_unique_per_process_and_call(tmp_path) -> None:
    target = tmp_path / "cells" / "x.parquet"
    names = {sweep_mod._tmp_path(target).name for _ in range(50)}
    assert len(names) == 50
    assert all(f".{os.getpid()}." in n and n.startswith(".x.parquet.") for n in names)


def test_sweep_start_keeps_other_processes_temp_files(tmp_path) -> None:
    g = GridConfig(lengths=(10, 20), objectives=("surrogate",), training=TINY)
    cells = tmp_path / "cc" / "cells"
    cells.mkdir(parents=True)
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        live = cells / sweep_mod._tmp_path(cells / "a.parquet").name.replace(
            f".{os.getpid()}.", f".{other.pid}.")
        live.write_bytes(b"being written by another run")
        old_style = cells / f".b.parquet.{other.pid}.tmp"  # an older version's name
        old_style.write_bytes(b"also someone else's")
        dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                              capture_output=True, text=True, check=True)
        stale = cells / sweep_mod._tmp_path(cells / "c.parquet").name.replace(
            f".{os.getpid()}.", f".{int(dead.stdout)}.")
        stale.write_bytes(b"left by a run that died")
        run_sweep(g, "cc", tmp_path, workers=1, progress=False)
        assert live.exists() and old_style.exists()  # never another live process's file
        assert not stale.exists()  # a dead process's leftover on this host is garbage
    finally:
        other.kill()
        other.wait()


def test_two_concurrent_runs_of_one_sweep(tmp_path) -> None:
    args = [sys.executable, "cli.py", "sweep", "--lengths", "10..400:10", "--objectives",
            "surrogate,nsr", "--steps", "5", "--agents", "2", "--workers", "1", "--name", "two",
            "--out", str(tmp_path), "--no-progress"]
    procs = [subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (_out, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err.decode()[-2000:]
    df = pd.read_parquet(tmp_path / "two" / "results.parquet")
    assert len(df) == 80 * 2 and df["cell_id"].nunique() == 80
    assert not list((tmp_path / "two").rglob("*.tmp"))
    assert read_record(tmp_path / "two")["status"] == "done"


# ------------------------------------------------------------------ other bad invocations


@pytest.mark.parametrize("argv, frag", [
    (["--lengths", "10", "--name", ""], "--name"),
    (["--lengths", "10", "--address", "10.0.0.1:6379"], "--address"),
    (["--lengths", "10", "--steps", str(10**30)], "--steps"),
    (["--lengths", "10", "--agents", str(10**30)], "--agents"),
    (["--lengths", "10", "--queries", str(10**30)], "--queries"),
    (["--lengths", "10", "--lr", "inf"], "--lr"),
    (["--lengths", "10", "--lr", "nan"], "--lr"),
    (["--lengths", "10", "-K", str(10**30)], "-K"),
    (["--lengths", "10", "--workers", str(10**30)], "--workers"),
])
def test_sweep_cli_bad_options(tmp_path, argv, frag) -> None:
    res = _sweep(tmp_path, *argv)
    _one_line_error(res, frag)
    _nothing_written(tmp_path)


@pytest.mark.parametrize("argv, frag", [
    (["--steps", str(10**30)], "--steps"),
    (["--agents", str(10**30)], "--agents"),
    (["--queries", str(10**30)], "--queries"),
    (["--ref-every", str(10**30)], "--ref-every"),
    (["-K", str(10**30)], "-K"),
])
def test_train_cli_bad_options(tmp_path, argv, frag) -> None:
    res = _train(tmp_path, *argv)
    _one_line_error(res, frag)
    _nothing_written(tmp_path)


def test_out_of_memory_is_an_error_line(tmp_path, monkeypatch) -> None:
    import sim.training_run as tr

    def oom(*args, **kwargs):
        raise MemoryError

    monkeypatch.setattr(tr, "run_training", oom)
    res = _train(tmp_path)
    _one_line_error(res, "memory")
    _only_a_failed_record(tmp_path / "out" / "fig1", "train", "MemoryError")
    monkeypatch.setattr(sweep_mod, "run_batch", oom)
    res = _sweep(tmp_path, "--lengths", "10", "--name", "oom")
    assert_clean_cli_error(res)  # after the header line: the work had started
    last = res.output.strip().splitlines()[-1]
    assert last.startswith("Error: ") and "memory" in last, res.output
    record = read_record(tmp_path / "out" / "oom")
    assert record["status"] == "failed" and record["error"].startswith("MemoryError")


@pytest.mark.parametrize("address, frag", [
    ("127.0.0.1:1", "cannot reach"),
    ("nonsense", "HOST:PORT"),
])
def test_unreachable_ray_address_fails_fast(tmp_path, address, frag) -> None:
    start = time.monotonic()
    res = _sweep(tmp_path, "--lengths", "10", "--executor", "ray", "--address", address)
    assert time.monotonic() - start < 60  # ray.init alone retries for many minutes
    _one_line_error(res, frag)  # checked before any work
    _nothing_written(tmp_path)


def test_grid_path_that_is_a_folder(tmp_path) -> None:
    folder = tmp_path / "grid.toml"
    folder.mkdir()
    res = _sweep(tmp_path, "--grid", str(folder))
    _one_line_error(res, "not a file", "grid.toml")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_interrupted_in_process_sweep_records_it(tmp_path, sig) -> None:
    """A small sweep trains in the calling process (Numba threads, no workers): a signal
    still ends it between two training steps, with the interrupted record."""
    args = [sys.executable, "cli.py", "sweep", "--lengths", "10..20:10", "--objectives",
            "surrogate+kl", "--steps", "200000", "--agents", "64", "--workers", "2",
            "--name", "i", "--out", str(tmp_path), "--no-progress"]
    proc = subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True, preexec_fn=_sigint_as_from_a_terminal)
    try:
        deadline = time.time() + 60
        while time.time() < deadline and not manifest_path(tmp_path / "i").is_file():
            time.sleep(0.1)
        time.sleep(3.0)  # training by now
        assert proc.poll() is None and not _children(proc.pid)  # no worker processes
        os.kill(proc.pid, sig)
        # a cold Numba cache may still be compiling (a signal waits for the compile to end:
        # seen at over 20 s on a busy 2-core machine); 200000 steps would take far longer
        proc.wait(timeout=120)
        assert proc.returncode == 128 + sig, proc.returncode
        assert b"rerun the same command to resume" in proc.stderr.read()
        man = read_record(tmp_path / "i")
        assert man["status"] == "interrupted" and not list((tmp_path / "i" / "cells").iterdir())
    finally:
        _reap(proc)
