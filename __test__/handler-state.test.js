const {
  lib,
  deferred,
  useServices,
  waitFor,
  waitForStatus,
  recordEvents,
  statusHistory,
  fixedBackoff,
} = require('./helpers');

const { TaskAbortedError, TaskFailError, TaskRescheduleError, TaskInputError } = lib;
const createService = useServices();

async function barrier(service) {
  const probe = await service.push({ classification: 'native:noop' });
  await waitForStatus(service, probe.id, 'succeeded');
}

describe('ctx.cancel / ctx.retry / ctx.reschedule', () => {
  test('ctx.cancel(reason) ends the task canceled; the later return and logs are ignored', async () => {
    const service = createService();
    let signal;
    service.register('state:cancel', async (_input, ctx) => {
      signal = ctx.signal;
      ctx.logger.info('before cancel');
      await ctx.cancel('handler gave up');
      ctx.logger.info('after cancel');
      return 'ignored output';
    });
    const rec = recordEvents(service);
    const { task, tracker } = await service.push({ classification: 'state:cancel' }, true);
    const err = await tracker.wait().catch((e) => e);
    expect(err).toMatchObject({ nextAction: 'canceled', taskId: task.id });
    await barrier(service);
    const stored = await service.read(task.id);
    expect(stored.status).toBe('canceled');
    expect(stored.output).toBeUndefined();
    expect(stored.error).toEqual({
      message: `Task ${task.id} canceled`,
      code: 400,
      details: { reason: 'handler gave up' },
    });
    expect(rec.of(task.id).map((e) => e.classification)).toEqual([
      'status',
      'status',
      'log',
      'status',
    ]);
    expect(
      rec
        .of(task.id)
        .filter((e) => e.classification === 'log')
        .map((e) => e.payload[0].msg),
    ).toEqual(['before cancel']);
    expect(signal.aborted).toBe(true);
    expect(signal.reason).toBeInstanceOf(TaskAbortedError);
    expect(signal.reason.reason).toBe('handler');
  });

  test('ctx.retry(reason) sends the task to waiting_retry and runs it again', async () => {
    const service = createService();
    const attempts = [];
    service.register('state:retry', (_input, ctx) => {
      attempts.push(ctx.attempt);
      if (ctx.attempt === 1) return ctx.retry('not yet');
      return `done on ${ctx.attempt}`;
    });
    const rec = recordEvents(service);
    const { task, tracker } = await service.push(
      { classification: 'state:retry', maxAttempts: 2, backoff: fixedBackoff(5) },
      true,
    );
    await expect(tracker.wait()).resolves.toBe('done on 2');
    expect(attempts).toEqual([1, 2]);
    expect(rec.statuses(task.id)).toEqual([
      'pending',
      'running',
      'waiting_retry',
      'running',
      'succeeded',
    ]);
    const retryEvt = rec.of(task.id).find((e) => e.payload.status === 'waiting_retry');
    expect(retryEvt.payload.error).toMatchObject({ message: 'not yet', code: 'E_RETRY' });
    expect(retryEvt.payload.nextRunAt).toBeInstanceOf(Date);
    expect((await service.read(task.id)).attempt).toBe(1);
  });

  test('ctx.retry respects maxAttempts: on the last attempt the task fails', async () => {
    const service = createService();
    let runs = 0;
    service.register('state:retry-last', (_input, ctx) => {
      runs += 1;
      return ctx.retry('again please');
    });
    const { task, tracker } = await service.push({ classification: 'state:retry-last' }, true);
    const err = await tracker.wait().catch((e) => e);
    expect(err).toBeInstanceOf(TaskFailError);
    expect(err).toMatchObject({ nextAction: 'failed', taskId: task.id });
    expect(err.details).toMatchObject({ message: 'again please', code: 'E_RETRY' });
    expect(runs).toBe(1);
    expect(await statusHistory(service, task.id)).toEqual(['pending', 'running', 'failed']);
    expect((await service.read(task.id)).attempt).toBe(1);
  });

  test('ctx.reschedule(date) stores the task scheduled and runs it again at that date', async () => {
    const service = createService();
    const runs = [];
    let when;
    service.register('state:reschedule', async (_input, ctx) => {
      runs.push({ attempt: ctx.attempt, at: Date.now() });
      if (runs.length === 1) {
        when = new Date(Date.now() + 400);
        await ctx.reschedule(when, 'come back later');
        return 'ignored';
      }
      return 'second run';
    });
    const { task, tracker } = await service.push({ classification: 'state:reschedule' }, true);
    const waited = tracker.wait();
    const rejection = await tracker.resolve().catch((e) => e);
    expect(rejection).toBeInstanceOf(TaskRescheduleError);
    expect(rejection.nextAction).toBe('scheduled');
    expect(rejection.meta.scheduledTo.getTime()).toBe(when.getTime());
    const stored = await service.read(task.id);
    expect(stored.status).toBe('scheduled');
    expect(stored.scheduledTo.getTime()).toBe(when.getTime());
    await expect(waited).resolves.toBe('second run');
    expect(runs).toHaveLength(2);
    expect(runs[1].at).toBeGreaterThanOrEqual(when.getTime());
    expect(runs.map((r) => r.attempt)).toEqual([1, 1]);
    const done = await service.read(task.id);
    expect(done).toMatchObject({ status: 'succeeded', output: 'second run', attempt: 0 });
    expect(await statusHistory(service, task.id)).toEqual([
      'pending',
      'running',
      'scheduled',
      'running',
      'succeeded',
    ]);
    const scheduledEvt = (await service.events(task.id)).find(
      (e) => e.payload.status === 'scheduled',
    );
    expect(scheduledEvt.payload.scheduledTo.getTime()).toBe(when.getTime());
  });

  test('bad arguments of ctx.reschedule / ctx.pipe / ctx.progress throw in the handler', async () => {
    const service = createService();
    const caught = {};
    service.register('state:bad-ctx', (_input, ctx) => {
      for (const [name, fn] of Object.entries({
        reschedule: () => ctx.reschedule('tomorrow'),
        rescheduleNaN: () => ctx.reschedule(new Date(Number.NaN)),
        pipe: () => ctx.pipe('', 'msg'),
        progress: () => ctx.progress({ fn: () => 1 }),
        progressBig: () => ctx.progress(1n),
      })) {
        try {
          fn();
          caught[name] = 'no error';
        } catch (err) {
          caught[name] = { name: err.name, code: err.code, message: err.message };
        }
      }
      return 'still fine';
    });
    const { tracker } = await service.push({ classification: 'state:bad-ctx' }, true);
    await expect(tracker.wait()).resolves.toBe('still fine');
    expect(caught.reschedule).toMatchObject({ name: 'TypeError', code: 'E_INVALID' });
    expect(caught.reschedule.message).toMatch(/^when /);
    expect(caught.rescheduleNaN).toMatchObject({ name: 'RangeError', code: 'E_INVALID' });
    expect(caught.pipe).toMatchObject({ name: 'TypeError', code: 'E_INVALID' });
    expect(caught.pipe.message).toMatch(/level/);
    expect(caught.progress).toMatchObject({ name: 'TaskInputError', code: 'E_INVALID_INPUT' });
    expect(caught.progress.message).toMatch(/data\.fn is a function/);
    expect(caught.progressBig).toMatchObject({ name: 'TaskInputError' });
    expect(new TaskInputError('x')).toBeInstanceOf(lib.TaskValidationError);
  });
});

