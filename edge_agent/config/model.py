"""The site config schema: field names are the TOML keys.

Every model forbids unknown keys (a typo in a safety config must not pass
silently) and is frozen. Checks that need the device profiles get them from the
validation context, so a missing profile is reported with the field errors of
the same pass; checks across tables (bus names, unit ids) run once the tables
themselves are valid.
"""

from __future__ import annotations

import datetime
import difflib
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from edge_agent.config.defaults import default_exposure
from edge_agent.validation import FileError, Problems
from edge_agent.web.pin import PATTERN as PIN_PATTERN

_Strict = ConfigDict(extra="forbid", frozen=True)


def _matching(pattern: str, rule: str) -> AfterValidator:
    compiled = re.compile(pattern)

    def check(value: str) -> str:
        if not compiled.fullmatch(value):
            raise ValueError(f"{value!r} is not allowed here: {rule}")
        return value

    return AfterValidator(check)


Name = Annotated[str, _matching(r"[a-z][a-z0-9_\-]{0,31}",
                                "use 1-32 lower-case letters, digits, _ or -, "
                                "starting with a letter")]
# Ids become MQTT topic levels: no wildcards, no separators.
TopicId = Annotated[str, _matching(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}",
                                   "use 1-64 letters, digits, _ . or -, starting with a letter "
                                   "or digit (it becomes an MQTT topic level)")]


def _pin_hash(value: str) -> str:
    if not re.fullmatch(PIN_PATTERN, value):  # not echoed: it may be the PIN itself
        raise ValueError("is not a PIN hash; put here the line `edge-agent web hash-pin` "
                         "prints, never the PIN")
    return value


PinHash = Annotated[str, AfterValidator(_pin_hash)]


def _relative_to_config(path: Path, info: ValidationInfo) -> Path:
    base = (info.context or {}).get("base_dir")
    return path if path.is_absolute() or base is None else Path(base) / path


ConfigPath = Annotated[Path, AfterValidator(_relative_to_config)]


# --- buses ----------------------------------------------------------------------

class _BusBase(BaseModel):
    """What every bus has: how long to wait, when a silent device is lost."""

    model_config = _Strict

    name: Name
    timeout_ms: int = Field(1000, ge=10, le=60_000, description="per request; a device may "
                            "set its own")
    comm_loss_after: int = Field(3, ge=1, le=20, description="missed polls before comm-lost "
                                 "(ALARM_MANAGEMENT.md §6.9: within 3)")
    backoff_max_s: float = Field(30.0, ge=1, le=100, description="longest retry interval of a "
                                 "comm-lost device (ALARM_MANAGEMENT.md §6.9: never > 100 s)")
    gap_ms: int = Field(0, ge=0, le=10_000, description="quiet time after each transaction, "
                        "for devices that need it")


class _TcpLink(_BusBase):
    host: str = Field(min_length=1)
    # Some devices and gateways serve one master connection at a time: holding it
    # open locks out a SCADA or a technician's tool (PEER_LESSONS 10).
    connection: Literal["keep", "per-poll"] = Field(
        "keep", description="keep the TCP connection open, or close it after each poll")


class ModbusTcpBus(_TcpLink):
    """Modbus TCP: a device or a Modbus gateway on the plant network."""

    type: Literal["modbus-tcp"]
    port: int = Field(502, ge=1, le=65535)


class ModbusRtuOverTcpBus(_TcpLink):
    """RTU frames (with CRC, no MBAP header) tunnelled over TCP by a serial device
    server or 4G DTU in front of an RS-485 line.
    """

    type: Literal["modbus-rtu-over-tcp"]
    port: int = Field(ge=1, le=65535)


Baudrate = Literal[1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200]


class _SerialSettings(_BusBase):
    port: str = Field(min_length=1, description="serial device, e.g. /dev/ttyUSB0")
    baudrate: Baudrate = 9600
    parity: Literal["N", "E", "O"] = "N"  # most sensors ship 8N1, the spec's default is 8E1
    stopbits: Literal[1, 2] = 1
    timeout_ms: int = Field(500, ge=10, le=60_000)


class ModbusRtuBus(_SerialSettings):
    """Modbus RTU on an RS-485 serial port; one transaction at a time on the line."""

    type: Literal["modbus-rtu"]


