// Local Kinesis server for pg_egress tests: kinesalite (in memory, the real
// API limits) behind a front that verifies the SigV4 signature of every
// request (service "kinesis", the region of the credential scope) and can
// inject faults.  kinesalite verifies no signature and never fails an entry
// of PutRecords by itself.
//
//   node front.js <ready-file> [--key ACCESS_KEY:SECRET] [--ack-only]
//                 [--latency-ms N] [stream[:shards] ...]
//
// --ack-only: a benchmark mode.  PutRecords calls are still verified (the
// signature, at most 500 records and 5 MiB per call, 1 MiB per record key
// included, partition keys of 1..256 characters, Data in base64) and
// answered with a well-formed success (a sequence number and the ShardId
// of each entry's shard), but nothing is stored in kinesalite: the cost
// per call is that of the checks, comparable to an HTTP receiver that
// discards bodies.  Faults are injected as usual.  /__ctl/records then
// returns nothing.
// --latency-ms N: every PutRecords answer waits N ms (as real Kinesis
// takes 20-50 ms a call), in either mode: calls in flight at once overlap.
//
// Both listen on 127.0.0.1, free ports.  When ready, writes
// {"port": <front port>, "kinesalite_port": ..., "pid": ...} to <ready-file>.
// Point clients at http://127.0.0.1:<port>.  The default key pair is
// AKIDKINESIS / kinesis-secret.
//
// Control requests to the front (never forwarded, never signed):
//   POST /__ctl/fail?status=500&count=2    the next 2 PutRecords are answered
//        with that HTTP status (500 InternalFailure, 503 ServiceUnavailable)
//   POST /__ctl/throttle?count=3           the next 3 PutRecords are refused
//        whole: 400 ProvisionedThroughputExceededException
//   POST /__ctl/partial?rate=0.3&ms=60000&code=ProvisionedThroughputExceededException
//        for that long, every entry of PutRecords fails with that rate
//        (FailedRecordCount, per-entry ErrorCode); ms=0 ends it
//   POST /__ctl/partial?entries=0,3&count=1  entries 0 and 3 of the next call fail
//   POST /__ctl/create?stream=s&shards=2   creates a stream (waits until ACTIVE)
//   GET  /__ctl/records?stream=s           every record of the stream, read with
//        GetShardIterator(TRIM_HORIZON) + GetRecords from kinesalite, shard by
//        shard in sequence order: [{shard, seq, key, data}] (data as UTF-8 text)
//   GET  /__ctl/state                      counters: calls by operation,
//        PutRecords calls / entries / entries accepted, injected faults,
//        signature failures (with their reasons), largest call, most
//        PutRecords calls in flight at once (max_concurrent_puts), and
//        ordering faults of the client: key_conflicts (a call holding a
//        partition key that a call still unanswered holds) and
//        keys_repeated_in_call (a key twice in one call)
//   POST /__ctl/mode?ack_only=1&latency_ms=30  switches --ack-only and
//        --latency-ms of the running front
//   POST /__ctl/reset                      clears faults and counters
'use strict';

const http = require('http');
const fs = require('fs');
const crypto = require('crypto');
const kinesalite = require('kinesalite');

const args = process.argv.slice(2);
const readyFile = args.shift();
if (!readyFile) {
  console.error('usage: node front.js <ready-file> [--key AK:SECRET] [stream[:shards] ...]');
  process.exit(2);
}
const keys = {};
const streams = [];
let ackOnly = false;
let latencyMs = 0;
while (args.length) {
  const a = args.shift();
  if (a === '--ack-only') {
    ackOnly = true;
  } else if (a === '--latency-ms') {
    latencyMs = parseInt(args.shift(), 10) || 0;
  } else if (a === '--key') {
    const kv = args.shift();
    const i = kv.indexOf(':');
    keys[kv.slice(0, i)] = kv.slice(i + 1);
  } else {
    streams.push(a);
  }
}
if (Object.keys(keys).length === 0) keys.AKIDKINESIS = 'kinesis-secret';

