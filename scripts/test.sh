#!/usr/bin/env bash
# The whole test suite: sets the machine up (images included), then unit and integration
# tests against real containers. Integration tests fail, never skip, without Docker.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
# Leftovers of an earlier run that was killed before its fixtures could clean up.
docker ps -aq --filter label=org.pgup.test=1 | xargs -r docker rm -f -v >/dev/null
docker volume ls -q --filter label=org.pgup.test=1 | xargs -r docker volume rm -f >/dev/null
# Toolboxes pgup assembled from server images that were rebuilt since: nothing finds them again.
for id in $(docker images -q --filter label=org.pgup.assembled-from | sort -u); do
	for source in $(docker image inspect --format '{{index .Config.Labels "org.pgup.assembled-from"}}' "$id"); do
		docker image inspect "$source" >/dev/null 2>&1 || { docker rmi -f "$id" >/dev/null; break; }
	done
done
# The integration tests mostly wait on containers and servers: three at a time on two cores.
export RUST_TEST_THREADS=${RUST_TEST_THREADS:-3}
cargo test --locked "$@"
