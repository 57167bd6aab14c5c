#!/usr/bin/env bash
# Builds the pinned MinIO server with `go install` into $2/bin, once. $2 lies outside the
# clone (the Makefile passes ~/.cache/histoprompt/minio), so a fresh clone finds it built;
# Go's own module and build caches (GOMODCACHE, GOCACHE) make a rebuild a relink.
# MinIO publishes no module release tags, so the pin is a pseudo-version of the module
# proxy; the module version recorded in the binary (`go version -m`) is the check.
# The first build takes about 6 minutes on 2 cores; the local stack runs it only when
# HISTOPROMPT_STACK_S3_SERVER=minio (SeaweedFS is the default).
set -euo pipefail
version="$1"; prefix="$2"
if [ -x "$prefix/bin/minio" ] && go version -m "$prefix/bin/minio" 2>/dev/null \
    | grep -qE "^[[:space:]]+mod[[:space:]]+github\.com/minio/minio[[:space:]]+${version}[[:space:]]"; then
  exit 0
fi
command -v go >/dev/null 2>&1 || { echo "go is missing; install Go 1.24+ (apt-get install -y golang)" >&2; exit 1; }
echo "building the minio server ${version} with go install into $prefix/bin (minutes, once) ..." >&2
mkdir -p "$prefix/bin"
GOBIN="$prefix/bin" GOFLAGS=-mod=mod go install "github.com/minio/minio@${version}"
