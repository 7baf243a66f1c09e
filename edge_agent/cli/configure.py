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
from edge_agent.i18n import _
from edge_agent.validation import FileError

config_app = typer.Typer(no_args_is_help=True, help=_("Check, show, compare, edit, migrate "
                                                        "and apply site configs."))
ConfigArg = Annotated[Path, typer.Argument(help=_("site config (TOML)"))]


def _notes(loaded: LoadedConfig) -> None:
    if loaded.notes:
        older = _("{path} is in an older format; upgraded in memory:").format(path=loaded.path)
        cli.err.print(f"[yellow]{older}[/]")
        for note in loaded.notes:
            cli.err.print(f"  [yellow]-[/] {escape(note)}", highlight=False)
        cli.err.print(_("write it with: {command}").format(
            command=f"edge-agent config migrate {loaded.path}"))


@config_app.command("validate", help=_("Check a site config with the daemon's own loader; list "
                                       "every problem."))
def validate(path: ConfigArg) -> None:
    loaded = cli.load_or_exit(path)
    _notes(loaded)
    site = loaded.site
    warning = "[yellow]" + _("warning:") + "[/] "
    if site.mqtt.tls == "off":
        cli.err.print(warning + _("mqtt.tls is off: data, commands and the password travel "
                                  "unencrypted to {brokers}").format(
                                      brokers=escape(_brokers(site.mqtt))), highlight=False)
    if path.stat().st_mode & 0o004:
        cli.err.print(warning + _("{path} can be read by every user; run chmod o-rwx on it "
                                  "(install sets 0640)").format(path=path), highlight=False)
    rules = loaded.channels()
    summary = _("{path}: gateway {gateway}, site {site}, {buses} bus(es), {devices} device(s), "
                "{channels} channels, {limits} alarm limits, config hash {hash}").format(
                    path=path, gateway=site.gateway_id, site=site.site_id, buses=len(site.buses),
                    devices=len(site.devices), channels=len(rules),
                    limits=sum(len(r.limits) for r in rules), hash=loaded.hash[:12])
    cli.out.print("[green]" + _("OK") + f"[/] {summary}", highlight=False)


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


@config_app.command("show", help=_("The config as the agent runs it, defaults filled in: the "
                                   "limits in force first."))
def show(config: cli.ConfigOption, as_json: cli.JsonOption = False) -> None:
    loaded = cli.load_or_exit(config)
    if as_json:
        cli.out.print_json(data=_effective(loaded))
        return
    site = loaded.site
    table = Table(title=_("{gateway} at {site}: limits in force").format(
        gateway=site.gateway_id, site=site.site_id), title_justify="left")
    for column in (_("channel"), _("unit"), _("limits"), _("from")):
        table.add_column(column)
    for rules in loaded.channels():
        own = rules.device.channels.get(rules.point.name)
        source = _("config") if own and own.limits is not None else _("defaults")
        limits = ", ".join(_setpoint(x.model_dump(mode="json")) for x in rules.limits) or "-"
        table.add_row(escape(rules.channel), escape(rules.point.unit), escape(limits), source)
    cli.out.print(table)
    for bus in site.buses:
        devices = ", ".join(d.name for d in site.devices if d.bus == bus.name)
        cli.out.print(_("bus {name} ({type}): {devices}").format(
            name=bus.name, type=bus.type, devices=devices), highlight=False)
    mqtt = site.mqtt
    cli.out.print(_("uplink {brokers}, TLS {tls}, MQTT {protocol}; buffer {buffer}; config hash "
                    "{hash}").format(brokers=_brokers(mqtt), tls=mqtt.tls, protocol=mqtt.protocol,
                                     buffer=site.buffer.path, hash=loaded.hash[:12]),
                  highlight=False)


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


@config_app.command("diff", help=_("What would change if the agent ran NEW instead of --config "
                                   "(defaults included)."))
