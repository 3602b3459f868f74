#!/usr/bin/env bash
# centrifugo.sh: a local Centrifugo server, the peer system of the load tool's scenarios (b) and (c), built
# with `go install` from its published Go module and cached outside the repository.
#
#   centrifugo.sh install      go install the pinned version into ${PDS_CACHE_DIR:-~/.cache/pds}/centrifugo-<v>/
#                              once (reused when present); prints the binary's path. Needs Go 1.26 or newer
#                              (the module's go line; GOTOOLCHAIN is left as the caller has it). A cold build
#                              downloads about 100 modules and took 6.5 minutes on a busy 2-core machine;
#                              with a warm Go build cache, 10 s. start installs when needed, so a caller that
#                              must not wait that long mid-run (bench.sh) runs install first.
#   centrifugo.sh start DIR [--port P]
#                              write DIR/config.json, start Centrifugo in the background (pid in
#                              DIR/centrifugo.pid, output in DIR/centrifugo.log), wait until GET /health
#                              answers, and print four lines: the HTTP API URL (http://127.0.0.1:P/api), the
#                              API key, the WebSocket URL (ws://127.0.0.1:P/connection/websocket) and the pid.
#                              Port: --port, else PDS_CENTRIFUGO_PORT, else the port DIR was last started
#                              with, else a free loopback port. Starting an instance that already runs only
#                              prints its lines.
#   centrifugo.sh stop DIR     SIGTERM, then SIGKILL after PDS_CENTRIFUGO_STOP_TIMEOUT seconds (default 10);
#                              a no-op when it does not run.
#   centrifugo.sh status DIR   print "running" and the four lines (exit 0) or "stopped" (exit 3).
#
# Environment: PDS_CACHE_DIR (see install), PDS_CENTRIFUGO_PORT, PDS_CENTRIFUGO_START_TIMEOUT (seconds to
# wait for /health, default 30), PDS_CENTRIFUGO_STOP_TIMEOUT, PDS_CENTRIFUGO_QUEUE_MAX_SIZE (bytes, see
# below), PDS_CENTRIFUGO_LOG_LEVEL (default warn).
#
# Settings (Centrifugo v6 configuration keys), chosen for a local benchmark, not for production:
#   - Listens on 127.0.0.1 only; the HTTP API, /health and the WebSocket endpoint share the one port.
#   - http_api.key: a random key generated once into DIR/api_key (mode 600) and kept across restarts.
#   - Anonymous clients connect without a token (client.allow_anonymous_connect_without_token) and may
#     subscribe to any channel outside a namespace (channel.without_namespace.allow_subscribe_for_client
#     and allow_subscribe_for_anonymous: Centrifugo needs both for a client without a user id).
#     No client may publish: only the API does. Origins are not checked (Go clients send no Origin header).
#   - Memory engine; no history, no recovery, no positioning, no presence, no join/leave: Centrifugo then
#     delivers at most once from memory, like a plain PUB/SUB, with no acknowledgements.
#   - client.queue_max_size: 16 MiB of pending outgoing messages per connection (the default is 1 MiB), so
#     a subscriber of a 10K events/s channel of ~500-byte events may lag by about 3 s before Centrifugo
#     disconnects it as slow (its client reconnects; what it missed is lost); 100 subscribers hold at most
#     1.6 GiB. Centrifugo's own write batching (up to 16 messages per WebSocket frame) is left as it is.
#   - client.channel_limit 1024 (a stream subscribes to one channel; the room is for ad hoc use).
#   - usage_stats.disabled: no outbound reports (this machine reaches no such service anyway).
#   - shutdown.timeout 5s: a stop is quick.
set -euo pipefail

# The one place that pins the Centrifugo version.
readonly CENTRIFUGO_MODULE=github.com/centrifugal/centrifugo/v6
readonly CENTRIFUGO_VERSION=v6.9.1

readonly install_dir="${PDS_CACHE_DIR:-$HOME/.cache/pds}/centrifugo-$CENTRIFUGO_VERSION"
readonly binary="$install_dir/centrifugo"

die() { echo "centrifugo.sh: $*" >&2; exit 1; }
log() { echo "centrifugo.sh: $*" >&2; }
# shellcheck source=deploy/scripts/processes.sh
source "$(dirname "$0")/processes.sh"

# --- binary ---------------------------------------------------------------------------------------------

is_installed() {
	[[ -x "$binary" ]] && "$binary" version 2>/dev/null | grep -qF "${CENTRIFUGO_VERSION#v}"
}

