#!/usr/bin/env bash
# pulsar.sh: an Apache Pulsar standalone broker for make run and make test, from the official server
# distribution on Maven Central, cached outside the repository.
#
#   pulsar.sh fetch            ensure the distribution is unpacked in ${PDS_CACHE_DIR:-~/.cache/pds}/pulsar/
#                              (downloaded once with mvn, checksums verified); prints its directory.
#   pulsar.sh start DIR [--broker-port P] [--web-port P] [--bookie-port P] [--no-wait]
#                       [--secure [--broker-tls-port P] [--web-tls-port P]]
#                              start a standalone instance whose config, data and logs live in DIR, wait until
#                              it answers (unless --no-wait) and print its service URL and admin URL (one a
#                              line). Ports: the options, else PDS_PULSAR_BROKER_PORT, PDS_PULSAR_WEB_PORT,
#                              PDS_PULSAR_BOOKIE_PORT, else the ports DIR was last started with, else
#                              6650, 8085, 3181. Starting an instance that already runs only waits for it.
#                              (Pulsar 4.0's standalone, with its RocksDB metadata store, passes the bookie
#                              port on but binds its bookie to a free port of its own choosing, kept in DIR.)
#                              Data is kept: stop DIR then start DIR restarts the same broker.
#                              --secure: every connection must authenticate with a JWT (token auth, HS256
#                              secret key; authorization on, superuser role "pds-admin"), and the broker and
#                              web service also serve TLS, with a certificate for 127.0.0.1 and localhost
#                              signed by a CA made for DIR. It prints the TLS URLs (pulsar+ssl://127.0.0.1:P,
#                              https://127.0.0.1:P); the plain ports stay open as well and require the
#                              token too. TLS ports: the options, else
#                              PDS_PULSAR_BROKER_TLS_PORT, PDS_PULSAR_WEB_TLS_PORT, else the ports DIR was
#                              last started with, else 6651, 8443. Secrets are made at the first secure
#                              start and kept in DIR/secrets/ across restarts (give --secure at each start):
#                                ca.pem        the CA certificate clients trust (PEM)
#                                admin.token   the superuser's token (role pds-admin), one line
#                                server.pem, server.key, ca.key, token-secret.key   the broker's side
#   pulsar.sh wait DIR         wait until the instance in DIR answers; prints its URLs.
#   pulsar.sh stop DIR         graceful stop (SIGTERM; SIGKILL after PDS_PULSAR_STOP_TIMEOUT seconds,
#                              default 60); a no-op when it does not run.
#   pulsar.sh kill DIR         SIGKILL (crash tests); a no-op when it does not run. The standalone bookie
#                              does not journal message data (Pulsar 4.0 starts it with journalWriteData
#                              off), so a killed standalone may lose messages it had acknowledged: a
#                              durability test restarts Pulsar with stop and start.
#   pulsar.sh status DIR       print "running" and the URLs (exit 0) or "stopped" (exit 3); the TLS URLs for
#                              a secure instance.
#   pulsar.sh free-port        print a free loopback TCP port.
#
# Environment: PDS_CACHE_DIR (see fetch), PDS_PULSAR_MEM (JVM memory flags, default sized for a small
# machine), PDS_PULSAR_START_TIMEOUT (seconds to wait for a start, default 240), JAVA_HOME (a Java 17 or
# newer; default: java on PATH, else /usr/lib/jvm/*). --secure also needs openssl.
set -euo pipefail

# The one place that pins the Pulsar version. The SHA-512 is that of the Maven Central artifact whose SHA-1
# Maven Central publishes (Maven Central has no .sha512 for it); mvn -C checks the SHA-1 while downloading.
readonly PULSAR_VERSION=4.0.8
readonly PULSAR_SHA512=65b769b10696cdfebf7fc5bcdc95dd663702e27051e616c1a13cb100e91279525be35352171befe7b0011176330aab29bd0a6c8a0f2f0646641af46d2e33cbd6
readonly PULSAR_ARTIFACT="org.apache.pulsar:pulsar-server-distribution:${PULSAR_VERSION}:tar.gz:bin"
readonly PULSAR_TARBALL="pulsar-server-distribution-${PULSAR_VERSION}-bin.tar.gz"

