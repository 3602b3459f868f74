#!/usr/bin/env bash
# bench.sh (make bench-load): PDS's load benchmarks, side by side with the baselines and the peer, in one run
# on this machine. It builds the binaries and starts everything it measures, each in a temporary directory:
#
#   1. PostgreSQL, the control plane and a data plane on the embedded broker (with --pprof-addr):
#      every scenario on pds-embedded and on the engine alone (no PDS in the path); during scenario route at
#      100K events/s a 20 s CPU profile of the data plane (cpu-dataplane-embedded.pprof, and its pprof -top
#      in cpu-dataplane-embedded.top.txt; the same for the data plane on Pulsar).
#   2. Centrifugo (deploy/scripts/centrifugo.sh, when present), the peer of scenarios streams and fanout.
#   3. A Pulsar standalone (deploy/scripts/pulsar.sh, free ports; managedLedgerNewEntriesCheckDelayInMillis=0
#      from deploy/pulsar/standalone-overrides.conf) and a data plane on it: every scenario on pds-pulsar,
#      the raw pulsar-client-go producer→consumer (pulsar-raw) and Pulsar's WebSocket API (pulsar-ws). Every
#      Pulsar producer batches for 1 ms (the data plane's driver default, the baselines' setting).
#
# Each run publishes in open loop and reports latency from the intended send time; see README.md,
# "Benchmarks". Before the measured runs on each data plane, an unrecorded warm-up run (30 s at 10K events/s)
# takes the cold start out of the numbers (Pulsar's JIT compilation above all). Every server it starts is stopped when it exits, on failure and Ctrl-C too. A run that fails
# is reported and the suite goes on.
#
# Results go to BENCH_RESULTS (default bench-results/<UTC time>/): results.jsonl (one JSON object per run,
# as pds-load --out writes), one table per scenario and system (*.txt), summary.txt (every run), the CPU
# profile, settings.txt (machine and settings) and logs/.
#
# Environment (all optional):
#   BENCH_QUICK=1          every scenario and system briefly at low rates: checks the suite in minutes
#   BENCH_RESULTS          results directory
#   BENCH_RATES            offered rates (events/s) of the sweeps of scenarios route and streams
#                          (default 10000,25000,50000,100000,150000); a system's sweep stops after the first
#                          rate it does not keep up with (pds-load --stop-when-saturated; logs/pds-load.log
#                          says why), unless BENCH_FULL_SWEEP=1
#   BENCH_DURATION         publishing time of each run (default 30s); BENCH_WARMUP (default 5s) of it is
#                          left out of the latencies
#   BENCH_FANOUT_RATE      scenario fanout's rate (default 1000: 100K deliveries/s)
#   BENCH_SLOW_RATE        the rate at which scenarios route and slow run side by side (default 50000)
#   BENCH_SUSTAINED        scenario sustained's duration (default 10m) at BENCH_SUSTAINED_RATE (default 100000);
#                          BENCH_SUSTAINED=0 skips it
#   BENCH_PROFILE_RATE     the rate of scenario route during which the CPU profile is taken (default 100000)
#   BENCH_DRAIN_TIMEOUT    how long a run waits for outstanding deliveries after publishing (default 60s)
#   BENCH_SKIP_EMBEDDED=1, BENCH_SKIP_ENGINE=1, BENCH_SKIP_CENTRIFUGO=1, BENCH_SKIP_PULSAR=1
#                          leave those parts out (the embedded data plane, the engine-alone baseline,
#                          the peer, everything on Pulsar)
#   BENCH_SCENARIOS        the scenarios to run (default "route streams fanout slow sustained")
#   BENCH_LOAD_ARGS        extra pds-load flags for every recorded run, e.g. "--publishers 8 --batch 500"
set -euo pipefail
cd "$(dirname "$0")/../.."
root="$PWD"
scripts="$root/deploy/scripts"

if [[ "${BENCH_QUICK:-0}" == 1 ]]; then
	rates="${BENCH_RATES:-1000,5000}"
	duration="${BENCH_DURATION:-5s}"
	warmup="${BENCH_WARMUP:-1s}"
	fanout_rate="${BENCH_FANOUT_RATE:-100}"
	slow_rate="${BENCH_SLOW_RATE:-2000}"
	sustained="${BENCH_SUSTAINED:-10s}"
	sustained_rate="${BENCH_SUSTAINED_RATE:-2000}"
	profile_rate="${BENCH_PROFILE_RATE:-5000}"
	profile_seconds=3
	drain_timeout="${BENCH_DRAIN_TIMEOUT:-20s}"
	warmup_duration=5s
	warmup_rate=1000
