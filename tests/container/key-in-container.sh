#!/usr/bin/env bash
# usbip-runner run from the container image, for tests that start the runner binary
# (USBIP_RUNNER=this script): it takes the runner's arguments and answers as the runner does, its
# first line "listening on 127.0.0.1:PORT". Inside, the key listens on the container's
# 0.0.0.0:3240, which podman publishes on a free loopback port here; --listen is replaced so.
# SIGTERM stops the container (the runner gets it and shuts down). Environment: CONTAINER_IMAGE,
# PODMAN_RUN_FLAGS (tests/container/run.sh sets both).
set -euo pipefail
args=()
while [ $# -gt 0 ]; do
    case $1 in
        --listen) shift 2 ;;
        *) args+=("$1"); shift ;;
    esac
done
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
name=usbip-runner-test-$$
# shellcheck disable=SC2086 # flags are words
podman run --rm --name "$name" $PODMAN_RUN_FLAGS -p "127.0.0.1:$port:3240" "$CONTAINER_IMAGE" \
    --listen 0.0.0.0:3240 "${args[@]}" | sed -u "s/^listening on .*/listening on 127.0.0.1:$port/" &
pid=$!
stop() {
    podman stop -t 10 "$name" >/dev/null 2>&1 || true
    wait "$pid" || true
    exit 0
}
trap stop TERM INT
wait "$pid"