class SerialBus(_SerialSettings):
    """A serial line for devices that speak their own protocol (binary frames, text lines)."""

    type: Literal["serial"]


MODBUS_BUSES = (ModbusTcpBus, ModbusRtuBus, ModbusRtuOverTcpBus)
Bus = Annotated[ModbusTcpBus | ModbusRtuBus | ModbusRtuOverTcpBus | SerialBus,
                Field(discriminator="type")]


# --- devices, channels and alarm limits ------------------------------------------

class Limit(BaseModel):
    """One alarm limit: level 1 or 2, raised when the value reaches a setpoint.

    ``above = 20`` alarms at value >= 20 (toxic and flammable gases, O2 high);
    ``below = 19.5`` alarms at value <= 19.5 (O2 low). The condition clears once the
    value is back past the setpoint by more than ``deadband``, so that a reading
    hovering at the setpoint does not chatter; the alarm follows it after
    ``on_delay_s`` and ``off_delay_s``, and a latching alarm also waits for an
    acknowledgement.
    """

    model_config = _Strict

    level: Literal[1, 2]
    # TOML has nan and inf; a NaN setpoint would never alarm, so both are refused.
    above: float | None = Field(None, allow_inf_nan=False)
    below: float | None = Field(None, allow_inf_nan=False)
    deadband: float = Field(0.0, ge=0, allow_inf_nan=False)
    on_delay_s: float = Field(0.0, ge=0, le=600, description="the condition must hold this "
                              "long before the alarm (ALARM_MANAGEMENT.md §6.4: <= 5 s for L1)")
    off_delay_s: float = Field(0.0, ge=0, le=3600, description="the condition must be gone "
                               "this long before the alarm ends")
    latch: bool = Field(False, description="the alarm ends only once acknowledged as well")

    @model_validator(mode="after")
    def _one_direction(self) -> Limit:
        if (self.above is None) == (self.below is None):
            raise ValueError("give exactly one of above = X or below = X")
        return self

    @property
    def direction(self) -> Literal["above", "below"]:
        return "above" if self.above is not None else "below"

    @property
    def setpoint(self) -> float:
        return self.above if self.above is not None else self.below  # type: ignore[return-value]


class Exposure(BaseModel):
    """Rolling STEL and TWA of a toxic channel (SAFETY_REFERENCE.md §5.4), in its unit."""

    model_config = _Strict

    stel: float | None = Field(None, gt=0, allow_inf_nan=False,
                               description="default: the gas's GBZ 2.1 PC-STEL")
    twa: float | None = Field(None, gt=0, allow_inf_nan=False,
                              description="default: the gas's GBZ 2.1 PC-TWA")
    twa_mode: Literal["moving8h", "shift"] = "moving8h"
    shift_start: str | None = Field(None, pattern=r"^([01]\d|2[0-3]):[0-5]\d$",
                                    description="local time a shift starts, HH:MM (shift mode)")
    max_gap_s: float = Field(10.0, gt=0, le=3600, description="a reading counts for at most "
                             "2 × this long (a dead sensor does not extend its last value)")

    @model_validator(mode="after")
    def _shift(self) -> Exposure:
        if (self.twa_mode == "shift") != (self.shift_start is not None):
            raise ValueError('twa_mode = "shift" needs shift_start = "HH:MM", and only it')
        return self


class RateLimit(BaseModel):
    """An alarm on the rate of change: ``rise_per_min`` (or ``fall_per_min``) units a minute."""

    model_config = _Strict

    level: Literal[1, 2]
    rise_per_min: float | None = Field(None, gt=0, allow_inf_nan=False)
    fall_per_min: float | None = Field(None, gt=0, allow_inf_nan=False)
    on_delay_s: float = Field(0.0, ge=0, le=600)

    @model_validator(mode="after")
    def _one_direction(self) -> RateLimit:
        if (self.rise_per_min is None) == (self.fall_per_min is None):
            raise ValueError("give exactly one of rise_per_min = X or fall_per_min = X")
        return self


RATE_READINGS_MAX = 4096  # readings a rate-of-change window may hold (the kernel's ring)


class Rate(BaseModel):
    """Rate of change over a sliding window, least-squares slope (SAFETY_REFERENCE.md §6.4)."""

    model_config = _Strict

    window_s: float = Field(120.0, ge=10, le=3600)
    limits: list[RateLimit] = Field(default_factory=list, max_length=4)


