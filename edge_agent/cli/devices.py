"""``edge-agent devices``: commissioning by hand on a Modbus bus: scan it for units,
read a device with its profile, read raw registers, write one register.

These commands open the bus themselves through the agent's own transport, so they
refuse to run while an agent holds it (DESIGN.md: the CLI never opens a bus a
running daemon holds). pymodbus is imported inside the commands, so that
``edge-agent --help`` stays fast.
"""

from __future__ import annotations

import asyncio
import difflib
import json
import os
import re
import socket
import sys
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeVar

import typer
from rich.markup import escape
from rich.table import Table

from edge_agent import cli, runlock  # cli: the package's consoles and config loader
from edge_agent.config import (
    Device,
    LoadedConfig,
    ModbusRtuBus,
    ModbusRtuOverTcpBus,
    ModbusTcpBus,
    SerialBus,
)
from edge_agent.i18n import _
from edge_agent.validation import FileError

if TYPE_CHECKING:
    from edge_agent.acquisition.modbus import ModbusTransport
    from edge_agent.profiles import Profile

ModbusBus = ModbusTcpBus | ModbusRtuBus | ModbusRtuOverTcpBus
T = TypeVar("T")

devices_app = typer.Typer(
    no_args_is_help=True,
    help=_("Commission field devices on a Modbus bus: scan for units, read a device or raw "
           "registers, write a register. Refused while the agent runs with the same config."))

STOP_AGENT = "sudo systemctl stop edge-agent"
SCAN_TIMEOUT_MS = 200  # per silent unit; 247 silent units cost about 50 s
# Modbus application protocol §6: quantity per request.
MAX_COUNT = {"holding": 125, "input": 125, "coil": 2000, "discrete": 2000}
_READ_METHOD = {"holding": "read_holding_registers", "input": "read_input_registers",
                "coil": "read_coils", "discrete": "read_discrete_inputs"}
# What to try next after each Modbus exception code (Modbus application protocol §7).
_ADVICE = {
    1: _("the device does not support this function here; check the register map in its "
         "manual"),
    2: _("that address does not exist on the device; check the register map (addresses are "
         "0-based: register 40001 is address 0)"),
    3: _("the device refused the quantity or value; check the allowed range in its manual"),
    4: _("the device reports an internal failure; check the device itself (display, fault "
         "LED)"),
    5: _("the device accepted the request but is still working on it; try again in a moment"),
    6: _("the device is busy; try again in a moment"),
    10: _("the gateway has no path to that unit; check the gateway's routing settings"),
    11: _("the gateway got no answer from the unit behind it; check the unit id, the RS-485 "
          "wiring and the gateway's serial settings"),
}


class RegisterTable(StrEnum):
    """The four Modbus tables."""

    HOLDING = "holding"
    INPUT = "input"
    COIL = "coil"
    DISCRETE = "discrete"


class WritableTable(StrEnum):
    """The tables a master may write."""

    HOLDING = "holding"
    COIL = "coil"


class Stop(Exception):
    """A foreseeable failure: the message says what happened and what to do next."""


# --- options shared by the commands ------------------------------------------------

def _number(text: str) -> int:
    """An integer in decimal or, as register maps print them, in hex (0x10)."""
    try:
        return int(text, 0)
    except ValueError:
        raise typer.BadParameter(_("{text} is not a number; give decimal (16) or hex (0x10)")
                                 .format(text=repr(text))) from None


def _address(text: str) -> int:
    address = _number(text)
    if not 0 <= address <= 0xFFFF:
        raise typer.BadParameter(_("{text} is not a Modbus address (0-65535, 0-based)")
                                 .format(text=text))
    return address


ConfigOpt = Annotated[Path, typer.Option("--config", "-c", help=_("site config (TOML)"),
                                         show_default=False)]
BusOpt = Annotated[str, typer.Option("--bus", "-b", help=_("bus name from the site config"),
                                     show_default=False)]
UnitOpt = Annotated[int, typer.Option("--unit", "-u", min=0, max=255, show_default=False,
                                      help=_("Modbus unit (slave) id"))]
AddressOpt = Annotated[int, typer.Option("--address", "-a", parser=_address, metavar="ADDR",
                                         show_default=False,
                                         help=_("0-based address (register 40001 is 0); "
                                                "decimal or 0x hex"))]
JsonOpt = Annotated[bool, typer.Option("--json", help=_("print one JSON object instead of a "
                                                        "table"))]


@contextmanager
def _one_line_errors() -> Iterator[None]:
    """Print a Stop as one red line and exit 1; Ctrl-C exits 130 without a traceback."""
    try:
        yield
    except Stop as exc:
        cli.err.print("[bold red]" + _("error:") + f"[/] {escape(str(exc))}", highlight=False)
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        cli.err.print("[yellow]" + _("interrupted") + "[/]")
        raise typer.Exit(130) from None


