"""`visionedge-devhub`: run a local IoT Hub + edgeHub for the module, and poke it from another shell."""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import Any

from visionedge_devhub import fleetcli
from visionedge_devhub.broker import BrokerError
from visionedge_devhub.certs import CertificateError
from visionedge_devhub.control import ControlClient, ControlError, ControlServer, NoDevHubError, write_state
from visionedge_devhub.hub import DEFAULT_HOSTNAME, DevHub, DevHubError

_log = logging.getLogger(__name__)

DEFAULT_WORKDIR = Path(".cache/devhub")
_PROG = "visionedge-devhub"


class UsageError(Exception):
    """A command-line argument is wrong; exit code 2."""


def _out(text: str) -> None:
    """Write one line to stdout, flushed (other processes read it line by line)."""
    print(text, flush=True)  # noqa: T201 - the CLI's output


def _err(text: str) -> None:
    """Write one error line to stderr."""
    print(f"{_PROG}: error: {text}", file=sys.stderr, flush=True)  # noqa: T201 - the CLI's output


def _json_arg(text: str, what: str) -> Any:
    """Parse a JSON command-line argument, or explain what was expected."""
    try:
        return json.loads(text)
    except ValueError as err:
        raise UsageError(f"{what} is not valid JSON ({err}): {text!r}") from None


def export_lines(env: dict[str, str]) -> list[str]:
    """`export NAME=value` lines, shell-quoted, to paste before running the module."""
    return [f"export {name}={shlex.quote(value)}" for name, value in env.items()]


# ------------------------------------------------------------------------------------------------ up


def _cmd_up(args: argparse.Namespace) -> int:
    """Start a devhub, print the module environment, serve the control API until Ctrl-C or SIGTERM."""
    work_dir: Path = args.workdir
    work_dir.mkdir(parents=True, exist_ok=True)
    try:
        if ControlClient(work_dir).alive():
            raise UsageError(f"a devhub is already running in {work_dir}: stop it first, or use another --workdir")
    except NoDevHubError:
        pass  # no state file, or a stale one: start afresh
    desired = _json_arg(args.desired, "--desired") if args.desired else None
    hub = DevHub(
        args.device_id,
        args.module_id,
        hostname=args.hostname,
        module_key=args.module_key,
        ip=args.ip,
        work_dir=work_dir,
        desired=desired,
        max_telemetry=10_000,
    )
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    with hub:
        control = ControlServer(hub, hub.runtime_dir / "control.sock")
        control.start()
        state = write_state(work_dir, hub, control.socket_path)
        env_file = work_dir / "devhub.env"
        env_file.write_text("\n".join(export_lines(hub.env())) + "\n", encoding="utf-8")
        try:
            ident = hub.identity
            _out(f"# visionedge devhub: {ident.device_id}/{ident.module_id} at {hub.ip}:8883 (hub {ident.hostname})")
            _out("# run the module with this environment (also in " + str(env_file) + "):")
            for line in export_lines(hub.env()):
                _out(line)
            _out(f"# devhub ready; Ctrl-C to stop. Try: {_PROG} --workdir {shlex.quote(str(work_dir))} watch")
            stop.wait()
        finally:
            state.unlink(missing_ok=True)
            env_file.unlink(missing_ok=True)
            control.stop()
    return 0


# ------------------------------------------------------------------------------------------- clients


def _cmd_env(client: ControlClient, args: argparse.Namespace) -> int:
    """Print the export lines of the running devhub again."""
    for line in export_lines(client.state["env"]):
        _out(line)
    return 0


def _cmd_twin(client: ControlClient, args: argparse.Namespace) -> int:
    """Print desired and reported properties."""
    _out(json.dumps(client.twin(), indent=2, sort_keys=True))
    return 0


def _cmd_status(client: ControlClient, args: argparse.Namespace) -> int:
    """Print link state and counters."""
    _out(json.dumps(client.status(), indent=2, sort_keys=True))
    return 0


def _cmd_patch(client: ControlClient, args: argparse.Namespace) -> int:
    """Push a desired patch and print the new version."""
    patch = _json_arg(args.patch, "the patch")
    if not isinstance(patch, dict):
        raise UsageError("the patch must be a JSON object, e.g. '{\"fps\": 5}'")
    _out(str(client.patch(patch)))
    return 0


def _cmd_call(client: ControlClient, args: argparse.Namespace) -> int:
    """Invoke a direct method and print its status and payload as one JSON line."""
    payload = _json_arg(args.payload, "the payload") if args.payload is not None else None
    status, answer = client.call(args.method, payload, args.timeout)
    _out(json.dumps({"status": status, "payload": answer}))
    return 0


