#!/usr/bin/env bash
# with-pulsar.sh [--no-wait] CMD [ARG...]: runs CMD with a throw-away Pulsar standalone broker (temp dir, free
# loopback ports, started by pulsar.sh) and removes it when CMD ends, whether it passed, failed or was
# interrupted. make test uses it. CMD sees:
#   PDS_TEST_PULSAR_URL        the broker's service URL (pulsar://127.0.0.1:PORT)
#   PDS_TEST_PULSAR_ADMIN_URL  its admin (web) URL (http://127.0.0.1:PORT)
#   PDS_TEST_PULSAR_DIR        its directory, for "$PDS_PULSAR_SCRIPT stop|start|kill $PDS_TEST_PULSAR_DIR"
#   PDS_PULSAR_SCRIPT          the absolute path of pulsar.sh
# --no-wait runs CMD as soon as the broker is launched instead of once it answers (it takes 20-60 s), so CMD
# can do other work first; CMD must then run "$PDS_PULSAR_SCRIPT wait $PDS_TEST_PULSAR_DIR" before using it.
set -euo pipefail

wait_flag=()
if [[ "${1:-}" == --no-wait ]]; then
	wait_flag=(--no-wait)
	shift
fi
[[ $# -gt 0 ]] || { echo "usage: with-pulsar.sh [--no-wait] CMD [ARG...]" >&2; exit 2; }
here="$(cd "$(dirname "$0")" && pwd)"
pulsar="$here/pulsar.sh"

tmp="$(mktemp -d "${TMPDIR:-/tmp}/pds-test-pulsar.XXXXXX")"
cleanup() {
	local status=$?
	trap - EXIT
	trap '' INT TERM
	# A throw-away broker: no need for a graceful stop.
	"$pulsar" kill "$tmp" || echo "with-pulsar.sh: killing Pulsar in $tmp failed" >&2
	rm -rf "$tmp"
	exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Three distinct free ports (the bookie's is passed on; Pulsar 4.0's standalone picks its own).
ports=()
while ((${#ports[@]} < 3)); do
	port="$("$pulsar" free-port)"
	[[ " ${ports[*]} " == *" $port "* ]] || ports+=("$port")
done
"$pulsar" start "$tmp" --broker-port "${ports[0]}" --web-port "${ports[1]}" --bookie-port "${ports[2]}" \
	"${wait_flag[@]}" >/dev/null

export PDS_TEST_PULSAR_URL="pulsar://127.0.0.1:${ports[0]}"
export PDS_TEST_PULSAR_ADMIN_URL="http://127.0.0.1:${ports[1]}"
export PDS_TEST_PULSAR_DIR="$tmp"
export PDS_PULSAR_SCRIPT="$pulsar"
echo "with-pulsar.sh: Pulsar at $PDS_TEST_PULSAR_URL (admin $PDS_TEST_PULSAR_ADMIN_URL, dir $tmp)" >&2
"$@"
