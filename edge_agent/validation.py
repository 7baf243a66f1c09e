"""Load TOML into pydantic models and turn every error into a line that names the file,
the key path, what is wrong and what is expected.

Shared by the site config and the device profiles, so that a technician reads the
same kind of message whatever file is wrong.
"""

from __future__ import annotations

import difflib
import re
import tomllib
import types
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)


class FileError(Exception):
    """A file that cannot be used, with every problem found in it.

    Attributes:
        path: the file.
        problems: one line per problem, each starting with the key path.
    """

    def __init__(self, path: Path | str, problems: Iterable[str]) -> None:
        self.path = Path(path)
        self.problems = list(problems)
        super().__init__(self.report())

    def report(self) -> str:
        return "\n".join(f"{self.path}: {problem}" for problem in self.problems)


def read_toml(path: Path) -> tuple[dict[str, Any], str]:
    """Read a TOML file, or raise FileError saying why it cannot be read."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FileError(path, ["file not found"]) from None
    except IsADirectoryError:
        raise FileError(path, ["is a directory, expected a TOML file"]) from None
    except PermissionError:
        raise FileError(path, ["permission denied; run as a user that can read it"]) from None
    except UnicodeDecodeError as exc:
        raise FileError(path, [f"not UTF-8 text ({exc.reason} at byte {exc.start})"]) from None
    try:
        return tomllib.loads(text), text
    except tomllib.TOMLDecodeError as exc:
        raise FileError(path, [f"TOML syntax error: {exc}"]) from None


class Problems(ValueError):
    """Several problems found by one validator, each at its own key path.

    ``problems`` holds (path, message) pairs; the path is relative to where the
    validator runs, e.g. ``(("devices", 2, "bus"), 'no bus named "x"')``.
    """

    def __init__(self, problems: list[tuple[tuple[str | int, ...], str]]) -> None:
        self.problems = problems
        super().__init__("; ".join(message for _, message in problems))


def validate(
    model: type[M], data: Mapping[str, Any], *, path: Path, text: str = "",
    context: dict[str, Any] | None = None,
) -> M:
    """Validate ``data`` as ``model``; on failure raise FileError listing every error."""
    try:
        return model.model_validate(data, context=context)
    except ValidationError as exc:
        problems = [line for error in exc.errors(include_url=False)
                    for line in describe(model, error, text)]
        raise FileError(path, problems) from None


def describe(model: type[BaseModel], error: Any, text: str = "") -> list[str]:
    """Lines for one pydantic error, each ``key.path (line N): what is wrong``."""
    raised = (error.get("ctx") or {}).get("error")
    if isinstance(raised, Problems):
        return [_line(model, (*error["loc"], *sub), message, text)
                for sub, message in raised.problems]
    kind, message, value = error["type"], error["msg"], error.get("input")
    if kind == "extra_forbidden":
        key = str(error["loc"][-1])
        _, allowed = _walk(model, error["loc"])
        what = f'unknown key "{key}"' + (_did_you_mean(key, allowed) or
                                          " (a typo, or not an option of this version)")
    elif kind == "missing":
        what = "missing required key"
    elif kind == "union_tag_invalid":
        tags = re.findall(r"'([^']+)'", message.split("expected tags:")[-1])
        tag = str(value.get("type")) if isinstance(value, dict) else ""
        what = f"{tag!r} is not one of {', '.join(tags)}" + _did_you_mean(tag, tags)
        return [_line(model, (*error["loc"], "type"), what, text)]
    elif kind in ("value_error", "assertion_error"):
        what = message.removeprefix("Value error, ").removeprefix("Assertion failed, ")
    else:
        what = message.replace("Input should be", "should be")
        if not isinstance(value, (dict, list)):
            what += f" (got {value!r})"
    return [_line(model, error["loc"], what, text)]


def _line(model: type[BaseModel], loc: tuple[Any, ...], what: str, text: str) -> str:
    where, _ = _walk(model, loc)
    line = _line_of(text, _keys_only(model, loc))
    return f"{where or '(top level)'}{f' (line {line})' if line else ''}: {what}"


def _did_you_mean(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f'; did you mean "{close[0]}"?' if close else ""


def _walk(model: type[BaseModel], loc: tuple[Any, ...]) -> tuple[str, list[str]]:
    """Follow ``loc`` through the model's annotations.

    Returns the key path as a technician writes it (``devices[2].channels.co``),
    without the discriminator tags pydantic puts in ``loc``, and the keys that
    the model allows at the parent of the last element (for "did you mean").
    """
    path, here = "", model
    allowed: list[str] = []
    for part in loc:
        here = _unwrap(here)
        members = _union_members(here)
        if members and isinstance(part, str):
            tagged = {_tag(member): member for member in members}
            if part in tagged:  # a discriminator tag, not a key
                here = tagged[part]
                continue
        if isinstance(part, int):
            path += f"[{part}]"
            here = _item_type(here)
            continue
        path += f".{part}" if path else str(part)
        if isinstance(here, type) and issubclass(here, BaseModel):
            allowed = list(here.model_fields)
            field = here.model_fields.get(part)
            here = field.annotation if field else None
        elif typing.get_origin(here) in (dict, Mapping):
            allowed = []
            here = typing.get_args(here)[1]
        else:
            here = None
    return path, allowed


def _unwrap(tp: Any) -> Any:
    while typing.get_origin(tp) is typing.Annotated:
        tp = typing.get_args(tp)[0]
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if _is_union(tp) and len(args) == 1:  # Optional[X]
        return _unwrap(args[0])
    return tp


def _is_union(tp: Any) -> bool:
    return typing.get_origin(tp) in (typing.Union, types.UnionType)


def _union_members(tp: Any) -> list[type[BaseModel]]:
    if not _is_union(tp):
        return []
    return [m for m in typing.get_args(tp) if isinstance(m, type) and issubclass(m, BaseModel)]


def _tag(member: type[BaseModel]) -> str:
    field = member.model_fields.get("type")
    args = typing.get_args(field.annotation) if field else ()
    return str(args[0]) if args else member.__name__


def _item_type(tp: Any) -> Any:
    args = typing.get_args(tp)
    return args[0] if typing.get_origin(tp) in (list, tuple) and args else None


def _keys_only(model: type[BaseModel], loc: tuple[Any, ...]) -> tuple[Any, ...]:
    """``loc`` without the discriminator tags pydantic inserts."""
    path, _ = _walk(model, loc)
    return tuple(int(p) if p.isdigit() else p for p in re.findall(r"[^.\[\]]+", path))


def _line_of(text: str, loc: tuple[Any, ...]) -> int | None:
    """The line where ``loc`` is written, found by following it through the text.

    ``("devices", 1, "unit_id")`` finds the second ``[[devices]]`` header, then
    the first ``unit_id =`` after it. Keys written only as part of a dotted
    header (``channels`` in ``[devices.channels.co]``) are skipped. None when
    the last key cannot be found.
    """
    pos, found = 0, False
    for i, part in enumerate(loc):
        if isinstance(part, int):
            continue
        key = re.escape(part)
        index = loc[i + 1] if i + 1 < len(loc) and isinstance(loc[i + 1], int) else None
        if index is not None:
            headers = list(re.finditer(rf"(?m)^[ \t]*\[\[[ \t]*(?:[\w\-]+\.)*{key}[ \t]*\]\]",
                                       text[pos:]))
            if len(headers) > index:
                pos += headers[index].end()
                found = True
                continue
        match = re.search(rf"(?m)(?:^|[{{,])[ \t]*[\"']?{key}[\"']?[ \t]*="
                          rf"|^[ \t]*\[+[^\]\n]*\b{key}[ \t]*\]+", text[pos:])
        found = match is not None
        if match:
            pos += match.end()
            if index is not None:  # an inline array: key = [ {...}, {...} ]
                pos = _inline_item(text, pos, index)
    return text.count("\n", 0, pos) + 1 if found and pos else None


def _inline_item(text: str, pos: int, index: int) -> int:
    """Position of item ``index`` of the inline array starting at ``pos`` (or ``pos``)."""
    depth, items = 0, -1
    for i in range(pos, len(text)):
        char = text[i]
        if char in "[{":
            depth += 1
            if depth == 2:  # an item of the array opens
                items += 1
                if items == index:
                    return i
        elif char in "]}":
            depth -= 1
            if depth == 0:
                break
    return pos
