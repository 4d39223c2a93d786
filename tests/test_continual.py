"""Continual meta-learning (jmeta/continual.py): the replay buffer's semantics, the task-group
schedule and mixing, MAML-RL and RL² through the Runner (exact resume mid-stage), a seeded run in
which replay reduces forgetting, and the command line's bad inputs. Tiny configs: horizon 10,
a 16-unit MLP; the Runner shares one compiled ``train`` between the runs of equal specs."""

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jmeta
from jmeta import cli, continual
from jmeta.algorithms import maml_rl
from jmeta.training import Runner, RunSpec, build, logs
from jmeta.training.checkpoint import state_to_tree

GROUPS = "goal_radius=0.4:0.5;goal_radius=0.2:0.3;goal_radius=0:0.1"  # far, mid, near
PER_STAGE = 10
TINY = {"num_tasks": 10, "num_episodes": 5, "hidden_sizes": [16], "inner_lr": 0.5,
        "eval_steps": 1, "eval_episodes": 5}
ENV_KW = {"horizon": 10, "rescale_actions": True}


def cont(ratio):
    return {"task_groups": [{"goal_radius": [0.4, 0.5]}, {"goal_radius": [0.2, 0.3]},
                            {"goal_radius": [0.0, 0.1]}],
            "iterations_per_stage": PER_STAGE, "replay_ratio": ratio}


SPEC_REPLAY = RunSpec("maml-rl", "point-nav", ENV_KW, TINY, seed=0, continual=cont(0.3))
SPEC_NO_REPLAY = RunSpec("maml-rl", "point-nav", ENV_KW, TINY, seed=0, continual=cont(0.0))


def add_all(buffer, items, key):
    return continual.buffer_add_batch(buffer, jnp.asarray(items), key)


# --- the buffer -------------------------------------------------------------------------------
def test_ring_keeps_the_last_capacity_items_in_slot_order():
    buf = continual.buffer_init(jnp.zeros((), jnp.int32), capacity=3, kind="ring")
    assert int(buf.size) == 0 and not bool(jnp.any(buf.filled))
    buf = add_all(buf, np.arange(7), jax.random.key(0))
    # slot = count % 3: items 0..6 -> slots 0,1,2,0,1,2,0
    np.testing.assert_array_equal(buf.data, [6, 4, 5])
    assert int(buf.count) == 7 and int(buf.size) == 3


def test_reservoir_fills_in_order_then_never_exceeds_capacity():
    buf = continual.buffer_init(jnp.zeros((2,)), capacity=5)
    buf = add_all(buf, np.stack([np.arange(3.0), -np.arange(3.0)], 1), jax.random.key(0))
    np.testing.assert_array_equal(buf.data[:3, 0], [0, 1, 2])
    np.testing.assert_array_equal(buf.data[:3, 1], [0, -1, -2])
    assert int(buf.size) == 3 and buf.filled.tolist() == [True] * 3 + [False] * 2
    buf = add_all(buf, np.ones((40, 2)) * 7, jax.random.key(1))
    assert buf.data.shape == (5, 2) and int(buf.count) == 43 and int(buf.size) == 5


def test_reservoir_holds_each_item_with_probability_capacity_over_n():
    """Algorithm R: after n offers each item is held with probability k / n. 4000 seeds, n = 20,
    k = 5: each item's frequency has s.d. sqrt(.25 · .75 / 4000) = 0.0068; the tolerance 0.035
    is ~5 s.d. (a wrong rule fails by far more: keeping the last k gives 0 or 1, replacing a
    uniform slot on every offer gives (3/4)^(20-i) · ... ≈ 0.003 for item 0)."""
    n, k, seeds = 20, 5, 4000

    def one(key):
        buf = continual.buffer_init(jnp.zeros((), jnp.int32), capacity=k)
        return continual.buffer_add_batch(buf, jnp.arange(n), key).data

    held = jax.jit(jax.vmap(one))(jax.random.split(jax.random.key(0), seeds))  # [seeds, k]
    held = np.asarray(held)
    assert all(len(set(row)) == k for row in held)  # k distinct items each time
    freq = np.array([(held == i).any(axis=1).mean() for i in range(n)])
    np.testing.assert_allclose(freq, k / n, atol=0.035)
    assert abs(freq.sum() - k) < 1e-9


