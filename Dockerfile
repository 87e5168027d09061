# syntax=docker/dockerfile:1
# foundry-monitor as a container image (docs/container.md).
#
#   docker build -t foundry-monitor .
#   docker run -d -p 127.0.0.1:9464:9464 -v foundry-monitor-data:/var/lib/foundry-monitor \
#     -v "$PWD/checks.yaml:/etc/foundry-monitor/checks.yaml:ro" -e ANTHROPIC_FOUNDRY_API_KEY foundry-monitor
#
# Build arguments:
#   BASE_IMAGE   any Debian-like image with python3 (3.11+) and its venv module; both stages use it, so the
#                venv built in the first stage finds the same interpreter in the second.
#   PIP_OPTIONS  extra pip options for an offline or mirrored build, e.g.
#                "--index-url https://pypi.example/simple" or "--no-index --find-links /wheels" (with the
#                wheelhouse mounted at build time, as scripts/container-smoke does).
ARG BASE_IMAGE=python:3.11-slim-bookworm

# --- build: a wheel of the project, installed with its dependencies into a venv -------------------------------
FROM ${BASE_IMAGE} AS build
ARG PIP_OPTIONS=""
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_ROOT_USER_ACTION=ignore \
    PYTHONDONTWRITEBYTECODE=1
RUN python3 -m venv /opt/foundry-monitor
WORKDIR /src
# The dependencies first, in a layer of their own (a change to monitor/ does not reinstall them), exactly as
# requirements.lock pins them: every version and every file's hash, nothing resolved at build time
# (scripts/lock regenerates the lock from pyproject.toml).
COPY requirements.lock ./
RUN /opt/foundry-monitor/bin/pip install $PIP_OPTIONS --require-hashes --no-deps -r requirements.lock
# Then the project itself, as a wheel (what a release would publish), without touching the dependencies;
# pip check proves the lock holds everything it needs. pip and setuptools leave the venv at the end: nothing
# is installed at run time.
COPY pyproject.toml README.md ./
COPY monitor ./monitor
RUN /opt/foundry-monitor/bin/pip wheel $PIP_OPTIONS --no-deps --wheel-dir /tmp/dist . \
 && /opt/foundry-monitor/bin/pip install $PIP_OPTIONS --no-deps /tmp/dist/foundry_monitor-*.whl \
 && /opt/foundry-monitor/bin/pip check \
 && /opt/foundry-monitor/bin/foundry-monitor --version \
 && /opt/foundry-monitor/bin/pip uninstall -y pip setuptools

# --- runtime: the base image, the venv, a font, an unprivileged user -------------------------------------------
FROM ${BASE_IMAGE}
# DejaVu for the text of the PNG charts in the weekly email (resvg draws text with system fonts): about 3 MB.
# A base image that already has it (the one scripts/container-smoke makes) skips apt entirely.
RUN set -eu; \
    if [ ! -e /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ]; then \
      apt-get update; \
      DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends fonts-dejavu-core; \
      apt-get clean; \
      rm -rf /var/lib/apt/lists/*; \
    fi; \
    groupadd --system --gid 10001 foundry-monitor; \
    useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/foundry-monitor --no-create-home \
      --shell /usr/sbin/nologin foundry-monitor; \
    install -d -o 10001 -g 10001 -m 0750 /var/lib/foundry-monitor; \
    install -d -m 0755 /etc/foundry-monitor
COPY --from=build /opt/foundry-monitor /opt/foundry-monitor
# The default config: every deployment from environment variables (README, Quick start); mount your own over it.
COPY checks.yaml /etc/foundry-monitor/checks.yaml

ENV PATH=/opt/foundry-monitor/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    FOUNDRY_MONITOR_CONFIG=/etc/foundry-monitor/checks.yaml \
    FOUNDRY_MONITOR_DATA_DIR=/var/lib/foundry-monitor

USER 10001:10001
WORKDIR /var/lib/foundry-monitor
# The results store (results.sqlite3) and the telemetry offline storage (telemetry/).
VOLUME /var/lib/foundry-monitor
EXPOSE 9464
# SIGTERM stops new canaries, waits for those in flight, flushes the store and exits 0.
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
  CMD ["foundry-monitor", "health"]
ENTRYPOINT ["foundry-monitor"]
# --host 0.0.0.0: reachable through a published port (the daemon's own default is loopback only).
CMD ["run", "--config", "/etc/foundry-monitor/checks.yaml", "--host", "0.0.0.0", "--port", "9464", "--log-format", "json"]
