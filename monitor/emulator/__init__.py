"""A faithful stand-in for Claude on Microsoft Foundry, with fault injection (see README, "Emulator").

``runner.EmulatorServer`` runs it in a thread; ``cli`` is `foundry-monitor emulator`; ``scenario`` is the
YAML format; ``app``/``answers``/``wire`` are the HTTP surface; ``state`` is what it remembers; ``arm`` and
``arm_api`` are its Azure Resource Manager (the control plane).
"""