function newState() {
  return {
    ops: {},
    put_calls: 0,
    put_entries: 0,
    put_accepted: 0,
    max_entries_per_call: 0,
    max_bytes_per_call: 0,
    max_data_bytes_per_call: 0,   // data + partition keys, what the 5 MiB limit counts
    max_record_bytes: 0,
    faults_injected: 0,
    throttled_calls: 0,
    entries_failed: 0,
    signature_failures: 0,
    signature_errors: [],
    regions: [],
    session_tokens: [],
    ack_only: ackOnly,
    latency_ms: latencyMs,
    concurrent_puts: 0,
    max_concurrent_puts: 0,
    key_conflicts: 0,
    keys_repeated_in_call: 0,
  };
}
let state = newState();
let failures = [];       // {status, remaining}
let throttles = 0;
let partialRate = null;  // {rate, until, code}
let partialChosen = [];  // {entries: Set, remaining}

// ---------------------------------------------------------------- SigV4

function sha256hex(data) {
  return crypto.createHash('sha256').update(data).digest('hex');
}
function hmac(key, data) {
  return crypto.createHmac('sha256', key).update(data).digest();
}
// RFC 3986 encoding as SigV4 wants it
function uriEncode(s, keepSlash) {
  return encodeURIComponent(s).replace(/[!'()*]/g,
    (c) => '%' + c.charCodeAt(0).toString(16).toUpperCase())
    .replace(keepSlash ? /%2F/g : /$^/, '/');
}

// null when the request is signed correctly, else the reason
function verifySignature(req, body) {
  const auth = req.headers.authorization;
  if (!auth) return ['MissingAuthenticationTokenException', 'no Authorization header'];
  const m = /^AWS4-HMAC-SHA256\s+Credential=([^,\s]+),\s*SignedHeaders=([^,\s]+),\s*Signature=([0-9a-f]{64})\s*$/.exec(auth);
  if (!m) return ['IncompleteSignatureException', 'malformed Authorization header'];
  const [akey, date, region, service, term] = m[1].split('/');
  const signedHeaders = m[2].split(';');
  if (term !== 'aws4_request') return ['IncompleteSignatureException', 'bad credential scope'];
  if (service !== 'kinesis') return ['InvalidSignatureException', 'credential scope names service ' + service];
  if (!(akey in keys)) return ['UnrecognizedClientException', 'unknown access key ' + akey];
  const amzDate = req.headers['x-amz-date'];
  if (!amzDate || amzDate.slice(0, 8) !== date) return ['IncompleteSignatureException', 'X-Amz-Date missing or not of the scope date'];
  if (!signedHeaders.includes('host') || !signedHeaders.includes('x-amz-date'))
    return ['IncompleteSignatureException', 'host and x-amz-date must be signed'];
  if (!state.regions.includes(region)) state.regions.push(region);

  const u = new URL(req.url, 'http://x');
  const query = [...u.searchParams.entries()]
    .map(([k, v]) => [uriEncode(k), uriEncode(v)])
    .sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : a[1] < b[1] ? -1 : 1))
    .map(([k, v]) => k + '=' + v).join('&');
  const canonHeaders = signedHeaders.map((h) => {
    const v = req.headers[h];
    if (v === undefined) return null;
    return h + ':' + String(v).trim().replace(/\s+/g, ' ') + '\n';
  });
  if (canonHeaders.includes(null)) return ['IncompleteSignatureException', 'a signed header is missing'];
  const given = req.headers['x-amz-content-sha256'];
  const payloadHash = sha256hex(body);
  if (given !== undefined && given !== payloadHash)
    return ['InvalidSignatureException', 'x-amz-content-sha256 is not the hash of the body'];
  const canonical = [req.method, u.pathname, query, canonHeaders.join(''),
    signedHeaders.join(';'), payloadHash].join('\n');
  const scope = [date, region, service, 'aws4_request'].join('/');
  const toSign = ['AWS4-HMAC-SHA256', amzDate, scope, sha256hex(canonical)].join('\n');
  let k = hmac('AWS4' + keys[akey], date);
  k = hmac(k, region);
  k = hmac(k, service);
  k = hmac(k, 'aws4_request');
  const expected = crypto.createHmac('sha256', k).update(toSign).digest('hex');
  if (expected !== m[3])
    return ['InvalidSignatureException', 'The request signature we calculated does not match the signature you provided.'];
  return null;
}

