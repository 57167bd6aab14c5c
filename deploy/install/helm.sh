#!/usr/bin/env bash
# Installs a pinned helm with `go install` into a cache (GOPATH=$2), once.
set -euo pipefail
version="$1"; gopath="$2"
if [ -x "$gopath/bin/helm" ] && "$gopath/bin/helm" version --short 2>/dev/null | grep -q "^${version}"; then
  exit 0
fi
command -v go >/dev/null 2>&1 || { echo "go is missing; install Go 1.22+ (apt-get install -y golang)" >&2; exit 1; }
echo "building helm ${version} with go install (cached in $gopath) ..." >&2
GOPATH="$gopath" GOFLAGS=-mod=mod go install "helm.sh/helm/v3/cmd/helm@${version}"