def diff(new: Annotated[Path, typer.Argument(help=_("the proposed config"))],
         config: cli.ConfigOption, as_json: cli.JsonOption = False) -> None:
    current, proposed = cli.load_or_exit(config), cli.load_or_exit(new)
    changes = _changes(_effective(current), _effective(proposed))
    if as_json:
        cli.out.print_json(data=[{"key": k, "from": a, "to": b} for k, a, b in changes])
        return
    if not changes:
        cli.out.print("[green]" + _("no change") + "[/]: "
                      + _("{new} is the same config as {config}").format(new=new, config=config))
        return
    for key, before, after in changes:
        cli.out.print(f"{escape(key)}: [red]{escape(json.dumps(before))}[/] -> "
                      f"[green]{escape(json.dumps(after))}[/]", highlight=False)
    cli.out.print(_("{n} change(s); config hash {old} -> {new}").format(
        n=len(changes), old=current.hash[:12], new=proposed.hash[:12]), highlight=False)


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
                hint = "; " + _('did you mean "{name}"?').format(name=close[0]) if close else ""
                raise KeyError(_("no item named {name} in {key}{hint} (names: {names})").format(
                    name=repr(part), key=".".join(parents[:i]), hint=hint,
                    names=", ".join(names)))
            node = found[0]
        elif isinstance(node, dict):
            if part not in node:
                # Adding tables inside [[arrays]] is where tomlkit can write invalid TOML;
                # a technician adds a table with an editor, and validates.
                raise KeyError(_("there is no table {key} yet; add it with an editor, then run "
                                 "edge-agent config validate").format(
                                     key=".".join(parents[:i + 1])))
            node = node[part]
        else:
            raise KeyError(_("{key} is a value, not a table").format(
                key=".".join(parents[:i + 1])))
    if isinstance(node, list):
        raise KeyError(_("{key} names a list; name one of its items").format(key=key))
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
        invalid = _("the change would make {path} invalid; nothing was written:").format(
            path=path)
        cli.err.print(f"[bold red]{invalid}[/]")
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
        cli.fail(f"{path}: {exc}", _("fix the TOML syntax first (edge-agent config validate)"))


@config_app.command("set", help=_("Change one key; the new file is validated, then written "
                                  "atomically (backup kept)."))
def set_(key: Annotated[str, typer.Argument(help=_("dotted key: mqtt.host, "
                                               "devices.gas1.poll_interval_s, ..."))],
         value: Annotated[str, typer.Argument(help=_("a TOML value: 2.5, true, \"text\", "
                                                 "[1, 2]"))],
         config: cli.ConfigOption) -> None:
    document = _document(config)
    try:
        table, last = _locate(document, key)
        old = table.get(last)
        table[last] = _value(value)
    except KeyError as exc:
        cli.fail(f"{key}: {exc.args[0]}", _("keys are dotted, with array items by name: "
                                            "devices.gas1.poll_interval_s, "
                                            "buses.field.timeout_ms, mqtt.host"))
    text = tomlkit.dumps(document)
    loaded = _checked_text(config, text)
    backup = replace_config(config, text)
    done = _("{key}: {old} -> {new} in {config} (config hash {hash}; the old file is "
             "{backup})").format(key=escape(key), old=escape(json.dumps(_plain(old))),
                                 new=escape(json.dumps(_plain(table[last]))), config=config,
                                 hash=loaded.hash[:12], backup=backup.name)
    cli.out.print("[green]" + _("set") + f"[/] {done}", highlight=False)
    cli.out.print(_("a running agent keeps its config until you run `{command}` or restart it"
                    ).format(command=f"edge-agent config apply {config} -c {config}"),
                  highlight=False)


def _plain(value: Any) -> Any:
    return value.unwrap() if hasattr(value, "unwrap") else value


@config_app.command("migrate", help=_("Rewrite an older config in the current format, comments "
                                      "kept (backup kept)."))
def migrate_file(path: ConfigArg) -> None:
    document = _document(path)
    notes = migrate(document, path)
    if not notes:
        current = _("{path} is already in the current format").format(path=path)
        cli.out.print(f"[green]{current}[/]")
        return
    text = tomlkit.dumps(document)
    _checked_text(path, text)
    backup = replace_config(path, text)
    for note in notes:
        cli.out.print(f"  - {escape(note)}", highlight=False)
    cli.out.print("[green]" + _("migrated") + "[/] "
                  + _("{path} (the old file is {backup})").format(path=path, backup=backup.name))


@config_app.command("apply", help=_("Switch the running agent to NEW; it rolls back if its "
                                    "devices stop answering."))
def apply(new: Annotated[Path, typer.Argument(help=_("the config to run"))],
          config: cli.ConfigOption) -> None:
    from edge_agent.cli.status import ask

    proposed = cli.load_or_exit(new)  # a clear list of problems before the agent is asked
    with cli.err.status(_("the agent switches and watches its devices answer ...")):
        result = ask(config, "set-config", toml=proposed.path.read_text(encoding="utf-8"),
                     timeout_s=90)
    if not result["applied"]:
        cli.out.print("[green]" + _("no change") + f"[/]: {result['message']}")
        return
    applied = _("config hash {old} -> {new}; the agent wrote it to {config}, the old one is "
                "{backup}").format(old=result["previous_hash"][:12],
                                   new=result["config_hash"][:12], config=config,
                                   backup=Path(result["previous_saved_as"]).name)
    cli.out.print("[green]" + _("applied") + f"[/]: {applied}", highlight=False)
    if result["not_answering"]:
        silent = _("not answering (nor before): {devices}").format(
            devices=", ".join(result["not_answering"]))
        cli.out.print(f"[yellow]{silent}[/]")


def _brokers(mqtt: Mqtt) -> str:
    return ", ".join(f"{host}:{port}" for host, port in mqtt.brokers)