describe('logger, pipe, progress, heartbeat, signal', () => {
  test('ctx.logger levels and ctx.pipe produce log events kept in logTail', async () => {
    const service = createService();
    service.register('state:log', async (_input, ctx) => {
      ctx.logger.debug('d', { n: 1 });
      ctx.logger.info('i');
      ctx.logger.warn('w', [1, 2]);
      ctx.logger.error('e', { nested: { ok: true } });
      ctx.logger.trace('t');
      await ctx.pipe('audit', 'custom level', { who: 'me' });
      await ctx.pipe('info', 'piped');
      return 'logged';
    });
    const rec = recordEvents(service);
    const { task, tracker } = await service.push({ classification: 'state:log' }, true);
    await tracker.wait();
    const logs = rec
      .of(task.id)
      .filter((e) => e.classification === 'log')
      .flatMap((e) => e.payload);
    expect(logs.map(({ level, msg, meta }) => ({ level, msg, meta }))).toEqual([
      { level: 'debug', msg: 'd', meta: { n: 1 } },
      { level: 'info', msg: 'i', meta: undefined },
      { level: 'warn', msg: 'w', meta: [1, 2] },
      { level: 'error', msg: 'e', meta: { nested: { ok: true } } },
      { level: 'trace', msg: 't', meta: undefined },
      { level: 'audit', msg: 'custom level', meta: { who: 'me' } },
      { level: 'info', msg: 'piped', meta: undefined },
    ]);
    for (const entry of logs) expect(entry.ts).toBeInstanceOf(Date);
    const stored = await service.read(task.id);
    expect(stored.logTail.map((l) => l.msg)).toEqual([
      'd',
      'i',
      'w',
      'e',
      't',
      'custom level',
      'piped',
    ]);
    for (const entry of stored.logTail) expect(entry.ts).toBeInstanceOf(Date);
  });

  test('logTailMax bounds the stored tail, not the emitted log events', async () => {
    const service = createService({ logTailMax: 3 });
    service.register('state:tail', (_input, ctx) => {
      for (let i = 0; i < 10; i++) ctx.logger.info(`line ${i}`);
      return null;
    });
    const rec = recordEvents(service);
    const { task, tracker } = await service.push({ classification: 'state:tail' }, true);
    await tracker.wait();
    expect(rec.of(task.id).filter((e) => e.classification === 'log')).toHaveLength(10);
    expect((await service.read(task.id)).logTail.map((l) => l.msg)).toEqual([
      'line 7',
      'line 8',
      'line 9',
    ]);
  });

  test('log meta that is not JSON is made safe instead of throwing', async () => {
    const service = createService();
    service.register('state:meta', (_input, ctx) => {
      const cyclic = { name: 'loop' };
      cyclic.self = cyclic;
      ctx.logger.info('cyclic', cyclic);
      ctx.logger.info('bigint', { n: 10n });
      ctx.logger.warn('error', new Error('as meta'));
      return 'ok';
    });
    const rec = recordEvents(service);
    const { task, tracker } = await service.push({ classification: 'state:meta' }, true);
    await expect(tracker.wait()).resolves.toBe('ok');
    const metas = rec
      .of(task.id)
      .filter((e) => e.classification === 'log')
      .map((e) => e.payload[0].meta);
    expect(metas[0]).toEqual({ name: 'loop', self: '[Circular]' });
    expect(metas[1]).toEqual({ n: '10' });
    expect(metas[2]).toMatchObject({ name: 'Error', message: 'as meta' });
  });

  test('ctx.progress emits progress events with the data, in order', async () => {
    const service = createService();
    service.register('state:progress', async (_input, ctx) => {
      for (let i = 1; i <= 3; i++) {
        await ctx.progress({ step: i, of: 3 });
      }
      await ctx.progress(0);
      await ctx.progress(null);
      return 'done';
    });
    const rec = recordEvents(service);
    const { task, tracker } = await service.push({ classification: 'state:progress' }, true);
    await tracker.wait();
    const progress = rec.of(task.id).filter((e) => e.classification === 'progress');
    expect(progress.map((e) => e.payload)).toEqual([
      { step: 1, of: 3 },
      { step: 2, of: 3 },
      { step: 3, of: 3 },
      0,
      null,
    ]);
    const kinds = rec.of(task.id).map((e) => e.classification);
    expect(kinds.indexOf('progress')).toBeGreaterThan(1);
    expect(kinds[kinds.length - 1]).toBe('status');
  });

  test('ctx.heartbeat() extends the lease of the run', async () => {
    const service = createService({ leaseMs: 60000 });
    const result = {};
    service.register('state:heartbeat', async (_input, ctx) => {
      const before = (await service.read(ctx.taskId)).leaseExpiry.getTime();
      const t0 = Date.now();
      await waitFor(() => Date.now() > t0 + 5, { intervalMs: 1, what: 'the clock to move' });
      await ctx.heartbeat();
      const after = (await service.read(ctx.taskId)).leaseExpiry.getTime();
      result.before = before;
      result.after = after;
      return 'beat';
    });
    const { tracker } = await service.push({ classification: 'state:heartbeat' }, true);
    await expect(tracker.wait()).resolves.toBe('beat');
    expect(result.after).toBeGreaterThan(result.before);
  });

  test('ctx.signal stays unaborted during a normal run; ctx calls after the run are ignored', async () => {
    const service = createService();
    let kept;
    service.register('state:late', async (_input, ctx) => {
      kept = ctx;
      await Promise.resolve();
      return ctx.signal.aborted;
    });
    const rec = recordEvents(service);
    const { task, tracker } = await service.push({ classification: 'state:late' }, true);
    await expect(tracker.wait()).resolves.toBe(false);
    const countBefore = (await service.events(task.id)).length;
    kept.logger.info('too late');
    await kept.progress({ late: true });
    await kept.heartbeat();
    await kept.cancel('too late');
    await kept.retry('too late');
    await kept.reschedule(Date.now() + 1000);
    await barrier(service);
    expect((await service.events(task.id)).length).toBe(countBefore);
    expect(rec.of(task.id).map((e) => e.classification)).not.toContain('log');
    expect((await service.read(task.id)).status).toBe('succeeded');
  });

  test('ctx.signal aborts when the handler itself ends the run with ctx.retry', async () => {
    const service = createService();
    const signals = [];
    const aborted = deferred();
    service.register('state:signal', async (_input, ctx) => {
      signals.push(ctx.signal);
      if (ctx.attempt === 1) {
        ctx.signal.addEventListener('abort', () => aborted.resolve(ctx.signal.reason));
        await ctx.retry();
        return 'ignored';
      }
      return 'ok';
    });
    const { tracker } = await service.push(
      { classification: 'state:signal', maxAttempts: 2, backoff: fixedBackoff(1) },
      true,
    );
    await expect(tracker.wait()).resolves.toBe('ok');
    const reason = await aborted.promise;
    expect(reason).toBeInstanceOf(TaskAbortedError);
    expect(reason.reason).toBe('handler');
    expect(signals[0]).not.toBe(signals[1]);
    expect(signals[1].aborted).toBe(false);
  });
});
