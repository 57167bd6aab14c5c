#!/usr/bin/env bash
# Installs Prometheus (and promtool) from Debian when missing.
set -euo pipefail
if command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "prometheus is missing; install it with: sudo apt-get install -y prometheus" >&2
  exit 1
fi
echo "installing prometheus from Debian ..." >&2
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
# Debian's package may start a system daemon on :9090; the local stack uses its own ports.
(command -v service >/dev/null 2>&1 && service prometheus stop >/dev/null 2>&1) || true
