"""What samplers and the trainer agree on: the run record, the JetStream objects, the templates.

JetStream layout of a run ``NAME`` (names from :mod:`jmeta.distributed.settings`):

* key-value bucket ``jmeta_NAME`` (history 1, file storage):
  ``run`` — JSON :class:`RunInfo` (the spec, its SHA-256, ``tasks_per_batch``,
  ``batches_per_version``, ``max_lag``), written by the trainer at start;
  ``params`` — the latest parameters as a schema-1 ``params`` message, ``meta.version`` = the
  trainer's iteration that produced them.
* stream ``JMETA_TRAJ_NAME`` on subject ``jmeta.NAME.traj``: work-queue retention (a message is
  deleted once the trainer acks it), file storage, ``discard=new`` with ``max_bytes`` (a full
  stream refuses publishes, so samplers back off instead of batches being dropped silently),
  a duplicate window for the ``Nats-Msg-Id`` header (= the batch id): a sampler that republishes
  after a lost acknowledgement does not store the batch twice.
* durable pull consumer ``trainer_NAME`` (explicit acks).
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import time
from typing import Any

import jax

from jmeta.distributed import settings
from jmeta.training.spec import RunSpec

__all__ = ["RunInfo", "RUN_KEY", "PARAMS_KEY", "spec_sha256", "params_template",
           "rollouts_template", "DistributedError", "open_bucket"]

RUN_KEY = "run"
PARAMS_KEY = "params"
RUN_INFO_SCHEMA = 1


class DistributedError(RuntimeError):
    """A sampler/trainer problem with a one-line explanation (bad run, spec mismatch, ...)."""


def spec_sha256(spec: RunSpec) -> str:
    """SHA-256 of the spec's canonical JSON (equal specs, equal hashes)."""
    return hashlib.sha256(spec.to_json().encode()).hexdigest()


@dataclasses.dataclass(frozen=True)
class RunInfo:
    """The run record in the bucket (key ``run``).

    Attributes:
      spec: the run's :class:`RunSpec` (samplers build env, tasks and algorithm from it).
      tasks_per_batch: tasks per trajectory batch (divides the algorithm's ``num_tasks``).
      batches_per_version: batches one sampler makes from one parameter version before it waits
        for the next (``num_tasks / tasks_per_batch`` by default: one sampler alone can feed an
        update; more samplers share it and the surplus is dropped as stale).
      max_lag: the oldest usable parameter version is ``iteration - max_lag``.
    """

    spec: RunSpec
    tasks_per_batch: int
    batches_per_version: int
    max_lag: int

    def to_json(self) -> str:
        return json.dumps({"schema": RUN_INFO_SCHEMA, "spec": self.spec.to_dict(),
                           "spec_sha256": spec_sha256(self.spec),
                           "tasks_per_batch": self.tasks_per_batch,
                           "batches_per_version": self.batches_per_version,
                           "max_lag": self.max_lag}, sort_keys=True)

    @classmethod
    def from_json(cls, text: bytes | str) -> "RunInfo":
        try:
            data = json.loads(text)
            if data.get("schema") != RUN_INFO_SCHEMA:
                raise DistributedError(f"run record: schema {data.get('schema')!r}, this jmeta "
                                       f"reads {RUN_INFO_SCHEMA}")
            spec = RunSpec.from_dict(data["spec"])
            if spec_sha256(spec) != data["spec_sha256"]:
                raise DistributedError("run record: the spec does not match its hash")
            return cls(spec=spec, tasks_per_batch=int(data["tasks_per_batch"]),
                       batches_per_version=int(data["batches_per_version"]),
                       max_lag=int(data["max_lag"]))
        except (KeyError, TypeError, ValueError, json.JSONDecodeError) as e:
            raise DistributedError(f"run record: unreadable ({e})") from None


def params_template(algo, seed: int) -> Any:
    """``jax.eval_shape`` of the algorithm's parameters."""
    return jax.eval_shape(algo.init, jax.random.key(seed)).params


def rollouts_template(algo, params: Any, num_tasks: int) -> Any:
    """``jax.eval_shape`` of ``algo.sample(params, key, num_tasks)``."""
    return jax.eval_shape(lambda p, k: algo.sample(p, k, num_tasks), params, jax.random.key(0))


async def open_bucket(js, run: str, wait: float):
    """The run's key-value bucket, waiting up to ``wait`` seconds for the trainer to make it.

    Raises:
      DistributedError: no such bucket after ``wait`` seconds.
    """
    from nats.js.errors import BucketNotFoundError, NotFoundError

    bucket = settings.params_bucket(run)
    deadline = time.monotonic() + wait
    while True:
        try:
            return await js.key_value(bucket)
        except (BucketNotFoundError, NotFoundError):
            if time.monotonic() >= deadline:
                raise DistributedError(f"run {run!r}: no bucket {bucket!r} on the server after "
                                       f"{wait:g} s; start `jmeta trainer --run {run}` first")
            await asyncio.sleep(0.25)
