// Child process of the `postgres` case of scripts/bench.js (two processes): a service on the
// shared PostgreSQL schema that runs the bench's tasks, while the parent only pushes them
// (no handler) and counts the status events it receives from this process.
//
//   node scripts/bench/pg-worker.js <url> <schema> <concurrency>
//
// - 'bench:noop': the no-op task (same work as the other no-op cases);
// - 'bench:stamp': returns `{ t }`, the wall-clock time its run started (scripts/bench/stores.js
//   `wallNow`), for the push → start latency measured by the parent.
// IPC: sends `{ type: 'ready' }` once the service runs; on `{ type: 'stop' }` shuts down,
// sends `{ type: 'stopped', runs }` (the runs of this process) and exits. Exits too when the
// parent goes away.

const { TaskService } = require('../..');
const { wallNow } = require('./stores');

const [url, schema, concurrencyText] = process.argv.slice(2);
if (process.send === undefined || url === undefined || schema === undefined) {
  console.error('usage: forked by scripts/bench.js: pg-worker.js <url> <schema> <concurrency>');
  process.exit(2);
}

/** Sends `message` to the parent (if still connected), then calls `then`. */
function send(message, then = () => {}) {
  if (process.connected) process.send(message, () => then());
  else then();
}

let runs = 0;

function main() {
  let service;
  try {
    service = new TaskService({
      concurrency: Number(concurrencyText),
      adapter: { kind: 'postgres', url, schema },
    });
  } catch (err) {
    send({ type: 'error', message: String(err?.stack ?? err) }, () => process.exit(1));
    return;
  }
  service.on('error', (err) => send({ type: 'error', message: String(err?.stack ?? err) }));
  service.on('warning', (message) =>
    process.stderr.write(`pg-worker ${process.pid}: ${message}\n`),
  );
  service.register('bench:noop', () => {
    runs++;
    return null;
  });
  service.register('bench:stamp', () => {
    runs++;
    return { t: wallNow() };
  });

  let stopping = false;
  const stop = () => {
    if (stopping) return;
    stopping = true;
    service
      .shutdown({ timeoutMs: 5000 })
      .catch((err) => process.stderr.write(`pg-worker ${process.pid}: ${err?.stack ?? err}\n`))
      .then(() => send({ type: 'stopped', runs }, () => process.exit(0)));
  };
  process.on('message', (message) => {
    if (message?.type === 'stop') stop();
  });
  // The parent died or closed the channel: do not linger.
  process.on('disconnect', stop);

  service.start().then(
    () => send({ type: 'ready', pid: process.pid }),
    (err) => send({ type: 'error', message: String(err?.stack ?? err) }, () => process.exit(1)),
  );
}

main();
