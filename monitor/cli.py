"""The command line: subcommands, exit codes, and the only place that prints for humans.

Exit codes: 0 success, 1 a check or health probe failed, 2 bad input (config, arguments), 3 an
internal error (a bug: the message says so).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence

from . import __version__
from . import config as config_mod
from .durations import format_duration
from .errors import MonitorError

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_BUG = 0, 1, 2, 3

Handler = Callable[[argparse.Namespace], int]


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Handler | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return EXIT_USAGE
    try:
        return handler(args)
    except MonitorError as exc:
        print(f"error: {exc}" if "\n" not in str(exc) else f"error:\n{exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # noqa: BLE001 - last line of defence: no traceback, no secret
        logging.getLogger("monitor").debug("internal error", exc_info=True)
        print(f"internal error: {type(exc).__name__} (please report it; run with --log-level debug for "
              "details)", file=sys.stderr)
        return EXIT_BUG


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="foundry-monitor",
        description="Watch Claude deployments on Microsoft Foundry: send canaries, classify failures, "
        "export telemetry, build reports.",
        epilog="Config: --config PATH, or FOUNDRY_MONITOR_CONFIG, or ./checks.yaml. "
        "Exit codes: 0 ok, 1 a check failed, 2 bad input, 3 internal error.",
    )
    parser.add_argument("--version", action="version", version=f"foundry-monitor {__version__}")
    sub = parser.add_subparsers(title="commands", metavar="COMMAND")

    def command(name: str, help_: str, handler: Handler) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_, description=help_)
        p.add_argument("--config", default=None, metavar="PATH",
                       help="config file (default: $FOUNDRY_MONITOR_CONFIG or ./checks.yaml)")
        p.set_defaults(handler=handler)
        return p

    command("validate", "check the config file and print what would be monitored", cmd_validate)
    for name, help_ in (
        ("run", "run the monitoring daemon"),
        ("check", "send one canary to every deployment and print the results"),
        ("report", "build the rolling report"),
        ("emulator", "run the local Foundry emulator"),
        ("demo", "run the daemon against the emulator, no Azure needed"),
        ("health", "exit 0 when a running daemon answers /healthz"),
    ):
        command(name, help_, _not_yet(name))
    return parser


def _not_yet(name: str) -> Handler:
    def handler(args: argparse.Namespace) -> int:
        print(f"foundry-monitor {name}: not yet available in this version", file=sys.stderr)
        return EXIT_USAGE

    return handler


def load_config(args: argparse.Namespace) -> config_mod.Config:
    return config_mod.load(args.config or config_mod.default_path())


def cmd_validate(args: argparse.Namespace) -> int:
    cfg = load_config(args)
    rows = [("RESOURCE", "DEPLOYMENT", "MODEL", "ENDPOINT", "AUTH", "INTERVAL", "TIMEOUT")]
    for res, dep, s in cfg.targets():
        rows.append((res.name, dep.name, dep.model_id, res.messages_url, _auth_label(res),
                     format_duration(s.interval), format_duration(s.timeout)))
    print(f"{cfg.source}: ok, {len(rows) - 1} deployment(s) in {len(cfg.resources)} resource(s)")
    print(format_table(rows))
    return EXIT_OK


def _auth_label(res: config_mod.Resource) -> str:
    if res.auth is not None and res.auth.entra is not None:
        return "entra" + (" (managed identity)" if res.auth.entra.client_id else "")
    return f"api key ({res.api_key_header})"


def format_table(rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows)
