# Sourced by scripts/_venv.sh (which sets ROOT and `set -euo pipefail`).
# ensure_node_tools: Microsoft's Kusto language service (@kusto/language-service-next, the version pinned
# in tests/kql/package.json and package-lock.json) in tests/kql/node_modules, for the offline KQL checks
# of tests/kql/checker.py. Installs only when missing or a different version is installed; silent
# when there is nothing to do. Never fails: without node/npm or when the install fails it says, in one
# line on stderr, that the KQL tests will skip.
ensure_node_tools() {
  local dir="$ROOT/tests/kql" want have rc
  if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    echo "(node and npm are not on PATH: the KQL checks of tests/kql will skip)" >&2
    return 0
  fi
  # shellcheck disable=SC2016  # the JavaScript is single-quoted on purpose
  want="$(node -p 'require(process.argv[1]).dependencies["@kusto/language-service-next"]' \
            "$dir/package.json" 2>/dev/null)" || want=""
  have="$(node -p 'require(process.argv[1]).version' \
            "$dir/node_modules/@kusto/language-service-next/package.json" 2>/dev/null)" || have=""
  if [ -n "$want" ] && [ "$have" = "$want" ]; then
    return 0
  fi
  echo "installing @kusto/language-service-next@${want:-?} into tests/kql (for the KQL checks) ..." >&2
  rc=0
  (cd "$dir" && npm ci --no-audit --no-fund --silent --ignore-scripts --prefer-offline >/dev/null 2>&1) || rc=$?
  have="$(node -p 'require(process.argv[1]).version' \
            "$dir/node_modules/@kusto/language-service-next/package.json" 2>/dev/null)" || have=""
  if [ "$rc" = 0 ] && [ -n "$want" ] && [ "$have" = "$want" ]; then
    return 0
  fi
  echo "(could not install it: npm ci in tests/kql exited $rc, installed version: ${have:-none};" \
       "the KQL checks will skip. Run that npm ci by hand to see why)" >&2
  return 0
}
