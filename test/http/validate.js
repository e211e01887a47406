#!/usr/bin/env node
// Validates what the receiver logged (requests.jsonl) against the Singer
// message shapes, and every RECORD against the latest SCHEMA of its stream,
// with a real JSON-schema validator (ajv, draft-07, formats from ajv-formats).
//
//   node validate.js DIR/requests.jsonl
//
// Three documented departures of the Singer contract (../../../shared
// singer-format.md, docs/http.md) from strict JSON Schema are counted as
// "deviations", not errors: "time" values without an offset (the tap's
// convention; RFC 3339 full-time requires one), a scalar json/jsonb value
// in a column declared ["null","object","array"], and multi-dimensional
// arrays (items declared as the element type).  Any other failure is an
// error.
//
// Only acknowledged (2xx) requests count; a batch id seen before is skipped
// (a re-sent batch must be identical: checked).  Prints a JSON summary:
// {batches, resent, messages, records, errors: [...]}; exits 1 on errors.
'use strict';
const fs = require('fs');
const Ajv = require('ajv');
const addFormats = require('ajv-formats');

// JSON numbers become doubles here: 142.86 / 0.01 is not exactly an
// integer.  A quotient within 1e-4 of an integer passes; a value off the
// step by more (0.005 for multipleOf 0.01) still fails.
const ajv = new Ajv({ strict: false, allErrors: true, verbose: true, multipleOfPrecision: 4 });
addFormats(ajv);

const streamName = { type: 'string', minLength: 1 };
const shapes = {
	SCHEMA: {
		type: 'object',
		required: ['type', 'stream', 'schema', 'key_properties'],
		properties: {
			type: { const: 'SCHEMA' },
			stream: streamName,
			schema: { type: 'object', required: ['type', 'properties'],
				properties: { type: { const: 'object' }, properties: { type: 'object' } } },
			key_properties: { type: 'array', items: { type: 'string' } },
			bookmark_properties: { type: 'array', items: { type: 'string' } },
		},
		additionalProperties: false,
	},
	RECORD: {
		type: 'object',
		required: ['type', 'stream', 'record'],
		properties: {
			type: { const: 'RECORD' },
			stream: streamName,
			record: { type: 'object' },
			version: { type: 'integer' },
			time_extracted: { type: 'string', format: 'date-time' },
		},
		additionalProperties: false,
	},
	ACTIVATE_VERSION: {
		type: 'object',
		required: ['type', 'stream', 'version'],
		properties: { type: { const: 'ACTIVATE_VERSION' }, stream: streamName, version: { type: 'integer' } },
		additionalProperties: false,
	},
	STATE: {
		type: 'object',
		required: ['type', 'value'],
		properties: {
			type: { const: 'STATE' },
			value: { type: 'object', required: ['bookmarks'],
				properties: { bookmarks: { type: 'object' } } },
		},
		additionalProperties: false,
	},
};
const shapeCheck = {};
for (const k of Object.keys(shapes)) shapeCheck[k] = ajv.compile(shapes[k]);

const file = process.argv[2];
const lines = fs.readFileSync(file, 'utf8').split('\n').filter((l) => l.length > 0);
const seen = new Map();
const errors = [];
const summary = { batches: 0, resent: 0, messages: 0, records: 0, deviations: {} };

function deviation(e) {
	if (e.keyword === 'format' && e.params.format === 'time' &&
		/^\d\d:\d\d:\d\d(\.\d{1,6})?$/.test(e.data))
		return 'time without offset';
	const t = e.parentSchema && e.parentSchema.type;
	if (e.keyword === 'type' && Array.isArray(t) && t.includes('object') && t.includes('array') &&
		(e.data === null || typeof e.data !== 'object'))
		return 'scalar json value';
	if (e.keyword === 'type' && Array.isArray(e.data) && /\/\d+$/.test(e.instancePath))
		return 'multi-dimensional array';
	return null;
}
const schemaCheck = {};		// stream -> compiled validator of the latest SCHEMA

for (const line of lines) {
	const req = JSON.parse(line);
	if (typeof req.status !== 'number' || req.status < 200 || req.status > 299) continue;
	const id = req.headers['x-egress-batch-id'];
	if (!id) {
		errors.push(`request ${req.seq}: no X-Egress-Batch-Id`);
		continue;
	}
	if (seen.has(id)) {
		summary.resent++;
		if (seen.get(id) !== req.body) errors.push(`batch ${id} re-sent with a different body`);
		continue;
	}
	seen.set(id, req.body);
	summary.batches++;
	if (req.headers['content-type'] !== 'application/x-ndjson')
		errors.push(`batch ${id}: Content-Type ${req.headers['content-type']}`);
	if (!/^pg_egress\//.test(req.headers['user-agent'] || ''))
		errors.push(`batch ${id}: User-Agent ${req.headers['user-agent']}`);
	const msgs = (req.body || '').split('\n');
	if (msgs[msgs.length - 1] !== '') errors.push(`batch ${id}: body does not end with a newline`);
	msgs.pop();
	msgs.forEach((text, i) => {
		let m;
		try {
			m = JSON.parse(text);
		} catch (e) {
			errors.push(`batch ${id} line ${i + 1}: not JSON: ${e}`);
			return;
		}
		summary.messages++;
		const check = shapeCheck[m.type];
		if (!check) {
			errors.push(`batch ${id} line ${i + 1}: unknown message type ${m.type}`);
			return;
		}
		if (!check(m)) {
			errors.push(`batch ${id} line ${i + 1}: bad ${m.type}: ${ajv.errorsText(check.errors)}`);
			return;
		}
		if (i === msgs.length - 1 && m.type !== 'STATE')
			errors.push(`batch ${id}: last message is ${m.type}, not STATE`);
		if (m.type === 'SCHEMA') {
			try {
				schemaCheck[m.stream] = ajv.compile(m.schema);
			} catch (e) {
				errors.push(`batch ${id}: SCHEMA of ${m.stream} does not compile: ${e}`);
			}
		} else if (m.type === 'RECORD') {
			summary.records++;
			const v = schemaCheck[m.stream];
			if (!v) errors.push(`batch ${id} line ${i + 1}: RECORD of ${m.stream} before its SCHEMA`);
			else if (!v(m.record)) {
				const real = v.errors.filter((e) => {
					const d = deviation(e);
					if (d) summary.deviations[d] = (summary.deviations[d] || 0) + 1;
					return !d;
				});
				if (real.length > 0)
					errors.push(`batch ${id} line ${i + 1}: RECORD does not match its SCHEMA: ${ajv.errorsText(real)}`);
			}
		}
	});
}
summary.errors = errors.slice(0, 50);
summary.error_count = errors.length;
console.log(JSON.stringify(summary));
process.exit(errors.length > 0 ? 1 : 0);
