"""The wire format (jmeta.distributed.schema) and the sample/learn split the samplers rely on."""

import json
import struct

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jmeta
from jmeta.algorithms import maml_rl, rl2
from jmeta.distributed import schema, settings
from jmeta.distributed.connection import NatsOptions
from jmeta.distributed.protocol import DistributedError, RunInfo, rollouts_template, spec_sha256
from jmeta.training.spec import RunSpec


def tree():
    return {"a": np.arange(6, dtype=np.float32).reshape(2, 3),
            "b": [np.array([True, False]), np.array(7, np.int32)],
            "c": np.array([1, 2], np.uint32)}


def test_layout_by_hand():
    msg = schema.encode({"x": np.array([1.5, -2.0], np.float32), "y": np.array([3], np.int32)},
                        "params", {"version": 4})
    magic, version, hlen = struct.unpack_from("<4sHI", msg)
    assert (magic, version) == (b"JMTB", 1)
    header = json.loads(msg[10:10 + hlen])
    assert header["kind"] == "params" and header["meta"] == {"version": 4}
    assert [a["name"] for a in header["arrays"]] == ["['x']", "['y']"]
    x, y = header["arrays"]
    assert (x["offset"], x["nbytes"], y["offset"], y["nbytes"]) == (0, 8, 8, 4)
    data = msg[10 + hlen:]
    assert np.frombuffer(data[:8], "<f4").tolist() == [1.5, -2.0]
    assert np.frombuffer(data[8:12], "<i4").tolist() == [3]


def test_round_trip_and_alignment():
    t = tree()
    msg = schema.encode(t, "trajectories", {"batch_id": "s-1"})
    header, _ = schema.read_header(msg)
    assert all(a["offset"] % 8 == 0 for a in header["arrays"])
    out, meta = schema.decode(msg, jax.eval_shape(lambda: t), "trajectories")
    assert meta == {"batch_id": "s-1"}
    chex.assert_trees_all_equal(out, t)
    assert out["b"][0].dtype == np.bool_ and out["c"].dtype == np.uint32


@pytest.mark.parametrize("mutate, message", [
    (lambda m: b"XXXX" + m[4:], "bad magic"),
    (lambda m: m[:4] + struct.pack("<H", 2) + m[6:], "schema version 2"),
    (lambda m: m[:12], "truncated header"),
    (lambda m: m[:-4], "do not fit the message"),
    (lambda m: m[:5], "shorter than"),
])
def test_malformed_messages_are_refused(mutate, message):
    msg = schema.encode(tree(), "trajectories", {})
    with pytest.raises(schema.SchemaError, match=message):
        schema.decode(mutate(msg), jax.eval_shape(tree), "trajectories")


def test_template_mismatches_are_named():
    msg = schema.encode(tree(), "trajectories", {})
    other = tree()
    other["a"] = np.zeros((2, 4), np.float32)
    with pytest.raises(schema.SchemaError, match=r"\['a'\]: got float32\[2, 3\], expected "
                                                 r"float32\[2, 4\]"):
        schema.decode(msg, other, "trajectories")
    with pytest.raises(schema.SchemaError, match="missing"):
        schema.decode(msg, {**tree(), "d": np.zeros(1)}, "trajectories")
    with pytest.raises(schema.SchemaError, match="'trajectories' message where 'params'"):
        schema.decode(msg, tree(), "params")


def test_unserialisable_inputs():
    with pytest.raises(schema.SchemaError, match="PRNG key"):
        schema.encode({"k": jax.random.key(0)}, "params", {})
    with pytest.raises(schema.SchemaError, match="not JSON-serialisable"):
        schema.encode(tree(), "params", {"x": object()})
    with pytest.raises(schema.SchemaError, match="kind"):
        schema.encode(tree(), "weights", {})


