"""Serve simulated devices over Modbus TCP until Ctrl-C.

    python -m simulators --scenario confined_space --port 5020 --units 1 2
    python -m simulators --profile generic_4gas --port 5020   # clean air, zeros

``--inject NAME --after S`` starts one of the scenario's hazards S seconds in.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import threading

from edge_agent.profiles import ProfileLibrary
from simulators import ModbusTcpSimulator, SimulatedDevice, load_scenario


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m simulators", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--scenario", help="a file in simulators/scenarios/ (name or path)")
    source.add_argument("--profile", help="a profile in drivers/, with no scenario")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5020)
    parser.add_argument("--units", type=int, nargs="+", default=[1], help="unit ids to serve")
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
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with ModbusTcpSimulator(devices, host=args.host, port=args.port):
        print(f"serving {profile.name} as unit(s) {args.units} on {args.host}:{args.port}",
              flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            stop.wait()


if __name__ == "__main__":
    main()
