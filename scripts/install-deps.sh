#!/usr/bin/env bash
# Installs the Debian packages Kelpie builds, tests and benchmarks with.
# Only runs apt-get when something is missing.
set -euo pipefail
packages=(
  build-essential cmake pkg-config
  liburing-dev libnbd-dev libspdlog-dev libgtest-dev nlohmann-json3-dev
  libnbd-bin python3-libnbd nbdkit qemu-utils fio fuse3 e2fsprogs util-linux
  procps iproute2
  # The zookeeper membership driver (C client) and the real server its tests start
  # on loopback (a JRE comes with zookeeper; zookeeperd is the service for real
  # deployments: the tests do not use it).
  libzookeeper-mt-dev zookeeper zookeeperd default-jre-headless
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}"
fi
