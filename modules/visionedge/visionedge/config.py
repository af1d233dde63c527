"""The one validated configuration object: twin-writable settings plus device-local settings."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import (
    AfterValidator,
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from visionedge.analytics.settings import Analytics
from visionedge.errors import ConfigError
from visionedge.intake import IntakeError, check_tree, read_capped

PROVIDER_ALIASES: dict[str, str] = {
    "tensorrt": "TensorrtExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "openvino": "OpenVINOExecutionProvider",
    "directml": "DmlExecutionProvider",
    "coreml": "CoreMLExecutionProvider",
    "cpu": "CPUExecutionProvider",
}
DEFAULT_PROVIDERS = ["tensorrt", "cuda", "openvino", "directml", "cpu"]


class Strict(BaseModel):
    """Unknown keys are errors, so a typo in a twin or YAML file is rejected, not ignored; numbers are finite."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class SourceSettings(Strict):
    """Where frames come from and how fast."""

    uri: str = Field("sample", min_length=1, max_length=4096, validation_alias=AliasChoices("uri", "url"),
                     description="video/image path, folder, camera index, /dev/videoN, rtsp:// or http(s):// URL, "
                     "or 'sample' for the bundled demo video (key `url` also accepted)")
    id: str = Field("camera", min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$",
                    description="source id carried by every record and message property")
    fps: float | None = Field(None, gt=0, le=120, description="target analysis rate; None = as fast as possible")
    loop: bool = Field(True, description="restart a video file at its end")
    realtime: bool = Field(True, description="pace a video file at its own frame rate, like a live camera")
    reconnect_initial_s: float = Field(1.0, gt=0, le=60, description="first wait before reopening a live source")
    reconnect_max_s: float = Field(30.0, gt=0, le=600, description="cap of the doubling reconnect wait (+-25% jitter)")
    watchdog_s: float = Field(10.0, gt=0, le=600, description="reopen a live source silent this long")


def _unique_ids(sources: list[SourceSettings]) -> list[SourceSettings]:
    ids = [s.id for s in sources]
    repeated = sorted({i for i in ids if ids.count(i) > 1})
    if repeated:
        raise PydanticCustomError("unique_ids", "every source needs its own id; {ids} used more than once",
                                  {"ids": ", ".join(repeated)})
    return sources


Sources = Annotated[list[SourceSettings], AfterValidator(_unique_ids), Field(max_length=32)]
"""Several sources sharing one model: each entry like `source`, with its own unique id."""


class ShadowGates(Strict):
    """Per-update overrides of the twin's `shadow` section, given inside the desired `model` block."""

    min_agreement: float | None = Field(None, ge=0.0, le=1.0, description="null = the `shadow` section's")
    max_latency_ratio: float | None = Field(None, gt=0, description="null = the `shadow` section's")
    frames: int | None = Field(None, ge=1, le=100000, description="null = the `shadow` section's")
    min_frames: int | None = Field(None, ge=1, le=100000, description="null = the `shadow` section's")
    max_s: float | None = Field(None, gt=0, le=86400, description="null = the `shadow` section's")


MANIFEST_MAX_DEPTH = 8
"""An inline manifest sits two levels down the twin (model.manifest), and IoT Hub refuses twin documents deeper than
10 levels; a real manifest needs 4 (decoder.anchors[i][j])."""


