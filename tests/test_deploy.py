"""deploy/k8s/: every manifest parses, and what must agree with the code does (the CLI commands
parse with the real parser and the run config builds a RunSpec, env var names, ports, Secret and
ConfigMap references, volumes); nats.conf passes the real `nats-server -t`; every manifest validates strictly against the
Kubernetes API schemas that the kubernetes-validate package ships (offline, no schema download),
and a typo'd field is caught."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from jmeta import cli
from jmeta.distributed import settings
from jmeta.distributed.local import LocalNats, nats_server_binary

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "deploy" / "k8s"
ENV_NAMES = {v for k, v in vars(settings).items() if k.startswith("ENV_")}


def docs():
    out = []
    for path in sorted(K8S.glob("*.yaml")):
        out += [(path.name, d) for d in yaml.safe_load_all(path.read_text()) if d]
    return out


def find(kind, name):
    matches = [d for _, d in docs() if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(matches) == 1, f"{kind}/{name}: {len(matches)} manifests"
    return matches[0]


def container(deployment_name):
    (c,) = find("Deployment", deployment_name)["spec"]["template"]["spec"]["containers"]
    return c


def env_of(c):
    return {e["name"]: e for e in c.get("env", [])}


def parse(command):
    assert command[0] == "jmeta"  # the console script of pyproject's [project.scripts]
    argv, task_args = cli._pop_task_args(list(command[1:]))
    args, extra = cli._parser().parse_known_args(argv)
    return args, task_args + extra


def test_every_manifest_parses_with_the_expected_objects():
    kinds = sorted((d["kind"], d["metadata"]["name"]) for _, d in docs())
    assert kinds == sorted([
        ("ConfigMap", "nats-config"), ("Service", "nats"), ("StatefulSet", "nats"),
        ("Secret", "jmeta-nats-auth"), ("ConfigMap", "jmeta-run-config"),
        ("PersistentVolumeClaim", "jmeta-checkpoints"), ("Deployment", "jmeta-trainer"),
        ("Deployment", "jmeta-sampler")])
    for _, d in docs():
        assert {"apiVersion", "kind", "metadata"} <= set(d)


def test_ports_agree_with_settings():
    ports = {p["name"]: p["port"] for p in find("Service", "nats")["spec"]["ports"]}
    assert ports == {"client": settings.CLIENT_PORT, "monitor": settings.MONITOR_PORT}
    (c,) = find("StatefulSet", "nats")["spec"]["template"]["spec"]["containers"]
    assert {p["name"]: p["containerPort"] for p in c["ports"]} == ports
    conf = find("ConfigMap", "nats-config")["data"]["nats.conf"]
    assert f"listen: 0.0.0.0:{settings.CLIENT_PORT}" in conf
    assert f"http: 0.0.0.0:{settings.MONITOR_PORT}" in conf


@pytest.mark.parametrize("name", ["jmeta-trainer", "jmeta-sampler"])
def test_env_vars_are_the_ones_the_code_reads(name):
    env = env_of(container(name))
    assert set(env) <= ENV_NAMES, set(env) - ENV_NAMES
    assert {settings.ENV_URL, settings.ENV_RUN, settings.ENV_USER, settings.ENV_PASSWORD} <= set(env)
    url = env[settings.ENV_URL]["value"]
    service = find("Service", "nats")["metadata"]["name"]
    assert url == f"nats://{service}:{settings.CLIENT_PORT}"
    run_ref = env[settings.ENV_RUN]["valueFrom"]["configMapKeyRef"]
    run = find("ConfigMap", run_ref["name"])["data"][run_ref["key"]]
    assert settings.check_run_name(run) == run


def test_secret_references_exist():
    secret = find("Secret", "jmeta-nats-auth")
    keys = set(secret["stringData"])
    refs = []
    for _, d in docs():
        if d["kind"] in ("Deployment", "StatefulSet"):
            for c in d["spec"]["template"]["spec"]["containers"]:
                refs += [e["valueFrom"]["secretKeyRef"] for e in c.get("env", [])
                         if "secretKeyRef" in e.get("valueFrom", {})]
    assert len(refs) == 6  # user and password for the server, the trainer and the samplers
    for ref in refs:
        assert ref["name"] == secret["metadata"]["name"] and ref["key"] in keys
    # the server's and the clients' credentials are the same keys
    server = env_of(find("StatefulSet", "nats")["spec"]["template"]["spec"]["containers"][0])
    trainer = env_of(container("jmeta-trainer"))
    assert (server["NATS_USER"]["valueFrom"] == trainer[settings.ENV_USER]["valueFrom"])
    assert (server["NATS_PASSWORD"]["valueFrom"] == trainer[settings.ENV_PASSWORD]["valueFrom"])


def test_volume_mounts_refer_to_declared_volumes():
    for _, d in docs():
        if d["kind"] not in ("Deployment", "StatefulSet"):
            continue
        spec = d["spec"]["template"]["spec"]
        declared = {v["name"] for v in spec.get("volumes", [])}
        declared |= {t["metadata"]["name"] for t in d["spec"].get("volumeClaimTemplates", [])}
        for c in spec["containers"]:
            for m in c.get("volumeMounts", []):
                assert m["name"] in declared, (d["metadata"]["name"], m["name"])
        for v in spec.get("volumes", []):
            if "configMap" in v:
                find("ConfigMap", v["configMap"]["name"])
            if "persistentVolumeClaim" in v:
                find("PersistentVolumeClaim", v["persistentVolumeClaim"]["claimName"])


def test_trainer_command_parses_and_its_config_builds_a_run_spec(tmp_path):
    c = container("jmeta-trainer")
    args, extra = parse(c["command"])
    assert args.command == "trainer" and not extra
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    assert args.config == f"{mounts['config']}/run.yaml"
    assert args.run_dir.startswith(mounts["checkpoints"] + "/")
    assert find("Deployment", "jmeta-trainer")["spec"]["replicas"] == 1
    assert find("Deployment", "jmeta-trainer")["spec"]["strategy"]["type"] == "Recreate"
    run_yaml = tmp_path / "run.yaml"
    run_yaml.write_text(find("ConfigMap", "jmeta-run-config")["data"]["run.yaml"])
    args.config = str(run_yaml)
    spec, iterations, _, _ = cli._spec_from_args(args, extra, command="trainer")
    assert (spec.algo, spec.env) == ("maml-rl", "point-nav") and iterations == 500
    assert spec.config().num_tasks % args.tasks_per_batch == 0


def test_sampler_command_parses_and_its_id_is_the_pod_name():
    c = container("jmeta-sampler")
    args, extra = parse(c["command"])
    assert args.command == "sampler" and not extra
    env = env_of(c)
    assert env[settings.ENV_SAMPLER_ID]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert find("Deployment", "jmeta-sampler")["spec"]["replicas"] >= 1


def test_nats_conf_is_valid_for_the_real_server(tmp_path):
    conf = find("ConfigMap", "nats-config")["data"]["nats.conf"]
    # the cluster's paths, moved under tmp_path for this check
    conf = conf.replace('"/data/jetstream"', f'"{tmp_path / "js"}"')
    path = tmp_path / "nats.conf"
    path.write_text(conf)
    env = {"NATS_USER": "u", "NATS_PASSWORD": "p", "PATH": "/usr/bin:/bin"}
    proc = subprocess.run([nats_server_binary(), "-c", str(path), "-t"], env=env,
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"max_payload: {LocalNats('.').max_payload}" in conf


def test_dockerfile_installs_the_distributed_extra():
    text = (ROOT / "deploy" / "Dockerfile").read_text()
    assert 'pip install ".[distributed]"' in text
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert "distributed = [" in pyproject and 'jmeta = "jmeta.cli:entry"' in pyproject
    for line in text.splitlines():  # every COPY source exists
        if line.startswith("COPY"):
            for src in line.split()[1:-1]:
                assert (ROOT / src).exists(), src


def _kubernetes_validate(*paths):
    return subprocess.run([sys.executable, "-m", "kubernetes_validate", "--strict", "--quiet",
                           *map(str, paths)], capture_output=True, text=True, timeout=120)


def test_manifests_validate_against_the_kubernetes_schemas(tmp_path):
    proc = _kubernetes_validate(*sorted(K8S.glob("*.yaml")))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # the validator is strict: a misspelt field in a copy of a manifest fails
    bad = tmp_path / "samplers.yaml"
    bad.write_text((K8S / "samplers.yaml").read_text().replace("replicas:", "replicaz:", 1))
    proc = _kubernetes_validate(bad)
    assert proc.returncode != 0 and "replicaz" in proc.stdout + proc.stderr