// ---------------------------------------------------------------- kinesalite

let kport = 0;

// one call to kinesalite, signed with a dummy key (kinesalite checks shapes only)
function kcall(op, payload) {
  return new Promise((resolve, reject) => {
    const body = Buffer.from(JSON.stringify(payload));
    const now = new Date().toISOString().replace(/[-:]/g, '').replace(/\.\d+/, '');
    const r = http.request({
      host: '127.0.0.1', port: kport, method: 'POST', path: '/',
      headers: {
        'Content-Type': 'application/x-amz-json-1.1',
        'X-Amz-Target': 'Kinesis_20131202.' + op,
        'X-Amz-Date': now,
        Authorization: 'AWS4-HMAC-SHA256 Credential=front/' + now.slice(0, 8) +
          '/us-east-1/kinesis/aws4_request, SignedHeaders=host;x-amz-date, Signature=' + '0'.repeat(64),
        'Content-Length': body.length,
      },
    }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        resolve({ status: res.statusCode, text, json: text ? JSON.parse(text) : {} });
      });
    });
    r.on('error', reject);
    r.end(body);
  });
}

async function createStream(name, shards) {
  ackStreams[name] = shards;
  if (ackOnly) return;
  const r = await kcall('CreateStream', { StreamName: name, ShardCount: shards });
  if (r.status !== 200 && !/ResourceInUse/.test(r.text)) throw new Error('CreateStream: ' + r.text);
  for (let i = 0; i < 200; i++) {
    const d = await kcall('DescribeStream', { StreamName: name });
    if (d.status === 200 && d.json.StreamDescription.StreamStatus === 'ACTIVE') return;
    await new Promise((ok) => setTimeout(ok, 20));
  }
  throw new Error('stream ' + name + ' did not become ACTIVE');
}

async function readAll(name) {
  if (ackOnly) return [];
  const d = await kcall('DescribeStream', { StreamName: name });
  if (d.status !== 200) throw new Error('DescribeStream: ' + d.text);
  const out = [];
  for (const shard of d.json.StreamDescription.Shards) {
    const it = await kcall('GetShardIterator', { StreamName: name, ShardId: shard.ShardId,
      ShardIteratorType: 'TRIM_HORIZON' });
    let iter = it.json.ShardIterator;
    for (;;) {
      const g = await kcall('GetRecords', { ShardIterator: iter, Limit: 10000 });
      if (g.status !== 200) throw new Error('GetRecords: ' + g.text);
      for (const rec of g.json.Records) {
        out.push({ shard: shard.ShardId, seq: rec.SequenceNumber, key: rec.PartitionKey,
          data: Buffer.from(rec.Data, 'base64').toString('utf8') });
      }
      if (g.json.Records.length === 0 || !g.json.NextShardIterator) break;
      iter = g.json.NextShardIterator;
    }
  }
  return out;
}

// ---------------------------------------------------------------- front

function jsonError(res, status, type, message) {
  res.writeHead(status, { 'Content-Type': 'application/x-amz-json-1.1' });
  res.end(JSON.stringify({ __type: type, message }));
}