def _cmd_send_input(client: ControlClient, args: argparse.Namespace) -> int:
    """Send a JSON message to one of the module's inputs and print its message id."""
    body = _json_arg(args.body, "the message body")
    properties = {}
    for item in args.property:
        name, sep, value = item.partition("=")
        if not sep:
            raise UsageError(f"--property wants NAME=VALUE, got {item!r}")
        properties[name] = value
    _out(client.send_input(args.input, body, properties))
    return 0


def _cmd_watch(client: ControlClient, args: argparse.Namespace) -> int:
    """Print telemetry as JSON lines (output, properties, body) until Ctrl-C, or once what has arrived (--once)."""
    _, last = client.telemetry(None, 0)
    after = 0 if args.all else last
    try:
        while True:
            messages, after = client.telemetry(after, 0.0 if args.once else 10.0)
            for message in messages:
                if args.output is None or message["output"] == args.output:
                    _out(json.dumps(message))
            if args.once:
                return 0
    except KeyboardInterrupt:
        return 0


def _link(action: str) -> Any:
    """A command that flips the module's link (drop, down, up, stall, unstall) and prints the link state."""

    def command(client: ControlClient, args: argparse.Namespace) -> int:
        status = client.link(action)
        _out(f"link {status['link']}; live connections: {status['front']['live']}")
        return 0

    return command


# -------------------------------------------------------------------------------------------- parser


def _parser() -> argparse.ArgumentParser:
    """Build the argument parser; each subcommand sets `func`."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--workdir", type=Path, default=argparse.SUPPRESS, help=f"devhub work dir (default {DEFAULT_WORKDIR})"
    )
    parser = argparse.ArgumentParser(prog=_PROG, description=__doc__, parents=[common])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    up = sub.add_parser("up", parents=[common], help="start a devhub and print the module's environment")
    up.add_argument("--ip", help="loopback IP to listen on (default: first free 127.0.0.N, N >= 2)")
    up.add_argument("--device-id", default="devhub-device")
    up.add_argument("--module-id", default="visionedge")
    up.add_argument("--hostname", default=DEFAULT_HOSTNAME, help="IoT Hub host name the module believes in")
    up.add_argument("--module-key", help="base64 module key (default: random)")
    up.add_argument("--desired", help="initial desired properties, JSON")
    up.set_defaults(func=_cmd_up, client=False)
    fleetcli.add_parser(sub)

    def client_command(name: str, func: Any, help_text: str) -> argparse.ArgumentParser:
        command = sub.add_parser(name, parents=[common], help=help_text)
        command.set_defaults(func=func, client=True)
        return command

    client_command("env", _cmd_env, "print the export lines of the running devhub")
    client_command("twin", _cmd_twin, "print desired and reported properties")
    client_command("status", _cmd_status, "print link state and connection counters")
    client_command("patch", _cmd_patch, "push a desired patch, print the new version").add_argument(
        "patch", help="JSON object, e.g. '{\"fps\": 5}' (null deletes a key)"
    )
    call = client_command("call", _cmd_call, "invoke a direct method, print status and payload")
    call.add_argument("method")
    call.add_argument("payload", nargs="?", help="JSON payload")
    call.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for the reply (max 30)")
    send = client_command("send-input", _cmd_send_input, "send a JSON message to a module input")
    send.add_argument("input")
    send.add_argument("body", help="JSON body")
    send.add_argument("--property", action="append", default=[], metavar="NAME=VALUE")
    watch = client_command("watch", _cmd_watch, "print telemetry as JSON lines until Ctrl-C")
    watch.add_argument("--output", help="only this output name")
    watch.add_argument("--all", action="store_true", help="start with the messages already received")
    watch.add_argument("--once", action="store_true", help="print what has arrived and exit instead of following")
    for name, action, help_text in [
        ("drop", "drop", "close the module's connections (it reconnects)"),
        ("down", "down", "cut the link: drop and refuse connections until up-link"),
        ("up-link", "up", "accept connections again after down"),
        ("stall", "stall", "stop forwarding bytes (keep-alive has to notice)"),
        ("unstall", "unstall", "forward bytes again"),
    ]:
        client_command(name, _link(action), help_text)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of `visionedge-devhub` and `python -m visionedge_devhub`; returns the exit code."""
    args = _parser().parse_args(argv)
    args.workdir = getattr(args, "workdir", DEFAULT_WORKDIR).absolute()
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        if args.client:
            code: int = args.func(ControlClient(args.workdir), args)
        else:
            code = args.func(args)
        return code
    except UsageError as err:
        _err(str(err))
        return 2
    except (ControlError, DevHubError, BrokerError, CertificateError) as err:
        _err(str(err))
        return 1
    except KeyboardInterrupt:
        return 130
