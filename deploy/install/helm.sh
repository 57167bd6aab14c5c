#!/usr/bin/env bash
# Installs a pinned helm with `go install` into a cache (GOPATH=$2), once.
set -euo pipefail
version="$1"; gopath="$2"
stamp="$gopath/bin/.helm-version"
# `go install` builds leave helm's own version string at its default ("v3.16"), so the
# pinned version is remembered in a stamp file instead of parsed from `helm version`.
if [ -x "$gopath/bin/helm" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$version" ]; then
  exit 0
fi
command -v go >/dev/null 2>&1 || { echo "go is missing; install Go 1.22+ (apt-get install -y golang)" >&2; exit 1; }
echo "building helm ${version} with go install (cached in $gopath) ..." >&2
GOPATH="$gopath" GOFLAGS=-mod=mod go install \
  -ldflags "-X helm.sh/helm/v3/internal/version.version=${version}" \
  "helm.sh/helm/v3/cmd/helm@${version}"
echo "$version" > "$stamp"
