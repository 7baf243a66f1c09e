"""Where the device profiles and example configs are, installed or in a source tree."""

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def shipped_dir(name: str) -> Path:
    """Return the directory ``drivers`` or ``config`` that ships with this copy of the agent.

    A wheel carries them inside the package (pyproject force-include); a source
    checkout or an editable install has them at the top of the repository.
    """
    for candidate in (_PACKAGE / "_shipped" / name, _PACKAGE.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"the shipped {name}/ directory is missing next to {_PACKAGE}")
