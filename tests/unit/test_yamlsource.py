"""yamlsource: what a load keeps after it returns."""

from __future__ import annotations

import pytest

from dockwall.errors import PolicyError
from dockwall.model import yamlsource


def test_no_node_outlives_its_load() -> None:
    """The constructor remembers every node it made a value of; load lets them go, or a
    daemon holds each policy's whole node tree (and one more at every reload)."""
    yamlsource.load("a: [1, 2, {b: c}]\n", "p.yaml")
    assert yamlsource._SCALARS.constructed_objects == {}
    with pytest.raises(PolicyError):
        yamlsource.load("a: [1, 2\n", "p.yaml")
    assert yamlsource._SCALARS.constructed_objects == {}
