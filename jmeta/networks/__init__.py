"""Flax networks: MLP policies and values (recurrent cores and transformer memory come later)."""

from jmeta.networks.mlp import MLP, activation
from jmeta.networks.policies import (
    CategoricalMLP,
    GaussianMLP,
    MLPPolicy,
    categorical_log_prob,
    gaussian_log_prob,
    make_mlp_policy,
)

__all__ = [
    "CategoricalMLP",
    "GaussianMLP",
    "MLPPolicy",
    "categorical_log_prob",
    "gaussian_log_prob",
    "make_mlp_policy",
    "MLP",
    "activation",
]