# --- config: the bus, the device, the profile ---------------------------------------

def _hint(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)
    return " (" + _('did you mean "{name}"?').format(name=close[0]) + ")" if close else ""


def _load(config: Path) -> LoadedConfig:
    """The validated config, once no agent holds its buses."""
    loaded = cli.load_or_exit(config)
    buffer = loaded.site.buffer.path
    try:
        pid = runlock.holder(buffer)
    except OSError as exc:
        raise Stop(_("cannot tell whether an agent runs with {config}: {lock}: {error}; run "
                     "this command with sudo").format(config=config, error=exc.strerror,
                                                      lock=runlock.lock_path(buffer))) from None
    if pid is not None:
        who = f"pid {pid}" if pid > 0 else _("another process")
        raise Stop(_("an agent ({who}) runs with {config} (buffer {buffer}) and holds its "
                     "buses; stop it first with `{command}`, and start it again when you are "
                     "done").format(who=who, config=config, buffer=buffer, command=STOP_AGENT))
    return loaded


def _bus(loaded: LoadedConfig, name: str, command: str) -> ModbusBus:
    buses = {b.name: b for b in loaded.site.buses}
    bus = buses.get(name)
    if bus is None:
        raise Stop(_('no bus "{name}" in {config}{hint}; its buses are {buses}').format(
            name=name, config=loaded.path, hint=_hint(name, buses), buses=", ".join(buses)))
    if isinstance(bus, SerialBus):
        modbus = [b.name for b in loaded.site.buses if not isinstance(b, SerialBus)]
        others = (_("Modbus buses in this config: {buses}").format(buses=", ".join(modbus))
                  if modbus else _("this config has no Modbus bus"))
        raise Stop(_('bus "{name}" is a serial bus ({port}): its device speaks its own frames, '
                     "not Modbus, and devices {command} works on Modbus buses only; {others}"
                     ).format(name=name, port=bus.port, command=command, others=others))
    return bus


def _check_unit(bus: ModbusBus, unit: int, *, writing: bool = False) -> None:
    serial_line = isinstance(bus, ModbusRtuBus | ModbusRtuOverTcpBus)
    if unit == 0 and (writing or serial_line):
        raise Stop(_("unit 0 is the broadcast address: no device answers it, and a write to "
                     "it reaches every device on the line; give the unit's own id (1-247)"))
    if serial_line and unit > 247:
        raise Stop(_('unit {unit} is not a Modbus RTU address (1-247) on {type} bus "{bus}"')
                   .format(unit=unit, type=bus.type, bus=bus.name))


def _device(loaded: LoadedConfig, name: str) -> Device:
    devices = {d.name: d for d in loaded.site.devices}
    if name not in devices:
        raise Stop(_('no device "{name}" in {config}{hint}; its devices are {devices}').format(
            name=name, config=loaded.path, hint=_hint(name, devices),
            devices=", ".join(devices)))
    return devices[name]


def _configured(loaded: LoadedConfig, bus: ModbusBus) -> dict[int, Device]:
    """The devices the config puts on ``bus``, by unit id."""
    return {d.unit_id: d for d in loaded.site.devices
            if d.bus == bus.name and d.unit_id is not None}


def _profile(loaded: LoadedConfig, name: str) -> Profile:
    library = loaded.profiles
    names = library.names()
    if name not in names:
        raise Stop(_('no profile "{name}" in {directory}{hint}; there are: {names}').format(
            name=name, directory=library.directory, hint=_hint(name, names),
            names=", ".join(names) or _("none")))
    try:
        profile = library.get(name)
    except FileError as exc:
        more = (" " + _("(and {n} more)").format(n=len(exc.problems) - 1)
                if len(exc.problems) > 1 else "")
        raise Stop(_("profile {name} is invalid: {path}: {problem}{more}; fix the file").format(
            name=name, path=exc.path, problem=exc.problems[0], more=more)) from None
    if profile.transport != "modbus":
        raise Stop(_("profile {name} speaks {transport}, not Modbus; it cannot be read on a "
                     "Modbus bus").format(name=name, transport=profile.transport))
    return profile


def _where(bus: ModbusBus) -> str:
    named = _('bus "{name}"').format(name=bus.name)
    if isinstance(bus, ModbusRtuBus):
        return f"{named} ({bus.type} {bus.port} {bus.baudrate} 8{bus.parity}{bus.stopbits})"
    return f"{named} ({bus.type} {bus.host}:{bus.port})"


def _line(bus: ModbusRtuBus) -> str:
    """The serial line settings as a technician reads them: ``9600 baud, 8N1``."""
    return f"{bus.baudrate} baud, 8{bus.parity}{bus.stopbits}"


