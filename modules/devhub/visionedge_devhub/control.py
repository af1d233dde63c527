"""Control API of a running `visionedge-devhub up`: JSON over a unix socket, found through a state file."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

from visionedge_devhub.emulator import MethodTimeoutError
from visionedge_devhub.hub import DevHub
from visionedge_devhub.unixhttp import JsonRequestHandler, UnixHTTPServer, request_json

_log = logging.getLogger(__name__)

STATE_FILE = "devhub.json"
_MAX_WAIT = 30.0


class ControlError(RuntimeError):
    """A control request failed; the message is meant for the user as is."""


class NoDevHubError(ControlError):
    """No devhub answers for this work dir."""


# ------------------------------------------------------------------------------------------------ server


class ControlServer:
    """Serves a DevHub's emulator and fault switches to the CLI client commands."""

    def __init__(self, hub: DevHub, socket_path: Path) -> None:
        """Bind the routes to `hub`; nothing listens until `start`."""
        self.hub = hub
        self.socket_path = socket_path
        self._server: UnixHTTPServer | None = None

    def start(self) -> None:
        """Listen on the unix socket."""
        self._server = UnixHTTPServer(self.socket_path, _handler_for(self.hub), name="devhub-control")
        self._server.start()

    def stop(self) -> None:
        """Stop listening and remove the socket."""
        server, self._server = self._server, None
        if server is not None:
            server.stop()


_LINK_ACTIONS: dict[str, Callable[[DevHub], object]] = {
    "drop": lambda hub: hub.front.drop(),
    "down": lambda hub: hub.front.set_down(True),
    "up": lambda hub: hub.front.set_down(False),
    "stall": lambda hub: hub.front.stall(True),
    "unstall": lambda hub: hub.front.stall(False),
}


def _handler_for(hub: DevHub) -> type[JsonRequestHandler]:
    """Bind a request handler class to one DevHub."""

    class Handler(JsonRequestHandler):
        """Routes: /twin, /status, /desired, /methods/{name}, /inputs/{name}, /telemetry, /link/{action}."""

        def do_GET(self) -> None:
            """Read-only routes."""
            url = urlsplit(self.path)
            query = parse_qs(url.query)
            if url.path == "/twin":
                self.send_json(200, hub.emulator.twin())
            elif url.path == "/status":
                self.send_json(200, _status(hub))
            elif url.path == "/telemetry":
                self._telemetry(query)
            else:
                self.send_json(404, {"message": f"unknown control path {url.path}"})

        def do_POST(self) -> None:
            """Routes that act on the hub."""
            url = urlsplit(self.path)
            parts = [unquote(part) for part in url.path.strip("/").split("/")]
            try:
                body = self.read_json()
                if parts == ["desired"] and isinstance(body, dict):
                    self.send_json(200, {"version": hub.set_desired(body)})
                elif len(parts) == 2 and parts[0] == "methods" and isinstance(body, dict):
                    timeout = min(float(body.get("timeout", 10.0)), _MAX_WAIT)
                    status, payload = hub.emulator.call_method(parts[1], body.get("payload"), timeout)
                    self.send_json(200, {"status": status, "payload": payload})
                elif len(parts) == 2 and parts[0] == "inputs" and isinstance(body, dict):
                    payload = body.get("body")
                    if not isinstance(payload, (str, dict, list)):
                        payload = json.dumps(payload)
                    message_id = hub.emulator.send_input(parts[1], payload, body.get("properties"))
                    self.send_json(200, {"message_id": message_id})
                elif len(parts) == 2 and parts[0] == "link" and parts[1] in _LINK_ACTIONS:
                    _LINK_ACTIONS[parts[1]](hub)
                    self.send_json(200, _status(hub))
                else:
                    self.send_json(404, {"message": f"unknown control request POST {url.path}"})
            except MethodTimeoutError as err:
                self.send_json(504, {"message": str(err)})
            except (ValueError, TypeError) as err:
                self.send_json(400, {"message": f"bad request: {err}"})

        def _telemetry(self, query: dict[str, list[str]]) -> None:
            """Long poll: messages after `after` (waiting up to `wait` s); without `after`, just the last seq."""
            if "after" not in query:
                self.send_json(200, {"messages": [], "last": hub.emulator.last_seq})
                return
            after = int(query["after"][0])
            wait = min(float(query.get("wait", ["0"])[0]), _MAX_WAIT)
            messages = hub.emulator.telemetry_after(after, wait)
            last = messages[-1].seq if messages else after
            self.send_json(200, {"messages": [m.to_dict() for m in messages], "last": last})

    return Handler


