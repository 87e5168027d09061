"""Run the emulator: in a background thread (tests, demo, benchmarks) or in the foreground (CLI)."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from types import TracebackType
from typing import Any

import uvicorn

from monitor.errors import MonitorError

from .app import build_app
from .arm import ArmDeployment, ArmFault, ArmModel
from .scenario import Fault, Scenario, load
from .state import Emulator

START_TIMEOUT_S = 10.0
KEEP_ALIVE_S = 240  # Azure's front ends keep idle connections about 4 minutes (uvicorn's default: 5 s)


class _Server(uvicorn.Server):
    """uvicorn without its signal handlers (the thread's owner decides when to stop)."""

    def install_signal_handlers(self) -> None:
        return None


class EmulatorServer:
    """The emulator on ``host:port`` (port 0: a free one) in a thread of its own.

    ``state`` lets a second server (say plain http beside https) serve the same deployments and tokens.
    ``with EmulatorServer(scenario=...) as emu:`` gives ``emu.base_url`` (ending in ``/anthropic/``),
    ``emu.api_key``, ``emu.log()`` and the admin operations as methods.
    """

    def __init__(self, scenario: str | Path | dict[str, Any] | Scenario | None = None,
                 host: str = "127.0.0.1", port: int = 0, *,
                 tls: tuple[str, str] | None = None, state: Emulator | None = None) -> None:
        self.state = state if state is not None else Emulator(load(scenario))  # shared: one over https
        self.host = host
        self._port = port
        self.tls = tls  # (certificate chain file, key file): serve https
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._server: _Server | None = None
        self._started = threading.Event()
        self._error: BaseException | None = None

    # -- lifecycle ------------------------------------------------------------------------------------
    def start(self) -> EmulatorServer:
        self._thread = threading.Thread(target=self._run, name="foundry-emulator", daemon=True)
        self._thread.start()
        if not self._started.wait(START_TIMEOUT_S) or self._error is not None or not self.port:
            self.stop()
            raise MonitorError(f"the emulator could not listen on {self.host}:{self._port}: {self._error}")
        return self

    def stop(self) -> None:
        if self._loop is not None and self._server is not None and self._stopping is not None:
            stopping, server = self._stopping, self._server

            def _stop() -> None:
                stopping.set()
                server.should_exit = True

            try:
                self._loop.call_soon_threadsafe(_stop)
            except RuntimeError:  # the loop is already closed
                pass
        if self._thread is not None:
            self._thread.join(timeout=START_TIMEOUT_S)
            self._thread = None

    def __enter__(self) -> EmulatorServer:
        return self.start()

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # noqa: BLE001 - reported to start()
            self._error = exc
        finally:
            self._started.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        config = uvicorn.Config(build_app(self.state, self._stopping), host=self.host, port=self._port,
                                log_level="warning", access_log=False, lifespan="off",
                                timeout_graceful_shutdown=2, ws="none", timeout_keep_alive=KEEP_ALIVE_S,
                                ssl_certfile=self.tls[0] if self.tls else None,
                                ssl_keyfile=self.tls[1] if self.tls else None)
        self._server = _Server(config)
        serving = asyncio.create_task(self._server.serve())
        while not self._server.started and not serving.done():
            await asyncio.sleep(0.005)
        if self._server.started:
            self._port = self._server.servers[0].sockets[0].getsockname()[1]
        self._started.set()
        try:
            await serving
        finally:
            # a TLS client that left without close_notify keeps its connection past the graceful
            # shutdown: drop what is left, or its transport is only closed (and warned about) at GC
            for conn in list(self._server.server_state.connections):
                transport = getattr(conn, "transport", None)
                if transport is not None:
                    transport.abort()

    # -- addresses ------------------------------------------------------------------------------------
    @property
    def port(self) -> int:
        return self._port

    @property
    def root(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.root}/anthropic/"

    @property
    def api_key(self) -> str:
        return self.state.scenario.api_key

    def identity_env(self) -> dict[str, str]:
        """The env vars azure-identity's ManagedIdentityCredential reads (App Service style)."""
        return {"IDENTITY_ENDPOINT": f"{self.root}/_emulator/identity/token",
                "IDENTITY_HEADER": self.state.scenario.identity.header}

    # -- admin, in-process -----------------------------------------------------------------------------
    def log(self, since: int = 0) -> list[dict[str, Any]]:
        return self.state.log(since)

    def set_faults(self, deployment: str, faults: list[dict[str, Any]]) -> None:
        if not self.state.set_faults(deployment, [Fault.model_validate(f) for f in faults]):
            raise KeyError(deployment)

    def background(self, start: float, end: float) -> int:
        """Log the background traffic of [start, end) (epoch seconds): a compressed period."""
        return self.state.background(start, end)

    def set_azure(self, **changes: Any) -> None:
        """Change how the platform metrics API answers (forbidden, throttle, retry_after, account)."""
        self.state.set_azure(**changes)

    def azure_resource_id(self, subscription: str = "00000000-0000-0000-0000-000000000000",
                          group: str = "rg-emulator") -> str:
        """The ARM resource ID the emulator answers platform metrics for (its `root` is the ARM host)."""
        return (f"/subscriptions/{subscription}/resourceGroups/{group}/providers/"
                f"Microsoft.CognitiveServices/accounts/{self.state.scenario.azure.account}")

    # -- the control plane (ARM), in-process -------------------------------------------------------------
    def arm_put_deployment(self, subscription: str, account: str, name: str, **fields: Any) -> ArmDeployment:
        """Add a deployment to an account, or change some of its fields (version, capacity, state ...)."""
        dep = self.state.arm.put_deployment(subscription, account, name, fields)
        self.state.sync_arm()
        return dep

    def arm_remove_deployment(self, subscription: str, account: str, name: str) -> bool:
        gone = self.state.arm.remove_deployment(subscription, account, name)
        self.state.sync_arm()
        return gone

    def arm_put_model(self, location: str, name: str, version: str, **fields: Any) -> ArmModel:
        return self.state.arm.put_model(location, name, version, fields)

    def arm_fault(self, status: int | None, retry_after: float | None = None) -> None:
        """Every ARM call answers ``status`` (403, 429 ...) until called with None."""
        self.state.arm.fault = None if status is None else ArmFault(status=status, retry_after=retry_after)
