"""`dockwall schema` and the model agree: every policy we ship validates against the schema,
and the schema and the model each refuse the same structurally bad policies."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import yaml
from click.testing import CliRunner

from dockwall.cli import commands as cli
from dockwall.errors import PolicyError
from dockwall.model.policy import parse_policy, policy_schema

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = sorted([*ROOT.glob("examples/*.yaml"), *ROOT.glob("tests/scenarios/*/policy.yaml")])
VALIDATOR = jsonschema.Draft202012Validator(policy_schema())

GOOD = [
    "version: 1\n",
    "version: 1\ndefault: reject\nrules: [{name: a, from: any}]\n",
    "version: 1\nrules: [{name: a, from: 198.51.100.1, to: {container: web}, ports: 443}]\n",
    "version: 1\nrules: [{name: a, from: [any], to: '*', ports: [80, 443/tcp, 53/udp]}]\n",
    "version: 1\ngroups: {admins: 198.51.100.10}\nrules: [{name: a, from: admins}]\n",
    "version: 1\nlog: {rate: 10/minute, burst: 5}\nrules: []\n",
    "version: 1\ndefaults: {outbound: drop}\n"
    "rules: [{name: a, from: {label: app=x}, to: [203.0.113.0/24], ports: 8000-8100/tcp}]\n",
    "version: 1\nbackend: nftables\nrules: [{name: a, from: any, via: eth0, log: true}]\n",
]

BAD = [
    "rules: []\n",  # no version
    "version: 2\n",
    "version: 1\nrulez: []\n",  # a typo'd key
    "version: 1\ndefault: allow\n",
    "version: 1\nbackend: pf\n",
    "version: 1\nrules: {name: a, from: any}\n",  # a mapping, not a list
    "version: 1\nrules: [{from: any}]\n",  # no name
    "version: 1\nrules: [{name: a}]\n",  # no from
    "version: 1\nrules: [{name: a, from: []}]\n",
    "version: 1\nrules: [{name: a, from: any, to: []}]\n",  # names nothing
    "version: 1\nrules: [{name: a, from: any, ports: []}]\n",
    "version: 1\nrules: [{name: a, from: any, ports: [http]}]\n",
    "version: 1\nrules: [{name: a, from: any, ports: 70000}]\n",
    "version: 1\nrules: [{name: a, from: any, ports: 80/sctp}]\n",
    "version: 1\nrules: [{name: a, from: any, to: {container: web, color: red}}]\n",
    "version: 1\nrules: [{name: a, from: any, log: sometimes}]\n",
    "version: 1\ndefaults: {inbound: accept}\n",  # inbound is drop or reject
    "version: 1\ndefaults: {outbound: maybe}\n",
    "version: 1\ndefaults: {sideways: drop}\n",
    "version: 1\nlog: {rate: 5/second, burst: lots}\n",
    "version: 1\ngroups: [admins]\n",
]


def test_the_schema_is_a_valid_draft_2020_12_schema_with_every_field_described() -> None:
    schema = policy_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    models = [schema, *schema["$defs"].values()]
    for model in models:
        for name, field in model.get("properties", {}).items():
            assert field.get("description"), f"{model.get('title')}.{name} has no description"


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_shipped_policy_validates(path: Path) -> None:
    parse_policy(path.read_bytes(), str(path))
    assert list(VALIDATOR.iter_errors(yaml.safe_load(path.read_text()))) == []


@pytest.mark.parametrize("text", GOOD)
def test_schema_and_model_take_the_same_forms(text: str) -> None:
    parse_policy(text.encode(), "p.yaml")
    assert list(VALIDATOR.iter_errors(yaml.safe_load(text))) == []


@pytest.mark.parametrize("text", BAD)
def test_schema_and_model_refuse_the_same_bad_policies(text: str) -> None:
    with pytest.raises(PolicyError):
        parse_policy(text.encode(), "p.yaml")
    assert list(VALIDATOR.iter_errors(yaml.safe_load(text))) != []


def test_the_command_prints_the_schema() -> None:
    done = CliRunner().invoke(cli.main, ["schema"])
    assert done.exit_code == 0 and json.loads(done.stdout) == policy_schema()
