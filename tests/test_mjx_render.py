"""Rendering MJX rollouts: rollout_states, brax's HTML viewer file, frames through MuJoCo's
renderer (in a subprocess with MUJOCO_GL=egl: the variable must be set before mujoco is imported)
and the errors that say what is missing."""

import base64
import json
import os
import re
import subprocess
import sys
import textwrap
import zlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jmeta
from jmeta.envs.mjx.render import render_frames, render_html, rollout_states

STEPS = 3
BODIES = ["torso", "bthigh", "bshin", "bfoot", "fthigh", "fshin", "ffoot"]


@pytest.fixture(scope="module")
def cheetah_states():
    env, tasks = jmeta.make("halfcheetah-vel", horizon=STEPS - 1)  # ends one step early
    params = tasks.sample(jax.random.key(0))
    policy = lambda obs, key: jax.random.uniform(key, (6,), minval=-1.0, maxval=1.0)  # noqa
    states = jax.jit(rollout_states, static_argnums=(0, 1, 4))(
        env, policy, params, jax.random.key(1), STEPS)
    return env, params, states


def _payload(page: str) -> dict:
    b64 = re.search(r'var system = "([^"]+)"', page).group(1)
    return json.loads(zlib.decompress(base64.b64decode(b64)))


def test_rollout_states_stacks_the_reset_and_every_step(cheetah_states):
    env, params, states = cheetah_states
    assert states.data.qpos.shape == (STEPS + 1, env.mj_model.nq)
    np.testing.assert_array_equal(states.time, [0, 1, 2, 2])  # held after the truncation
    np.testing.assert_array_equal(states.data.qpos[3], states.data.qpos[2])
    assert not np.allclose(states.data.qpos[1], states.data.qpos[0])


def test_render_html_writes_the_viewer_with_the_body_names(cheetah_states, tmp_path):
    env, params, states = cheetah_states
    path = render_html(env, params, states, tmp_path / "runs" / "cheetah.html")
    assert path == str(tmp_path / "runs" / "cheetah.html") and os.path.getsize(path) > 1000
    page = open(path, encoding="utf-8").read()
    assert page.startswith("<!DOCTYPE html>") and 'id="brax-viewer"' in page
    title = re.search(r"<title>(.*)</title>", page).group(1)
    assert title.startswith("halfcheetah-vel target=")
    assert f"{float(params.target):.4f}"[:4] in title
    bodies = re.search(r'<meta name="jmeta-bodies" content="([^"]*)">', page).group(1)
    assert bodies.split(",") == BODIES
    system = _payload(page)  # the viewer's compressed model and poses
    assert set(BODIES) <= set(system["geoms"])
    frames = system["states"]["x"]
    assert len(frames) == STEPS + 1
    # the poses are MuJoCo's kinematics of each qpos: the root's x position is qpos[0]
    pos = np.asarray([f["pos"] for f in frames])  # [T + 1, nbody - 1, 3]
    torso = env.mj_model.body("torso").id - 1
    np.testing.assert_allclose(pos[:, torso, 0], states.data.qpos[:, 0], atol=1e-5)
    # a qpos array renders the same poses
    page2 = open(render_html(env, None, states.data.qpos, tmp_path / "q.html", height=300)).read()
    np.testing.assert_allclose(np.asarray([f["pos"] for f in _payload(page2)["states"]["x"]]),
                               pos, atol=1e-9)
    assert "<title>halfcheetah-vel</title>" in page2 and "height: 300px" in page2


def test_render_errors_say_what_is_missing(cheetah_states, tmp_path, monkeypatch):
    env, params, states = cheetah_states
    traj = jmeta.types.Trajectory(*([None] * len(jmeta.types.Trajectory._fields)))
    with pytest.raises(ValueError, match="a jmeta Trajectory holds observations, not simulator"):
        render_html(env, params, traj, tmp_path / "x.html")
    batch = jnp.stack([states.data.qpos, states.data.qpos])
    with pytest.raises(ValueError, match=r"expected qpos of shape \[T, 9\].*index a task batch"):
        render_html(env, params, batch, tmp_path / "x.html")
    monkeypatch.delenv("MUJOCO_GL", raising=False)
    monkeypatch.delenv("DISPLAY", raising=False)
    with pytest.raises(RuntimeError, match="needs an offscreen OpenGL context.*MUJOCO_GL=egl"):
        render_frames(env, states)


def test_render_frames_with_egl(cheetah_states):
    """Frames in a fresh interpreter with ``MUJOCO_GL=egl`` (qpos only: nothing to compile)."""
    env, _, states = cheetah_states
    qpos = np.asarray(states.data.qpos).tolist()
    code = textwrap.dedent(f"""
        import numpy as np, jmeta
        from jmeta.envs.mjx.render import render_frames
        env, _ = jmeta.make("halfcheetah-vel")
        frames = render_frames(env, np.array({qpos!r}), height=48, width=64)
        print(frames.shape, frames.dtype, int(frames.std() > 1), int(np.abs(
            frames[0].astype(int) - frames[-1].astype(int)).sum() > 0))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, "MUJOCO_GL": "egl", "JAX_PLATFORMS": "cpu"},
                         timeout=300)
    if out.returncode != 0 and "offscreen OpenGL context" in out.stderr:
        pytest.skip(f"no EGL on this machine: {out.stderr.strip().splitlines()[-1]}")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == f"({STEPS + 1}, 48, 64, 3) uint8 1 1"
