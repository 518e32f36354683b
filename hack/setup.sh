#!/usr/bin/env bash
# Installs everything the demo and the tests need on a fresh machine, and is a
# quick no-op when it is all there: Debian packages, the Python venv, the test
# bed's binaries (built from Go modules, cached) and the fake NVML library (cached).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

# gcc and libc6-dev build the fake NVML library (hack/build-fake-nvml.sh).
debian_packages=(redis-server prometheus gcc libc6-dev)
missing=()
for pkg in "${debian_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  sudo=""; [[ $(id -u) == 0 ]] || sudo="sudo"
  echo "setup: installing Debian packages: ${missing[*]}" >&2
  $sudo apt-get update -qq
  # The packages' own services are not wanted: the test bed runs its own processes.
  DEBIAN_FRONTEND=noninteractive RUNLEVEL=1 $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi

venv="$root/.venv"
stamp="$venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)"
if [[ ! -f "$stamp" ]]; then
  echo "setup: creating the Python venv in .venv" >&2
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install -q --upgrade pip >&2
  "$venv/bin/python" -m pip install -q -e ".[dev]" >&2
  rm -f "$venv"/.installed-* && touch "$stamp"
fi

bash "$root/hack/build-testbed.sh" >/dev/null
bash "$root/hack/build-fake-nvml.sh" >/dev/null
