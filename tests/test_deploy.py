"""The deployment files in deploy/: checked by a real tool where one is on this
machine (systemd-analyze, logrotate, shellcheck, hadolint, kubernetes-validate),
always by parsing, and every daemon command line in them by the daemon's own
argument parser. Where it can be done here, the files are also run: the
logrotate config against a live daemon, the SLURM script under stand-in
srun/scontrol/squeue/scancel commands, the Kubernetes Job's command as 4
indexed pods' processes against the Deployment's daemon command.

A missing optional tool skips only the check that needs it, with the reason.
"""

from __future__ import annotations

import argparse
import contextlib
import fnmatch
import grp
import importlib.metadata
import io
import json
import os
import pwd
import re
import shlex
import shutil
import signal
import subprocess
import sys
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import psutil
import pytest
import yaml

from aggregator.cli import build_parser

from .conftest import REPO, python_env, read, wait_for

DEPLOY = REPO / "deploy"
UNIT = DEPLOY / "systemd" / "roxxel-aggregator.service"
LOGROTATE = DEPLOY / "systemd" / "roxxel.logrotate"
K8S_AGGREGATOR = DEPLOY / "kubernetes" / "aggregator.yaml"
K8S_JOB = DEPLOY / "kubernetes" / "training-job.yaml"
SBATCH = DEPLOY / "slurm" / "train.sbatch"
DOCKERFILE = DEPLOY / "docker" / "Dockerfile"
VENV_BIN = Path(sys.executable).parent


# -- helpers -----------------------------------------------------------------------


def daemon_args(argv: Sequence[str], where: str) -> argparse.Namespace:
    """``argv`` (without the program name) as the real daemon parses it; fail if it would exit."""
    parser = build_parser()
    # argparse takes `--drain` for `--drain-senders`: deployment files spell options out.
    spelled = {opt for action in parser._actions for opt in action.option_strings}
    for word in argv:
        if word.startswith("--"):
            assert word.split("=", 1)[0] in spelled, f"{where}: {word} is not a daemon option"
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):
            return parser.parse_args(list(argv))
    except SystemExit as exc:
        pytest.fail(f"{where}: roxxel-aggregator rejects {list(argv)}: {stderr.getvalue()} ({exc})")


def tcp_port(endpoint: str) -> int:
    assert endpoint.startswith("tcp://"), endpoint
    return int(endpoint.rsplit(":", 1)[1])


def tool(name: str) -> str:
    """The path of an optional checker, or skip this test saying it is missing."""
    path = shutil.which(name) or shutil.which(name, path=str(VENV_BIN))
    if path is None:
        pytest.skip(f"{name} is not installed on this machine; this check did not run")
    return path


def console_script() -> Path:
    script = VENV_BIN / "roxxel-aggregator"
    if not script.exists():
        pytest.fail(f"the roxxel-aggregator console script is not installed in {VENV_BIN}")
    return script


def replace_daemon_option(argv: list[str], option: str, value: str) -> list[str]:
    out = list(argv)
    out[out.index(option) + 1] = value
    return out


@contextlib.contextmanager
def running_daemon(argv: Sequence[str], out: Path, env: dict[str, str]) -> Iterator[str]:
    """The real daemon run with ``argv``; yields its endpoint; SIGTERM (by pid) at the end."""
    with open(out, "w") as stdout:
        process = subprocess.Popen(
            [str(console_script()), *argv], stdout=stdout, stderr=subprocess.STDOUT, env=env
        )
    try:

        def ready() -> str | None:
            if process.poll() is not None:
                pytest.fail(f"the daemon exited ({process.returncode}): {read(out)}")
            return next((ln for ln in read(out).splitlines() if " ready on " in ln), None)

        line = wait_for(ready, timeout=60, what=f"the daemon's ready line in {out}")
        yield line.split(" ready on ", 1)[1].split()[0]
        process.send_signal(signal.SIGTERM)
        assert process.wait(60) == 0, read(out)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(30)


