"""The sender thread: drains the outbox through a Transport, at least once, within the daily budget.

An event is acknowledged (deleted from the outbox) only after `Transport.send` returned, so a crash or a lost link
can repeat a message but never lose one; a repeat carries the same event message_ids. After a transient error the
sender backs off (capped exponential, with jitter), cut short by `link_up()` when the caller learns that the link is
back; the backoff then starts again from its shortest step. Each retry first turns everything stored so far into
backlog and lingers briefly, so that with `live_first` the first message after an outage carries a live event when
one is made meanwhile; scene alarms go before everything else, live or backlog; while a backlog drains, a round
ends after ROUND_S when live events wait, so they go next.
While the link is down only the message being retried is held in flight (each retry sends that one message), so
the outbox may compact or drop the rest of the backlog within its cap. A fatal error stops the thread and is
reported.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, Protocol

from visionedge.errors import VisionEdgeError
from visionedge.retry import backoff_delay
from visionedge.supervise import Part
from visionedge.telemetry.budget import BudgetStats, DailyBudget, Message, pack
from visionedge.telemetry.outbox import Outbox, OutboxClosed

log = logging.getLogger(__name__)

IDLE_POLL_S = 0.25
"""Longest wait between looks at the stop event and the outbox, so stop is honoured quickly."""
ROUND_S = 1.0
"""While a backlog drains, live events wait at most about this long (plus one message) before they go."""
URGENT = ("alarm",)
"""Kinds sent before anything else with `live_first` (scene alarms, even those stored during an outage), and which
may use the budget's alarm reserve."""


class TransientSendError(VisionEdgeError):
    """The message was not (or not surely) delivered, but a later attempt may succeed: no link, timeout, throttled."""


class FatalSendError(VisionEdgeError):
    """Retrying cannot help (bad credentials, client shut down): the sender stops and reports it."""


class Transport(Protocol):
    """Delivers one message to an IoT Edge output.

    `payload` is UTF-8 JSON: send it with content type application/json and content encoding utf-8 (edgeHub
    routes on $body need both), `message_id` as the message id and `properties` as application properties.
    Return only once the hub acknowledged the message; raise TransientSendError if that did not happen within
    `timeout` seconds or the link is down, FatalSendError if no retry can succeed.
    """

    def send(self, output: str, payload: bytes, message_id: str, properties: Mapping[str, str],
             timeout: float) -> None:
        """Deliver one message or raise."""


@dataclass(frozen=True)
class SenderOptions:
    """Tuning of the sender; the defaults suit IoT Hub."""

    batch_limit: int = 200
    send_timeout_s: float = 10.0
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 10.0
    linger_s: float = 0.5
    """After new events arrive, wait this long so that more can share a 4 KB batch."""
    budget_poll_s: float = 5.0
    """How often to look again while the daily budget is spent (the day may roll over, the limit may change)."""


@dataclass(frozen=True)
class SenderStats:
    """What the sender has done; `link` is "up" after a successful send and "down" after a failed one."""

    link: Literal["up", "down"]
    sent_events: int
    sent_messages: int
    failed_attempts: int
    last_error: str
    fatal: str
    budget: BudgetStats