def test_jit_equals_no_jit_and_vmap_over_buffers():
    items = jnp.arange(12.0)
    buf = continual.buffer_init(jnp.zeros(()), capacity=4)
    key = jax.random.key(3)
    eager = continual.buffer_add_batch(buf, items, key)
    jitted = jax.jit(continual.buffer_add_batch)(buf, items, key)
    np.testing.assert_array_equal(eager.data, jitted.data)
    assert int(eager.count) == int(jitted.count) == 12
    s_eager, ok = continual.buffer_sample(eager, key, 6)
    s_jit, ok_jit = jax.jit(continual.buffer_sample, static_argnums=2)(eager, key, 6)
    np.testing.assert_array_equal(s_eager, s_jit)
    assert bool(ok) and bool(ok_jit) and set(np.asarray(s_eager)) <= set(np.asarray(eager.data))
    # a batch of 3 buffers, each with its own items and key
    bufs = jax.vmap(lambda _: buf)(jnp.arange(3))
    batch = jax.vmap(continual.buffer_add_batch)(
        bufs, items.reshape(3, 4) + 100 * jnp.arange(3)[:, None], jax.random.split(key, 3))
    np.testing.assert_array_equal(batch.data, items.reshape(3, 4) + 100 * jnp.arange(3)[:, None])
    np.testing.assert_array_equal(batch.count, [4, 4, 4])


def test_masked_add_and_masked_sample():
    buf = continual.buffer_init(jnp.zeros((), jnp.int32), capacity=4, kind="ring")
    buf = continual.buffer_add_batch(buf, jnp.arange(1, 5), jax.random.key(0),
                                     valid=jnp.array([True, False, True, False]))
    assert int(buf.count) == 2 and buf.data.tolist()[:2] == [1, 3]
    drawn, ok = continual.buffer_sample(buf, jax.random.key(1), 50,
                                        mask=jnp.array([False, True, True, True]))
    assert bool(ok) and set(np.asarray(drawn).tolist()) == {3}
    _, ok = continual.buffer_sample(buf, jax.random.key(1), 5, mask=jnp.zeros(4, bool))
    assert not bool(ok)


# --- schedule and mixing ----------------------------------------------------------------------
def test_parse_task_groups_and_replay_counts():
    groups = continual.parse_task_groups(" velocity=0:1 ; velocity=1:2, friction=0.7;")
    assert groups == ({"velocity": (0.0, 1.0)},
                      {"velocity": (1.0, 2.0), "friction": (0.7, 0.7)})
    assert continual.parse_task_groups(continual.format_task_groups(groups)) == groups
    assert [continual.replay_count(r, n) for r, n in
            ((0.3, 20), (0.3, 8), (0.5, 5), (1.0, 4), (0.0, 9), (0.25, 2))] == [6, 2, 3, 4, 0, 1]
    assert continual.stage_of(jnp.arange(7), 3, 2).tolist() == [0, 0, 0, 1, 1, 1, 1]


def test_mixing_gives_exact_counts_and_only_earlier_stages():
    _, tasks = jmeta.make("point-nav")
    far, near = continual.parse_task_groups("goal_radius=0.4:0.5;goal_radius=0:0.1")
    far_tasks = continual.group_tasks(tasks, far).train.sample_batch(jax.random.key(0), 6)
    record = continual.TaskRecord(task=tasks.sample(jax.random.key(0)),
                                  stage=jnp.zeros((), jnp.int32))
    buf = continual.buffer_init(record, capacity=8)
    buf = continual.buffer_add_batch(
        buf, continual.TaskRecord(far_tasks, jnp.zeros(6, jnp.int32)), jax.random.key(1))
    mixed = continual.MixedTasks(env_name=tasks.env_name, sampler=tasks.sampler,
                                 ranges=tasks.ranges, ood_ranges=tasks.ood_ranges,
                                 groups=(far, near), stage=jnp.int32(1), buffer=buf,
                                 replay_ratio=0.3)
    mixed0 = mixed.__class__(**{**mixed.__dict__, "stage": jnp.int32(0)})

    @jax.jit
    def batches(k):
        return (mixed.train.sample_batch(k, 20), mixed0.train.sample_batch(k, 20),
                mixed.test.sample_batch(k, 20))

    batch, batch0, test_batch = batches(jax.random.key(2))
    radius = np.abs(np.asarray(batch.goal)).max(axis=1)
    assert (radius[:6] >= 0.4).all() and (radius[6:] <= 0.1).all()  # 6 = 0.3 x 20 replayed
    held = {tuple(g) for g in np.asarray(far_tasks.goal).round(6)}
    assert {tuple(g) for g in np.asarray(batch.goal[:6]).round(6)} <= held
    # stage 0: the buffer's entries are not from an earlier stage, so nothing is replayed
    assert (np.abs(np.asarray(batch0.goal)).max(axis=1) >= 0.4).all()
    # test split: the current group's held-out tasks, never replayed
    assert (np.abs(np.asarray(test_batch.goal)).max(axis=1) <= 0.1).all()


