#!/usr/bin/env bash
# Downloads, into .device/wheels (git-ignored), the wheels jmeta needs on a lent GPU machine that
# its image lacks. That machine reaches no package registry: its Python 3.12 already has jax
# 0.11 with CUDA 13, flax, optax, chex, orbax-checkpoint, rich, pyyaml, matplotlib and scipy
# (../.library/device/KINDS.md), but not MuJoCo, MJX, brax or tensorboardX. The versions are the
# ones this project is tested with (pyproject.toml); --no-deps keeps the image's own packages.
# Run here (with network), then pass `carry: [".device"]` to the device tool and run
# benchmarks/device_checks.sh there.
set -euo pipefail
cd "$(dirname "$0")/.."
dest=.device/wheels
mkdir -p "$dest"
python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 -d "$dest" \
  mujoco==4.0.1 mujoco-core==4.0.1 mujoco-studio==4.0.1 mujoco-studio-wasm==4.0.1 \
  mujoco-mjx==3.17.0 brax==0.14.2 tensorboardX==2.6.5 trimesh==5.2.0 glfw==2.11.0 \
  pyopengl==3.1.10 jaxopt==0.8.5 ml-collections==1.1.0 flask==3.1.3 flask-cors==6.0.5 \
  blinker==1.9.0 itsdangerous==2.2.0 websockets==17.4 zipp==4.1.2
du -sh "$dest"
