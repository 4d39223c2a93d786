"""Rendering MJX rollouts: brax's HTML viewer, and image frames through MuJoCo's renderer.

A jmeta :class:`~jmeta.types.Trajectory` holds observations, not simulator states, so rendering
starts from :func:`rollout_states`, which returns every step's :class:`MJXState` (or from any
``[T, nq]`` array of ``qpos``). The body poses are recomputed on the host with MuJoCo's
``mj_kinematics`` from each ``qpos``: after ``mjx.step`` the ``xpos``/``xquat`` of ``mjx.Data``
still describe the configuration before the step's last integration, ``qpos`` the one after it.
Kinematics does not depend on the task's masses or friction, so the MJCF's model renders every
task.

* :func:`render_html` writes brax's viewer (``brax.io.html.render`` of the System
  ``brax.io.mjcf.load_model(env.mj_model)``): one self-contained file holding the model and the
  poses, which a browser plays back. The page loads three.js and the viewer script from public
  CDNs (or from ``base_url``), so viewing it needs that network access; writing it does not.
* :func:`render_frames` draws ``[T, H, W, 3]`` images with ``mujoco.Renderer``. It needs an
  offscreen OpenGL context, chosen by the ``MUJOCO_GL`` environment variable *before* Python
  imports ``mujoco``: ``MUJOCO_GL=egl`` (GPU or Mesa's EGL; works headless on the 2-core CPU dev
  machine) or ``MUJOCO_GL=osmesa`` (needs ``libosmesa6``, not installed there). Without one it
  raises a ``RuntimeError`` that says so.

>>> import jax, jax.numpy as jnp, jmeta
>>> from jmeta.envs.mjx.render import render_html, rollout_states
>>> env, tasks = jmeta.make("halfcheetah-vel", horizon=50)
>>> params = tasks.sample(jax.random.key(0))
>>> states = rollout_states(env, lambda obs, key: jnp.zeros(6), params, jax.random.key(1), 50)
>>> render_html(env, params, states, "cheetah.html")  # doctest: +SKIP
"""

from __future__ import annotations

import os
import warnings
from typing import Any, Callable

import jax
import jax.numpy as jnp
import mujoco
import numpy as np

from jmeta.envs.mjx.base import MJXEnv, MJXState, mjx
from jmeta.envs.tasks import check_positive_int

PolicyFn = Callable[[jax.Array, jax.Array], jax.Array]


def rollout_states(env: MJXEnv, policy_fn: PolicyFn, params: Any, key: jax.Array,
                   num_steps: int) -> MJXState:
    """One episode of ``policy_fn`` in the task ``params``, keeping every simulator state.

    Pure and jit-able (``jax.jit(rollout_states, static_argnums=(0, 1, 4))``); one ``lax.scan``
    over ``env.step``. After the episode ends (terminated or truncated) the state is held, so the
    last frames repeat the final pose.

    Args:
      env: an MJX environment.
      policy_fn: ``policy_fn(obs, key) -> action`` (close over the policy's parameters; a jmeta
        policy ``p`` is ``lambda obs, key: p(params, (), obs, key)[1]``).
      params: the task.
      key: PRNG key.
      num_steps: number of env steps T (static).

    Returns:
      The stacked :class:`MJXState` of the reset and of each step: leaves ``[T + 1, ...]``.
    """
    num_steps = check_positive_int("num_steps", num_steps)
    k_reset, k_policy, k_env = jax.random.split(key, 3)
    obs, state = env.reset(k_reset, params)

    def _env_step(carry, t):
        obs, state, done = carry
        action = policy_fn(obs, jax.random.fold_in(k_policy, t))
        next_obs, next_state, _, term, trunc, _ = env.step(
            jax.random.fold_in(k_env, t), state, action, params)
        hold = lambda new, old: jnp.where(done, old, new)  # noqa: E731
        next_state = jax.tree.map(hold, next_state, state)
        next_obs = hold(next_obs, obs)
        return (next_obs, next_state, done | term | trunc), next_state

    carry0 = (obs, state, jnp.zeros((), jnp.bool_))
    _, states = jax.lax.scan(_env_step, carry0, jnp.arange(num_steps, dtype=jnp.uint32))
    return jax.tree.map(lambda first, rest: jnp.concatenate([first[None], rest]), state, states)


def _qpos(env: MJXEnv, trajectory_or_states: Any) -> np.ndarray:
    """``[T, nq]`` qpos of stacked ``MJXState``s, ``mjx.Data``s, or a ``qpos`` array."""
    x = trajectory_or_states
    if isinstance(x, MJXState):
        x = x.data
    if isinstance(x, mjx.Data):
        x = x.qpos
    if not hasattr(x, "shape"):
        raise ValueError(
            f"states: expected stacked MJXStates (rollout_states), mjx.Data or a [T, nq] qpos "
            f"array, got {type(x).__name__}; a jmeta Trajectory holds observations, not simulator "
            "states: record them with jmeta.envs.mjx.render.rollout_states")
    qpos = np.asarray(x, np.float64)
    nq = env.mj_model.nq
    if qpos.ndim == 1 and qpos.shape[0] == nq:
        qpos = qpos[None]
    if qpos.ndim != 2 or qpos.shape[1] != nq:
        raise ValueError(f"states: expected qpos of shape [T, {nq}] (one episode of {env.name}; "
                         f"index a task batch first), got {qpos.shape}")
    return qpos


def _poses(env: MJXEnv, qpos: np.ndarray):
    """Per step ``(xpos [nbody - 1, 3], xquat [nbody - 1, 4])`` of the bodies (world dropped)."""
    m = env.mj_model
    d = mujoco.MjData(m)
    out = []
    for q in qpos:
        d.qpos[:] = q
        mujoco.mj_kinematics(m, d)
        out.append((d.xpos[1:].copy(), d.xquat[1:].copy()))
    return out