class SensorFaults(BaseModel):
    """Faults of the sensor judged from its readings; each is off unless set."""

    model_config = _Strict

    stuck_s: float | None = Field(None, gt=0, description="flatline: no change beyond "
                                  "stuck_epsilon for this long (a live gas cell shows noise)")
    stuck_epsilon: float = Field(0.0, ge=0)
    max_rate_per_s: float | None = Field(None, gt=0, description="a jump faster than this is "
                                         "impossible for the physics: a spike, not judged")
    gap_s: float | None = Field(None, gt=0, description="no good reading for this long")


class Channel(BaseModel):
    """Settings for one published value of a device; every value is polled either way."""

    model_config = _Strict

    limits: list[Limit] | None = Field(
        None, max_length=4, description="default: the site's alarm_defaults scheme for the "
        "value's gas; [] for none")
    exposure: Exposure | Literal[False] | None = Field(
        None, description="default: on with the GBZ 2.1 limits of the value's gas; false: off")
    rate: Rate | None = None
    faults: SensorFaults | None = None
    anomaly: bool | None = Field(None, description="default: the site's anomaly.channels")

    @model_validator(mode="after")
    def _consistent(self) -> Channel:
        check_limits(self.limits or [])
        return self


def check_limits(limits: list[Limit]) -> None:
    """Two limits of one level and direction, inverted levels, lows above highs: refused."""
    seen: dict[tuple[str, int], float] = {}
    for limit in limits:
        key = (limit.direction, limit.level)
        if key in seen:
            raise ValueError(f"two level-{limit.level} limits {limit.direction} a setpoint")
        seen[key] = limit.setpoint
    for direction, sign in (("above", 1), ("below", -1)):
        l1, l2 = seen.get((direction, 1)), seen.get((direction, 2))
        if l1 is not None and l2 is not None and sign * (l2 - l1) <= 0:
            raise ValueError(f"the level-2 limit {direction} ({l2}) must be further "
                             f"{direction} than level 1 ({l1})")
    highs = [v for (d, _), v in seen.items() if d == "above"]
    lows = [v for (d, _), v in seen.items() if d == "below"]
    if highs and lows and max(lows) >= min(highs):
        raise ValueError(f"limits below ({max(lows)}) must be lower than limits above "
                         f"({min(highs)})")


class Device(BaseModel):
    """One field device on a bus, read with a profile from drivers/."""

    model_config = _Strict

    name: Name
    bus: Name
    unit_id: int | None = Field(None, ge=0, le=255, description="Modbus slave/unit id")
    profile: str
    poll_interval_s: float = Field(1.0, ge=0.1, le=3600)
    timeout_ms: int | None = Field(None, ge=10, le=60_000, description="default: the bus's")
    channels: dict[str, Channel] = Field(default_factory=dict)
    calibrated: datetime.date | None = Field(None, description="date of the last calibration: "
                                             "a space it watches cannot be entered once due")
    calibration_interval_days: int = Field(180, ge=1, le=730, description="calibration is "
                                           "due this long after the last (maker's manual)")
    bump_tested: datetime.date | None = Field(None, description="date of the last bump test "
                                              "(test gas, alarms seen to respond)")

    @field_validator("profile")
    @classmethod
    def _profile_exists(cls, name: str, info: ValidationInfo) -> str:
        library = (info.context or {}).get("profiles")
        if library is None:
            return name
        if name not in library.names():
            raise ValueError(f'no profile "{name}" in {library.directory}'
                             f'{_hint(name, library.names())}; there are: '
                             f'{", ".join(library.names()) or "none"}')
        try:
            library.get(name)
        except FileError as exc:
            raise Problems([((), f'profile "{name}" is invalid: {exc.path}: {problem}')
                            for problem in exc.problems]) from None
        return name

    @model_validator(mode="after")
    def _rate_windows(self) -> Device:
        problems = [(("channels", name, "rate", "window_s"), f"a {c.rate.window_s:g} s window "
                     f"at one reading every {self.poll_interval_s:g} s holds "
                     f"{c.rate.window_s / self.poll_interval_s:.0f} readings, more than "
                     f"{RATE_READINGS_MAX}: shorten the window or poll less often")
                    for name, c in self.channels.items()
                    if c.rate and c.rate.window_s / self.poll_interval_s > RATE_READINGS_MAX]
        if problems:
            raise Problems(problems)
        return self

    @model_validator(mode="after")
    def _channels_exist(self, info: ValidationInfo) -> Device:
        library = (info.context or {}).get("profiles")
        if library is None:
            return self
        values = [p.name for p in library.get(self.profile).channels]
        unknown = [c for c in self.channels if c not in values]
        if unknown:
            raise Problems([(("channels", name), f'profile "{self.profile}" has no value '
                             f'"{name}"{_hint(name, values)}; it has {", ".join(values)}')
                            for name in unknown])
        return self


