#!/usr/bin/env bash
# Makes this machine ready for pgup's demo and tests: installs debootstrap if it is missing,
# checks Docker, and builds the images from Debian packages unless they are current.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v debootstrap >/dev/null; then
	echo "setup: installing debootstrap" >&2
	apt-get update -q >/dev/null
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q debootstrap >/dev/null
fi
if ! docker info >/dev/null 2>&1; then
	echo "setup: the Docker daemon is not reachable; start it (and run as root or in the docker group)" >&2
	exit 1
fi
bash images/build.sh
