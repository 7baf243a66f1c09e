"""The site config: one TOML file, validated whole before anything changes."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_agent.config.defaults import default_limits
from edge_agent.config.model import (
    MODBUS_BUSES,
    Action,
    AlarmDefaults,
    AlarmManagement,
    Buffer,
    Bus,
    Channel,
    Device,
    Endpoint,
    Exposure,
    Limit,
    ModbusRtuBus,
    ModbusRtuOverTcpBus,
    ModbusTcpBus,
    Mqtt,
    SerialBus,
    SiteConfig,
    Space,
    Web,
)
from edge_agent.profiles import Point, ProfileLibrary
from edge_agent.validation import FileError, read_toml, validate

__all__ = [
    "MODBUS_BUSES",
    "Action",
    "AlarmDefaults",
    "AlarmManagement",
    "Buffer",
    "Bus",
    "Channel",
    "ChannelRules",
    "Device",
    "Endpoint",
    "Exposure",
    "FileError",
    "Limit",
    "LoadedConfig",
    "ModbusRtuBus",
    "ModbusRtuOverTcpBus",
    "ModbusTcpBus",
    "Mqtt",
    "SerialBus",
    "SiteConfig",
    "Space",
    "Web",
    "load_config",
    "replace_config",
]


@dataclass(frozen=True)
class ChannelRules:
    """What the agent judges one published value by, defaults applied."""

    device: Device
    point: Point
    limits: list[Limit]

    @property
    def channel(self) -> str:
        return f"{self.device.name}.{self.point.name}"


@dataclass(frozen=True)
class LoadedConfig:
    """A validated site config with the profiles it names and its hash."""

    path: Path
    site: SiteConfig
    profiles: ProfileLibrary
    notes: tuple[str, ...] = ()  # what upgrading an older config format changed

    def channels(self) -> list[ChannelRules]:
        """Every published value of the site in config order, with its rules: the
        channel's own settings, else the site's defaults for the value's gas.
        """
        defaults = self.site.alarm_defaults
        out = []
        for device in self.site.devices:
            for point in self.profiles.get(device.profile).channels:
                settings = device.channels.get(point.name, Channel())
                limits = settings.limits
                if limits is None:
                    limits = [Limit.model_validate(d) for d in default_limits(
                        point.gas, point.unit, defaults.scheme, defaults.molar_volume_l)]
                out.append(ChannelRules(device, point, limits))
        return out

    @property
    def hash(self) -> str:
        """sha256 of the validated config, the profiles its devices use and the limits
        in force.

        Comments, key order and whitespace do not change it; a changed limit or
        register map does, so a pushed config equal to the running one is a no-op.
        """
        used = sorted({d.profile for d in self.site.devices})
        document = {
            "site": self.site.model_dump(mode="json"),
            "profiles": {name: self.profiles.get(name).model_dump(mode="json") for name in used},
            # the defaults in force, which a new version of the agent could change
            "limits": {r.channel: [limit.model_dump(mode="json") for limit in r.limits]
                       for r in self.channels()},
        }
        return hashlib.sha256(json.dumps(document, sort_keys=True).encode()).hexdigest()


def replace_config(path: Path, text: str) -> Path:
    """Write ``text`` over the config ``path`` whole and durably (a power cut leaves the
    old file or the new one), with the old file's mode; the old text is kept as
    ``<name>.previous``, which is returned.
    """
    backup = path.with_name(path.name + ".previous")
    backup.write_bytes(path.read_bytes())
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(handle, "w", encoding="utf-8") as out:
        out.write(text)
        out.flush()
        os.fsync(out.fileno())
    os.chmod(tmp, path.stat().st_mode & 0o777)
    os.replace(tmp, path)
    return backup


# --- config format versions ------------------------------------------------------
# A migration takes a config (a mapping: a plain dict, or a tomlkit document so that
# `edge-agent config migrate` keeps the comments) from version n to n + 1 in place and
# says what it changed, in words a technician can check. Version 1 is the first.
Migration = Callable[[MutableMapping[str, Any]], list[str]]
MIGRATIONS: dict[int, Migration] = {}  # from version n -> the step to n + 1


def config_schema() -> int:
    """The config format this agent writes and reads natively."""
    return 1 + len(MIGRATIONS)


def migrate(data: MutableMapping[str, Any], path: Path) -> list[str]:
    """Bring ``data`` to the current format in place; what changed, one line each.

    A config from a newer agent is refused: guessing what its keys mean could
    silently drop an alarm limit.
    """
    found = data.get("schema_version", 1)
    current = config_schema()
    if not isinstance(found, int) or found < 1:
        raise FileError(path, [f"schema_version: {found!r} is not a config format version "
                               f"(1 to {current})"])
    if found > current:
        raise FileError(path, [f"schema_version: {found} was written for a newer edge-agent "
                               f"(this one reads 1 to {current}); upgrade the agent"])
    notes = []
    for version in range(found, current):
        notes += [f"format {version} -> {version + 1}: {note}"
                  for note in MIGRATIONS[version](data)]
    if found < current:
        data["schema_version"] = current
    return notes


def load_config(path: Path | str) -> LoadedConfig:
    """Read and validate a site config; raise FileError listing every problem.

    An older config format is upgraded in memory; ``notes`` says what changed, and
    `edge-agent config migrate` writes it. Loading does no I/O beyond reading this
    file and the profiles it names.
    """
    path = Path(path)
    data, text = read_toml(path)
    notes = migrate(data, path)
    base = path.resolve().parent
    profiles_dir = data.get("profiles_dir")
    library = ProfileLibrary(base / profiles_dir if isinstance(profiles_dir, str) else None)
    site = validate(SiteConfig, data, path=path, text=text,
                    context={"base_dir": base, "profiles": library})
    return LoadedConfig(path=path, site=site, profiles=library, notes=tuple(notes))