here="$(cd "$(dirname "$0")" && pwd)"
readonly overrides="$here/../pulsar/standalone-overrides.conf"
readonly cache_dir="${PDS_CACHE_DIR:-$HOME/.cache/pds}/pulsar"
readonly pulsar_home="$cache_dir/apache-pulsar-$PULSAR_VERSION"
# The superuser role of a secured instance (start --secure); DIR/secrets/admin.token is a token for it.
readonly admin_role=pds-admin

die() { echo "pulsar.sh: $*" >&2; exit 1; }
log() { echo "pulsar.sh: $*" >&2; }
# shellcheck source=deploy/scripts/processes.sh
source "$here/processes.sh"

# --- distribution -------------------------------------------------------------------------------------

is_unpacked() {
	[[ -x "$pulsar_home/bin/pulsar" && -f "$pulsar_home/conf/standalone.conf" &&
		-f "$pulsar_home/lib/org.apache.pulsar-pulsar-broker-$PULSAR_VERSION.jar" ]]
}

fetch() {
	if is_unpacked; then
		echo "$pulsar_home"
		return
	fi
	mkdir -p "$cache_dir"
	local tarball="$cache_dir/$PULSAR_TARBALL"
	if [[ -f "$tarball" ]] && ! verify_tarball "$tarball"; then
		log "removing $tarball: its SHA-512 does not match (incomplete download?)"
		rm -f "$tarball"
	fi
	if [[ ! -f "$tarball" ]]; then
		command -v mvn >/dev/null 2>&1 || die "mvn is required to download Pulsar (run deploy/scripts/ensure-deps.sh)"
		log "downloading $PULSAR_ARTIFACT from Maven Central (about 245 MB, once)"
		# -C: fail when the download does not match Maven Central's SHA-1.
		# (Maven 3.8 prints colour codes even in batch mode: strip them.)
		mvn -q -B -C dependency:copy -Dartifact="$PULSAR_ARTIFACT" -DoutputDirectory="$cache_dir" 2>&1 |
			sed 's/\x1b\[[0-9;]*m//g' >&2 || die "mvn could not download $PULSAR_ARTIFACT"
		[[ -f "$tarball" ]] || die "mvn finished but $tarball is missing"
		verify_tarball "$tarball" || die "$tarball does not match the pinned SHA-512; not using it"
	fi
	# Unpack beside the final directory and rename, so that an interrupted unpack never looks complete.
	local staging
	staging="$(mktemp -d "$cache_dir/.unpack.XXXXXX")"
	if ! tar -xzf "$tarball" -C "$staging"; then
		rm -rf "$staging"
		die "could not unpack $tarball"
	fi
	[[ -x "$staging/apache-pulsar-$PULSAR_VERSION/bin/pulsar" ]] ||
		{ rm -rf "$staging"; die "$tarball does not hold apache-pulsar-$PULSAR_VERSION/bin/pulsar"; }
	rm -rf "$pulsar_home"
	mv "$staging/apache-pulsar-$PULSAR_VERSION" "$pulsar_home"
	rm -rf "$staging"
	is_unpacked || die "unpacked $tarball but $pulsar_home is incomplete"
	log "Pulsar $PULSAR_VERSION is in $pulsar_home"
	echo "$pulsar_home"
}

verify_tarball() {
	local sum
	sum="$(sha512sum "$1" | cut -d' ' -f1)"
	[[ "$sum" == "$PULSAR_SHA512" ]]
}

# java_home prints a JAVA_HOME with Java 17 or newer (Pulsar 4.0 needs 17).
java_home() {
	local candidate
	for candidate in "${JAVA_HOME:-}" "$(java_home_of_path)" /usr/lib/jvm/*; do
		[[ -n "$candidate" && -x "$candidate/bin/java" ]] || continue
		if (($(java_major "$candidate/bin/java") >= 17)); then
			echo "$candidate"
			return
		fi
	done
	die "Java 17 or newer is required (run deploy/scripts/ensure-deps.sh, or set JAVA_HOME)"
}

java_home_of_path() {
	local java
	java="$(command -v java 2>/dev/null)" || return 0
	java="$(readlink -f "$java")"
	dirname "$(dirname "$java")"
}

# java_major JAVA prints the major version (8 for 1.8.0_x, 17 for 17.0.x), 0 when it cannot tell.
java_major() {
	local version
	version="$("$1" -version 2>&1 | sed -n 's/.* version "\([^"]*\)".*/\1/p' | head -n 1)"
	version="${version#1.}"
	version="${version%%[.+-]*}"
	[[ "$version" =~ ^[0-9]+$ ]] && echo "$version" || echo 0
}