@pytest.mark.parametrize("kwargs, message", [
    ({"replay_ratio": 1.5}, "replay_ratio: expected a number in [0, 1], got 1.5"),
    ({"replay_ratio": -0.1}, "replay_ratio: expected a number in [0, 1], got -0.1"),
    ({"task_groups": ()}, "task_groups: empty; give at least one group"),
    ({"task_groups": ({"goal_radius": (0, 1)}, {})}, "task_groups: group 2 is empty"),
    ({"replay_capacity": 0}, "replay_capacity: expected a positive int, got 0"),
    ({"iterations_per_stage": 0}, "iterations_per_stage: expected a positive int, got 0"),
    ({"buffer": "fifo"}, "buffer: expected one of reservoir, ring, got 'fifo'"),
    ({"task_groups": ({"goal_radius": (0.5, 0.1)},)},
     "task_groups: group 1: goal_radius: low must be <= high, got (0.5, 0.1)"),
])
def test_config_errors_name_the_field(kwargs, message):
    args = {"task_groups": ({"goal_radius": (0, 1)},), "iterations_per_stage": 5, **kwargs}
    with pytest.raises(ValueError) as err:
        continual.ContinualConfig(**args)
    assert str(err.value) == message


def test_unknown_range_names_and_empty_replay_are_refused():
    _, tasks = jmeta.make("point-nav")
    with pytest.raises(ValueError) as err:
        continual.check_task_groups(tasks, ({"goal_angle": (0.0, 1.57)},))
    assert str(err.value) == ("task_groups: group 1: unknown range 'goal_angle' for point-nav; "
                              "valid: goal_radius")
    with pytest.raises(ValueError) as err:
        RunSpec("maml-rl", "point-nav", {}, {"num_tasks": 4}, continual={
            "task_groups": [{"goal_radius": [0, 1]}], "iterations_per_stage": 2,
            "replay_ratio": 0.1})
    assert str(err.value) == ("continual: replay_ratio: 0.1 of num_tasks 4 rounds to 0 replayed "
                              "tasks per iteration; raise either (or set 0 to turn replay off)")
    with pytest.raises(ValueError) as err:
        RunSpec("maml", "sinusoid", continual=cont(0.3))
    assert str(err.value) == "continual: task groups and replay are for maml-rl and rl2, not maml"
    again = RunSpec.from_json(SPEC_REPLAY.to_json())
    assert again == SPEC_REPLAY and again.continual_config().task_groups[2] == {
        "goal_radius": (0.0, 0.1)}
    assert "continual" not in RunSpec("maml-rl", "point-nav").to_dict()  # old specs unchanged


# --- through the Runner -----------------------------------------------------------------------
def metric_lines(run_dir):
    return [{k: v for k, v in r.items() if k != "time"}
            for r in logs.read_jsonl(Path(run_dir) / "metrics.jsonl")]


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("straight")
    state = Runner(SPEC_REPLAY, run_dir, chunk_size=5, progress=False).run(3 * PER_STAGE)
    return run_dir, state


