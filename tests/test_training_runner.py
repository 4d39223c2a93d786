"""The host-side Runner (jmeta/training): RunSpec, logs, checkpoints, exact resume, crash safety,
the non-finite guard. Tiny configs (2 tasks x 2 episodes, horizon 8, a 16-unit MLP): compilation
dominates, so one straight reference run is shared by the resume tests."""

import os
import shutil
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import struct as fstruct

from jax.experimental import io_callback

from jmeta.algorithms.base import Algorithm, scan_train
from jmeta.training import CheckpointError, Checkpoints, Runner, RunSpec, build, load
from jmeta.training import logs
from jmeta.training.checkpoint import state_to_tree

ROOT = Path(__file__).resolve().parent.parent
TINY_MAML = {"num_tasks": 2, "num_episodes": 2, "hidden_sizes": [16], "outer": "ppo",
             "num_outer_steps": 1, "eval_episodes": 2, "eval_steps": 1}
SPEC = RunSpec("maml-rl", "point-nav", {"horizon": 8}, TINY_MAML, seed=0)
CHUNK, ITERS = 2, 6


def assert_trees_equal(a, b):
    la, ta = jax.tree.flatten(a)
    lb, tb = jax.tree.flatten(b)
    assert ta == tb
    for x, y in zip(la, lb):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def assert_states_equal(a, b):
    assert_trees_equal(state_to_tree(a), state_to_tree(b))  # params, opt_state, key data, iteration


def metric_lines(run_dir):
    """metrics.jsonl records without the wall-clock time."""
    return [{k: v for k, v in r.items() if k != "time"}
            for r in logs.read_jsonl(Path(run_dir) / "metrics.jsonl")]


def events(run_dir):
    return logs.read_jsonl(Path(run_dir) / "events.jsonl")


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """The uninterrupted reference run: 3 chunks of 2 iterations."""
    run_dir = tmp_path_factory.mktemp("straight")
    state = Runner(SPEC, run_dir, chunk_size=CHUNK, keep=3, progress=False).run(ITERS)
    return run_dir, state


# --- RunSpec ----------------------------------------------------------------------------------
def test_spec_json_round_trip_and_build_every_algorithm():
    spec = RunSpec("maml-rl", "point-nav", {"horizon": 8, "ood_goal_radius": [0.5, 1.0]},
                   {**TINY_MAML, "first_order": True, "outer": "trpo"}, seed=3)
    again = RunSpec.from_json(spec.to_json())
    assert again == spec and again.to_json() == spec.to_json()
    assert again.env_kwargs["ood_goal_radius"] == (0.5, 1.0)  # JSON lists back as tuples
    assert spec.config().first_order and spec.config().hidden_sizes == (16,)
    env, tasks, algo = build(spec)
    assert env.name == "point-nav" and tasks.ood.split == "ood" and isinstance(algo, Algorithm)
    _, _, rl2_algo = build(RunSpec("rl2", "bandit", {"num_arms": 3}, {"hidden_size": 8}))
    assert isinstance(rl2_algo, Algorithm)
    for name in ("maml", "fomaml", "reptile", "meta-sgd"):
        spec = RunSpec(name, "sinusoid", {"num_shots": 3}, {"hidden_sizes": [8]})
        env, tasks, algo = build(RunSpec.from_json(spec.to_json()))
        assert env is None and tasks.train.kind == "regression" and isinstance(algo, Algorithm)
    assert spec.config().method == "meta_sgd"
    _, digits, _ = build(RunSpec("maml", "digits", {"num_shots": 1, "num_query": 2}))
    assert digits.train.output_dim == 5 and digits.test is not digits.train