# --- instances ----------------------------------------------------------------------------------------

# The instance's state in DIR: standalone.conf (generated at each start), ports.env (the ports and mode it
# was started with; the ports are reused by the next start), pulsar.pid, data/, logs/, secrets/ (--secure).


pid_of() { pid_from_file "$1/pulsar.pid" "-c $1/standalone.conf"; }

is_running() { pid_of "$1" >/dev/null; }

load_ports() {
	local dir="$1"
	broker_port="" web_port="" bookie_port="" broker_tls_port="" web_tls_port="" secure=false
	if [[ -f "$dir/ports.env" ]]; then
		# shellcheck source=/dev/null
		source "$dir/ports.env"
	fi
}

print_urls() {
	if [[ "$secure" == true ]]; then
		echo "pulsar+ssl://127.0.0.1:$broker_tls_port"
		echo "https://127.0.0.1:$web_tls_port"
		return
	fi
	echo "pulsar://127.0.0.1:$broker_port"
	echo "http://127.0.0.1:$web_port"
}

# listening_ports prints the ports the instance in DIR listens on (after load_ports).
listening_ports() {
	echo "$broker_port" "$web_port"
	if [[ "$secure" == true ]]; then echo "$broker_tls_port" "$web_tls_port"; fi
}


# write_config DIR: the distribution's standalone.conf with every key of the overrides file and the ports
# replaced. The stock file does not end in a newline, so keys are filtered out and appended, never
# concatenated.
write_config() {
	local dir="$1"
	{
		grep -v '^[[:space:]]*#' "$overrides" | grep '='
		echo "brokerServicePort=$broker_port"
		echo "webServicePort=$web_port"
		if [[ "$secure" == true ]]; then secure_config "$dir"; fi
	} >"$dir/standalone.overrides"
	awk -F= '
		NR == FNR { if ($1 != "") override[$1] = 1; next }
		!($1 in override) { print }
	' "$dir/standalone.overrides" "$pulsar_home/conf/standalone.conf" >"$dir/standalone.conf.new"
	{
		echo
		echo "# PDS settings (deploy/pulsar/standalone-overrides.conf, pulsar.sh's ports and --secure)"
		cat "$dir/standalone.overrides"
	} >>"$dir/standalone.conf.new"
	mv "$dir/standalone.conf.new" "$dir/standalone.conf"
	rm -f "$dir/standalone.overrides"
}

# secure_config DIR prints the settings of a secured instance. The standalone's own clients (the admin
# client that creates the "public" tenant, the WebSocket service, the broker's client for system topics)
# connect like any other client: over TLS, with the superuser's token.
secure_config() {
	local secrets="$1/secrets"
	cat <<-EOF
		brokerServicePortTls=$broker_tls_port
		webServicePortTls=$web_tls_port
		tlsCertificateFilePath=$secrets/server.pem
		tlsKeyFilePath=$secrets/server.key
		tlsTrustCertsFilePath=$secrets/ca.pem
		tlsAllowInsecureConnection=false
		tlsRequireTrustedClientCertOnConnect=false
		authenticationEnabled=true
		authenticationProviders=org.apache.pulsar.broker.authentication.AuthenticationProviderToken
		tokenSecretKey=file://$secrets/token-secret.key
		authorizationEnabled=true
		superUserRoles=$admin_role
		brokerClientTlsEnabled=true
		brokerClientTrustCertsFilePath=$secrets/ca.pem
		brokerClientAuthenticationPlugin=org.apache.pulsar.client.impl.auth.AuthenticationToken
		brokerClientAuthenticationParameters=file://$secrets/admin.token
	EOF
}