async function control(req, res, body) {
  const u = new URL(req.url, 'http://x');
  const q = u.searchParams;
  const reply = (obj) => {
    res.writeHead(200, { 'Content-Type': 'application/json' });
    res.end(JSON.stringify(obj));
  };
  try {
    switch (u.pathname) {
      case '/__ctl/fail':
        failures.push({ status: parseInt(q.get('status') || '500', 10),
          remaining: parseInt(q.get('count') || '1', 10) });
        return reply({});
      case '/__ctl/throttle':
        throttles += parseInt(q.get('count') || '1', 10);
        return reply({});
      case '/__ctl/partial':
        if (q.has('entries')) {
          partialChosen.push({ entries: new Set(q.get('entries').split(',').map(Number)),
            remaining: parseInt(q.get('count') || '1', 10),
            code: q.get('code') || 'ProvisionedThroughputExceededException' });
        } else {
          const ms = parseInt(q.get('ms') || '0', 10);
          partialRate = ms > 0 ? { rate: parseFloat(q.get('rate') || '0.3'), until: Date.now() + ms,
            code: q.get('code') || 'ProvisionedThroughputExceededException' } : null;
        }
        return reply({});
      case '/__ctl/create':
        await createStream(q.get('stream'), parseInt(q.get('shards') || '1', 10));
        return reply({});
      case '/__ctl/records':
        return reply(await readAll(q.get('stream')));
      case '/__ctl/state':
        return reply({ ...state, partial_active: !!(partialRate && partialRate.until > Date.now()) });
      case '/__ctl/mode':
        // switch modes of a running front (bench/kinesis.sh): ack_only=0|1, latency_ms=N
        if (q.has('ack_only')) ackOnly = q.get('ack_only') === '1';
        if (q.has('latency_ms')) latencyMs = parseInt(q.get('latency_ms'), 10) || 0;
        state.ack_only = ackOnly;
        state.latency_ms = latencyMs;
        return reply({ ack_only: ackOnly, latency_ms: latencyMs });
      case '/__ctl/reset':
        state = newState();
        keysInFlight.clear();
        failures = [];
        throttles = 0;
        partialRate = null;
        partialChosen = [];
        return reply({});
      default:
        res.writeHead(404);
        return res.end('{}');
    }
  } catch (e) {
    res.writeHead(500, { 'Content-Type': 'application/json' });
    res.end(JSON.stringify({ error: String(e) }));
  }
}

function injectedStatus() {
  const f = failures.find((x) => x.remaining > 0);
  if (!f) return 0;
  f.remaining--;
  failures = failures.filter((x) => x.remaining > 0);
  return f.status;
}

// which entries of a PutRecords call fail (index -> code)
function chooseFailures(n) {
  const failed = new Map();
  const chosen = partialChosen.find((c) => c.remaining > 0);
  if (chosen) {
    chosen.remaining--;
    for (const i of chosen.entries) if (i < n) failed.set(i, chosen.code);
    partialChosen = partialChosen.filter((c) => c.remaining > 0);
  }
  if (partialRate && partialRate.until > Date.now()) {
    for (let i = 0; i < n; i++) {
      if (Math.random() < partialRate.rate) failed.set(i, partialRate.code);
    }
  }
  return failed;
}

// ack-only mode: the streams and their shard counts, and sequence numbers
// (a fixed prefix and a counter: increasing, 56 digits as Kinesis' are)
const ackStreams = {};
let ackSeq = 0;
const SEQ_PREFIX = '4959033827149025660855969253836157109592157';
const SEQ_START = 1e12;   // 13 digits for long: the numbers keep their length

// a partition key's shard in ack-only mode: FNV-1a of its UTF-8 bytes
// (cheap, stable), computed where the key is read (scanPut inlines it)
const shardIds = [];
function shardId(n) {
  return shardIds[n] || (shardIds[n] = 'shardId-' + String(n).padStart(12, '0'));
}
function keyHash(buf, start, end) {
  let h = 2166136261;
  for (let i = start; i < end; i++) h = Math.imul(h ^ buf[i], 16777619);
  return h >>> 0;
}

