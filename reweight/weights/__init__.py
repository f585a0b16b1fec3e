"""Pure weight math (no project imports): static log weights → sampling factors, and loss →
weight strategies over the global batch (Sow et al. 2025)."""

from reweight.weights.loss import (
    STRATEGIES,
    StrategyFn,
    cap_losses,
    get_strategy,
    loss_weights,
    normalize_losses,
    register_strategy,
    strategy_at,
)
from reweight.weights.static import check_static_params, static_factor

__all__ = [
    "STRATEGIES",
    "StrategyFn",
    "cap_losses",
    "check_static_params",
    "get_strategy",
    "loss_weights",
    "normalize_losses",
    "register_strategy",
    "static_factor",
    "strategy_at",
]
