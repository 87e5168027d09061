"""`python -m monitor.emulator`: the same as `foundry-monitor emulator`."""

from __future__ import annotations

import sys

from monitor.cli import main

if __name__ == "__main__":
    sys.exit(main(["emulator", *sys.argv[1:]]))
