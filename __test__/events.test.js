const { useServices, waitForStatus, recordEvents, fixedBackoff } = require('./helpers');

const createService = useServices();

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const TERMINAL = new Set(['succeeded', 'failed', 'canceled']);

/** Resolves when every task in `ids` reached a terminal status (one listener for all). */
function allTerminal(service, ids) {
  const waiting = new Set(ids);
  return new Promise((resolve) => {
    const onStatus = (evt) => {
      if (TERMINAL.has(evt.payload.status) && waiting.delete(evt.taskId) && waiting.size === 0) {
        service.off('status', onStatus);
        resolve();
      }
    };
    service.on('status', onStatus);
    Promise.all(ids.map((id) => service.read(id))).then((tasks) => {
      for (const t of tasks) if (TERMINAL.has(t.status)) waiting.delete(t.id);
      if (waiting.size === 0) {
        service.off('status', onStatus);
        resolve();
      }
    });
  });
}

describe('event envelope', () => {
  test('events have id "<taskId>:<classification>:<uuid>", a uuid, a seq, a Date ts', async () => {
    const service = createService();
    service.register('events:shape', async (_input, ctx) => {
      ctx.logger.info('hello', { a: 1 });
      await ctx.progress({ half: true });
      return 'out';
    });
    const rec = recordEvents(service);
    const { task, tracker } = await service.push({ classification: 'events:shape' }, true);
    await tracker.wait();
    const events = rec.of(task.id);
    expect(events.map((e) => e.classification)).toEqual([
      'status',
      'status',
      'log',
      'progress',
      'status',
    ]);
    for (const evt of events) {
      expect(Object.keys(evt).sort()).toEqual(
        ['classification', 'id', 'payload', 'seq', 'taskId', 'ts', 'uuid'].sort(),
      );
      expect(evt.taskId).toBe(task.id);
      expect(evt.uuid).toMatch(UUID);
      expect(evt.id).toBe(`${task.id}:${evt.classification}:${evt.uuid}`);
      expect(evt.ts).toBeInstanceOf(Date);
      expect(Number.isNaN(evt.ts.getTime())).toBe(false);
      expect(Number.isInteger(evt.seq)).toBe(true);
    }
    expect(new Set(events.map((e) => e.uuid)).size).toBe(events.length);
    expect(events[0].payload).toEqual({ status: 'pending' });
    expect(events[1].payload).toEqual({ status: 'running' });
    expect(events[2].payload).toEqual([
      { ts: expect.any(Date), level: 'info', msg: 'hello', meta: { a: 1 } },
    ]);
    expect(events[3].payload).toEqual({ half: true });
    expect(events[4].payload).toEqual({ status: 'succeeded', output: 'out' });
  });

  test('status payloads: failed/waiting_retry carry error, waiting_retry nextRunAt, scheduled scheduledTo', async () => {
    const service = createService();
    service.register('events:fail', (_input, ctx) => {
      const err = new Error(`fail ${ctx.attempt}`);
      err.code = 'E_X';
      throw err;
    });
    const rec = recordEvents(service);
    const when = Date.now() + 50;
    const { task, tracker } = await service
      .schedule({ classification: 'events:fail', maxAttempts: 2, backoff: fixedBackoff(5) }, true)
      .for(when);
    await tracker.wait().catch(() => undefined);
    const payloads = rec.of(task.id).map((e) => e.payload);
    expect(payloads.map((p) => p.status)).toEqual([
      'scheduled',
      'running',
      'waiting_retry',
      'running',
      'failed',
    ]);
    expect(payloads[0]).toEqual({ status: 'scheduled', scheduledTo: new Date(when) });
    expect(payloads[2]).toEqual({
      status: 'waiting_retry',
      nextRunAt: expect.any(Date),
      error: { message: 'fail 1', code: 'E_X', stack: expect.any(String) },
    });
    expect(payloads[4]).toEqual({
      status: 'failed',
      error: { message: 'fail 2', code: 'E_X', stack: expect.any(String) },
    });
    expect(payloads[4].nextRunAt).toBeUndefined();
  });

  test("'event' fires for every event, then the listeners of its classification", async () => {
    const service = createService();
    service.register('events:kinds', async (_input, ctx) => {
      ctx.logger.warn('w');
      await ctx.progress(1);
      return 1;
    });
    const order = [];
    service.on('event', (e) => order.push(`event:${e.classification}`));
    service.on('status', (e) => order.push(`status:${e.classification}`));
    service.on('log', (e) => order.push(`log:${e.classification}`));
    service.on('progress', (e) => order.push(`progress:${e.classification}`));
    const { tracker } = await service.push({ classification: 'events:kinds' }, true);
    await tracker.wait();
    expect(order).toEqual([
      'event:status',
      'status:status',
      'event:status',
      'status:status',
      'event:log',
      'log:log',
      'event:progress',
      'progress:progress',
      'event:status',
      'status:status',
    ]);
  });

  test('a throwing listener does not stop the others; the service reports it as "error"', async () => {
    const service = createService();
    const errors = [];
    service.on('error', (err) => errors.push(err));
    const seen = [];
    service.on('status', () => {
      throw new Error('listener broke');
    });
    service.on('status', (e) => seen.push(e.payload.status));
    const task = await service.push({ classification: 'native:echo', input: 1 });
    await waitForStatus(service, task.id, 'succeeded');
    expect(seen).toEqual(['pending', 'running', 'succeeded']);
    expect(errors.length).toBe(3);
    expect(errors[0].message).toBe('listener broke');
  });
});

