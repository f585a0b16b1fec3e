"""Shared test configuration.

Known open bugs found by edge-case tests are listed in ``KNOWN_BUGS`` (test name → reason): each
is marked as a strict xfail, so it fails loudly once fixed and the entry must then be removed.
None are open at the moment.
"""

from __future__ import annotations

import pytest

KNOWN_BUGS: dict[str, str] = {}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        reason = KNOWN_BUGS.get(item.name.split("[")[0])
        if reason is not None:
            item.add_marker(pytest.mark.xfail(strict=True, reason=reason))