else
	rates="${BENCH_RATES:-10000,25000,50000,100000,150000}"
	duration="${BENCH_DURATION:-30s}"
	warmup="${BENCH_WARMUP:-5s}"
	fanout_rate="${BENCH_FANOUT_RATE:-1000}"
	slow_rate="${BENCH_SLOW_RATE:-50000}"
	sustained="${BENCH_SUSTAINED:-10m}"
	sustained_rate="${BENCH_SUSTAINED_RATE:-100000}"
	profile_rate="${BENCH_PROFILE_RATE:-100000}"
	profile_seconds=20
	drain_timeout="${BENCH_DRAIN_TIMEOUT:-60s}"
	warmup_duration=30s
	warmup_rate=10000
fi
scenarios=" ${BENCH_SCENARIOS:-route streams fanout slow sustained} "
results="${BENCH_RESULTS:-$root/bench-results/$(date -u +%Y%m%dT%H%M%SZ)}"
mkdir -p "$results/logs"
results="$(cd "$results" && pwd)"
logs="$results/logs"
bin="$root/.bin"

log() { echo "bench.sh: $*" >&2; }
die() { log "$*"; exit 1; }
# shellcheck source=deploy/scripts/processes.sh
source "$scripts/processes.sh"
has_scenario() { [[ "$scenarios" == *" $1 "* ]]; }

tmp="$(mktemp -d "${TMPDIR:-/tmp}/pds-bench.XXXXXX")"
# user postgres must be able to reach the database directory inside.
chmod 755 "$tmp"

names=()
pids=()
pulsar_dir=""
centrifugo_dir=""
profile_pid=""