def _probe_device(bus: ModbusBus, unit: int, timeout_ms: int | None = None,
                  name: str | None = None, profile: str = "-") -> Device:
    """A device record for one request to ``unit``, configured or not."""
    return Device(name=name or f"unit-{unit}", bus=bus.name, unit_id=unit, profile=profile,
                  timeout_ms=timeout_ms)


# --- the bus: open, ask, explain ----------------------------------------------------

def _session(bus: ModbusBus, work: Callable[[ModbusTransport], Awaitable[T]]) -> T:
    """Open ``bus`` with the agent's transport, run ``work`` on it, close it."""
    from edge_agent.acquisition.modbus import ModbusTransport

    async def main() -> T:
        transport = ModbusTransport(bus)
        try:
            if not await transport.client.connect():
                raise Stop(_unreachable(bus))
            return await work(transport)
        finally:
            await transport.close()

    return asyncio.run(main())


def _unreachable(bus: ModbusBus) -> str:
    """Why the transport could not open ``bus``: asked again, to name the cause."""
    if isinstance(bus, ModbusRtuBus):
        port = bus.port
        if not os.path.exists(port):
            return _("serial port {port} of {where} does not exist; plug in the RS-485 "
                     "adapter, or fix the bus's port in the config (ls /dev/serial/by-id/)"
                     ).format(port=port, where=_where(bus))
        if not os.access(port, os.R_OK | os.W_OK):
            return _("no permission to open {port}; add this user to the dialout group "
                     "(sudo usermod -aG dialout $USER, then log in again) or use sudo"
                     ).format(port=port)
        import serial

        try:
            serial.Serial(port, exclusive=True).close()
        except (serial.SerialException, OSError) as exc:
            if "lock" in str(exc):
                return _("serial port {port} is busy: another program has it open; find it "
                         "with `fuser -v {port}`, close it, and try again").format(port=port)
            return _("cannot open serial port {port}: {error}").format(port=port, error=exc)
        return _("cannot open serial port {port}; try again").format(port=port)
    timeout = bus.timeout_ms / 1000
    where = _where(bus)
    try:
        socket.create_connection((bus.host, bus.port), timeout=timeout).close()
    except socket.gaierror:
        return _("cannot connect to {where}: unknown host; check the bus's host").format(
            where=where)
    except ConnectionRefusedError:
        return _("cannot connect to {where}: connection refused, nothing listens on port "
                 "{port}; check the bus's host and port and that the device or gateway is on"
                 ).format(where=where, port=bus.port)
    except TimeoutError:
        return _("cannot connect to {where}: no reply within {timeout} ms; check the network "
                 "and the address (ping {host})").format(where=where, timeout=bus.timeout_ms,
                                                         host=bus.host)
    except OSError as exc:
        return _("cannot connect to {where}: {error}; check the network").format(
            where=where, error=exc.strerror)
    return _("cannot connect to {where}; try again").format(where=where)


def _exception_code(error: Exception) -> tuple[int, str] | None:
    """The Modbus exception code and name in a transport error, if it carries one."""
    from edge_agent.acquisition.modbus import EXCEPTIONS

    code = getattr(error, "code", None)
    return (code, EXCEPTIONS.get(code, "unknown")) if code is not None else None


async def _ask(transport: ModbusTransport, device: Device, call: Awaitable[T], *, what: str,
               address: int, next_step: str, writing: bool = False) -> T:
    """Await one transport call; a Stop naming the unit, the answer and the next step if
    it failed.
    """
    from edge_agent.acquisition import NoAnswer, Refused

    bus = transport.bus
    unit = device.unit_id
    where = _where(bus)
    try:
        return await call
    except Refused as exc:
        code = _exception_code(exc)
        if code is None:
            raise Stop(_("unit {unit} on {where} gave an unusable answer to {what} ({error}); "
                         "check that no other device on the bus has unit id {unit}").format(
                             unit=unit, where=where, what=what, error=exc)) from None
        advice = _ADVICE.get(code[0], _("see the device manual for this code"))
        if writing and code[0] in (1, 2):
            advice = _("the device does not accept writes there: the address is read-only or "
                       "not one of its outputs; check the writable registers in its manual")
        elif code[0] == 2 and address >= 40001:
            advice += "; " + _("if you meant register {register}, try --address {address}"
                               ).format(register=address, address=address - 40001)
        raise Stop(_("unit {unit} on {where} refused {what}: exception {code} ({name}); "
                     "{advice}").format(unit=unit, where=where, what=what, code=code[0],
                                        name=code[1], advice=advice)) from None
    except NoAnswer as exc:
        code = _exception_code(exc)
        if code is not None:  # 10 or 11: the gateway answered for a unit that did not
            raise Stop(_("unit {unit} on {where} did not answer {what}: the gateway said "
                         "exception {code} ({name}); {advice}").format(
                             unit=unit, where=where, what=what, code=code[0], name=code[1],
                             advice=_ADVICE[code[0]])) from None
        if not transport.client.connected and not await transport.client.connect():
            raise Stop(_("lost the connection to {where} during {what}: {reason}").format(
                where=where, what=what, reason=_unreachable(bus))) from None
        timeout = device.timeout_ms or bus.timeout_ms
        raise Stop(_("unit {unit} on {where} did not answer {what} within {timeout} ms; "
                     "{next_step}").format(unit=unit, where=where, what=what, timeout=timeout,
                                           next_step=next_step)) from None


