#!/usr/bin/env bash
# Builds the fake NVML library (hack/fake-nvml/fake_nvml.c) that the GPU agent's tests
# load through the real pynvml bindings, into a cache keyed by the source and this
# script, as hack/build-testbed.sh does for the control plane. Prints the folder that
# holds libnvidia-ml.so.1 (put it on LD_LIBRARY_PATH). FORCE=1 rebuilds.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
src="$here/fake-nvml/fake_nvml.c"

key=$(cat "$src" "${BASH_SOURCE[0]}" | sha256sum | cut -c1-16)
out="${SWARMOPS_TESTBED_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/swarmops/testbed}/fake-nvml-$key"

mkdir -p "$(dirname "$out")"
exec 9>"$out.lock"
flock 9
if [[ -f "$out/.complete" && "${FORCE:-0}" != 1 ]]; then
  echo "$out"
  exit 0
fi

tmp="$out.partial"
rm -rf "$tmp" && mkdir -p "$tmp"
# The soname is the name pynvml asks the loader for; hidden visibility keeps every
# helper private, so only the NVML entry points marked EXPORT are symbols pynvml finds.
"${CC:-cc}" -std=c11 -O2 -Wall -Wextra -fPIC -shared -pthread \
  -fvisibility=hidden -Wl,-soname,libnvidia-ml.so.1 \
  -o "$tmp/libnvidia-ml.so.1" "$src" >&2
ln -s libnvidia-ml.so.1 "$tmp/libnvidia-ml.so"
touch "$tmp/.complete"
rm -rf "$out" && mv "$tmp" "$out"
echo "$out"
