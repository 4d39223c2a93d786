"""The ``jmeta`` command line: every bad input is one line and exit status 2; a tiny real run
trains, evaluates (test and OOD, JSON + PNG), resumes and is diagnosed; the console script runs."""

import json
import subprocess
import sys

import pytest

from jmeta import cli

TINY = ["--set", "num_tasks=2", "--set", "num_episodes=2", "--set", "hidden_sizes=8",
        "--set", "eval_episodes=2", "--task.horizon", "5", "--no-progress"]


def run_cli(argv, capsys):
    code = cli.main(argv)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A real 2-iteration MAML-TRPO run on point-nav (H = 5)."""
    run_dir = tmp_path_factory.mktemp("cli") / "nav"
    code = cli.main(["train", "maml-rl", "--env", "point-nav", "--logdir", str(run_dir),
                     "--iterations", "2", "--chunk", "1", *TINY])
    assert code == 0
    return run_dir


def _bad_yaml(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return str(path)


def _file(tmp_path):
    path = tmp_path / "a_file"
    path.write_text("x")
    return str(path)


def _foreign_dir(tmp_path):
    d = tmp_path / "foreign"
    d.mkdir()
    (d / "notes.txt").write_text("not a run")
    return str(d)


# (argv builder, expected substring of the one error line)
TRAIN = ["train", "maml-rl", "--env", "point-nav", "--iterations", "1"]
BAD_INPUTS = [
    (lambda t: ["frobnicate"], "invalid choice: 'frobnicate'"),
    (lambda t: ["train", "nope", "--env", "point-nav", "--logdir", str(t / "r"), "--iterations",
                "1"], "unknown algo 'nope'"),
    (lambda t: ["train", "maml-rl", "--env", "moon-walk", "--logdir", str(t / "r"),
                "--iterations", "1"], "unknown environment 'moon-walk'"),
    (lambda t: TRAIN + ["--logdir", str(t / "r"), "--set", "inner_rate=0.1"],
     "unknown maml-rl config field 'inner_rate'"),
    (lambda t: TRAIN + ["--logdir", str(t / "r"), "--set", "inner_lr=fast"],
     "inner_lr: expected a number, got 'fast'"),
    (lambda t: TRAIN + ["--logdir", str(t / "r"), "--set", "num_tasks=2.5"],
     "num_tasks: expected an int, got '2.5'"),
    (lambda t: TRAIN + ["--logdir", str(t / "r"), "--set", "num_tasks=0"],
     "num_tasks: expected a positive int"),
    (lambda t: TRAIN + ["--logdir", str(t / "r"), "--set", "inner_lr"],
     "--set 'inner_lr': expected field=value"),
    (lambda t: TRAIN + ["--logdir", str(t / "r"), "--set", "=3"], "missing field name"),
    (lambda t: TRAIN + ["--logdir", str(t / "r"), "--set", "outer=sgd"],
     "outer: expected one of ('trpo', 'promp', 'ppo')"),
    (lambda t: TRAIN + ["--logdir", str(t / "r"), "--set", "first_order=maybe"],
     "first_order: expected true or false"),
    (lambda t: TRAIN + ["--logdir", str(t / "r"), "--set", "hidden_sizes=64,big"],
     "hidden_sizes: expected a comma-separated list of an int"),
    (lambda t: ["train", "maml-rl", "--env", "point-nav", "--logdir", str(t / "r"),
                "--iterations", "0"], "--iterations: expected a positive int, got 0"),
    (lambda t: ["train", "maml-rl", "--env", "point-nav", "--logdir", str(t / "r"),
                "--iterations", "-3"], "--iterations: expected a positive int, got -3"),
    (lambda t: ["train", "maml-rl", "--env", "point-nav", "--logdir", str(t / "r"),
                "--iterations", "many"], "--iterations: expected a positive int, got 'many'"),
    (lambda t: TRAIN + ["--logdir", str(t / "r"), "--chunk", "0"], "--chunk: expected a positive"),
    (lambda t: TRAIN + ["--logdir", str(t / "r"), "--seed", "-1"], "--seed: expected an int >= 0"),
    (lambda t: TRAIN, "the following arguments are required: --logdir"),
    (lambda t: ["train", "maml-rl", "--logdir", str(t / "r"), "--iterations", "1"],
     "missing --env"),
    (lambda t: ["train", "maml-rl", "--env", "point-nav", "--logdir", str(t / "r")],
     "missing --iterations"),
    (lambda t: ["train", "--env", "point-nav", "--logdir", str(t / "r"), "--iterations", "1"],
     "missing ALGO"),
    (lambda t: TRAIN + ["--logdir", str(t / "r"), "--task.gravity", "3"],
     "unknown task field 'gravity' for point-nav"),
    (lambda t: TRAIN + ["--logdir", str(t / "r"), "--task.goal_radius", "wide"],
     "goal_radius: expected a number, got 'wide'"),
    (lambda t: TRAIN + ["--logdir", str(t / "r"), "--task.goal_radius", "-1"],
     "goal_radius: expected a finite positive number"),
    (lambda t: TRAIN + ["--logdir", str(t / "r"), "--task.horizon"], "--task.horizon: expected a value"),
    (lambda t: TRAIN + ["--logdir", str(t / "r"), "--task.rescale_actions", "maybe"],
     "rescale_actions: expected true or false"),
    (lambda t: TRAIN + ["--logdir", str(t / "r"), "--frobnicate"],
     "unrecognized argument '--frobnicate'"),
    (lambda t: TRAIN + ["--logdir", str(t / "r"), "--config", str(t / "missing.yaml")],
     "missing.yaml: no such file"),
    (lambda t: TRAIN + ["--logdir", str(t / "r"), "--config",
                        _bad_yaml(t, "config: {inner_lr: 0.1\n")], "malformed YAML (line"),
    (lambda t: TRAIN + ["--logdir", str(t / "r"), "--config", _bad_yaml(t, "- 1\n- 2\n")],
     "expected a mapping at the top level, got list"),
    (lambda t: TRAIN + ["--logdir", str(t / "r"), "--config", _bad_yaml(t, "iters: 3\n")],
     "unknown key 'iters'"),
    (lambda t: TRAIN + ["--logdir", str(t / "r"), "--config", _bad_yaml(t, "algo: rl2\n")],
     "disagrees with the config file's algo 'rl2'"),
    (lambda t: TRAIN + ["--logdir", str(t / "r"), "--config", _bad_yaml(t, "config: 3\n")],
     "expected a mapping of field: value, got int"),
    (lambda t: TRAIN + ["--logdir", str(t / "r"), "--config",
                        _bad_yaml(t, "config: {num_tasks: many}\n")],
     "num_tasks: expected an int, got 'many'"),
    (lambda t: TRAIN + ["--logdir", _file(t)], "is a file, not a directory"),
    (lambda t: ["train", "maml", "--env", "point-nav", "--logdir", str(t / "r"),
                "--iterations", "1"], "it is an environment for the RL algorithms"),
    (lambda t: ["train", "maml-rl", "--env", "sinusoid", "--logdir", str(t / "r"),
                "--iterations", "1"], "it is a supervised task family"),
    (lambda t: ["train", "fomaml", "--env", "sinusoid", "--logdir", str(t / "r"),
                "--iterations", "1", "--set", "method=maml"], "method: set by the algorithm"),
    (lambda t: ["train", "rl2", "--env", "bandit", "--logdir", str(t / "r"), "--iterations", "1",
                "--set", "cell=rnn"], "cell"),
    (lambda t: ["evaluate", str(t / "nowhere")], "no such run directory"),
    (lambda t: ["evaluate", _file(t)], "not a directory"),
    (lambda t: ["evaluate", _foreign_dir(t)], "is not a jmeta run directory"),
    (lambda t: ["evaluate", str(t), "--split", "holdout"], "invalid choice: 'holdout'"),
    (lambda t: ["evaluate", str(t), "--steps", "0"], "--steps: expected a positive int"),
    (lambda t: ["evaluate", str(t), "--tasks", "none"], "--tasks: expected a positive int"),
    (lambda t: ["evaluate", str(t), "--frobnicate"], "unrecognized argument '--frobnicate'"),
    (lambda t: ["doctor", str(t / "nowhere")], "no such run directory"),
    (lambda t: ["doctor", _foreign_dir(t)], "not a jmeta run dir"),
    (lambda t: ["envs", "moon-walk"], "unknown environment 'moon-walk'"),
    (lambda t: ["algos", "dqn"], "unknown algo 'dqn'"),
    (lambda t: ["bench", "nonexistent_benchmark"], "unknown benchmark 'nonexistent_benchmark'"),
    (lambda t: ["bench", "rl2"], "ambiguous benchmark 'rl2'"),
]


@pytest.mark.parametrize("make_argv, expected", BAD_INPUTS,
                         ids=[f"bad{i:02d}" for i in range(len(BAD_INPUTS))])
def test_bad_input_is_one_line_and_exit_2(make_argv, expected, tmp_path, capsys):
    code, out, err = run_cli(make_argv(tmp_path), capsys)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, (out, err)
    assert len(lines) == 1, err
    assert lines[0].startswith("jmeta: error: "), err
    assert expected in lines[0], err
    assert "Traceback" not in err + out
    assert not (tmp_path / "r").exists()  # nothing was created for a rejected run


def test_at_least_30_bad_inputs():
    assert len(BAD_INPUTS) >= 30


def test_train_evaluate_resume_and_doctor(tiny_run, capsys):
    lines = (tiny_run / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["iteration"] for x in lines] == [1, 2]
    assert (tiny_run / "tb").is_dir() and any((tiny_run / "checkpoints").iterdir())

    for split in ("test", "ood"):
        code, out, err = run_cli(["evaluate", str(tiny_run), "--split", split, "--tasks", "2",
                                  "--steps", "2"], capsys)
        assert code == 0, err
        result = json.loads((tiny_run / f"eval_{split}.json").read_text())
        assert len(result["mean"]) == 3 and result["num_tasks"] == 2
        assert result["split"] == split and result["iteration"] == 2
        assert (tiny_run / f"eval_{split}.png").stat().st_size > 1000
        assert f"eval_{split}.json" in out

    # Resuming the same run continues from its checkpoint; a different config is refused.
    code, _, err = run_cli(["train", "maml-rl", "--env", "point-nav", "--logdir", str(tiny_run),
                            "--iterations", "3", "--chunk", "1", *TINY], capsys)
    assert code == 0, err
    lines = (tiny_run / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["iteration"] for x in lines] == [1, 2, 3]
    code, _, err = run_cli(["train", "maml-rl", "--env", "point-nav", "--logdir", str(tiny_run),
                            "--iterations", "4", "--chunk", "1", *TINY[:-1], "--set",
                            "inner_lr=0.3", "--no-progress"], capsys)
    assert code == 2 and "holds a different run" in err and len(err.strip().splitlines()) == 1

    code, out, err = run_cli(["doctor", str(tiny_run), "--json"], capsys)
    assert code == 0, err
    assert isinstance(json.loads(out), list)


def test_yaml_config_and_command_line_override(tmp_path, capsys):
    path = tmp_path / "run.yaml"
    path.write_text("algo: maml-rl\nenv: point-nav\niterations: 1\nchunk: 1\n"
                    "config: {num_tasks: 2, num_episodes: 2, hidden_sizes: [8], inner_lr: 0.3}\n"
                    "task: {horizon: 5, goal_radius: 0.2}\n")
    run_dir = tmp_path / "run"
    code, _, err = run_cli(["train", "--config", str(path), "--logdir", str(run_dir),
                            "--set", "inner_lr=0.4", "--task.goal_radius", "0.3",
                            "--no-progress"], capsys)
    assert code == 0, err
    spec = json.loads((run_dir / "spec.json").read_text())
    assert spec["algo_config"]["inner_lr"] == 0.4 and spec["algo_config"]["hidden_sizes"] == [8]
    assert spec["env_kwargs"] == {"horizon": 5, "goal_radius": 0.3}


def test_listings(capsys):
    code, out, _ = run_cli(["envs"], capsys)
    assert code == 0 and "halfcheetah-vel" in out and "sinusoid" in out
    code, out, _ = run_cli(["envs", "warehouse"], capsys)
    assert code == 0 and "cargo_mass" in out and "(0.0, 5.0)" in out
    code, out, _ = run_cli(["algos", "maml-rl"], capsys)
    assert code == 0 and "inner_lr" in out and "inner step size" in out
    code, out, _ = run_cli(["version"], capsys)
    assert code == 0 and out.startswith("jmeta 0.1.0")


def test_console_script_is_installed():
    out = subprocess.run([sys.executable, "-m", "jmeta.cli", "algos", "nope"],
                         capture_output=True, text=True)
    assert out.returncode == 2
    assert out.stderr.strip().startswith("jmeta: error: ") and "unknown algo 'nope'" in out.stderr
    assert "Traceback" not in out.stderr


def test_demo_quick_runs_end_to_end(tmp_path, capsys):
    code, out, err = run_cli(["demo", "--quick", "--logdir", str(tmp_path / "demo"),
                              "--no-progress"], capsys)
    assert code == 0, err
    for split in ("test", "ood"):
        assert (tmp_path / "demo" / f"eval_{split}.png").exists()
        assert (tmp_path / "demo" / f"eval_{split}.json").exists()
    assert "paper MAML" in out and "TensorBoard" in out and "jmeta doctor" in out


def test_demo_yaml_equals_the_demo_command():
    import yaml
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "configs" / "demo_nav.yaml"
    assert yaml.safe_load(path.read_text()) == cli.DEMO


def test_bench_runs_the_script_with_extra_arguments(capfd):
    code = cli.main(["bench", "throughput", "--", "--help"])  # the alias of env_throughput
    out, _ = capfd.readouterr()
    assert code == 0
    assert "env_throughput.py" in out and "--quick" in out


def test_doctor_finds_a_planted_failure_in_a_real_run(tmp_path, capsys):
    """A real run with a planted failure mode: an inner step size of 1e-6 (the paper's: 0.1–0.5)
    switches adaptation off in effect, so post-update returns equal pre-update ones up to rollout
    noise; `jmeta doctor` must say the inner loop does not help. The control, the same run with
    inner_lr=0.5, must not get that finding. (A huge inner step is no reliable plant on
    point-nav: its actions are clipped, and whether the saturated step helps or hurts depends on
    the seed.)"""
    def train(name, inner_lr):
        run_dir = tmp_path / name
        code, _, err = run_cli(["train", "maml-rl", "--env", "point-nav", "--logdir",
                                str(run_dir), "--iterations", "24", "--chunk", "12", "--set",
                                "num_tasks=4", "--set", "num_episodes=4", "--set",
                                "hidden_sizes=16", "--set", f"inner_lr={inner_lr}",
                                "--task.horizon", "10", "--no-progress"], capsys)
        assert code == 0, err
        return run_dir

    planted, control = train("planted", 1e-6), train("control", 0.5)
    code, out, err = run_cli(["doctor", str(planted)], capsys)
    assert code == 0, err
    lines = [line for line in out.splitlines() if "no_adaptation_gain" in line]
    assert lines and "within noise: the inner loop does not help" in lines[0], out
    code, out, _ = run_cli(["doctor", str(planted), "--json"], capsys)
    found = [f for f in json.loads(out) if f["kind"] == "no_adaptation_gain"]
    assert len(found) == 1 and found[0]["severity"] >= 0.7, found
    assert abs(found[0]["evidence"]["mean_gain"]) < 2 * found[0]["evidence"]["sem"]
    code, out, _ = run_cli(["doctor", str(control), "--json"], capsys)
    assert "no_adaptation_gain" not in [f["kind"] for f in json.loads(out)]


def test_a_run_that_aborts_on_non_finite_values_exits_1_without_traceback(tmp_path, capsys):
    code, out, err = run_cli(["train", "maml-rl", "--env", "point-nav", "--logdir",
                              str(tmp_path / "nan"), "--iterations", "2", "--chunk", "1",
                              "--set", "inner_lr=1e38", *TINY], capsys)
    assert code == 1
    assert err.strip().splitlines()[-1].startswith("jmeta: error: aborted: non-finite values")
    assert "rolled back to iteration 0, retry 1/2" in err
    assert "Traceback" not in err + out


def test_doctor_flags_meta_overfitting_from_real_evaluations(tmp_path, capsys):
    """Meta-train on goals within 0.1 of the origin, meta-test with `jmeta evaluate` on held-out
    goals of that box and on the ood split (goals at L∞ radius 0.5–1.0): `jmeta doctor` must
    report meta_overfitting. The control run, whose ood split is the training box itself, must
    not get it."""
    def train_and_evaluate(name, ood):
        run_dir = tmp_path / name
        code, _, err = run_cli(["train", "maml-rl", "--env", "point-nav", "--logdir",
                                str(run_dir), "--iterations", "6", "--set", "num_tasks=4",
                                "--set", "num_episodes=4", "--set", "hidden_sizes=16",
                                "--set", "inner_lr=0.5", "--task.horizon", "10",
                                "--task.goal_radius", "0.1", "--task.ood_goal_radius", ood,
                                "--no-progress"], capsys)
        assert code == 0, err
        for split in ("test", "ood"):
            code, _, err = run_cli(["evaluate", str(run_dir), "--split", split, "--steps", "1",
                                    "--tasks", "20"], capsys)
            assert code == 0, err
        code, out, err = run_cli(["doctor", str(run_dir), "--json"], capsys)
        assert code == 0, err
        return [f for f in json.loads(out) if f["kind"] == "meta_overfitting"]

    found = train_and_evaluate("narrow", "0.5:1.0")
    assert len(found) == 1, found
    ev = found[0]["evidence"]
    assert ev["relative_gap"] > 0.5 and ev["z"] > 3 and ev["ood_return"] < ev["test_return"]
    assert found[0]["message"].startswith("meta-overfitting: after 1 adaptation step(s)")
    assert train_and_evaluate("control", "0:0.1") == []