def _silent_advice(config: Path, bus: ModbusBus) -> str:
    scan = f"edge-agent devices scan --config {config} --bus {bus.name}"
    if isinstance(bus, ModbusRtuBus):
        return _("check the unit id ({scan}), the A/B wiring and the line settings ({line})"
                 ).format(scan=scan, line=_line(bus))
    return _("check the unit id ({scan}) and that the device is on behind {address}").format(
        scan=scan, address=f"{bus.host}:{bus.port}")


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.10g}"


def _print_json(document: dict[str, Any]) -> None:
    typer.echo(json.dumps(document))


# --- scan -----------------------------------------------------------------------------

@dataclass
class Probe:
    """What one unit said to the scan's probe (FC03, address 0, count 1)."""

    unit_id: int
    state: Literal["present", "garbled", "silent"]
    value: int | None = None
    exception: int | None = None
    exception_name: str | None = None
    device: str | None = None
    profile: str | None = None

    @property
    def answer(self) -> str:
        if self.state == "garbled":
            return _("garbled answer (CRC error)")
        if self.state == "silent":
            return _("no answer")
        if self.exception is not None:
            return _("exception {code} ({name})").format(code=self.exception,
                                                         name=self.exception_name)
        return "-" if self.value is None else f"{self.value} (0x{self.value:04X})"


def _parse_units(spec: str, bus: ModbusBus) -> list[int]:
    """``1-247``, ``5`` or ``1,3,10-20`` -> the unit ids, in order, each once."""
    units: list[int] = []
    for part in spec.replace(" ", "").split(","):
        match = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if not match:
            raise Stop(_('--units "{spec}": give ids and ranges such as 1-247 or 1,3,10-20')
                       .format(spec=spec))
        low, high = int(match[1]), int(match[2] or match[1])
        if low > high or high > 255:
            raise Stop(_('--units "{spec}": {part} is not a range within 0-255').format(
                spec=spec, part=part))
        units += range(low, high + 1)
    for unit in units:
        _check_unit(bus, unit)
    return list(dict.fromkeys(units))


async def _scan(transport: ModbusTransport, units: list[int], timeout_ms: int,
                probes: list[Probe], advance: Callable[[int, int], None]) -> None:
    """Probe every unit once, in order; append what each said to ``probes``."""
    from edge_agent.acquisition import NoAnswer, Refused

    bus = transport.bus
    for unit in units:
        device = _probe_device(bus, unit, timeout_ms)
        crc_errors = transport.stats.crc_errors
        try:
            response = await transport.request(device, "read_holding_registers", 0, count=1)
        except Refused as exc:
            # An exception reply is an answer: someone has this unit id.
            code = _exception_code(exc)
            probes.append(Probe(unit, "present", exception=code[0] if code else None,
                                exception_name=code[1] if code else str(exc)))
        except NoAnswer:
            if transport.stats.crc_errors > crc_errors:
                probes.append(Probe(unit, "garbled"))
            elif not transport.client.connected and not await transport.client.connect():
                raise Stop(_("lost the connection to {where} at unit {unit}; {reason}").format(
                    where=_where(bus), unit=unit, reason=_unreachable(bus))) from None
            # Silence, or exception 10/11 from a gateway: nobody has this unit id.
        else:
            words = list(response.registers)
            probes.append(Probe(unit, "present", value=words[0] if words else None))
        advance(unit, sum(p.state != "silent" for p in probes))


@devices_app.command(help=_(
    "Find the units on a bus: one small read each (holding register 0).\n\n"
    "Any answer, even a Modbus exception, means a device has that unit id; silence within "
    "--timeout-ms means none has. Configured devices that stay silent are listed."))
