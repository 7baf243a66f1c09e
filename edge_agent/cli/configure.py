"""``edge-agent config``: check, show, compare, edit, migrate and apply site configs.

Every change goes through the daemon's own loader before it touches a file, and a
file is replaced atomically with the old one kept beside it (``.previous``), so a
mistyped value never leaves a gateway without a valid config. ``apply`` hands a
new config to the running agent, which switches to it and rolls back by itself if
its devices stop answering (the platform's set-config, the same code path).
"""

from __future__ import annotations

import difflib
import json
import os
import tempfile
from pathlib import Path
from typing import Annotated, Any

import tomlkit
import typer
from rich.markup import escape
from rich.table import Table
from tomlkit.exceptions import TOMLKitError

from edge_agent import cli
from edge_agent.config import LoadedConfig, Mqtt, load_config, migrate, replace_config
from edge_agent.validation import FileError

config_app = typer.Typer(no_args_is_help=True, help="Check, show, compare, edit, migrate and "
                                                      "apply site configs.")
ConfigArg = Annotated[Path, typer.Argument(help="site config (TOML)")]


def _notes(loaded: LoadedConfig) -> None:
    if loaded.notes:
        cli.err.print(f"[yellow]{loaded.path} is in an older format; upgraded in memory:[/]")
        for note in loaded.notes:
            cli.err.print(f"  [yellow]-[/] {escape(note)}", highlight=False)
        cli.err.print(f"write it with: edge-agent config migrate {loaded.path}")


@config_app.command("validate")
def validate(path: ConfigArg) -> None:
    """Check a site config with the daemon's own loader; list every problem."""
    loaded = cli.load_or_exit(path)
    _notes(loaded)
    site = loaded.site
    if site.mqtt.tls == "off":
        cli.err.print(f"[yellow]warning:[/] mqtt.tls is off: data, commands and the password "
                      f"travel unencrypted to {escape(_brokers(site.mqtt))}", highlight=False)
    if path.stat().st_mode & 0o004:
        cli.err.print(f"[yellow]warning:[/] {path} can be read by every user; run chmod o-rwx "
                      "on it (install sets 0640)", highlight=False)
    rules = loaded.channels()
    cli.out.print(f"[green]OK[/] {path}: gateway {site.gateway_id}, site {site.site_id}, "
                  f"{len(site.buses)} bus(es), {len(site.devices)} device(s), {len(rules)} "
                  f"channels, {sum(len(r.limits) for r in rules)} alarm limits, config hash "
                  f"{loaded.hash[:12]}", highlight=False)


def _effective(loaded: LoadedConfig) -> dict[str, Any]:
    """The config as the agent runs it: every default filled in, limits in force."""
    return {**loaded.site.model_dump(mode="json", exclude={"devices"}),
            "devices": [{**d.model_dump(mode="json"), "limits_in_force": {
                r.point.name: [limit.model_dump(mode="json", exclude_defaults=True)
                               for limit in r.limits]
                for r in loaded.channels() if r.device.name == d.name}}
                for d in loaded.site.devices]}


def _setpoint(limit: dict[str, Any]) -> str:
    side = "above" if limit.get("above") is not None else "below"
    return f"L{limit['level']} {side} {limit[side]}"


@config_app.command("show")
def show(config: cli.ConfigOption, as_json: cli.JsonOption = False) -> None:
    """The config as the agent runs it, defaults filled in: the limits in force first."""
    loaded = cli.load_or_exit(config)
    if as_json:
        cli.out.print_json(data=_effective(loaded))
        return
    site = loaded.site
    table = Table(title=f"{site.gateway_id} at {site.site_id}: limits in force",
                  title_justify="left")
    for column in ("channel", "unit", "limits", "from"):
        table.add_column(column)
    for rules in loaded.channels():
        own = rules.device.channels.get(rules.point.name)
        source = "config" if own and own.limits is not None else "defaults"
        limits = ", ".join(_setpoint(x.model_dump(mode="json")) for x in rules.limits) or "-"
        table.add_row(escape(rules.channel), escape(rules.point.unit), escape(limits), source)
    cli.out.print(table)
    for bus in site.buses:
        devices = ", ".join(d.name for d in site.devices if d.bus == bus.name)
        cli.out.print(f"bus {bus.name} ({bus.type}): {devices}", highlight=False)
    mqtt = site.mqtt
    cli.out.print(f"uplink {_brokers(mqtt)}, TLS {mqtt.tls}, MQTT "
                  f"{mqtt.protocol}; buffer {site.buffer.path}; config hash "
                  f"{loaded.hash[:12]}", highlight=False)


