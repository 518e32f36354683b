#!/usr/bin/env bash
# Builds the test bed's binaries (etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler, kubectl, kwok, helm) from the pinned Go modules under hack/tools
# into a cache keyed by those pins, so a rebuild happens only when a pin changes.
# Prints the binary folder on stdout.  FORCE=1 rebuilds.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
export GOTOOLCHAIN=local GOFLAGS=-buildvcs=false

key=$(cat "$here"/tools/*/go.mod "$here"/tools/*/go.sum "${BASH_SOURCE[0]}" | sha256sum | cut -c1-16)
bin="${SWARMOPS_TESTBED_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/swarmops/testbed}/bin-$key"

mkdir -p "$(dirname "$bin")"
# Two callers (a test run and the demo, say) must not build into one folder at once.
exec 9>"$bin.lock"
flock 9
if [[ -f "$bin/.complete" && "${FORCE:-0}" != 1 ]]; then
  echo "$bin"
  exit 0
fi

module_version() {  # module-dir module-path
  (cd "$here/tools/$1" && go list -m -f '{{.Version}}' "$2")
}
k8s_version=$(module_version kubernetes k8s.io/kubernetes)
k8s_minor=$(echo "$k8s_version" | cut -d. -f2)
# Without these stamps every component reports v0.0.0-master and version skew checks misfire.
k8s_ldflags="-s -w
  -X k8s.io/component-base/version.gitVersion=$k8s_version
  -X k8s.io/component-base/version.gitMajor=1
  -X k8s.io/component-base/version.gitMinor=$k8s_minor
  -X k8s.io/component-base/version.gitTreeState=clean
  -X k8s.io/client-go/pkg/version.gitVersion=$k8s_version
  -X k8s.io/client-go/pkg/version.gitMajor=1
  -X k8s.io/client-go/pkg/version.gitMinor=$k8s_minor"
helm_version=$(module_version helm helm.sh/helm/v3)
# helm renders templates for the Kubernetes release its client libraries come from;
# unstamped it assumes v1.20 and refuses charts that need anything newer.
helm_k8s_minor=$(module_version helm k8s.io/client-go | cut -d. -f2)
helm_ldflags="-s -w
  -X helm.sh/helm/v3/internal/version.version=$helm_version
  -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1
  -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=$helm_k8s_minor
  -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=1
  -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=$helm_k8s_minor"
kwok_version=$(module_version kwok sigs.k8s.io/kwok)

tmp="$bin.partial"
rm -rf "$tmp" && mkdir -p "$tmp"
start=$(date +%s)
build() {  # module-dir ldflags
  (cd "$here/tools/$1" && go build -trimpath -ldflags "$2" -o "$tmp/" tool) >&2
}
build kubernetes "$k8s_ldflags"
# Go names a binary after the path element before a major-version suffix: server.
mv "$tmp/server" "$tmp/etcd"
build kwok "-s -w -X sigs.k8s.io/kwok/pkg/consts.Version=$kwok_version"
build helm "$helm_ldflags"
echo "built test bed binaries in $(( $(date +%s) - start ))s" >&2
touch "$tmp/.complete"
rm -rf "$bin" && mv "$tmp" "$bin"
echo "$bin"