install() {
	if is_installed; then
		echo "$binary"
		return
	fi
	command -v go >/dev/null 2>&1 || die "go is required to build Centrifugo"
	mkdir -p "$(dirname "$install_dir")"
	# Build beside the final directory and rename, so that an interrupted build never looks installed.
	local staging started=$SECONDS
	staging="$(mktemp -d "$install_dir.build.XXXXXX")"
	log "building $CENTRIFUGO_MODULE@$CENTRIFUGO_VERSION with $(go env GOVERSION) (a few minutes, once)"
	# GOWORK=off: the module is built on its own, never with this repository's go.work. The version is
	# stamped the way Centrifugo's release builds do, so `centrifugo version` tells which one runs.
	if ! GOWORK=off GOBIN="$staging" GOFLAGS=-buildvcs=false go install -trimpath \
		-ldflags "-s -w -X $CENTRIFUGO_MODULE/internal/build.Version=${CENTRIFUGO_VERSION#v}" \
		"$CENTRIFUGO_MODULE@$CENTRIFUGO_VERSION" >&2; then
		rm -rf "$staging"
		die "go install $CENTRIFUGO_MODULE@$CENTRIFUGO_VERSION failed"
	fi
	rm -rf "$install_dir"
	mv "$staging" "$install_dir"
	is_installed || die "built $binary but it does not report version $CENTRIFUGO_VERSION"
	log "Centrifugo $CENTRIFUGO_VERSION is in $install_dir (built in $((SECONDS - started))s)"
	echo "$binary"
}

# --- instances ------------------------------------------------------------------------------------------

# The instance's state in DIR: config.json (written at each start), api_key, port, centrifugo.pid,
# centrifugo.log.


pid_of() { pid_from_file "$1/centrifugo.pid" "--config $1/config.json"; }

is_running() { pid_of "$1" >/dev/null; }



print_lines() {
	local dir="$1" port pid
	port="$(cat "$dir/port")"
	pid="$(pid_of "$dir")" || die "the Centrifugo in $dir is not running"
	echo "http://127.0.0.1:$port/api"
	echo "$(<"$dir/api_key")"
	echo "ws://127.0.0.1:$port/connection/websocket"
	echo "$pid"
}

# ensure_api_key DIR: the instance's HTTP API key is generated on first use and kept, so a restart keeps
# its clients.
ensure_api_key() {
	local dir="$1"
	[[ -s "$dir/api_key" ]] && return
	(
		umask 077
		od -An -tx1 -N24 /dev/urandom | tr -d ' \n' >"$dir/api_key.new"
	)
	mv "$dir/api_key.new" "$dir/api_key"
}

write_config() {
	local dir="$1" port="$2" key queue_max_size="${PDS_CENTRIFUGO_QUEUE_MAX_SIZE:-16777216}"
	[[ "$queue_max_size" =~ ^[0-9]+$ ]] || die "PDS_CENTRIFUGO_QUEUE_MAX_SIZE must be a number of bytes"
	key="$(<"$dir/api_key")"
	(
		umask 077
		cat >"$dir/config.json.new" <<-EOF
			{
			  "http_server": {"address": "127.0.0.1", "port": $port},
			  "log": {"level": "${PDS_CENTRIFUGO_LOG_LEVEL:-warn}"},
			  "engine": {"type": "memory"},
			  "http_api": {"key": "$key"},
			  "health": {"enabled": true},
			  "usage_stats": {"disabled": true},
			  "shutdown": {"timeout": "5s"},
			  "client": {
			    "allow_anonymous_connect_without_token": true,
			    "allowed_origins": [],
			    "queue_max_size": $queue_max_size,
			    "channel_limit": 1024
			  },
			  "channel": {
			    "without_namespace": {
			      "allow_subscribe_for_client": true,
			      "allow_subscribe_for_anonymous": true,
			      "presence": false,
			      "join_leave": false,
			      "history_size": 0,
			      "force_recovery": false,
			      "force_positioning": false
			    }
			  }
			}
		EOF
	)
	mv "$dir/config.json.new" "$dir/config.json"
}