// The entries of a call as parallel arrays (no object per entry): bytes of
// Data once decoded (-1: not base64), bytes and hash of the partition key,
// and the key itself, as a string only when asked (keyAt): where the body
// was scanned, only for the calls that need it.
function newEntries(buf) {
  return { count: 0, buf, dlens: [], kbytes: [], hashes: [], kstarts: [], keys: [] };
}
function keyAt(entries, i) {
  let k = entries.keys[i];
  if (k === undefined) {
    const s = entries.kstarts[i];
    k = entries.keys[i] = entries.buf.toString('utf8', s, s + entries.kbytes[i]);
  }
  return k;
}
function sameKey(entries, i, j) {
  const n = entries.kbytes[i];
  if (n !== entries.kbytes[j]) return false;
  if (entries.kstarts[i] === undefined || entries.kstarts[j] === undefined) return keyAt(entries, i) === keyAt(entries, j);
  const b = entries.buf;
  return b.compare(b, entries.kstarts[j], entries.kstarts[j] + n, entries.kstarts[i], entries.kstarts[i] + n) === 0;
}
// how many entries repeat a key met earlier in the call
function repeatedKeys(entries) {
  const seen = new Map();   // key hash -> first entry of it
  let repeats = 0;
  for (let i = 0; i < entries.count; i++) {
    const j = seen.get(entries.hashes[i]);
    if (j === undefined) {
      seen.set(entries.hashes[i], i);
    } else if (sameKey(entries, i, j)) {
      repeats++;
    } else {
      // two keys of one hash: count with the keys themselves
      const keys = new Set();
      repeats = 0;
      for (let k = 0; k < entries.count; k++) {
        const key = keyAt(entries, k);
        if (keys.has(key)) repeats++;
        keys.add(key);
      }
      return repeats;
    }
  }
  return repeats;
}

// bytes of base64 text once decoded; -1 if it is not base64
function b64Length(s) {
  if (s.length % 4 !== 0) return -1;
  let pad = 0;
  if (s.endsWith('==')) pad = 2;
  else if (s.endsWith('=')) pad = 1;
  return s.length / 4 * 3 - pad;
}

const keysInFlight = new Map();   // partition key -> calls in flight holding it

const sleep = (ms) => new Promise((ok) => setTimeout(ok, ms));

// The body of a PutRecords call in the compact shape clients write,
// {"StreamName":"s","Records":[{"Data":"..","PartitionKey":".."},...]},
// read without building objects (ack-only mode: the front's cost per call
// stays small); null for anything else (escapes in a key or the name,
// spaces, another field order), which JSON.parse then reads.
const P_HEAD = Buffer.from('{"StreamName":"');
const P_RECS = Buffer.from('","Records":[');
const P_DATA = Buffer.from('{"Data":"');
const P_KEY = Buffer.from('","PartitionKey":"');
function scanPut(buf) {
  const at = (p, i) => {
    if (i + p.length > buf.length) return false;
    for (let j = 0; j < p.length; j++) if (buf[i + j] !== p[j]) return false;
    return true;
  };
  if (!at(P_HEAD, 0)) return null;
  let i = P_HEAD.length;
  let q = buf.indexOf(0x22, i);
  if (q < 0) return null;
  const name = buf.toString('utf8', i, q);
  if (name.includes('\\') || !at(P_RECS, q)) return null;
  i = q + P_RECS.length;
  const recs = newEntries(buf);
  if (buf[i] === 0x5d) {
    i++;
  } else {
    for (;;) {
      if (!at(P_DATA, i)) return null;
      i += P_DATA.length;
      q = buf.indexOf(0x22, i);
      if (q < 0 || !at(P_KEY, q)) return null;
      const dlen = (q - i) % 4 !== 0 ? -1
        : (q - i) / 4 * 3 - (buf[q - 1] === 0x3d ? (buf[q - 2] === 0x3d ? 2 : 1) : 0);
      i = q + P_KEY.length;
      q = buf.indexOf(0x22, i);
      if (q < 0 || buf[q + 1] !== 0x7d) return null;
      // the key's hash, and no escape in it (else JSON.parse reads the body)
      let h = 2166136261;
      for (let j = i; j < q; j++) {
        if (buf[j] === 0x5c) return null;
        h = Math.imul(h ^ buf[j], 16777619);
      }
      recs.dlens.push(dlen);
      recs.kbytes.push(q - i);
      recs.kstarts.push(i);
      recs.hashes.push(h >>> 0);
      recs.count++;
      i = q + 2;
      if (buf[i] === 0x2c) { i++; continue; }
      if (buf[i] === 0x5d) { i++; break; }
      return null;
    }
  }
  if (buf[i] !== 0x7d || i + 1 !== buf.length) return null;
  return { name, recs };
}