# ensure_secrets DIR HOME JAVA_HOME: the CA, the server certificate, the token secret key and the
# superuser's token, each made when missing and otherwise kept, so clients holding the CA file or the
# token keep working across restarts.
ensure_secrets() {
	local dir="$1" home="$2" java="$3"
	local secrets="$dir/secrets"
	mkdir -p "$secrets"
	chmod 700 "$secrets"
	if [[ ! -s "$secrets/ca.pem" || ! -s "$secrets/ca.key" ]]; then
		rm -f "$secrets/server.pem"
		make_ca "$secrets"
	fi
	if [[ ! -s "$secrets/server.pem" || ! -s "$secrets/server.key" ]]; then
		make_server_cert "$secrets"
	fi
	if [[ ! -s "$secrets/token-secret.key" ]]; then
		rm -f "$secrets/admin.token"
		JAVA_HOME="$java" "$home/bin/pulsar" tokens create-secret-key --output "$secrets/token-secret.key" \
			>>"$dir/logs/stdout.log" 2>&1 || die "could not create the token secret key (see $dir/logs/stdout.log)"
		chmod 600 "$secrets/token-secret.key"
	fi
	if [[ ! -s "$secrets/admin.token" ]]; then
		local token
		token="$(JAVA_HOME="$java" "$home/bin/pulsar" tokens create --secret-key "file://$secrets/token-secret.key" \
			--subject "$admin_role" 2>>"$dir/logs/stdout.log")" ||
			die "could not create the $admin_role token (see $dir/logs/stdout.log)"
		# The tool may print JVM notices first: the token is its last line.
		token="$(tail -n 1 <<<"$token")"
		[[ "$token" =~ ^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$ ]] || die "bin/pulsar tokens create printed no JWT"
		(umask 077 && echo "$token" >"$secrets/admin.token")
	fi
}

# openssl_quiet runs openssl, showing its output only when it fails.
openssl_quiet() {
	local out
	out="$(openssl "$@" 2>&1)" || die "openssl $1 failed: $out"
}

