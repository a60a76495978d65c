"""dockwall in a container, as compose.yaml runs it, governs the host: proved with real packets.

No image can be pulled here, so the image is dockwall's Dockerfile done by hand (see
dockwall_sandbox.dockwall_image): Debian's python3, iptables, nftables and ipset, dockwall
pip-installed from this source tree, and the Dockerfile's own ENTRYPOINT and CMD. It is run
in the sandbox's Docker engine with the options compose.yaml gives, read from the file and
translated to `docker run` (no compose here); an option this test does not know fails it, so
what is proved is the shipped file. Only the host paths are the sandbox's: its Docker socket,
a policy file, a state folder.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path

import pytest
import yaml

from dockwall_sandbox import Sandbox, Scenario, dockwall_image
from tests.integration.firewall import eventually

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "compose.yaml"
DOCKERFILE = ROOT / "Dockerfile"
EXAMPLE = ROOT / "examples" / "policy.yaml"
TAG = "dockwall:test"
NAME = "dockwall"
# Docker 28 (dockwall picks iptables) and Docker 29 with its nftables firewall (nftables).
ENGINES = ["28", "29-nftables"]

WAN_HOST = IPv4Address("198.51.100.1")
WAN_HOST6 = IPv6Address("2001:db8:100::1")
ADMIN = IPv4Address("198.51.100.10")
STRANGER = IPv4Address("198.51.100.99")
STRANGER6 = IPv6Address("2001:db8:100::99")
LAN_HOST = IPv4Address("203.0.113.1")
LAN_MEMBER = IPv4Address("203.0.113.5")

# The example policy, and a rule that opens containers labelled public=yes to anyone: a
# container started later is reachable by a stranger only once dockwall has followed it.
LATE_PUBLIC = """  - name: late-public
    from: any
    via: eth0
    to: {label: "public=yes"}
    ports: [8081]
"""
OPEN_LATE_CLOSED = """  - name: late-closed-opened
    from: any
    via: eth0
    to: {container: late-closed}
    ports: [8082]
"""


def dockerfile_changes(path: Path = DOCKERFILE) -> list[str]:
    """The Dockerfile's ENTRYPOINT and CMD lines (exec form), as `docker import --change`s."""
    changes = []
    for line in path.read_text().splitlines():
        word, _sep, rest = line.partition(" ")
        if word in ("ENTRYPOINT", "CMD"):
            json.loads(rest)  # the exec form: a JSON list, or this test is wrong
            changes.append(line)
    assert [c.split()[0] for c in changes] == ["ENTRYPOINT", "CMD"], changes
    return changes


def compose_service(path: Path = COMPOSE) -> dict[str, object]:
    services = yaml.safe_load(path.read_text())["services"]
    assert list(services) == ["dockwall"], services
    service: dict[str, object] = services["dockwall"]
    return service


def _list(value: object) -> list[str]:
    assert isinstance(value, list), value
    return [str(item) for item in value]


def _volume(spec: str, hosts: dict[str, Path]) -> list[str]:
    """One short-syntax volume with its host path replaced by the sandbox's: the test never
    binds the machine's own socket or folders."""
    source, target, *mode = spec.split(":")
    if source not in hosts:
        raise AssertionError(f"compose.yaml mounts {source}: this test has no stand-in for it")
    return ["--volume", ":".join([str(hosts[source]), target, *mode])]


def docker_run_args(
    service: dict[str, object], hosts: dict[str, Path], one_off: bool = False
) -> list[str]:
    """`docker run` options for compose.yaml's service (before the image). ``one_off`` is
    `docker compose run --rm`: compose applies no restart policy there."""
    args: list[str] = []
    translate: dict[str, Callable[[object], list[str]]] = {
        "build": lambda _v: [],  # the test builds its own way (the module's docstring)
        "image": lambda _v: [],  # replaced by the test's image
        "command": lambda _v: [],  # given after the image
        "network_mode": lambda v: ["--network", str(v)],
        "cap_drop": lambda v: [a for c in _list(v) for a in ("--cap-drop", c)],
        "cap_add": lambda v: [a for c in _list(v) for a in ("--cap-add", c)],
        "security_opt": lambda v: [a for o in _list(v) for a in ("--security-opt", o)],
        "read_only": lambda v: ["--read-only"] if v is True else [],
        "volumes": lambda v: [a for spec in _list(v) for a in _volume(spec, hosts)],
        "stop_signal": lambda v: ["--stop-signal", str(v)],
        "restart": lambda v: [] if one_off else ["--restart", str(v)],
    }
    for key, value in service.items():
        if key not in translate:
            raise AssertionError(f"compose.yaml has {key!r}, which this test does not run")
        args += translate[key](value)
    return args


@dataclass
class Deployment:
    box: Sandbox
    scenario: Scenario
    service: dict[str, object]
    hosts: dict[str, Path]
    build_seconds: float

    def run_args(self, one_off: bool = False) -> list[str]:
        return docker_run_args(self.service, self.hosts, one_off)

    def logs(self) -> str:
        done = self.box.docker("logs", NAME, check=False, timeout=20)
        return done.stdout + done.stderr

    def reaches(self, source: IPv4Address | IPv6Address, port: int) -> bool:
        target = WAN_HOST6 if source.version == 6 else WAN_HOST
        target = LAN_HOST if source == LAN_MEMBER else target
        return self.box.probe_auto([(source, target, port)], timeout=0.7)[0]

    def dockwall_rules(self) -> list[str]:
        lines = [ln for ln in self.box.firewall_dump().splitlines() if "DOCKWALL" in ln]
        nft = self.box.run_in_host(["nft", "list", "table", "inet", "dockwall"], check=False)
        return lines + (nft.stdout.splitlines() if nft.returncode == 0 else [])


