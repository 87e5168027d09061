# Sourced by scripts/_venv.sh (which defines ROOT and apt_install).
# ensure_chromium: Debian's headless Chromium for the HTML checks (tests/browser.py drives it over the
# DevTools pipe, so chromium-driver is not needed). fonts-dejavu-core keeps screenshots readable on a
# bare machine. Never fails: without a browser the browser tests skip and say why.
ensure_chromium() {
  command -v chromium >/dev/null 2>&1 && return 0
  echo "installing Debian's chromium (for the HTML checks) ..." >&2
  apt_install chromium fonts-dejavu-core \
    || echo "(could not install chromium; the browser tests will skip)" >&2
  return 0
}
