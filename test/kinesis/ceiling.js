// How many records per second kinesalite itself takes: PutRecords calls of
// 500 small records sent straight to it (no front, no signature check), a
// few at a time, for bench/kinesis.sh to print next to pg_egress' rate.
//
//   node ceiling.js <kinesalite-port> <stream> [calls in flight] [calls] [record bytes]
//
// Prints one JSON line: {"in_flight", "calls", "records", "seconds",
// "records_per_s", "ms_per_call"}.
'use strict';

const http = require('http');

const [port, stream] = [parseInt(process.argv[2], 10), process.argv[3]];
const inFlight = parseInt(process.argv[4] || '4', 10);
const calls = parseInt(process.argv[5] || '40', 10);
const recordBytes = parseInt(process.argv[6] || '330', 10);
if (!port || !stream) {
  console.error('usage: node ceiling.js <kinesalite-port> <stream> [in flight] [calls] [record bytes]');
  process.exit(2);
}
const agent = new http.Agent({ keepAlive: true, maxSockets: inFlight });

// one call's body: 500 records of about recordBytes, keys all different
function makeBody(call) {
  const records = [];
  for (let i = 0; i < 500; i++) {
    const id = call * 500 + i;
    const line = JSON.stringify({ type: 'RECORD', stream: 'ceiling', record: { id, pad: '' } });
    const data = line.replace('"pad":""', '"pad":"' + 'x'.repeat(Math.max(0, recordBytes - line.length)) + '"');
    records.push({ Data: Buffer.from(data).toString('base64'), PartitionKey: 'ceiling|' + id });
  }
  return Buffer.from(JSON.stringify({ StreamName: stream, Records: records }));
}

function put(body) {
  return new Promise((resolve, reject) => {
    const now = new Date().toISOString().replace(/[-:]/g, '').replace(/\.\d+/, '');
    const req = http.request({
      agent, host: '127.0.0.1', port, method: 'POST', path: '/',
      headers: {
        'Content-Type': 'application/x-amz-json-1.1',
        'X-Amz-Target': 'Kinesis_20131202.PutRecords',
        'X-Amz-Date': now,
        // kinesalite checks the header's shape, not the signature
        Authorization: 'AWS4-HMAC-SHA256 Credential=ceiling/' + now.slice(0, 8) +
          '/us-east-1/kinesis/aws4_request, SignedHeaders=host;x-amz-date, Signature=' + 'f'.repeat(64),
        'Content-Length': body.length,
      },
    }, (res) => {
      res.resume();
      res.on('end', () => (res.statusCode === 200 ? resolve() : reject(new Error('HTTP ' + res.statusCode))));
    });
    req.on('error', reject);
    req.end(body);
  });
}

async function main() {
  const bodies = Array.from({ length: inFlight }, (_, i) => makeBody(i));
  let started = 0;
  const t0 = process.hrtime.bigint();
  await Promise.all(bodies.map(async (body) => {
    while (started < calls) {
      started++;
      await put(body);
    }
  }));
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  console.log(JSON.stringify({ in_flight: inFlight, calls, records: calls * 500,
    seconds: +seconds.toFixed(3), records_per_s: Math.round(calls * 500 / seconds),
    ms_per_call: +(seconds * 1000 / calls * inFlight).toFixed(1) }));
  agent.destroy();
}

main().catch((e) => { console.error(String(e)); process.exit(1); });
