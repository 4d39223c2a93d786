#!/usr/bin/env bash
# The GPU measurements of issue 5, as one command for the device tool (15 minutes of device time
# per session, a machine's start included, so this stays under ~8 minutes):
#   1. MJX throughput of halfcheetah-vel at large batches, largest first (target: >= 1 M env
#      steps/s on one H100; every row is a compile, and rows are written as they come);
#   2. one MAML-TRPO meta-iteration at the pytorch-maml-rl configuration (cheetah_vel_sec_per_iter).
# First run benchmarks/device_wheels.sh here, then, with the device tool:
#   run(command="bash benchmarks/device_checks.sh", carry=[".device"], timeout_s=540)
# Results (JSON and the log) come back from $OUT. Each step has its own timeout, and each writes
# its JSON as it goes, so a step cut short keeps what it measured.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/jmeta_device_out}
mkdir -p "$OUT"
exec > >(tee "$OUT/device_checks.log") 2>&1
python3 -m pip install --quiet --no-index --no-deps --find-links .device/wheels \
  .device/wheels/*.whl || { echo "wheel install failed: run benchmarks/device_wheels.sh first"; exit 1; }
export PYTHONPATH=$PWD
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
python3 - <<'PY' || exit 1
import importlib.metadata as md
import jax
import jmeta  # noqa: F401
print("devices:", jax.devices())
for p in ("jax", "jaxlib", "flax", "optax", "chex", "orbax-checkpoint", "mujoco", "mujoco-mjx",
          "brax"):
    print(f"{p} {md.version(p)}")
PY
timeout 260 python3 benchmarks/mjx_throughput.py --envs halfcheetah-vel \
  --batches 65536,16384,4096,1024 --skip-accuracy --out "$OUT/mjx_throughput_gpu.json"
echo "mjx_throughput exit $?"
timeout 220 python3 benchmarks/maml_rl_mjx.py --speed-only --out "$OUT/maml_rl_mjx_speed_gpu.json"
echo "maml_rl_mjx exit $?"