def test_every_readme_link_points_at_a_file() -> None:
    readmes = sorted(DEPLOY.rglob("README.md"))
    assert {p.relative_to(DEPLOY).as_posix() for p in readmes} >= {
        "README.md",
        "systemd/README.md",
        "kubernetes/README.md",
        "slurm/README.md",
        "docker/README.md",
    }
    for readme in readmes:
        for target in re.findall(r"\]\(([^)#\s]+)[^)]*\)", readme.read_text()):
            if "://" in target:
                continue
            assert (readme.parent / target).exists(), f"{readme}: broken link {target}"


# -- systemd -----------------------------------------------------------------------


def read_unit(path: Path) -> dict[str, dict[str, list[str]]]:
    """A systemd unit file as {section: {key: [values]}}, with continuation lines joined."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: str | None = None
    pending = ""
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if not line or line[0] in "#;":
            continue  # systemd also skips comments inside a continued line
        if line.endswith("\\"):
            pending += line[:-1].strip() + " "
            continue
        line, pending = pending + line, ""
        if line.startswith("[") and line.endswith("]"):
            current = line[1:-1]
            assert current not in sections, f"{path}:{number}: section [{current}] twice"
            sections[current] = {}
            continue
        key, sep, value = line.partition("=")
        assert sep and current is not None, f"{path}:{number}: not a key=value line: {raw!r}"
        sections[current].setdefault(key.strip(), []).append(value.strip())
    assert not pending, f"{path}: ends inside a continued line"
    return sections


def one(section: dict[str, list[str]], key: str) -> str:
    values = section.get(key)
    assert values, f"{key}= is missing"
    assert len(values) == 1, f"{key}= is set {len(values)} times"
    return values[0]


def unit_exec_start() -> list[str]:
    return shlex.split(one(read_unit(UNIT)["Service"], "ExecStart"))


def test_systemd_unit_has_the_sections_and_settings() -> None:
    unit = read_unit(UNIT)
    assert set(unit) == {"Unit", "Service", "Install"}
    service = unit["Service"]
    assert one(service, "Type") == "simple"
    user = one(service, "User")
    assert user and user not in ("root", "0")
    assert one(service, "ExecReload") == "/bin/kill -HUP $MAINPID"
    assert one(service, "KillSignal") == "SIGTERM"
    assert one(service, "Restart") == "on-failure"
    assert one(service, "RuntimeDirectory") == "roxxel"
    assert one(service, "NoNewPrivileges") == "yes"
    assert one(service, "ProtectSystem") == "strict"
    assert one(service, "PrivateTmp") == "yes"
    assert one(unit["Install"], "WantedBy") == "multi-user.target"

    argv = unit_exec_start()
    assert argv[0].startswith("/") and argv[0].endswith("/roxxel-aggregator")
    args = daemon_args(argv[1:], f"{UNIT} ExecStart")
    assert args.bind.startswith("tcp://")
    assert args.pidfile.startswith("/run/roxxel/")
    assert args.log_dir.startswith("/var/log/roxxel")
    # ProtectSystem=strict makes everything else read-only.
    writable = one(service, "ReadWritePaths").split()
    assert any(args.log_dir == p or args.log_dir.startswith(p + "/") for p in writable)
    # systemd's SIGKILL must not cut the drain short.
    assert float(one(service, "TimeoutStopSec")) > args.drain_senders + 10


def test_systemd_analyze_verify_accepts_the_unit(tmp_path: Path) -> None:
    analyze = tool("systemd-analyze")
    # verify insists that ExecStart's binary exists: point it at this venv's.
    script = console_script()
    installed = unit_exec_start()[0]
    text = UNIT.read_text()
    assert text.count(installed) == 1
    unit = tmp_path / UNIT.name
    unit.write_text(text.replace(installed, str(script)))

    def verify(path: Path) -> tuple[int, list[str]]:
        result = subprocess.run(
            [analyze, "verify", str(path)], capture_output=True, text=True, timeout=120
        )
        lines = (result.stdout + result.stderr).splitlines()
        return result.returncode, [ln for ln in lines if path.name in ln]

    # Unknown keys and bad values are only warnings (exit 0): the test is that
    # nothing is printed about our unit. First, that this systemd-analyze does
    # print such warnings, or an empty output would prove nothing.
    broken = tmp_path / "broken" / UNIT.name
    broken.parent.mkdir()
    broken.write_text(
        unit.read_text().replace("ProtectSystem=strict", "ProtectSystem=bogus\nNoSuchKey=1")
    )
    _, complaints = verify(broken)
    assert any("NoSuchKey" in ln for ln in complaints), complaints
    assert any("protect system" in ln.lower() for ln in complaints), complaints

    code, complaints = verify(unit)
    assert code == 0 and complaints == [], complaints


def test_logrotate_config_matches_the_daemon() -> None:
    text = LOGROTATE.read_text()
    lines = [ln.split("#", 1)[0].strip() for ln in text.splitlines()]
    directives = [ln for ln in lines if ln]
    header = directives[0]
    assert header.endswith("{") and directives.count("}") == 1
    patterns = header[:-1].split()
    args = daemon_args(unit_exec_start()[1:], str(UNIT))
    names = [
        f"{args.prefix}_system.log",
        f"{args.prefix}_metrics.csv",
        f"{args.prefix}_metrics.jsonl",
    ]
    hidden = [f".{args.prefix}_checkpoint.json", f".{args.prefix}.lock"]
    for name in names:
        path = f"{args.log_dir}/{name}"
        assert any(fnmatch.fnmatch(path, p) for p in patterns), (name, patterns)
    # glob(3), which logrotate uses, never matches a leading dot with `*`.
    assert not any(p.rsplit("/", 1)[1].startswith(".") for p in patterns)
    for name in hidden:
        assert not any(fnmatch.fnmatch(name, p.rsplit("/", 1)[1]) for p in patterns)
    # Renamed, never truncated in place (the checkpoint holds each file's size).
    assert "copytruncate" not in directives and "nocreate" in directives
    postrotate = text.split("postrotate", 1)[1].split("endscript", 1)[0]
    assert "kill -HUP" in postrotate and args.pidfile in postrotate


def test_logrotate_rotates_under_a_live_daemon(tmp_path: Path) -> None:
    """The shipped config, paths moved into tmp_path: rename, SIGHUP, new files."""
    logrotate = tool("logrotate")
    args = daemon_args(unit_exec_start()[1:], str(UNIT))
    log_dir, pidfile = tmp_path / "logs", tmp_path / "run" / "aggregator.pid"
    pidfile.parent.mkdir()
    user, group = pwd.getpwuid(os.getuid()).pw_name, grp.getgrgid(os.getgid()).gr_name
    config = tmp_path / "roxxel.logrotate"
    text = LOGROTATE.read_text()
    for old, new in ((args.log_dir, str(log_dir)), (args.pidfile, str(pidfile))):
        assert old in text
        text = text.replace(old, new)
    text, count = re.subn(r"(?m)^(\s*su) \S+ \S+$", rf"\1 {user} {group}", text)
    assert count == 1
    config.write_text(text)

    argv = ["--bind", "tcp://127.0.0.1:0", "--log-dir", str(log_dir), "--prefix", args.prefix]
    argv += ["--no-echo", "--pidfile", str(pidfile)]
    client = (
        "import sys\nfrom roxxel import Logger\n"
        "with Logger(sys.argv[1], 'run', aggregator=sys.argv[2]) as lg:\n"
        "    lg.log_message(f'batch {sys.argv[3]}')\n"
        "    lg.log_metrics_summary(int(sys.argv[3]), {'loss': 0.5})\n"
    )
    env = python_env()
    files = {name: log_dir / f"{args.prefix}_{name}" for name in ("system.log", "metrics.csv")}
    with running_daemon(argv, tmp_path / "daemon.out", env) as endpoint:
        for step in ("1", "2"):
            if step == "2":
                result = subprocess.run(
                    [logrotate, "-v", "-f", "-s", str(tmp_path / "state"), str(config)],
                    capture_output=True,
                    text=True,
                    timeout=60,
                )
                assert result.returncode == 0, result.stdout + result.stderr
                assert "running postrotate script" in result.stdout + result.stderr
                # The daemon makes the new files when the SIGHUP reaches it.
                wait_for(lambda: all(p.exists() for p in files.values()), what="reopened files")
            sent = subprocess.run(
                [sys.executable, "-c", client, str(tmp_path / "client"), endpoint, step],
                capture_output=True,
                text=True,
                env=env,
                timeout=120,
            )
            assert sent.returncode == 0, sent.stderr
    assert "batch 1" in read(f"{files['system.log']}.1")
    assert "batch 2" not in read(f"{files['system.log']}.1")
    assert "batch 2" in read(files["system.log"])
    assert read(f"{files['metrics.csv']}.1").splitlines() == ["step,loss", "1,0.50000"]
    assert read(files["metrics.csv"]).splitlines() == ["step,loss", "2,0.50000"]
    assert not pidfile.exists()  # the daemon removes it at exit


# -- Kubernetes --------------------------------------------------------------------


def load_yaml(path: Path) -> dict[str, dict]:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    by_kind: dict[str, dict] = {}
    for doc in docs:
        assert doc["kind"] not in by_kind, f"{path}: two {doc['kind']} objects"
        by_kind[doc["kind"]] = doc
    return by_kind


def only_container(pod_spec: dict) -> dict:
    (container,) = pod_spec["containers"]
    return container


def deployment_daemon_argv() -> list[str]:
    deployment = load_yaml(K8S_AGGREGATOR)["Deployment"]
    container = only_container(deployment["spec"]["template"]["spec"])
    return [*container["command"], *container["args"]]


def test_kubernetes_aggregator_objects_fit_together() -> None:
    objects = load_yaml(K8S_AGGREGATOR)
    assert set(objects) == {"Deployment", "Service", "PersistentVolumeClaim"}
    deployment, service, claim = (
        objects["Deployment"],
        objects["Service"],
        objects["PersistentVolumeClaim"],
    )
    spec = deployment["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"]["type"] == "Recreate"  # the run lock: never two pods at once
    pod = spec["template"]
    labels = pod["metadata"]["labels"]
    assert spec["selector"]["matchLabels"].items() <= labels.items()

    container = only_container(pod["spec"])
    argv = deployment_daemon_argv()
    assert argv[0] == "roxxel-aggregator"
    args = daemon_args(argv[1:], f"{K8S_AGGREGATOR} container")
    port = tcp_port(args.bind)
    assert args.bind.startswith("tcp://0.0.0.0:")
    (container_port,) = container["ports"]
    assert container_port["containerPort"] == port
    assert container["readinessProbe"]["tcpSocket"]["port"] == port
    assert pod["spec"]["terminationGracePeriodSeconds"] > args.drain_senders + 10

    (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == args.log_dir]
    (volume,) = [v for v in pod["spec"]["volumes"] if v["name"] == mount["name"]]
    assert volume["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]

    assert service["spec"]["type"] == "ClusterIP"
    assert service["spec"]["selector"].items() <= labels.items()
    (service_port,) = service["spec"]["ports"]
    assert service_port["port"] == port
    target = service_port.get("targetPort", service_port["port"])
    assert target in (port, container_port.get("name"))


def test_kubernetes_job_is_indexed_and_points_at_the_service() -> None:
    service = load_yaml(K8S_AGGREGATOR)["Service"]
    (job,) = load_yaml(K8S_JOB).values()
    assert job["kind"] == "Job"
    spec = job["spec"]
    assert spec["completionMode"] == "Indexed"  # JOB_COMPLETION_INDEX: roxxel's rank
    assert spec["parallelism"] == spec["completions"] == 4
    container = only_container(spec["template"]["spec"])
    env = {e["name"]: e["value"] for e in container["env"]}
    service_port = service["spec"]["ports"][0]["port"]
    assert env["ROXXEL_AGGREGATOR"] == f"tcp://{service['metadata']['name']}:{service_port}"


def test_kubernetes_validate_accepts_the_manifests() -> None:
    validate = tool("kubernetes-validate")
    result = subprocess.run(
        [validate, "--strict", str(K8S_AGGREGATOR), str(K8S_JOB)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ERROR" not in result.stdout + result.stderr


def test_kubernetes_job_command_runs_against_the_deployment_daemon(tmp_path: Path) -> None:
    """The Job's command, as 4 indexed pods' processes, to the Deployment's daemon command."""
    argv = deployment_daemon_argv()[1:]
    argv = replace_daemon_option(argv, "--bind", "tcp://127.0.0.1:0")
    argv = replace_daemon_option(argv, "--log-dir", str(tmp_path / "logs"))
    args = daemon_args(argv, "the Deployment's args")
    (job,) = load_yaml(K8S_JOB).values()
    container = only_container(job["spec"]["template"]["spec"])
    command = [*container["command"], *container["args"]]
    assert command[0] == "python"
    pods = range(job["spec"]["completions"])
    procs: list[subprocess.Popen] = []
    with contextlib.ExitStack() as cleanup:
        endpoint = cleanup.enter_context(
            running_daemon(argv, tmp_path / "daemon.out", python_env())
        )
        cleanup.callback(lambda: [p.kill() for p in procs if p.poll() is None])
        for index in pods:
            pod_env = {e["name"]: e["value"] for e in container["env"]}
            pod_env.update(ROXXEL_AGGREGATOR=endpoint, JOB_COMPLETION_INDEX=str(index))
            pod_tmp = tmp_path / f"pod{index}"
            pod_tmp.mkdir()
            # The manifest's /tmp/roxxel is the pod's own emptyDir: give each its own.
            code = command[2].replace("/tmp/roxxel", str(pod_tmp))
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-c", code],
                    env=python_env(**pod_env),
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                )
            )
        for proc in procs:
            out, err = proc.communicate(timeout=120)
            assert proc.returncode == 0, err
    system_log = read(tmp_path / "logs" / f"{args.prefix}_system.log")
    for index in pods:
        assert f"rank {index} done" in system_log
    rows = read(tmp_path / "logs" / f"{args.prefix}_metrics.csv").splitlines()
    assert len(rows) == 1 + 100 * len(pods), rows[:3]


