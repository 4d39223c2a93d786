"""Benchmark helpers: benchmarks/maml_speed.py says so when the PyTorch references cannot run; the
MJX benchmarks' solver argument; the RL² benchmarks' PPO overrides for probes.

(tests/test_benchmarks.py runs every script with --quick and checks the JSON convention and the
headline keys each issue names.)
"""

import argparse
import dataclasses
import importlib
import json
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

import jmeta
from jmeta.algorithms import rl2

BENCH_DIR = Path(__file__).resolve().parents[1] / "benchmarks"

def _import_bench(name: str):
    """Imports the benchmarks/ module ``name`` (the scripts are not a package)."""
    sys.path.insert(0, str(BENCH_DIR))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(BENCH_DIR))


def test_speed_without_torch_says_so(tmp_path, monkeypatch):
    maml_speed = _import_bench("maml_speed")
    monkeypatch.setitem(sys.modules, "torch", None)  # makes `import torch` raise ImportError
    assert maml_speed.torch_status().startswith("skipped: torch not installed")


def test_parse_solver():
    _common = _import_bench("_common")
    assert _common.parse_solver("4/8") == (4, 8)
    assert _common.parse_solver("12/50") == (12, 50)
    for bad in ("0/4", "4/0", "4", "4/8/2", "a/b", "-1/4", " 4/8"):
        with pytest.raises(argparse.ArgumentTypeError, match="ITERATIONS/LS_ITERATIONS"):
            _common.parse_solver(bad)


