"""Flax networks: MLP policies and values, recurrent actor-critics (transformer memory comes later)."""

from jmeta.networks.mlp import MLP, activation
from jmeta.networks.policies import (
    CategoricalMLP,
    GaussianMLP,
    MLPPolicy,
    categorical_log_prob,
    gaussian_log_prob,
    make_mlp_policy,
)
from jmeta.networks.recurrent import RecurrentActorCritic

__all__ = [
    "CategoricalMLP",
    "GaussianMLP",
    "MLPPolicy",
    "categorical_log_prob",
    "gaussian_log_prob",
    "make_mlp_policy",
    "MLP",
    "RecurrentActorCritic",
    "activation",
]