make_ca() {
	local secrets="$1"
	(umask 077 && openssl_quiet genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$secrets/ca.key")
	openssl_quiet req -x509 -new -key "$secrets/ca.key" -out "$secrets/ca.pem" -days 3650 -sha256 \
		-subj "/CN=PDS development CA ($(hostname))" \
		-addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign"
}

# make_server_cert SECRETS: a certificate for 127.0.0.1 and localhost signed by the CA. The key is
# PKCS#8 (what openssl genpkey writes), the only form the broker reads.
make_server_cert() {
	local secrets="$1"
	(umask 077 && openssl_quiet genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$secrets/server.key")
	openssl_quiet req -new -key "$secrets/server.key" -out "$secrets/server.csr" -subj "/CN=127.0.0.1"
	printf '%s\n' "subjectAltName=IP:127.0.0.1,DNS:localhost" "basicConstraints=critical,CA:FALSE" \
		"keyUsage=critical,digitalSignature,keyEncipherment" "extendedKeyUsage=serverAuth" >"$secrets/server.ext"
	openssl_quiet x509 -req -in "$secrets/server.csr" -CA "$secrets/ca.pem" -CAkey "$secrets/ca.key" \
		-set_serial "0x$(openssl rand -hex 16)" -days 825 -sha256 -extfile "$secrets/server.ext" -out "$secrets/server.pem"
	rm -f "$secrets/server.csr" "$secrets/server.ext"
}

start() {
	local dir="$1" wait=true
	shift
	local want_broker="${PDS_PULSAR_BROKER_PORT:-}" want_web="${PDS_PULSAR_WEB_PORT:-}"
	local want_bookie="${PDS_PULSAR_BOOKIE_PORT:-}" want_broker_tls="${PDS_PULSAR_BROKER_TLS_PORT:-}"
	local want_web_tls="${PDS_PULSAR_WEB_TLS_PORT:-}" want_secure=false
	while (($#)); do
		case "$1" in
		--broker-port) want_broker="${2:?--broker-port needs a value}"; shift 2 ;;
		--web-port) want_web="${2:?--web-port needs a value}"; shift 2 ;;
		--bookie-port) want_bookie="${2:?--bookie-port needs a value}"; shift 2 ;;
		--broker-tls-port) want_broker_tls="${2:?--broker-tls-port needs a value}"; shift 2 ;;
		--web-tls-port) want_web_tls="${2:?--web-tls-port needs a value}"; shift 2 ;;
		--secure) want_secure=true; shift ;;
		--no-wait) wait=false; shift ;;
		*) die "start: unknown option $1" ;;
		esac
	done
	dir="$(abs_dir "$dir")"
	load_ports "$dir"
	if is_running "$dir"; then
		[[ "$secure" == "$want_secure" ]] ||
			die "start: the instance in $dir already runs with secure=$secure; stop it before starting it with secure=$want_secure"
		log "the instance in $dir already runs (broker $broker_port, web $web_port)"
		if [[ "$wait" == true ]]; then wait_ready "$dir"; else print_urls; fi
		return
	fi
	broker_port="${want_broker:-${broker_port:-6650}}"
	web_port="${want_web:-${web_port:-8085}}"
	bookie_port="${want_bookie:-${bookie_port:-3181}}"
	broker_tls_port="${want_broker_tls:-${broker_tls_port:-6651}}"
	web_tls_port="${want_web_tls:-${web_tls_port:-8443}}"
	secure="$want_secure"
	local port
	for port in "$broker_port" "$web_port" "$bookie_port" "$broker_tls_port" "$web_tls_port"; do
		[[ "$port" =~ ^[0-9]+$ ]] || die "start: ports must be numbers, got \"$port\""
	done
	for port in $(listening_ports); do
		port_in_use "$port" && die "start: port $port is in use on 127.0.0.1 (another Pulsar?); choose other ports"
	done

	local home java
	home="$(fetch)"
	java="$(java_home)"
	mkdir -p "$dir/data" "$dir/logs"
	if [[ "$secure" == true ]]; then
		command -v openssl >/dev/null 2>&1 || die "start --secure: openssl is required"
		ensure_secrets "$dir" "$home" "$java"
	fi
	printf '%s\n' "broker_port=$broker_port" "web_port=$web_port" "bookie_port=$bookie_port" \
		"broker_tls_port=$broker_tls_port" "web_tls_port=$web_tls_port" "secure=$secure" >"$dir/ports.env"
	write_config "$dir"
	echo "=== $(date -u +%FT%TZ) start: broker $broker_port, web $web_port, bookie $bookie_port, secure $secure" \
		>>"$dir/logs/stdout.log"
	# setsid: a Ctrl-C meant for the caller must not reach the broker; the caller stops it through this
	# script. bin/pulsar execs java, so $! is the JVM's pid. The JVM's output goes to a file only, so a
	# caller reading this script's output through a pipe does not wait for the broker to exit.
	(
		cd "$home"
		export JAVA_HOME="$java" PULSAR_LOG_DIR="$dir/logs"
		export PULSAR_MEM="${PDS_PULSAR_MEM:--Xms512m -Xmx1g -XX:MaxDirectMemorySize=1g}"
		exec setsid bin/pulsar standalone -c "$dir/standalone.conf" --no-functions-worker --no-stream-storage \
			--bookkeeper-dir "$dir/data/bookkeeper" --metadata-dir "$dir/data/metadata" \
			--bookkeeper-port "$bookie_port" -a 127.0.0.1
	) >>"$dir/logs/stdout.log" 2>&1 </dev/null &
	local pid="$!" deadline=$((SECONDS + 30))
	echo "$pid" >"$dir/pulsar.pid"
	# Until the subshell has exec'd bin/pulsar its command line is this script's: wait for that, so that
	# is_running tells a starting broker from a dead one.
	until is_running "$dir"; do
		if ! kill -0 "$pid" 2>/dev/null || ((SECONDS > deadline)); then
			log_tail "$dir"
			die "Pulsar did not start in $dir"
		fi
		sleep 0.1
	done
	log "started Pulsar $PULSAR_VERSION (pid $pid) in $dir: broker $broker_port, web $web_port, bookie $bookie_port$(
		[[ "$secure" == false ]] || echo ", TLS broker $broker_tls_port, TLS web $web_tls_port, token auth")"
	if [[ "$wait" == true ]]; then wait_ready "$dir"; else print_urls; fi
}

log_tail() {
	local dir="$1"
	log "last lines of $dir/logs/stdout.log:"
	tail -n 40 "$dir/logs/stdout.log" >&2 || true
}

