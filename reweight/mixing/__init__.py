"""Domain mixing: temperature sampling, schedules of training progress, and domain rules.

Pure: imports only numpy, torch and the standard library. A domain rule gives the target domain
probabilities π as a function of training progress (and, for online rules, of observed losses);
the engine turns π into draws or loss weights.

Example:
    >>> from reweight.mixing import make_rule
    >>> rule = make_rule({"kind": "cooldown", "high": 5.0}, sizes=[900, 90, 10],
    ...                  names=["web", "code", "math"])
    >>> rule.probs(0.0).round(3).tolist(), rule.probs(1.0).round(3).tolist()
    ([0.491, 0.31, 0.2], [0.9, 0.09, 0.01])
"""

from reweight.mixing.config import RULES, make_rule
from reweight.mixing.online import ODM, DoReMi, parse_batch
from reweight.mixing.rules import (
    STATE_VERSION,
    DomainRule,
    EndUpsample,
    FixedMixture,
    TemperatureRule,
    check_rule,
)
from reweight.mixing.schedules import (
    SCHEDULES,
    Constant,
    Cosine,
    Exponential,
    Linear,
    Phases,
    Schedule,
    Step,
    check_schedule,
    cooldown,
    make_schedule,
)
from reweight.mixing.temperature import floor_probs, temperature_probs

__all__ = [
    "ODM",
    "RULES",
    "SCHEDULES",
    "STATE_VERSION",
    "Constant",
    "Cosine",
    "DoReMi",
    "DomainRule",
    "EndUpsample",
    "Exponential",
    "FixedMixture",
    "Linear",
    "Phases",
    "Schedule",
    "Step",
    "TemperatureRule",
    "check_rule",
    "check_schedule",
    "cooldown",
    "floor_probs",
    "make_rule",
    "make_schedule",
    "parse_batch",
    "temperature_probs",
]