def scan(config: ConfigOpt,
         bus: BusOpt,
         units: Annotated[str, typer.Option(help=_("unit ids to probe: 1-247, 5, 1,3,10-20"))
                          ] = "1-247",
         timeout_ms: Annotated[int, typer.Option(min=10, max=60_000, help=_(
             "wait per unit; raise it for slow links such as a 4G DTU"))] = SCAN_TIMEOUT_MS,
         as_json: JsonOpt = False) -> None:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    with _one_line_errors():
        loaded = _load(config)
        modbus_bus = _bus(loaded, bus, "scan")
        ids = _parse_units(units, modbus_bus)
        configured = _configured(loaded, modbus_bus)
        probes: list[Probe] = []
        probed: list[int] = []  # every unit asked so far, answered or not
        if not as_json:
            cli.out.print(_("Scanning {where}: {n} unit id(s), {timeout} ms per silent unit "
                            "(at most {seconds} s)").format(
                                where=escape(_where(modbus_bus)), n=len(ids), timeout=timeout_ms,
                                seconds=f"{len(ids) * timeout_ms / 1000:.0f}"), highlight=False)
        progress = Progress(TextColumn(_("unit {unit}").format(unit="{task.fields[unit]:>3}")),
                            BarColumn(), MofNCompleteColumn(),
                            TextColumn(_("{found} found").format(found="{task.fields[found]}")),
                            TimeRemainingColumn(), console=cli.err, transient=True,
                            disable=not cli.err.is_terminal)
        task = progress.add_task("scan", total=len(ids), unit=ids[0], found=0)

        def advance(unit: int, found: int) -> None:
            probed.append(unit)
            progress.update(task, advance=1, unit=unit, found=found)

        started = time.monotonic()
        interrupted = False
        try:
            with progress:
                _session(modbus_bus, lambda t: _scan(t, ids, timeout_ms, probes, advance))
        except KeyboardInterrupt:
            interrupted = True  # show what was found so far
        seconds = time.monotonic() - started
        _report_scan(loaded, modbus_bus, ids, probed, probes, configured, seconds, timeout_ms,
                     as_json=as_json, interrupted=interrupted)
        if interrupted:
            raise typer.Exit(130)


def _report_scan(loaded: LoadedConfig, bus: ModbusBus, ids: list[int], probed: list[int],
                 probes: list[Probe], configured: dict[int, Device], seconds: float,
                 timeout_ms: int, *, as_json: bool, interrupted: bool) -> None:
    """The scan's table (or JSON): units that answered, and configured ones that did not."""
    heard = {p.unit_id for p in probes}
    rows = probes + [Probe(u, "silent") for u in configured if u in probed and u not in heard]
    rows.sort(key=lambda p: p.unit_id)
    for row in rows:
        if row.unit_id in configured:
            device = configured[row.unit_id]
            row.device, row.profile = device.name, device.profile
    present = [p.unit_id for p in rows if p.state != "silent"]
    if as_json:
        _print_json({"bus": bus.name, "type": bus.type, "probed": len(probed),
                     "timeout_ms": timeout_ms, "seconds": round(seconds, 3),
                     "interrupted": interrupted, "answered": present,
                     "units": [asdict(r) for r in rows]})
        return
    # "unit" is the Modbus unit id here: not translated, as the same word is a value's
    # unit (ppm) in the read table.
    table = Table("unit", _("answer to FC03 @0"), _("configured as"), title_justify="left")
    for row in rows:
        where = (f"{row.device} ({row.profile})" if row.device
                 else "[dim]" + _("not in config") + "[/]")
        if row.state == "present":
            table.add_row(str(row.unit_id), escape(row.answer), where)
        elif row.state == "garbled":
            table.add_row(str(row.unit_id), f"[yellow]{row.answer}[/]", where)
        else:
            table.add_row(str(row.unit_id), f"[red]{row.answer}[/]",
                          f"{where} [red]" + _("missing") + "[/]")
    if rows:
        cli.out.print(table)
    stopped = (" " + _("(interrupted after {n} of {total})").format(n=len(probed), total=len(ids))
               if interrupted else "")
    listed = f": {', '.join(map(str, present))}" if present else ""
    cli.out.print(_("{n} of {total} unit id(s) answered{listed}; scanned in {seconds} s"
                    "{stopped}").format(n=len(present), total=len(probed), listed=listed,
                                        seconds=f"{seconds:.1f}", stopped=stopped),
                  highlight=False)
    missing = [p for p in rows if p.state == "silent"]
    if missing:
        silent = _("{n} configured device(s) did not answer:").format(n=len(missing))
        cli.out.print(f"[red]{silent}[/] " + ", ".join(
            _("{device} (unit {unit})").format(device=p.device, unit=p.unit_id)
            for p in missing), highlight=False)
    if len(present) > 1 and len(present) == len(probed):
        cli.out.print("[yellow]" + _("every unit id answered: this is most likely one device "
                                     "that ignores the unit id (common for Modbus TCP "
                                     "devices), not many") + "[/]")
    if any(p.state == "garbled" for p in rows):
        cli.out.print("[yellow]" + _("garbled answers mean a device is there but the line is "
                                     "wrong: check baud rate, parity, A/B wiring and "
                                     "termination") + "[/]")
    if not present and not interrupted:
        check = (_("check the wiring (A/B, ground, termination) and the line settings ({line})"
                   ).format(line=_line(bus)) if isinstance(bus, ModbusRtuBus)
                 else _("check that {address} is the device or gateway, and for a slow link "
                        "(DTU, 4G) a longer --timeout-ms such as 1000").format(
                            address=f"{bus.host}:{bus.port}"))
        cli.out.print("[red]" + _("nothing answered:") + f"[/] {check}", highlight=False)


