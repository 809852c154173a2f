"""The Ray executor against a cluster started with `ray start --head`, as the README's recipe
runs it (docs/ARCHITECTURE.md, sim.executors): a sweep submitted with `ray job submit
--working-dir` from a copy of the repository, and a driver elsewhere that connects by
HOST:PORT. The cluster's own Python path holds `core` and `sim` packages that refuse to
import, so a cell runs only with the code the job's runtime_env ships.

The cluster is this module's own: a temporary folder, free ports, a token of its own (Ray
turns token authentication on where ~/.ray/auth_token exists); it is stopped by killing its
processes by pid, not with `ray stop`, which would end every Ray cluster on the machine.
"""

from __future__ import annotations

import importlib.util
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest

from core.records import read_record

pytest.importorskip("ray", reason="the Ray executor needs Ray: pip install 'ds-study[dist]'")
pytestmark = pytest.mark.ray

REPO = Path(__file__).resolve().parents[1]
# what `cli.py sweep` needs of the repository (cli.py imports every package's commands)
COPIED = ("cli.py", ".gitignore", "core", "sim", "analysis", "realmodel")
SWEEP = ["sweep", "--lengths", "10..20:10", "--objectives", "surrogate", "--steps", "5",
         "--agents", "2", "--executor", "ray"]
POISON = "raise ImportError('the node\\'s own {0}: a worker must import the {0} the job ships')\n"


@dataclass
class Cluster:
    root: Path  # temporary folder: Ray's temp dir, the repository copy, outputs
    env: dict[str, str]  # for every command run against the cluster
    gcs: str  # HOST:PORT for --address
    dashboard: str  # http://HOST:PORT for `ray job submit --address`


def _free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            socks.append(sock)
        return [sock.getsockname()[1] for sock in socks]
    finally:
        for sock in socks:
            sock.close()


def _ray_cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "ray.scripts.scripts", *args]


