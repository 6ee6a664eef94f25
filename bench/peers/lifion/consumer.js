#!/usr/bin/env node
// lifion-kinesis as a peer in bulkwatch's benchmark.
//
// lifion-kinesis is a Node.js Kinesis consumer with KCL-like features: shard
// leases and checkpoints in a DynamoDB table, one reader per shard, polling
// (GetRecords) or enhanced fan-out. Here: polling mode, with its own defaults
// (GetRecords Limit 10,000, 250 ms between polls, 1 s after an empty poll,
// automatic checkpoints after every batch), state in DynamoDB served by moto.
// The handler JSON-decodes each record (lifion's own JSON parsing is turned
// off so the decode is visibly ours) and pulls out the job sid and status.
//
//   node consumer.js --stream NAME --table TABLE [--expect N] [--emit]
//
// Exits 0 after --expect N records (a JSON summary line on stderr). With
// --emit it prints each record's event id on stdout (the latency run).
// Endpoints: AWS_ENDPOINT_URL (Kinesis) and AWS_ENDPOINT_URL_DYNAMODB; the
// AWS SDK v2 that lifion uses does not read those variables itself.
'use strict';

const Kinesis = require('lifion-kinesis');

function parseArgs(argv) {
  const args = { emit: false, expect: null, stream: null, table: null };
  for (let i = 2; i < argv.length; i += 1) {
    const flag = argv[i];
    if (flag === '--emit') args.emit = true;
    else if (flag === '--stream') args.stream = argv[(i += 1)];
    else if (flag === '--table') args.table = argv[(i += 1)];
    else if (flag === '--expect') args.expect = Number(argv[(i += 1)]);
    else {
      process.stderr.write(`lifion consumer: unknown argument ${flag}\n`);
      process.exit(2);
    }
  }
  if (!args.stream || !args.table) {
    process.stderr.write('usage: consumer.js --stream NAME --table TABLE [--expect N] [--emit]\n');
    process.exit(2);
  }
  return args;
}

const args = parseArgs(process.argv);
const started = process.hrtime.bigint();
const region = process.env.AWS_REGION || process.env.AWS_DEFAULT_REGION || 'us-east-1';
const errors = [];
const logger = {
  debug: () => {},
  warn: (...m) => process.stderr.write(`lifion warn: ${m.join(' ')}\n`),
  error: (...m) => {
    errors.push(m.join(' '));
    process.stderr.write(`lifion error: ${m.join(' ')}\n`);
  }
};

const kinesis = new Kinesis({
  streamName: args.stream,
  consumerGroup: args.table,
  endpoint: process.env.AWS_ENDPOINT_URL,
  region,
  dynamoDb: {
    endpoint: process.env.AWS_ENDPOINT_URL_DYNAMODB || process.env.AWS_ENDPOINT_URL,
    region,
    tableName: args.table
  },
  createStreamIfNeeded: false,
  initialPositionInStream: 'TRIM_HORIZON',
  logger,
  shouldParseJson: false,
  useAutoCheckpoints: true,
  useEnhancedFanOut: false
});

let records = 0;
let undecodable = 0;
let batches = 0;

function finish(code) {
  const elapsed = Number(process.hrtime.bigint() - started) / 1e9;
  process.stderr.write(
    `${JSON.stringify({
      peer: 'lifion',
      records,
      undecodable,
      batches,
      elapsed_s: Math.round(elapsed * 1000) / 1000,
      errors: errors.slice(0, 5)
    })}\n`
  );
  process.exit(code);
}

kinesis.on('data', ({ records: batch }) => {
  batches += 1;
  let out = '';
  for (const r of batch) {
    try {
      const event = JSON.parse(r.data);
      let { data } = event;
      if (typeof data === 'string') data = JSON.parse(data);
      // eslint-disable-next-line no-unused-vars
      const { job_sid: jobSid, status } = data;
      if (typeof jobSid !== 'string') undecodable += 1;
      if (args.emit) out += `${event.id}\n`;
    } catch (e) {
      undecodable += 1;
    }
  }
  if (out) process.stdout.write(out);
  records += batch.length;
  if (args.expect !== null && records >= args.expect) finish(0);
});
kinesis.on('error', (err) => logger.error(err && err.stack ? err.stack : String(err)));

process.on('SIGTERM', () => finish(0));
process.on('SIGINT', () => finish(130));

kinesis.startConsumer().catch((err) => {
  logger.error(`startConsumer failed: ${err && err.stack ? err.stack : err}`);
  finish(1);
});