# --- read -----------------------------------------------------------------------------

@devices_app.command(help=_(
    "Read a device once with its profile, as the agent does: value, unit and quality.\n\n"
    "Give --device NAME from the config, or --bus, --unit and --profile for a unit the "
    "config does not list yet; options given with --device override its settings."))
def read(config: ConfigOpt,
         device: Annotated[str | None, typer.Option("--device", "-d", show_default=False,
                           help=_("device name from the site config"))] = None,
         bus: Annotated[str | None, typer.Option("--bus", "-b", show_default=False,
                        help=_("bus name (default: the device's)"))] = None,
         unit: Annotated[int | None, typer.Option("--unit", "-u", min=0, max=255,
                         show_default=False, help=_("unit id (default: the device's)"))] = None,
         profile: Annotated[str | None, typer.Option("--profile", "-p", show_default=False,
                            help=_("profile from drivers/ (default: the configured "
                                   "device's)"))] = None,
         as_json: JsonOpt = False) -> None:
    with _one_line_errors():
        loaded = _load(config)
        named = _device(loaded, device) if device else None
        bus_name = bus or (named.bus if named else None)
        if bus_name is None:
            names = ", ".join(d.name for d in loaded.site.devices)
            raise Stop(_("give --device NAME (one of {names}), or --bus, --unit and --profile")
                       .format(names=names))
        modbus_bus = _bus(loaded, bus_name, "read")
        unit_id = unit if unit is not None else (named.unit_id if named else None)
        if unit_id is None:
            raise Stop(_("give --unit: the Modbus unit id to read on bus {bus}").format(
                bus=bus_name))
        _check_unit(modbus_bus, unit_id)
        if named is not None and (named.bus, named.unit_id) != (bus_name, unit_id):
            named = named.model_copy(update={"name": f"unit-{unit_id}"})  # moved: its profile
        target = named or _configured(loaded, modbus_bus).get(unit_id)
        profile_name = profile or (target.profile if target else None)
        if profile_name is None:
            profiles = ", ".join(loaded.profiles.names())
            raise Stop(_("no device is configured at unit {unit} on bus {bus}; give --profile "
                         "(one of {profiles})").format(unit=unit_id, bus=bus_name,
                                                       profiles=profiles))
        chosen = _profile(loaded, profile_name)
        target = _probe_device(modbus_bus, unit_id, target.timeout_ms if target else None,
                               name=target.name if target else None, profile=chosen.name)
        next_step = _silent_advice(config, modbus_bus)

        async def work(transport: ModbusTransport) -> tuple[dict[str, float], float]:
            # The agent's own read, one block at a time, so a failure names its block.
            started = time.monotonic()
            raw: dict[str, float] = {}
            for block in transport.plan(target, chosen).blocks:
                span = f"{block.address}-{block.address + block.count - 1}"
                words = await _ask(transport, target, transport.transact(target, block),
                                   what=_("a read of {registers} (profile {profile})").format(
                                       registers=f"{block.function} {span}",
                                       profile=chosen.name),
                                   address=block.address, next_step=next_step)
                raw.update(block.raw(words))
            return raw, time.monotonic() - started

        raw, took = _session(modbus_bus, work)
        values = chosen.interpret(raw)
        if as_json:
            _print_json({"device": target.name, "bus": modbus_bus.name, "unit_id": unit_id,
                         "profile": chosen.name, "values": {
                             point.name: {"value": values[point.name][0], "unit": point.unit,
                                          "quality": values[point.name][1].label}
                             for point in chosen.channels}})
            return
        table = Table(_("value"), _("reading"), _("unit"), _("quality"), _("description"),
                      title=_("{device}: unit {unit} on {where}, profile {profile}, read in "
                              "{ms} ms").format(device=target.name, unit=unit_id,
                                                where=_where(modbus_bus), profile=chosen.name,
                                                ms=f"{took * 1000:.0f}"),
                      title_justify="left")
        for point in chosen.channels:
            value, quality = values[point.name]
            colour = {"good": "green", "out_of_range": "yellow"}.get(quality.label, "red")
            table.add_row(point.name, _fmt(value), escape(point.unit),
                          f"[{colour}]{quality.label}[/]", escape(point.description))
        cli.out.print(table)