def test_runner_logs_stages_and_fills_the_buffer(straight):
    run_dir, state = straight
    records = metric_lines(run_dir)
    assert [r["metrics"]["stage"] for r in records] == [0] * 10 + [1] * 10 + [2] * 10
    # no replay in stage 0 (no earlier stage yet), then 0.3 x 10 = 3 tasks per iteration
    assert [r["metrics"]["replayed_tasks"] for r in records] == [0] * 10 + [3] * 20
    # 10 x 10 + 20 x 7 = 240 current-group tasks offered to a buffer of 100
    assert int(state.buffer.count) == 240 and records[-1]["metrics"]["buffer_size"] == 100
    stages = [e["stage"] for e in logs.read_jsonl(run_dir / "events.jsonl")
              if e["event"] == "stage"]
    assert stages == [0, 1, 2]


def test_resume_mid_stage_is_bit_exact(straight, tmp_path):
    ref_dir, ref_state = straight
    run_dir = tmp_path / "run"
    first = Runner(SPEC_REPLAY, run_dir, chunk_size=5, progress=False).run(15)  # mid stage B
    assert int(first.iteration) == 15 and int(first.buffer.count) == 100 + 5 * 7
    state = Runner(SPEC_REPLAY, run_dir, chunk_size=5, progress=False).run(3 * PER_STAGE)
    tree, ref = state_to_tree(state), state_to_tree(ref_state)
    assert "buffer" in tree
    for a, b in zip(jax.tree.leaves(tree), jax.tree.leaves(ref)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert jax.tree.structure(tree) == jax.tree.structure(ref)
    assert metric_lines(run_dir) == metric_lines(ref_dir)


def test_replay_reduces_forgetting(straight, tmp_path):  # straight: compiles the replay arm
    """Seeded: MAML-RL meta-trained on far goals (A), then mid (B), then near ones (C), 10
    iterations each. Forgetting of A = R[A] after A − R[A] after C, R the return after one
    adaptation step on 10 fixed held-out A tasks. Replay (0.3) must cut it by more than half
    (measured: 0.47 without replay, 0.10 with; benchmarks/continual.py --quick is this run)."""
    env, tasks, _ = build(SPEC_REPLAY)
    base = maml_rl.make(SPEC_REPLAY.config(), env, tasks)
    far = continual.group_tasks(tasks, SPEC_REPLAY.continual_config().task_groups[0])
    test = far.test.sample_batch(jax.random.key(1000), 10)
    keys = jax.random.split(jax.random.key(2000), 10)
    ret = jax.jit(lambda ts: jnp.mean(jax.vmap(base.adapt, in_axes=(None, 0, 0))(
        ts, test, keys).returns[:, -1]))
    forgetting, after_a = {}, {}
    for name, spec in (("no_replay", SPEC_NO_REPLAY), ("replay", SPEC_REPLAY)):
        run_dir = tmp_path / name
        state_a = Runner(spec, run_dir, chunk_size=5, progress=False).run(PER_STAGE)
        state_c = Runner(spec, run_dir, chunk_size=5, progress=False).run(3 * PER_STAGE)
        after_a[name] = float(ret(state_a.train_state))
        forgetting[name] = after_a[name] - float(ret(state_c.train_state))
    # the first stage has nothing to replay: both arms are the same run until stage B
    assert after_a["replay"] == pytest.approx(after_a["no_replay"], abs=1e-4)
    assert forgetting["no_replay"] > 0.25, forgetting
    assert forgetting["replay"] < 0.5 * forgetting["no_replay"], forgetting


def test_rl2_continual_run_through_the_runner(tmp_path):
    spec = RunSpec("rl2", "point-nav", {"horizon": 5}, {
        "num_tasks": 4, "trial_episodes": 2, "hidden_size": 8, "num_minibatches": 1,
        "num_epochs": 1}, continual={"task_groups": [{"goal_radius": [0.4, 0.5]},
                                                      {"goal_radius": [0.0, 0.1]}],
                                     "iterations_per_stage": 2, "replay_ratio": 0.5})
    state = Runner(spec, tmp_path, chunk_size=3, progress=False).run(4)
    records = metric_lines(tmp_path)
    assert [r["metrics"]["stage"] for r in records] == [0, 0, 1, 1]
    assert [r["metrics"]["replayed_tasks"] for r in records] == [0, 0, 2, 2]
    assert int(state.buffer.count) == 4 + 4 + 2 + 2
    goals = np.abs(np.asarray(state.buffer.data.task.goal[:12])).max(axis=1)
    stages = np.asarray(state.buffer.data.stage[:12])
    assert (goals[stages == 0] >= 0.4).all() and (goals[stages == 1] <= 0.1).all()


# --- the command line -------------------------------------------------------------------------
TRAIN = ["train", "maml-rl", "--env", "point-nav", "--no-progress", "--task.horizon", "10",
         "--task.rescale_actions", "true", "--set", "num_tasks=10", "--set", "num_episodes=5",
         "--set", "hidden_sizes=16", "--set", "inner_lr=0.5", "--set", "eval_steps=1",
         "--set", "eval_episodes=5"]


def test_cli_trains_a_continual_run_and_records_it(tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert cli.main(TRAIN + ["--logdir", str(run_dir), "--iterations", str(PER_STAGE),
                             "--chunk", "5", "--task-groups", GROUPS,
                             "--replay-ratio", "0.3"]) == 0
    spec = RunSpec.from_json((run_dir / "spec.json").read_text())
    assert spec == SPEC_REPLAY  # --iterations is per stage; the schedule is in the spec
    assert len(metric_lines(run_dir)) == 3 * PER_STAGE
    assert "stage 3/3 (goal_radius 0:0.1) from iteration 21" in capsys.readouterr().err


@pytest.mark.parametrize("args, message", [
    (["--task-groups", ""], "--task-groups: empty; expected groups separated by ';', e.g. "
                            "'goal_radius=0.4:0.5;goal_radius=0:0.1'"),
    (["--task-groups", "goal_radius=0:1;;goal_radius=0:2"],
     "--task-groups: group 2 is empty (two ';' in a row?)"),
    (["--task-groups", "goal_angle=0:1.57"],
     "--task-groups: group 1: unknown range 'goal_angle' for point-nav; valid: goal_radius"),
    (["--task-groups", "goal_radius=0.5:0.1"],
     "--task-groups: group 1: goal_radius: low must be <= high, got (0.5, 0.1)"),
    (["--task-groups", "goal_radius=far"],
     "--task-groups: group 1: goal_radius: expected LOW:HIGH or a number, got 'far'"),
    (["--task-groups", GROUPS, "--replay-ratio", "1.5"],
     "argument --replay-ratio: expected a number in [0, 1], got 1.5"),
    (["--task-groups", GROUPS, "--replay-ratio", "-0.2"],
     "argument --replay-ratio: expected a number in [0, 1], got -0.2"),
    (["--task-groups", GROUPS, "--replay-capacity", "0"],
     "argument --replay-capacity: expected a positive int, got 0"),
    (["--replay-ratio", "0.3"], "--replay-ratio: needs --task-groups (a continual run)"),
])
def test_cli_bad_inputs(args, message, tmp_path, capsys):
    assert cli.main(TRAIN + ["--logdir", str(tmp_path / "r"), "--iterations", "2"] + args) == 2
    assert capsys.readouterr().err.strip() == f"jmeta: error: {message}"
    assert not (tmp_path / "r").exists()


def test_cli_yaml_continual_section(tmp_path, capsys):
    path = tmp_path / "c.yaml"
    path.write_text("algo: maml-rl\nenv: point-nav\niterations: 2\n"
                    "continual: {task_groups: 'goal_radius=0:1', replay_ratio: 2}\n")
    assert cli.main(["train", "--config", str(path), "--logdir", str(tmp_path / "r")]) == 2
    assert capsys.readouterr().err.strip() == (
        "jmeta: error: continual.replay_ratio: expected a number in [0, 1], got 2.0")
    path.write_text("algo: maml-rl\nenv: point-nav\niterations: 2\ncontinual: {ratio: 0.3}\n")
    assert cli.main(["train", "--config", str(path), "--logdir", str(tmp_path / "r")]) == 2
    assert capsys.readouterr().err.strip() == (
        "jmeta: error: continual: unknown key 'ratio' in the config file; valid: task_groups, "
        "replay_ratio, replay_capacity, buffer (iterations: the top-level key, per stage)")