def _status(hub: DevHub) -> dict[str, Any]:
    """What a user wants to see at a glance: link state, counters, rejections."""
    return {
        "ip": hub.ip,
        "broker_running": hub.broker.running,
        "emulator_connected": hub.emulator.connected,
        "link": "down" if hub.front.down else "stalled" if hub.front.stalled else "up",
        "front": dataclasses.asdict(hub.front.stats),
        "rejections": [r.reason for r in hub.front.rejections[-5:]],
        "telemetry_last_seq": hub.emulator.last_seq,
    }


# ------------------------------------------------------------------------------------------ state file


def write_state(work_dir: Path, hub: DevHub, control_socket: Path) -> Path:
    """Record how to reach this devhub (and its module environment) in `work_dir/devhub.json`."""
    state = {"pid": os.getpid(), "control": str(control_socket), "ip": hub.ip, "env": hub.env()}
    path = work_dir / STATE_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2), encoding="utf-8")
    tmp.replace(path)
    return path


def read_state(work_dir: Path) -> dict[str, Any]:
    """Load the state file or raise NoDevHubError with the way out."""
    path = work_dir / STATE_FILE
    try:
        state: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise NoDevHubError(
            f"no devhub running in {work_dir}: start one with `visionedge-devhub up --workdir {work_dir}`"
        ) from None
    except ValueError as err:
        raise NoDevHubError(f"unreadable devhub state file {path}: {err}") from err
    return state


# ------------------------------------------------------------------------------------------------ client


class ControlClient:
    """Talks to the devhub running in a work dir."""

    def __init__(self, work_dir: Path) -> None:
        """Find the devhub through its state file (raises NoDevHubError when there is none)."""
        self.work_dir = work_dir
        self.state = read_state(work_dir)
        self.socket_path = Path(self.state["control"])

    def request(self, method: str, url: str, body: Any = None, timeout: float = 40.0) -> Any:
        """One control call; raise NoDevHubError if nobody answers, ControlError if the devhub says no."""
        try:
            status, answer = request_json(self.socket_path, method, url, body, timeout)
        except (FileNotFoundError, ConnectionRefusedError) as err:
            raise NoDevHubError(
                f"no devhub running in {self.work_dir} (stale state from pid {self.state.get('pid')}): "
                f"start one with `visionedge-devhub up --workdir {self.work_dir}`"
            ) from err
        if status >= 300:
            message = answer.get("message") if isinstance(answer, dict) else answer
            raise ControlError(f"devhub refused {method} {url}: {message}")
        return answer

    def alive(self) -> bool:
        """True if a devhub answers on the recorded socket."""
        try:
            self.request("GET", "/status", timeout=5)
        except NoDevHubError:
            return False
        return True

    def twin(self) -> dict[str, Any]:
        """Desired and reported documents."""
        answer: dict[str, Any] = self.request("GET", "/twin")
        return answer

    def status(self) -> dict[str, Any]:
        """Link state and counters."""
        answer: dict[str, Any] = self.request("GET", "/status")
        return answer

    def patch(self, patch: dict[str, Any]) -> int:
        """Push a desired patch; return the new desired `$version`."""
        return int(self.request("POST", "/desired", patch)["version"])

    def call(self, method: str, payload: Any, timeout: float) -> tuple[int, Any]:
        """Invoke a direct method; return (status, payload)."""
        body = {"payload": payload, "timeout": timeout}
        answer = self.request("POST", f"/methods/{quote(method, safe='')}", body, timeout=timeout + 10)
        return int(answer["status"]), answer["payload"]

    def send_input(self, input_name: str, body: Any, properties: dict[str, str]) -> str:
        """Send a message to one of the module's inputs; return its message id."""
        answer = self.request("POST", f"/inputs/{quote(input_name, safe='')}", {"body": body, "properties": properties})
        return str(answer["message_id"])

    def telemetry(self, after: int | None, wait: float) -> tuple[list[dict[str, Any]], int]:
        """Messages after sequence `after` (long poll up to `wait` s) and the last sequence number."""
        url = "/telemetry" if after is None else f"/telemetry?after={after}&wait={wait}"
        answer = self.request("GET", url, timeout=wait + 10)
        return list(answer["messages"]), int(answer["last"])

    def link(self, action: str) -> dict[str, Any]:
        """drop, down, up, stall or unstall the module's link; return the new status."""
        answer: dict[str, Any] = self.request("POST", f"/link/{action}")
        return answer
