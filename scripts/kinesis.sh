#!/usr/bin/env bash
# Starts or stops the local Kinesis server of the tests (kinesalite behind
# test/kinesis/front.js: SigV4 verified, faults on request) by hand, e.g.
# for bench/ or a demo.  TAP tests start their own through
# test/lib/KinesisServer.pm.
#
#   scripts/kinesis.sh start DIR [--ack-only] [--latency-ms N] [stream[:shards] ...]
#                                                        prints the endpoint
#   scripts/kinesis.sh stop DIR
#
# Key pair: AKIDKINESIS / kinesis-secret.  Listens on 127.0.0.1, free ports.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
. "$root/scripts/common.sh"

cmd=${1:-}
dir=${2:-}
[ -n "$cmd" ] && [ -n "$dir" ] || { echo "usage: $0 start|stop DIR [stream[:shards] ...]" >&2; exit 2; }
shift 2

case "$cmd" in
start)
	(cd "$root" && egress_npm_ci test/kinesis)
	mkdir -p "$dir"
	rm -f "$dir/ready.json"
	# KINESIS_NODE_ARGS: options for node, e.g. --cpu-prof --cpu-prof-dir=DIR
	# shellcheck disable=SC2086
	nohup node ${KINESIS_NODE_ARGS:-} "$root/test/kinesis/front.js" "$dir/ready.json" "$@" >"$dir/front.log" 2>&1 &
	for _ in $(seq 600); do
		[ -s "$dir/ready.json" ] && break
		kill -0 $! 2>/dev/null || { cat "$dir/front.log" >&2; exit 1; }
		sleep 0.1
	done
	[ -s "$dir/ready.json" ] || { echo "kinesis.sh: the server did not start" >&2; exit 1; }
	port=$(sed 's/.*"port":\([0-9]*\).*/\1/' "$dir/ready.json")
	echo "http://127.0.0.1:$port"
	;;
stop)
	[ -s "$dir/ready.json" ] || exit 0
	pid=$(sed 's/.*"pid":\([0-9]*\).*/\1/' "$dir/ready.json")
	kill "$pid" 2>/dev/null || true
	rm -f "$dir/ready.json"
	;;
*)
	echo "usage: $0 start|stop DIR [stream[:shards] ...]" >&2
	exit 2
	;;
esac
