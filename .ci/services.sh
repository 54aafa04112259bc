#!/usr/bin/env bash
# Install (if missing) and start/stop the system services the test-suite talks to.
# Usage: services.sh up|down
set -euo pipefail
need=()
command -v chromium >/dev/null 2>&1 || need+=(chromium)
if [ "${#need[@]}" -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq "${need[@]}" >/dev/null
fi
case "${1:-up}" in
  up) ;;
  down) ;;
esac