# --- uplink and buffer ----------------------------------------------------------

class Endpoint(BaseModel):
    """One node of the platform's broker cluster."""

    model_config = _Strict

    host: str = Field(min_length=1)
    port: int | None = Field(None, ge=1, le=65535, description="default: mqtt.port")


class Mqtt(BaseModel):
    """The platform link. TLS with certificate verification is on unless turned off."""

    model_config = _Strict

    host: str | None = Field(None, min_length=1, description="the broker (or endpoints)")
    port: int | None = Field(None, ge=1, le=65535, description="default 8883 with TLS, else 1883")
    endpoints: list[Endpoint] = Field(default_factory=list, max_length=16, description="the "
                                      "nodes of a broker cluster, in order of preference, "
                                      "instead of host; TLS settings are shared")
    session_expiry_s: int = Field(86400, ge=60, le=30 * 86400, description="MQTT 5: how long "
                                  "the broker keeps the session (and commands queued for the "
                                  "gateway) while it is away")
    protocol: Literal["3.1.1", "5"] = "3.1.1"
    tls: Literal["on", "off"] = "on"
    ca_file: ConfigPath | None = Field(None, description="default: the system's CA store")
    cert_file: ConfigPath | None = None
    key_file: ConfigPath | None = None
    username: str | None = None
    password_file: ConfigPath | None = None
    password_env: str | None = Field(None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    client_id: str | None = Field(None, min_length=1, max_length=128)
    topic_prefix: str = "edge/v1/{site}/{gateway}"
    keepalive_s: int = Field(30, ge=5, le=3600)
    reconnect_max_s: int = Field(60, ge=1, le=3600)
    inflight_window: int = Field(16, ge=1, le=1000)
    telemetry_batch: int = Field(200, ge=1, le=5000, description="samples per telemetry message")
    max_message_bytes: int = Field(131072, ge=1024, le=2**28,
                                   description="a telemetry message is cut to fit this size")
    compression: Literal["none", "gzip"] = "none"

    @field_validator("topic_prefix")
    @classmethod
    def _topic_prefix(cls, value: str) -> str:
        if re.search(r"[+#\x00]", value) or value.startswith("/") or value.endswith("/"):
            raise ValueError("must not contain + # or a leading/trailing /")
        unknown = set(re.findall(r"\{([^}]*)\}", value)) - {"site", "gateway"}
        if unknown:
            raise ValueError(f"unknown placeholder {{{sorted(unknown)[0]}}}; use {{site}} and "
                             "{gateway}")
        return value

    @model_validator(mode="after")
    def _credentials(self) -> Mqtt:
        problems: list[tuple[tuple[str, ...], str]] = []
        if (self.host is None) == (not self.endpoints):
            problems.append((("endpoints" if self.endpoints else "host",),
                             "give host (one broker) or endpoints (a cluster), one of them"))
        if self.password_file and self.password_env:
            problems.append((("password_env",), "give password_file or password_env, not both"))
        if (self.password_file or self.password_env) and not self.username:
            key = "password_file" if self.password_file else "password_env"
            problems.append(((key,), "a password needs a username"))
        if (self.cert_file is None) != (self.key_file is None):
            key = "cert_file" if self.cert_file else "key_file"
            problems.append(((key,), "a client certificate needs both cert_file and key_file"))
        for key in ("ca_file", "cert_file", "key_file", "password_file"):
            path = getattr(self, key)
            if path is None:
                continue
            if self.tls == "off" and key != "password_file":
                problems.append(((key,), 'needs tls = "on"'))
            elif not path.is_file():
                problems.append(((key,), f"{path} does not exist or is not a file"))
            elif key in ("key_file", "password_file") and path.stat().st_mode & 0o004:
                # A secret every local user can read is no secret.
                problems.append(((key,), f"{path} can be read by every user (mode "
                                 f"{path.stat().st_mode & 0o777:04o}); run chmod o-rwx on it"))
        if problems:
            raise Problems(problems)
        return self

    @property
    def effective_port(self) -> int:
        return self.port or (8883 if self.tls == "on" else 1883)

    @property
    def brokers(self) -> list[tuple[str, int]]:
        """(host, port) of each broker, in order of preference."""
        if self.host is not None:
            return [(self.host, self.effective_port)]
        return [(e.host, e.port or self.effective_port) for e in self.endpoints]


class Buffer(BaseModel):
    """The local store of samples and events waiting for the uplink."""

    model_config = _Strict

    path: ConfigPath = Path("/var/lib/edge-agent/buffer.db")
    max_bytes: int = Field(256 * 2**20, ge=2**20, description="hard quota for the database")
    retention_days: float | None = Field(30, gt=0, description="undelivered telemetry older "
                                         "than this is dropped; events are kept")


class Web(BaseModel):
    """The local web view for technicians and site staff (docs/web.md): read-only but for
    acknowledging alarms and the entry workflow, which need the technicians' PIN.
    """

    model_config = _Strict

    enabled: bool = False
    bind: str = Field("127.0.0.1", min_length=1, description="the address it listens on: "
                      "loopback, or the gateway's address on the site network or hotspot")
    port: int = Field(8080, ge=1, le=65535)
    pin_hash: PinHash | None = Field(None, description="the technicians' PIN as `edge-agent "
                                     "web hash-pin` prints it; none: no actions")
    max_clients: int = Field(8, ge=1, le=64, description="live pages at once")
    cert_file: ConfigPath | None = Field(None, description="HTTPS: the certificate chain")
    key_file: ConfigPath | None = None

    @model_validator(mode="after")
    def _tls(self) -> Web:
        if (self.cert_file is None) != (self.key_file is None):
            key = "cert_file" if self.cert_file else "key_file"
            raise Problems([((key,), "HTTPS needs both cert_file and key_file")])
        for key in ("cert_file", "key_file"):
            if (path := getattr(self, key)) is not None and not path.is_file():
                raise Problems([((key,), f"{path} does not exist or is not a file")])
        return self


class Action(BaseModel):
    """A local output driven by alarms: a relay for a sounder, a beacon or a fan.

    It switches on when an alarm whose key matches ``when`` is raised, and off
    once every such alarm has cleared and (by default) been acknowledged; it works
    with the network down, since it never goes through the uplink.
    """

    model_config = _Strict

    name: Name
    when: list[Annotated[str, Field(min_length=1, max_length=200)]] = Field(
        min_length=1, description="alarm keys, shell-style patterns allowed: gas1.co:above:*")
    device: str = Field(description="the relay or IO module, a device of this config")
    output: str = Field(description="an output of the device's profile")
    release: Literal["cleared_and_acknowledged", "cleared", "acknowledged"] = Field(
        "cleared_and_acknowledged", description="when a holding alarm lets go: cleared and "
        "acknowledged (a sounder by default), cleared (a fan, a beacon that follow the gas), "
        "or acknowledged (a sounder that an ack silences; a new alarm sounds it again)")
    escalation: int = Field(0, ge=0, le=10, description="0: on when a matching alarm is "
                            "raised; N: only once one has gone unacknowledged through N "
                            "escalations (a further output: a siren at the gate, a "
                            "supervisor's beacon)")
    healthy: bool = Field(False, description="a normally energised 'healthy' output: on "
                          "while no matching alarm or fault is active and nothing is shelved "
                          "or out of service; off otherwise and when the agent stops")

    @model_validator(mode="after")
    def _healthy_alone(self) -> Action:
        if self.healthy and self.escalation:
            raise Problems([(("escalation",), "a healthy output does not escalate: drop "
                             "escalation or healthy")])
        return self


class SpaceDetector(BaseModel):
    """A detector that watches a confined space, at one sampling point."""

    model_config = _Strict

    device: str
    point: Name | None = Field(None, description="where it samples: top, middle, bottom ... "
                               "(GB 30871-2022 §6.3 b: large spaces at several levels)")


class Space(BaseModel):
    """A confined space (有限空间) and the detectors that watch it. Entry follows
    GB 30871-2022 chapter 6; the limits below can be made stricter, never looser.
    """

    model_config = _Strict

    name: Name
    detectors: list[SpaceDetector] = Field(min_length=1)
    o2_entry_min: float = Field(19.5, ge=19.5, le=21.0, description="%VOL (§6.4)")
    o2_entry_max: float = Field(21.0, ge=20.9, le=23.5, description="%VOL; up to 23.5 "
                                "in an oxygen-enriched space (§6.4)")
    flammable_lel_vol: float = Field(5.0, gt=0, le=100, description="LEL of the gas the "
                                     "flammable channels are calibrated for, %VOL (methane 5)")
    test_valid_min: float = Field(30.0, gt=0, le=30, description="entry must start this soon "
                                  "after a passed test (§6.3 a)")
    interruption_min: float = Field(60.0, gt=0, le=60, description="unwatched longer than "
                                    "this, the space needs a new test (§6.3 f)")
    record_interval_h: float = Field(2.0, gt=0, le=2, description="a record event at least "
                                     "this often during entry (§6.5)")
    permit_h: float = Field(24.0, gt=0, le=24, description="a session ends this long after "
                                "its start (§6.10)")
    bump_max_days: int = Field(30, ge=1, le=30, description="entry is refused when a "
                               "detector's last bump test is older (never over 30 days)")


# --- the site -------------------------------------------------------------------

class AlarmDefaults(BaseModel):
    """Where channels without limits of their own get theirs (config/defaults.py)."""

    model_config = _Strict

    scheme: Literal["gbt50493", "gbzt223", "none"] = Field(
        "gbt50493", description="GB/T 50493-2019 (100 %/200 % OEL), GBZ/T 223-2009 "
        "(½ and 1 × MAC or STEL), or none")
    molar_volume_l: float = Field(24.05, ge=22.0, le=25.0, description="L/mol for mg/m3 -> "
                                  "ppm: 24.05 at 20 °C (Chinese workplace sampling)")


class AlarmManagement(BaseModel):
    """Shelving, out of service and escalation (ALARM_MANAGEMENT.md §1.2, §6.6)."""

    model_config = _Strict

    shelve_max_min: float = Field(60.0, gt=0, le=1440, description="the longest a person "
                                  "may shelve an alarm (Elipse E3's default cap)")
    shelve_level2: bool = Field(False, description="allow shelving level-2 alarms")
    out_of_service_max_min: float = Field(240.0, gt=0, le=1440, description="the longest a "
                                          "channel may stay out of service for maintenance")
    out_of_service_max_share: float = Field(0.5, gt=0, le=1, description="the share of the "
                                            "site's channels that may be out of service at once")
    escalate_after_min: float | None = Field(10.0, gt=0, le=1440, description="an alarm "
                                             "unacknowledged this long is escalated (null: never)")
    escalations_max: int = Field(3, ge=1, le=10, description="escalations per alarm, at most")
    realarm_min: float | None = Field(None, gt=0, le=1440, description="an acknowledged alarm "
                                      "still active this long after its acknowledgement is "
                                      "unacknowledged again and sounds again (null: never)")


class Term(BaseModel):
    """One condition of a combined rule, on one channel (``device.value``)."""

    model_config = _Strict

    channel: str = Field(pattern=r"^[a-z][a-z0-9_\-]*\.[a-z][a-z0-9_]*$")
    above: float | None = None
    below: float | None = None
    rising_per_min: float | None = Field(None, gt=0)
    falling_per_min: float | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _one_condition(self) -> Term:
        given = [k for k in ("above", "below", "rising_per_min", "falling_per_min")
                 if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of above, below, rising_per_min, falling_per_min")
        return self


class CombinedRule(BaseModel):
    """An alarm when every term (or ``votes`` of them) holds within ``within_s`` seconds
    of each other.
    """

    model_config = _Strict

    name: Name
    level: Literal[1, 2]
    within_s: float = Field(0.0, ge=0, le=3600)
    when: list[Term] = Field(min_length=2, max_length=8)
    votes: int | None = Field(None, ge=1, description="k-of-n voting: this many of the terms "
                              "suffice (GB 16808-2025 §5.5.1.8: confirm from two or more "
                              "signals); default all")
    description: str = ""


class Redundant(BaseModel):
    """Sensors of one quantity in one zone: readings that part by more than ``tolerance``
    for ``duration_s`` mean one of them drifts (a fault of both).
    """

    model_config = _Strict

    channels: list[str] = Field(min_length=2, max_length=2)
    tolerance: float = Field(gt=0)
    duration_s: float = Field(300.0, gt=0)


class AnomalySettings(BaseModel):
    """Advisory anomaly detection (never instead of the limits)."""

    model_config = _Strict

    channels: Literal["none", "gas", "all"] = Field(
        "none", description="channels judged unless they say otherwise")


class SiteConfig(BaseModel):
    """One gateway on one site: its buses, devices, alarm limits, uplink and buffer."""

    model_config = _Strict

    schema_version: int = Field(1, ge=1, description="the config format's version")
    gateway_id: TopicId
    site_id: TopicId
    language: Literal["zh_CN", "en"] | None = Field(None, description="of the web view and of "
                                                     "the CLI with this config; default: the "
                                                     "browser's and LANG")
    profiles_dir: ConfigPath | None = Field(None, description="default: the shipped drivers/")
    alarm_defaults: AlarmDefaults = AlarmDefaults()
    alarm_management: AlarmManagement = AlarmManagement()
    anomaly: AnomalySettings = AnomalySettings()
    rules: list[CombinedRule] = Field(default_factory=list)
    redundant: list[Redundant] = Field(default_factory=list)
    buses: list[Bus] = Field(min_length=1)
    devices: list[Device] = Field(min_length=1)
    actions: list[Action] = Field(default_factory=list)
    spaces: list[Space] = Field(default_factory=list)
    mqtt: Mqtt
    buffer: Buffer = Buffer()
    web: Web = Web()

    @model_validator(mode="after")
    def _references(self, info: ValidationInfo) -> SiteConfig:
        problems = _duplicates("buses", "name", [b.name for b in self.buses])
        problems += _duplicates("devices", "name", [d.name for d in self.devices])
        problems += _duplicates("devices", "unit_id", [
            (d.bus, d.unit_id) if d.unit_id is not None else (d.bus, d.name, i)
            for i, d in enumerate(self.devices)])
        buses = {b.name: b for b in self.buses}
        library = (info.context or {}).get("profiles")
        for i, device in enumerate(self.devices):
            bus = buses.get(device.bus)
            transport = library.get(device.profile).transport if library else "modbus"
            if bus is None:
                problems.append((("devices", i, "bus"), f'no bus named "{device.bus}"'
                                 f'{_hint(device.bus, buses)}; buses are {", ".join(buses)}'))
            elif (transport == "modbus") != isinstance(bus, MODBUS_BUSES):
                problems.append((("devices", i, "bus"), f'profile "{device.profile}" speaks '
                                 f'{transport} and "{bus.name}" is a {bus.type} bus'))
            elif transport == "modbus" and device.unit_id is None:
                problems.append((("devices", i), "missing required key unit_id (the Modbus "
                                 "slave address)"))
            elif isinstance(bus, ModbusRtuBus | ModbusRtuOverTcpBus) and not (
                    1 <= device.unit_id <= 247):  # type: ignore[operator]
                problems.append((("devices", i, "unit_id"), f"{device.unit_id} is not a Modbus "
                                 "RTU slave address (1-247; 0 is broadcast)"))
        serial_ports = [(b.name, b.port) for b in self.buses if isinstance(b, SerialBus)]
        for name, port in serial_ports:
            users = [d.name for d in self.devices if d.bus == name]
            if len(users) > 1:
                i = next(i for i, d in enumerate(self.devices) if d.name == users[1])
                problems.append((("devices", i, "bus"), f'serial bus "{name}" ({port}) serves '
                                 f"one device, already {users[0]}; give each its own port"))
        if library is not None:
            problems += self._channel_references(library)
            problems += self._action_references(library, buses)
            problems += self._space_references(library)
        if problems:
            raise Problems(problems)
        return self

    def _action_references(self, library: Any,
                           buses: dict[str, Any]) -> list[tuple[tuple[Any, ...], str]]:
        """Each action drives a named output of a Modbus device of this config."""
        devices = {d.name: d for d in self.devices}
        problems = _duplicates("actions", "name", [a.name for a in self.actions])
        for i, action in enumerate(self.actions):
            device = devices.get(action.device)
            if device is None:
                problems.append((("actions", i, "device"), f'no device "{action.device}"'
                                 f"{_hint(action.device, devices)}"))
                continue
            if not isinstance(buses.get(device.bus), MODBUS_BUSES):
                problems.append((("actions", i, "device"), f'"{device.name}" is not on a Modbus '
                                 "bus; outputs are Modbus coils and registers"))
                continue
            outputs = [o.name for o in library.get(device.profile).outputs]
            if action.output not in outputs:
                problems.append((("actions", i, "output"), f'profile "{device.profile}" has no '
                                 f'output "{action.output}"{_hint(action.output, outputs)}; '
                                 f"its outputs: {', '.join(outputs) or 'none'}"))
        return problems

    def _space_references(self, library: Any) -> list[tuple[tuple[Any, ...], str]]:
        """Each space's detectors are devices here, and together they measure oxygen and
        a flammable gas (GB 30871-2022 §6.4 judges O2, flammables and toxics).
        """
        devices = {d.name: d for d in self.devices}
        problems = _duplicates("spaces", "name", [s.name for s in self.spaces])
        for i, space in enumerate(self.spaces):
            gases, unknown = set(), False
            for j, detector in enumerate(space.detectors):
                device = devices.get(detector.device)
                if device is None:
                    unknown = True
                    problems.append((("spaces", i, "detectors", j, "device"),
                                     f'no device named "{detector.device}"'
                                     f"{_hint(detector.device, devices)}"))
                    continue
                gases |= {p.gas for p in library.get(device.profile).channels}
            missing = [g for g in ("o2", "flammable") if g not in gases]
            if missing and not unknown:
                problems.append((("spaces", i, "detectors"), f"no {' and no '.join(missing)} "
                                 "channel among these detectors; a pre-entry test needs both "
                                 "(GB 30871-2022 §6.4)"))
            if space.o2_entry_min >= space.o2_entry_max:
                problems.append((("spaces", i, "o2_entry_max"), "must be above o2_entry_min"))
        return problems

    def _channel_references(self, library: Any) -> list[tuple[tuple[Any, ...], str]]:
        """Rules and redundant pairs name published channels; exposure has limits."""
        points = {f"{d.name}.{p.name}": p for d in self.devices
                  for p in library.get(d.profile).channels}
        problems = []
        named = [(("rules", i, "when", j, "channel"), term.channel)
                 for i, rule in enumerate(self.rules) for j, term in enumerate(rule.when)]
        named += [(("redundant", i, "channels", j), channel)
                  for i, pair in enumerate(self.redundant)
                  for j, channel in enumerate(pair.channels)]
        for path, channel in named:
            if channel not in points:
                problems.append((path, f'no channel "{channel}"{_hint(channel, points)}; '
                                 "channels are device.value"))
        problems += _duplicates("rules", "name", [r.name for r in self.rules])
        problems += [(("rules", i, "votes"), f"{r.votes} votes out of {len(r.when)} terms: at "
                      f"most {len(r.when)}") for i, r in enumerate(self.rules)
                     if r.votes is not None and r.votes > len(r.when)]
        for i, device in enumerate(self.devices):
            for name, channel in device.channels.items():
                point = points.get(f"{device.name}.{name}")
                exposure = channel.exposure
                if point is None or not exposure or exposure.stel or exposure.twa:
                    continue
                if default_exposure(point.gas, point.unit,
                                    self.alarm_defaults.molar_volume_l) == (None, None):
                    problems.append((("devices", i, "channels", name, "exposure"),
                                     f"give stel or twa: {point.gas or 'this value'} in "
                                     f"{point.unit or 'its unit'} has no GBZ 2.1 default"))
        return problems


def _hint(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f' (did you mean "{close[0]}"?)' if close else ""


def _duplicates(table: str, key: str, values: list[Any]) -> list[tuple[tuple[Any, ...], str]]:
    first: dict[Any, int] = {}
    problems = []
    for i, value in enumerate(values):
        if value in first:
            what = value[1] if isinstance(value, tuple) else value
            problems.append(((table, i, key), f"{what!r} is already used by {table}"
                             f"[{first[value]}]"))
        first.setdefault(value, i)
    return problems
