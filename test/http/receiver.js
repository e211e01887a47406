#!/usr/bin/env node
// A Singer batch receiver for pg_egress tests and benchmarks.
//
//   node receiver.js --dir DIR [--port N] [--discard]
//
// Binds 127.0.0.1 (a free port unless --port), writes the port to DIR/port
// once listening, and appends one JSON line per request to
// DIR/requests.jsonl: {seq, t (arrival, epoch ms), headers, status, fault,
// bytes, body (gunzipped text; omitted with --discard)}.  The line is
// written before the answer, so an acknowledged batch is always logged.
//
// Faults, set with POST /_control {"action": ..., "count": N, ...}:
//   fail   answer "status" (default 503) to the next N batches, with
//          "retry_after" seconds in Retry-After if given, and "body"
//          ("echo" answers the request's headers as the body)
//   hang   never answer the next N batches (the client has to time out)
//   delay  answer the next N batches after "ms" milliseconds
//   reset  destroy the connection of the next N batches
//   clear  forget all faults
// GET /_stats answers {"requests", "accepted", "bytes", "checks"}.
// A request with header "X-Pg-Egress-Check: 1" (egress_check()'s probe) is
// answered 204 and never logged or counted as a batch (only in "checks");
// a "fail" fault applies to it.
'use strict';
const http = require('http');
const fs = require('fs');
const path = require('path');
const zlib = require('zlib');

const args = process.argv.slice(2);
function opt(name, dflt) {
	const i = args.indexOf('--' + name);
	if (i < 0) return dflt;
	return args[i + 1];
}
const dir = opt('dir');
const port = parseInt(opt('port', '0'), 10);
const discard = args.includes('--discard');
if (!dir) {
	console.error('usage: receiver.js --dir DIR [--port N] [--discard]');
	process.exit(2);
}
fs.mkdirSync(dir, { recursive: true });
const logPath = path.join(dir, 'requests.jsonl');
const logFd = fs.openSync(logPath, 'a');

let faults = [];				// [{action, count, ...}], first applies
let seq = 0;
const stats = { requests: 0, accepted: 0, bytes: 0, checks: 0 };
const hung = new Set();

function nextFault() {
	while (faults.length > 0 && faults[0].count <= 0) faults.shift();
	if (faults.length === 0) return null;
	faults[0].count--;
	return faults[0];
}

function log(entry) {
	fs.writeSync(logFd, JSON.stringify(entry) + '\n');
}

function control(req, res, body) {
	let c;
	try {
		c = JSON.parse(body.toString() || '{}');
	} catch (e) {
		res.writeHead(400);
		return res.end('bad json');
	}
	if (c.action === 'clear') {
		faults = [];
		for (const r of hung) r.destroy();
		hung.clear();
	} else if (['fail', 'hang', 'delay', 'reset'].includes(c.action)) {
		faults.push(Object.assign({ count: 1 }, c));
	} else {
		res.writeHead(400);
		return res.end('unknown action');
	}
	res.writeHead(200, { 'Content-Type': 'application/json' });
	res.end(JSON.stringify({ ok: true, pending: faults.length }));
}

const server = http.createServer((req, res) => {
	const chunks = [];
	req.on('data', (c) => chunks.push(c));
	req.on('end', () => {
		const t = performance.timeOrigin + performance.now();
		const raw = Buffer.concat(chunks);
		if (req.url === '/_control' && req.method === 'POST') return control(req, res, raw);
		if (req.url === '/_stats') {
			res.writeHead(200, { 'Content-Type': 'application/json' });
			return res.end(JSON.stringify(stats));
		}
		if (req.headers['x-pg-egress-check'] === '1') {
			stats.checks++;
			const f = nextFault();
			if (f && f.action === 'fail') {
				res.writeHead(f.status || 503, { 'Content-Type': 'text/plain' });
				return res.end(f.body || 'injected failure ' + (f.status || 503));
			}
			res.writeHead(204);
			return res.end();
		}
		stats.requests++;
		stats.bytes += raw.length;
		const fault = nextFault();
		const entry = { seq: ++seq, t, method: req.method, path: req.url, headers: req.headers,
			bytes: raw.length, fault: fault ? fault.action : null, status: null };
		if (!discard) {
			let text;
			try {
				text = req.headers['content-encoding'] === 'gzip' ? zlib.gunzipSync(raw).toString('utf8')
					: raw.toString('utf8');
			} catch (e) {
				text = null;
				entry.decode_error = String(e);
			}
			entry.body = text;
		}
		if (fault && fault.action === 'hang') {
			entry.status = 'hang';
			log(entry);
			hung.add(req.socket);
			return;
		}
		if (fault && fault.action === 'reset') {
			entry.status = 'reset';
			log(entry);
			return req.socket.destroy();
		}
		if (fault && fault.action === 'fail') {
			const st = fault.status || 503;
			const h = { 'Content-Type': 'text/plain' };
			if (fault.retry_after !== undefined) h['Retry-After'] = String(fault.retry_after);
			entry.status = st;
			log(entry);
			res.writeHead(st, h);
			return res.end(fault.body === 'echo' ? JSON.stringify(req.headers)
				: (fault.body || 'injected failure ' + st));
		}
		const answer = () => {
			entry.status = 200;
			stats.accepted++;
			log(entry);
			res.writeHead(200, { 'Content-Type': 'application/json' });
			res.end('{"ok":true}');
		};
		if (fault && fault.action === 'delay') setTimeout(answer, fault.ms || 1000);
		else answer();
	});
});
server.keepAliveTimeout = 60000;
server.listen(port, '127.0.0.1', () => {
	const p = server.address().port;
	fs.writeFileSync(path.join(dir, 'port.tmp'), String(p));
	fs.renameSync(path.join(dir, 'port.tmp'), path.join(dir, 'port'));
});
process.on('SIGTERM', () => process.exit(0));