async function putRecords(req, res, body) {
  let payload = null;
  let entries;
  let streamName;
  const fast = ackOnly ? scanPut(body) : null;
  if (fast) {
    entries = fast.recs;
    streamName = fast.name;
  } else {
    entries = newEntries(null);
    try {
      payload = JSON.parse(body.toString('utf8'));
    } catch (e) {
      return jsonError(res, 400, 'SerializationException', 'body is not JSON');
    }
    streamName = payload.StreamName;
    for (const e of (Array.isArray(payload.Records) ? payload.Records : [])) {
      const key = String(e.PartitionKey || '');
      const kb = Buffer.from(key);
      entries.keys.push(key);
      entries.dlens.push(b64Length(String(e.Data || '')));
      entries.kbytes.push(kb.length);
      entries.hashes.push(keyHash(kb, 0, kb.length));
      entries.count++;
    }
  }
  const count = entries.count;
  state.put_calls++;
  state.put_entries += count;
  state.max_entries_per_call = Math.max(state.max_entries_per_call, count);
  state.max_bytes_per_call = Math.max(state.max_bytes_per_call, body.length);
  let dataBytes = 0;
  let invalid = null;
  for (let i = 0; i < count; i++) {
    const dlen = entries.dlens[i];
    // characters: as many as bytes when at most 256 bytes (1..256 either way)
    const klen = entries.kbytes[i] <= 256 ? entries.kbytes[i] : keyAt(entries, i).length;
    const n = Math.max(dlen, 0) + entries.kbytes[i];
    if (dlen < 0) invalid = invalid || 'Data is not base64';
    if (klen < 1 || klen > 256) invalid = invalid || 'PartitionKey of ' + klen + ' characters';
    if (n > 1024 * 1024) invalid = invalid || 'a record of ' + n + ' bytes is over 1 MiB';
    dataBytes += n;
    if (n > state.max_record_bytes) state.max_record_bytes = n;
  }
  state.max_data_bytes_per_call = Math.max(state.max_data_bytes_per_call, dataBytes);
  if (count < 1 || count > 500) {
    return jsonError(res, 400, 'ValidationException',
      'Records must have between 1 and 500 entries (' + count + ')');
  }
  if (dataBytes > 5 * 1024 * 1024) invalid = invalid || 'a call of ' + dataBytes + ' bytes is over 5 MiB';
  if (invalid) return jsonError(res, 400, 'InvalidArgumentException', invalid);
  if (ackOnly && !(streamName in ackStreams)) {
    return jsonError(res, 400, 'ResourceNotFoundException',
      'Stream ' + streamName + ' under account 000000000000 not found.');
  }

  // the client's ordering: no key in two calls at once, nor twice in one
  // (calls overlap only across an await: with latency or kinesalite)
  const overlap = !ackOnly || latencyMs > 0;
  const callKeys = new Set();
  if (overlap) {
    for (let i = 0; i < count; i++) {
      const key = keyAt(entries, i);
      if (callKeys.has(key)) state.keys_repeated_in_call++;
      else if (keysInFlight.has(key)) state.key_conflicts++;
      callKeys.add(key);
    }
    for (const key of callKeys) keysInFlight.set(key, (keysInFlight.get(key) || 0) + 1);
  } else {
    // no call overlaps another: only repeats within the call, no key strings
    state.keys_repeated_in_call += repeatedKeys(entries);
  }
  state.concurrent_puts++;
  state.max_concurrent_puts = Math.max(state.max_concurrent_puts, state.concurrent_puts);
  try {
    if (latencyMs > 0) await sleep(latencyMs);
    return await answerPut(res, streamName, payload, entries);
  } finally {
    state.concurrent_puts--;
    if (overlap) for (const key of callKeys) {
      const c = keysInFlight.get(key) - 1;
      if (c > 0) keysInFlight.set(key, c);
      else keysInFlight.delete(key);
    }
  }
}