@pytest.mark.parametrize("kwargs, message", [
    (dict(algo="ppo", env="point-nav"),
     "algo: unknown algo 'ppo'; valid: maml-rl, rl2, maml, fomaml, reptile, meta-sgd"),
    (dict(algo="rl2", env="mountain-car"),
     "env: unknown environment 'mountain-car' for algo 'rl2'; valid: "),
    (dict(algo="rl2", env="sinusoid"), "'sinusoid': it is a supervised task family"),
    (dict(algo="maml", env="point-nav"), "env: unknown task family 'point-nav' for algo 'maml'"),
    (dict(algo="maml-rl", env="point-nav", algo_config={"inner_rate": 0.1}),
     "algo_config: unknown field 'inner_rate' for 'maml-rl'; valid: num_tasks,"),
    (dict(algo="rl2", env="bandit", env_kwargs={"arms": 3}),
     "env_kwargs: unknown field 'arms' for environment 'bandit'; valid: num_arms,"),
    (dict(algo="maml-rl", env="point-nav", algo_config={"num_tasks": 0}),
     "algo_config: num_tasks: expected a positive int, got 0"),
    (dict(algo="maml-rl", env="point-nav", algo_config={"outer": "sgd"}), "algo_config: outer:"),
    (dict(algo="rl2", env="bandit", env_kwargs={"num_arms": -1}), "env_kwargs: num_arms:"),
    (dict(algo="fomaml", env="sinusoid", algo_config={"method": "maml"}),
     "algo_config: 'method' is set by the algo name"),
    (dict(algo="maml", env="sinusoid", env_kwargs={"classes": [1]}),
     "env_kwargs: unknown field 'classes' for task family 'sinusoid'"),
    (dict(algo="rl2", env="bandit", seed=-1), "seed: expected an int >= 0, got -1"),
    (dict(algo="rl2", env="bandit", env_kwargs=[1]), "env_kwargs: expected a dict"),
])
def test_spec_errors_name_the_field(kwargs, message):
    with pytest.raises(ValueError) as e:
        RunSpec(**kwargs)
    assert message in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("text, message", [
    ("{not json", "spec: not valid JSON"),
    ("[1, 2]", "spec: expected a JSON object, got list"),
    ('{"algo": "rl2"}', "spec: missing key 'env'"),
    ('{"algo": "rl2", "env": "bandit", "lr": 1}', "spec: unknown key 'lr'; valid: algo, env,"),
])
def test_spec_from_json_errors(text, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace("[", r"\[")):
        RunSpec.from_json(text)


def test_supervised_env_kwargs_values_checked_at_build():
    with pytest.raises(ValueError, match="env_kwargs: num_shots must be an int >= 1, got 0"):
        build(RunSpec("maml", "sinusoid", {"num_shots": 0}))


# --- logs --------------------------------------------------------------------------------------
@fstruct.dataclass
class _Physics:
    geom_friction: jax.Array  # [6]


@fstruct.dataclass
class _Task:
    target: jax.Array  # []
    goal: jax.Array  # [2]
    physics: _Physics
    horizon: int = fstruct.field(pytree_node=False, default=5)


def test_iteration_records_flatten_task_params_and_write_null(tmp_path):
    n, t = 2, 3  # iterations, tasks
    task = _Task(target=np.arange(n * t, dtype=np.float32).reshape(n, t),
                 goal=np.ones((n, t, 2), np.float32) * np.array([1.0, 2.0]),
                 physics=_Physics(geom_friction=np.full((n, t, 6), 0.5, np.float32)))
    metrics = {"return_post": np.array([1.0, np.nan]), "step_accepted": np.array([True, False]),
               "episode_returns": np.array([[1.0, 2.0], [3.0, 4.0]]),
               "task_returns_post": np.zeros((n, t)), "task_returns_pre": np.ones((n, t)),
               "task_params": task, "big": np.zeros((n, 100))}
    records = logs.iteration_records(metrics, first_iteration=5, times=[0.5, 1.0])
    assert [r["iteration"] for r in records] == [5, 6]
    r = records[1]
    assert r["metrics"]["step_accepted"] == 0.0 and r["metrics"]["episode_returns_1"] == 4.0
    assert "big" not in r["metrics"] and "task_params" not in r["metrics"]
    assert list(r["tasks"]) == ["return", "return_pre", "target", "goal_0", "goal_1",
                                "physics.geom_friction.mean"]
    assert r["tasks"]["target"] == [3.0, 4.0, 5.0] and r["tasks"]["goal_1"] == [2.0] * 3
    assert r["tasks"]["physics.geom_friction.mean"] == pytest.approx([0.5] * 3)
    log = logs.JsonlLog(tmp_path / "m.jsonl")
    log.write(records)
    text = (tmp_path / "m.jsonl").read_text()
    assert '"return_post": null' in text and "NaN" not in text
    assert logs.read_jsonl(tmp_path / "m.jsonl")[1]["metrics"]["return_post"] is None
    # a line cut by a crash is dropped on open; truncate_after keeps iterations <= 5
    with open(tmp_path / "m.jsonl", "a") as f:
        f.write('{"iteration": 7, "met')
    log = logs.JsonlLog(tmp_path / "m.jsonl")
    assert len(logs.read_jsonl(tmp_path / "m.jsonl")) == 2
    assert log.truncate_after(5) == 1
    assert [r["iteration"] for r in logs.read_jsonl(tmp_path / "m.jsonl")] == [5]


