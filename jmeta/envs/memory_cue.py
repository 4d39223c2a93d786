"""Memory cue: a long-memory probe where a fact seen once, at a trial's first step, is needed again
and again until the trial's last step.

Protocol. A task is a hidden cue ``c ∈ {0, …, k−1}`` (``k = num_cues``, drawn uniformly). One
episode of this env is a whole probe trial: ``num_rounds`` rounds (the issue's "episodes") of
``round_length`` steps each, ``horizon = num_rounds × round_length`` steps in all, ``k`` discrete
actions at every step.

* Step 0 of round 1, and only it, shows the cue: the observation's token slot holds ``onehot(c)``
  and its cue flag is 1.
* Every other step is a distractor: with probability ``distractor_rate`` (a task field) the token
  slot holds a random one-hot token drawn uniformly from the same ``k`` symbols, else zeros; the
  cue flag is 0. A distractor looks exactly like the cue but for the flag, so a memory that does
  not gate its input by the flag is overwritten.
* The last step of every round (phase ``round_length − 1``) is an *answer*: the action is correct
  if it equals ``c``. The observation also carries the phase (step within the round) as a one-hot,
  so when to answer is given and no agent has to count; only *what* to answer needs memory.
* Rewards (``feedback``):
  ``"end"`` (default): the env counts correct answers silently and pays their number at the
  trial's last step (reward 0 elsewhere), so the return is the number of correct answers and the
  agent never learns mid-trial whether an answer was right. ``"immediate"``: each answer is paid
  at once (1 if correct, else 0).

Why ``"end"`` is the default. An RL² agent sees its previous action and reward. With immediate
rewards, a correct answer in round ``j − 1`` followed by reward 1 *re-reveals* the cue one round
(``round_length`` steps) before round ``j``'s answer, so an agent can refresh its memory every round
and never needs to hold anything for longer than a round. With ``"end"`` feedback, the only source
of ``c`` before the last step is the trial's step 0: the answer of round ``j`` needs information
that is ``j × round_length − 1`` steps old, seen only in round 1, behind about
``distractor_rate ×`` that many look-alike distractor tokens. An RNN must hold ``c`` in its state
across the whole trial; a Transformer whose context window covers the trial can attend back to
step 0.

Why rounds live inside one env episode. :class:`jmeta.envs.wrappers.TrialWrapper` resets the inner
env between its episodes with ``reset(key, params)`` and does not pass the episode index, and the
task (``params``) is the same in every episode, so an env wrapped episode-by-episode cannot know
which episode is a trial's first (nor when the trial ends, for the ``"end"`` payment). The probe
trial is therefore one env episode; for RL² use ``trial_episodes=1`` (``rl2.Config``), and the
TrialWrapper's previous-action / previous-reward inputs still apply. ``info`` gives per step the
``round`` (0-based), ``answer`` (this step is an answer step) and ``correct`` (an answer equal to
``c``), so accuracy per round is read from a trajectory (:func:`round_accuracy`). Wrapped in a
TrialWrapper with several episodes, each env episode is a fresh probe of the same cue (shown again
at its step 0).

Observation (float32, ``[k + 1 + round_length]``): ``[token one-hot (k), cue flag, phase one-hot]``.

Tasks: ``cue`` uniform over ``{0, …, k−1}``; ``distractor_rate`` U[``distractor_rate``] (default
(0.5, 1.0)). The ``ood`` split uses ``ood_distractor_rate`` (default (1.0, 1.0): a distractor at
every step, denser than in training). ``test`` draws from a key stream disjoint from ``train``, but
with a finite cue set it repeats training cues (with new distractor rates and sequences): the probe
measures holding a fact, not generalising to unseen facts.

>>> import jax, jmeta
>>> env, tasks = jmeta.make("memory-cue", num_cues=4, round_length=5, num_rounds=16)
>>> task = tasks.test.sample(jax.random.key(0))
>>> obs, state = env.reset(jax.random.key(1), task)   # obs[:4] == onehot(task.cue), obs[4] == 1
"""