start() {
	local dir="$1" want_port="${PDS_CENTRIFUGO_PORT:-}"
	shift
	while (($#)); do
		case "$1" in
		--port) want_port="${2:?--port needs a value}"; shift 2 ;;
		*) die "start: unknown option $1" ;;
		esac
	done
	dir="$(abs_dir "$dir")"
	if is_running "$dir"; then
		log "the instance in $dir already runs"
		wait_ready "$dir"
		return
	fi
	local port="$want_port"
	if [[ -z "$port" && -s "$dir/port" ]]; then
		port="$(cat "$dir/port")"
	fi
	port="${port:-$(free_port)}"
	[[ "$port" =~ ^[0-9]+$ ]] || die "start: the port must be a number, got \"$port\""
	port_in_use "$port" && die "start: port $port is in use on 127.0.0.1; choose another with --port"

	local bin
	bin="$(install)"
	ensure_api_key "$dir"
	echo "$port" >"$dir/port"
	write_config "$dir" "$port"
	"$bin" checkconfig --config "$dir/config.json" >&2 || die "Centrifugo rejects $dir/config.json"
	echo "=== $(date -u +%FT%TZ) start: port $port" >>"$dir/centrifugo.log"
	# setsid: a Ctrl-C meant for the caller must not reach the server; the caller stops it through this
	# script. exec, so $! is the server's pid. Its output goes to a file only, so a caller reading this
	# script's output through a pipe does not wait for the server to exit.
	(exec setsid "$bin" --config "$dir/config.json") >>"$dir/centrifugo.log" 2>&1 </dev/null &
	local pid="$!" deadline=$((SECONDS + 10))
	echo "$pid" >"$dir/centrifugo.pid"
	# Until the subshell has exec'd the server its command line is this script's: wait for that, so that
	# is_running tells a starting server from a dead one.
	until is_running "$dir"; do
		if ! kill -0 "$pid" 2>/dev/null || ((SECONDS > deadline)); then
			log_tail "$dir"
			die "Centrifugo did not start in $dir"
		fi
		sleep 0.05
	done
	log "started Centrifugo $CENTRIFUGO_VERSION (pid $pid) in $dir on port $port"
	wait_ready "$dir"
}

log_tail() {
	log "last lines of $1/centrifugo.log:"
	tail -n 30 "$1/centrifugo.log" >&2 || true
}

wait_ready() {
	local dir="$1" port timeout="${PDS_CENTRIFUGO_START_TIMEOUT:-30}"
	port="$(cat "$dir/port")"
	local deadline=$((SECONDS + timeout))
	until curl -fsS -m 2 -o /dev/null "http://127.0.0.1:$port/health" 2>/dev/null; do
		if ! is_running "$dir"; then
			log_tail "$dir"
			die "the Centrifugo in $dir is not running (it exited during start-up?)"
		fi
		if ((SECONDS > deadline)); then
			log_tail "$dir"
			stop_instance "$dir"
			die "the Centrifugo in $dir did not answer /health within ${timeout}s; stopped it"
		fi
		sleep 0.1
	done
	print_lines "$dir"
}


wait_gone() {
	local pid="$1" deadline=$((SECONDS + $2))
	while alive "$pid"; do
		((SECONDS <= deadline)) || return 1
		sleep 0.1
	done
}

stop_instance() {
	local dir pid timeout="${PDS_CENTRIFUGO_STOP_TIMEOUT:-10}"
	[[ -d "$1" ]] || return 0
	dir="$(abs_dir "$1")"
	pid="$(pid_of "$dir")" || { rm -f "$dir/centrifugo.pid"; return 0; }
	kill -TERM "$pid" 2>/dev/null || true
	if ! wait_gone "$pid" "$timeout"; then
		log "Centrifugo (pid $pid) in $dir did not stop within ${timeout}s; killing it"
		kill -KILL "$pid" 2>/dev/null || true
		wait_gone "$pid" 10 || die "Centrifugo (pid $pid) in $dir survived SIGKILL for 10s"
	fi
	rm -f "$dir/centrifugo.pid"
	log "stopped Centrifugo in $dir"
}

status() {
	local dir
	[[ -d "$1" ]] || { echo stopped; return 3; }
	dir="$(abs_dir "$1")"
	if is_running "$dir"; then
		echo running
		print_lines "$dir"
		return 0
	fi
	echo stopped
	return 3
}

usage="usage: centrifugo.sh install | start DIR [--port P] | stop DIR | status DIR"
case "${1:-}" in
install) [[ $# == 1 ]] || die "$usage"; install ;;
start) [[ $# -ge 2 ]] || die "$usage"; shift; start "$@" ;;
stop) [[ $# == 2 ]] || die "$usage"; stop_instance "$2" ;;
status) [[ $# == 2 ]] || die "$usage"; status "$2" ;;
*) die "$usage" ;;
esac
