#!/usr/bin/env bash
# The whole test suite: sets the machine up (images included), then unit and integration
# tests against real containers. Integration tests fail, never skip, without Docker.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
# Leftovers of an earlier run that was killed before its fixtures could clean up.
docker ps -aq --filter label=org.pgup.test=1 | xargs -r docker rm -f -v >/dev/null
docker volume ls -q --filter label=org.pgup.test=1 | xargs -r docker volume rm -f >/dev/null
cargo test --locked "$@"