# wait_ready DIR: the broker is ready when its admin API lists the tenant "public" (standalone creates it
# after the broker service is up) and the broker port accepts connections; for a secure instance, the
# TLS ones, asked with the superuser's token and the instance's CA.
wait_ready() {
	local dir timeout="${PDS_PULSAR_START_TIMEOUT:-240}"
	[[ -d "$1" ]] || die "wait: $1 does not exist"
	dir="$(abs_dir "$1")"
	load_ports "$dir"
	[[ -n "$web_port" ]] || die "wait: $dir holds no Pulsar instance (no ports.env)"
	local deadline=$((SECONDS + timeout))
	while :; do
		if list_tenants "$dir" 2>/dev/null | grep -q '"public"' && port_in_use "$broker_port" &&
			{ [[ "$secure" == false ]] || port_in_use "$broker_tls_port"; }; then
			break
		fi
		if ! is_running "$dir"; then
			log_tail "$dir"
			die "the Pulsar in $dir is not running (it exited during start-up?)"
		fi
		if ((SECONDS > deadline)); then
			log_tail "$dir"
			kill_instance "$dir"
			die "the Pulsar in $dir did not answer within ${timeout}s; killed it"
		fi
		sleep 0.5
	done
	log "Pulsar in $dir is ready"
	print_urls
}

# list_tenants DIR prints the tenants the admin API of the instance in DIR lists (after load_ports).
list_tenants() {
	local dir="$1"
	if [[ "$secure" == false ]]; then
		curl -fsS -m 5 "http://127.0.0.1:$web_port/admin/v2/tenants"
		return
	fi
	# The token goes through curl's config on stdin rather than its command line, which ps shows.
	printf 'header = "Authorization: Bearer %s"\n' "$(cat "$dir/secrets/admin.token")" |
		curl -fsS -m 5 -K - --cacert "$dir/secrets/ca.pem" "https://127.0.0.1:$web_tls_port/admin/v2/tenants"
}


# wait_gone DIR PID SECONDS: true when the process is gone and its ports are closed within SECONDS. A killed
# JVM loses its command line, and its main thread turns zombie, while other threads still hold the sockets:
# a restart must wait for the ports, not just for the pid.
wait_gone() {
	local dir="$1" pid="$2" deadline=$((SECONDS + $3)) port
	load_ports "$dir"
	while alive "$pid"; do
		((SECONDS <= deadline)) || return 1
		sleep 0.2
	done
	for port in $(listening_ports); do
		while port_in_use "$port"; do
			((SECONDS <= deadline)) || return 1
			sleep 0.2
		done
	done
}

stop_instance() {
	local dir pid timeout="${PDS_PULSAR_STOP_TIMEOUT:-60}"
	[[ -d "$1" ]] || return 0
	dir="$(abs_dir "$1")"
	pid="$(pid_of "$dir")" || { rm -f "$dir/pulsar.pid"; return 0; }
	kill -TERM "$pid" 2>/dev/null || true
	if ! wait_gone "$dir" "$pid" "$timeout"; then
		log "Pulsar in $dir did not stop within ${timeout}s; killing it"
		kill_instance "$dir"
		return
	fi
	rm -f "$dir/pulsar.pid"
	log "stopped Pulsar in $dir"
}

kill_instance() {
	local dir pid
	[[ -d "$1" ]] || return 0
	dir="$(abs_dir "$1")"
	pid="$(pid_of "$dir")" || { rm -f "$dir/pulsar.pid"; return 0; }
	kill -KILL "$pid" 2>/dev/null || true
	wait_gone "$dir" "$pid" 30 || die "Pulsar (pid $pid) in $dir survived SIGKILL for 30s"
	rm -f "$dir/pulsar.pid"
	log "killed Pulsar in $dir"
}

status() {
	local dir
	[[ -d "$1" ]] || { echo stopped; return 3; }
	dir="$(abs_dir "$1")"
	if is_running "$dir"; then
		load_ports "$dir"
		echo running
		print_urls
		return 0
	fi
	echo stopped
	return 3
}


usage="usage: pulsar.sh fetch | start DIR [--broker-port P] [--web-port P] [--bookie-port P] [--no-wait] [--secure [--broker-tls-port P] [--web-tls-port P]] | wait DIR | stop DIR | kill DIR | status DIR | free-port"
case "${1:-}" in
fetch) [[ $# == 1 ]] || die "$usage"; fetch ;;
start) [[ $# -ge 2 ]] || die "$usage"; shift; start "$@" ;;
wait) [[ $# == 2 ]] || die "$usage"; wait_ready "$2" ;;
stop) [[ $# == 2 ]] || die "$usage"; stop_instance "$2" ;;
kill) [[ $# == 2 ]] || die "$usage"; kill_instance "$2" ;;
status) [[ $# == 2 ]] || die "$usage"; status "$2" ;;
free-port) free_port ;;
*) die "$usage" ;;
esac
