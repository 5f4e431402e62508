#!/usr/bin/env bash
# Runs a command with another major version of Node first on PATH, installed from the registry's `node` package
# into .cache/node-MAJOR (once): `bash scripts/with-node.sh 22 node --version`.
set -euo pipefail
major=${1:?usage: with-node.sh MAJOR COMMAND...}
shift
root=$(cd "$(dirname "$0")/.." && pwd)
dir="$root/.cache/node-$major"
if [ ! -x "$dir/node_modules/.bin/node" ]; then
  mkdir -p "$dir"
  # The node package installs its binary from an install script: allowed here, as in the project's package.json.
  printf '{ "private": true, "allowScripts": { "node": true } }\n' > "$dir/package.json"
  npm install --prefix "$dir" --no-audit --no-fund --silent "node@$major" >&2
fi
PATH="$dir/node_modules/.bin:$PATH" exec "$@"