# --- raw registers --------------------------------------------------------------------

def _names_at(known: Device | None, loaded: LoadedConfig, function: str) -> dict[int, str]:
    """Address -> value name in the configured device's profile (for the table)."""
    if known is None:
        return {}
    try:
        profile = loaded.profiles.get(known.profile)
    except FileError:
        return {}
    names: dict[int, str] = {}
    for reg in profile.registers:
        if reg.function.value == function:
            for i in range(reg.count):
                part = f" ({i + 1}/{reg.count})" if reg.count > 1 else ""
                names.setdefault(reg.address + i, f"{reg.name}{part}")
    return names


@devices_app.command("read-registers", help=_(
    "Read raw registers or bits of a unit: each word in decimal and hex.\n\n"
    "Words are named where the profile of the device configured at that unit names them."))
def read_registers(config: ConfigOpt,
                   bus: BusOpt,
                   unit: UnitOpt,
                   address: AddressOpt,
                   count: Annotated[int, typer.Option("--count", "-n", min=1, max=2000,
                                    help=_("how many registers (at most 125) or bits"))] = 1,
                   function: Annotated[RegisterTable, typer.Option(
                       "--function", "-f", help=_("Modbus table: holding (FC03), input (FC04), "
                                                  "coil (FC01) or discrete (FC02)"))
                   ] = RegisterTable.HOLDING,
                   as_json: JsonOpt = False) -> None:
    with _one_line_errors():
        loaded = _load(config)
        modbus_bus = _bus(loaded, bus, "read-registers")
        _check_unit(modbus_bus, unit)
        table_name = function.value
        if count > MAX_COUNT[table_name]:
            raise Stop(_("--count {count}: one {table} read returns at most {most}; read in "
                         "several parts").format(count=count, table=table_name,
                                                 most=MAX_COUNT[table_name]))
        if address + count > 0x10000:
            raise Stop(_("--address {address} + --count {count} passes the last address 65535")
                       .format(address=address, count=count))
        bits = table_name in ("coil", "discrete")
        target = _probe_device(modbus_bus, unit)
        what = f"{table_name} {address}" + (f"-{address + count - 1}" if count > 1 else "")
        next_step = _silent_advice(config, modbus_bus)

        async def work(transport: ModbusTransport) -> list[int]:
            call = transport.request(target, _READ_METHOD[table_name], address, count=count)
            response = await _ask(transport, target, call,
                                  what=_("a read of {registers}").format(registers=what),
                                  address=address, next_step=next_step)
            values = response.bits if bits else response.registers
            if len(values) < count:
                raise Stop(_("unit {unit} returned {n} of {count} values; the device or "
                             "gateway truncates the answer, read fewer at a time").format(
                                 unit=unit, n=len(values), count=count))
            return [int(v) for v in values[:count]]

        values = _session(modbus_bus, work)
        if as_json:
            _print_json({"bus": modbus_bus.name, "unit_id": unit, "function": table_name,
                         "address": address, "count": count, "values": values})
            return
        names = _names_at(_configured(loaded, modbus_bus).get(unit), loaded, table_name)
        columns = [_("address"), _("hex"), _("value")]
        if not bits:
            columns += [_("value hex"), "int16"]
        title = _("unit {unit} on {where}: {registers}").format(
            unit=unit, where=_where(modbus_bus), registers=f"{table_name} {address} ({count})")
        table = Table(*columns, _("name"), title=title, title_justify="left")
        for offset, value in enumerate(values):
            at = address + offset
            cells = [str(at), f"0x{at:04X}", str(value)]
            if not bits:
                cells += [f"0x{value:04X}", str(value - 0x10000 if value & 0x8000 else value)]
            table.add_row(*cells, escape(names.get(at, "")))
        cli.out.print(table)


# --- write ----------------------------------------------------------------------------

@devices_app.command("write-register", help=_(
    "Write one holding register or coil, then read it back.\n\n"
    "Asks first unless --yes: a write can switch a relay or change a device setting."))