describe('event order and content', () => {
  test('falsy outputs (0, "", false, null) are preserved in events, records and trackers', async () => {
    const service = createService();
    service.register('events:falsy', (input) => input.value);
    const values = [0, '', false, null];
    const rec = recordEvents(service);
    for (const classification of ['events:falsy', 'native:echo']) {
      for (const value of values) {
        const input = classification === 'native:echo' ? value : { value };
        const { task, tracker } = await service.push({ classification, input }, true);
        await expect(tracker.wait()).resolves.toBe(value);
        const done = rec.of(task.id).find((e) => e.payload.status === 'succeeded');
        expect('output' in done.payload).toBe(true);
        expect(done.payload.output).toBe(value);
        const stored = await service.read(task.id);
        expect(stored.output).toBe(value);
        const persisted = (await service.events(task.id)).find(
          (e) => e.payload.status === 'succeeded',
        );
        expect(persisted.payload).toEqual({ status: 'succeeded', output: value });
        const { tracker: late } = await service.track(task.id);
        await expect(late.wait()).resolves.toBe(value);
        expect(late.task.status).toBe('succeeded');
      }
    }
  });

  test('per task: running → its logs/progress → status, for every attempt, under interleaving', async () => {
    const service = createService({ concurrency: 8 });
    service.register('events:chatty', async (input, ctx) => {
      for (let i = 0; i < 5; i++) {
        ctx.logger.info(`a${ctx.attempt}-l${i}`);
        await new Promise((resolve) => setImmediate(resolve));
        await ctx.progress({ attempt: ctx.attempt, i });
      }
      if (ctx.attempt === 1) throw new Error('first attempt fails');
      return `t${input}`;
    });
    const rec = recordEvents(service);
    const tasks = await service.pushMany(
      Array.from({ length: 16 }, (_, i) => ({
        classification: 'events:chatty',
        input: i,
        maxAttempts: 2,
        backoff: fixedBackoff(1),
      })),
    );
    await allTerminal(
      service,
      tasks.map((t) => t.id),
    );
    for (const t of tasks) {
      const seq = rec.of(t.id).map((e) => {
        if (e.classification === 'status') return e.payload.status;
        if (e.classification === 'log') return `log:${e.payload[0].msg}`;
        return `progress:${e.payload.attempt}-${e.payload.i}`;
      });
      const attempt = (n) =>
        [0, 1, 2, 3, 4].flatMap((i) => [`log:a${n}-l${i}`, `progress:${n}-${i}`]);
      expect(seq).toEqual([
        'pending',
        'running',
        ...attempt(1),
        'waiting_retry',
        'running',
        ...attempt(2),
        'succeeded',
      ]);
    }
  });

  test('events are persisted before they are emitted; service.events(id) equals what listeners saw', async () => {
    const service = createService({ concurrency: 4 });
    service.register('events:persist', async (input, ctx) => {
      ctx.logger.info('working');
      await ctx.progress(input);
      if (input % 3 === 0) throw new Error('multiple of three');
      return input;
    });
    const snapshots = [];
    const rec = recordEvents(service);
    service.on('event', (evt) => {
      // The native read happens synchronously inside this call.
      snapshots.push(service.events(evt.taskId).then((list) => [evt.id, list.map((e) => e.id)]));
    });
    const tasks = await service.pushMany(
      Array.from({ length: 30 }, (_, i) => ({
        classification: i % 2 ? 'events:persist' : 'native:echo',
        input: i,
      })),
    );
    await allTerminal(
      service,
      tasks.map((t) => t.id),
    );
    for (const [id, persistedIds] of await Promise.all(snapshots)) {
      expect(persistedIds).toContain(id);
    }
    for (const t of tasks) {
      const persisted = await service.events(t.id);
      expect(rec.of(t.id)).toEqual(persisted);
    }
  });

  test('many tasks: every event delivered exactly once, in engine order, in batches', async () => {
    const service = createService({ concurrency: 32 });
    service.register('events:bulk', async (input, ctx) => {
      if (input % 5 === 0) ctx.logger.debug(`bulk ${input}`);
      return input;
    });
    const delivered = [];
    let groups = 0;
    let inGroup = false;
    service.on('event', (evt) => {
      delivered.push(evt);
      if (!inGroup) {
        inGroup = true;
        groups += 1;
        queueMicrotask(() => {
          inGroup = false;
        });
      }
    });
    const specs = [];
    for (let i = 0; i < 600; i++) {
      specs.push({ classification: i % 3 === 0 ? 'events:bulk' : 'native:noop', input: i });
    }
    const tasks = await service.pushMany(specs);
    await allTerminal(
      service,
      tasks.map((t) => t.id),
    );
    // Every event exactly once.
    const ids = delivered.map((e) => e.id);
    expect(new Set(ids).size).toBe(ids.length);
    // Engine order: seq strictly increasing as delivered.
    for (let i = 1; i < delivered.length; i++) {
      expect(delivered[i].seq).toBeGreaterThan(delivered[i - 1].seq);
    }
    // Nothing lost: what was delivered is exactly what was persisted.
    let persistedCount = 0;
    for (const t of tasks) {
      const persisted = await service.events(t.id);
      persistedCount += persisted.length;
      const statuses = persisted
        .filter((e) => e.classification === 'status')
        .map((e) => e.payload.status);
      expect(statuses).toEqual(['pending', 'running', 'succeeded']);
    }
    expect(delivered.length).toBe(persistedCount);
    expect(delivered.length).toBeGreaterThanOrEqual(1800);
    // Delivered in batches: far fewer synchronous delivery rounds than events.
    expect(groups).toBeLessThan(delivered.length / 2);
  });
});
