#!/usr/bin/env bash
# Installs a pinned helm with `go install` into $2/bin, once. Go's own module and build
# caches (GOMODCACHE, GOCACHE) stay where go keeps them, so a fresh clone only relinks.
#
# The ldflags are the ones helm's own release Makefile sets:
#   - internal/version.version: a plain `go install` build reports only "v3.16";
#   - chartutil/lint k8sVersionMajor/Minor: the Kubernetes version `helm template` and
#     `helm lint` assume without --kube-version. Unset, helm falls back to v1.20.0 and
#     refuses every chart with kubeVersion >=1.21 ("incompatible with Kubernetes v1.20.0").
#     Like the Makefile, they come from the k8s.io/client-go version helm is built with
#     (v0.31.x -> 1.31).
# The build settings recorded in the binary (`go version -m`) are the check: a binary
# without the pinned module version or without the k8s ldflags is rebuilt.
set -euo pipefail
version="$1"; mkdir -p "$2"; gopath="$(cd "$2" && pwd)"
command -v go >/dev/null 2>&1 || { echo "go is missing; install Go 1.22+ (apt-get install -y golang)" >&2; exit 1; }
built_ok() {
  local info
  info="$(go version -m "$gopath/bin/helm" 2>/dev/null)" || return 1
  grep -qE "^[[:space:]]+mod[[:space:]]+helm\.sh/helm/v3[[:space:]]+${version}[[:space:]]" <<<"$info" \
    && grep -q "chartutil.k8sVersionMinor=" <<<"$info"
}
if [ -x "$gopath/bin/helm" ] && built_ok; then
  exit 0
fi
# helm's go.mod names the client-go it builds with; the module cache keeps it offline.
moddir="$(GOFLAGS=-mod=mod go mod download -json "helm.sh/helm/v3@${version}" \
  | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
clientgo="$(sed -n 's/^[[:space:]]*k8s\.io\/client-go v0\.\([0-9]*\)\..*/\1/p' "$moddir/go.mod")"
[ -n "$clientgo" ] || { echo "cannot read k8s.io/client-go from $moddir/go.mod" >&2; exit 1; }
k8s_major=1; k8s_minor="$clientgo"
echo "building helm ${version} (Kubernetes ${k8s_major}.${k8s_minor} default) with go install into $gopath/bin ..." >&2
mkdir -p "$gopath/bin"
ldflags="-X helm.sh/helm/v3/internal/version.version=${version}"
for pkg in pkg/lint/rules pkg/chartutil; do
  ldflags+=" -X helm.sh/helm/v3/${pkg}.k8sVersionMajor=${k8s_major}"
  ldflags+=" -X helm.sh/helm/v3/${pkg}.k8sVersionMinor=${k8s_minor}"
done
GOBIN="$gopath/bin" GOFLAGS=-mod=mod go install -ldflags "$ldflags" "helm.sh/helm/v3/cmd/helm@${version}"
