// Local S3 server for pg_egress tests: @20minutes/s3rver (verifies SigV4,
// key pair S3RVER/S3RVER) behind a small proxy that forwards requests
// unchanged (signatures still verify) and can inject faults.
//
//   node s3server.js <directory> <ready-file> [bucket ...]
//
// Both listen on 127.0.0.1, free ports.  When ready, writes
// {"port": <proxy port>, "s3rver_port": ..., "pid": ...} to <ready-file>.
// Point clients at http://127.0.0.1:<port>.
//
// Control requests to the proxy (never forwarded):
//   POST /__ctl/fail?op=UploadPart&nth=2&status=503   the nth matching
//        request from now on is answered with that status (once)
//   POST /__ctl/delay?op=UploadPart&ms=2000   delay matching requests
//   GET  /__ctl/state   JSON: created, completed and aborted multipart
//        uploads, open ones (created, neither completed nor aborted),
//        counts of requests by operation, faults injected
'use strict';

const http = require('http');
const fs = require('fs');
const S3rver = require('@20minutes/s3rver');

const [directory, readyFile, ...buckets] = process.argv.slice(2);
if (!directory || !readyFile) {
  console.error('usage: node s3server.js <directory> <ready-file> [bucket ...]');
  process.exit(2);
}

const state = {
  created: [],
  completed: [],
  aborted: [],
  ops: {},
  faults_injected: 0,
  session_tokens: [],   // x-amz-security-token values seen
};
let faults = [];   // {op, remaining, status}
let delays = [];   // {op, ms}

function operation(req) {
  const u = new URL(req.url, 'http://x');
  const q = u.searchParams;
  const parts = u.pathname.split('/').filter((s) => s !== '');
  if (req.method === 'POST' && q.has('uploads')) return 'CreateMultipartUpload';
  if (req.method === 'PUT' && q.has('partNumber')) return 'UploadPart';
  if (req.method === 'POST' && q.has('uploadId')) return 'CompleteMultipartUpload';
  if (req.method === 'DELETE' && q.has('uploadId')) return 'AbortMultipartUpload';
  if (req.method === 'PUT' && parts.length >= 2) return 'PutObject';
  if (req.method === 'DELETE' && parts.length >= 2) return 'DeleteObject';
  if (req.method === 'GET' && parts.length >= 2) return 'GetObject';
  return req.method + ' ' + (parts.length === 1 ? 'bucket' : 'service');
}

function errorXml(status) {
  const code = status === 503 ? 'SlowDown' : status === 500 ? 'InternalError' : 'InjectedError';
  return '<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>' + code +
    '</Code><Message>injected by the test proxy</Message></Error>';
}

function control(req, res) {
  const u = new URL(req.url, 'http://x');
  const q = u.searchParams;
  res.setHeader('Content-Type', 'application/json');
  if (u.pathname === '/__ctl/fail') {
    faults.push({ op: q.get('op'), remaining: parseInt(q.get('nth') || '1', 10),
                  status: parseInt(q.get('status') || '503', 10) });
    return res.end('{}');
  }
  if (u.pathname === '/__ctl/delay') {
    delays = delays.filter((d) => d.op !== q.get('op'));
    const ms = parseInt(q.get('ms') || '0', 10);
    if (ms > 0) delays.push({ op: q.get('op'), ms });
    return res.end('{}');
  }
  if (u.pathname === '/__ctl/state') {
    const closed = new Set([...state.completed, ...state.aborted]);
    return res.end(JSON.stringify({ ...state,
      open: state.created.filter((id) => !closed.has(id)) }));
  }
  res.statusCode = 404;
  res.end('{}');
}

function forward(req, res, s3port, op, body) {
  const headers = [];
  for (let i = 0; i < req.rawHeaders.length; i += 2) {
    // Expect is not signed; the proxy has already answered it
    if (req.rawHeaders[i].toLowerCase() === 'expect') continue;
    headers.push(req.rawHeaders[i], req.rawHeaders[i + 1]);
  }
  const up = http.request({ host: '127.0.0.1', port: s3port, method: req.method,
                            path: req.url, headers }, (ures) => {
    const chunks = [];
    ures.on('data', (c) => chunks.push(c));
    ures.on('end', () => {
      const rbody = Buffer.concat(chunks);
      const text = rbody.toString('utf8');
      const uid = new URL(req.url, 'http://x').searchParams.get('uploadId');
      if (op === 'CreateMultipartUpload' && ures.statusCode === 200) {
        const m = /<UploadId>([^<]*)<\/UploadId>/.exec(text);
        if (m) state.created.push(m[1]);
      } else if (op === 'CompleteMultipartUpload' && ures.statusCode === 200 &&
                 !text.includes('<Error>')) {
        state.completed.push(uid);
      }
      const rh = [];
      for (let i = 0; i < ures.rawHeaders.length; i += 2) {
        const n = ures.rawHeaders[i].toLowerCase();
        if (n === 'transfer-encoding' || n === 'content-length' || n === 'connection') continue;
        rh.push(ures.rawHeaders[i], ures.rawHeaders[i + 1]);
      }
      rh.push('Content-Length', String(rbody.length));
      res.writeHead(ures.statusCode, rh);
      res.end(rbody);
    });
  });
  up.on('error', (e) => { res.statusCode = 502; res.end(String(e)); });
  up.end(body);
}

async function main() {
  const s3 = new S3rver({
    address: '127.0.0.1',
    port: 0,
    directory,
    silent: true,
    configureBuckets: buckets.map((name) => ({ name })),
  });
  const addr = await s3.run();
  const s3port = addr.port;

  const proxy = http.createServer((req, res) => {
    if (req.url.startsWith('/__ctl/')) return control(req, res);
    const op = operation(req);
    state.ops[op] = (state.ops[op] || 0) + 1;
    const token = req.headers['x-amz-security-token'];
    if (token && !state.session_tokens.includes(token)) state.session_tokens.push(token);
    if (op === 'AbortMultipartUpload') {
      state.aborted.push(new URL(req.url, 'http://x').searchParams.get('uploadId'));
    }
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks);
      let fault = null;
      for (const f of faults) {
        if (f.op === op && --f.remaining === 0) fault = f;
      }
      faults = faults.filter((f) => f.remaining > 0);
      const delay = delays.find((d) => d.op === op);
      const go = () => {
        if (fault) {
          state.faults_injected++;
          res.writeHead(fault.status, { 'Content-Type': 'application/xml' });
          return res.end(errorXml(fault.status));
        }
        return forward(req, res, s3port, op, body);
      };
      if (delay) setTimeout(go, delay.ms); else go();
    });
  });
  proxy.listen(0, '127.0.0.1', () => {
    const info = { port: proxy.address().port, s3rver_port: s3port, pid: process.pid };
    fs.writeFileSync(readyFile + '.tmp', JSON.stringify(info));
    fs.renameSync(readyFile + '.tmp', readyFile);
  });
  const stop = () => { proxy.close(); s3.close().finally(() => process.exit(0)); };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

main().catch((e) => { console.error(e); process.exit(1); });