# -- SLURM -------------------------------------------------------------------------


def sbatch_lines() -> list[str]:
    """The script's logical lines: continuation lines joined, comments dropped."""
    lines, pending = [], ""
    for raw in SBATCH.read_text().splitlines():
        stripped = raw.strip()
        if not pending and stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        lines.append(pending + stripped)
        pending = ""
    return lines


def test_sbatch_script_is_valid_bash() -> None:
    result = subprocess.run(["bash", "-n", str(SBATCH)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_shellcheck_accepts_the_sbatch_script() -> None:
    shellcheck = tool("shellcheck")
    result = subprocess.run(
        [shellcheck, "--shell=bash", str(SBATCH)], capture_output=True, text=True, timeout=120
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

    def expand(word: str) -> str:
        def value(match: re.Match) -> str:
            name = match.group(1) or match.group(2)
            assert name in sample, f"{SBATCH}: unexpected variable ${name} in the daemon's args"
            return sample[name]

        return re.sub(r"\$\{(\w+)\}|\$(\w+)", value, word)

    start = words.index("$aggregator_bin") + 1
    args = daemon_args([expand(w) for w in words[start:]], f"{SBATCH} daemon step")
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
with Logger(sys.argv[1], "train") as lg:
    assert lg.rank == int(os.environ["SLURM_PROCID"]), lg.rank
    lg.log_message(f"rank {lg.rank} of {lg.world_size} via {lg.endpoint}", logging.WARNING)
    lg.log_metrics_summary(10 + lg.rank, {"loss": 0.25}, all_ranks=True)
    if sys.argv[2] == "hang":  # until SIGTERM
        Path(sys.argv[1] + f"-started{lg.rank}").touch()
        time.sleep(120)
sys.exit(int(sys.argv[2]))
"""


def start_sbatch(tmp_path: Path, train_arg: str) -> tuple[subprocess.Popen, Path]:
    """train.sbatch under stand-in Slurm commands, 4 tasks on "localhost"."""
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
    )
    argv = ["bash", str(SBATCH), sys.executable, str(train), str(tmp_path / "client"), train_arg]
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


def check_daemon_stopped(tmp_path: Path, state: Path, steps: list[str]) -> str:
    """The daemon's ready line, after checking it got SIGTERM by scancel and is gone."""
    out = read(tmp_path / "logs" / "roxxel-train_4242_aggregator.out")
    ready = next(ln for ln in out.splitlines() if " ready on " in ln)
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

    logs, prefix = tmp_path / "logs", "roxxel-train_4242"  # $SLURM_SUBMIT_DIR/logs
    system_log = read(logs / f"{prefix}_system.log")
    for rank in range(4):
        assert f"rank {rank} of 4 via tcp://localhost:{port}" in system_log, system_log
    rows = read(logs / f"{prefix}_metrics.csv").splitlines()
    assert rows[0] == "step,rank,loss", rows
    assert sorted(rows[1:]) == [f"{10 + r},{r},0.25000" for r in range(4)], rows
    # Every rank was a client only: nothing written on the training side.
    client = tmp_path / "client"
    assert not client.exists() or not any(client.iterdir())


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


# -- Docker ------------------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    instructions, pending = [], ""
    for raw in DOCKERFILE.read_text().splitlines():
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        word, _, rest = (pending + stripped).partition(" ")
        instructions.append((word.upper(), rest.strip()))
        pending = ""
    assert not pending
    return instructions


def test_dockerfile_instructions() -> None:
    instructions = dockerfile_instructions()
    assert instructions[0] == ("FROM", "python:3.11-slim")
    by_word: dict[str, list[str]] = {}
    for word, rest in instructions:
        by_word.setdefault(word, []).append(rest)

    (entrypoint,) = by_word["ENTRYPOINT"]
    (cmd,) = by_word["CMD"]
    entrypoint, cmd = json.loads(entrypoint), json.loads(cmd)  # exec form: signals reach it
    assert entrypoint == ["roxxel-aggregator"]
    args = daemon_args([*entrypoint[1:], *cmd], f"{DOCKERFILE} ENTRYPOINT+CMD")
    assert args.bind == "tcp://0.0.0.0:5555"
    assert by_word["EXPOSE"] == [str(tcp_port(args.bind))]
    assert by_word["VOLUME"] == [args.log_dir]
    assert by_word["STOPSIGNAL"] == ["SIGTERM"]
    (user,) = by_word["USER"]
    assert user.split(":")[0] not in ("root", "0")
    # The user is in effect for the daemon: USER comes after the last RUN.
    words = [w for w, _ in instructions]
    assert words.index("USER") > len(words) - 1 - words[::-1].index("RUN")
    assert any("pip install ." in run for run in by_word["RUN"])
    # Every COPY source exists in the build context (the repository root).
    for copy in by_word["COPY"]:
        *sources, _ = copy.split()
        for source in sources:
            assert (REPO / source).exists(), f"COPY {source}: not in the repository"


def test_dockerfile_copies_enough_to_install(tmp_path: Path) -> None:
    """What the Dockerfile COPYs builds a wheel with both packages and the console script."""
    context = tmp_path / "src"
    context.mkdir()
    for word, rest in dockerfile_instructions():
        if word == "COPY":
            *sources, _ = rest.split()
            for source in sources:
                src = REPO / source
                if src.is_dir():
                    ignore = shutil.ignore_patterns("__pycache__")
                    shutil.copytree(src, context / source, ignore=ignore)
                else:
                    shutil.copy2(src, context / source)
    result = subprocess.run(
        # As `pip install .` in the image: an isolated build (setuptools from the index).
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(tmp_path / "dist")]
        + [str(context)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    (wheel,) = (tmp_path / "dist").glob("roxxel-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        assert "aggregator/cli.py" in names and "roxxel/logger.py" in names
        (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
        assert "roxxel-aggregator = aggregator.cli:main" in zf.read(entry_points).decode()


def test_hadolint_accepts_the_dockerfile() -> None:
    hadolint = tool("hadolint")
    result = subprocess.run(
        [hadolint, str(DOCKERFILE)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