def _processes() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, command line) of every process (Linux /proc)."""
    out = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        out[int(entry.name)] = (int(stat.rpartition(")")[2].split()[1]), cmdline)
    return out


def _stop_cluster(markers: tuple[str, ...]) -> None:
    """End the processes of one Ray cluster by pid: those whose command line names one of
    `markers` (its temp folder, its GCS address) and all their descendants (workers, agents,
    job drivers)."""
    procs = _processes()
    ours = {pid for pid, (_, cmd) in procs.items()
            if pid != os.getpid() and any(m in cmd for m in markers)}
    grew = True
    while grew:
        children = {pid for pid, (ppid, _) in procs.items() if ppid in ours} - ours
        ours |= children
        grew = bool(children)
    for pid in ours:  # SIGKILL, as `ray stop --force`
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + 10.0
    while time.monotonic() < deadline and any(_alive(pid) for pid in ours):
        time.sleep(0.1)


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"  # a zombie has ended


def _copy_repo(dest: Path) -> Path:
    dest.mkdir(parents=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.parquet")
    for name in COPIED:
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=ignore)
        elif src.exists():
            shutil.copy2(src, dest / name)
    return dest


@pytest.fixture(scope="module")
def cluster():
    # a short path: Ray's Unix sockets live under its temp dir (at most 107 bytes)
    root = Path(tempfile.mkdtemp(prefix="dsray-", dir="/tmp"))
    poison = root / "node-site"  # the node's own Python path (see the module docstring)
    for pkg in ("core", "sim"):
        (poison / pkg).mkdir(parents=True)
        (poison / pkg / "__init__.py").write_text(POISON.format(pkg))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "RAY_ADDRESS")}
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(16),
               RAY_USAGE_STATS_ENABLED="0", PYTHONUNBUFFERED="1")
    gcs, dash, *other = _free_ports(9)
    flags = ("--dashboard-agent-listen-port", "--dashboard-agent-grpc-port",
             "--runtime-env-agent-port", "--metrics-export-port", "--node-manager-port",
             "--object-manager-port", "--ray-client-server-port")
    start = _ray_cli("start", "--head", "--num-cpus", "2", "--node-ip-address", "127.0.0.1",
                     "--temp-dir", str(root / "ray"), "--port", str(gcs),
                     "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dash),
                     "--disable-usage-stats")
    for flag, port in zip(flags, other, strict=True):
        start += [flag, str(port)]
    markers = (str(root), f":{gcs} ")  # the temp folder; the client server names the GCS
    try:
        proc = subprocess.run(start, cwd=root, env={**env, "PYTHONPATH": str(poison)},
                              capture_output=True, text=True, timeout=180)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        yield Cluster(root, env, f"127.0.0.1:{gcs}", f"http://127.0.0.1:{dash}")
    finally:
        _stop_cluster(markers)
        shutil.rmtree(root, ignore_errors=True)


def _check_sweep(out: Path) -> pd.DataFrame:
    """The finished sweep in `out`: 2 cells x 2 agents and a run record saying so; its
    results less the git_commit column (the repository copies have no .git)."""
    results = pd.read_parquet(out / "results.parquet")
    assert sorted(results["length"].unique()) == [10, 20]
    assert len(results) == 4
    record = read_record(out)
    assert record["kind"] == "sweep" and record["status"] == "done", record
    assert record["results"]["executor"] == "ray"
    assert record["results"]["cells_computed"] == 2
    return results.drop(columns="git_commit")


def test_sweep_submitted_as_a_ray_job(cluster: Cluster) -> None:
    """README recipe: `ray job submit --working-dir <checkout> -- python cli.py sweep ...
    --executor ray --address auto`, the checkout at another path than this one."""
    if importlib.util.find_spec("aiohttp") is None:  # the dashboard's, hence the job server's
        pytest.fail("`ray job submit` needs Ray's job server: pip install 'ray[default]'")
    repo = _copy_repo(cluster.root / "checkout")
    out = cluster.root / "out-job"
    entry = [sys.executable, "cli.py", *SWEEP, "--address", "auto", "--name", "rj",
             "--out", str(out)]
    proc = subprocess.run(
        _ray_cli("job", "submit", "--address", cluster.dashboard, "--working-dir", str(repo),
                 "--", *entry),
        cwd=cluster.root, env=cluster.env, capture_output=True, text=True, timeout=420)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0 and "succeeded" in log, log
    assert "2 cells computed" in log, log
    _check_sweep(out / "rj")


def test_driver_elsewhere_by_address(cluster: Cluster) -> None:
    """`cli.py sweep --executor ray --address HOST:PORT` run from another folder: the workers
    import core and sim from the job's upload, not from the repository or the node."""
    cwd = cluster.root / "elsewhere"
    cwd.mkdir()
    out = cluster.root / "out-driver"
    proc = subprocess.run(
        [sys.executable, str(REPO / "cli.py"), *SWEEP, "--address", cluster.gcs,
         "--name", "rd", "--out", str(out), "--no-progress"],
        cwd=cwd, env=cluster.env, capture_output=True, text=True, timeout=420)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "2 cells computed" in proc.stdout, proc.stdout
    driver = _check_sweep(out / "rd")
    submitted = out.parent / "out-job" / "rj" / "results.parquet"
    if submitted.exists():  # the same grid as the submitted job: the same numbers
        job = pd.read_parquet(submitted).drop(columns="git_commit")
        pd.testing.assert_frame_equal(job, driver, check_exact=True)

    # where a cell's worker imports from, through execute_ray itself
    probe = textwrap.dedent(f"""
        import json, os, sys
        import pandas as pd
        sys.path.insert(0, {str(REPO)!r})
        from sim.executors import execute_ray
        from sim.grid import GridConfig, TrainingConfig

        def where(grid, cell):
            import core, sim
            return [(cell.cell_id,
                     pd.DataFrame({{"sim": [sim.__file__], "core": [core.__file__],
                                   "cwd": [os.getcwd()],
                                   "threads": [os.environ.get("NUMBA_NUM_THREADS")]}}))]

        grid = GridConfig(lengths=(10,), objectives=("surrogate",),
                          training=TrainingConfig(steps=1, n_agents=1))
        rows = []
        execute_ray(where, grid, grid.cells(), {cluster.gcs!r},
                    lambda cell_id, df: rows.append(df.iloc[0].to_dict()))
        print(json.dumps(rows))
    """)
    proc = subprocess.run([sys.executable, "-c", probe], cwd=cwd, env=cluster.env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (row,) = json.loads(proc.stdout.strip().splitlines()[-1])
    for pkg in ("sim", "core"):
        path = Path(row[pkg])
        assert any(part.startswith("_ray_pkg_") for part in path.parts), row
        assert REPO not in path.parents and cluster.root / "node-site" not in path.parents
    assert row["threads"] == "1"