cleanup() {
	local status=$?
	trap - EXIT
	# Ctrl-C pressed twice must not leave servers behind: every step below is bounded.
	trap '' INT TERM
	[[ -n "$profile_pid" ]] && stop_process "CPU profile" "$profile_pid"
	for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
		stop_process "${names[i]}" "${pids[i]}"
	done
	if [[ -n "$centrifugo_dir" ]]; then
		"$scripts/centrifugo.sh" stop "$centrifugo_dir" || log "stopping Centrifugo failed"
	fi
	if [[ -n "$pulsar_dir" ]]; then
		# A throw-away broker: no graceful stop needed.
		"$scripts/pulsar.sh" kill "$pulsar_dir" || log "stopping Pulsar failed"
		cp "$pulsar_dir"/logs/*.log "$logs/" 2>/dev/null || true
	fi
	"$scripts/postgres.sh" stop "$tmp/postgres" || log "stopping PostgreSQL failed"
	rm -rf "$tmp"
	if [[ -s "$results/results.jsonl" ]]; then
		"$bin/pds-load" --summary "$results/results.jsonl" >"$results/summary.txt" 2>&1 || true
		log "summary of every run ($results/summary.txt):"
		cat "$results/summary.txt" >&2
	fi
	log "results are in $results"
	exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# start_process NAME CMD...: starts CMD in the background with its output in logs/NAME.log.
start_process() {
	local name="$1"
	shift
	"$@" >>"$logs/$name.log" 2>&1 &
	names+=("$name")
	pids+=("$!")
	log "started $name (pid $!)"
}

# stop_named NAME: stops the process started as NAME (and forgets it).
stop_named() {
	local i
	for i in "${!names[@]}"; do
		if [[ "${names[i]}" == "$1" ]]; then
			stop_process "${names[i]}" "${pids[i]}"
			unset 'names[i]' 'pids[i]'
			names=("${names[@]}")
			pids=("${pids[@]}")
			return
		fi
	done
}

pid_of() {
	local i
	for i in "${!names[@]}"; do
		if [[ "${names[i]}" == "$1" ]]; then
			echo "${pids[i]}"
			return
		fi
	done
}

# wait_ready NAME URL: polls URL/readyz until it answers 200; fails when NAME exits or after 120s.
wait_ready() { wait_ready_http "$1" "$2" "$(pid_of "$1")" "$logs/$1.log" 120; }


# load SCENARIO SYSTEM NAME RATES [ARG...]: one pds-load invocation; its table goes to SCENARIO-NAME.txt (and
# to stderr), its results to results.jsonl, its progress to logs/pds-load.log. A failure is reported, not fatal.
load() {
	local scenario="$1" system="$2" name="$3" rates="$4"
	shift 4
	local run_duration="$duration"
	[[ "$scenario" == sustained ]] && run_duration="$sustained"
	log "scenario $scenario on $name at $rates events/s ($run_duration each)"
	if ! "$bin/pds-load" --scenario "$scenario" --system "$system" --name "$name" --rates "$rates" \
		--duration "$run_duration" --warmup "$warmup" --drain-timeout "$drain_timeout" \
		--stop-when-saturated="$([[ "${BENCH_FULL_SWEEP:-0}" == 1 ]] && echo false || echo true)" \
		--out "$results/results.jsonl" ${BENCH_LOAD_ARGS:-} "$@" 2>>"$logs/pds-load.log" | tee -a "$results/$scenario-$name.txt" >&2; then
		log "scenario $scenario on $name failed (see $logs/pds-load.log); going on"
	fi
}

# profile_during URL SECONDS OUT: takes a CPU profile of URL's pprof in the background, starting a few
# seconds in so that it covers steady load rather than the run's setup, and ending before the run does.
profile_during() {
	local url="$1" seconds="$2" out="$3" room
	room=$(($(seconds_of "$duration") - 5))
	((seconds > room)) && seconds="$room"
	((seconds < 1)) && seconds=1
	(
		sleep 5
		curl -fsS -o "$out.pprof" "$url/debug/pprof/profile?seconds=$seconds" &&
			go tool pprof -top "$bin/pds-dataplane" "$out.pprof" >"$out.top.txt" 2>&1
	) >>"$logs/profile.log" 2>&1 &
	profile_pid=$!
}

# warm_up NAME [ARG...]: an unrecorded run of scenario route on PDS, so the runs that count do not pay for a
# cold start (the JVM's JIT compilation in Pulsar, first files of the embedded broker).
warm_up() {
	local name="$1"
	shift
	log "warming $name up (${warmup_duration}, not recorded)"
	"$bin/pds-load" --scenario route --system pds --name "$name-warm-up" --rates "$warmup_rate" \
		--duration "$warmup_duration" --drain-timeout "$drain_timeout" --out "$logs/warm-up.jsonl" "$@" \
		>>"$logs/pds-load.log" 2>&1 || log "warming $name up failed (see $logs/pds-load.log); going on"
}

# route_sweep SYSTEM NAME PPROF-URL PROFILE-OUT [ARG...]: scenario route at every rate, one run each, with a CPU
# profile of the data plane (PPROF-URL, when not empty) taken during the run at the profile rate.
route_sweep() {
	local system="$1" name="$2" pprof="$3" profile_out="$4" rate
	shift 4
	local sweep=" ${rates//,/ } "
	[[ "$sweep" == *" $profile_rate "* ]] || sweep+="$profile_rate "
	local runs_before verdict saturated_at=""
	for rate in $sweep; do
		# Past saturation only the profile's rate still runs: the profile is wanted whatever the sweep found.
		[[ -n "$saturated_at" && ( -z "$pprof" || "$rate" != "$profile_rate" ) ]] && continue
		runs_before=$(result_count)
		if [[ -n "$pprof" && "$rate" == "$profile_rate" ]]; then
			profile_during "$pprof" "$profile_seconds" "$profile_out"
			load route "$system" "$name" "$rate" "$@"
			wait "$profile_pid" || log "the CPU profile failed (see $logs/profile.log)"
			profile_pid=""
		else
			load route "$system" "$name" "$rate" "$@"
		fi
		# One run per rate (so the profile covers its rate alone): the sweep stops here as pds-load's own
		# sweeps do, after the first rate the system did not keep up with.
		[[ "${BENCH_FULL_SWEEP:-0}" == 1 || -n "$saturated_at" ]] && continue
		(($(result_count) > runs_before)) || continue
		verdict=$("$bin/pds-load" --saturated "$results/results.jsonl") || continue
		if [[ "$verdict" == saturated* ]]; then
			saturated_at="$rate"
			log "scenario route on $name did not keep up at $rate events/s ($verdict): skipping its higher rates"
		fi
	done
}

# result_count: how many runs results.jsonl holds so far.
result_count() {
	if [[ -f "$results/results.jsonl" ]]; then wc -l <"$results/results.jsonl"; else echo 0; fi
}

# suite SYSTEM NAME PPROF-URL PROFILE-OUT [ARG...]: every scenario on one system.
suite() {
	local system="$1" name="$2" pprof="$3" profile_out="$4"
	shift 4
	if has_scenario route; then route_sweep "$system" "$name" "$pprof" "$profile_out" "$@"; fi
	if has_scenario streams; then load streams "$system" "$name" "$rates" "$@"; fi
	if has_scenario fanout; then load fanout "$system" "$name" "$fanout_rate" "$@"; fi
	if has_scenario slow; then
		# Scenario slow beside scenario route at the same rate: the fast subscribers' P99 must not move.
		load route "$system" "$name" "$slow_rate" "$@"
		load slow "$system" "$name" "$slow_rate" "$@"
	fi
	if has_scenario sustained && [[ "$sustained" != 0 ]] && disk_room_for_sustained "$name"; then
		load sustained "$system" "$name" "$sustained_rate" "$@"
	fi
}

# seconds_of DURATION: a duration such as 90s, 10m or 1h in seconds.
seconds_of() {
	local d="$1"
	case "$d" in
	*h) echo $((${d%h} * 3600)) ;;
	*m) echo $((${d%m} * 60)) ;;
	*s) echo "${d%s}" ;;
	*) echo "$d" ;;
	esac
}

# disk_room_for_sustained NAME: whether the temp dir has room for scenario sustained's events, which the
# broker keeps until the run deletes its topic (about 700 bytes each on disk, an estimate on the safe side).
disk_room_for_sustained() {
	local need have
	need=$(($(seconds_of "$sustained") * ${sustained_rate%.*} * 700 / 1024))
	have="$(df -Pk "$tmp" | awk 'NR == 2 {print $4}')"
	if ((have < need)); then
		log "skipping scenario sustained on $1: it needs about $((need / 1048576)) GiB in $tmp, $((have / 1048576)) GiB are free"
		return 1
	fi
}

{
	echo "date: $(date -u +%FT%TZ)"
	echo "git: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo ' (uncommitted changes)')"
	echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//') × $(nproc)"
	echo "memory: $(awk '/MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo)"
	echo "kernel: $(uname -sr)"
	echo "go: $(go env GOVERSION)"
	echo "quick: ${BENCH_QUICK:-0}; rates $rates; duration $duration (warm-up $warmup); fanout $fanout_rate/s;" \
		"slow $slow_rate/s; sustained $sustained at $sustained_rate/s; drain timeout $drain_timeout"
	echo "pds-load extra flags: ${BENCH_LOAD_ARGS:-none}"
	echo "pulsar: producer batching 1 ms (data plane driver default, baselines); broker overrides:"
	grep -v '^[[:space:]]*#' deploy/pulsar/standalone-overrides.conf | grep '=' | sed 's/^/  /'
} >"$results/settings.txt"

make --no-print-directory binaries
# The disk's fsync latency bounds every durable write's, and so the P99 floor of every run.
echo "disk of $tmp: $("$bin/pds-load" --fsync-probe "$tmp" 2>&1)" >>"$results/settings.txt"
cat "$results/settings.txt" >&2

# --- PostgreSQL and the control plane ------------------------------------------------------------------
pg_port="$(free_port)"
"$scripts/postgres.sh" start "$tmp/postgres" "$pg_port" >/dev/null
"$scripts/postgres.sh" createdb "$pg_port" pds
cp_url="http://127.0.0.1:$(free_port)"
start_process controlplane "$bin/pds-controlplane" --http-addr "${cp_url#http://}" \
	--raft-addr "127.0.0.1:$(free_port)" --node-id cp-bench --data-dir "$tmp/controlplane" \
	--database-url "$("$scripts/postgres.sh" url "$pg_port" pds)"
wait_ready controlplane "$cp_url"

# start_dataplane NAME BROKER-FLAGS...: a data plane with pprof on; sets dp_url and pprof_url.
start_dataplane() {
	local name="$1"
	shift
	dp_url="http://127.0.0.1:$(free_port)"
	pprof_url="http://127.0.0.1:$(free_port)"
	start_process "$name" "$bin/pds-dataplane" --http-addr "${dp_url#http://}" --raft-addr "127.0.0.1:$(free_port)" \
		--node-id "$name" --controlplane-url "$cp_url" --data-dir "$tmp/$name" --pprof-addr "${pprof_url#http://}" "$@"
	wait_ready "$name" "$dp_url"
}

# --- 1. the embedded broker ------------------------------------------------------------------------------
if [[ "${BENCH_SKIP_EMBEDDED:-0}" == 1 ]]; then
	log "BENCH_SKIP_EMBEDDED=1: no data plane on the embedded broker"
else
	start_dataplane dp-embedded --broker embedded
	warm_up pds-embedded --controlplane-url "$cp_url" --dataplane-url "$dp_url"
	suite pds pds-embedded "$pprof_url" "$results/cpu-dataplane-embedded" --controlplane-url "$cp_url" \
		--dataplane-url "$dp_url" --pid "dataplane=$(pid_of dp-embedded)" --pid "controlplane=$(pid_of controlplane)"
	stop_named dp-embedded
fi
if [[ "${BENCH_SKIP_ENGINE:-0}" == 1 ]]; then
	log "BENCH_SKIP_ENGINE=1: no engine-alone baseline"
else
	suite engine engine-embedded "" "" --engine-data-dir "$tmp/engine"
fi

# --- 2. Centrifugo, the peer of scenarios streams and fanout --------------------------------------------
if [[ "${BENCH_SKIP_CENTRIFUGO:-0}" == 1 ]]; then
	log "BENCH_SKIP_CENTRIFUGO=1: no Centrifugo"
elif ! has_scenario streams && ! has_scenario fanout; then
	log "no scenario streams or fanout: no Centrifugo"
elif [[ ! -x "$scripts/centrifugo.sh" ]]; then
	log "deploy/scripts/centrifugo.sh is missing: skipping the Centrifugo peer"
else
	"$scripts/centrifugo.sh" install >/dev/null
	centrifugo_dir="$tmp/centrifugo"
	{
		read -r centrifugo_api
		read -r centrifugo_key
		read -r centrifugo_ws
		read -r centrifugo_pid
	} < <("$scripts/centrifugo.sh" start "$centrifugo_dir" --port "$(free_port)")
	centrifugo_flags=(--centrifugo-api-url "$centrifugo_api" --centrifugo-api-key "$centrifugo_key"
		--centrifugo-ws-url "$centrifugo_ws" --pid "centrifugo=$centrifugo_pid")
	if has_scenario streams; then load streams centrifugo centrifugo "$rates" "${centrifugo_flags[@]}"; fi
	if has_scenario fanout; then load fanout centrifugo centrifugo "$fanout_rate" "${centrifugo_flags[@]}"; fi
	"$scripts/centrifugo.sh" stop "$centrifugo_dir"
	cp "$centrifugo_dir/centrifugo.log" "$logs/" 2>/dev/null || true
	centrifugo_dir=""
fi

# --- 3. Pulsar ---------------------------------------------------------------------------------------------
if [[ "${BENCH_SKIP_PULSAR:-0}" == 1 ]]; then
	log "BENCH_SKIP_PULSAR=1: no Pulsar"
	exit 0
fi
pulsar_dir="$tmp/pulsar"
ports=()
while ((${#ports[@]} < 3)); do
	port="$("$scripts/pulsar.sh" free-port)"
	[[ " ${ports[*]} " == *" $port "* ]] || ports+=("$port")
done
log "starting Pulsar (20-60 s)"
{
	read -r pulsar_url
	read -r pulsar_admin_url
} < <("$scripts/pulsar.sh" start "$pulsar_dir" --broker-port "${ports[0]}" --web-port "${ports[1]}" --bookie-port "${ports[2]}")
pulsar_pid="$(cat "$pulsar_dir/pulsar.pid")"
log "Pulsar at $pulsar_url (admin $pulsar_admin_url, pid $pulsar_pid)"
start_dataplane dp-pulsar --broker pulsar --pulsar-url "$pulsar_url" --pulsar-admin-url "$pulsar_admin_url"
pulsar_flags=(--pulsar-url "$pulsar_url" --pulsar-admin-url "$pulsar_admin_url" --pid "pulsar=$pulsar_pid")
warm_up pds-pulsar --controlplane-url "$cp_url" --dataplane-url "$dp_url"
suite pds pds-pulsar "$pprof_url" "$results/cpu-dataplane-pulsar" --controlplane-url "$cp_url" --dataplane-url "$dp_url" \
	--pid "dataplane=$(pid_of dp-pulsar)" --pid "controlplane=$(pid_of controlplane)" "${pulsar_flags[@]}"
stop_named dp-pulsar
suite pulsar-raw pulsar-raw "" "" "${pulsar_flags[@]}"
suite pulsar-ws pulsar-ws "" "" "${pulsar_flags[@]}"