class Sender:
    """Owns the thread "telemetry-sender"; `start`, `update` and `stop` may be called from any thread."""

    def __init__(self, outbox: Outbox, transport: Transport, budget: DailyBudget, *, live_first: bool = True,
                 batch: bool = True, options: SenderOptions | None = None, rng: random.Random | None = None) -> None:
        self.outbox = outbox
        self.transport = transport
        self.budget = budget
        self.live_first = live_first
        self.batch = batch
        self.options = options or SenderOptions()
        self._rng = rng or random.Random()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._urgent = threading.Event()
        """An alarm was stored: the next round goes without lingering for company."""
        self._retry = False
        self._probing = False
        """The last send failed: the next round sends one message, and the round after a success sends freely."""
        self._attempt = 0
        self._thread: threading.Thread | None = None
        self.part = Part("telemetry-sender")
        """Restarts the thread after an unexpected error (a full disk while acknowledging a batch)."""
        self._link: Literal["up", "down"] = "down"
        self._sent_events = 0
        self._sent_messages = 0
        self._failed = 0
        self._last_error = ""
        self._fatal = ""
        self._warned = False

    def start(self) -> None:
        """Start the thread (once)."""
        if self._thread is None:
            self._thread = self.part.thread(self._run, self._stop)
            self._thread.start()

    def stop(self, timeout: float = 1.0) -> None:
        """Ask the thread to stop and wait up to `timeout`; a send in flight may outlive it (the thread is a daemon)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("telemetry sender still inside a send after %.1f s; leaving it", timeout)

    def link_up(self) -> None:
        """The link is back (the hub client connected): retry now, from the shortest backoff step."""
        self._attempt = 0
        self._wake.set()

    def urgent(self) -> None:
        """An alarm was just stored: send it without the batching linger (alarms never share a message anyway)."""
        self._urgent.set()

    def update(self, *, live_first: bool, batch: bool) -> None:
        """Twin changes that apply from the next batch on."""
        self.live_first, self.batch = live_first, batch

    @property
    def alive(self) -> bool:
        """True while the thread runs (False after a fatal error or stop)."""
        return self._thread is not None and self._thread.is_alive()

    def stats(self) -> SenderStats:
        """A snapshot of the counters."""
        part = self.part.state()
        link: Literal["up", "down"] = "down" if part.down else self._link
        return SenderStats(link, self._sent_events, self._sent_messages, self._failed,
                           part.reason if part.down else self._last_error, self._fatal, self.budget.stats())

    def _run(self) -> None:
        """The thread: send rounds until stopped, closed or told no retry can help."""
        try:
            while not self._stop.is_set():
                if self._retry:
                    self._await_retry()
                elif not self._round():
                    self._idle()
        except FatalSendError as err:
            self._fatal = self._last_error = str(err)
            self._link = "down"
            log.error("telemetry sender stopped: %s (events stay in the outbox)", err)
        except OutboxClosed:
            log.debug("outbox closed: sender exits")

    def _idle(self) -> None:
        """Wait for new events (then linger so they can share a batch), or poll while the budget is spent."""
        if not self.budget.allows(1, heartbeat=True):
            self._stop.wait(min(self.options.budget_poll_s, self.budget.seconds_to_reset()))
            return
        for _ in range(round(1.0 / IDLE_POLL_S)):
            if self._stop.is_set():
                return
            if self.outbox.wait(IDLE_POLL_S):
                if self.batch and self.options.linger_s > 0 and not self._urgent.is_set():
                    self._stop.wait(self.options.linger_s)
                self._urgent.clear()
                return

    def _await_retry(self) -> None:
        """Back off (cut short by `link_up`), then make everything stored so far backlog and linger for live events."""
        delay = backoff_delay(self._attempt, self.options.backoff_initial_s, self.options.backoff_max_s, self._rng)
        self._attempt += 1
        self._wake.wait(delay)
        self._wake.clear()
        if self._stop.is_set():
            return
        self.outbox.mark_link_up()
        if self.live_first and self.options.linger_s > 0:
            self._stop.wait(self.options.linger_s)
        self._retry = False

    def _round(self) -> bool:
        """Send one batch from the outbox; False when there was nothing to send (or the budget forbade it)."""
        ordinary = self.budget.allows(1, heartbeat=False)
        alarms = self.budget.allows(1, heartbeat=False, alarm=True)
        if not alarms and not self.budget.allows(1, heartbeat=True):
            return False
        items = self.outbox.next_batch(self.options.batch_limit, self.live_first, kinds=URGENT) \
            if self.live_first and alarms else []
        if not items:
            kinds = None if ordinary else ("heartbeat", *URGENT) if alarms else ("heartbeat",)
            items = self.outbox.next_batch(self.options.batch_limit, self.live_first, kinds=kinds)
        if not items:
            return False
        started = time.monotonic()
        messages, oversize = pack(items, batch=self.batch, unit_bytes=self.budget.unit_bytes)
        if oversize:
            self.outbox.discard([i.row_id for i in oversize], "bigger than IoT Hub's 256 KB message limit")
        if self._probing and messages:  # the link failed last time: try one message, holding only its rows
            messages = messages[:1]
            self.outbox.hold(messages[0].row_ids)
        for message in messages:
            if not self.budget.allows(message.units, heartbeat=message.kind == "heartbeat",
                                      alarm=message.kind in URGENT):
                return False
            if not self._deliver(message):
                self.outbox.hold(message.row_ids)  # only this message waits for the link; the rest may be compacted
                return True
            self.outbox.ack(message.row_ids, meta=self.budget.charge(message.units))
            self._sent_events += message.events
            self._sent_messages += 1
            if self.live_first and time.monotonic() - started > ROUND_S and self.outbox.wait(0):
                return True
        return True

    def _deliver(self, message: Message) -> bool:
        """One attempt: True when delivered; False on a transient error (a retry follows); FatalSendError propagates."""
        try:
            self.transport.send(message.output, message.payload, message.message_id, message.properties,
                                self.options.send_timeout_s)
        except TransientSendError as err:
            self._failed += 1
            self._last_error = str(err)
            if self._link == "up" or not self._warned:
                log.warning("telemetry link down: %s; events wait in the outbox", err)
            self._link, self._warned, self._retry, self._probing = "down", True, True, True
            return False
        if self._link == "down":
            log.info("telemetry link up again (%d failed attempts in all)", self._failed)
            self._link = "up"
        self._attempt, self._probing = 0, False
        return True
