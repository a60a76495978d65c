"""The command line: the boundary where errors become messages and exit codes."""

from __future__ import annotations

import functools
import ipaddress
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from dockwall import logfmt, record
from dockwall.backends.base import Kernel
from dockwall.cli import app, report
from dockwall.compile import flows
from dockwall.compile.exposure import egress, exposure
from dockwall.daemon import loop
from dockwall.daemon.prometheus import Prometheus, parse_address
from dockwall.errors import DockerError, DockwallError, PolicyError, UnsafeValueError
from dockwall.model.policy import load_policy, policy_schema
from dockwall.model.values import PortRange, Proto, checked_ifname

DEFAULT_POLICY = Path("/etc/dockwall/policy.yaml")
EXIT_OK = 0
EXIT_ERROR = 1
EXIT_PENDING = 2  # `plan`: the kernel does not match the policy yet

F = TypeVar("F", bound=Callable[..., Any])


def _policy_option(func: F, reading: bool = False) -> F:
    """-p; for the commands that only read (reading), by default the policy the last apply
    used (see _reading)."""
    return click.option(
        "-p",
        "--policy",
        "policy_path",
        type=click.Path(path_type=Path),
        default=None if reading else DEFAULT_POLICY,
        show_default=not reading,
        help=f"Policy file (default: the one the last apply used, else {DEFAULT_POLICY})."
        if reading
        else "Policy file.",
    )(func)


def _read_policy_option(func: F) -> F:
    return _policy_option(func, reading=True)


def _reading(policy_path: Path | None) -> Path:
    """The policy a read-only command uses: the one given, else the one the last apply
    recorded (said on stderr), else the default file; else an error saying what to do."""
    if policy_path is not None:
        return policy_path
    last = record.load()
    if last is not None and Path(last.policy).is_file():
        click.echo(f"policy: {last.policy} (the one the last apply used)", err=True)
        return Path(last.policy)
    if DEFAULT_POLICY.is_file():
        return DEFAULT_POLICY
    recorded = f" (the last apply used {last.policy}, which is gone)" if last else ""
    raise NoPolicyError(
        f"no policy given, none at {DEFAULT_POLICY}{recorded}: give one with -p FILE, "
        "or run `dockwall apply -p FILE` first"
    )


class NoPolicyError(DockwallError):
    """A read-only command was given no policy and can find none."""


def _docker_option(func: F) -> F:
    return click.option(
        "--docker-host",
        envvar="DOCKER_HOST",
        default=None,
        help="Docker Engine address (default: $DOCKER_HOST, else the standard socket).",
    )(func)


def _metrics_address(
    ctx: click.Context, param: click.Parameter, value: str | None
) -> tuple[str, int] | None:
    try:
        return None if value is None else parse_address(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def _backend_option(func: F) -> F:
    return click.option(
        "--backend",
        type=click.Choice(app.BACKENDS),
        envvar="DOCKWALL_BACKEND",
        default=None,
        help="Firewall backend (default: the policy's `backend`, else auto: nftables where "
        "Docker runs its nftables backend or there is no iptables, else iptables).",
    )(func)


def _kernel(asked: str | None, ctx: app.Context, docker_host: str | None) -> Kernel[Any, Any, Any]:
    return app.backend(app.choose_backend(asked, ctx.policy, docker_host))


def _errors_to_exit(func: F) -> F:
    """Errors as messages and exit codes, for a command that may write."""
    return _errors_said(func, "error: the policy is invalid; nothing was changed")


def _read_errors_to_exit(func: F) -> F:
    """The same for a command that only reads (so it has nothing to say of changes)."""
    return _errors_said(func, "error: the policy is invalid")


def _errors_said(func: F, invalid: str) -> F:
    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except PolicyError as exc:
            click.echo(invalid, err=True)
            for problem in exc.problems:
                click.echo(f"  {problem}", err=True)
            sys.exit(EXIT_ERROR)
        except DockwallError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(EXIT_ERROR)

    return wrapper  # type: ignore[return-value]


def _warn(warnings: tuple[str, ...]) -> None:
    for warning in warnings:
        click.echo(f"warning: {warning}", err=True)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="dockwall")
def main() -> None:
    """Decide who may reach the containers on a Docker host, and keep iptables true to it."""


@main.command()
@_policy_option
@_docker_option
@_errors_to_exit
def validate(policy_path: Path, docker_host: str | None) -> None:
    """Check a policy file. Touches nothing.

    \b
    Example:
      dockwall validate -p /etc/dockwall/policy.yaml
    """
    policy = load_policy(policy_path)
    try:
        _warn(app.context(policy, docker_host).compiled.warnings)
    except DockerError as exc:
        click.echo(f"note: Docker not reachable, containers not checked ({exc})", err=True)
    click.echo(f"{policy_path}: valid ({len(policy.rules)} rules, {len(policy.groups)} groups)")


