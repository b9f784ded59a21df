#!/usr/bin/env bash
# Debian packages the tests use: Redis for the KV-store backends, Chromium for the browser test,
# Prometheus (prometheus, promtool) for the monitoring tests.
# Installs what is missing when run as root with apt-get; otherwise says what those tests will skip.
set -euo pipefail
needed=()
command -v redis-server >/dev/null || needed+=(redis-server)
command -v chromium >/dev/null || needed+=(chromium)
command -v chromedriver >/dev/null || needed+=(chromium-driver)
{ command -v prometheus && command -v promtool; } >/dev/null || needed+=(prometheus)
[ ${#needed[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
  echo "system-deps: installing ${needed[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${needed[@]}" >/dev/null
else
  echo "system-deps: missing ${needed[*]} (needs root and apt-get); tests that need them will skip"
fi
