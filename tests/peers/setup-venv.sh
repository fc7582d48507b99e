#!/usr/bin/env bash
# Creates (or reuses) a Python venv holding the real `baremetal` CLI (python-ironicclient),
# the peer that Ferric's Ironic-compatible API is tested against.
#
#   tests/peers/setup-venv.sh [VENV_DIR]
#
# VENV_DIR defaults to $FERRIC_BAREMETAL_VENV, else <repo>/target/baremetal-venv (where the
# test harness looks by default). Idempotent: when the venv already holds the pinned
# versions it returns at once without touching the network.
set -euo pipefail

IRONICCLIENT_VERSION=6.3.0

repo="$(cd "$(dirname "$0")/../.." && pwd)"
venv="${1:-${FERRIC_BAREMETAL_VENV:-$repo/target/baremetal-venv}}"
python="${PYTHON:-python3}"
stamp="$venv/.ferric-peers"
want="python-ironicclient==$IRONICCLIENT_VERSION"

if [ -x "$venv/bin/baremetal" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  echo "baremetal CLI ready: $venv/bin/baremetal ($want)"
  exit 0
fi

command -v "$python" >/dev/null || { echo "setup-venv: $python not found" >&2; exit 1; }
if [ ! -x "$venv/bin/python" ]; then
  "$python" -m venv "$venv" || {
    echo "setup-venv: '$python -m venv' failed; on Debian/Ubuntu install python3-venv" >&2
    exit 1
  }
fi
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
# python-ironicclient pulls in osc-lib, openstacksdk and keystoneauth1, which provide the
# `--os-endpoint` / `--os-auth-type none` options the tests use.
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check "$want"
"$venv/bin/baremetal" --version >/dev/null 2>&1 || {
  echo "setup-venv: $venv/bin/baremetal does not run" >&2
  exit 1
}
printf '%s' "$want" >"$stamp"
echo "baremetal CLI ready: $venv/bin/baremetal ($want)"
