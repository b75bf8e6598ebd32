#!/usr/bin/env bash
# Installs perovskite-pes and everything its tests and the quickstart need on a fresh machine
# that has only Python: CP2K (Debian package, real DFT) when apt is available, then the
# package itself with its test extras. Safe to run twice.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cp2k.psmp >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = "0" ]; then
    echo "installing CP2K (Debian package cp2k) ..."
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq cp2k openmpi-bin >/dev/null
  else
    echo "note: CP2K not installed and apt-get not usable here; CP2K tests will be skipped (see 'pes calc check')" >&2
  fi
fi

python -m pip install --upgrade -q pip
# torch is pinned in setup.cfg (torch==2.13.0, CPU build); install it first so nothing pulls another build
python -m pip install -q "torch==2.13.0"
python -m pip install -q -e ".[test]"
echo "perovskite-pes installed: $(command -v pes)"