def _changes(old: Any, new: Any, where: str = "") -> list[tuple[str, Any, Any]]:
    """Differences between two effective configs; list items are matched by name."""
    if isinstance(old, dict) and isinstance(new, dict):
        return [change for key in sorted(set(old) | set(new), key=str)
                for change in _changes(old.get(key), new.get(key),
                                       f"{where}.{key}" if where else str(key))]
    named = (isinstance(old, list) and isinstance(new, list) and
             all(isinstance(x, dict) and "name" in x for x in old + new))
    if named and old != new:
        return _changes({x["name"]: x for x in old}, {x["name"]: x for x in new}, where)
    return [] if old == new else [(where, old, new)]


@config_app.command("diff")
def diff(new: Annotated[Path, typer.Argument(help="the proposed config")], config: cli.ConfigOption,
         as_json: cli.JsonOption = False) -> None:
    """What would change if the agent ran NEW instead of --config (defaults included)."""
    current, proposed = cli.load_or_exit(config), cli.load_or_exit(new)
    changes = _changes(_effective(current), _effective(proposed))
    if as_json:
        cli.out.print_json(data=[{"key": k, "from": a, "to": b} for k, a, b in changes])
        return
    if not changes:
        cli.out.print(f"[green]no change[/]: {new} is the same config as {config}")
        return
    for key, before, after in changes:
        cli.out.print(f"{escape(key)}: [red]{escape(json.dumps(before))}[/] -> "
                      f"[green]{escape(json.dumps(after))}[/]", highlight=False)
    cli.out.print(f"{len(changes)} change(s); config hash {current.hash[:12]} -> "
                  f"{proposed.hash[:12]}", highlight=False)


def _value(text: str) -> Any:
    """VALUE as TOML would read it (2.5, true, [1, 2], {a = 1}, "x"), written as the
    technician typed it (inline tables stay inline); else a plain string.
    """
    try:
        return tomlkit.parse(f"v = {text}")["v"]
    except TOMLKitError:
        return text


def _locate(document: Any, key: str) -> tuple[Any, str]:
    """The table holding the last part of ``key``, and that part. Arrays of tables are
    entered by the name of an item: ``devices.gas1.poll_interval_s``.
    """
    *parents, last = key.split(".")
    node = document
    for i, part in enumerate(parents):
        if isinstance(node, list):
            found = [item for item in node if isinstance(item, dict) and item.get("name") == part]
            if not found:
                names = [str(item.get("name")) for item in node]
                close = difflib.get_close_matches(part, names, n=1)
                hint = f'; did you mean "{close[0]}"?' if close else ""
                raise KeyError(f"no item named {part!r} in {'.'.join(parents[:i])}{hint} "
                               f"(names: {', '.join(names)})")
            node = found[0]
        elif isinstance(node, dict):
            if part not in node:
                # Adding tables inside [[arrays]] is where tomlkit can write invalid TOML;
                # a technician adds a table with an editor, and validates.
                raise KeyError(f"there is no table {'.'.join(parents[:i + 1])} yet; add it "
                               "with an editor, then run edge-agent config validate")
            node = node[part]
        else:
            raise KeyError(f"{'.'.join(parents[:i + 1])} is a value, not a table")
    if isinstance(node, list):
        raise KeyError(f"{key} names a list; name one of its items")
    return node, last


