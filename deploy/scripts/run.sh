#!/usr/bin/env bash
# run.sh (make run): PDS on this machine. Starts PostgreSQL (data kept in ./data/postgres), the control plane,
# the data plane with its broker, creates the demo topics and subscription when missing, starts the demo
# publisher and prints how to watch events arrive. Ctrl-C stops everything. Logs go to ./data/logs.
#
# Environment (all optional):
#   PDS_BROKER       embedded (default: in-process NATS JetStream, data in ./data/dataplane) or pulsar
#   PDS_PULSAR_URL   with PDS_BROKER=pulsar: use this Pulsar cluster (e.g. pulsar://pulsar.example:6650,
#                    pulsar+ssl://… for TLS) and PDS_PULSAR_ADMIN_URL (its web service URL, required then);
#                    PDS_PULSAR_AUTH_TOKEN and PDS_PULSAR_TLS_TRUST_CERTS_FILE reach the data plane as they
#                    are. Unset: run.sh starts a standalone Pulsar with its data in ./data/pulsar (kept
#                    across runs; deploy/scripts/pulsar.sh) on PDS_PULSAR_BROKER_PORT (default 6650) and
#                    PDS_PULSAR_WEB_PORT (default 8085), and stops it on exit.
#   PDS_PG_PORT      PostgreSQL port (default 5432)
#   PDS_CP_HTTP_ADDR control plane HTTP address (default 127.0.0.1:8080)
#   PDS_CP_RAFT_ADDR control plane raft address (default 127.0.0.1:7000)
#   PDS_DP_HTTP_ADDR data plane HTTP address (default 127.0.0.1:8081)
#   PDS_DP_RAFT_ADDR data plane raft address (default 127.0.0.1:7001)
#   PDS_DEMO_RATE    demo events per second (default 20; 0 starts no demo publisher)
set -euo pipefail
cd "$(dirname "$0")/../.."
root="$PWD"

pg_port="${PDS_PG_PORT:-5432}"
cp_http="${PDS_CP_HTTP_ADDR:-127.0.0.1:8080}"
cp_raft="${PDS_CP_RAFT_ADDR:-127.0.0.1:7000}"
dp_http="${PDS_DP_HTTP_ADDR:-127.0.0.1:8081}"
dp_raft="${PDS_DP_RAFT_ADDR:-127.0.0.1:7001}"
demo_rate="${PDS_DEMO_RATE:-20}"
data="$root/data"
logs="$data/logs"
cp_url="http://$cp_http"
dp_url="http://$dp_http"
demo_subscription="demo-ui-state"
broker="${PDS_BROKER:-embedded}"
pulsar_dir="$data/pulsar"
pulsar_started=false

log() { echo "run.sh: $*" >&2; }
die() { log "$*"; exit 1; }
# shellcheck source=deploy/scripts/processes.sh
source deploy/scripts/processes.sh

case "$broker" in
embedded) ;;
pulsar)
	if [[ -n "${PDS_PULSAR_URL:-}" && -z "${PDS_PULSAR_ADMIN_URL:-}" ]]; then
		log "PDS_PULSAR_URL is set: set PDS_PULSAR_ADMIN_URL to that cluster's web service URL too"
		exit 2
	fi
	;;
*) log "PDS_BROKER must be embedded or pulsar, got \"$broker\""; exit 2 ;;
esac

deploy/scripts/ensure-deps.sh

mkdir -p "$logs"
# user postgres must be able to reach ./data/postgres.
chmod 755 "$data"

