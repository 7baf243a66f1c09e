"""The site config: one TOML file, validated whole before anything changes."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from edge_agent.config.defaults import default_limits
from edge_agent.config.model import (
    MODBUS_BUSES,
    Action,
    AlarmDefaults,
    Buffer,
    Bus,
    Channel,
    Device,
    Exposure,
    Limit,
    ModbusRtuBus,
    ModbusRtuOverTcpBus,
    ModbusTcpBus,
    Mqtt,
    SerialBus,
    SiteConfig,
)
from edge_agent.profiles import Point, ProfileLibrary
from edge_agent.validation import FileError, read_toml, validate

__all__ = [
    "MODBUS_BUSES",
    "Action",
    "AlarmDefaults",
    "Buffer",
    "Bus",
    "Channel",
    "ChannelRules",
    "Device",
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
    "load_config",
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


def load_config(path: Path | str) -> LoadedConfig:
    """Read and validate a site config; raise FileError listing every problem.

    Loading does no I/O beyond reading this file and the profiles it names.
    """
    path = Path(path)
    data, text = read_toml(path)
    base = path.resolve().parent
    profiles_dir = data.get("profiles_dir")
    library = ProfileLibrary(base / profiles_dir if isinstance(profiles_dir, str) else None)
    site = validate(SiteConfig, data, path=path, text=text,
                    context={"base_dir": base, "profiles": library})
    return LoadedConfig(path=path, site=site, profiles=library)