def _task_text(params: Any) -> str:
    """``name=value`` for the task's small leaves (targets, goals), physics left out."""
    if params is None:
        return ""
    parts = []
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        name = jax.tree_util.keystr(path).lstrip(".")
        value = np.asarray(leaf)
        if "physics" in name or value.size > 4:
            continue
        text = np.array2string(value.ravel() if value.ndim else value, precision=4)
        parts.append(f"{name}={text}")
    return " ".join(parts)


def _html_escape(text: str) -> str:
    return (text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            .replace('"', "&quot;"))


def render_html(env: MJXEnv, params: Any, trajectory_or_states: Any, path: str | os.PathLike, *,
                height: int | str = "100vh", base_url: str | None = None) -> str:
    """Writes brax's HTML viewer of one episode of an MJX env to ``path``.

    Args:
      env: the MJX environment the states come from.
      params: the task (its targets, goals and the like are written in the page's title; ``None``
        for none).
      trajectory_or_states: one episode: stacked :class:`MJXState` (from :func:`rollout_states`),
        stacked ``mjx.Data``, or a ``[T, nq]`` ``qpos`` array.
      path: the HTML file to write (parent folders are created).
      height: the viewer's height: pixels (an int) or a CSS length (default: the window's).
      base_url: where the viewer's script is served (``None``: brax's CDN).

    Returns:
      ``path`` as a string. The page also names the bodies in ``<meta name="jmeta-bodies">``.

    Raises:
      ValueError: states that are not one episode of ``env`` (a Trajectory, a task batch, a
        wrong ``nq``).
    """
    from brax import base as brax_base
    from brax.io import html, mjcf

    qpos = _qpos(env, trajectory_or_states)
    with warnings.catch_warnings():  # brax warns that its System is not maintained
        warnings.simplefilter("ignore")
        sys = mjcf.load_model(env.mj_model)
    nlink = env.mj_model.nbody - 1
    zeros = np.zeros((nlink, 3))
    states = [
        brax_base.State(q=q, qd=np.zeros(env.mj_model.nv),
                        x=brax_base.Transform(pos=pos, rot=rot),
                        xd=brax_base.Motion(ang=zeros, vel=zeros), contact=None)
        for q, (pos, rot) in zip(qpos, _poses(env, qpos))
    ]
    if isinstance(height, int) and not isinstance(height, bool):
        height = f"{check_positive_int('height', height)}px"
    page = html.render(sys, states, height=height, colab=False, base_url=base_url)
    bodies = [env.mj_model.body(i).name or f"link {i - 1}" for i in range(1, nlink + 1)]
    title = _html_escape(" ".join(filter(None, [env.name, _task_text(params)])))
    page = page.replace(
        "<title>Brax visualizer</title>",
        f"<title>{title}</title>\n    <meta name=\"jmeta-bodies\" content=\""
        f"{_html_escape(','.join(bodies))}\">", 1)
    path = os.fspath(path)
    if os.path.dirname(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(page)
    return path


def render_frames(env: MJXEnv, trajectory_or_states: Any, *, height: int = 240, width: int = 320,
                  camera: int | str | None = None) -> np.ndarray:
    """Images of one episode through ``mujoco.Renderer`` (an offscreen OpenGL context).

    Args:
      env: the MJX environment the states come from.
      trajectory_or_states: as in :func:`render_html`.
      height, width: image size in pixels (at most the MJCF's offscreen buffer, 640×480 unless
        the MJCF's ``<visual><global offwidth offheight>`` says otherwise).
      camera: a camera name or id of the MJCF; ``None``: its ``"track"`` camera if it has one
        (halfcheetah, ant), else MuJoCo's free camera.

    Returns:
      ``[T, height, width, 3]`` ``uint8`` RGB frames.

    Raises:
      RuntimeError: no offscreen OpenGL context (see the module docstring: set ``MUJOCO_GL=egl``
        or ``osmesa`` before Python imports mujoco).
      ValueError: as :func:`render_html`.
    """
    qpos = _qpos(env, trajectory_or_states)
    check_positive_int("height", height)
    check_positive_int("width", width)
    backend = os.environ.get("MUJOCO_GL", "").lower()
    if backend in ("", "glfw", "glx") and not os.environ.get("DISPLAY"):
        raise RuntimeError(
            "render_frames needs an offscreen OpenGL context, and there is no display and "
            f"MUJOCO_GL={backend or 'unset'}: set MUJOCO_GL=egl (or osmesa, with libosmesa6 "
            "installed) in the environment before Python imports mujoco (before importing jmeta's "
            "MJX envs), or use render_html, which needs no OpenGL")
    m = env.mj_model
    if camera is None:
        camera = "track" if mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_CAMERA, "track") >= 0 else -1
    try:
        renderer = mujoco.Renderer(m, height, width)
    except Exception as err:  # noqa: BLE001 (GL failures come as several exception types)
        raise RuntimeError(
            f"render_frames could not create an offscreen OpenGL context with MUJOCO_GL="
            f"{backend or 'unset'} ({type(err).__name__}: {err}); set MUJOCO_GL=egl (or osmesa, "
            "with libosmesa6 installed) before Python imports mujoco, or use render_html") from err
    d = mujoco.MjData(m)
    frames = []
    try:
        for q in qpos:
            d.qpos[:] = q
            mujoco.mj_forward(m, d)
            renderer.update_scene(d, camera=camera)
            frames.append(renderer.render().copy())
    finally:
        renderer.close()
    return np.stack(frames)


__all__ = ["render_frames", "render_html", "rollout_states"]
