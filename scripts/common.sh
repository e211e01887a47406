# Shared by the scripts: build, install, and the unprivileged user that runs
# PostgreSQL (initdb and postgres refuse to run as root).
# shellcheck shell=bash

EGRESS_USER=${EGRESS_USER:-pgegress}
PG_BINDIR=$(pg_config --bindir 2>/dev/null || echo /usr/lib/postgresql/15/bin)

# Install packages (root only), build and install the extension.
egress_setup() {
	if [ "$(id -u)" -eq 0 ]; then
		bash scripts/install-deps.sh
	fi
	PG_BINDIR=$(pg_config --bindir)
	egress_npm_ci test/s3
	egress_npm_ci test/http
	egress_npm_ci test/kinesis
	make -s -j2
	if [ "$(id -u)" -eq 0 ]; then
		make -s install
	else
		# a developer's own machine: install needs write access to PostgreSQL's dirs
		make -s install || sudo make -s install
	fi
}

# npm packages of a test server directory, from its package-lock.json;
# skipped when installed after the lock file last changed.
egress_npm_ci() {
	local dir=$1
	if [ "$dir/node_modules/.package-lock.json" -nt "$dir/package-lock.json" ]; then
		return 0
	fi
	if ! command -v npm >/dev/null 2>&1; then
		echo "npm not found: the test servers in $dir need it (scripts/install-deps.sh installs it as root)" >&2
		return 1
	fi
	(cd "$dir" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error >/dev/null)
}

# Create the unprivileged user when running as root.
egress_ensure_user() {
	if [ "$(id -u)" -eq 0 ] && ! id "$EGRESS_USER" >/dev/null 2>&1; then
		useradd --create-home --shell /bin/bash "$EGRESS_USER"
	fi
}

# Run a command as the unprivileged user (or as is, when not root).
egress_as_user() {
	if [ "$(id -u)" -eq 0 ]; then
		runuser -u "$EGRESS_USER" -- env PATH="$PG_BINDIR:$PATH" "$@"
	else
		env PATH="$PG_BINDIR:$PATH" "$@"
	fi
}

# A throwaway cluster in DIR (socket there too) on PORT, pg_egress loaded.
# Further postgresql.conf lines come on standard input.
egress_start_cluster() {
	local dir=$1 port=$2
	egress_as_user initdb -D "$dir/data" -U postgres --auth=trust --encoding=UTF8 --locale=C >/dev/null
	{
		cat <<CONF
port = $port
listen_addresses = ''
unix_socket_directories = '$dir'
shared_preload_libraries = 'pg_egress'
wal_level = logical
CONF
		# builds that restrict output plugins must allow wal2json
		if egress_as_user "$PG_BINDIR/postgres" --describe-config 2>/dev/null | grep '^output_plugin_libraries' >/dev/null; then
			echo "output_plugin_libraries = 'pgoutput, test_decoding, wal2json'"
		fi
		cat
	} >>"$dir/data/postgresql.conf"
	egress_as_user pg_ctl -D "$dir/data" -l "$dir/server.log" -w start >/dev/null
}

# A scratch directory the unprivileged user owns.
egress_scratch_dir() {
	local dir
	dir=$(mktemp -d "/tmp/$1.XXXXXX")
	chmod 755 "$dir"
	if [ "$(id -u)" -eq 0 ]; then chown "$EGRESS_USER" "$dir"; fi
	echo "$dir"
}