@pytest.mark.parametrize("script,args", [
    ("maml_rl_mjx.py", ["--cheetah-solver", "4/x"]),
    ("cheetah_solver.py", ["--mjx-solvers", "1/4,0/3"]),
])
def test_bad_solver_is_a_usage_error(script, args):
    proc = subprocess.run([sys.executable, str(BENCH_DIR / script), *args],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "expected ITERATIONS/LS_ITERATIONS" in proc.stderr


def test_bad_frame_skip_is_a_usage_error():
    proc = subprocess.run([sys.executable, str(BENCH_DIR / "maml_rl_mjx.py"),
                           "--cheetah-frame-skip", "0"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "--cheetah-frame-skip: expected a positive int, got 0" in proc.stderr
    _common = _import_bench("_common")
    assert _common.positive_int("5") == 5
    for bad in ("0", "-2", "x", "1.5", ""):
        with pytest.raises(argparse.ArgumentTypeError, match="expected a positive int"):
            _common.positive_int(bad)


@pytest.mark.parametrize("module,args", [("rl2_bandits", (500, False)),
                                         ("rl2_mdp", (10, "gru", False))])
def test_rl2_probe_overrides_replace_only_their_fields(module, args):
    rl2_config = _import_bench(module).rl2_config
    base = rl2_config(*args)
    probe = rl2_config(*args, gamma=0.99, gae_lambda=0.3, num_tasks=32, ent_coef=0.05)
    assert (probe.gamma, probe.gae_lambda, probe.num_tasks, probe.ent_coef) == (0.99, 0.3, 32, 0.05)
    changed = {f for f in base.__dataclass_fields__ if getattr(base, f) != getattr(probe, f)}
    assert changed <= {"gamma", "gae_lambda", "num_tasks", "ent_coef"}
    with pytest.raises(ValueError, match=r"gamma: expected a number in \[0, 1\]"):
        rl2_config(*args, gamma=1.5)


@pytest.mark.parametrize("module,n,expected", [
    # (num_tasks, gamma, gae_lambda, learning_rate, ent_coef) of the runs in benchmarks/RESULTS.md
    ("rl2_bandits", 10, (256, 1.0, 1.0, 1e-3, 0.01)),    # 6.68 at n=10, k=5
    ("rl2_bandits", 100, (256, 0.99, 0.3, 3e-4, 0.03)),  # 81.7 at n=100, k=10 (lngru)
    ("rl2_bandits", 500, (16, 0.99, 0.3, 1e-4, 0.01)),   # n=500 plays n=100's network
    ("rl2_mdp", 10, (256, 0.99, 0.3, 3e-4, 0.03)),       # n=10 (lngru, session 16)
    ("rl2_mdp", 25, (64, 0.99, 0.3, 3e-4, 0.03)),        # n=25 (lngru, session 19)
])
def test_rl2_full_protocol_is_the_measured_configuration(module, n, expected):
    bench = _import_bench(module)
    if module == "rl2_bandits":
        config = bench.rl2_config(n, False)
    else:
        [cell] = bench.default_cells(n, False)
        config = bench.rl2_config(n, None, False)
        assert cell == config.cell
    assert (config.num_tasks, config.gamma, config.gae_lambda, config.learning_rate,
            config.ent_coef) == expected
    assert (config.hidden_size, config.num_minibatches, config.num_epochs) == (256, 4, 4)
    # the memory and PPO details of each headline run (the layer-normalised GRU with its own
    # critic core and clipping 0.1 at bandit n = 100 since session 15, at MDP n = 10 since 16,
    # at MDP n = 25 since 19)
    lngru = (module, n) in (("rl2_bandits", 100), ("rl2_bandits", 500), ("rl2_mdp", 10),
                            ("rl2_mdp", 25))
    assert (config.cell, config.critic_core, config.clip_eps) == (
        ("lngru", True, 0.1) if lngru else ("gru", False, 0.2))
    # session 16: bandit n = 100's second phase (entropy 0.01 from 400, Adam 1e-4 from 600)
    # and session 21: MDP n = 10's Adam 1e-4 from 4,440
    expected_schedules = {("rl2_bandits", 100): (((400, 0.01),), ((600, 1e-4),)),
                          ("rl2_mdp", 10): ((), ((4440, 1e-4),))}.get((module, n), ((), ()))
    assert (config.ent_coef_schedule, config.learning_rate_schedule) == expected_schedules
    if (module, n) == ("rl2_bandits", 500):
        # session 22: the n = 100 run's network plays the 500-pull trials as it is (its state at
        # iteration 900 since session 23); n = 100's reward scale, so the network and critic
        # are the ones it trained
        assert (bench.CURRICULUM, bench.DEFAULT_ITERATIONS[500]) == ({500: (100, 900)}, 0)
        assert config.reward_scale == bench.rl2_config(100, False).reward_scale == 0.1


def test_rl2_mdp_explicit_cells_keep_the_critic_and_clipping():
    bench = _import_bench("rl2_mdp")
    gru = bench.rl2_config(10, "gru", False)
    assert (gru.cell, gru.critic_core, gru.clip_eps) == ("gru", True, 0.1)
    tf = bench.rl2_config(10, "transformer", False)
    assert (tf.cell, tf.critic_core, tf.hidden_size) == ("transformer", False, 64)
    # the session-13 GRU run: --cells gru --no-separate-critic --clip-eps 0.2
    old = bench.rl2_config(10, "gru", False, separate_critic=False, clip_eps=0.2)
    assert (old.critic_core, old.clip_eps) == (False, 0.2)
    # n = 25's GRU run of session 11 (297.6), the default before session 19, by the same flags
    old25 = bench.rl2_config(25, "gru", False, separate_critic=False, clip_eps=0.2)
    assert (old25.cell, old25.critic_core, old25.clip_eps, old25.num_tasks) == (
        "gru", False, 0.2, 64)
    # session 20: n = 10 trains 4,000 iterations with 256 trials, then 440 with 1,024; session 21:
    # n = 25 3,000 with 64, then 800 with 256; n = 10 120 more at Adam 1e-4
    assert bench.DEFAULT_ITERATIONS == {10: 4560, 25: 3800}
    assert bench.rl2_config(10, None, False).learning_rate_schedule == ((4440, 1e-4),)
    assert bench.rl2_config(25, None, False).learning_rate_schedule == ()
    assert bench.TRIALS_SCHEDULE == {10: ((4000, 1024),), 25: ((3000, 256),)}
    assert bench.rl2_config(10, None, False, num_tasks=1024).num_tasks == 1024  # a valid batch
    assert bench.rl2_config(25, None, False, num_tasks=256).num_tasks == 256
    # and the bandits' n = 100 1,000 with 256, then 250 with 1,024
    bandits = _import_bench("rl2_bandits")
    assert bandits.TRIALS_SCHEDULE == {100: ((1000, 1024),)}
    assert bandits.rl2_config(100, False, num_tasks=1024).num_tasks == 1024


def test_describe_schedules_by_hand():
    _common = _import_bench("_common")
    assert _common.describe_schedules({25: ((3000, 256), (4000, 512)), 10: ((4000, 1024),)}) == (
        "1,024 from iteration 4,000 at n = 10; "
        "256 from iteration 3,000, then 512 from iteration 4,000 at n = 25")
    assert _common.describe_schedules({10: ((4440, 1e-4),), 3: ((5, 0.01),), 7: ()}) == (
        "0.01 from iteration 5 at n = 3; 1e-4 from iteration 4,440 at n = 10")


def test_rl2_script_help_gives_the_constants(capsys):
    # the --help texts are made from the constants the scripts run, so they cannot drift apart
    for name, words in (
            ("rl2_mdp", ("4560 at n=10", "3800 at n=25", "else 1500",
                         "1,024 from iteration 4,000 at n = 10",
                         "256 from iteration 3,000 at n = 25",
                         "1e-4 from iteration 4,440 at n = 10")),
            ("rl2_bandits", ("10:5,100:10,500:10", "10:3000,100:1250,500:0",
                             "1,024 from iteration 1,000 at n = 100",
                             "n = 500 from the n = 100 run's iteration 900",
                             "1e-4 from iteration 600 at n = 100",
                             "0.01 from iteration 400 at n = 100"))):
        with pytest.raises(SystemExit):
            _import_bench(name).main(["--help"])
        text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
        for w in words:
            assert w in text, (name, w)


def test_rl2_bandits_curriculum_starts_a_setting_from_anothers_kept_state(tmp_path, monkeypatch):
    """CURRICULUM {20: (10, 4)}: the n = 10 run keeps its state at iteration 4 and the n = 20
    setting plays that network (0 iterations of its own); without the kept state the script
    says what to run first."""
    bench = _import_bench("rl2_bandits")
    _common = _import_bench("_common")
    monkeypatch.setattr(bench, "CURRICULUM", {20: (10, 4)})
    out, ckpt = tmp_path / "out.json", tmp_path / "ckpt"
    common = ["--quick", "--skip-throughput", "--test-tasks", "20", "--ckpt-dir", str(ckpt),
              "--out", str(out)]
    with pytest.raises(SystemExit, match=r"n=20 starts from the n=10 run's state at iteration 4 "
                                         r"\(CURRICULUM\), and .*n10_k5_4.msgpack does not exist"):
        bench.main([*common, "--settings", "20:5", "--iterations", "20:0"])
    bench.main([*common, "--settings", "10:5,20:5", "--iterations", "10:6,20:0"])
    kept = ckpt / "quick" / "kept" / "n10_k5_4.msgpack"
    config = json.loads(out.read_text())["config"]
    assert config["init_from"] == {"n10_k5": None, "n20_k5": str(kept)}
    env, tasks = jmeta.make("bandit", num_arms=5)
    algo10 = rl2.make(bench.rl2_config(10, True), env, tasks)
    assert int(_common.load_state(algo10, kept).iteration) == 4
    # 0 iterations: nothing trained, so nothing written for n = 20
    assert not (ckpt / "quick" / "n20_k5.msgpack").exists()
    # the table's RL² entry is that network's play on the script's test tasks
    algo20 = rl2.make(bench.rl2_config(20, True), env, tasks)
    params, iteration = _common.load_params(algo20, kept)
    assert iteration == 4
    ev = jmeta.evaluate(algo20, algo20.init(jax.random.key(0)).replace(params=params), tasks.test,
                        jax.random.key(2024), 20)
    table = json.loads(out.read_text())["tables"]["n20_k5"]["rl2"]
    np.testing.assert_allclose(table["mean"], np.asarray(ev.returns).sum(-1).mean(), rtol=1e-5)


def test_rl2_bandits_transformer_keeps_its_shared_trunk_at_n100():
    # --cell transformer replaces the memory; the Transformer has no separate critic core
    config = _import_bench("rl2_bandits").rl2_config(100, False, "transformer", 64)
    assert (config.cell, config.critic_core, config.clip_eps) == ("transformer", False, 0.1)


def test_rl2_bandits_per_tenth_by_hand():
    bench = _import_bench("rl2_bandits")
    # pulls 1-2 pay 1 and 0, 3-4 pay 1 and 1, ...
    curve = np.array([1.0, 0.0, 1.0, 1.0] + [0.5] * 16)
    assert bench.per_tenth(curve) == [0.5, 1.0] + [0.5] * 8
    assert bench.per_tenth(np.arange(5.0)) == [0.0, 1.0, 2.0, 3.0, 4.0]  # n = 5: per pull


def test_rl2_probe_flags_give_only_what_was_passed():
    _common = _import_bench("_common")
    ap = argparse.ArgumentParser()
    _common.add_rl2_probe_args(ap, {f: "x" for f in _common.RL2_PROBE_FIELDS})
    assert _common.rl2_probe_overrides(ap.parse_args([])) == {}
    args = ap.parse_args(["--gamma", "0.99", "--num-tasks", "32", "--hidden-size", "64"])
    assert _common.rl2_probe_overrides(args) == {"gamma": 0.99, "num_tasks": 32, "hidden_size": 64}
    assert isinstance(args.num_tasks, int) and isinstance(args.hidden_size, int)
    args = ap.parse_args(["--separate-critic", "--clip-eps", "0.1"])
    assert _common.rl2_probe_overrides(args) == {"separate_critic": True, "clip_eps": 0.1}
    assert _common.rl2_probe_overrides(ap.parse_args(["--no-separate-critic"])) == {
        "separate_critic": False}
    with pytest.raises(SystemExit):
        ap.parse_args(["--hidden-size", "0"])
    args = ap.parse_args(["--ent-coef-schedule", "400:0.01,600:0", "--learning-rate-schedule",
                          "600:1e-4"])
    assert _common.rl2_probe_overrides(args) == {
        "ent_coef_schedule": ((400, 0.01), (600, 0.0)), "learning_rate_schedule": ((600, 1e-4),)}
    for bad in ("400", "400:x", "600:0.1,400:0.1", "0:0.1"):
        with pytest.raises(argparse.ArgumentTypeError, match="expected ITERATION:VALUE pairs"):
            _common.schedule(bad)
    # --num-tasks-schedule is not a Config field: the scripts read it (num_tasks_schedule)
    args = ap.parse_args(["--num-tasks-schedule", "1000:1024", "--num-tasks", "256"])
    assert _common.rl2_probe_overrides(args) == {"num_tasks": 256}
    defaults = {100: ((900, 512),)}
    assert _common.num_tasks_schedule(args, 100, defaults) == ((1000, 1024),)
    args = ap.parse_args([])
    args.quick = False
    assert _common.num_tasks_schedule(args, 100, defaults) == ((900, 512),)
    assert _common.num_tasks_schedule(args, 10, defaults) == ()
    args = ap.parse_args(["--num-tasks", "64"])  # another batch: not the script's phases
    args.quick = False
    assert _common.num_tasks_schedule(args, 100, defaults) == ()


def _tiny_rl2(num_tasks: int = 4):
    env, tasks = jmeta.make("bandit", num_arms=3)
    return rl2.make(rl2.Config(num_tasks=num_tasks, trial_episodes=3, hidden_size=8,
                               num_minibatches=2, num_epochs=1), env, tasks)


def test_checkpointed_training_resumes_exactly_after_a_kill_between_its_writes(tmp_path):
    """benchmarks/_common.train_with_checkpoints writes the history, then the state, each by a
    rename: a kill between the two leaves a history ahead of the state, which resume cuts back;
    the resumed run ends where an uninterrupted one does."""
    _common = _import_bench("_common")
    algo, record = _tiny_rl2(), lambda m, i: {"trial_return": float(m["trial_return"][i])}
    quiet = lambda msg: None  # noqa: E731
    full, full_hist = _common.train_with_checkpoints(algo, 6, 2, tmp_path / "a", "x", False,
                                                     quiet, record)
    _common.train_with_checkpoints(algo, 4, 2, tmp_path / "b", "x", False, quiet, record)
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == ["x.history.json", "x.msgpack"]
    hist = tmp_path / "b" / "x.history.json"
    ahead = json.loads(hist.read_text())
    ahead += [{**ahead[-1], "iteration": 5}, {**ahead[-1], "iteration": 6}]
    hist.write_text(json.dumps(ahead))  # the history of chunk 5-6 written, its state not
    state, history = _common.train_with_checkpoints(algo, 6, 2, tmp_path / "b", "x", True,
                                                    quiet, record)
    assert [h["iteration"] for h in history] == [1, 2, 3, 4, 5, 6]
    assert [h["trial_return"] for h in history] == [h["trial_return"] for h in full_hist]
    for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(full.params)):
        np.testing.assert_array_equal(a, b)
    hist.write_text(json.dumps(history[:3]))  # a history behind the state: not resumable
    with pytest.raises(RuntimeError, match="3 history entries up to the checkpoint's iteration 6"):
        _common.train_with_checkpoints(algo, 8, 2, tmp_path / "b", "x", True, quiet, record)
    # keep_every: a copy of the state at each chunk end that reaches or passes a multiple of 3
    _common.train_with_checkpoints(algo, 6, 2, tmp_path / "c", "x", False, quiet, record,
                                   keep_every=3)
    kept = tmp_path / "c" / "kept"
    assert sorted(p.name for p in kept.iterdir()) == ["x_4.msgpack", "x_6.msgpack"]
    np.testing.assert_array_equal(
        jax.tree.leaves(_common.load_state(algo, kept / "x_6.msgpack").params)[0],
        jax.tree.leaves(full.params)[0])
    assert int(_common.load_state(algo, kept / "x_4.msgpack").iteration) == 4


def test_checkpointed_training_phases_switch_the_batch_at_their_iteration(tmp_path):
    """``phases``: from iteration 3 on the run trains with 8 trials per iteration instead of 4;
    the same as training 3 iterations with one algorithm and then 2 with the other, whatever the
    chunk and wherever the run resumes."""
    _common = _import_bench("_common")
    small, big = _tiny_rl2(4), _tiny_rl2(8)
    record = lambda m, i: {"trial_return": float(m["trial_return"][i])}  # noqa: E731
    quiet = lambda msg: None  # noqa: E731

    by_hand = small.init(jax.random.key(0))
    by_hand, m_small = jax.jit(small.train, static_argnames="num_iterations")(
        by_hand, num_iterations=3)
    by_hand, m_big = jax.jit(big.train, static_argnames="num_iterations")(
        by_hand, num_iterations=2)
    returns = [*np.asarray(m_small["trial_return"]), *np.asarray(m_big["trial_return"])]

    state, hist = _common.train_with_checkpoints(small, 5, 2, tmp_path / "a", "x", False, quiet,
                                                 record, phases=((3, big),))
    assert [h["iteration"] for h in hist] == [1, 2, 3, 4, 5]  # chunks 1-2, 3, 4-5
    np.testing.assert_allclose([h["trial_return"] for h in hist], returns, rtol=1e-6)
    # stopped inside the first phase, resumed with another chunk size: the same run
    _common.train_with_checkpoints(small, 2, 1, tmp_path / "b", "x", False, quiet, record,
                                   phases=((3, big),))
    resumed, _ = _common.train_with_checkpoints(small, 5, 5, tmp_path / "b", "x", True, quiet,
                                                record, phases=((3, big),))
    for want, a, b in zip(jax.tree.leaves(by_hand.params), jax.tree.leaves(state.params),
                          jax.tree.leaves(resumed.params)):
        np.testing.assert_allclose(a, want, rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match=r"positive and increasing, got \[3, 3\]"):
        _common.train_with_checkpoints(small, 5, 2, tmp_path / "c", "x", False, quiet, record,
                                       phases=((3, big), (3, big)))


def test_init_params_carry_a_network_across_trial_lengths(tmp_path):
    """``load_params`` + ``init_params``: a run of another trial length and batch (3-pull trials,
    4 trials) starts from a 5-pull, 8-trial run's network with a fresh optimiser at iteration 0;
    a network of another shape is refused, naming the parameter."""



    _common = _import_bench("_common")
    record = lambda m, i: {"trial_return": float(m["trial_return"][i])}  # noqa: E731
    quiet = lambda msg: None  # noqa: E731
    env, tasks = jmeta.make("bandit", num_arms=3)
    cfg = rl2.Config(num_tasks=8, trial_episodes=5, hidden_size=8, num_minibatches=2,
                     num_epochs=1, learning_rate_schedule=((2, 1e-4),))
    source = rl2.make(cfg, env, tasks)
    trained, _ = _common.train_with_checkpoints(source, 3, 3, tmp_path / "a", "x", False, quiet,
                                                record)
    target = rl2.make(dataclasses.replace(cfg, num_tasks=4, trial_episodes=3,
                                          learning_rate_schedule=()), env, tasks)
    params, iteration = _common.load_params(target, tmp_path / "a" / "x.msgpack")
    assert iteration == 3
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(trained.params)):
        np.testing.assert_array_equal(a, b)
    state, hist = _common.train_with_checkpoints(target, 0, 2, tmp_path / "b", "y", False, quiet,
                                                 record, init_params=params)
    assert hist == [] and int(state.iteration) == 0  # 0 iterations: the network as it came
    for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(trained.params)):
        np.testing.assert_array_equal(a, b)
    by_hand = target.init(jax.random.key(0)).replace(params=params)
    by_hand, _ = jax.jit(target.train, static_argnames="num_iterations")(by_hand, num_iterations=2)
    state, hist = _common.train_with_checkpoints(target, 2, 2, tmp_path / "c", "y", False, quiet,
                                                 record, init_params=params)
    assert [h["iteration"] for h in hist] == [1, 2]
    for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(by_hand.params)):
        np.testing.assert_array_equal(a, b)
    wider = rl2.make(dataclasses.replace(cfg, hidden_size=16), env, tasks)
    with pytest.raises(ValueError, match=r"has shape \(.*8.*\) in the checkpoint"):
        _common.load_params(wider, tmp_path / "a" / "x.msgpack")
    critic = rl2.make(dataclasses.replace(cfg, separate_critic=True), env, tasks)
    with pytest.raises(ValueError, match="differs from this configuration"):
        _common.load_params(critic, tmp_path / "a" / "x.msgpack")
    (tmp_path / "junk.msgpack").write_bytes(b"\x93\x01\x02\x03")  # a msgpack list
    with pytest.raises(ValueError, match="no 'params'"):
        _common.load_params(target, tmp_path / "junk.msgpack")
    # load_state checks the whole TrainState the same way: another width or another critic
    # core is refused, naming the entry
    with pytest.raises(ValueError, match=r"has shape \(.*8.*\) in the checkpoint"):
        _common.load_state(wider, tmp_path / "a" / "x.msgpack")
    with pytest.raises(ValueError, match="differs from this configuration's"):
        _common.load_state(critic, tmp_path / "a" / "x.msgpack")
    assert int(_common.load_state(source, tmp_path / "a" / "x.msgpack").iteration) == 3