names=()
pids=()
cleanup() {
	local status=$?
	trap - EXIT
	# make forwards SIGTERM to its children and impatient users press Ctrl-C twice: finish stopping anyway
	# (every step is bounded).
	trap '' INT TERM
	log "stopping"
	# newest first: publisher, data plane, control plane.
	for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
		stop_process "${names[i]}" "${pids[i]}"
	done
	if [[ "$pulsar_started" == true ]]; then
		deploy/scripts/pulsar.sh stop "$pulsar_dir" || log "stopping Pulsar failed"
	fi
	deploy/scripts/postgres.sh stop "$data/postgres" || log "stopping PostgreSQL failed"
	log "stopped; logs are in $logs"
	exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Pulsar takes 20-60 s to start: launch it now, build meanwhile, wait for it before the data plane starts.
if [[ "$broker" == pulsar && -z "${PDS_PULSAR_URL:-}" ]]; then
	pulsar_started=true
	deploy/scripts/pulsar.sh start "$pulsar_dir" --no-wait >/dev/null
fi
make --no-print-directory binaries

start_process() {
	local name="$1"
	shift
	echo "=== $(date -u +%FT%TZ) $*" >>"$logs/$name.log"
	"$@" >>"$logs/$name.log" 2>&1 &
	names+=("$name")
	pids+=("$!")
	log "started $name (pid $!, log $logs/$name.log)"
}

# wait_ready NAME URL PID: polls URL/readyz until it answers 200; fails when the process exits or after 90s.
wait_ready() {
	wait_ready_http "$1" "$2" "$3" "$logs/$1.log" 90
	log "$1 is ready at $2"
}

# connect_call URL/SERVICE/METHOD JSON: a unary Connect call with a JSON body. Prints the response body;
# returns 0 on success, 3 when the answer is already_exists, 1 otherwise.
connect_call() {
	local url="$1" body="$2" out status
	out="$(mktemp)"
	status="$(curl -sS -o "$out" -w '%{http_code}' -H 'Content-Type: application/json' --data "$body" "$url")" ||
		{ rm -f "$out"; return 1; }
	cat "$out"
	if [[ "$status" == 200 ]]; then
		rm -f "$out"
		return 0
	fi
	if grep -q '"code":"already_exists"' "$out"; then
		rm -f "$out"
		return 3
	fi
	rm -f "$out"
	log "call to $url failed with HTTP $status"
	return 1
}

config_version() { local v; v="$(sed -n 's/.*"config_version":"\{0,1\}\([0-9][0-9]*\).*/\1/p')"; echo "${v:-0}"; }

# wait_config_version VERSION: waits until the data plane applied the control plane's config VERSION.
wait_config_version() {
	local want="$1" have deadline=$((SECONDS + 30))
	while :; do
		have="$(curl -sS "$dp_url/readyz" 2>/dev/null | config_version)"
		if [[ -n "$have" ]] && ((have >= want)); then return; fi
		if ((SECONDS > deadline)); then
			log "data plane config version ${have:-unknown} did not reach $want within 30s"
			exit 1
		fi
		sleep 0.2
	done
}

deploy/scripts/postgres.sh start "$data/postgres" "$pg_port" >/dev/null
deploy/scripts/postgres.sh createdb "$pg_port" pds
database_url="$(deploy/scripts/postgres.sh url "$pg_port" pds)"
log "PostgreSQL is up: $database_url"

start_process pds-controlplane "$root/.bin/pds-controlplane" --http-addr "$cp_http" --raft-addr "$cp_raft" \
	--node-id cp-1 --data-dir "$data/controlplane" --database-url "$database_url"
wait_ready pds-controlplane "$cp_url" "${pids[-1]}"
broker_flags=(--broker "$broker")
pulsar_line=""
if [[ "$broker" == pulsar ]]; then
	if [[ "$pulsar_started" == true ]]; then
		{ read -r pulsar_url; read -r pulsar_admin_url; } < <(deploy/scripts/pulsar.sh wait "$pulsar_dir")
		log "Pulsar is up: $pulsar_url (admin $pulsar_admin_url; data in $pulsar_dir, log $pulsar_dir/logs)"
	else
		pulsar_url="$PDS_PULSAR_URL"
		pulsar_admin_url="$PDS_PULSAR_ADMIN_URL"
		log "using the Pulsar cluster at $pulsar_url (admin $pulsar_admin_url)"
	fi
	broker_flags+=(--pulsar-url "$pulsar_url" --pulsar-admin-url "$pulsar_admin_url")
	pulsar_line="  Pulsar          $pulsar_url   (admin $pulsar_admin_url)"
fi
start_process pds-dataplane "$root/.bin/pds-dataplane" --http-addr "$dp_http" --raft-addr "$dp_raft" \
	--node-id dp-1 --controlplane-url "$cp_url" "${broker_flags[@]}" --data-dir "$data/dataplane"
wait_ready pds-dataplane "$dp_url" "${pids[-1]}"

# The demo publisher sends all five data types, each to its default topic.
version=0
for topic in "portfolio/state/updated PORTFOLIO_STATE" "portfolio/performance/attributed PERFORMANCE_ATTRIBUTION" \
	"portfolio/rebalancing/proposed REBALANCING" "portfolio/risk-budget/updated RISK_BUDGET" \
	"portfolio/cash/updated CASH_MANAGEMENT"; do
	read -r name data_type <<<"$topic"
	rc=0
	answer="$(connect_call "$cp_url/pds.v1.TopicService/CreateTopic" \
		"{\"topic\":{\"topic_name\":\"$name\",\"data_type\":\"$data_type\",\"partitions\":4}}")" || rc=$?
	case "$rc" in
	0) log "created topic $name"; v="$(config_version <<<"$answer")"; ((v > version)) && version="$v" ;;
	3) log "topic $name exists" ;;
	*) log "creating topic $name failed: $answer"; exit 1 ;;
	esac
