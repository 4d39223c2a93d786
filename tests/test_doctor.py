"""jmeta doctor: planted anomalies in synthetic run directories are found, at the right iteration,
with the right size, and clean runs give no findings. numpy only, seeded, fast."""
import json
import math
import re

import numpy as np
import pytest

from jmeta.training import doctor

N = 1000        # meta-iterations of a synthetic run
T = 20          # tasks per iteration


# --------------------------------------------------------------------------------------------------
# Synthetic run directories


def write_run(path, metrics, tasks=None, events=None, spec=None, truncate=False):
    """Write ``metrics.jsonl`` like the Runner: ``metrics`` name -> [N] (NaN -> null),
    ``tasks`` column -> [N, T]; ``events`` a list of dicts; ``truncate`` cuts the last line."""
    path.mkdir(parents=True, exist_ok=True)
    n = len(next(iter(metrics.values())))
    lines = []
    for i in range(n):
        rec = {"iteration": i + 1, "time": 0.5 * (i + 1),
               "metrics": {k: _val(v[i]) for k, v in metrics.items()}}
        if tasks is not None:
            rec["tasks"] = {k: [_val(x) for x in v[i]] for k, v in tasks.items()}
        lines.append(json.dumps(rec))
    text = "\n".join(lines) + "\n"
    if truncate:
        text = text[:-1][: -len(lines[-1]) // 2]   # half of the last line, no newline
    (path / "metrics.jsonl").write_text(text)
    if events is not None:
        (path / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    if spec is not None:
        (path / "spec.json").write_text(json.dumps(spec))
    return path


def _val(x):
    if isinstance(x, (bool, np.bool_)):
        return bool(x)
    if isinstance(x, (list, np.ndarray)):
        return [_val(v) for v in x]
    x = float(x)
    return x if math.isfinite(x) else None


def clean_run(seed, n=N, with_tasks=True):
    """A healthy MAML-TRPO run: the return keeps improving (noisy), the inner step helps, KL sits
    under max_kl, log_std shrinks slowly, most line searches accept; task params do not matter."""
    rng = np.random.default_rng(seed)
    it = np.arange(1, n + 1)
    base = -50 + 40 * np.sqrt(it / n)
    task_ret = base[:, None] + rng.normal(0, 3, (n, T))
    post = task_ret.mean(1)
    pre = post - 2.0 + rng.normal(0, 1.0, n)
    metrics = {
        "return_pre": pre, "return_post": post,
        "kl": 0.006 * np.exp(rng.normal(0, 0.3, n)),
        "grad_norm": 0.8 * np.exp(rng.normal(0, 0.5, n)),
        "loss_before": rng.normal(0, 1, n), "loss_after": rng.normal(-0.1, 1, n),
        "step_accepted": rng.random(n) > 0.05,
        "num_backtracks": rng.integers(0, 4, n).astype(float),
        "log_std": -0.8 * it / n + rng.normal(0, 0.02, n),
    }
    tasks = None
    if with_tasks:
        tasks = {"return": task_ret, "return_pre": task_ret - 2,
                 "friction": rng.uniform(0.5, 0.9, (n, T)),
                 "cargo_mass": rng.uniform(0.0, 5.0, (n, T))}
    return metrics, tasks


def kinds(findings):
    return [f.kind for f in findings]


def only(findings, kind):
    json.loads(doctor.findings_to_json(findings))  # every finding serialises (no NaN, no numpy)
    got = [f for f in findings if f.kind == kind]
    assert len(got) == 1, (kind, doctor.format_report(findings))
    return got[0]


# --------------------------------------------------------------------------------------------------
# No false positives


@pytest.mark.parametrize("seed", range(5))
def test_clean_run_has_no_findings(tmp_path, seed):
    metrics, tasks = clean_run(seed)
    run = write_run(tmp_path / "run", metrics, tasks, spec={"algo": {"max_kl": 0.01}})
    findings = doctor.diagnose(run)
    assert findings == [], doctor.format_report(findings)
    assert doctor.format_report(findings) == "jmeta doctor: no problems found"


@pytest.mark.parametrize("seed", range(3))
def test_clean_rl2_run_has_no_findings(tmp_path, seed):
    rng = np.random.default_rng(100 + seed)
    it = np.arange(1, N + 1)
    first = 2 + 3 * it / N + rng.normal(0, 0.5, N)
    last = first + 1.5 + rng.normal(0, 0.5, N)
    metrics = {"trial_return": first + last, "entropy": 1.6 - 0.6 * it / N + rng.normal(0, .02, N),
               "loss": rng.normal(0, 1, N), "grad_norm": np.exp(rng.normal(0, 0.4, N)),
               "approx_kl": 0.01 * np.exp(rng.normal(0, 0.3, N))}
    run = write_run(tmp_path / "run", metrics)
    # episode_returns logged as a list per trial (flattened by the doctor to episode_returns_0, _1)
    lines = (run / "metrics.jsonl").read_text().splitlines()
    lines = [json.dumps({**(r := json.loads(line)), "metrics": {
        **r["metrics"], "episode_returns": [first[i], last[i]]}}) for i, line in enumerate(lines)]
    (run / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    assert doctor.diagnose(run) == []


def test_converged_run_is_at_most_an_info_plateau(tmp_path):
    rng = np.random.default_rng(7)
    it = np.arange(1, N + 1)
    post = -50 + 40 * (1 - np.exp(-it / 150)) + rng.normal(0, 1, N)
    run = write_run(tmp_path / "run", {"return_post": post, "return_pre": post - 3})
    findings = doctor.diagnose(run)
    assert kinds(findings) == ["plateau"]
    f = findings[0]
    assert f.severity < 0.5 and "has not improved since iteration" in f.message


# --------------------------------------------------------------------------------------------------
# 1. Sudden drop


def test_sudden_drop_of_60_percent_at_500(tmp_path):
    rng = np.random.default_rng(0)
    it = np.arange(1, N + 1)
    ret = np.where(it < 500, 20 + 80 * it / 500, 40.0) + rng.normal(0, 2, N)
    run = write_run(tmp_path / "run", {"return_post": ret, "return_pre": ret - 5})
    findings = doctor.diagnose(run)
    f = findings[0]
    assert f.kind == "sudden_drop", doctor.format_report(findings)
    assert abs(f.iteration - 500) <= 3
    assert f.evidence["percent"] == pytest.approx(-60, abs=4)
    assert f.evidence["after"] == pytest.approx(40, abs=1.5)
    assert f.severity >= 0.7
    assert re.match(r"return_post fell (59|60|61) % \(from 99\.\d to 40\.\d, [78]\d % of the run's "
                    r"range\) between iterations 49\d and 50\d; it had not recovered", f.message), \
        f.message
    # the flat, low tail is also a plateau below the best, ranked after the drop
    p = only(findings, "plateau")
    assert p.evidence["below_best"] and p.severity < f.severity and "below its best" in p.message


def test_sudden_drop_negative_returns(tmp_path):
    rng = np.random.default_rng(1)
    it = np.arange(1, N + 1)
    ret = np.where(it < 480, -40 + 27.9 * it / 480, -19.7) + rng.normal(0, 0.4, N)
    findings = doctor.diagnose(write_run(tmp_path / "run", {"trial_return": ret}))
    f = only(findings, "sudden_drop")
    assert abs(f.iteration - 480) <= 3
    # a fall from -12.1 to -19.7 is 63 % of |-12.1|: sign-aware percentage
    assert re.match(r"trial_return fell 6[1-4] % \(from -12\.[0-2] to -19\.[5-8]", f.message), \
        f.message


def test_drop_through_zero_is_given_in_units_not_percent(tmp_path):
    rng = np.random.default_rng(53)
    it = np.arange(1, N + 1)
    ret = np.where(it < 600, -9.5 + 10 * it / 600, -3.0) + rng.normal(0, 0.3, N)
    f = only(doctor.diagnose(write_run(tmp_path / "run", {"return_post": ret})), "sudden_drop")
    assert f.evidence["percent"] is None and abs(f.iteration - 600) <= 3
    # |0.5| is under a tenth of the range (9.5): a percentage of it would mean nothing
    assert re.match(r"return_post fell by 3\.\d+ \(from 0\.\d+ to -3\.?\d*, 3\d % of the run's "
                    r"range\)", f.message), f.message


def test_recovered_drop_is_less_severe(tmp_path):
    rng = np.random.default_rng(2)
    it = np.arange(1, N + 1)
    ret = 20 + 80 * it / N
    ret = np.where((it >= 500) & (it < 560), ret - 50, ret) + rng.normal(0, 2, N)
    f = only(doctor.diagnose(write_run(tmp_path / "run", {"return_post": ret})), "sudden_drop")
    assert abs(f.iteration - 500) <= 3
    assert "recovered by iteration 5" in f.message
    assert 560 <= f.evidence["recovered_iteration"] <= 600
    assert f.severity < 0.6


def test_gradual_decline_is_not_a_sudden_drop(tmp_path):
    rng = np.random.default_rng(3)
    it = np.arange(1, N + 1)
    ret = -10 - 30 * it / N + rng.normal(0, 1, N)
    assert "sudden_drop" not in kinds(doctor.diagnose(write_run(tmp_path / "r", {"return": ret})))


def ma_noise(rng, sd, length, n=N):
    """Correlated noise: a moving sum of ``length`` Gaussians (s.d. ``sd``)."""
    x = rng.normal(0, sd, n + 100)
    return np.convolve(x, np.ones(length) / np.sqrt(length), "same")[50:50 + n]


@pytest.mark.parametrize("seed", range(3))
def test_correlated_noise_is_not_a_drop(tmp_path, seed):
    """Slow wobble (noise correlated over ~10 iterations, 4× larger than its step-to-step
    spread suggests) makes window levels vary more; the correlation time absorbs it."""
    rng = np.random.default_rng(50 + seed)
    ret = -50 + 40 * np.sqrt(np.arange(1, N + 1) / N) + 2 * ma_noise(rng, 2, 10)
    assert doctor.diagnose(write_run(tmp_path / "run", {"return_post": ret})) == []


def test_gradual_decline(tmp_path):
    rng = np.random.default_rng(51)
    it = np.arange(1, N + 1)
    ret = np.interp(it, [1, 400, 700, N], [10, 50, 20, 20]) + rng.normal(0, 2, N)
    findings = doctor.diagnose(write_run(tmp_path / "run", {"return_post": ret}))
    assert "sudden_drop" not in kinds(findings)
    f = only(findings, "decline")
    assert abs(f.iteration - 400) <= 25 and f.severity >= 0.6
    assert re.match(r"return_post declined 6\d % from its best \(\d\d\.?\d* at iteration \d+\) to "
                    r"(19|20)\.?\d* at the end \(7\d % of the run's range\), "
                    r"without a sudden drop$",
                    f.message), f.message


def test_short_noisy_run_is_not_called_flat(tmp_path):
    rng = np.random.default_rng(52)
    ret = np.linspace(-50, -20, 40) + rng.normal(0, 2, 40)
    assert doctor.diagnose(write_run(tmp_path / "run", {"return_post": ret})) == []


def test_drop_links_to_log_std_collapse_around_it(tmp_path):
    rng = np.random.default_rng(4)
    it = np.arange(1, N + 1)
    ret = np.where(it < 500, 20 + 80 * it / 500, 40.0) + rng.normal(0, 2, N)
    log_std = np.where(it < 490, -0.5, -4.0) + rng.normal(0, 0.02, N)
    findings = doctor.diagnose(write_run(tmp_path / "run", {"return_post": ret,
                                                            "log_std": log_std}))
    drop = only(findings, "sudden_drop")
    assert "around then: log std collapse (iteration 48" in drop.message
    assert drop.evidence["around"] == ["log_std_collapse"]


# --------------------------------------------------------------------------------------------------
# 7. Task-parameter attribution


def friction_drop_run(seed, lo):
    """Tasks with friction < 0.55 (only those) fail from iteration 500; cargo_mass is irrelevant."""
    rng = np.random.default_rng(seed)
    it = np.arange(1, N + 1)
    friction = rng.uniform(lo, 0.9, (N, T))
    cargo = rng.uniform(0.0, 5.0, (N, T))
    base = np.where(it < 500, -40 + 30 * it / 500, -10.0)[:, None]
    ret = base + rng.normal(0, 3, (N, T)) - 50 * ((friction < 0.55) & (it[:, None] >= 500))
    return ({"return_post": ret.mean(1), "return_pre": ret.mean(1) - 3},
            {"return": ret, "friction": friction, "cargo_mass": cargo})


@pytest.mark.parametrize("seed,lo", [(0, 0.5), (1, 0.5), (2, 0.3)])
def test_drop_is_attributed_to_low_friction_not_cargo_mass(tmp_path, seed, lo):
    metrics, tasks = friction_drop_run(seed, lo)
    findings = doctor.diagnose(write_run(tmp_path / "run", metrics, tasks))
    drop = only(findings, "sudden_drop")
    assert abs(drop.iteration - 500) <= 3
    att = [f for f in findings if f.kind == "task_attribution"]
    assert len(att) == 1, doctor.format_report(findings)
    a = att[0]
    assert a.evidence["parameter"] == "friction" and a.evidence["side"] == "<"
    assert a.evidence["threshold"] == pytest.approx(0.55, abs=0.02)
    assert a.iteration == drop.iteration
    assert a.evidence["fall_g"] == pytest.approx(50, abs=6)
    assert abs(a.evidence["fall_r"]) < 4
    assert a.evidence["share_of_drop"] > 0.7  # > 1: the other tasks improved meanwhile
    assert re.match(r"the return_post drop at iteration \d+ is concentrated in tasks with friction "
                    r"< 0\.5[45]\d*: they fell \d+ % \(from -1\d\.?\d* to -[56]\d\.?\d*, n=\d+ "
                    r"task-samples\) while the others (fell|rose) \d+ % \(from -\d+\.?\d* to "
                    r"-\d+\.?\d*, n=\d+\); low friction may be the cause$", a.message), a.message
    # ranked right after the drop it explains; cargo_mass is never named
    assert findings.index(a) == findings.index(drop) + 1
    assert not any("cargo_mass" in f.message for f in findings)


def test_drop_with_two_causes_names_both(tmp_path):
    """Low-friction tasks and heavy-cargo tasks both fail from 500: both are named, the second
    among the tasks the first does not cover; an irrelevant obs_noise is not."""
    rng = np.random.default_rng(54)
    it = np.arange(1, N + 1)
    friction = rng.uniform(0.3, 0.9, (N, T))
    cargo = rng.uniform(0.0, 5.0, (N, T))
    noise = rng.uniform(0.0, 0.1, (N, T))
    base = np.where(it < 500, -40 + 30 * it / 500, -10.0)[:, None]
    fails = ((friction < 0.55) | (cargo >= 4.0)) & (it[:, None] >= 500)
    ret = base + rng.normal(0, 3, (N, T)) - 50 * fails
    findings = doctor.diagnose(write_run(
        tmp_path / "run", {"return_post": ret.mean(1)},
        {"return": ret, "friction": friction, "cargo_mass": cargo, "obs_noise": noise}))
    att = [f for f in findings if f.kind == "task_attribution"]
    assert [a.evidence["parameter"] for a in att] == ["friction", "cargo_mass"], \
        doctor.format_report(findings)
    assert att[0].evidence["threshold"] == pytest.approx(0.55, abs=0.02)
    assert att[1].evidence["side"] == "≥"
    assert att[1].evidence["threshold"] == pytest.approx(4.0, abs=0.15)
    assert att[1].evidence["given"] == [f"friction < {doctor._f(att[0].evidence['threshold'])}"]
    assert "concentrated (among tasks outside friction < 0.5" in att[1].message
    assert "high cargo_mass may be the cause" in att[1].message
    assert not any("obs_noise" in f.message for f in findings)


def test_attribution_without_drop_names_parameter_and_threshold(tmp_path):
    rng = np.random.default_rng(5)
    it = np.arange(1, N + 1)
    friction = rng.uniform(0.5, 0.9, (N, T))
    cargo = rng.uniform(0.0, 5.0, (N, T))
    base = (-50 + 40 * np.sqrt(it / N))[:, None]
    # low-friction tasks are 60 % worse than the others throughout (relative to |others|)
    ret = base * np.where(friction < 0.55, 1.6, 1.0) + rng.normal(0, 2, (N, T))
    findings = doctor.diagnose(write_run(tmp_path / "run", {"return_post": ret.mean(1)},
                                         {"return": ret, "cargo_mass": cargo,
                                          "friction": friction}))
    a = only(findings, "task_attribution")
    assert a.evidence["parameter"] == "friction" and a.evidence["side"] == "<"
    assert a.evidence["threshold"] == pytest.approx(0.55, abs=0.02)
    assert a.evidence["percent_lower"] == pytest.approx(60, abs=8)
    assert a.message.startswith("over iterations 501–1000, return is ")
    assert "% lower for friction < 0.5" in a.message and "than for friction ≥ 0.5" in a.message
    assert f"n={a.evidence['n_group']} task-samples" in a.message
    assert a.severity < 0.5  # an explanation, not a failure


def test_attribution_high_side_and_vector_params(tmp_path):
    """A 2-D goal logged as a per-task list becomes goal_0 / goal_1; goals with goal_1 ≥ 0.6
    fail."""
    rng = np.random.default_rng(6)
    goal = rng.uniform(-1, 1, (N, T, 2))
    ret = -20 - 30 * (goal[..., 1] >= 0.6) + rng.normal(0, 3, (N, T))
    findings = doctor.diagnose(write_run(tmp_path / "run", {"return_post": ret.mean(1)},
                                         {"return": ret, "goal": goal}))
    a = only(findings, "task_attribution")
    assert a.evidence["parameter"] == "goal_1" and a.evidence["side"] == "≥"
    assert a.evidence["threshold"] == pytest.approx(0.6, abs=0.04)
    assert "for goal_1 ≥ 0.6" in a.message


# --------------------------------------------------------------------------------------------------
# 2. Plateau


def test_plateau_without_learning(tmp_path):
    rng = np.random.default_rng(8)
    ret = -48 + rng.normal(0, 2, N)
    f = only(doctor.diagnose(write_run(tmp_path / "run", {"return_post": ret})), "plateau")
    assert f.evidence["no_learning"] and f.severity >= 0.7
    assert f.message.startswith("return_post never improved: it stayed at -48")


def test_plateau_after_learning_starts_where_it_flattens(tmp_path):
    rng = np.random.default_rng(9)
    it = np.arange(1, N + 1)
    ret = np.minimum(-50 + 30 * it / 300, -20) + rng.normal(0, 1, N)
    f = only(doctor.diagnose(write_run(tmp_path / "run", {"return_post": ret})), "plateau")
    assert abs(f.iteration - 300) <= 40
    assert f.evidence["fraction_of_run"] == pytest.approx(0.7, abs=0.05)
    assert f.evidence["level"] == pytest.approx(-20, abs=0.3)
    assert f"has not improved since iteration {f.iteration} (the last 7" in f.message
    assert re.search(r"up from -(49\.\d|50) at the start", f.message), f.message


# --------------------------------------------------------------------------------------------------
# 3. Non-finite values and events


def test_nonfinite_metrics_task_returns_and_events(tmp_path):
    metrics, tasks = clean_run(10)
    metrics["kl"][[339, 340, 700]] = np.nan
    metrics["loss_after"][339] = np.inf
    tasks["return"][[339, 345], :3] = np.nan
    events = [{"iteration": 340, "time": 1.0, "event": "nonfinite_rollback", "message": "NaN"},
              {"iteration": 341, "time": 1.1, "event": "nonfinite_rollback", "message": "NaN"},
              {"iteration": 600, "time": 2.0, "event": "resume", "message": "resumed"},
              {"iteration": 701, "time": 3.0, "event": "abort",
               "message": "aborted: 5 non-finite updates in a row"}]
    findings = doctor.diagnose(write_run(tmp_path / "run", metrics, tasks, events))
    assert findings[0].kind == "abort"
    assert findings[0].message == ("the run aborted at iteration 701: 5 non-finite updates in a "
                                   "row")
    nf = [f for f in findings if f.kind == "nonfinite"]
    assert len(nf) == 2
    m = next(f for f in nf if "metrics" in f.message)
    assert m.iteration == 340 and m.evidence["counts"] == {"kl": 3, "loss_after": 1}
    assert "at 3 of 1000 iterations, first at iteration 340: kl (3), loss_after (1)" in m.message
    t = next(f for f in nf if "per-task" in f.message)
    assert t.iteration == 340 and "for 6 of 20000 task-samples at 2 iterations" in t.message
    rb = only(findings, "nonfinite_rollback")
    assert rb.message == ("the Runner rolled back 2 time(s) after non-finite values (from "
                          "iterations 340, 341); first: NaN")
    assert "resume" not in kinds(findings)


def test_nan_in_return_is_most_severe_nonfinite(tmp_path):
    metrics, _ = clean_run(11, with_tasks=False)
    metrics["return_post"][500:505] = np.nan
    f = only(doctor.diagnose(write_run(tmp_path / "run", metrics)), "nonfinite")
    assert f.iteration == 501 and f.severity >= 0.9 and "return_post (5)" in f.message


def test_checkpoint_fallback_event(tmp_path):
    metrics, _ = clean_run(12, with_tasks=False)
    events = [{"iteration": 400, "time": 9.0, "event": "checkpoint_fallback",
               "message": "checkpoint 400 is truncated; restored 300"}]
    f = only(doctor.diagnose(write_run(tmp_path / "run", metrics, events=events)),
             "checkpoint_fallback")
    assert f.iteration == 400 and "restored 300" in f.message


# --------------------------------------------------------------------------------------------------
# 4. Entropy / log-std collapse


def test_log_std_collapse(tmp_path):
    metrics, _ = clean_run(13, with_tasks=False)
    it = np.arange(1, N + 1)
    metrics["log_std"] = np.interp(it, [1, 400, 450, N], [-0.5, -0.5, -4.0, -4.0])
    metrics["log_std"] += np.random.default_rng(0).normal(0, 0.02, N)
    f = only(doctor.diagnose(write_run(tmp_path / "run", metrics)), "log_std_collapse")
    assert abs(f.iteration - 400) <= 10
    assert f.evidence["below_floor"] and f.evidence["fast"] and f.severity >= 0.7
    assert re.match(r"log_std collapsed: it fell from -0\.5\d* to -4\.?\d* \(policy std 0\.6\d* → "
                    r"0\.018\d\) between iterations 40\d and 4[45]\d; it ends at -4\.?\d*, "
                    r"below -2.5$", f.message), f.message


def test_slow_log_std_below_floor(tmp_path):
    metrics, _ = clean_run(14, with_tasks=False)
    metrics["log_std"] = np.linspace(0.0, -3.0, N)
    f = only(doctor.diagnose(write_run(tmp_path / "run", metrics)), "log_std_collapse")
    assert not f.evidence["fast"] and abs(f.iteration - 834) <= 30
    assert re.fullmatch(r"log_std collapsed: it fell from -?0(\.0\d*)? to -(2\.99|3); it ends at "
                        r"-(2\.99|3), below -2.5", f.message), f.message


def test_entropy_collapse(tmp_path):
    rng = np.random.default_rng(15)
    it = np.arange(1, N + 1)
    metrics = {"trial_return": 5 + 5 * it / N + rng.normal(0, 0.3, N),
               "entropy": np.interp(it, [1, 200, 230, N], [1.6, 1.6, 0.05, 0.03])}
    f = only(doctor.diagnose(write_run(tmp_path / "run", metrics)), "entropy_collapse")
    assert abs(f.iteration - 200) <= 10
    assert f.message.startswith("entropy collapsed: it fell from 1.6 to 0.0")
    assert "below 0.16" in f.message


# --------------------------------------------------------------------------------------------------
# 5. KL / grad-norm blow-ups, line search


def kl_blowup_run(seed):
    metrics, _ = clean_run(seed, with_tasks=False)
    it = np.arange(1, N + 1)
    rng = np.random.default_rng(seed)
    metrics["kl"] = np.where(it < 600, 0.007, 0.05) * np.exp(rng.normal(0, 0.3, N))
    return metrics


def test_kl_over_max_kl(tmp_path):
    run = write_run(tmp_path / "run", kl_blowup_run(16))
    f = only(doctor.diagnose(run, max_kl=0.01), "kl_blowup")
    assert abs(f.iteration - 600) <= 5
    assert f.evidence["fraction_over"] == pytest.approx(0.4, abs=0.03)
    assert f.message.startswith("kl exceeded 1.5× max_kl (0.01) at 40 % of iterations, "
                                "consistently from iteration 60")
    assert f.severity >= 0.8


def test_kl_max_kl_read_from_spec(tmp_path):
    run = write_run(tmp_path / "run", kl_blowup_run(17), spec={"config": {"max_kl": 0.01}})
    assert "max_kl (0.01)" in only(doctor.diagnose(run), "kl_blowup").message


def test_kl_rise_without_max_kl(tmp_path):
    f = only(doctor.diagnose(write_run(tmp_path / "run", kl_blowup_run(18))), "kl_blowup")
    assert abs(f.iteration - 600) <= 30
    assert f.evidence["ratio"] == pytest.approx(0.05 / 0.007, rel=0.2)
    assert f.message.startswith("kl blew up: it rose 7")


def test_grad_norm_spikes(tmp_path):
    metrics, _ = clean_run(19, with_tasks=False)
    metrics["grad_norm"][[233, 612, 800]] = [40.0, 80.0, 30.0]
    f = only(doctor.diagnose(write_run(tmp_path / "run", metrics)), "grad_norm_spikes")
    assert f.iteration == 234 and f.evidence["count"] == 3
    assert "at 3 iteration(s), first at 234, largest 80 at iteration 613" in f.message


def test_line_search_rejections(tmp_path):
    metrics, _ = clean_run(20, with_tasks=False)
    rng = np.random.default_rng(20)
    rejected = (np.arange(N) >= 700) & (rng.random(N) < 0.8)
    metrics["step_accepted"] = ~rejected
    metrics["num_backtracks"] = np.where(rejected, 15.0, 1.0)
    f = only(doctor.diagnose(write_run(tmp_path / "run", metrics), max_backtracks=15),
             "line_search_rejections")
    assert abs(f.iteration - 700) <= 5
    assert f.message.startswith("the TRPO line search rejected the step at 24 % of iterations")
    assert "24 % ran all 15 backtracks" in f.message


def test_line_search_from_backtracks_only(tmp_path):
    metrics, _ = clean_run(21, with_tasks=False)
    del metrics["step_accepted"]
    metrics["num_backtracks"] = np.where(np.arange(N) % 2 == 0, 10.0, 2.0)
    run = write_run(tmp_path / "run", metrics, spec={"ls_backtracks": 10})
    f = only(doctor.diagnose(run), "line_search_rejections")
    assert f.evidence["source"] == "num_backtracks" and "at 50 % of iterations" in f.message


# --------------------------------------------------------------------------------------------------
# 6. No adaptation gain


@pytest.mark.parametrize("seed", range(3))
def test_no_adaptation_gain(tmp_path, seed):
    metrics, _ = clean_run(30 + seed, with_tasks=False)
    rng = np.random.default_rng(seed)
    metrics["return_pre"] = metrics["return_post"] + rng.normal(0, 1.0, N)
    f = only(doctor.diagnose(write_run(tmp_path / "run", metrics)), "no_adaptation_gain")
    assert f.iteration == 501 and f.evidence["n"] == 500
    assert abs(f.evidence["mean_gain"]) < 2 * f.evidence["sem"]
    assert f.evidence["sem"] == pytest.approx(1 / math.sqrt(500), rel=0.15)
    assert f.message.startswith("return_post − return_pre = ")
    assert "(s.e.m., n=500 iterations 501–1000" in f.message
    assert "within noise: the inner loop does not help (post ≈ pre)" in f.message


def test_adaptation_that_hurts(tmp_path):
    metrics, _ = clean_run(33, with_tasks=False)
    metrics["return_pre"] = metrics["return_post"] + 1.0
    f = only(doctor.diagnose(write_run(tmp_path / "run", metrics)), "no_adaptation_gain")
    assert "= -1 ± " in f.message and "adaptation makes it worse" in f.message
    assert f.evidence["negative"]


def test_rl2_trial_without_adaptation(tmp_path):
    rng = np.random.default_rng(34)
    ep = 3 + rng.normal(0, 0.5, (N, 3)) + np.linspace(0, 2, N)[:, None]
    run = write_run(tmp_path / "run", {"trial_return": ep.sum(1), "episode_returns": ep})
    f = only(doctor.diagnose(run), "no_adaptation_gain")
    assert f.message.startswith("episode_returns_2 − episode_returns_0 = ")


# --------------------------------------------------------------------------------------------------
# 6b. Meta-overfitting (eval_test.json / eval_ood.json of `jmeta evaluate`)


def write_evals(run, test, ood, x="steps"):
    """``test``/``ood``: (mean list, sem list) or None (no file), as `jmeta evaluate` writes."""
    for split, curve in (("test", test), ("ood", ood)):
        if curve is not None:
            rec = {"split": split, "x": x, "mean": curve[0], "sem": curve[1], "iteration": 40}
            (run / f"eval_{split}.json").write_text(json.dumps(rec))
    return run


def healthy(tmp_path):
    metrics, _ = clean_run(35, with_tasks=False)
    return write_run(tmp_path / "run", metrics)


def test_meta_overfitting_the_demo_numbers_by_hand(tmp_path):
    # the demo's curves (RESULTS.md): test -35.3 -> -10.3 ± 0.8, ood -89.6 -> -48.6 ± 2.3.
    # gap 38.3 = 372 % of |-10.3|; s.e. sqrt(0.8² + 2.3²) = 2.435, so 15.7 s.e.
    run = write_evals(healthy(tmp_path), ([-35.3, -10.3], [2.0, 0.8]),
                      ([-89.6, -48.6], [2.5, 2.3]))
    f = only(doctor.diagnose(run), "meta_overfitting")
    assert f.evidence["gap"] == pytest.approx(38.3)
    assert f.evidence["relative_gap"] == pytest.approx(38.3 / 10.3)
    assert f.evidence["z"] == pytest.approx(38.3 / math.hypot(0.8, 2.3))
    assert f.evidence["test_gain"] == pytest.approx(25.0)
    assert f.evidence["ood_gain"] == pytest.approx(41.0)
    assert f.severity == pytest.approx(0.7) and f.iteration == 40
    assert f.message.startswith("meta-overfitting: after 1 adaptation step(s), the return on "
                                "shifted (ood) tasks is -48.6 ± 2.3 against -10.3 ± 0.8 on "
                                "held-out test tasks, 372 % of |test| lower (15.7 s.e.)")
    assert "adaptation gained 25 on test and 41 on ood" in f.message


def test_meta_overfitting_positive_returns_and_rl2_episodes(tmp_path):
    # 300 -> 100: 67 % below |300| and 14.1 s.e. of the difference
    run = write_evals(healthy(tmp_path), ([50, 250, 300], [10, 10, 10]),
                      ([40, 90, 100], [10, 10, 10]), x="episode")
    f = only(doctor.diagnose(run), "meta_overfitting")
    assert f.message.startswith("meta-overfitting: in trial episode 3, the return on shifted "
                                "(ood) tasks is 100 ± 10 against 300 ± 10")
    assert f.severity == pytest.approx(0.55 + 0.15 * (2 / 3 / 0.5 - 1))


@pytest.mark.parametrize("test, ood", [
    (([-35.0, -10.0], [1.0, 0.3]), ([-40.0, -12.0], [1.0, 0.3])),  # 20 % lower: a small shift
    (([-5.0, -1.0], [1.0, 1.0]), ([-6.0, -4.0], [1.0, 1.5])),  # 300 % lower but 1.7 s.e.
    (([-35.0, -10.0], [1.0, 0.8]), None),  # no ood evaluation
    (([-35.0, -10.0], [1.0, 0.8]), ([-90.0, None], [2.0, None])),  # a non-finite ood end
])
def test_no_meta_overfitting_finding(tmp_path, test, ood):
    run = write_evals(healthy(tmp_path), test, ood)
    assert "meta_overfitting" not in kinds(doctor.diagnose(run))


def test_meta_overfitting_threshold_is_configurable(tmp_path):
    # 20 % lower at 4.7 s.e.: a finding only when 20 % counts as far
    run = write_evals(healthy(tmp_path), ([-35.0, -10.0], [1.0, 0.3]),
                      ([-40.0, -12.0], [1.0, 0.3]))
    assert "meta_overfitting" not in kinds(doctor.diagnose(run))
    assert "meta_overfitting" in kinds(doctor.diagnose(run, ood_rel_gap=0.1))
    with pytest.raises(ValueError, match=r"DoctorConfig.ood_k must be a number > 0, got 0"):
        doctor.diagnose(run, ood_k=0)


def test_malformed_evaluation_file(tmp_path):
    run = healthy(tmp_path)
    (run / "eval_ood.json").write_text("{")
    with pytest.raises(doctor.MalformedLogError, match=r"eval_ood.json: not a JSON evaluation"):
        doctor.load_run(run)
    (run / "eval_ood.json").write_text(json.dumps({"mean": [1, 2], "sem": [1]}))
    with pytest.raises(doctor.MalformedLogError, match=r'eval_ood.json: expected "mean" and '
                                                       r'"sem" lists of equal length'):
        doctor.load_run(run)


# --------------------------------------------------------------------------------------------------
# Log reading, bad inputs, output


def test_missing_dir(tmp_path):
    with pytest.raises(doctor.RunDirNotFoundError, match="run dir not found: .*nope"):
        doctor.diagnose(tmp_path / "nope")
    assert issubclass(doctor.RunDirNotFoundError, FileNotFoundError)


def test_dir_without_metrics(tmp_path):
    with pytest.raises(doctor.NotARunDirError,
                       match=r"not a jmeta run dir: .* \(no metrics.jsonl\)"):
        doctor.diagnose(tmp_path)
    (tmp_path / "f.txt").write_text("x")
    with pytest.raises(doctor.NotARunDirError, match="is a file, not a directory"):
        doctor.diagnose(tmp_path / "f.txt")


def test_empty_metrics_file(tmp_path):
    (tmp_path / "metrics.jsonl").write_text("\n\n")
    with pytest.raises(doctor.MalformedLogError, match="metrics.jsonl is empty"):
        doctor.diagnose(tmp_path)


@pytest.mark.parametrize("bad,problem", [
    ("{not json", "line 3: not valid JSON"),
    ("[1, 2]", "line 3: expected a JSON object, got list"),
    ('{"iteration": 3}', 'line 3: no "metrics" object'),
    ('{"iteration": "x", "metrics": {}}', 'line 3: "iteration" is not a number'),
    ('{"iteration": 3, "metrics": {}, "tasks": {"return": [1, 2], "friction": [0.5]}}',
     "line 3: tasks column 'friction' has 1 values, \"return\" has 2"),
    ('{"iteration": 3, "metrics": {}, "tasks": {"return": ["a"]}}',
     "line 3: tasks column 'return' holds non-numeric values"),
])
def test_malformed_line_names_line_number(tmp_path, bad, problem):
    good = [json.dumps({"iteration": i, "metrics": {"return_post": float(i)}}) for i in (1, 2, 4)]
    (tmp_path / "metrics.jsonl").write_text("\n".join(good[:2] + [bad] + good[2:]) + "\n")
    with pytest.raises(doctor.MalformedLogError) as e:
        doctor.diagnose(tmp_path)
    assert str(e.value).endswith(problem) or problem in str(e.value), str(e.value)
    assert "metrics.jsonl line 3" in str(e.value)


def test_truncated_last_line_is_a_warning(tmp_path):
    metrics, tasks = clean_run(40)
    run = write_run(tmp_path / "run", metrics, tasks, truncate=True)
    findings = doctor.diagnose(run)
    assert kinds(findings) == ["truncated_log"]
    assert findings[0].message == ("the last line of metrics.jsonl (line 1000) is incomplete, as "
                                   "a killed run leaves it; it was ignored")
    log = doctor.load_run(run)
    assert len(log.iterations) == 999 and log.tasks.returns.shape == (999 * T,)


def test_only_a_truncated_line_is_empty(tmp_path):
    (tmp_path / "metrics.jsonl").write_text('{"iteration": 1, "metr')
    with pytest.raises(doctor.MalformedLogError, match="is empty"):
        doctor.diagnose(tmp_path)


def test_resumed_run_relogs_iterations_last_wins(tmp_path):
    metrics, _ = clean_run(41, with_tasks=False)
    run = write_run(tmp_path / "run", metrics)
    lines = (run / "metrics.jsonl").read_text().splitlines()
    # the first attempt logged 600..650 with garbage, then was killed and resumed from 599
    junk = [json.dumps({"iteration": i, "metrics": {"return_post": -999.0}}) for i in
            range(600, 651)]
    (run / "metrics.jsonl").write_text("\n".join(lines[:599] + junk + lines[599:]) + "\n")
    log = doctor.load_run(run / "metrics.jsonl")
    assert np.array_equal(log.iterations, np.arange(1, N + 1))
    assert log.metrics["return_post"][600] == pytest.approx(metrics["return_post"][600])
    assert doctor.diagnose(log) == []


def test_nested_metric_names_and_coefficients(tmp_path):
    """The Runner flattens nested metrics with "/": "outer/kl" is a KL; "kl_coeff" and
    "entropy_coef" (hyperparameters) are not checked as KL or entropy."""
    metrics = kl_blowup_run(55)
    metrics["outer/kl"] = metrics.pop("kl")
    metrics["kl_coeff"] = np.linspace(1.0, 100.0, N)
    metrics["entropy_coef"] = np.linspace(0.01, 0.0001, N)
    findings = doctor.diagnose(write_run(tmp_path / "run", metrics), max_kl=0.01)
    assert kinds(findings) == ["kl_blowup"]
    assert findings[0].message.startswith("outer/kl exceeded 1.5× max_kl (0.01)")


def test_missing_metrics_and_no_tasks(tmp_path):
    (tmp_path / "metrics.jsonl").write_text(
        "".join(json.dumps({"iteration": i, "metrics": {"loss": 1.0}, "tasks": {}}) + "\n"
                for i in range(1, 50)))
    f = only(doctor.diagnose(tmp_path), "no_return_metric")
    assert "return-based checks were skipped" in f.message and f.severity < 0.1


def test_return_from_task_means(tmp_path):
    rng = np.random.default_rng(42)
    ret = -48 + rng.normal(0, 2, (N, T))
    f = only(doctor.diagnose(write_run(tmp_path / "run", {"loss": np.zeros(N)},
                                       {"return": ret})), "plateau")
    assert f.message.startswith("mean task return never improved")


def test_bad_thresholds(tmp_path):
    metrics, _ = clean_run(43, with_tasks=False)
    run = write_run(tmp_path / "run", metrics)
    with pytest.raises(ValueError, match=r"DoctorConfig.drop_min_frac must be a number in "
                                         r"\(0, 1\], got 1.5"):
        doctor.diagnose(run, drop_min_frac=1.5)
    with pytest.raises(ValueError, match="DoctorConfig.window must be None or an integer >= 1"):
        doctor.DoctorConfig(window=0)
    with pytest.raises(TypeError, match="unknown threshold"):
        doctor.diagnose(run, drop_frac=0.2)
    with pytest.raises(ValueError, match="return_metric 'reward' was not logged; logged "
                                         "metrics: grad_norm, kl, log_std, "):
        doctor.diagnose(run, return_metric="reward")


def test_report_and_json(tmp_path):
    metrics, tasks = friction_drop_run(0, 0.5)
    findings = doctor.diagnose(write_run(tmp_path / "run", metrics, tasks))
    report = doctor.format_report(findings)
    lines = report.splitlines()
    assert lines[0] == f"jmeta doctor: {len(findings)} findings, most severe first"
    assert lines[1].startswith(" 1. [problem 0.") and "sudden_drop @ 50" in lines[1]
    assert lines[2].startswith(" 2. [") and "task_attribution" in lines[2]
    assert "evidence: " in doctor.format_report(findings, evidence=True)
    data = json.loads(doctor.findings_to_json(findings))
    assert [d["kind"] for d in data] == kinds(findings)
    assert data[0]["evidence"]["metric"] == "return_post"
    assert set(data[0]) == {"kind", "severity", "iteration", "message", "evidence"}
    severities = [f.severity for f in findings]
    assert severities == sorted(severities, reverse=True)
    hash(findings[0])  # frozen and hashable (evidence is not part of the hash)
