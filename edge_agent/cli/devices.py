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
from edge_agent.validation import FileError

if TYPE_CHECKING:
    from edge_agent.acquisition.modbus import ModbusTransport
    from edge_agent.profiles import Profile

ModbusBus = ModbusTcpBus | ModbusRtuBus | ModbusRtuOverTcpBus
T = TypeVar("T")

devices_app = typer.Typer(
    no_args_is_help=True,
    help="Commission field devices on a Modbus bus: scan for units, read a device or raw "
         "registers, write a register. Refused while the agent runs with the same config.")

STOP_AGENT = "sudo systemctl stop edge-agent"
SCAN_TIMEOUT_MS = 200  # per silent unit; 247 silent units cost about 50 s
# Modbus application protocol §6: quantity per request.
MAX_COUNT = {"holding": 125, "input": 125, "coil": 2000, "discrete": 2000}
_READ_METHOD = {"holding": "read_holding_registers", "input": "read_input_registers",
                "coil": "read_coils", "discrete": "read_discrete_inputs"}
# What to try next after each Modbus exception code (Modbus application protocol §7).
_ADVICE = {
    1: "the device does not support this function here; check the register map in its manual",
    2: "that address does not exist on the device; check the register map (addresses are "
       "0-based: register 40001 is address 0)",
    3: "the device refused the quantity or value; check the allowed range in its manual",
    4: "the device reports an internal failure; check the device itself (display, fault LED)",
    5: "the device accepted the request but is still working on it; try again in a moment",
    6: "the device is busy; try again in a moment",
    10: "the gateway has no path to that unit; check the gateway's routing settings",
    11: "the gateway got no answer from the unit behind it; check the unit id, the RS-485 "
        "wiring and the gateway's serial settings",
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
        raise typer.BadParameter(f"{text!r} is not a number; give decimal (16) or hex "
                                 "(0x10)") from None


def _address(text: str) -> int:
    address = _number(text)
    if not 0 <= address <= 0xFFFF:
        raise typer.BadParameter(f"{text} is not a Modbus address (0-65535, 0-based)")
    return address


ConfigOpt = Annotated[Path, typer.Option("--config", "-c", help="site config (TOML)",
                                         show_default=False)]
BusOpt = Annotated[str, typer.Option("--bus", "-b", help="bus name from the site config",
                                     show_default=False)]
UnitOpt = Annotated[int, typer.Option("--unit", "-u", min=0, max=255, show_default=False,
                                      help="Modbus unit (slave) id")]
AddressOpt = Annotated[int, typer.Option("--address", "-a", parser=_address, metavar="ADDR",
                                         show_default=False,
                                         help="0-based address (register 40001 is 0); "
                                              "decimal or 0x hex")]
JsonOpt = Annotated[bool, typer.Option("--json", help="print one JSON object instead of a "
                                       "table")]


@contextmanager
def _one_line_errors() -> Iterator[None]:
    """Print a Stop as one red line and exit 1; Ctrl-C exits 130 without a traceback."""
    try:
        yield
    except Stop as exc:
        cli.err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False)
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        cli.err.print("[yellow]interrupted[/]")
        raise typer.Exit(130) from None


# --- config: the bus, the device, the profile ---------------------------------------