def write_register(config: ConfigOpt,
                   bus: BusOpt,
                   unit: UnitOpt,
                   address: AddressOpt,
                   value: Annotated[int, typer.Option("--value", "-v", parser=_number,
                                    metavar="VALUE", show_default=False,
                                    help=_("holding: 0-65535 (or -32768..-1 as int16); "
                                           "coil: 0 or 1"))],
                   function: Annotated[WritableTable, typer.Option(
                       "--function", "-f", help=_("holding register (FC06) or coil (FC05)"))
                   ] = WritableTable.HOLDING,
                   yes: Annotated[bool, typer.Option("--yes", "-y", help=_(
                       "do not ask for confirmation"))] = False) -> None:
    with _one_line_errors():
        loaded = _load(config)
        modbus_bus = _bus(loaded, bus, "write-register")
        _check_unit(modbus_bus, unit, writing=True)
        if function is WritableTable.COIL and value not in (0, 1):
            raise Stop(_("--value {value}: a coil is 0 (off) or 1 (on)").format(value=value))
        if function is WritableTable.HOLDING and not -0x8000 <= value <= 0xFFFF:
            raise Stop(_("--value {value}: a register holds 0-65535 (or -32768..32767 as "
                         "int16)").format(value=value))
        word = value & 0xFFFF
        known = _configured(loaded, modbus_bus).get(unit)
        what = (_("holding register {address} ({hex})") if function is WritableTable.HOLDING
                else _("coil {address} ({hex})")).format(address=address, hex=f"0x{address:04X}")
        if not yes:
            _confirm(loaded, known, function.value, address, word, unit, what, modbus_bus)
        target = _probe_device(modbus_bus, unit)
        next_step = _("the write may or may not have been applied; read it back with "
                      "edge-agent devices read-registers, and {advice}").format(
                          advice=_silent_advice(config, modbus_bus))

        async def work(transport: ModbusTransport) -> int | str:
            from edge_agent.acquisition import NoAnswer, Refused

            method = "write_coil" if function is WritableTable.COIL else "write_register"
            kwargs: dict[str, Any] = {"value": bool(word) if function is WritableTable.COIL
                                      else word}
            await _ask(transport, target, transport.request(target, method, address, **kwargs),
                       what=_("the write of {value} to {what}").format(value=word, what=what),
                       address=address, next_step=next_step, writing=True)
            try:
                back = await transport.request(target, _READ_METHOD[function.value], address,
                                               count=1)
            except (NoAnswer, Refused) as exc:
                return str(exc)
            values = back.bits if function is WritableTable.COIL else back.registers
            return int(values[0]) if len(values) else _("empty answer")

        back = _session(modbus_bus, work)
        wrote = _("{value} to {what} of unit {unit} on {where}").format(
            value=word, what=what, unit=unit, where=escape(_where(modbus_bus)))
        cli.out.print("[green]" + _("wrote") + f"[/] {wrote}", highlight=False)
        if isinstance(back, str):
            cli.out.print("[yellow]" + _("read-back not possible:") + f"[/] {escape(back)}",
                          highlight=False)
        elif back == word:
            cli.out.print(_("read back: {value} ({hex})").format(value=back, hex=f"0x{back:04X}"),
                          highlight=False)
        else:
            differs = _("read back: {value} ({hex}), not {word}:").format(
                value=back, hex=f"0x{back:04X}", word=word)
            cli.out.print(f"[yellow]{differs}[/] "
                          + _("the device changed or ignored the value; check its manual"),
                          highlight=False)


def _confirm(loaded: LoadedConfig, known: Device | None, function: str, address: int,
             word: int, unit: int, what: str, bus: ModbusBus) -> None:
    """Say what the write touches and ask; Stop unless the technician says yes."""
    note = ""
    if known is not None:
        try:
            profile = loaded.profiles.get(known.profile)
        except FileError:
            profile = None
        if profile is not None:
            output = next((o for o in profile.outputs
                           if (o.function, o.address) == (function, address)), None)
            reading = next((r.name for r in profile.registers
                            if (r.function.value, r.address) == (function, address)), None)
            if output is not None:
                state = {output.on: _("on"), output.off: _("off")}.get(
                    word, _("neither on nor off,"))
                note = " " + _("This is output {output} of {device}: {word} switches it {state} "
                               "(on = {on}, off = {off}).").format(
                                   output=output.name, device=known.name, word=word,
                                   state=state, on=output.on, off=output.off)
            elif reading is not None:
                note = " " + _("This is the reading {reading} of {device}, not one of its "
                               "outputs; the device will probably refuse.").format(
                                   reading=reading, device=known.name)
    about = _("About to write {word} ({hex}) to {what} of unit {unit} on {where}.").format(
        word=word, hex=f"0x{word:04X}", what=what, unit=unit, where=escape(_where(bus)))
    cli.err.print(f"[bold yellow]{about}[/]{escape(note)} "
                  + _("A write can switch a relay or change a device setting."), highlight=False)
    try:
        confirmed = typer.confirm(_("Write it?"), default=False, err=True)
    except typer.Abort:  # no terminal to answer on (EOF)
        confirmed = False
    if not sys.stdin.isatty():
        cli.err.print()  # the answer was not echoed: end the prompt's line
    if not confirmed:
        raise Stop(_("nothing written; answer y, or pass --yes to write without asking"))
