"""`foundry-monitor emulator`: serve the Foundry emulator in the foreground until Ctrl-C or SIGTERM."""

from __future__ import annotations

import argparse
import signal
import threading
from types import FrameType

from .scenario import load


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to bind (default 127.0.0.1; anything else exposes the emulator)")
    parser.add_argument("--port", type=int, default=8790,
                        help="port to bind (default 8790; 0 picks a free one)")
    parser.add_argument("--scenario", metavar="FILE",
                        help="scenario YAML: deployments, latency, rate limits, faults (default: the four "
                             "catalogue models, healthy)")
    parser.add_argument("--tls", nargs=2, metavar=("CERT", "KEY"),
                        help="serve https with this certificate chain and key (the ARM endpoints need it: "
                             "azure-core sends bearer tokens over https only)")


def main(args: argparse.Namespace) -> int:
    from .runner import EmulatorServer  # uvicorn loads only when the emulator runs

    scenario = load(args.scenario)  # ConfigError (exit 2 in the CLI) before anything listens
    stop = threading.Event()

    def _stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = signal.signal(signal.SIGTERM, _stop)
    try:
        tls = (args.tls[0], args.tls[1]) if getattr(args, "tls", None) else None
        with EmulatorServer(scenario, host=args.host, port=args.port, tls=tls) as emu:
            names = ", ".join(d.name for d in emu.state.current().deployments) or "(none)"
            env = emu.identity_env()
            print(f"Foundry emulator listening on {emu.root}\n"
                  f"  base URL     {emu.base_url}\n"
                  f"  API key      {emu.api_key}\n"
                  f"  deployments  {names}\n"
                  f"  identity     IDENTITY_ENDPOINT={env['IDENTITY_ENDPOINT']} "
                  f"IDENTITY_HEADER={env['IDENTITY_HEADER']}\n"
                  f"  admin        {emu.root}/_emulator/log, /_emulator/scenario\n"
                  + (f"  ARM          {emu.root} ({len(scenario.arm.subscriptions)} subscription(s); "
                     "discovery.arm_endpoint)\n" if scenario.arm.subscriptions else "") +
                  "Ctrl-C stops it.", flush=True)
            try:
                while not stop.wait(0.5):
                    pass
            except KeyboardInterrupt:
                pass
    finally:
        signal.signal(signal.SIGTERM, previous)
    print("emulator stopped", flush=True)
    return 0
