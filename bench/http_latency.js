#!/usr/bin/env node
// Commit-to-receipt latency of LOG_BASED records at an HTTP receiver:
// reads the receiver's requests.jsonl, takes every RECORD of the stream
// whose record has the timestamp column (written by clock_timestamp() in a
// single-row transaction) and its request's arrival time, and prints
// {"records", "p50_ms", "p90_ms", "p99_ms", "max_ms"}.
//   node bench/http_latency.js requests.jsonl <stream id> <column>
'use strict';
const fs = require('fs');
const [file, stream, column] = process.argv.slice(2);

// "2026-01-02T03:04:05.123456+00:00" -> epoch ms with the microseconds
function ms(s) {
	const m = /^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?\+00:00$/.exec(s);
	if (!m) throw new Error('unexpected timestamp ' + s);
	return Date.parse(m[1] + 'Z') + (m[2] ? parseFloat(m[2]) * 1000 : 0);
}

const lat = [];
const seen = new Set();
for (const line of fs.readFileSync(file, 'utf8').split('\n')) {
	if (!line) continue;
	const r = JSON.parse(line);
	if (r.status !== 200) continue;
	const id = r.headers['x-egress-batch-id'];
	if (seen.has(id)) continue;
	seen.add(id);
	for (const text of r.body.split('\n')) {
		if (!text) continue;
		const m = JSON.parse(text);
		if (m.type === 'RECORD' && m.stream === stream && m.record[column])
			lat.push(r.t - ms(m.record[column]));
	}
}
lat.sort((a, b) => a - b);
const q = (p) => lat.length ? lat[Math.min(lat.length - 1, Math.floor(p * lat.length))] : NaN;
console.log(JSON.stringify({ records: lat.length, p50_ms: +q(0.5).toFixed(1), p90_ms: +q(0.9).toFixed(1),
	p99_ms: +q(0.99).toFixed(1), max_ms: +(lat[lat.length - 1] || NaN).toFixed(1) }));