def test_keep_at_keeps_that_iterations_state_whatever_the_chunk(tmp_path):

    _common = _import_bench("_common")
    algo = _tiny_rl2()
    record = lambda m, i: {"trial_return": float(m["trial_return"][i])}  # noqa: E731
    quiet = lambda msg: None  # noqa: E731
    at3, _ = _common.train_with_checkpoints(algo, 3, 3, tmp_path / "a", "x", False, quiet, record)
    _, hist = _common.train_with_checkpoints(algo, 6, 4, tmp_path / "b", "x", False, quiet,
                                             record, keep_at=(3,))
    assert [h["iteration"] for h in hist] == [1, 2, 3, 4, 5, 6]
    assert [p.name for p in (tmp_path / "b" / "kept").iterdir()] == ["x_3.msgpack"]
    kept = _common.load_state(algo, tmp_path / "b" / "kept" / "x_3.msgpack")
    assert int(kept.iteration) == 3
    for a, b in zip(jax.tree.leaves(kept.params), jax.tree.leaves(at3.params)):
        np.testing.assert_array_equal(a, b)


def test_trials_schedule():
    _common = _import_bench("_common")
    assert _common.trials_schedule("1000:1024") == ((1000, 1024),)
    assert _common.trials_schedule("10:512,20:1024") == ((10, 512), (20, 1024))
    for bad in ("0:1024", "10:0", "10", "20:8,10:8", "10:8,10:16", "10:8,", "a:b", " 10:8"):
        with pytest.raises(argparse.ArgumentTypeError, match="ITERATION:TRIALS pairs"):
            _common.trials_schedule(bad)