class ModelRef(Strict):
    """Which model to run; a url+sha256 asks the model store to download and verify it."""

    name: str = Field("squeezenet", min_length=1, max_length=128, description="built-in name, or your model's name")
    version: str | None = Field(None, max_length=64, description="your version label; a new one triggers an update")
    url: str | None = Field(None, description="https URL of the .onnx file (omit for built-in models)")
    sha256: str | None = Field(None, pattern=r"^[0-9a-fA-F]{64}$", description="required with url: hex sha256")
    size: int | None = Field(None, gt=0, description="expected size in bytes, checked before hashing")
    manifest: dict[str, Any] | None = Field(None, description="manifest fields inline (task, labels, decoder, ...)")
    manifest_url: str | None = Field(None, description="or a URL of a manifest YAML")
    labels_url: str | None = Field(None, description="URL of the labels file the manifest names")
    labels_sha256: str | None = Field(None, pattern=r"^[0-9a-fA-F]{64}$", description="sha256 of the labels file")
    rollout: str | None = Field(None, max_length=128, description="opaque fleet rollout id, echoed in modelHealth")
    shadow: bool | ShadowGates | None = Field(
        None, description="false = skip the shadow phase for this update; an object overrides the `shadow` gates")

    @field_validator("manifest")
    @classmethod
    def _manifest_bounds(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        try:
            check_tree(value, "the inline manifest", MANIFEST_MAX_DEPTH)
        except IntakeError as err:
            raise ValueError(str(err)) from err
        return value

    @field_validator("url", "manifest_url", "labels_url")
    @classmethod
    def _web_url(cls, value: str | None) -> str | None:
        if value is None:
            return value
        try:
            parts = urlsplit(value)
            host = parts.hostname
        except ValueError as err:
            raise ValueError(f"not a URL: {err}") from err
        if parts.scheme not in ("https", "http") or not host:
            raise ValueError("must be an https:// URL with a host name")
        return value


class GateSettings(Strict):
    """Scene-change gate: frames that look like the last inferred one reuse its result instead of running the model."""

    mode: Literal["auto", "on", "off"] = Field(
        "auto", description="auto = on for live sources (cameras, streams, paced files), off for `analyze`")
    threshold: int = Field(12, ge=1, le=255, description="grey-level difference (of 255) that marks a pixel of the "
                           "64x48 grey copy as changed")
    min_area: float = Field(0.004, gt=0, le=1, description="share of changed pixels that makes a scene change")
    max_skip_s: float = Field(10.0, gt=0, le=3600, description="infer at least this often, change or not")


class InferenceSettings(Strict):
    """Per-deployment overrides of the model manifest's thresholds, and the scene-change gate."""

    confidence: float | None = Field(None, ge=0.0, le=1.0, description="minimum score; null = the manifest's")
    iou: float | None = Field(None, gt=0.0, le=1.0, description="class-wise NMS IoU; null = the manifest's")
    top_k: int | None = Field(None, ge=1, le=1000, description="at most this many labels per frame")
    gate: GateSettings = GateSettings()


class RuntimeSettings(Strict):
    """Execution providers in order of preference, filtered by what onnxruntime offers."""

    providers: list[str] = Field(default_factory=lambda: list(DEFAULT_PROVIDERS), min_length=1,
                                 description="preference order; unavailable ones are skipped, CPU is the last resort")
    provider_options: dict[str, dict[str, str | int | float | bool]] = Field(
        default_factory=dict, description="per provider, e.g. {\"CUDAExecutionProvider\": {\"device_id\": 0}}")
    workers: int = Field(0, ge=0, le=64, description="inference workers sharing one loaded model; 0 = chosen from "
                         "the cores and the providers (CPU: one per core)")
    intra_op_threads: int = Field(0, ge=0, le=256, description="threads each inference uses; 0 = the cores divided "
                                  "among the workers")
    inter_op_threads: int = Field(1, ge=0, le=256, description="threads across graph nodes")
    require_accelerator: bool = Field(False, description="refuse to run (clear error) when only the CPU is available")
    variant: str = Field("auto", min_length=1, max_length=1024, description="auto = time the model's variants here "
                         "and run the fastest that agrees enough; fp32, fp16, int8, or a path to an .onnx/.yaml file")
    min_variant_agreement: float = Field(0.95, ge=0.0, le=1.0, description="auto: least agreement with the deployed "
                                         "file a variant needs (recorded by `models quantize`)")
    calibrate: Literal["off", "on-device"] = Field(
        "off", description="on-device = make an int8 variant from this camera's own frames in the background, shadow "
        "it against the serving model and switch to it only if it agrees (needs variant auto; docs/models.md)")

    @field_validator("variant")
    @classmethod
    def _known_variant(cls, value: str) -> str:
        if value not in ("auto", "fp32", "fp16", "int8") and not value.lower().endswith((".onnx", ".yaml", ".yml")):
            raise ValueError("variant must be auto, fp32, fp16, int8 or a path to an .onnx or .yaml file")
        return value

    @model_validator(mode="after")
    def _calibrate_needs_auto(self) -> RuntimeSettings:
        if self.calibrate == "on-device" and self.variant != "auto":
            raise ValueError(f"calibrate on-device needs variant auto (variant is {self.variant!r}): the calibrated "
                             "variant is chosen the way auto chooses, only when it agrees")
        return self

    @field_validator("providers")
    @classmethod
    def _known_providers(cls, value: list[str]) -> list[str]:
        for name in value:
            if name.lower() not in PROVIDER_ALIASES and not name.endswith("ExecutionProvider"):
                raise ValueError(f"unknown execution provider {name!r}; use one of {sorted(PROVIDER_ALIASES)}")
        return value

    def resolved_providers(self) -> list[str]:
        """Full onnxruntime provider names, in preference order, without duplicates."""
        names = [PROVIDER_ALIASES.get(p.lower(), p) for p in self.providers]
        return list(dict.fromkeys(names))


class TelemetrySettings(Strict):
    """Which results become messages, and how many messages a day the device may spend."""

    policy: Literal["on-change", "every-frame", "aggregate"] = Field(
        "on-change", description="which results become messages (see Telemetry policies)")
    debounce_s: float = Field(2.0, ge=0, le=3600,
                              description="on-change: window whose dominant state is sent; least time between results")
    min_confidence_delta: float = Field(0.2, ge=0, le=1, description="on-change: confidence move that counts")
    aggregate_window_s: float = Field(60.0, gt=0, le=86400, description="window of the per-label aggregates")
    heartbeat_s: float = Field(300.0, gt=0, le=86400, description="liveness message period")
    daily_message_budget: int = Field(8000, ge=0, description="IoT Hub messages per UTC day; 0 = unlimited")
    batch: bool = Field(True, description="pack small events into one message when it saves 4 KB units")
    live_first: bool = Field(True, description="after an outage send current events before the backlog")
    billing_unit_kb: float = Field(4.0, description="IoT Hub billing unit: 4 KB (S1-S3, B1-B3) or 0.5 KB (free)")

    @field_validator("billing_unit_kb")
    @classmethod
    def _known_unit(cls, value: float) -> float:
        if value not in (0.5, 4.0):
            raise ValueError("billing_unit_kb must be 4 (standard and basic tiers) or 0.5 (free tier)")
        return value


class OutboxSettings(Strict):
    """Bounds of the durable local queue and what happens when it is full."""

    max_mb: float = Field(256.0, gt=0, description="disk cap of the outbox")
    max_age_h: float = Field(72.0, gt=0, description="events older than this are compacted or dropped")
    overflow: Literal["compact", "drop-oldest"] = Field(
        "compact", description="compact = fold the oldest results into per-window aggregates; both are counted")


class LocalMqttSettings(Strict):
    """Optional on-premises broker for local dashboards (no secrets here: use local settings)."""

    enabled: bool = Field(False, description="also publish events to an on-premises MQTT broker")
    host: str = Field("localhost", min_length=1, max_length=253, pattern=r"^[A-Za-z0-9_.:\[\]-]+$",
                      description="broker host")
    port: int = Field(1883, ge=1, le=65535, description="broker port")
    topic_prefix: str = Field("visionedge", min_length=1, max_length=200, pattern=r"^[^+#$\x00/][^+#\x00]*$",
                              description="topics: <prefix>/<source>/<output> (no MQTT wildcards + or #)")
    tls: bool = Field(False, description="connect with TLS (system CAs)")
    discovery: bool = Field(False, description="announce each line's counts and zone's occupancy to Home Assistant "
                            "(MQTT discovery, retained; removed with the line or zone)")
    discovery_prefix: str = Field("homeassistant", min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_-]+$",
                                  description="Home Assistant's discovery prefix")