# --- checkpoints -------------------------------------------------------------------------------
@pytest.mark.parametrize("outer", ["ppo", "trpo"])
def test_checkpoint_round_trips_optimizer_state_key_and_iteration(tmp_path, outer):
    """Brax#655 (restore dropped the optimizer state) must never happen: every leaf of the
    optimiser state comes back, restored into a jax.eval_shape target."""
    spec = RunSpec("maml-rl", "point-nav", {"horizon": 8}, {**TINY_MAML, "outer": outer})
    _, _, algo = build(spec)
    state = algo.init(jax.random.key(0))
    leaves, treedef = jax.tree.flatten(state.opt_state)
    keys = jax.random.split(jax.random.key(1), max(len(leaves), 1))
    noisy = [jax.random.normal(k, x.shape).astype(x.dtype) if jnp.issubdtype(x.dtype, jnp.floating)
             else x + 7 for k, x in zip(keys, leaves)]
    state = state.replace(opt_state=jax.tree.unflatten(treedef, noisy),
                          key=jax.random.fold_in(state.key, 5), iteration=jnp.int32(12))
    ckpt = Checkpoints(tmp_path / "checkpoints", keep=2)
    ckpt.save(state, {"spec": spec.to_dict()})
    ckpt.close()
    ckpt = Checkpoints(tmp_path / "checkpoints", keep=2)
    restored, meta = ckpt.restore(jax.eval_shape(algo.init, jax.random.key(0)))
    assert_states_equal(restored, state)
    assert restored.opt_state.__class__ is state.opt_state.__class__
    assert jax.random.key_impl(restored.key) == jax.random.key_impl(state.key)
    assert meta["iteration"] == 12 and meta["spec"] == spec.to_dict()


def test_checkpoints_keep_last_n_and_the_best(tmp_path):
    _, _, algo = build(SPEC)
    state = algo.init(jax.random.key(0))
    ckpt = Checkpoints(tmp_path / "c", keep=2, best_mode="max")
    for step, value in zip(range(1, 6), [5.0, 1.0, 2.0, 3.0, 4.0]):
        ckpt.save(state.replace(iteration=jnp.int32(step)), {}, best_value=value)
    assert ckpt.steps() == [1, 4, 5] and ckpt.best_step() == 1
    ckpt.close()
    ckpt = Checkpoints(tmp_path / "d", keep=1, best_mode="min")
    for step, value in zip(range(1, 4), [2.0, 1.0, 3.0]):
        ckpt.save(state.replace(iteration=jnp.int32(step)), {}, best_value=value)
    assert ckpt.steps() == [2, 3]
    ckpt.close()


# --- the Runner --------------------------------------------------------------------------------
def read_tensorboard(tb_dir):
    """(scalars {tag: {step: value}}, histogram tags) of the event files, parsed from the
    TFRecord framing with tensorboardX's protobufs (no TensorBoard install needed)."""
    from tensorboardX.proto import event_pb2

    scalars, histograms = {}, set()
    for path in sorted(Path(tb_dir).glob("events.out.tfevents.*")):
        data = path.read_bytes()
        pos = 0
        while pos + 12 <= len(data):
            (length,) = struct.unpack("<Q", data[pos:pos + 8])
            event = event_pb2.Event.FromString(data[pos + 12:pos + 12 + length])
            pos += 12 + length + 4
            for v in event.summary.value:
                if v.HasField("histo"):
                    histograms.add(v.tag)
                else:
                    scalars.setdefault(v.tag, {})[event.step] = v.simple_value
    return scalars, histograms


