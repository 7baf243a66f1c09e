"""The site config: one TOML file, validated whole before anything changes."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from edge_agent.config.model import (
    MODBUS_BUSES,
    Buffer,
    Bus,
    Channel,
    Device,
    Limit,
    ModbusRtuBus,
    ModbusRtuOverTcpBus,
    ModbusTcpBus,
    Mqtt,
    SerialBus,
    SiteConfig,
)
from edge_agent.profiles import ProfileLibrary
from edge_agent.validation import FileError, read_toml, validate

__all__ = [
    "MODBUS_BUSES",
    "Buffer",
    "Bus",
    "Channel",
    "Device",
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
class LoadedConfig:
    """A validated site config with the profiles it names and its hash."""

    path: Path
    site: SiteConfig
    profiles: ProfileLibrary

    @property
    def hash(self) -> str:
        """sha256 of the validated config and the profiles its devices use.

        Comments, key order and whitespace do not change it; a changed limit or
        register map does, so a pushed config equal to the running one is a no-op.
        """
        used = sorted({d.profile for d in self.site.devices})
        document = {
            "site": self.site.model_dump(mode="json"),
            "profiles": {name: self.profiles.get(name).model_dump(mode="json") for name in used},
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