@main.command()
@_read_policy_option
@_docker_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("-v", "--verbose", is_flag=True, help="Also the kernel rules that change.")
@_backend_option
@_read_errors_to_exit
def plan(
    policy_path: Path | None,
    docker_host: str | None,
    as_json: bool,
    verbose: bool,
    backend: str | None,
) -> None:
    """Show what `apply` would change, in policy terms. Touches nothing.

    Exit code 0: nothing to do; 2: changes are pending; 1: error.

    \b
    Example:
      dockwall plan -p /etc/dockwall/policy.yaml
    """
    ctx = app.prepare(_reading(policy_path), docker_host)
    result = app.plan_in_policy_terms(ctx, _kernel(backend, ctx, docker_host))
    if as_json:
        click.echo(report.plan_json(result, ctx.compiled.warnings))
    else:
        _warn(ctx.compiled.warnings)
        click.echo(report.plan_text(result, verbose))
    sys.exit(EXIT_PENDING if result.change.pending else EXIT_OK)


@main.command()
@_policy_option
@_docker_option
@_backend_option
@_errors_to_exit
def apply(policy_path: Path, docker_host: str | None, backend: str | None) -> None:
    """Install the policy: one atomic transaction per address family.

    \b
    Example:
      dockwall apply -p /etc/dockwall/policy.yaml
    """
    ctx = app.prepare(policy_path, docker_host)
    _warn(ctx.compiled.warnings)
    kernel = _kernel(backend, ctx, docker_host)
    change = app.apply(ctx, kernel)
    for retired in app.retire_others(kernel):
        click.echo(f"removed the rules dockwall had installed with {retired}")
    if change.pending:
        click.echo(report.change_text(change))
        click.echo("applied")
    else:
        click.echo("nothing to do: the installed rules match")


@main.command()
@_read_policy_option
@_docker_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@_backend_option
@_read_errors_to_exit
def status(
    policy_path: Path | None, docker_host: str | None, as_json: bool, backend: str | None
) -> None:
    """Show containers, addresses, published ports, and who may reach them.

    \b
    Example:
      dockwall status
    """
    path = _reading(policy_path)
    ctx = app.prepare(path, docker_host)
    kernel = _kernel(backend, ctx, docker_host)
    header = _status_header(path, ctx, kernel, docker_host)
    rows = exposure(ctx.compiled.ruleset, ctx.host)
    out = egress(ctx.compiled.ruleset, ctx.host)
    hits = kernel.hits()
    if as_json:
        click.echo(report.status_json(header, rows, hits, out))
        return
    click.echo(report.status_header(header))
    click.echo(report.table_text(report.status_rows(rows, hits)))
    if out:
        click.echo("\nWhat containers may open (outbound and between containers):")
        click.echo(report.table_text(report.egress_rows(out, ctx.host, hits)))
    for line in report.quarantine_lines(ctx.host):
        click.echo(line)
    click.echo(report.default_line(hits))


def _status_header(
    policy_path: Path, ctx: app.Context, kernel: Kernel[Any, Any, Any], docker_host: str | None
) -> report.StatusHeader:
    """What `status` says first: the policy, the last apply, whether the kernel matches, and
    the two firewalls (dockwall's, Docker's)."""
    last = record.load()
    return report.StatusHeader(
        policy=str(policy_path),
        policy_sha256=ctx.policy.digest,
        applied_at=last.applied_at if last else None,
        applied_policy_sha256=last.sha256 if last else None,
        installed_matches_policy=not app.plan(ctx, kernel).pending,
        backend=kernel.name,
        docker_version=ctx.host.docker_version,
        quarantined=ctx.host.quarantined,
        docker_firewall_backend=app.docker_firewall(docker_host),
        unseen_proxy_ports=report.unseen_proxy_ports(kernel.name, ctx.host.proxy_cgroup),
    )


@main.command()
@click.argument("source")
@click.argument("dest")
@click.option(
    "--port",
    default=None,
    help="Port dialed, as 443 or 443/tcp (default: every published port of DEST).",
)
@click.option(
    "--via",
    default=None,
    help="Interface the traffic arrives on (default: the one the host routes SOURCE by).",
)
@_read_policy_option
@_docker_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@_backend_option
@_read_errors_to_exit
def check(
    *,
    source: str,
    dest: str,
    port: str | None,
    via: str | None,
    policy_path: Path | None,
    docker_host: str | None,
    as_json: bool,
    backend: str | None,
) -> None:
    """Explain what happens to connections from SOURCE to DEST.

    SOURCE is an address, or a container (its name or address: then DEST is an outside
    address, outbound, or a container, between). DEST is a container name, a container
    address, or a host address (then --port is the published port). The answer is the
    current policy's, and says whether and where the installed rules differ from it.

    \b
    Examples:
      dockwall check 198.51.100.99 www-nginx
      dockwall check 203.0.113.5 198.51.100.1 --port 443/tcp --via eth0
      dockwall check app 203.0.113.7 --port 443
      dockwall check web db --port 5432
    """
    ctx = app.prepare(_reading(policy_path), docker_host)
    container = flows.source_container(ctx.host, source)
    if container is not None:  # traffic a container starts: outbound or between
        ports = _one_port(port)
        kernel = _kernel(backend, ctx, docker_host)
        number = ports.first if ports else None
        proto = ports.proto if ports else Proto.TCP
        found = app.check_flows(ctx, kernel, container, dest, port=number, proto=proto)
        click.echo((report.flows_json if as_json else report.flows_text)(found, source, dest))
        return
    request = _check_request(source, dest, port, via)
    kernel = _kernel(backend, ctx, docker_host)
    result = app.check(ctx, kernel, request, app.docker_firewall(docker_host))
    text = report.check_json if as_json else report.check_text
    click.echo(text(result, source, dest))


