"""Flax networks: MLP policies and values, recurrent and Transformer actor-critics."""

from jmeta.networks.mlp import MLP, activation
from jmeta.networks.policies import (
    CATEGORICAL,
    GAUSSIAN,
    CategoricalMLP,
    DistributionFns,
    GaussianMLP,
    MLPPolicy,
    categorical_log_prob,
    gaussian_log_prob,
    make_mlp_policy,
)
from jmeta.networks.recurrent import LayerNormGRUCell, RecurrentActorCritic
from jmeta.networks.transformer import TransformerActorCritic

__all__ = [
    "CATEGORICAL",
    "DistributionFns",
    "GAUSSIAN",
    "CategoricalMLP",
    "GaussianMLP",
    "MLPPolicy",
    "categorical_log_prob",
    "gaussian_log_prob",
    "make_mlp_policy",
    "MLP",
    "LayerNormGRUCell",
    "RecurrentActorCritic",
    "TransformerActorCritic",
    "activation",
]
