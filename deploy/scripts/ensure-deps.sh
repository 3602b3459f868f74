#!/usr/bin/env bash
# ensure-deps.sh: installs what PDS needs to build, test and run on a fresh Debian machine, and does nothing
# (quickly) when everything is already there. Go and Node.js/npm are expected on the machine.
#   - PostgreSQL server binaries (apt package postgresql) for make run and make test;
#   - shellcheck (apt) for make lint;
#   - Java 17 or newer and Maven (apt openjdk-17-jre-headless, maven) for Apache Pulsar, whose server
#     distribution deploy/scripts/pulsar.sh fetch downloads once into ~/.cache/pds/pulsar (PDS_CACHE_DIR);
#   - web-admin's npm packages (protoc-gen-es for make gen);
#   - the pinned Go tools in .bin/ (buf, protoc-gen-go, protoc-gen-connect-go, sqlc) via make tools.
set -euo pipefail
cd "$(dirname "$0")/../.."

need() { command -v "$1" >/dev/null 2>&1 || { echo "ensure-deps.sh: $1 is required: $2" >&2; exit 1; }; }
need go "install Go 1.26 or newer"
need npm "install Node.js 20 or newer"
need make "apt-get install -y make"
need curl "apt-get install -y curl"

apt_updated=false
apt_install() {
	local sudo=()
	[[ "$(id -u)" == 0 ]] || sudo=(sudo)
	if [[ "$apt_updated" == false ]]; then
		"${sudo[@]}" apt-get update -qq
		apt_updated=true
	fi
	DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq "$@"
}

if ! compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null; then
	echo "ensure-deps.sh: installing PostgreSQL" >&2
	apt_install postgresql
	# Debian's package starts its own cluster on port 5432, which would collide with make run's private one.
	if command -v pg_lsclusters >/dev/null 2>&1; then
		pg_lsclusters --no-header 2>/dev/null | while read -r version name _; do
			pg_ctlcluster "$version" "$name" stop 2>/dev/null || true
			# keep it from coming back at boot
			if [[ -f "/etc/postgresql/$version/$name/start.conf" ]]; then
				echo manual >"/etc/postgresql/$version/$name/start.conf"
			fi
		done
	fi
fi

# make lint checks the shell scripts.
if ! command -v shellcheck >/dev/null 2>&1; then
	echo "ensure-deps.sh: installing shellcheck" >&2
	apt_install shellcheck
fi

# Pulsar 4.0 runs on Java 17 or newer; pulsar.sh also finds one under /usr/lib/jvm when java on PATH is older.
java_major() {
	local version
	version="$("$1" -version 2>&1 | sed -n 's/.* version "\([^"]*\)".*/\1/p' | head -n 1)"
	version="${version#1.}"
	version="${version%%[.+-]*}"
	[[ "$version" =~ ^[0-9]+$ ]] && echo "$version" || echo 0
}
have_java17=false
for java in "${JAVA_HOME:+$JAVA_HOME/bin/java}" "$(command -v java 2>/dev/null || true)" /usr/lib/jvm/*/bin/java; do
	if [[ -n "$java" && -x "$java" ]] && (($(java_major "$java") >= 17)); then
		have_java17=true
		break
	fi
done
if [[ "$have_java17" == false ]]; then
	echo "ensure-deps.sh: installing Java 17 (for Pulsar)" >&2
	apt_install openjdk-17-jre-headless
fi
if ! command -v mvn >/dev/null 2>&1; then
	echo "ensure-deps.sh: installing Maven (downloads Pulsar from Maven Central)" >&2
	apt_install maven
fi
deploy/scripts/pulsar.sh fetch >/dev/null

make --no-print-directory tools
