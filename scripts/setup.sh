#!/usr/bin/env bash
# One-time set-up on Debian 12 as root: the Debian packages pve-rebalancer needs (when
# missing) and the project's virtual environment at .venv with the pinned dependencies.
# Safe to run again; it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

debs=(rrdtool librrd-dev rrdcached prometheus chromium pkg-config)
missing=()
for pkg in "${debs[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  echo "setup: installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # policy-rc.d keeps the packaged daemons (prometheus, rrdcached) from starting on install:
  # the tests start their own instances on temporary ports and sockets.
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -r requirements.lock
.venv/bin/python -m pip install -q --no-deps -e .
# pip leaves the dependencies without bytecode where PYTHONDONTWRITEBYTECODE is set, and every
# process then compiles numpy, polars, scipy ... again on import (about 1 s per start-up).
# Compiled once here (the project's own modules are left as they are: they are the checkout).
.venv/bin/python -m compileall -q -j 0 "$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_path("purelib"))')" >/dev/null ||
  echo "setup: some dependency modules could not be byte-compiled (they compile on import)"
echo "setup: done (.venv ready)"