class RollbackSettings(Strict):
    """How long a new model is watched before it is trusted."""

    watch_frames: int = Field(50, ge=0, description="frames a new model must get through cleanly")
    watch_s: float = Field(30.0, ge=0, description="and seconds it is watched")
    max_latency_factor: float = Field(3.0, gt=1.0, description="roll back when slower than this x the old model")


class ShadowSettings(Strict):
    """Shadow phase of model updates: a candidate must agree with the active model on live frames before the swap.

    The candidate runs beside the active model on sampled frames of the same stream; results come only from the
    active model meanwhile."""

    enabled: bool = Field(True, description="false = swap candidates in without a shadow phase")
    min_agreement: float = Field(0.8, ge=0.0, le=1.0,
                                 description="top-1 agreement (classifiers) or mean F1 (detectors) a candidate needs")
    max_latency_ratio: float = Field(2.0, gt=0, description="same kind of model: refuse a candidate slower than this "
                                     "x at p95 and at the median (another kind must keep up with the frame rate)")
    frames: int = Field(150, ge=1, le=100000, description="decide after comparing this many frames")
    min_frames: int = Field(30, ge=1, le=100000, description="fewer compared frames by max_s: refused, inconclusive")
    max_s: float = Field(120.0, gt=0, le=86400, description="decide at the latest after this many seconds")
    max_cost: float = Field(0.1, gt=0, le=1.0,
                            description="share of the inference thread's time the candidate may take (0.1: the "
                                        "active model keeps >= 90% of its throughput)")

    def with_gates(self, gates: bool | ShadowGates | None) -> ShadowSettings:
        """These settings with a desired `model` block's `shadow` value applied on top."""
        if gates is None or gates is True:
            return self
        if gates is False:
            return self.model_copy(update={"enabled": False})
        return self.model_copy(update={"enabled": True, **gates.model_dump(exclude_none=True)})


