"""deploy/kubernetes: the aggregator's Deployment, Service and claim fit
together and the Job is indexed and points at the Service; both checked by
``kubernetes-validate`` where it is installed; the Job's command run as 4
indexed pods' processes against the Deployment's daemon command.

A missing optional tool skips only the check that needs it, with the reason.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
from pathlib import Path

import yaml

from .conftest import python_env, read
from .deploy_helpers import DEPLOY, daemon_args, running_daemon, tcp_port, tool

K8S_AGGREGATOR = DEPLOY / "kubernetes" / "aggregator.yaml"
K8S_JOB = DEPLOY / "kubernetes" / "training-job.yaml"


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


def replace_daemon_option(argv: list[str], option: str, value: str) -> list[str]:
    out = list(argv)
    out[out.index(option) + 1] = value
    return out


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
    env = {e["name"]: e.get("value") for e in container["env"]}
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
    assert daemon_args(argv, "the Deployment's args").prefix is None  # a run per prefix
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
            pod_env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
            # The downward API's label, as the Job controller sets it on its pods.
            [run_env] = [e for e in container["env"] if e["name"] == "ROXXEL_RUN"]
            assert run_env["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.labels['job-name']"
            pod_env["ROXXEL_RUN"] = job["metadata"]["name"]
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
    prefix = job["metadata"]["name"]  # the Job's Logger's filename_prefix: its name
    system_log = read(tmp_path / "logs" / f"{prefix}_system.log")
    for index in pods:
        assert f"rank {index} done" in system_log
    rows = read(tmp_path / "logs" / f"{prefix}_metrics.csv").splitlines()
    assert len(rows) == 1 + 100 * len(pods), rows[:3]