def test_rl2_checkpoints_paired_difference_by_hand():
    bench = _import_bench("rl2_checkpoints")
    # per-task differences [1, 0, 2]: mean 1, population std sqrt(2/3), SEM sqrt(2/3) / sqrt(3)
    d = bench.paired(np.array([1.0, 2.0, 3.0]), np.array([2.0, 2.0, 5.0]))
    assert d["mean"] == pytest.approx(1.0)
    assert d["sem"] == pytest.approx(np.sqrt(2 / 3) / np.sqrt(3))


@pytest.mark.parametrize("args,message", [
    (["mdp", "--n", "10", "a.msgpack"], "expected two or more checkpoints to compare, got 1"),
    (["mdp", "a.msgpack", "b.msgpack"], "give the benchmark (bandit or mdp), --n"),
    (["mdp", "--n", "10", "nowhere/a.msgpack", "nowhere/b.msgpack"],
     "no checkpoint file nowhere/a.msgpack"),
    (["bandit", "--n", "0", "a.msgpack", "b.msgpack"], "--n: expected a positive int, got 0"),
])
def test_rl2_checkpoints_bad_arguments_are_usage_errors(args, message):
    proc = subprocess.run([sys.executable, str(BENCH_DIR / "rl2_checkpoints.py"), *args],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert message in proc.stderr


def test_rl2_checkpoints_refuses_a_checkpoint_of_another_setting(tmp_path):
    """A bandit checkpoint does not restore into the MDP configuration: a clear error."""
    bench = _import_bench("rl2_checkpoints")
    a, b = bench.quick_checkpoints(tmp_path)
    proc = subprocess.run([sys.executable, str(BENCH_DIR / "rl2_checkpoints.py"), "mdp", "--n",
                           "2", "--quick", str(a), str(b), "--out", str(tmp_path / "x.json")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1
    assert "does not restore into the mdp n=2 configuration" in proc.stderr



TRAINING_SCRIPTS = ("cold_start", "distributed", "load_balancing", "maml_rl_mjx", "maml_rl_nav",
                    "meta_overfitting", "rl2_bandits", "rl2_checkpoints", "rl2_mdp", "rl2_memory",
                    "rl2_nav")
COUNT_FLAGS = [(name, flag) for name in TRAINING_SCRIPTS for flag in ("--chunk", "--test-tasks")
               if f'"{flag}"' in (BENCH_DIR / f"{name}.py").read_text()]


def test_count_flags_cover_every_script():
    assert {name for name, _ in COUNT_FLAGS} == set(TRAINING_SCRIPTS)


@pytest.mark.parametrize("name,flag", COUNT_FLAGS)
def test_chunk_and_test_tasks_must_be_positive(name, flag, capsys):
    """0 was taken as "the default" (``args.x or default``), and ``--chunk 0`` never ended."""
    with pytest.raises(SystemExit) as exit_info:
        _import_bench(name).main([flag, "0"])
    assert exit_info.value.code == 2
    assert f"{flag}: expected a positive int, got 0" in capsys.readouterr().err


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
