"""A local stand-in for IoT Hub + edgeHub, so the module runs its production connection path on a laptop or in CI.

`DevHub` wires together a Mosquitto broker, a hub emulator that plays the cloud side of the MQTT protocol, the IoT
Edge workload API (trust bundle + signing) and a TLS front that checks SAS tokens and injects faults.
"""

from visionedge_devhub.emulator import HubEmulator, MethodTimeoutError, Telemetry
from visionedge_devhub.hub import DevHub, DevHubError

__all__ = ["DevHub", "DevHubError", "HubEmulator", "MethodTimeoutError", "Telemetry"]