def test_names_and_options():
    assert settings.stream_name("nav-1") == "JMETA_TRAJ_nav_1"
    assert settings.trajectory_subject("nav-1") == "jmeta.nav-1.traj"
    for bad in ("", "a.b", "a b", "-x", "x" * 65):
        with pytest.raises(ValueError, match="run:"):
            settings.check_run_name(bad)
    env = {settings.ENV_URL: "nats://h:1", settings.ENV_USER: "u", settings.ENV_PASSWORD: "s3cr3t"}
    opts = NatsOptions.from_env(env=env)
    assert (opts.url, opts.user, opts.password, opts.uses_tls) == ("nats://h:1", "u", "s3cr3t", False)
    assert "s3cr3t" not in repr(opts)  # credentials stay out of logs
    assert NatsOptions.from_env("tls://h:2", env={}).uses_tls
    for kwargs, message in [({"url": "http://h:1"}, "expected a URL"),
                            ({"url": "nats://u:p@h:1"}, "not in the URL"),
                            ({"user": "u"}, "both"),
                            ({"token": "t", "user": "u", "password": "p"}, "either a token"),
                            ({"tls_ca": "/nonexistent.pem"}, "does not exist"),
                            ({"url": "nats://h:x"}, "bad port")]:
        with pytest.raises(ValueError, match=message):
            NatsOptions(**kwargs)


def test_run_info_round_trip():
    spec = RunSpec("maml-rl", "point-nav", algo_config={"num_tasks": 4})
    info = RunInfo(spec=spec, tasks_per_batch=2, batches_per_version=2, max_lag=0)
    assert RunInfo.from_json(info.to_json()) == info
    tampered = json.loads(info.to_json())
    tampered["spec"]["seed"] = 1
    with pytest.raises(DistributedError, match="does not match its hash"):
        RunInfo.from_json(json.dumps(tampered))
    assert spec_sha256(spec) != spec_sha256(RunSpec("maml-rl", "point-nav"))


# --- the sample/learn split -------------------------------------------------------------------
def _maml():
    env, tasks = jmeta.make("point-nav")
    config = maml_rl.Config(num_tasks=4, num_episodes=3, num_steps=10, hidden_sizes=(8, 8))
    return maml_rl.make(config, env, tasks)


def _rl2():
    env, tasks = jmeta.make("bandit", num_arms=3)
    config = rl2.Config(num_tasks=4, trial_episodes=4, hidden_size=8, num_minibatches=2,
                        num_epochs=2)
    return rl2.make(config, env, tasks)


@pytest.mark.parametrize("make, split", [(_maml, 2), (_rl2, 3)])
def test_update_is_learn_of_sample(make, split):
    algo = make()
    state = algo.init(jax.random.key(0))
    want, want_metrics = jax.jit(algo.update)(state)
    data = jax.jit(algo.sample)(state.params, jax.random.split(state.key, split)[1])
    got, got_metrics = jax.jit(algo.learn)(state, data)
    chex.assert_trees_all_close(got.params, want.params, rtol=1e-5, atol=1e-6)
    chex.assert_trees_all_equal(jax.random.key_data(got.key), jax.random.key_data(want.key))
    chex.assert_trees_all_close(got_metrics, want_metrics, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("make", [_maml, _rl2])
def test_batches_from_two_samplers_concatenate(make):
    # Two half batches (two samplers), shipped through the wire format, then learned from.
    algo = make()
    state = algo.init(jax.random.key(1))
    sample = jax.jit(algo.sample, static_argnums=2)
    halves = [sample(state.params, jax.random.key(i), 2) for i in (5, 6)]
    template = rollouts_template(algo, state.params, 2)
    shipped = [schema.decode(schema.encode(jax.device_get(h), "trajectories", {}), template,
                             "trajectories")[0] for h in halves]
    data = jax.tree.map(lambda *xs: np.concatenate(xs), *shipped)
    direct = jax.tree.map(lambda *xs: jnp.concatenate(xs), *halves)
    learn = chex.assert_max_traces(algo.learn, n=1)
    learn = jax.jit(learn)
    a, _ = learn(state, data)
    b, _ = learn(state, direct)  # same shapes: no second trace
    chex.assert_trees_all_close(a.params, b.params, rtol=1e-6, atol=1e-7)
    assert not jax.tree.all(jax.tree.map(lambda x, y: bool(jnp.all(x == y)), a.params,
                                         state.params))


def test_rl2_learn_wants_num_tasks_trials():
    algo = _rl2()
    state = algo.init(jax.random.key(0))
    data = algo.sample(state.params, jax.random.key(1), 2)
    with pytest.raises(ValueError, match="learn takes 4 trials"):
        algo.learn(state, data)
