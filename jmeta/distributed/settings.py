"""Names shared by the samplers, the trainer, the CLI and the Kubernetes manifests (deploy/k8s/).

Everything here is a plain constant or a pure function of the run name, so the manifests' test
(tests/test_deploy.py) can check the manifests against the code without a NATS server.
"""

from __future__ import annotations

import re

# Environment variables read by ``jmeta sampler`` / ``jmeta trainer`` (flags override them).
ENV_URL = "JMETA_NATS_URL"            # e.g. nats://nats:4222 (tls://... for TLS)
ENV_USER = "JMETA_NATS_USER"          # user/password authentication
ENV_PASSWORD = "JMETA_NATS_PASSWORD"
ENV_TOKEN = "JMETA_NATS_TOKEN"        # token authentication (instead of user/password)
ENV_TLS_CA = "JMETA_NATS_TLS_CA"      # PEM file: the CA that signed the server's certificate
ENV_TLS_CERT = "JMETA_NATS_TLS_CERT"  # PEM files: a client certificate (mutual TLS), optional
ENV_TLS_KEY = "JMETA_NATS_TLS_KEY"
ENV_RUN = "JMETA_RUN"                 # the run name (stream, subjects and bucket derive from it)
ENV_SAMPLER_ID = "JMETA_SAMPLER_ID"   # a sampler's id (default: host name + pid)

DEFAULT_URL = "nats://127.0.0.1:4222"
CLIENT_PORT = 4222
MONITOR_PORT = 8222

_RUN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")


def check_run_name(run: str) -> str:
    """The run name, validated: letters, digits, ``_`` and ``-`` (NATS stream/bucket names)."""
    if not isinstance(run, str) or not _RUN_NAME.match(run):
        raise ValueError(f"run: expected 1-64 letters, digits, '_' or '-' (starting with a "
                         f"letter or digit), got {run!r}")
    return run


def stream_name(run: str) -> str:
    """The JetStream stream holding the run's trajectory batches."""
    return "JMETA_TRAJ_" + check_run_name(run).replace("-", "_")


def trajectory_subject(run: str) -> str:
    """The subject samplers publish trajectory batches to."""
    return f"jmeta.{check_run_name(run)}.traj"


def params_bucket(run: str) -> str:
    """The JetStream key-value bucket with the run's spec (key ``spec``) and its latest
    parameters (key ``params``, versioned by the trainer's iteration)."""
    return "jmeta_" + check_run_name(run).replace("-", "_")


def consumer_name(run: str) -> str:
    """The trainer's durable pull consumer."""
    return "trainer_" + check_run_name(run).replace("-", "_")
