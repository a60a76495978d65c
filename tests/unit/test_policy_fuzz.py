"""The policy parser under random and hostile input: a Policy or a PolicyError, nothing else,
and hostile shapes (alias bombs, deep nesting, huge lists) are refused with a clear message
instead of being expanded."""

from __future__ import annotations

import string
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dockwall.errors import PolicyError
from dockwall.model import yamlsource
from dockwall.model.policy import Policy, parse_policy

KEYS = ["version", "default", "groups", "rules", "name", "from", "to", "ports", "via", "log"]
scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.sampled_from(["any", "drop", "reject", "80/tcp", "eth0", "198.51.100.0/24", "*"])
    | st.text(max_size=20)
)
documents = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=30,
)


def parsed(text: str) -> Policy | PolicyError:
    try:
        return parse_policy(text.encode("utf-8", "surrogatepass"), "fuzz.yaml")
    except PolicyError as exc:
        assert exc.problems and all(p.what for p in exc.problems)
        return exc


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(documents)
def test_random_documents_give_a_policy_or_a_clear_error(doc: Any) -> None:
    parsed(yaml.safe_dump({"version": 1, "rules": doc}))
    parsed(yaml.safe_dump(doc))


@settings(max_examples=200, deadline=None)
@given(st.text(string.printable + "&*!|>{}[]:-é\u202e", max_size=200))
def test_random_text_gives_a_policy_or_a_clear_error(text: str) -> None:
    parsed(text)


def laughs(levels: int, width: int = 9) -> str:
    lines = ["version: 1", f"a0: &a0 [{', '.join(['lol'] * width)}]"]
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * width)}]")
    return "\n".join(lines) + f"\nrules: *a{levels - 1}\n"


@pytest.mark.parametrize("levels", [6, 9, 12])
def test_alias_bomb_is_refused_not_expanded(levels: int) -> None:
    """9 levels of 9 would be 387 million values when walked: refused at the bound."""
    error = parsed(laughs(levels))
    assert isinstance(error, PolicyError)
    assert f"more than {yamlsource.MAX_VALUES} values" in str(error)


def test_a_few_aliases_are_fine() -> None:
    text = "version: 1\ngroups:\n  g: &g [198.51.100.1]\n  h: *g\nrules:\n- {name: r, from: h}\n"
    assert isinstance(parsed(text), Policy)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a: " + "[" * 5000 + "]" * 5000, "not valid YAML"),
        ("version: 1\nrules: " + "[" * 40 + "]" * 40, "nested deeper than"),
        ("a: &a [*a]", "nested deeper than"),
        ("=", "not valid YAML"),  # a scalar with no constructor: found by the fuzz run
        ("version: 1\nrules: [" + ",".join(["{}"] * 20_000) + "]", "at most 10000 items"),
        ("# " + "x" * (yamlsource.MAX_BYTES + 1), "larger than"),
    ],
)
def test_hostile_shapes_are_clear_errors(text: str, message: str) -> None:
    error = parsed(text)
    assert isinstance(error, PolicyError) and message in str(error)