def _checked_text(path: Path, text: str) -> LoadedConfig:
    """Validate ``text`` as if it were the file at ``path`` (same directory, same paths)."""
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.check.",
                                   suffix=".toml")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(text)
        return load_config(tmp)
    except FileError as exc:
        problems = [p.replace(tmp, str(path)) for p in exc.problems]
        cli.err.print(f"[bold red]the change would make {path} invalid; nothing was "
                      f"written:[/]")
        for problem in problems:
            cli.err.print(f"  [red]-[/] {escape(problem)}", highlight=False)
        raise typer.Exit(1) from None
    finally:
        os.unlink(tmp)


def _document(path: Path) -> tomlkit.TOMLDocument:
    cli.load_or_exit(path)  # readable and valid before anything is edited
    try:
        return tomlkit.parse(path.read_text(encoding="utf-8"))
    except TOMLKitError as exc:
        cli.fail(f"{path}: {exc}", "fix the TOML syntax first (edge-agent config validate)")


@config_app.command("set")
def set_(key: Annotated[str, typer.Argument(help="dotted key: mqtt.host, "
                                             "devices.gas1.poll_interval_s, ...")],
         value: Annotated[str, typer.Argument(help="a TOML value: 2.5, true, \"text\", "
                                              "[1, 2]")],
         config: cli.ConfigOption) -> None:
    """Change one key; the new file is validated, then written atomically (backup kept)."""
    document = _document(config)
    try:
        table, last = _locate(document, key)
        old = table.get(last)
        table[last] = _value(value)
    except KeyError as exc:
        cli.fail(f"{key}: {exc.args[0]}", "keys are dotted, with array items by name: "
                 "devices.gas1.poll_interval_s, buses.field.timeout_ms, mqtt.host")
    text = tomlkit.dumps(document)
    loaded = _checked_text(config, text)
    backup = replace_config(config, text)
    cli.out.print(f"[green]set[/] {escape(key)}: {escape(json.dumps(_plain(old)))} -> "
                  f"{escape(json.dumps(_plain(table[last])))} in {config} (config hash "
                  f"{loaded.hash[:12]}; the old file is {backup.name})", highlight=False)
    cli.out.print("a running agent keeps its config until you run `edge-agent config apply "
                  f"{config} -c {config}` or restart it", highlight=False)


def _plain(value: Any) -> Any:
    return value.unwrap() if hasattr(value, "unwrap") else value


@config_app.command("migrate")
def migrate_file(path: ConfigArg) -> None:
    """Rewrite an older config in the current format, comments kept (backup kept)."""
    document = _document(path)
    notes = migrate(document, path)
    if not notes:
        cli.out.print(f"[green]{path} is already in the current format[/]")
        return
    text = tomlkit.dumps(document)
    _checked_text(path, text)
    backup = replace_config(path, text)
    for note in notes:
        cli.out.print(f"  - {escape(note)}", highlight=False)
    cli.out.print(f"[green]migrated[/] {path} (the old file is {backup.name})")


@config_app.command("apply")
def apply(new: Annotated[Path, typer.Argument(help="the config to run")],
          config: cli.ConfigOption) -> None:
    """Switch the running agent to NEW; it rolls back if its devices stop answering."""
    from edge_agent.cli.status import ask

    proposed = cli.load_or_exit(new)  # a clear list of problems before the agent is asked
    with cli.err.status("the agent switches and watches its devices answer ..."):
        result = ask(config, "set-config", toml=proposed.path.read_text(encoding="utf-8"),
                     timeout_s=90)
    if not result["applied"]:
        cli.out.print(f"[green]no change[/]: {result['message']}")
        return
    cli.out.print(f"[green]applied[/]: config hash {result['previous_hash'][:12]} -> "
                  f"{result['config_hash'][:12]}; the agent wrote it to {config}, the old one "
                  f"is {Path(result['previous_saved_as']).name}", highlight=False)
    if result["not_answering"]:
        cli.out.print(f"[yellow]not answering (nor before): "
                      f"{', '.join(result['not_answering'])}[/]")


def _brokers(mqtt: Mqtt) -> str:
    return ", ".join(f"{host}:{port}" for host, port in mqtt.brokers)
