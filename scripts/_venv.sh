# Sourced by scripts/*: make sure .venv exists and holds this checkout with its dev extras.
# Re-installs only when pyproject.toml changed (stamp file), so repeated runs start fast.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"

_pick_python() {
  for py in "${PYTHON:-}" python3.13 python3.12 python3.11 python3; do
    [ -n "$py" ] || continue
    if command -v "$py" >/dev/null 2>&1 && "$py" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
      echo "$py"; return 0
    fi
  done
  echo "foundry-monitor needs Python 3.11 or newer on PATH (or set PYTHON=...)" >&2
  return 1
}

ensure_venv() {
  local stamp="$VENV/.installed" want
  want="$(sha256sum "$ROOT/pyproject.toml" | cut -d' ' -f1)"
  if [ -x "$VENV/bin/python" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
    return 0
  fi
  echo "setting up $VENV (first run, or pyproject.toml changed) ..." >&2
  [ -x "$VENV/bin/python" ] || "$(_pick_python)" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip >&2 2>/dev/null || true
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e "$ROOT[dev]" 2>&1 \
    | grep -vE '^(WARNING: Location|\s*$)' >&2 || true
  "$VENV/bin/python" -c 'import monitor.cli' || { echo "install failed" >&2; return 1; }
  echo "$want" > "$stamp"
}

# Debian packages the tests use (Prometheus and promtool for the scrape test). Installed when missing
# and this machine can (root + apt-get); otherwise the tests that need them say why they skip.
ensure_tools() {
  ensure_prometheus
  ensure_blackbox
  ensure_node_tools
  ensure_chromium
  return 0
}

_APT_UPDATED=0
apt_install() {  # apt_install PACKAGE... : quietly, once per run, only as root with apt-get
  [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 || return 1
  if [ "$_APT_UPDATED" = 0 ]; then apt-get update -qq >/dev/null 2>&1 || return 1; _APT_UPDATED=1; fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null 2>&1
}

ensure_prometheus() {
  command -v prometheus >/dev/null 2>&1 && return 0
  echo "installing Debian's prometheus (for the scrape test) ..." >&2
  apt_install prometheus || echo "(could not install prometheus; its test will skip)" >&2
  return 0
}

ensure_blackbox() {  # bench/blackbox_bench.py compares the monitor with it; nothing runs it in production
  command -v prometheus-blackbox-exporter >/dev/null 2>&1 && return 0
  echo "installing Debian's prometheus-blackbox-exporter (for bench/blackbox_bench.py) ..." >&2
  apt_install prometheus-blackbox-exporter || echo "(could not install blackbox_exporter)" >&2
  return 0
}

source "$ROOT/scripts/_node_tools.sh"  # ensure_node_tools: the Kusto language service for KQL checks
source "$ROOT/scripts/_chromium.sh"    # ensure_chromium: headless Chromium for the HTML checks