async function answerPut(res, streamName, payload, entries) {
  const status = injectedStatus();
  if (status) {
    state.faults_injected++;
    return jsonError(res, status, status === 503 ? 'ServiceUnavailable' : 'InternalFailure',
      'injected by the test front');
  }
  if (throttles > 0) {
    throttles--;
    state.faults_injected++;
    state.throttled_calls++;
    return jsonError(res, 400, 'ProvisionedThroughputExceededException',
      'Rate exceeded for stream ' + streamName + ' (injected by the test front)');
  }
  const count = entries.count;
  const failed = chooseFailures(count);
  const out = [];
  if (ackOnly && failed.size === 0) {
    state.put_accepted += count;
    res.writeHead(200, { 'Content-Type': 'application/x-amz-json-1.1' });
    return res.end(ackAnswer(ackStreams[streamName], entries));
  }
  if (ackOnly) {
    // the answer written as text: no objects per entry
    const shards = ackStreams[streamName];
    for (let i = 0; i < count; i++) {
      if (failed.size && failed.has(i)) {
        out.push(failedEntry(failed.get(i)));
      } else {
        ackSeq++;
        out.push('{"SequenceNumber":"' + SEQ_PREFIX + (SEQ_START + ackSeq) +
          '","ShardId":"' + shardId(entries.hashes[i] % shards) + '"}');
      }
    }
  } else {
    const pass = payload.Records.filter((e, i) => !failed.has(i));
    let results = [];
    if (pass.length > 0) {
      const r = await kcall('PutRecords', { ...payload, Records: pass });
      if (r.status !== 200) {
        res.writeHead(r.status, { 'Content-Type': 'application/x-amz-json-1.1' });
        return res.end(r.text);
      }
      results = r.json.Records;
    }
    let j = 0;
    for (let i = 0; i < count; i++) {
      out.push(failed.has(i) ? failedEntry(failed.get(i)) : JSON.stringify(results[j++]));
    }
  }
  state.entries_failed += failed.size;
  state.put_accepted += count - failed.size;
  if (failed.size) state.faults_injected++;
  res.writeHead(200, { 'Content-Type': 'application/x-amz-json-1.1' });
  res.end('{"FailedRecordCount":' + failed.size + ',"Records":[' + out.join(',') + ']}');
}

// The answer of an ack-only call with every entry accepted, written into one
// Buffer: a copy of a prefilled pattern (the head and 500 entries of shard
// 0, sequence number digits 0), then per entry only the digits that differ
// written in: no string per entry, one allocation per call.
const ANSWER_HEAD = Buffer.from('{"FailedRecordCount":0,"Records":[');
const ANSWER_TAIL = Buffer.from(']}');
const ENTRY_START = '{"SequenceNumber":"' + SEQ_PREFIX + String(SEQ_START);
const ENTRY_TEXT = ENTRY_START + '","ShardId":"' + shardId(0) + '"}';
const ENTRY_LEN = ENTRY_TEXT.length;
const SEQ_LAST = ENTRY_START.length - 1;            // last digit of the number
const SHARD_LAST = ENTRY_LEN - 3;                   // last digit of the shard
const ANSWER_PATTERN = Buffer.from(ANSWER_HEAD.toString() +
  Array(500).fill(ENTRY_TEXT).join(','));
