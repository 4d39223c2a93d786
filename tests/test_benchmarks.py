"""Every benchmark script runs with --quick and writes the JSON of the convention (DESIGN.md §8)."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

BENCH_DIR = Path(__file__).resolve().parents[1] / "benchmarks"
SCRIPTS = sorted(p for p in BENCH_DIR.glob("*.py") if not p.name.startswith("_"))
# Headline keys each script must report (the names its issue gives).
REQUIRED_KEYS = {
    "env_throughput": ["point_nav_mlp_steps_per_s"],
    "maml_sinusoid": ["k5_mse_step1", "k5_mse_step5", "k5_mse_step10", "k10_mse_step1",
                      "fomaml_k5_mse_step1", "digits_5way_1shot_acc", "digits_5way_5shot_acc",
                      "remat_mem_ratio_20_vs_1"],
    "maml_speed": ["jax_second_order_its", "jax_first_order_its", "jax_remat_its"],
    "maml_rl_nav": ["return_step0", "return_step1", "return_step2", "return_step3"],
    "maml_rl_speed": ["sec_per_iter", "compile_s", "flop_efficiency"],
    "rl2_bandits": ["n10_k5_total_reward", "ucb1_n10_k5_total_reward",
                    "thompson_n10_k5_total_reward", "train_steps_per_s", "flop_efficiency"],
    "rl2_mdp": ["n2_total_reward", "psrl_n2_total_reward"],
    "rl2_checkpoints": ["first_to_last_paired_gain", "first_to_last_paired_sem"],
    "rl2_nav": ["rl2_return_episode1", "rl2_return_episode2", "rl2_return_episode3",
                "rl2_return_episode4"],
    "rl2_memory": ["lstm_late_accuracy_n2", "gru_late_accuracy_n2",
                   "transformer_late_accuracy_n2"],
    "mjx_throughput": ["halfcheetah_vel_env_steps_per_s", "halfcheetah_vel_physics_steps_per_s"],
    "maml_rl_mjx": ["cheetah_dir_return_step0", "cheetah_dir_return_step1",
                    "cheetah_vel_sec_per_iter"],
    "meta_overfitting": ["ood_return_no_noise", "ood_return_noise", "rl2_ood_return_no_noise",
                         "rl2_ood_return_noise"],
    "distributed": ["batches_per_s_1_sampler", "trainer_idle_fraction_1_sampler",
                    "inprocess_return_step1", "distributed_return_step1",
                    "single_device_sec_per_iter", "sharded_4_devices_sec_per_iter"],
    "cold_start": ["popularity_ctr_6_20", "rl2_ctr_6_20", "maml_ctr_6_20", "oracle_ctr_6_20",
                   "rl2_latency_us_b1", "rl2_latency_us_b1024", "maml_latency_us_b1",
                   "maml_latency_us_b1024"],
    "load_balancing": ["latency_round_robin", "latency_jsq", "latency_meta_rl_adapted",
                       "latency_oracle"],
    "continual": ["forgetting_no_replay", "forgetting_replay"],
    "cheetah_solver": ["c_mujoco_4_8_final_return", "c_mujoco_4_8_blown_up_episodes",
                       "mjx_1_4_final_return"],
}


def test_there_are_benchmarks():
    assert any(p.name == "env_throughput.py" for p in SCRIPTS)


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.stem)
def test_benchmark_quick_writes_convention_json(script, tmp_path):
    out = tmp_path / f"{script.stem}.json"
    proc = subprocess.run(
        [sys.executable, str(script), "--quick", "--out", str(out)],
        capture_output=True, text=True, timeout=600, cwd=BENCH_DIR.parent,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    data = json.loads(out.read_text())
    assert {"headline", "config", "machine"} <= set(data)
    assert data["headline"], "empty headline"
    missing = set(REQUIRED_KEYS.get(script.stem, [])) - set(data["headline"])
    assert not missing, f"missing headline keys {sorted(missing)}"
    for name, value in data["headline"].items():
        assert isinstance(value, (int, float)) and math.isfinite(value), (name, value)
    assert data["machine"]["jax"]
    assert proc.stdout.strip(), "a benchmark ends by printing a table"