def test_straight_run_writes_metrics_events_tensorboard_and_checkpoints(straight):
    run_dir, state = straight
    assert int(state.iteration) == ITERS
    records = logs.read_jsonl(run_dir / "metrics.jsonl")
    assert [r["iteration"] for r in records] == list(range(1, ITERS + 1))
    times = [r["time"] for r in records]
    assert times == sorted(times) and times[0] > 0
    for r in records:
        assert set(r) == {"iteration", "time", "metrics", "tasks"}
        assert {"return_pre", "return_post", "log_std", "kl"} <= set(r["metrics"])
        assert list(r["tasks"]) == ["return", "return_pre", "goal_0", "goal_1"]
        assert all(len(v) == TINY_MAML["num_tasks"] for v in r["tasks"].values())
        # the logged scalar is the mean of the per-task returns
        assert r["metrics"]["return_post"] == pytest.approx(np.mean(r["tasks"]["return"]))
        assert all(abs(g) <= 0.5 for g in r["tasks"]["goal_0"])  # the goal box [-0.5, 0.5]²
    assert [e["event"] for e in events(run_dir)] == ["start"]
    scalars, histograms = read_tensorboard(run_dir / "tb")
    assert sorted(scalars["return_post"]) == list(range(1, ITERS + 1))
    for r in records:
        assert scalars["return_post"][r["iteration"]] == pytest.approx(
            r["metrics"]["return_post"], rel=1e-6)
    assert {"tasks/return", "tasks/return_pre"} <= histograms
    assert sorted(int(p.name) for p in (run_dir / "checkpoints").iterdir()) == [2, 4, 6]
    assert RunSpec.from_json((run_dir / "spec.json").read_text()) == SPEC
    spec, env, tasks, algo, loaded = load(run_dir)
    assert spec == SPEC and env.name == "point-nav" and tasks.split == "train"
    assert_states_equal(loaded, state)


def test_exact_resume_matches_the_uninterrupted_run(straight, tmp_path):
    ref_dir, ref_state = straight
    run_dir = tmp_path / "run"
    first = Runner(SPEC, run_dir, chunk_size=CHUNK, progress=False).run(CHUNK)
    assert int(first.iteration) == CHUNK
    # a crash after logging the next chunk but before its checkpoint: lines 3..4 (one of them
    # cut mid-write) exist without a checkpoint; the resumed run drops them
    lines = (ref_dir / "metrics.jsonl").read_text().splitlines(keepends=True)
    with open(run_dir / "metrics.jsonl", "a") as f:
        f.write(lines[2] + lines[3][:40])
    # a new Runner (in-process; the SIGKILL test resumes in another process)
    state = Runner(SPEC, run_dir, chunk_size=CHUNK, progress=False).run(ITERS)
    assert_states_equal(state, ref_state)
    assert metric_lines(run_dir) == metric_lines(ref_dir)
    resume = [e for e in events(run_dir) if e["event"] == "resume"]
    assert len(resume) == 1 and resume[0]["iteration"] == CHUNK and resume[0]["dropped_lines"] == 1
    times = [r["time"] for r in logs.read_jsonl(run_dir / "metrics.jsonl")]
    assert times == sorted(times)  # the clock continues across the resume
    scalars, _ = read_tensorboard(run_dir / "tb")
    assert sorted(scalars["return_post"]) == list(range(1, ITERS + 1))
    # nothing left to do: the state comes back unchanged
    again = Runner(SPEC, run_dir, chunk_size=CHUNK, progress=False).run(ITERS)
    assert_states_equal(again, ref_state)