from __future__ import annotations

import dataclasses
from typing import Mapping

import jax
import jax.numpy as jnp
from flax import struct

from jmeta.envs.base import Environment
from jmeta.envs.spaces import Box, Discrete
from jmeta.envs.tasks import Range, TaskDistribution, check_positive_int, check_range

FEEDBACK = ("end", "immediate")


@struct.dataclass
class MemoryCueParams:
    """A memory-cue task.

    Attributes:
      cue: int32 scalar in ``{0, …, num_cues − 1}``, the fact to remember and the right answer.
      distractor_rate: float32 scalar, probability that a non-cue step shows a random token.
      horizon: steps per env episode, ``num_rounds × round_length`` (static: sets the rollout
        length, cannot be vmapped).
    """

    cue: jax.Array
    distractor_rate: jax.Array
    horizon: int = struct.field(pytree_node=False, default=40)


@struct.dataclass
class MemoryCueState:
    """Attributes:
      time: int32 scalar, steps taken in this episode (the step about to be taken).
      num_correct: int32 scalar, correct answers so far (paid at the end with ``"end"`` feedback).
    """

    time: jax.Array
    num_correct: jax.Array


class MemoryCue(Environment[MemoryCueState, MemoryCueParams]):
    """The memory-cue probe (see the module docstring for the protocol).

    Args:
      num_cues: k, the number of cues, distractor tokens and actions (>= 2).
      round_length: steps per round (>= 1); the last one is the answer step.
      num_rounds: rounds per episode (>= 1).
      feedback: ``"end"`` (answers paid at the last step) or ``"immediate"``.
    """

    name = "memory-cue"

    def __init__(self, num_cues: int = 4, round_length: int = 5, num_rounds: int = 8,
                 feedback: str = "end"):
        self.num_cues = check_positive_int("num_cues", num_cues)
        if self.num_cues < 2:
            raise ValueError(f"num_cues: expected an int >= 2 (one cue needs no memory), "
                             f"got {num_cues!r}")
        self.round_length = check_positive_int("round_length", round_length)
        self.num_rounds = check_positive_int("num_rounds", num_rounds)
        if feedback not in FEEDBACK:
            raise ValueError(f"feedback: expected one of {FEEDBACK}, got {feedback!r}")
        self.feedback = feedback
        self.horizon = self.num_rounds * self.round_length

    def _obs(self, key: jax.Array, time: jax.Array, params: MemoryCueParams) -> jax.Array:
        """The observation at step ``time``: the cue at step 0, a distractor (or nothing) after."""
        k_token, k_show = jax.random.split(key)
        is_cue = time == 0
        token = jnp.where(is_cue, params.cue,
                          jax.random.randint(k_token, (), 0, self.num_cues, jnp.int32))
        shown = jnp.logical_or(is_cue, jax.random.bernoulli(k_show, params.distractor_rate))
        token_slot = jax.nn.one_hot(token, self.num_cues, dtype=jnp.float32) * shown
        phase = jax.nn.one_hot(time % self.round_length, self.round_length, dtype=jnp.float32)
        return jnp.concatenate([token_slot, is_cue.astype(jnp.float32)[None], phase])

    def reset_env(self, key, params):
        time = jnp.zeros((), jnp.int32)
        state = MemoryCueState(time=time, num_correct=jnp.zeros((), jnp.int32))
        return self._obs(key, time, params), state

    def step_env(self, key, state, action, params):
        t = state.time
        answer = (t % self.round_length) == self.round_length - 1
        correct = jnp.logical_and(answer, action == params.cue)
        num_correct = state.num_correct + correct.astype(jnp.int32)
        time = t + 1
        done = time >= self.horizon
        if self.feedback == "immediate":
            reward = correct.astype(jnp.float32)
        else:  # "end": the count of correct answers, paid once at the last step
            reward = jnp.where(done, num_correct, 0).astype(jnp.float32)
        obs = self._obs(key, time, params)
        info = {"round": t // self.round_length, "answer": answer, "correct": correct}
        # The trial's last step is terminal (nothing follows it), never a time-limit truncation.
        return obs, MemoryCueState(time=time, num_correct=num_correct), reward, done, False, info

    def action_space(self, params=None):
        return Discrete(self.num_cues)

    def observation_space(self, params=None):
        return Box(0.0, 1.0, (self.num_cues + 1 + self.round_length,))


def round_accuracy(info: Mapping[str, jax.Array], num_rounds: int) -> jax.Array:
    """Answer accuracy per round from a trajectory's ``info`` (``[T]`` fields, unbatched).

    Args:
      info: the per-step info of a rollout of :class:`MemoryCue` (possibly through wrappers that
        keep its keys, such as the TrialWrapper): ``round``, ``answer``, ``correct``, ``[T]``.
      num_rounds: rounds per episode.

    Returns:
      ``[num_rounds]`` float32: the fraction of round ``j``'s answers that were correct (1 or 0
      for one episode; NaN for a round without an answer in the trajectory).
    """
    rounds = jnp.clip(info["round"], 0, num_rounds - 1)
    hits = jax.ops.segment_sum(info["correct"].astype(jnp.float32), rounds, num_rounds)
    answers = jax.ops.segment_sum(info["answer"].astype(jnp.float32), rounds, num_rounds)
    return hits / answers


@dataclasses.dataclass(frozen=True)
class MemoryCueConfig:
    """Options of ``jmeta.make("memory-cue", ...)``.

    Attributes:
      num_cues: k, the number of cues (= distractor symbols = actions), >= 2; chance
        accuracy is 1/k.
      round_length: steps per round L (>= 1): step 0 of round 1 shows the cue, the last step of
        every round is an answer; the answer of round j is ``j·L − 1`` steps after the cue.
      num_rounds: rounds per episode n (>= 1); the env episode (the RL² trial with
        ``trial_episodes=1``) has ``n·L`` steps.
      feedback: ``"end"`` (default: correct answers paid at the last step, so no answer's
        reward reveals the cue before the trial ends) or ``"immediate"`` (each answer paid at once).
      distractor_rate: (low, high) of the per-task probability, in [0, 1], that a non-cue step
        shows a random look-alike token.
      ood_distractor_rate: that range for the ``ood`` split.
    """

    num_cues: int = 4
    round_length: int = 5
    num_rounds: int = 8
    feedback: str = "end"
    distractor_rate: Range = (0.5, 1.0)
    ood_distractor_rate: Range = (1.0, 1.0)

    def __post_init__(self):
        set_ = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731
        for f in ("num_cues", "round_length", "num_rounds"):
            set_(f, check_positive_int(f, getattr(self, f)))
        if self.num_cues < 2:
            raise ValueError(f"num_cues: expected an int >= 2 (one cue needs no memory), "
                             f"got {self.num_cues!r}")
        if self.feedback not in FEEDBACK:
            raise ValueError(f"feedback: expected one of {FEEDBACK}, got {self.feedback!r}")
        for f in ("distractor_rate", "ood_distractor_rate"):
            set_(f, check_range(f, getattr(self, f), lower=0.0, upper=1.0))


def build(config: MemoryCueConfig) -> tuple[MemoryCue, TaskDistribution]:
    env = MemoryCue(config.num_cues, config.round_length, config.num_rounds, config.feedback)
    k, horizon = config.num_cues, env.horizon

    def sampler(key: jax.Array, ranges: Mapping[str, Range]) -> MemoryCueParams:
        k_cue, k_rate = jax.random.split(key)
        lo, hi = ranges["distractor_rate"]
        return MemoryCueParams(
            cue=jax.random.randint(k_cue, (), 0, k, jnp.int32),
            distractor_rate=jax.random.uniform(k_rate, minval=lo, maxval=hi),
            horizon=horizon,
        )

    tasks = TaskDistribution(
        env_name=env.name,
        sampler=sampler,
        ranges={"distractor_rate": config.distractor_rate},
        ood_ranges={"distractor_rate": config.ood_distractor_rate},
    )
    return env, tasks
