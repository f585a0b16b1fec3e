"""Known open sampler bugs found by the edge-case tests; each is listed in the issue note and
fails loudly (strict xfail) once fixed, so the mark must then be removed."""

from __future__ import annotations

import pytest

KNOWN_BUGS = {
    "test_stats_when_factor_products_leave_float32_range": "a·b products outside float32 range "
    "overflow/underflow in stats(); products are not range-checked yet",
    "test_no_warning_for_zero_mass_domain_that_has_zero_probability": "the zero-mass warning "
    "fires while natural probabilities are in force during construction",
    "test_stats_emit_no_numpy_warnings_with_a_zero_mass_domain": "stats() multiplies π = 0 by "
    "an infinite smallest weight (0 × inf) for an excluded domain",
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        reason = KNOWN_BUGS.get(item.name.split("[")[0])
        if reason is not None:
            item.add_marker(pytest.mark.xfail(strict=True, reason=reason))
