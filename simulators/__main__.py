"""Serve simulated devices until Ctrl-C: Modbus TCP, Modbus RTU on a serial line, RTU
framed over TCP, or a frame or text-line device on a serial line.

    python -m simulators --scenario confined_space --tcp 5020 --units 1 2
    python -m simulators --profile generic_4gas --rtu /dev/ttyUSB1 --baudrate 19200
    python -m simulators --scenario confined_space --pty --units 1 2 --timeline
    python -m simulators --scenario winsen_ze03_co --pty

``--pty`` makes a socat pseudo-terminal pair and prints the end to give the agent
(``port`` of a modbus-rtu bus). ``--timeline`` replays the scenario's timeline;
``--inject NAME --after S`` starts one hazard S seconds in.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import threading

from edge_agent.profiles import ProfileLibrary
from simulators import (
    FrameSimulator,
    LineSimulator,
    ModbusRtuSimulator,
    ModbusTcpSimulator,
    SimulatedDevice,
    load_scenario,
)
from simulators.pty import pty_pair


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m simulators", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--scenario", help="a file in simulators/scenarios/ (name or path)")
    source.add_argument("--profile", help="a profile in drivers/, with no scenario")
    link = parser.add_mutually_exclusive_group()
    link.add_argument("--tcp", type=int, metavar="PORT", help="Modbus TCP on this port "
                      "(the default, on 5020)")
    link.add_argument("--rtu-over-tcp", type=int, metavar="PORT",
                      help="RTU frames over TCP, like a serial device server")
    link.add_argument("--rtu", metavar="TTY", help="a serial line: Modbus RTU, or the "
                      "profile's own frames or lines")
    link.add_argument("--pty", action="store_true", help="the same on a new socat pty pair")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--baudrate", type=int, default=9600)
    parser.add_argument("--line-timing", action="store_true",
                        help="hold each RTU answer as long as a real line at --baudrate would")
    parser.add_argument("--units", type=int, nargs="+", default=[1], help="unit ids to serve")
    parser.add_argument("--timeline", action="store_true", help="replay the scenario's timeline")
    parser.add_argument("--inject", help="a hazard of the scenario to start")
    parser.add_argument("--after", type=float, default=10.0, help="seconds before --inject")
    args = parser.parse_args()

    if args.scenario:
        scenario, profile = load_scenario(args.scenario)
    else:
        scenario, profile = None, ProfileLibrary().get(args.profile)
    devices = [SimulatedDevice(profile, unit, scenario, seed=unit) for unit in args.units]
    if args.inject:
        hazards = devices[0].scenario.hazards
        if args.inject not in hazards:
            parser.error(f"--inject {args.inject}: the scenario has {', '.join(hazards) or 'none'}")
        timer = threading.Timer(args.after, lambda: [d.inject(args.inject) for d in devices])
        timer.daemon = True
        timer.start()
    if args.timeline:
        for device in devices:
            device.start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with contextlib.ExitStack() as stack:
        if args.pty:
            args.rtu, agent_end = stack.enter_context(pty_pair())
            print(f"agent side of the line: {agent_end}", flush=True)
        if args.rtu and profile.transport != "modbus":
            if len(devices) > 1:
                parser.error("a frame or line device has a serial line to itself: one unit")
            kind = FrameSimulator if profile.transport == "frame" else LineSimulator
            server = kind(devices[0], args.rtu, baudrate=args.baudrate)
        elif args.rtu:
            server = ModbusRtuSimulator(devices, args.rtu, baudrate=args.baudrate,
                                        line_timing=args.line_timing)
        elif profile.transport != "modbus":
            parser.error(f"{profile.name} speaks {profile.transport} on a serial line: "
                         "use --rtu TTY or --pty")
        else:
            port = args.rtu_over_tcp or args.tcp or 5020
            server = ModbusTcpSimulator(devices, host=args.host, port=port,
                                        framing="rtu" if args.rtu_over_tcp else "socket")
        stack.enter_context(server)
        print(f"serving {profile.name} as unit(s) {args.units} on {args.rtu or server}",
              flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            stop.wait()


if __name__ == "__main__":
    main()
