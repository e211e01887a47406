#!/usr/bin/env bash
# Installs the Debian 12 packages pg_egress needs to build, test and demo.
# Installs only what is missing, so a warm machine stays fast.  Run as root.
set -euo pipefail

pkgs=(
	build-essential
	postgresql-15
	postgresql-server-dev-15
	postgresql-15-wal2json
	libcurl4-openssl-dev
	zlib1g-dev
	libkrb5-dev
	libipc-run-perl
	libjson-pp-perl
	python3
	bc
)

missing=()
for p in "${pkgs[@]}"; do
	if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
		missing+=("$p")
	fi
done

# server and headers must be the same minor release (PGXS builds against the headers)
srv=$(dpkg-query -W -f='${Version}' postgresql-15 2>/dev/null || true)
dev=$(dpkg-query -W -f='${Version}' postgresql-server-dev-15 2>/dev/null || true)

# Node (the test S3 server and HTTP receiver, JSON-schema validation): any installed node >= 18 will
# do; Debian's packages otherwise
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
	missing+=(nodejs npm)
	pkgs+=(nodejs npm)
fi

if [ ${#missing[@]} -eq 0 ] && [ "$srv" = "$dev" ]; then
	echo "install-deps: all packages present"
	exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
	echo "install-deps: missing packages: ${missing[*]}; run as root" >&2
	exit 1
fi

export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# upgrade the server together with the headers so both are the same version
apt-get install -y -qq --no-install-recommends "${pkgs[@]}" postgresql-15 postgresql-client-15 >/dev/null
echo "install-deps: installed ${missing[*]:-(version sync)}"
