"""Device profiles: one TOML file per sensor model in ``drivers/``, read by the poller,
the CLI and the simulators alike.

A profile describes registers (address, function, data type, word order, scale,
offset, unit). Each register compiles its codec once at load time, so polling
never matches strings.
"""

from __future__ import annotations

from pathlib import Path

from edge_agent._shipped import shipped_dir
from edge_agent.profiles.model import (
    DataField,
    DataType,
    Function,
    Output,
    Point,
    Profile,
    Register,
    StatusRule,
    WordOrder,
)
from edge_agent.validation import FileError, read_toml, validate

__all__ = [
    "DataField",
    "DataType",
    "Function",
    "Output",
    "Point",
    "Profile",
    "ProfileLibrary",
    "Register",
    "StatusRule",
    "WordOrder",
    "builtin_profiles_dir",
    "load_profile",
]


def builtin_profiles_dir() -> Path:
    """The ``drivers/`` directory shipped with the agent."""
    return shipped_dir("drivers")


def load_profile(path: Path) -> Profile:
    """Load and validate one profile file; raise FileError naming every problem."""
    data, text = read_toml(path)
    profile = validate(Profile, data, path=path, text=text)
    if profile.name != path.stem:
        raise FileError(path, [f'name: "{profile.name}" must equal the file name "{path.stem}"'])
    return profile


class ProfileLibrary:
    """The profiles of one directory, loaded on first use and kept."""

    def __init__(self, directory: Path | None = None) -> None:
        self.directory = directory or builtin_profiles_dir()
        self._loaded: dict[str, Profile] = {}

    def names(self) -> list[str]:
        return sorted(p.stem for p in self.directory.glob("*.toml"))

    def path(self, name: str) -> Path:
        return self.directory / f"{name}.toml"

    def get(self, name: str) -> Profile:
        """Return the profile ``name``; FileError if it is missing or invalid."""
        if name not in self._loaded:
            path = self.path(name)
            if not path.is_file():
                raise FileError(path, ["no such profile"])
            self._loaded[name] = load_profile(path)
        return self._loaded[name]