def test_sigkill_during_a_checkpoint_write_keeps_the_last_good_one(straight, tmp_path):
    ref_dir, ref_state = straight
    run_dir, marker = tmp_path / "run", tmp_path / "marker"
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    child = subprocess.Popen(
        [sys.executable, str(ROOT / "tests" / "_runner_child.py"), str(run_dir), SPEC.to_json(),
         str(ITERS), str(CHUNK), str(marker), "4"], env=env, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 240
        while not marker.exists() and child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert marker.exists(), child.stderr.read().decode()[-2000:] if child.poll() else "timeout"
        os.kill(child.pid, signal.SIGKILL)  # in the middle of writing checkpoint 4
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == -signal.SIGKILL
    names = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    assert "2" in names and "4" not in names and any(n.startswith("4.") for n in names), names
    runner = Runner(SPEC, run_dir, chunk_size=CHUNK, progress=False)
    assert int(runner.restore().iteration) == 2
    state = runner.run(ITERS)
    assert_states_equal(state, ref_state)
    assert metric_lines(run_dir) == metric_lines(ref_dir)
    assert not any(".orbax-checkpoint-tmp" in p.name for p in (run_dir / "checkpoints").iterdir())


def test_corrupt_latest_checkpoint_falls_back_to_the_previous_one(straight, tmp_path, capsys):
    ref_dir, ref_state = straight
    run_dir = tmp_path / "run"
    shutil.copytree(ref_dir, run_dir)
    for path in (run_dir / "checkpoints" / "6").rglob("*"):
        if path.is_file():  # truncate every file of the latest checkpoint
            data = path.read_bytes()
            path.write_bytes(data[: len(data) // 2])
    capsys.readouterr()
    runner = Runner(SPEC, run_dir, chunk_size=CHUNK, progress=False)
    restored = runner.restore()
    assert int(restored.iteration) == 4
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "checkpoint 6 in" in err[0] and "is unreadable" in err[0]
    assert err[0].endswith("falling back to checkpoint 4")
    fallback = [e for e in events(run_dir) if e["event"] == "checkpoint_fallback"]
    assert len(fallback) == 1 and fallback[0]["step"] == 6
    state = runner.run(ITERS)  # redoes iterations 5..6 from checkpoint 4
    assert_states_equal(state, ref_state)
    assert metric_lines(run_dir) == metric_lines(ref_dir)
    assert (run_dir / "checkpoints.corrupt" / "6").is_dir()  # set aside, not deleted
    assert sorted(int(p.name) for p in (run_dir / "checkpoints").iterdir()) == [2, 4, 6]
    # every checkpoint unreadable: a clear error, not a silent restart from scratch
    for path in (run_dir / "checkpoints").rglob("*"):
        if path.is_file():
            path.write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="can be restored"):
        Runner(SPEC, run_dir, chunk_size=CHUNK, progress=False).restore()


@pytest.fixture(scope="module")
def nan_algo():
    """SPEC's algorithm, its parameters NaN after iteration 3 on the first ``fails`` attempts
    (a host-side counter behind an io_callback decides)."""
    _, _, base = build(SPEC)
    control = {"fails": 0, "count": 0}

    def should_fail(iteration):
        fail = int(iteration) == 3 and control["count"] < control["fails"]
        control["count"] += int(fail)
        return np.bool_(fail)

    def update(state):
        new, metrics = base.update(state)
        bad = io_callback(should_fail, jax.ShapeDtypeStruct((), jnp.bool_),
                                           new.iteration)
        params = jax.tree.map(lambda p: jnp.where(bad, jnp.nan, p), new.params)
        return new.replace(params=params), metrics

    return Algorithm(base.init, update, scan_train(update), base.adapt), control


def test_nonfinite_chunk_is_rolled_back_and_retried_with_a_perturbed_key(
        nan_algo, straight, tmp_path):
    algo, control = nan_algo
    control.update(fails=1, count=0)
    run_dir = tmp_path / "run"
    state = Runner(algo, run_dir, chunk_size=CHUNK, progress=False, config={"test": "nan"},
                   best_metric="return_post").run(ITERS)
    assert control["count"] == 1 and int(state.iteration) == ITERS
    assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(state.params))
    rollbacks = [e for e in events(run_dir) if e["event"] == "nonfinite_rollback"]
    assert len(rollbacks) == 1 and rollbacks[0]["iteration"] == 2 and rollbacks[0]["retry"] == 1
    assert "params" in rollbacks[0]["message"] and "iterations 3-4" in rollbacks[0]["message"]
    lines = metric_lines(run_dir)
    assert [r["iteration"] for r in lines] == list(range(1, ITERS + 1))
    ref = metric_lines(straight[0])
    assert lines[:2] == ref[:2] and lines[2:] != ref[2:]  # the retry ran with another key
    # the same directory with another config is refused
    with pytest.raises(ValueError, match="holds a different run"):
        Runner(algo, run_dir, config={"test": "other"})


def test_nonfinite_every_retry_aborts_with_a_clear_message(nan_algo, tmp_path):
    algo, control = nan_algo
    control.update(fails=100, count=0)
    run_dir = tmp_path / "run"
    runner = Runner(algo, run_dir, chunk_size=CHUNK, progress=False, max_nonfinite=2)
    with pytest.raises(RuntimeError, match=r"aborted: non-finite values \(params; optimizer state; "
                                           r"metrics .*\) in iterations 3-4, 2 time\(s\) in a "
                                           r"row \(max_nonfinite=2\)"):
        runner.run(ITERS)
    assert control["count"] == 2
    assert [e["event"] for e in events(run_dir)] == ["start", "nonfinite_rollback", "abort"]
    assert [r["iteration"] for r in metric_lines(run_dir)] == [1, 2]
    assert int(Runner(algo, run_dir, progress=False).restore().iteration) == 2


def test_rl2_logs_trial_returns_with_task_params(tmp_path):
    spec = RunSpec("rl2", "bandit", {"num_arms": 5},
                   {"num_tasks": 2, "trial_episodes": 2, "hidden_size": 8, "num_minibatches": 1,
                    "num_epochs": 1})
    state = Runner(spec, tmp_path, chunk_size=1, progress=False, tensorboard=False).run(1)
    assert int(state.iteration) == 1
    (record,) = logs.read_jsonl(tmp_path / "metrics.jsonl")
    assert list(record["tasks"]) == ["return", "arm_means.mean"]
    assert {"trial_return", "episode_returns_0", "episode_returns_1"} <= set(record["metrics"])
    assert record["metrics"]["trial_return"] == pytest.approx(np.mean(record["tasks"]["return"]))
    assert Checkpoints(tmp_path / "checkpoints").meta(1)["best_metric"] == "trial_return"


def test_supervised_run_progress_lines_and_load(tmp_path, capsys):
    spec = RunSpec("maml", "sinusoid", {"num_shots": 2, "num_query": 2},
                   {"hidden_sizes": [8], "meta_batch_size": 2})
    Runner(spec, tmp_path, chunk_size=2, tensorboard=False).run(4)  # progress on, not a TTY
    err = capsys.readouterr().err
    assert "iteration 2/4" in err and "iteration 4/4" in err and "query_loss_after" in err
    records = logs.read_jsonl(tmp_path / "metrics.jsonl")
    assert len(records) == 4 and records[0]["tasks"] == {}
    meta = Checkpoints(tmp_path / "checkpoints").meta(4)
    assert meta["best_mode"] == "min" and meta["best_value"] is not None
    spec2, env, tasks, algo, state = load(tmp_path)
    assert spec2 == spec and env is None and tasks.train.kind == "regression"
    assert int(state.iteration) == 4


def test_runner_bad_inputs_name_the_problem(tmp_path, straight):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    cases = [
        (lambda: Runner(SPEC, a_file), f"run_dir: {str(a_file)!r} is a file, not a directory"),
        (lambda: Runner(SPEC, tmp_path / "a", chunk_size=0),
         "chunk_size: expected an int >= 1, got 0"),
        (lambda: Runner(SPEC, tmp_path / "a", keep=0), "keep: expected an int >= 1, got 0"),
        (lambda: Runner(SPEC, tmp_path / "a", max_nonfinite=0),
         "max_nonfinite: expected an int >= 1, got 0"),
        (lambda: Runner(SPEC, tmp_path / "a", best_mode="up"),
         "best_mode: expected 'auto', 'max' or 'min', got 'up'"),
        (lambda: Runner(SPEC, tmp_path / "a", seed=1), "seed: a RunSpec has its own seed"),
        (lambda: Runner("maml-rl", tmp_path / "a"),
         "target: expected a RunSpec or an Algorithm, got str"),
        (lambda: Runner(SPEC, tmp_path / "a").run(0),
         "num_iterations: expected an int >= 1, got 0"),
        (lambda: Runner(SPEC, tmp_path / "a", best_metric="reward").run(2),
         "best_metric: unknown metric 'reward'; valid: "),
        (lambda: Runner(RunSpec("maml-rl", "point-nav", {"horizon": 8}, TINY_MAML, seed=1),
                        straight[0]), "holds a different run"),
        (lambda: load(tmp_path / "missing"), "is not a directory"),
        (lambda: load(tmp_path), "is not a jmeta run directory (no run.json)"),
    ]
    for make, message in cases:
        with pytest.raises(ValueError) as e:
            make()
        assert message in str(e.value), (message, str(e.value))