done
rc=0
answer="$(connect_call "$cp_url/pds.v1.SubscriptionService/CreateSubscription" \
	"{\"subscription\":{\"subscription_id\":\"$demo_subscription\",\"topic_name\":\"portfolio/state/updated\",\"subscriber_workflow\":\"user_interface\"}}")" || rc=$?
case "$rc" in
0) log "created subscription $demo_subscription"; v="$(config_version <<<"$answer")"; ((v > version)) && version="$v" ;;
3) log "subscription $demo_subscription exists" ;;
*) log "creating subscription $demo_subscription failed: $answer"; exit 1 ;;
esac
((version > 0)) && wait_config_version "$version"

if [[ "$demo_rate" != 0 ]]; then
	start_process pds-demo-publisher "$root/.bin/pds-demo-publisher" --dataplane-url "$dp_url" --rate "$demo_rate"
fi

stream_request="{\"subscription_id\":\"$demo_subscription\",\"auto_ack\":true}"
envelope="$(printf '\\x00\\x00\\x00\\x00\\x%02x' "${#stream_request}")"
cat <<INFO

PDS is running. Ctrl-C stops everything. Logs: $logs

  control plane   $cp_url   (admin API: pds.v1.TopicService, pds.v1.SubscriptionService; /readyz /metrics)
  data plane      $dp_url   (pds.v1.PortfolioStream, REST /api/v1/portfolio/{id}/state, WebSocket /api/v1/ws)
  PostgreSQL      $database_url
${pulsar_line:+$pulsar_line
}
Latest state of a portfolio (REST):
  curl -s $dp_url/api/v1/portfolio/portfolio_001/state

Watch events arrive on subscription $demo_subscription (one message per batch; buf curl renders names in lowerCamelCase):
  .bin/buf curl --schema proto --protocol connect --data '$stream_request' $dp_url/pds.v1.PortfolioStream/StreamPortfolio

The same with plain curl (Connect streaming: each JSON message is preceded by 5 bytes of binary framing):
  printf '$envelope%s' '$stream_request' | curl -sN --output - -H 'Content-Type: application/connect+json' --data-binary @- $dp_url/pds.v1.PortfolioStream/StreamPortfolio

Publish one event yourself:
  curl -s -H 'Content-Type: application/json' --data '{"events":[{"data_type":"PORTFOLIO_STATE","data":{"portfolio_id":"portfolio_001","total_value":1000000.00,"performance_metrics":{"daily_return":0.012,"ytd_return":0.085}},"routing":{"target_workflows":["reporting_analytics","user_interface"]}}]}' $dp_url/pds.v1.PortfolioStream/Publish

INFO

# Run until Ctrl-C or until one of the processes dies.
set +e
wait -n "${pids[@]}"
set -e
for i in "${!pids[@]}"; do
	if ! kill -0 "${pids[i]}" 2>/dev/null; then
		log "${names[i]} exited unexpectedly; last lines of $logs/${names[i]}.log:"
		tail -n 30 "$logs/${names[i]}.log" >&2
	fi
done
exit 1
