"""Soak: a day of compressed time. N deployments at a short interval against the emulator, whose faults
cycle through 24 phases (calm, flaky 5xx, a 429 storm, hangs, broken streams, resets, an outage,
expired Entra tokens, ...), the daemon as a separate process (its RSS, descriptors and threads are its
own) exporting telemetry to an Application Insights stand-in. Every sample (a minute by default) prints
the daemon's RSS, open file descriptors, threads, CPU, canaries, states and telemetry received; at the
end, whether RSS, descriptors and threads stayed flat after warm-up (the warm-up sample against the
last one, with the growth in %). Not part of CI; it never fails on figures.

Warm-up is one pass of the whole fault cycle at 20 s a phase before the compressed day starts. Each phase
faults the same deployments every time it comes round, so after that pass the daemon has met every
(deployment, failure kind) the day will bring. This matters for memory: every combination is a new
metric series (duration, TTFT and result counts per deployment and kind), which OpenTelemetry keeps
for the life of the process, about 11 KB per deployment and kind for each metric reader. Series are
bounded by deployments x kinds but, met one by one, they would read as slow growth for hours. The
`series` column (samples in /metrics) shows whether new ones still appear after warm-up.

    .venv/bin/python bench/soak.py                       # 100 deployments at 1 s for an hour
    .venv/bin/python bench/soak.py --duration 300s       # a short run
    .venv/bin/python bench/soak.py --deployments 200 --interval 2s --duration 2h --sample 5m

asyncio tasks are not exposed by the daemon (`/status` has no such figure), so threads
(/proc/PID/task) are what is tracked besides RSS and descriptors.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from monitor.config.durations import format_duration, parse_duration

ROOT = Path(__file__).resolve().parent.parent
API_KEY = "soak-key"
IDENTITY_HEADER = "soak-identity-header"
TICKS = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def names(n: int) -> list[str]:
    return [f"dep-{i:04d}" for i in range(n)]


# --- the compressed day: one phase per "hour" -----------------------------------------------------------

Faults = list[dict[str, Any]]


@dataclass(frozen=True)
class Phase:
    name: str
    share: float  # of the deployments, chosen anew each phase
    faults: Faults
    expire_tokens: bool = False


PHASES = [
    Phase("calm", 0.0, []),
    Phase("flaky 5xx", 0.2, [{"kind": "api_error", "rate": 0.3}]),
    Phase("429 storm", 0.1, [{"kind": "rate_limit", "retry_after": 5}]),
    Phase("hangs", 0.05, [{"kind": "hang"}]),
    Phase("broken streams", 0.1, [{"kind": "stream_error", "rate": 0.5},
                                  {"kind": "truncated_stream", "rate": 0.5}]),
    Phase("resets", 0.05, [{"kind": "reset", "rate": 0.5}]),
    Phase("outage", 0.03, [{"kind": "unavailable"}]),
    Phase("expired tokens", 0.0, [], expire_tokens=True),
    Phase("overloaded", 0.1, [{"kind": "overloaded", "rate": 0.5}]),
    Phase("bad answers", 0.05, [{"kind": "malformed_json", "rate": 0.5}, {"kind": "huge_body", "rate": 0.2}]),
    Phase("auth trouble", 0.03, [{"kind": "permission_denied"}]),
    Phase("gateway timeouts", 0.05, [{"kind": "gateway_timeout", "rate": 0.5}]),
]


class Emulator:
    """The emulator in its own process, driven through its admin API."""

    def __init__(self, deployments: list[str], tmp: Path) -> None:
        scenario = {"api_key": API_KEY, "seed": 1, "identity": {"header": IDENTITY_HEADER},
                    "deployments": [{"name": n, "model": "claude-haiku-4-5-20251001",
                                     "latency": {"base": "10ms", "jitter": "10ms"}, "ttft": "5ms",
                                     "tokens_per_second": 500} for n in deployments]}
        path = tmp / "scenario.json"
        path.write_text(json.dumps(scenario))
        self.port = free_port()
        self.root = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen([sys.executable, "-m", "monitor.emulator", "--port", str(self.port),
                                      "--scenario", str(path)], stdout=subprocess.DEVNULL,
                                     stderr=(tmp / "emulator.log").open("wb"))
        self.client = httpx.Client(base_url=self.root, timeout=10)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                self.client.get("/_emulator/scenario")
                return
            except httpx.HTTPError:
                time.sleep(0.1)
        self.stop()
        raise SystemExit("the emulator did not start within 20 s")

    @property
    def base_url(self) -> str:
        return f"{self.root}/anthropic/"

    def identity_env(self) -> dict[str, str]:
        return {"IDENTITY_ENDPOINT": f"{self.root}/_emulator/identity/token",
                "IDENTITY_HEADER": IDENTITY_HEADER}

    def set_faults(self, deployment: str, faults: Faults) -> None:
        self.client.put(f"/_emulator/deployments/{deployment}/faults", json=faults).raise_for_status()

    def expire_tokens(self) -> None:
        self.client.post("/_emulator/identity/expire").raise_for_status()

    def drain_log(self) -> int:
        """Requests served since the last call (the log is emptied so the emulator's memory stays flat)."""
        entries = self.client.get("/_emulator/log").json()
        self.client.delete("/_emulator/log")
        return len(entries)

    def stop(self) -> None:
        self.client.close()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()


class FaultCycle:
    """The phases in order, first once at `warm_phase_s` each (the warm-up pass), then at `phase_s`."""

    def __init__(self, emu: Emulator, deployments: list[str], phase_s: float,
                 warm_phase_s: float = 0.0) -> None:
        self.emu, self.deployments, self.phase_s, self.warm_phase_s = emu, deployments, phase_s, warm_phase_s
        self.warm_s = warm_phase_s * len(PHASES)
        self.index = -1
        self.faulted: set[str] = set()
        self.started = time.monotonic()

    def tick(self) -> Phase | None:
        """Switch to the next phase when its time has come; returns the new phase."""
        elapsed = time.monotonic() - self.started
        if elapsed < self.warm_s:
            index = int(elapsed // self.warm_phase_s)
        else:
            index = len(PHASES) + int((elapsed - self.warm_s) // self.phase_s)
        if index == self.index:
            return None
        self.index = index
        position = index % len(PHASES)
        phase = PHASES[position]
        count = round(phase.share * len(self.deployments))
        # a different slice for each phase (incidents open and close), the same one each time it comes round
        start = (position * 7) % len(self.deployments)
        chosen = {self.deployments[(start + k) % len(self.deployments)] for k in range(count)}
        for name in self.faulted - chosen:
            self.emu.set_faults(name, [])
        for name in chosen:
            self.emu.set_faults(name, phase.faults)
        self.faulted = chosen
        if phase.expire_tokens:
            self.emu.expire_tokens()
        return phase


# --- the daemon and what it costs ------------------------------------------------------------------------


def config_text(emu: Emulator, deployments: list[str], interval: str, data: Path, ingestion: str,
                entra_share: float) -> str:
    n_entra = max(1, round(entra_share * len(deployments))) if entra_share > 0 else 0
    keyed, entra = deployments[n_entra:], deployments[:n_entra]

    def block(deps: list[str]) -> str:
        return "\n".join(f"      - {{name: {d}, model: claude-haiku-4-5}}" for d in deps)

    text = (f"data_dir: {json.dumps(str(data))}\nlog_level: warning\n"
            f"defaults: {{interval: {interval}, timeout: 800ms, confirm: 1, confirm_interval: 200ms}}\n"
            f"telemetry: {{connection_string: {json.dumps(ingestion)}, export_interval: 15s}}\n"
            "server: {port: 0}\n"
            f"resources:\n  - name: soak\n    base_url: {emu.base_url}\n    auth: {{api_key: {API_KEY}}}\n"
            f"    deployments:\n{block(keyed)}\n")
    if entra:
        text += (f"  - name: soak-entra\n    base_url: {emu.base_url}\n    auth: {{entra: {{}}}}\n"
                 f"    deployments:\n{block(entra)}\n")
    return text


@dataclass
class Sample:
    t: float
    rss_mb: float
    fds: int
    threads: int
    cpu_pct: float
    canaries: int
    served: int
    envelopes: int
    store_mb: float
    series: int = 0
    states: dict[str, int] = field(default_factory=dict)
    incidents: int = 0
    phase: str = ""


class Proc:
    """What /proc says about one process."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self._cpu = self.cpu_s()
        self._at = time.monotonic()

    def rss_mb(self) -> float:
        with open(f"/proc/{self.pid}/statm") as fh:
            return int(fh.read().split()[1]) * PAGE / 1e6

    def fds(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def threads(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/task"))

    def cpu_s(self) -> float:
        with open(f"/proc/{self.pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime

    def cpu_pct(self) -> float:
        cpu, at = self.cpu_s(), time.monotonic()
        pct = (cpu - self._cpu) / max(at - self._at, 1e-9) * 100
        self._cpu, self._at = cpu, at
        return pct


def status(port: int) -> dict[str, Any] | None:
    try:
        r = httpx.get(f"http://127.0.0.1:{port}/status", timeout=10)
    except httpx.HTTPError:
        return None
    return dict(r.json()) if r.status_code == 200 else None


def metric_samples(port: int) -> int:
    """Samples in the Prometheus exposition: one per series (and per bucket of a histogram)."""
    try:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    except httpx.HTTPError:
        return 0
    return sum(1 for line in text.splitlines() if line and not line.startswith("#"))


def growth(first: float, last: float) -> float:
    return (last - first) / first * 100 if first else float("nan")


RSS_FLAT_PCT = 5.0  # the daemon benchmark's target for RSS growth after its first minute


def report(samples: list[Sample], warmup_s: float) -> None:
    if len(samples) < 2:
        print("too few samples to judge growth")
        return
    base = next((s for s in samples if s.t >= warmup_s), samples[len(samples) // 2])
    last = samples[-1]
    if base is last:
        base = samples[-2]
    rss, threads = growth(base.rss_mb, last.rss_mb), last.threads - base.threads
    peak = max(s.rss_mb for s in samples)
    after = [s for s in samples if s.t >= base.t]
    print()
    print(f"after warm-up: sample at {format_duration(round(base.t))} against the last at "
          f"{format_duration(round(last.t))}")
    print(f"{'figure':28} {'warm-up':>10} {'last':>10} {'growth':>10}  verdict")
    # pooled connections come and go with the faults (up to 64 per resource): descriptors count as flat
    # while the last sample is within 10 of the highest seen in the warm-up sample and before
    fd_ceiling = max(s.fds for s in samples if s.t <= base.t) + 10
    rows: list[tuple[str, float, float, str, bool]] = [
        ("RSS (MB)", base.rss_mb, last.rss_mb, f"{rss:+.1f}%", rss < RSS_FLAT_PCT),
        ("open file descriptors", base.fds, last.fds, f"{growth(base.fds, last.fds):+.1f}%",
         last.fds <= fd_ceiling),
        ("threads", base.threads, last.threads, f"{growth(base.threads, last.threads):+.1f}%", threads <= 2),
    ]
    for name, a, b, g, flat in rows:
        print(f"{name:28} {a:10.1f} {b:10.1f} {g:>10}  {'flat' if flat else 'GROWING'}")
    print(f"{'metric samples (series)':28} {base.series:10d} {last.series:10d} "
          f"{growth(base.series, last.series):+9.1f}%  (new series cost memory: see the docstring)")
    print(f"{'peak RSS (MB)':28} {peak:10.1f}")
    print(f"{'fds after warm-up min/max':28} {min(s.fds for s in after):10d} {max(s.fds for s in after):10d}")
    slope = 0.0
    if len(after) > 2:  # least squares over the samples after warm-up, MB per hour
        xs, ys = [s.t for s in after], [s.rss_mb for s in after]
        mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
        den = sum((x - mx) ** 2 for x in xs)
        slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / den * 3600 if den else 0.0
        print(f"{'RSS trend after warm-up':28} {slope:+10.2f} MB/h")
    print("verdict:", "flat" if all(r[4] for r in rows) else "NOT flat (see GROWING above)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", default="3600s",
                    help="real time to run (default 3600s; e.g. 300s, 10m, 2h)")
    ap.add_argument("--deployments", type=int, default=100)
    ap.add_argument("--interval", default="1s", help="canary interval (default 1s)")
    ap.add_argument("--sample", default="60s", help="time between samples (default 60s)")
    ap.add_argument("--phase", default=None,
                    help="how long each fault phase lasts (default: duration / 24, one compressed hour)")
    ap.add_argument("--warmup-phase", default="20s",
                    help="length of each phase in the warm-up pass before the day (default 20s; 0s skips it)")
    ap.add_argument("--settle", default="2m",
                    help="growth is measured from the first sample this long after the warm-up pass "
                         "(default 2m)")
    ap.add_argument("--entra-share", type=float, default=0.1,
                    help="share of deployments probed with Entra tokens from the emulator (default 0.1)")
    ap.add_argument("--data-dir", default=None, help="keep the store, daemon log and telemetry here")
    args = ap.parse_args()
    duration, sample_s = parse_duration(args.duration), parse_duration(args.sample)
    phase_s = parse_duration(args.phase) if args.phase else duration / 24
    warm_phase_s = parse_duration(args.warmup_phase)
    warm_pass_s = warm_phase_s * len(PHASES)
    warmup_s = warm_pass_s + min(parse_duration(args.settle), duration / 2)
    sys.path.insert(0, str(ROOT))
    from tests.capture import CaptureServer

    keep = args.data_dir is not None
    work = Path(args.data_dir) if keep else Path(tempfile.mkdtemp(prefix="foundry-monitor-soak-"))
    work.mkdir(parents=True, exist_ok=True)
    deployments = names(args.deployments)
    emu = Emulator(deployments, work)
    cap = CaptureServer().start()
    cfg = work / "checks.yaml"
    cfg.write_text(config_text(emu, deployments, args.interval, work / "data", cap.connection_string,
                               args.entra_share))
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AZURE_", "MSI_", "APPLICATIONINSIGHTS_",
                                                                    "OTEL_EXPORTER"))}
    env |= emu.identity_env()
    log = (work / "daemon.log").open("wb")
    daemon = subprocess.Popen([sys.executable, "-m", "monitor", "run", "--config", str(cfg), "--port",
                               str(port), "--log-format", "json"], stdout=log, stderr=subprocess.STDOUT,
                              env=env, cwd=ROOT)
    print(f"soak: {args.deployments} deployments every {args.interval} for {format_duration(duration)} "
          f"after a warm-up pass of {format_duration(round(warm_pass_s))}, fault phases of "
          f"{format_duration(round(phase_s))}, samples every {format_duration(sample_s)}; "
          f"daemon pid {daemon.pid}, work dir {work}", flush=True)
    cycle = FaultCycle(emu, deployments, phase_s, warm_phase_s)
    proc = Proc(daemon.pid)
    samples: list[Sample] = []
    stopping = False

    def interrupted(signum: int, frame: Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, interrupted)
    signal.signal(signal.SIGTERM, interrupted)
    print(f"{'time':>6} {'RSS MB':>8} {'fds':>5} {'thr':>4} {'CPU%':>6} {'canaries':>9} {'served':>7} "
          f"{'envel.':>7} {'store MB':>8} {'series':>7} {'incid.':>6}  states / phase", flush=True)
    started = time.monotonic()
    last_counts = 0
    next_sample = started + sample_s
    phase = ""

    def envelopes() -> int:
        with cap._lock:  # the bench keeps counts, not envelopes: its own memory stays flat
            n = len(cap.envelopes)
            cap.envelopes.clear()
            cap.requests.clear()
        return n

    end = started + warm_pass_s + duration
    try:
        while not stopping and daemon.poll() is None:
            switched = cycle.tick()
            if switched is not None:
                phase = switched.name
            now = time.monotonic()
            if now >= next_sample or now >= end:  # and one last sample at the end
                next_sample += sample_s
                st = status(port) or {}
                counts = sum(d["counts"]["canaries"] for d in st.get("deployments", []))
                states = Counter(d["state"] for d in st.get("deployments", []))
                store = sum(p.stat().st_size for p in (work / "data").glob("results.sqlite3*"))
                s = Sample(now - started, proc.rss_mb(), proc.fds(), proc.threads(), proc.cpu_pct(),
                           counts - last_counts, emu.drain_log(), envelopes(), store / 1e6,
                           metric_samples(port), dict(states), len(st.get("open_incidents", [])),
                           phase + (" (warm-up)" if now - started < warm_pass_s else ""))
                last_counts = counts
                samples.append(s)
                tally = " ".join(f"{k}={v}" for k, v in sorted(s.states.items()))
                print(f"{format_duration(round(s.t)):>6} {s.rss_mb:8.1f} {s.fds:5d} {s.threads:4d} "
                      f"{s.cpu_pct:6.1f} {s.canaries:9d} {s.served:7d} {s.envelopes:7d} {s.store_mb:8.1f} "
                      f"{s.series:7d} {s.incidents:6d}  {tally} / {s.phase}", flush=True)
                if now >= end:
                    break
            time.sleep(min(1.0, max(0.0, min(next_sample, end) - time.monotonic())))
    finally:
        code: int | None = daemon.poll()
        took = 0.0
        if code is None:
            daemon.send_signal(signal.SIGTERM)
            t0 = time.monotonic()
            try:
                code = daemon.wait(30)
            except subprocess.TimeoutExpired:
                daemon.kill()
                code = daemon.wait(10)
            took = time.monotonic() - t0
        log.close()
        emu.stop()
        cap.stop()
    how = f"after SIGTERM, {took:.1f} s" if took else "on its own"
    print(f"\ndaemon exit code {code} ({how})")
    report(samples, warmup_s)
    tail = (work / "daemon.log").read_text(errors="replace").splitlines()
    stopped = [line for line in tail if '"event": "stopped"' in line]
    if stopped:
        print("stopped:", json.loads(stopped[-1]).get("results_written"), "results written in the last run")
    errors = [line for line in tail if '"level": "error"' in line or not line.startswith("{")]
    print(f"daemon log: {len(tail)} lines, {len(errors)} error or non-JSON lines"
          + (f"; first: {errors[0][:200]}" if errors else ""))
    if not keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
