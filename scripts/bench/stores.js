// Helpers of the store cases of scripts/bench.js (sqlite, postgres, graphile) and of their
// child process (scripts/bench/pg-worker.js): the PostgreSQL server, unique schemas, and a
// wall clock that agrees across the processes of one machine.

const crypto = require('node:crypto');

/** The PostgreSQL server of the bench: env `DECAF_PG_URL`, else the local trust-auth one. */
const PG_URL = process.env.DECAF_PG_URL || 'postgres://postgres@127.0.0.1:5432/test';

/**
 * Wall-clock time in ms with sub-ms resolution: `performance.timeOrigin` (the wall clock at
 * process start) plus the monotonic time since. Two processes of one machine agree to a few
 * tens of µs, where `Date.now()` only has 1 ms resolution.
 */
function wallNow() {
  return performance.timeOrigin + performance.now();
}

/**
 * A schema name no other process picks: `<prefix>_<pid>_<random>` (other tests may use the
 * same server).
 */
function uniqueSchema(prefix) {
  return `${prefix}_${process.pid}_${crypto.randomBytes(4).toString('hex')}`;
}

/**
 * The `pg` package: graphile-worker's own dependency (devDependency of this project), resolved
 * from graphile-worker so that it does not rely on hoisting.
 */
function loadPg() {
  const from = require.resolve('graphile-worker');
  return require(require.resolve('pg', { paths: [from] }));
}

/** Runs `fn(client)` on a fresh connection to `url`, closed afterwards. */
async function withClient(url, fn) {
  const { Client } = loadPg();
  const client = new Client({ connectionString: url, connectionTimeoutMillis: 5000 });
  await client.connect();
  try {
    return await fn(client);
  } finally {
    await client.end();
  }
}

/** The server's version string, or throws (unreachable, auth refused, no database). */
function serverVersion(url = PG_URL) {
  return withClient(
    url,
    async (c) => (await c.query('SHOW server_version')).rows[0].server_version,
  );
}

/** `DROP SCHEMA IF EXISTS <schema> CASCADE`. */
function dropSchema(schema, url = PG_URL) {
  if (!/^[a-z_][a-z0-9_]*$/.test(schema)) throw new Error(`not a schema name: ${schema}`);
  return withClient(url, (c) => c.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`));
}

module.exports = { PG_URL, wallNow, uniqueSchema, loadPg, withClient, serverVersion, dropSchema };
