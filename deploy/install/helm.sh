#!/usr/bin/env bash
# Installs a pinned helm with `go install` into $2/bin, once. Go's own module and build
# caches (GOMODCACHE, GOCACHE) stay where go keeps them, so a fresh clone only relinks.
# The module version recorded in the binary (`go version -m`) is the check: a plain
# `go install` build reports only "v3.16" from `helm version`.
set -euo pipefail
version="$1"; gopath="$2"
if [ -x "$gopath/bin/helm" ] && go version -m "$gopath/bin/helm" 2>/dev/null \
    | grep -qE "^[[:space:]]+mod[[:space:]]+helm\.sh/helm/v3[[:space:]]+${version}[[:space:]]"; then
  exit 0
fi
command -v go >/dev/null 2>&1 || { echo "go is missing; install Go 1.22+ (apt-get install -y golang)" >&2; exit 1; }
echo "building helm ${version} with go install into $gopath/bin ..." >&2
mkdir -p "$gopath/bin"
GOBIN="$gopath/bin" GOFLAGS=-mod=mod go install \
  -ldflags "-X helm.sh/helm/v3/internal/version.version=${version}" \
  "helm.sh/helm/v3/cmd/helm@${version}"