function ackAnswer(shards, entries) {
  const count = entries.count;
  const body = ANSWER_HEAD.length + count * (ENTRY_LEN + 1) - 1;
  const out = Buffer.allocUnsafe(body + ANSWER_TAIL.length);
  ANSWER_PATTERN.copy(out, 0, 0, body);
  ANSWER_TAIL.copy(out, body);
  for (let i = 0, o = ANSWER_HEAD.length; i < count; i++, o += ENTRY_LEN + 1) {
    // SEQ_START + ackSeq: the pattern has SEQ_START's digits, zeros below
    // its leading 1 (ackSeq stays below SEQ_START)
    ackSeq++;
    for (let v = ackSeq, d = o + SEQ_LAST; v > 0; d--) {
      const q = Math.floor(v / 10);
      out[d] = 0x30 + v - q * 10;
      v = q;
    }
    for (let v = entries.hashes[i] % shards, d = o + SHARD_LAST; v > 0; d--) {
      const q = Math.floor(v / 10);
      out[d] = 0x30 + v - q * 10;
      v = q;
    }
  }
  return out;
}

function failedEntry(code) {
  return JSON.stringify({ ErrorCode: code, ErrorMessage: code === 'InternalFailure'
    ? 'Internal service failure (injected)' : 'Rate exceeded for shard (injected)' });
}

function forward(req, res, body) {
  const headers = {};
  for (const [k, v] of Object.entries(req.headers)) {
    if (k !== 'host' && k !== 'connection' && k !== 'expect') headers[k] = v;
  }
  headers['content-length'] = body.length;
  const up = http.request({ host: '127.0.0.1', port: kport, method: req.method, path: req.url,
    headers }, (ures) => {
    const chunks = [];
    ures.on('data', (c) => chunks.push(c));
    ures.on('end', () => {
      const b = Buffer.concat(chunks);
      res.writeHead(ures.statusCode, { 'Content-Type': ures.headers['content-type'] || 'application/x-amz-json-1.1',
        'Content-Length': b.length });
      res.end(b);
    });
  });
  up.on('error', (e) => jsonError(res, 502, 'InternalFailure', String(e)));
  up.end(body);
}

async function main() {
  const kserver = kinesalite({ createStreamMs: 0, deleteStreamMs: 0, updateStreamMs: 0, shardLimit: 100 });
  await new Promise((ok) => kserver.listen(0, '127.0.0.1', ok));
  kport = kserver.address().port;
  for (const s of streams) {
    const [name, shards] = s.split(':');
    await createStream(name, parseInt(shards || '1', 10));
  }

  const front = http.createServer((req, res) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks);
      if (req.url.startsWith('/__ctl/')) return control(req, res, body);
      const target = String(req.headers['x-amz-target'] || '');
      const op = target.replace(/^Kinesis_20131202\./, '');
      state.ops[op] = (state.ops[op] || 0) + 1;
      const token = req.headers['x-amz-security-token'];
      if (token && !state.session_tokens.includes(token)) state.session_tokens.push(token);
      const bad = verifySignature(req, body);
      if (bad) {
        state.signature_failures++;
        if (state.signature_errors.length < 20) state.signature_errors.push(bad[1]);
        return jsonError(res, bad[0] === 'MissingAuthenticationTokenException' ? 403 : 400, bad[0], bad[1]);
      }
      if (op === 'PutRecords') {
        return putRecords(req, res, body).catch((e) => jsonError(res, 500, 'InternalFailure', String(e)));
      }
      return forward(req, res, body);
    });
  });
  front.listen(0, '127.0.0.1', () => {
    const info = { port: front.address().port, kinesalite_port: kport, pid: process.pid };
    fs.writeFileSync(readyFile + '.tmp', JSON.stringify(info));
    fs.renameSync(readyFile + '.tmp', readyFile);
  });
  const stop = () => { front.close(); kserver.close(); process.exit(0); };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

main().catch((e) => { console.error(e); process.exit(1); });