def _hint(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f' (did you mean "{close[0]}"?)' if close else ""


def _load(config: Path) -> LoadedConfig:
    """The validated config, once no agent holds its buses."""
    loaded = cli.load_or_exit(config)
    buffer = loaded.site.buffer.path
    try:
        pid = runlock.holder(buffer)
    except OSError as exc:
        raise Stop(f"cannot tell whether an agent runs with {config}: "
                   f"{runlock.lock_path(buffer)}: {exc.strerror}; run this command with "
                   "sudo") from None
    if pid is not None:
        who = f"pid {pid}" if pid > 0 else "another process"
        raise Stop(f"an agent ({who}) runs with {config} (buffer {buffer}) and holds its "
                   f"buses; stop it first with `{STOP_AGENT}`, and start it again when "
                   "you are done")
    return loaded


def _bus(loaded: LoadedConfig, name: str, command: str) -> ModbusBus:
    buses = {b.name: b for b in loaded.site.buses}
    bus = buses.get(name)
    if bus is None:
        raise Stop(f'no bus "{name}" in {loaded.path}{_hint(name, buses)}; its buses are '
                   f'{", ".join(buses)}')
    if isinstance(bus, SerialBus):
        modbus = [b.name for b in loaded.site.buses if not isinstance(b, SerialBus)]
        raise Stop(f'bus "{name}" is a serial bus ({bus.port}): its device speaks its own '
                   f"frames, not Modbus, and devices {command} works on Modbus buses only; "
                   + (f'Modbus buses in this config: {", ".join(modbus)}' if modbus
                      else "this config has no Modbus bus"))
    return bus


def _check_unit(bus: ModbusBus, unit: int, *, writing: bool = False) -> None:
    serial_line = isinstance(bus, ModbusRtuBus | ModbusRtuOverTcpBus)
    if unit == 0 and (writing or serial_line):
        raise Stop("unit 0 is the broadcast address: no device answers it, and a write to "
                   "it reaches every device on the line; give the unit's own id (1-247)")
    if serial_line and unit > 247:
        raise Stop(f"unit {unit} is not a Modbus RTU address (1-247) on {bus.type} bus "
                   f'"{bus.name}"')


def _device(loaded: LoadedConfig, name: str) -> Device:
    devices = {d.name: d for d in loaded.site.devices}
    if name not in devices:
        raise Stop(f'no device "{name}" in {loaded.path}{_hint(name, devices)}; its devices '
                   f'are {", ".join(devices)}')
    return devices[name]


def _configured(loaded: LoadedConfig, bus: ModbusBus) -> dict[int, Device]:
    """The devices the config puts on ``bus``, by unit id."""
    return {d.unit_id: d for d in loaded.site.devices
            if d.bus == bus.name and d.unit_id is not None}


def _profile(loaded: LoadedConfig, name: str) -> Profile:
    library = loaded.profiles
    names = library.names()
    if name not in names:
        raise Stop(f'no profile "{name}" in {library.directory}{_hint(name, names)}; there '
                   f'are: {", ".join(names) or "none"}')
    try:
        profile = library.get(name)
    except FileError as exc:
        more = f" (and {len(exc.problems) - 1} more)" if len(exc.problems) > 1 else ""
        raise Stop(f"profile {name} is invalid: {exc.path}: {exc.problems[0]}{more}; fix the "
                   "file") from None
    if profile.transport != "modbus":
        raise Stop(f"profile {name} speaks {profile.transport}, not Modbus; it cannot be "
                   "read on a Modbus bus")
    return profile


def _where(bus: ModbusBus) -> str:
    if isinstance(bus, ModbusRtuBus):
        return (f'bus "{bus.name}" ({bus.type} {bus.port} {bus.baudrate} '
                f"8{bus.parity}{bus.stopbits})")
    return f'bus "{bus.name}" ({bus.type} {bus.host}:{bus.port})'


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
            return (f"serial port {port} of {_where(bus)} does not exist; plug in the RS-485 "
                    "adapter, or fix the bus's port in the config (ls /dev/serial/by-id/)")
        if not os.access(port, os.R_OK | os.W_OK):
            return (f"no permission to open {port}; add this user to the dialout group "
                    "(sudo usermod -aG dialout $USER, then log in again) or use sudo")
        import serial

        try:
            serial.Serial(port, exclusive=True).close()
        except (serial.SerialException, OSError) as exc:
            if "lock" in str(exc):
                return (f"serial port {port} is busy: another program has it open; find it "
                        f"with `fuser -v {port}`, close it, and try again")
            return f"cannot open serial port {port}: {exc}"
        return f"cannot open serial port {port}; try again"
    timeout = bus.timeout_ms / 1000
    try:
        socket.create_connection((bus.host, bus.port), timeout=timeout).close()
    except socket.gaierror:
        return f"cannot connect to {_where(bus)}: unknown host; check the bus's host"
    except ConnectionRefusedError:
        return (f"cannot connect to {_where(bus)}: connection refused, nothing listens on "
                f"port {bus.port}; check the bus's host and port and that the device or "
                "gateway is on")
    except TimeoutError:
        return (f"cannot connect to {_where(bus)}: no reply within {bus.timeout_ms} ms; "
                f"check the network and the address (ping {bus.host})")
    except OSError as exc:
        return f"cannot connect to {_where(bus)}: {exc.strerror}; check the network"
    return f"cannot connect to {_where(bus)}; try again"


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
    try:
        return await call
    except Refused as exc:
        code = _exception_code(exc)
        if code is None:
            raise Stop(f"unit {unit} on {_where(bus)} gave an unusable answer to {what} "
                       f"({exc}); check that no other device on the bus has unit id "
                       f"{unit}") from None
        advice = _ADVICE.get(code[0], "see the device manual for this code")
        if writing and code[0] in (1, 2):
            advice = ("the device does not accept writes there: the address is read-only or "
                      "not one of its outputs; check the writable registers in its manual")
        elif code[0] == 2 and address >= 40001:
            advice += f"; if you meant register {address}, try --address {address - 40001}"
        raise Stop(f"unit {unit} on {_where(bus)} refused {what}: exception {code[0]} "
                   f"({code[1]}); {advice}") from None
    except NoAnswer as exc:
        code = _exception_code(exc)
        if code is not None:  # 10 or 11: the gateway answered for a unit that did not
            raise Stop(f"unit {unit} on {_where(bus)} did not answer {what}: the gateway "
                       f"said exception {code[0]} ({code[1]}); {_ADVICE[code[0]]}") from None
        if not transport.client.connected and not await transport.client.connect():
            raise Stop(f"lost the connection to {_where(bus)} during {what}: "
                       f"{_unreachable(bus)}") from None
        timeout = device.timeout_ms or bus.timeout_ms
        raise Stop(f"unit {unit} on {_where(bus)} did not answer {what} within {timeout} ms; "
                   f"{next_step}") from None


def _silent_advice(config: Path, bus: ModbusBus) -> str:
    scan = f"edge-agent devices scan --config {config} --bus {bus.name}"
    if isinstance(bus, ModbusRtuBus):
        return (f"check the unit id ({scan}), the A/B wiring and the line settings "
                f"({bus.baudrate} baud, 8{bus.parity}{bus.stopbits})")
    return f"check the unit id ({scan}) and that the device is on behind {bus.host}:{bus.port}"


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
            return "garbled answer (CRC error)"
        if self.state == "silent":
            return "no answer"
        if self.exception is not None:
            return f"exception {self.exception} ({self.exception_name})"
        return "-" if self.value is None else f"{self.value} (0x{self.value:04X})"


def _parse_units(spec: str, bus: ModbusBus) -> list[int]:
    """``1-247``, ``5`` or ``1,3,10-20`` -> the unit ids, in order, each once."""
    units: list[int] = []
    for part in spec.replace(" ", "").split(","):
        match = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if not match:
            raise Stop(f'--units "{spec}": give ids and ranges such as 1-247 or 1,3,10-20')
        low, high = int(match[1]), int(match[2] or match[1])
        if low > high or high > 255:
            raise Stop(f'--units "{spec}": {part} is not a range within 0-255')
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
                raise Stop(f"lost the connection to {_where(bus)} at unit {unit}; "
                           f"{_unreachable(bus)}") from None
            # Silence, or exception 10/11 from a gateway: nobody has this unit id.
        else:
            words = list(response.registers)
            probes.append(Probe(unit, "present", value=words[0] if words else None))
        advance(unit, sum(p.state != "silent" for p in probes))


@devices_app.command(help=(
    "Find the units on a bus: one small read each (holding register 0).\n\n"
    "Any answer, even a Modbus exception, means a device has that unit id; silence within "
    "--timeout-ms means none has. Configured devices that stay silent are listed."))
def scan(config: ConfigOpt,
         bus: BusOpt,
         units: Annotated[str, typer.Option(help="unit ids to probe: 1-247, 5, 1,3,10-20")
                          ] = "1-247",
         timeout_ms: Annotated[int, typer.Option(min=10, max=60_000, help="wait per unit; "
                               "raise it for slow links such as a 4G DTU")
                               ] = SCAN_TIMEOUT_MS,
         as_json: JsonOpt = False) -> None:
    """Find the units on a bus: one small read each; an answer, even an exception, counts."""
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
            cli.out.print(f"Scanning {escape(_where(modbus_bus))}: {len(ids)} unit id(s), "
                          f"{timeout_ms} ms per silent unit (at most "
                          f"{len(ids) * timeout_ms / 1000:.0f} s)", highlight=False)
        progress = Progress(TextColumn("unit {task.fields[unit]:>3}"), BarColumn(),
                            MofNCompleteColumn(), TextColumn("{task.fields[found]} found"),
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
    table = Table("unit", "answer to FC03 @0", "configured as", title_justify="left")
    for row in rows:
        where = (f"{row.device} ({row.profile})" if row.device else "[dim]not in config[/]")
        if row.state == "present":
            table.add_row(str(row.unit_id), escape(row.answer), where)
        elif row.state == "garbled":
            table.add_row(str(row.unit_id), f"[yellow]{row.answer}[/]", where)
        else:
            table.add_row(str(row.unit_id), "[red]no answer[/]", f"{where} [red]missing[/]")
    if rows:
        cli.out.print(table)
    stopped = f" (interrupted after {len(probed)} of {len(ids)})" if interrupted else ""
    listed = f": {', '.join(map(str, present))}" if present else ""
    cli.out.print(f"{len(present)} of {len(probed)} unit id(s) answered{listed}; "
                  f"scanned in {seconds:.1f} s{stopped}", highlight=False)
    missing = [p for p in rows if p.state == "silent"]
    if missing:
        cli.out.print(f"[red]{len(missing)} configured device(s) did not answer:[/] "
                      + ", ".join(f"{p.device} (unit {p.unit_id})" for p in missing),
                      highlight=False)
    if len(present) > 1 and len(present) == len(probed):
        cli.out.print("[yellow]every unit id answered: this is most likely one device that "
                      "ignores the unit id (common for Modbus TCP devices), not many[/]")
    if any(p.state == "garbled" for p in rows):
        cli.out.print("[yellow]garbled answers mean a device is there but the line is "
                      "wrong: check baud rate, parity, A/B wiring and termination[/]")
    if not present and not interrupted:
        check = (f"the wiring (A/B, ground, termination) and the line settings ({bus.baudrate} "
                 f"baud, 8{bus.parity}{bus.stopbits})" if isinstance(bus, ModbusRtuBus)
                 else f"that {bus.host}:{bus.port} is the device or gateway, and for a slow "
                      "link (DTU, 4G) a longer --timeout-ms such as 1000")
        cli.out.print(f"[red]nothing answered:[/] check {check}", highlight=False)


# --- read -----------------------------------------------------------------------------

@devices_app.command(help=(
    "Read a device once with its profile, as the agent does: value, unit and quality.\n\n"
    "Give --device NAME from the config, or --bus, --unit and --profile for a unit the "
    "config does not list yet; options given with --device override its settings."))
def read(config: ConfigOpt,
         device: Annotated[str | None, typer.Option("--device", "-d", show_default=False,
                           help="device name from the site config")] = None,
         bus: Annotated[str | None, typer.Option("--bus", "-b", show_default=False,
                        help="bus name (default: the device's)")] = None,
         unit: Annotated[int | None, typer.Option("--unit", "-u", min=0, max=255,
                         show_default=False, help="unit id (default: the device's)")] = None,
         profile: Annotated[str | None, typer.Option("--profile", "-p", show_default=False,
                            help="profile from drivers/ (default: the configured "
                                 "device's)")] = None,
         as_json: JsonOpt = False) -> None:
    """Read a device once with its profile and print every published value."""
    with _one_line_errors():
        loaded = _load(config)
        named = _device(loaded, device) if device else None
        bus_name = bus or (named.bus if named else None)
        if bus_name is None:
            names = ", ".join(d.name for d in loaded.site.devices)
            raise Stop(f"give --device NAME (one of {names}), or --bus, --unit and --profile")
        modbus_bus = _bus(loaded, bus_name, "read")
        unit_id = unit if unit is not None else (named.unit_id if named else None)
        if unit_id is None:
            raise Stop(f"give --unit: the Modbus unit id to read on bus {bus_name}")
        _check_unit(modbus_bus, unit_id)
        if named is not None and (named.bus, named.unit_id) != (bus_name, unit_id):
            named = named.model_copy(update={"name": f"unit-{unit_id}"})  # moved: its profile
        target = named or _configured(loaded, modbus_bus).get(unit_id)
        profile_name = profile or (target.profile if target else None)
        if profile_name is None:
            raise Stop(f"no device is configured at unit {unit_id} on bus {bus_name}; give "
                       f"--profile (one of {', '.join(loaded.profiles.names())})")
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
                                   what=f"a read of {block.function} {span} (profile "
                                        f"{chosen.name})",
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
        table = Table("value", "reading", "unit", "quality", "description",
                      title=f"{target.name}: unit {unit_id} on {_where(modbus_bus)}, profile "
                            f"{chosen.name}, read in {took * 1000:.0f} ms",
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


@devices_app.command("read-registers", help=(
    "Read raw registers or bits of a unit: each word in decimal and hex.\n\n"
    "Words are named where the profile of the device configured at that unit names them."))
def read_registers(config: ConfigOpt,
                   bus: BusOpt,
                   unit: UnitOpt,
                   address: AddressOpt,
                   count: Annotated[int, typer.Option("--count", "-n", min=1, max=2000,
                                    help="how many registers (at most 125) or bits")] = 1,
                   function: Annotated[RegisterTable, typer.Option(
                       "--function", "-f", help="Modbus table: holding (FC03), input (FC04), "
                       "coil (FC01) or discrete (FC02)")] = RegisterTable.HOLDING,
                   as_json: JsonOpt = False) -> None:
    """Read raw registers or bits of a unit, for commissioning."""
    with _one_line_errors():
        loaded = _load(config)
        modbus_bus = _bus(loaded, bus, "read-registers")
        _check_unit(modbus_bus, unit)
        table_name = function.value
        if count > MAX_COUNT[table_name]:
            raise Stop(f"--count {count}: one {table_name} read returns at most "
                       f"{MAX_COUNT[table_name]}; read in several parts")
        if address + count > 0x10000:
            raise Stop(f"--address {address} + --count {count} passes the last address "
                       "65535")
        bits = table_name in ("coil", "discrete")
        target = _probe_device(modbus_bus, unit)
        what = f"{table_name} {address}" + (f"-{address + count - 1}" if count > 1 else "")
        next_step = _silent_advice(config, modbus_bus)

        async def work(transport: ModbusTransport) -> list[int]:
            call = transport.request(target, _READ_METHOD[table_name], address, count=count)
            response = await _ask(transport, target, call, what=f"a read of {what}",
                                  address=address, next_step=next_step)
            values = response.bits if bits else response.registers
            if len(values) < count:
                raise Stop(f"unit {unit} returned {len(values)} of {count} values; the "
                           "device or gateway truncates the answer, read fewer at a time")
            return [int(v) for v in values[:count]]

        values = _session(modbus_bus, work)
        if as_json:
            _print_json({"bus": modbus_bus.name, "unit_id": unit, "function": table_name,
                         "address": address, "count": count, "values": values})
            return
        names = _names_at(_configured(loaded, modbus_bus).get(unit), loaded, table_name)
        columns = ["address", "hex", "value"] if bits else ["address", "hex", "value",
                                                            "value hex", "int16"]
        table = Table(*columns, "name", title=f"unit {unit} on {_where(modbus_bus)}: "
                      f"{table_name} {address} ({count})", title_justify="left")
        for offset, value in enumerate(values):
            at = address + offset
            cells = [str(at), f"0x{at:04X}", str(value)]
            if not bits:
                cells += [f"0x{value:04X}", str(value - 0x10000 if value & 0x8000 else value)]
            table.add_row(*cells, escape(names.get(at, "")))
        cli.out.print(table)


# --- write ----------------------------------------------------------------------------

@devices_app.command("write-register", help=(
    "Write one holding register or coil, then read it back.\n\n"
    "Asks first unless --yes: a write can switch a relay or change a device setting."))
def write_register(config: ConfigOpt,
                   bus: BusOpt,
                   unit: UnitOpt,
                   address: AddressOpt,
                   value: Annotated[int, typer.Option("--value", "-v", parser=_number,
                                    metavar="VALUE", show_default=False,
                                    help="holding: 0-65535 (or -32768..-1 as int16); "
                                         "coil: 0 or 1")],
                   function: Annotated[WritableTable, typer.Option(
                       "--function", "-f", help="holding register (FC06) or coil (FC05)")
                   ] = WritableTable.HOLDING,
                   yes: Annotated[bool, typer.Option("--yes", "-y", help="do not ask for "
                                  "confirmation")] = False) -> None:
    """Write one holding register or coil (after confirmation), then read it back."""
    with _one_line_errors():
        loaded = _load(config)
        modbus_bus = _bus(loaded, bus, "write-register")
        _check_unit(modbus_bus, unit, writing=True)
        if function is WritableTable.COIL and value not in (0, 1):
            raise Stop(f"--value {value}: a coil is 0 (off) or 1 (on)")
        if function is WritableTable.HOLDING and not -0x8000 <= value <= 0xFFFF:
            raise Stop(f"--value {value}: a register holds 0-65535 (or -32768..32767 as "
                       "int16)")
        word = value & 0xFFFF
        known = _configured(loaded, modbus_bus).get(unit)
        what = (f"{'holding register' if function is WritableTable.HOLDING else 'coil'} "
                f"{address} (0x{address:04X})")
        if not yes:
            _confirm(loaded, known, function.value, address, word, unit, what, modbus_bus)
        target = _probe_device(modbus_bus, unit)
        next_step = ("the write may or may not have been applied; read it back with "
                     f"edge-agent devices read-registers, and "
                     f"{_silent_advice(config, modbus_bus)}")

        async def work(transport: ModbusTransport) -> int | str:
            from edge_agent.acquisition import NoAnswer, Refused

            method = "write_coil" if function is WritableTable.COIL else "write_register"
            kwargs: dict[str, Any] = {"value": bool(word) if function is WritableTable.COIL
                                      else word}
            await _ask(transport, target, transport.request(target, method, address, **kwargs),
                       what=f"the write of {word} to {what}", address=address,
                       next_step=next_step, writing=True)
            try:
                back = await transport.request(target, _READ_METHOD[function.value], address,
                                               count=1)
            except (NoAnswer, Refused) as exc:
                return str(exc)
            values = back.bits if function is WritableTable.COIL else back.registers
            return int(values[0]) if len(values) else "empty answer"

        back = _session(modbus_bus, work)
        cli.out.print(f"[green]wrote[/] {word} to {what} of unit {unit} on "
                      f"{escape(_where(modbus_bus))}", highlight=False)
        if isinstance(back, str):
            cli.out.print(f"[yellow]read-back not possible:[/] {escape(back)}", highlight=False)
        elif back == word:
            cli.out.print(f"read back: {back} (0x{back:04X})", highlight=False)
        else:
            cli.out.print(f"[yellow]read back: {back} (0x{back:04X}), not {word}:[/] the "
                          "device changed or ignored the value; check its manual",
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
                state = {output.on: "on", output.off: "off"}.get(word, "neither on nor off,")
                note = (f" This is output {output.name} of {known.name}: {word} switches it "
                        f"{state} (on = {output.on}, off = {output.off}).")
            elif reading is not None:
                note = (f" This is the reading {reading} of {known.name}, not one of its "
                        "outputs; the device will probably refuse.")
    cli.err.print(f"[bold yellow]About to write {word} (0x{word:04X}) to {what} of unit "
                  f"{unit} on {escape(_where(bus))}.[/]{escape(note)} A write can switch a "
                  "relay or change a device setting.", highlight=False)
    try:
        confirmed = typer.confirm("Write it?", default=False, err=True)
    except typer.Abort:  # no terminal to answer on (EOF)
        confirmed = False
    if not sys.stdin.isatty():
        cli.err.print()  # the answer was not echoed: end the prompt's line
    if not confirmed:
        raise Stop("nothing written; answer y, or pass --yes to write without asking")