def _one_port(port: str | None) -> PortRange | None:
    try:
        ports = PortRange.parse(port) if port else None
    except (ValueError, UnsafeValueError) as exc:
        raise click.BadParameter(str(exc)) from None
    if ports is not None and ports.first != ports.last:
        raise click.BadParameter("--port takes one port, not a range")
    return ports


def _check_request(source: str, dest: str, port: str | None, via: str | None) -> app.CheckRequest:
    try:
        address = ipaddress.ip_address(source)
        ports = PortRange.parse(port) if port else None
        interface = checked_ifname(via) if via else None
    except (ValueError, UnsafeValueError) as exc:
        raise click.BadParameter(str(exc)) from None
    if ports is not None and ports.first != ports.last:
        raise click.BadParameter("--port takes one port, not a range")
    proto = ports.proto if ports else Proto.TCP
    return app.CheckRequest(address, dest, ports.first if ports else None, proto, interface)


@main.command()
def schema() -> None:
    """Print the policy file's JSON Schema, for editors (made from dockwall's own model).

    \b
    Example:
      dockwall schema > /etc/dockwall/policy.schema.json
      # first line of the policy: # yaml-language-server: $schema=policy.schema.json
    """
    click.echo(json.dumps(policy_schema(), indent=2))


@main.command()
@click.option(
    "--backend",
    type=click.Choice([b for b in app.BACKENDS if b != "auto"]),
    default=None,
    help="Remove only what dockwall installed with this backend (default: with either).",
)
@_errors_to_exit
def remove(backend: str | None) -> None:
    """Delete every chain and jump dockwall installed, and nothing else.

    \b
    Examples:
      dockwall remove
      dockwall remove --backend nftables
    """
    changes = app.remove_all() if backend is None else [app.remove_one(backend)]
    click.echo("removed" if any(c.pending for c in changes) else "nothing to remove")


@main.command()
@_policy_option
@_docker_option
@click.option(
    "--check-interval",
    type=click.FloatRange(0.1, 60),
    default=1.0,
    show_default=True,
    help="Seconds between checks that the installed rules are still intact.",
)
@click.option(
    "--debounce",
    type=click.FloatRange(0, 10),
    default=0.0,
    show_default=True,
    help="Extra seconds to wait after an event before acting (0: act at once).",
)
@click.option(
    "--watch-kernel/--no-watch-kernel",
    default=True,
    show_default=True,
    help="Repair at once when nftables reports a change to the filter rules (else only at "
    "the timed check).",
)
@click.option(
    "--deltas/--no-deltas",
    default=True,
    show_default=True,
    help="Write a change of set elements as a delta from what dockwall last wrote (nftables: "
    "over netlink; iptables: ipset moves); else work each change out whole.",
)
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    default="info",
    show_default=True,
)
@click.option(
    "--metrics-address",
    metavar="ADDRESS:PORT",
    callback=_metrics_address,
    default=None,
    help="Serve Prometheus metrics at http://ADDRESS:PORT/metrics, for example "
    "127.0.0.1:9707 or [::1]:9707 (off unless given; an address is required, so that they "
    "are never served to every network by accident).",
)
@_backend_option
@_errors_to_exit
def run(
    *,
    policy_path: Path,
    docker_host: str | None,
    check_interval: float,
    debounce: float,
    log_level: str,
    watch_kernel: bool,
    deltas: bool,
    metrics_address: tuple[str, int] | None,
    backend: str | None,
) -> None:
    """Apply the policy, then keep the kernel true to it until stopped.

    Follows Docker's events, repairs rules that someone else changed, reloads the policy on
    SIGHUP (an invalid one is reported and the running rules stay), and leaves the rules in
    place on SIGTERM: only `dockwall remove` takes them away.

    \b
    Example:
      dockwall run -p /etc/dockwall/policy.yaml
    """
    logfmt.setup(log_level)
    settings = loop.Settings(
        policy_path,
        docker_host,
        check_interval=check_interval,
        debounce=debounce,
        watch_kernel=watch_kernel,
    )
    policy = load_policy(policy_path)
    name = app.choose_backend(backend, policy, docker_host)
    kernel = app.backend(name)
    kernel.backend.deltas = deltas
    metrics = None
    if metrics_address is not None:
        metrics = Prometheus(app.backend(name).hits_by_family, name)  # a Kernel of its own
        metrics.serve(metrics_address)
    loop.start(settings, kernel, app.retire_others, metrics)
