#!/usr/bin/env bash
# Install the plugin workspace (its root and the packages under plugins/) exactly from the committed package-lock.json
# (npm ci), offline-safe:
# better-sqlite3 has no prebuilt binary reachable here, so node-gyp compiles it against the headers of
# the running Node (found next to the node binary, so no header download is attempted).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  echo "backstage-plugin: Node.js 20+ and npm are required (make test runs the plugin's checks)" >&2
  exit 1
fi
# Node 20.3 or newer: the packages' `engines` (the portal client uses AbortSignal.any, new in 20.3).
if ! node -e 'const [major, minor] = process.versions.node.split(".").map(Number); process.exit(major > 20 || (major === 20 && minor >= 3) ? 0 : 1)'; then
  echo "backstage-plugin: Node.js 20.3+ is required, found $(node --version)" >&2
  exit 1
fi
if [ -z "${npm_config_nodedir:-}" ]; then
  prefix=$(dirname "$(dirname "$(readlink -f "$(command -v node)")")")
  if [ -f "$prefix/include/node/node.h" ]; then
    export npm_config_nodedir="$prefix"
  fi
fi
# better-sqlite3's sqlite3.c is the bulk of the install's CPU: node-gyp builds Release at -O3 (73 s of CPU on this
# 2-core machine); the tests' in-memory catalogs need no more than -O1 (38 s). Make's CFLAGS/CXXFLAGS come after
# gyp's own flags on the compile line, and the last -O wins. Set them yourself to build otherwise.
export CFLAGS="${CFLAGS:--O1}" CXXFLAGS="${CXXFLAGS:--O1}"
npm ci --no-audit --no-fund