class DesiredProperties(Strict):
    """Every twin-writable setting; each top-level key is acknowledged on its own."""

    source: SourceSettings = SourceSettings()
    sources: Sources = Field(default_factory=list, description="several sources sharing one model, each like "
                             "`source` with its own `id`; when not empty, `source` is not used")
    model: ModelRef = ModelRef()
    inference: InferenceSettings = InferenceSettings()
    runtime: RuntimeSettings = RuntimeSettings()
    telemetry: TelemetrySettings = TelemetrySettings()
    outbox: OutboxSettings = OutboxSettings()
    local_mqtt: LocalMqttSettings = LocalMqttSettings()
    rollback: RollbackSettings = RollbackSettings()
    shadow: ShadowSettings = ShadowSettings()
    analytics: Analytics = Field(default_factory=dict, description="scene analytics per source id: tracks, "
                                 "counting lines, zones and dwell (see docs/analytics.md); needs a detector")

    def source_list(self) -> list[SourceSettings]:
        """The sources to run: the `sources` list, or the single `source`."""
        return list(self.sources) or [self.source]


class LocalSettings(Strict):
    """Device-only settings that the cloud must not change (paths, download safety, ports)."""

    data_dir: Path = Field(Path("/data"), description="persistent volume: cache, models, outbox, snapshots")
    cache_dir: Path | None = Field(None, description="model and media cache; default <data_dir>/cache")
    mirror_dirs: list[Path] = Field(default_factory=list, description="local copies searched before downloading")
    allow_insecure_http: bool = Field(False, description="development only: allow plain-http model URLs")
    allowed_hosts: list[str] = Field(default_factory=list, description="empty = any host")
    ca_bundle: Path | None = Field(None, description="extra CA bundle (PEM) trusted for downloads besides the system's")
    max_download_mb: float = Field(200.0, gt=0, description="largest model file accepted")
    connect_timeout_s: float = Field(10.0, gt=0, description="download connect timeout")
    read_timeout_s: float = Field(30.0, gt=0, description="download stall timeout")
    download_deadline_s: float = Field(900.0, gt=0, description="a whole download (model, manifest, labels) must "
                                       "finish within this; a server that trickles bytes is cut off")
    metrics_port: int = Field(9600, ge=0, le=65535, description="0 disables the metrics/health server")
    metrics_host: str | None = Field(None, min_length=1, description="address the metrics/health server listens on; "
                                     "default: every interface inside a container (IoT Edge, Docker, Podman), "
                                     "127.0.0.1 elsewhere")
    status_interval_s: float = Field(30.0, gt=0, le=3600, description="how often the reported status is refreshed")
    log_format: Literal["text", "json"] = Field("text", description="json = one object per line for collectors")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="log verbosity")
    local_mqtt_username: str | None = Field(None, description="local broker user (never logged)")
    local_mqtt_password: str | None = Field(None, description="local broker password (never logged)")
    local_mqtt_ca: Path | None = Field(None, description="CA (PEM) of a local broker with TLS; default system CAs")

    def cache(self) -> Path:
        """Where fetched models and media live."""
        return self.cache_dir if self.cache_dir is not None else self.data_dir / "cache"


class ModuleConfig(Strict):
    """Everything the module runs on: start-up defaults merged with the twin's desired properties."""

    desired: DesiredProperties = DesiredProperties()
    local: LocalSettings = LocalSettings()