@pytest.fixture(scope="module")
def image_tar() -> Iterator[Path]:
    """dockwall's image as a tar, built once for every engine."""
    work = dockwall_image.work_dir()
    try:
        yield dockwall_image.image_tar(ROOT, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


@pytest.fixture(scope="module", params=ENGINES)
def deployment(
    request: pytest.FixtureRequest,
    require_engine: Callable[[str], None],
    leftovers_removed: list[str],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Deployment]:
    """A sandbox with the seed scenario and dockwall's image; the stand-ins for the host
    paths compose.yaml mounts."""
    engine: str = request.param
    require_engine(engine)
    tmp = tmp_path_factory.mktemp("container")
    policy_dir = tmp / "etc-dockwall"
    policy_dir.mkdir()
    (policy_dir / "policy.yaml").write_text(EXAMPLE.read_text() + LATE_PUBLIC)
    state = tmp / "run-dockwall"
    started = time.monotonic()
    tar = request.getfixturevalue("image_tar")
    with Sandbox(engine) as box:
        scenario = box.start_seed_scenario()
        dockwall_image.import_image(box, tar, TAG, dockerfile_changes())
        hosts = {
            "/var/run/docker.sock": box.dirs.socket,
            "./dockwall": policy_dir,
            "/run/dockwall": state,
        }
        seconds = time.monotonic() - started
        yield Deployment(box, scenario, compose_service(), hosts, seconds)


def test_compose_command_is_the_images_default() -> None:
    service = compose_service()
    cmd = next(c for c in dockerfile_changes() if c.startswith("CMD"))
    assert json.loads(cmd.removeprefix("CMD ")) == service["command"]


def test_dockwall_in_a_container_governs_the_host(deployment: Deployment) -> None:
    d = deployment
    box = d.box
    # Plain Docker: admin-app's 8080 is open to anyone, over IPv4 and IPv6.
    assert d.reaches(STRANGER, 8080) and d.reaches(STRANGER6, 8080)
    assert not d.dockwall_rules()

    command = _list(d.service["command"])
    box.docker("run", "-d", "--name", NAME, *d.run_args(), TAG, *command)
    assert eventually(lambda: "msg=running" in d.logs(), 30), d.logs()
    assert "could not apply" not in d.logs(), d.logs()
    assert d.dockwall_rules(), d.logs()

    # The policy holds: admins and the LAN reach everything, the stranger only the web.
    assert d.reaches(ADMIN, 8080), d.logs()
    assert d.reaches(LAN_MEMBER, 8080), d.logs()
    assert d.reaches(STRANGER, 80)
    assert not d.reaches(STRANGER, 8080), box.firewall_dump()
    assert not d.reaches(STRANGER6, 8080), box.firewall_dump()
    assert not d.reaches(STRANGER, 5432)

    # A container started after dockwall is followed: opened to the stranger by its label
    # once dockwall has seen it start; another, no rule's, stays closed but to admins.
    box.start_container("late-web", [(8081, 80)], labels={"public": "yes"})
    box.start_container("late-closed", [(8082, 80)])
    assert eventually(lambda: d.reaches(STRANGER, 8081)), d.logs()
    assert "container late-web started" in d.logs()
    assert d.reaches(ADMIN, 8082)
    assert not d.reaches(STRANGER, 8082)

    # SIGHUP reloads the policy, saved anew as an editor does (a new file, renamed).
    policy = d.hosts["./dockwall"] / "policy.yaml"
    saved = policy.with_name("policy.yaml.new")
    saved.write_text(policy.read_text() + OPEN_LATE_CLOSED)
    saved.rename(policy)
    box.docker("kill", "-s", "HUP", NAME)
    assert eventually(lambda: d.reaches(STRANGER, 8082)), d.logs()
    assert "policy reloaded" in d.logs()

    # Stopping the container leaves the rules in place: the host stays closed.
    box.docker("stop", NAME, timeout=60)
    state = json.loads(box.docker("inspect", NAME).stdout)[0]["State"]
    assert not state["Running"] and state["ExitCode"] == 0, (state, d.logs())
    assert d.dockwall_rules()
    assert not d.reaches(STRANGER, 8080)
    assert not d.reaches(STRANGER, 5432)
    assert d.reaches(STRANGER, 8081) and d.reaches(STRANGER, 8082)
    assert d.reaches(ADMIN, 8080)

    # `docker compose run --rm dockwall remove`: back to plain Docker, nothing of dockwall's.
    removed = box.docker("run", "--rm", *d.run_args(one_off=True), TAG, "remove", timeout=120)
    assert not d.dockwall_rules(), (removed.stdout, removed.stderr)
    assert d.reaches(STRANGER, 8080) and d.reaches(STRANGER6, 8080)
    print(f"image built (if not yet), sandbox up, image imported in {d.build_seconds:.1f} s")
    print("--- docker logs dockwall ---\n" + d.logs())
    print("--- dockwall remove ---\n" + removed.stdout + removed.stderr)
