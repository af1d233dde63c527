"""Offline-first telemetry: policy -> durable outbox -> sender -> IoT Hub, plus an optional local MQTT broker."""

from __future__ import annotations

from visionedge.telemetry.budget import BudgetStats, DailyBudget
from visionedge.telemetry.events import Event, Sequencer
from visionedge.telemetry.localmqtt import LocalMqttPublisher
from visionedge.telemetry.outbox import Outbox, OutboxStats
from visionedge.telemetry.policy import TelemetryPolicy
from visionedge.telemetry.sender import (
    FatalSendError,
    Sender,
    SenderOptions,
    SenderStats,
    TransientSendError,
    Transport,
)
from visionedge.telemetry.sink import TelemetrySink, TelemetryStats, local_publisher

__all__ = [
    "BudgetStats",
    "DailyBudget",
    "Event",
    "FatalSendError",
    "LocalMqttPublisher",
    "Outbox",
    "OutboxStats",
    "Sender",
    "SenderOptions",
    "SenderStats",
    "Sequencer",
    "TelemetryPolicy",
    "TelemetrySink",
    "TelemetryStats",
    "TransientSendError",
    "Transport",
    "local_publisher",
]