def describe_validation_error(err: ValidationError, prefix: str = "") -> str:
    """One line naming every bad field, e.g. 'source.fps: Input should be greater than 0'."""
    parts = []
    for item in err.errors():
        loc = ".".join(str(p) if str(p).isprintable() else repr(p) for p in item["loc"])
        where = f"{prefix}.{loc}" if prefix and loc else (prefix or loc)
        parts.append(f"{where}: {' '.join(item['msg'].split())}")
    return "; ".join(parts)


def default_data_dir() -> Path:
    """/data inside the container (a mounted volume); a per-user folder on a laptop."""
    data = Path("/data")
    if data.is_dir() and os.access(data, os.W_OK):
        return data
    return Path(os.environ.get("XDG_DATA_HOME", Path.home() / ".local" / "share")) / "visionedge"


YAML_MAX_BYTES = 1 << 20
YAML_MAX_DEPTH = 32
YAML_MAX_NODES = 100_000
"""Bounds checked on parser events, before the composer recurses or aliases expand (no "billion laughs")."""


class YamlTooBig(ValueError):
    """A YAML document nests or expands beyond what any configuration needs."""


def check_yaml_bounds(text: str) -> None:
    """Walk the parser's events (no recursion, no expansion), counting nodes the way aliases would expand them."""
    sizes: dict[str, int] = {}
    open_nodes: list[tuple[int, str | None]] = []
    total = 0
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, yaml.AliasEvent):
            total += sizes.get(str(event.anchor), 1)
        elif isinstance(event, yaml.ScalarEvent):
            total += 1
            if event.anchor:
                sizes[event.anchor] = 1
        elif isinstance(event, yaml.CollectionStartEvent):
            if len(open_nodes) >= YAML_MAX_DEPTH:
                raise YamlTooBig(f"nested deeper than {YAML_MAX_DEPTH} levels")
            total += 1
            open_nodes.append((total - 1, event.anchor))
        elif isinstance(event, yaml.CollectionEndEvent):
            start, anchor = open_nodes.pop()
            if anchor:
                sizes[anchor] = total - start
        if total > YAML_MAX_NODES:
            raise YamlTooBig(f"expands to more than {YAML_MAX_NODES} values (aliases counted as copies)")


def parse_yaml(text: str) -> Any:
    """yaml.safe_load of a document proven small and shallow first; raises YamlTooBig or yaml.YAMLError."""
    check_yaml_bounds(text)
    return yaml.safe_load(text)


def read_yaml(path: Path, what: str, error: type[Exception]) -> Any:
    """Parse a YAML file; unreadable, oversized or bad YAML becomes a one-line `error` naming `what` and the path."""
    try:
        data = read_capped(path, YAML_MAX_BYTES, what)
    except IntakeError as err:
        raise error(str(err)) from err
    try:
        return parse_yaml(data.decode("utf-8"))
    except UnicodeDecodeError as err:
        raise error(f"{what} {path} is not UTF-8 text (byte {err.start})") from err
    except YamlTooBig as err:
        raise error(f"{what} {path} {err}") from err
    except yaml.YAMLError as err:
        raise error(f"{what} {path} is not valid YAML: {' '.join(str(err).split())}") from err


def load_config(path: Path | None = None, env: dict[str, str] | None = None) -> ModuleConfig:
    """Read the YAML file named by the argument or VISIONEDGE_CONFIG; absent file means defaults."""
    env = dict(os.environ) if env is None else env
    raw: dict[str, Any] = {}
    chosen = path or (Path(env["VISIONEDGE_CONFIG"]) if env.get("VISIONEDGE_CONFIG") else None)
    if chosen is not None:
        loaded = read_yaml(chosen, "config file", ConfigError)
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"config file {chosen} must hold a mapping with 'desired' and/or 'local'")
        raw = loaded or {}
    local = raw.setdefault("local", {})
    if env.get("VISIONEDGE_DATA_DIR"):
        local["data_dir"] = env["VISIONEDGE_DATA_DIR"]
    elif isinstance(local, dict) and "data_dir" not in local:
        local["data_dir"] = str(default_data_dir())
    try:
        return ModuleConfig.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(f"invalid configuration: {describe_validation_error(err)}") from err
