const { lib, useServices, waitForStatus } = require('./helpers');

const {
  TaskService,
  TaskValidationError,
  TaskInputError,
  TaskPayloadTooLargeError,
  TaskNotFoundError,
  UnknownClassificationError,
  TaskDependencyError,
  DecafTaskError,
} = lib;
const createService = useServices();

function thrown(fn) {
  try {
    fn();
  } catch (err) {
    return err;
  }
  throw new Error('expected a throw');
}

describe('service options', () => {
  const cases = [
    [null, TypeError, /^options must be a plain object/],
    [42, TypeError, /^options must be a plain object/],
    [[], TypeError, /^options must be a plain object/],
    [{ nope: 1 }, TypeError, /^options\.nope is not a TaskService option/],
    [{ concurrency: 0 }, RangeError, /^options\.concurrency must be a positive integer \(got 0\)/],
    [{ concurrency: 2.5 }, RangeError, /^options\.concurrency must be a positive integer/],
    [
      { concurrency: '4' },
      TypeError,
      /^options\.concurrency must be a positive integer \(got string\)/,
    ],
    [{ concurrency: Infinity }, RangeError, /^options\.concurrency/],
    [{ concurrency: 2 ** 31 }, RangeError, /^options\.concurrency must be at most/],
    [{ leaseMs: 99 }, RangeError, /^options\.leaseMs must be an integer of at least 100/],
    [{ leaseMs: '1000' }, TypeError, /^options\.leaseMs/],
    [
      { gracefulShutdownMs: -1 },
      RangeError,
      /^options\.gracefulShutdownMs must be a non-negative integer/,
    ],
    [{ logTailMax: -1 }, RangeError, /^options\.logTailMax must be a non-negative integer/],
    [{ logTailMax: 1.5 }, RangeError, /^options\.logTailMax/],
    [{ adapter: 'memory' }, TypeError, /^options\.adapter must be a plain object/],
    [
      { adapter: { kind: 'memory', url: 'x' } },
      TypeError,
      /^options\.adapter\.url is not a memory adapter option/,
    ],
    [{ adapter: { kind: 1 } }, TypeError, /^options\.adapter\.kind must be a string/],
    [
      { adapter: { kind: 'sqlite' } },
      TypeError,
      /^options\.adapter\.path must be a non-empty string/,
    ],
    [
      { adapter: { kind: 'sqlite', path: '/tmp/x.db', url: 'x' } },
      TypeError,
      /^options\.adapter\.url is not a sqlite adapter option/,
    ],
    [{ workerId: '' }, RangeError, /^options\.workerId must be a non-empty string/],
    [{ workerId: 7 }, TypeError, /^options\.workerId must be a non-empty string/],
    [{ autoShutdown: 'yes' }, TypeError, /^options\.autoShutdown must be a boolean/],
    [{ nativeThreads: 0 }, RangeError, /^options\.nativeThreads must be a positive integer/],
    [
      { logger: 'chatty' },
      RangeError,
      /^options\.logger must be one of 'off', 'error', 'warn', 'info', 'debug', 'trace'/,
    ],
    [{ maxPayloadBytes: 0 }, RangeError, /^options\.maxPayloadBytes must be a positive integer/],
  ];

  test.each(cases)('new TaskService(%p) throws a precise error', (options, ErrorClass, message) => {
    const err = thrown(() => new TaskService(options));
    expect(err).toBeInstanceOf(ErrorClass);
    expect(err.code).toBe('E_INVALID');
    expect(err.message).toMatch(message);
  });

  test('an unavailable adapter is a TaskValidationError', () => {
    const err = thrown(() => new TaskService({ adapter: { kind: 'mongo' } }));
    expect(err).toBeInstanceOf(TaskValidationError);
    expect(err).toBeInstanceOf(DecafTaskError);
    expect(err.code).toBe('E_INVALID');
    expect(err.message).toMatch(/options\.adapter\.kind 'mongo' is not available/);
  });

  test('valid options are accepted and reported', () => {
    const service = createService({
      concurrency: 3,
      leaseMs: 100,
      gracefulShutdownMs: 0,
      logTailMax: 0,
      adapter: { kind: 'memory' },
      workerId: 'worker-7',
      autoShutdown: false,
      nativeThreads: 1,
      maxPayloadBytes: 10,
    });
    expect(service.options).toMatchObject({
      concurrency: 3,
      leaseMs: 100,
      gracefulShutdownMs: 0,
      logTailMax: 0,
      workerId: 'worker-7',
      nativeThreads: 1,
      maxPayloadBytes: 10,
    });
  });
});

describe('task specs', () => {
  const cyclic = { name: 'cycle' };
  cyclic.self = cyclic;
  const specCases = [
    [
      'no spec',
      undefined,
      TypeError,
      'E_INVALID',
      /^spec must be a plain object \(got undefined\)/,
    ],
    ['a string spec', 'bus:known', TypeError, 'E_INVALID', /^spec must be a plain object/],
    [
      'no classification',
      {},
      TypeError,
      'E_INVALID',
      /^spec\.classification must be a non-empty string/,
    ],
    [
      'empty classification',
      { classification: '' },
      RangeError,
      'E_INVALID',
      /^spec\.classification .*empty string/,
    ],
    [
      'numeric classification',
      { classification: 3 },
      TypeError,
      'E_INVALID',
      /^spec\.classification .*got number/,
    ],
    [
      'overlong classification',
      { classification: 'c'.repeat(300) },
      RangeError,
      'E_INVALID',
      /^spec\.classification .*300 bytes/,
    ],
    [
      'unknown field',
      { classification: 'bad:known', colour: 'red' },
      TypeError,
      'E_INVALID',
      /^spec\.colour is not a task spec field/,
    ],
    [
      'numeric name',
      { classification: 'bad:known', name: 5 },
      TypeError,
      'E_INVALID',
      /^spec\.name must be a string/,
    ],
    [
      'zero maxAttempts',
      { classification: 'bad:known', maxAttempts: 0 },
      RangeError,
      'E_INVALID',
      /^spec\.maxAttempts must be a positive integer \(got 0\)/,
    ],
    [
      'fractional maxAttempts',
      { classification: 'bad:known', maxAttempts: 1.5 },
      RangeError,
      'E_INVALID',
      /^spec\.maxAttempts/,
    ],
    [
      'string maxAttempts',
      { classification: 'bad:known', maxAttempts: '3' },
      TypeError,
      'E_INVALID',
      /^spec\.maxAttempts/,
    ],
    [
      'string backoff',
      { classification: 'bad:known', backoff: 'fast' },
      TypeError,
      'E_INVALID',
      /^spec\.backoff must be a plain object/,
    ],
    [
      'bad strategy',
      { classification: 'bad:known', backoff: { strategy: 'linear' } },
      RangeError,
      'E_INVALID',
      /^spec\.backoff\.strategy must be one of 'exponential', 'fixed'/,
    ],
    [
      'negative baseMs',
      { classification: 'bad:known', backoff: { baseMs: -1 } },
      RangeError,
      'E_INVALID',
      /^spec\.backoff\.baseMs must be a non-negative integer/,
    ],
    [
      'maxMs < baseMs',
      { classification: 'bad:known', backoff: { baseMs: 100, maxMs: 50 } },
      RangeError,
      'E_INVALID',
      /^spec\.backoff\.maxMs \(50\) must be at least spec\.backoff\.baseMs \(100\)/,
    ],
    [
      'bad jitter',
      { classification: 'bad:known', backoff: { jitter: 'some' } },
      RangeError,
      'E_INVALID',
      /^spec\.backoff\.jitter must be one of 'none', 'full'/,
    ],
    [
      'unknown backoff field',
      { classification: 'bad:known', backoff: { factor: 2 } },
      TypeError,
      'E_INVALID',
      /^spec\.backoff\.factor is not a backoff field/,
    ],
    [
      'fractional priority',
      { classification: 'bad:known', priority: 0.5 },
      RangeError,
      'E_INVALID',
      /^spec\.priority must be an integer/,
    ],
    [
      'string priority',
      { classification: 'bad:known', priority: 'high' },
      TypeError,
      'E_INVALID',
      /^spec\.priority must be an integer/,
    ],
    [
      'string scheduledTo',
      { classification: 'bad:known', scheduledTo: 'tomorrow' },
      TypeError,
      'E_INVALID',
      /^spec\.scheduledTo must be a Date or a number/,
    ],
    [
      'invalid Date scheduledTo',
      { classification: 'bad:known', scheduledTo: new Date('nope') },
      RangeError,
      'E_INVALID',
      /^spec\.scheduledTo is an invalid Date/,
    ],
    [
      'negative scheduledTo',
      { classification: 'bad:known', scheduledTo: -1 },
      RangeError,
      'E_INVALID',
      /^spec\.scheduledTo must be a valid Date/,
    ],
    [
      'empty lock',
      { classification: 'bad:known', lock: '' },
      RangeError,
      'E_INVALID',
      /^spec\.lock must be a non-empty string/,
    ],
    [
      'string dependencies',
      { classification: 'bad:known', dependencies: 'id' },
      TypeError,
      'E_INVALID',
      /^spec\.dependencies must be an array of strings/,
    ],
    [
      'numeric dependency',
      { classification: 'bad:known', dependencies: ['ok', 3] },
      TypeError,
      'E_INVALID',
      /^spec\.dependencies\[1\] must be a non-empty string/,
    ],
    [
      'bad atomicity',
      { classification: 'bad:known', atomicity: 'molecular' },
      RangeError,
      'E_INVALID',
      /^spec\.atomicity must be one of 'atomic', 'composite'/,
    ],
    [
      'steps on atomic',
      { classification: 'bad:known', steps: [{ classification: 'bad:known' }] },
      RangeError,
      'E_INVALID',
      /^spec\.steps are only allowed when spec\.atomicity is 'composite'/,
    ],
    [
      'composite without steps',
      { classification: 'bad:known', atomicity: 'composite' },
      RangeError,
      'E_INVALID',
      /^spec\.steps must hold at least one step/,
    ],
    [
      'bad step',
      {
        classification: 'bad:known',
        atomicity: 'composite',
        steps: [{ classification: 'bad:known', when: 1 }],
      },
      TypeError,
      'E_INVALID',
      /^spec\.steps\[0\]\.when is not a step field/,
    ],
    [
      'function input',
      { classification: 'bad:known', input: () => 1 },
      TaskInputError,
      'E_INVALID_INPUT',
      /^input is a function; task input must be JSON$/,
    ],
    [
      'symbol input',
      { classification: 'bad:known', input: Symbol('s') },
      TaskInputError,
      'E_INVALID_INPUT',
      /^input is a symbol/,
    ],
    [
      'BigInt input',
      { classification: 'bad:known', input: { n: 10n } },
      TaskInputError,
      'E_INVALID_INPUT',
      /^input\.n is a BigInt/,
    ],
    [
      'cyclic input',
      { classification: 'bad:known', input: cyclic },
      TaskInputError,
      'E_INVALID_INPUT',
      /^input\.self is a circular reference/,
    ],
    [
      'nested function',
      { classification: 'bad:known', input: { a: [{ f() {} }] } },
      TaskInputError,
      'E_INVALID_INPUT',
      /^input\.a\[0\]\.f is a function/,
    ],
    [
      'undefined in array',
      { classification: 'bad:known', input: [1, undefined] },
      TaskInputError,
      'E_INVALID_INPUT',
      /^input\[1\] is undefined/,
    ],
    [
      'NaN',
      { classification: 'bad:known', input: { x: Number.NaN } },
      TaskInputError,
      'E_INVALID_INPUT',
      /^input\.x is NaN/,
    ],
    [
      'Infinity',
      { classification: 'bad:known', input: Infinity },
      TaskInputError,
      'E_INVALID_INPUT',
      /^input is Infinity/,
    ],
    [
      'Date input',
      { classification: 'bad:known', input: new Date() },
      TaskInputError,
      'E_INVALID_INPUT',
      /^input is a Date/,
    ],
    [
      'Map input',
      { classification: 'bad:known', input: new Map() },
      TaskInputError,
      'E_INVALID_INPUT',
      /^input is a Map/,
    ],
    [
      'class instance',
      { classification: 'bad:known', input: { v: new (class Point {})() } },
      TaskInputError,
      'E_INVALID_INPUT',
      /^input\.v is a Point instance/,
    ],
  ];

  test.each(specCases)(
    'push with %s is refused and stores nothing',
    async (_label, spec, ErrorClass, code, message) => {
      const service = createService();
      service.register('bad:known', () => 'ok');
      const err = await service.push(spec).catch((e) => e);
      expect(err).toBeInstanceOf(ErrorClass);
      expect(err.code).toBe(code);
      expect(err.message).toMatch(message);
      expect(await service.list()).toEqual([]);
    },
  );

  test('an unknown classification is a typed error and stores nothing', async () => {
    const service = createService();
    const err = await service.push({ classification: 'bad:unknown' }).catch((e) => e);
    expect(err).toBeInstanceOf(UnknownClassificationError);
    expect(err.code).toBe('E_UNKNOWN_CLASSIFICATION');
    expect(err.message).toContain("'bad:unknown'");
    expect(await service.list()).toEqual([]);
  });

  test('a composite with a step nobody handles, or a bad step, is refused, nothing stored', async () => {
    const service = createService();
    service.register('bad:known', () => 'ok');
    const unknown = await service
      .push({
        classification: 'bad:pipeline',
        atomicity: 'composite',
        steps: [{ classification: 'bad:known' }, { classification: 'bad:nobody' }],
      })
      .catch((e) => e);
    expect(unknown).toBeInstanceOf(UnknownClassificationError);
    expect(unknown.message).toContain('bad:nobody');
    const badStep = await service
      .push({
        classification: 'bad:pipeline',
        atomicity: 'composite',
        steps: [{ classification: 'bad:known', maxAttempts: 0 }],
      })
      .catch((e) => e);
    expect(badStep).toBeInstanceOf(RangeError);
    expect(badStep.message).toContain('spec.steps[0].maxAttempts');
    const noSteps = await service
      .push({ classification: 'bad:pipeline', atomicity: 'composite', steps: [] })
      .catch((e) => e);
    expect(noSteps.code).toBe('E_INVALID');
    expect(await service.list()).toEqual([]);
  });

  test('a dependency on a step that does not exist is a TaskDependencyError, nothing stored', async () => {
    const service = createService();
    service.register('bad:known', () => 'ok');
    const { task } = await service.push(
      {
        classification: 'bad:pipeline',
        atomicity: 'composite',
        steps: [{ classification: 'bad:known', name: 'first' }],
      },
      true,
    );
    for (const dep of [`${task.id}:7`, `${task.id}:nope`, 'no-such-task:0']) {
      const err = await service
        .push({ classification: 'bad:known', dependencies: [dep] })
        .catch((e) => e);
      expect(err).toBeInstanceOf(TaskDependencyError);
      expect(err.message).toContain(dep);
      const stepErr = await service
        .push({
          classification: 'bad:pipeline',
          atomicity: 'composite',
          steps: [{ classification: 'bad:known', dependsOn: [dep] }],
        })
        .catch((e) => e);
      expect(stepErr).toBeInstanceOf(TaskDependencyError);
    }
    expect((await service.list()).map((t) => t.id)).toEqual([task.id]);
  });

  test('a dependency on a task that does not exist is a TaskDependencyError, nothing stored', async () => {
    const service = createService();
    const existing = await service.push({ classification: 'native:noop' });
    await waitForStatus(service, existing.id, 'succeeded');
    const err = await service
      .pushMany([
        { classification: 'native:noop', dependencies: [existing.id] },
        { classification: 'native:noop', dependencies: ['no-such-dependency'] },
      ])
      .catch((e) => e);
    expect(err).toBeInstanceOf(TaskDependencyError);
    expect(err.code).toBe('E_DEPENDENCY');
    expect(err.message).toContain('no-such-dependency');
    expect((await service.list()).map((t) => t.id)).toEqual([existing.id]);
  });

  test('an oversized input is a TaskPayloadTooLargeError with size and limit', async () => {
    const service = createService({ maxPayloadBytes: 1024 });
    const err = await service
      .push({ classification: 'native:echo', input: { blob: 'x'.repeat(2000) } })
      .catch((e) => e);
    expect(err).toBeInstanceOf(TaskPayloadTooLargeError);
    expect(err).toBeInstanceOf(TaskInputError);
    expect(err.code).toBe('E_PAYLOAD_TOO_LARGE');
    expect(err.limit).toBe(1024);
    expect(err.size).toBe(JSON.stringify({ blob: 'x'.repeat(2000) }).length);
    expect(err.message).toMatch(
      /^input is \d+ bytes once serialized, more than options\.maxPayloadBytes \(1024\)/,
    );
    expect(await service.list()).toEqual([]);
    // Multi-byte characters count in UTF-8 bytes.
    const utf8 = await service
      .push({ classification: 'native:echo', input: 'é'.repeat(600) })
      .catch((e) => e);
    expect(utf8).toBeInstanceOf(TaskPayloadTooLargeError);
    // Just under the limit is fine.
    const ok = await service.push({ classification: 'native:echo', input: 'y'.repeat(1000) });
    await waitForStatus(service, ok.id, 'succeeded');
  });

  test('pushMany is all or nothing and names the bad spec', async () => {
    const service = createService();
    service.register('bad:known', () => 'ok');
    const specs = [
      { classification: 'bad:known', input: 1 },
      { classification: 'bad:known', input: { bad: 1n } },
    ];
    const err = await service.pushMany(specs).catch((e) => e);
    expect(err).toBeInstanceOf(TaskInputError);
    expect(err.message).toMatch(/^specs\[1\]\.input\.bad is a BigInt/);
    const badField = await service
      .pushMany([{ classification: 'bad:known' }, { classification: 'bad:known', maxAttempts: 0 }])
      .catch((e) => e);
    expect(badField).toBeInstanceOf(RangeError);
    expect(badField.message).toMatch(/^specs\[1\]\.maxAttempts/);
    const unknown = await service
      .pushMany([{ classification: 'bad:known' }, { classification: 'bad:nobody' }])
      .catch((e) => e);
    expect(unknown).toBeInstanceOf(UnknownClassificationError);
    const notArray = await service.pushMany({ classification: 'bad:known' }).catch((e) => e);
    expect(notArray).toBeInstanceOf(TypeError);
    expect(notArray.message).toMatch(/^specs must be an array/);
    expect(await service.list()).toEqual([]);
  });

  test('push(spec, track) requires a boolean track', async () => {
    const service = createService();
    const err = await service.push({ classification: 'native:noop' }, 'yes').catch((e) => e);
    expect(err).toBeInstanceOf(TypeError);
    expect(err.message).toMatch(/^track must be a boolean/);
    expect(await service.list()).toEqual([]);
  });

  test('schedule().for() validates the date and the spec', async () => {
    const service = createService();
    const badDate = await service
      .schedule({ classification: 'native:noop' })
      .for('soon')
      .catch((e) => e);
    expect(badDate).toBeInstanceOf(TypeError);
    expect(badDate.message).toMatch(/^when must be a Date or a number/);
    const nanDate = await service
      .schedule({ classification: 'native:noop' })
      .for(new Date('x'))
      .catch((e) => e);
    expect(nanDate).toBeInstanceOf(RangeError);
    const badSpec = await service
      .schedule(null)
      .for(Date.now())
      .catch((e) => e);
    expect(badSpec).toBeInstanceOf(TypeError);
    expect(await service.list()).toEqual([]);
  });
});

describe('ids, filters and registrations', () => {
  test('an unknown id is a TaskNotFoundError for read, cancel, events and track', async () => {
    const service = createService();
    for (const call of [
      () => service.read('no-such-task'),
      () => service.cancel('no-such-task'),
      () => service.events('no-such-task'),
      () => service.track('no-such-task'),
    ]) {
      const err = await call().catch((e) => e);
      expect(err).toBeInstanceOf(TaskNotFoundError);
      expect(err).toBeInstanceOf(DecafTaskError);
      expect(err.code).toBe('E_NOT_FOUND');
      expect(err.message).toContain('no-such-task');
    }
  });

  test('a malformed id is a TypeError / RangeError naming it', async () => {
    const service = createService();
    for (const method of ['read', 'cancel', 'events', 'track']) {
      const empty = await service[method]('').catch((e) => e);
      expect(empty).toBeInstanceOf(RangeError);
      expect(empty.message).toMatch(/^id must be a non-empty string/);
      const num = await service[method](12).catch((e) => e);
      expect(num).toBeInstanceOf(TypeError);
      expect(num.code).toBe('E_INVALID');
    }
    const reason = await service.cancel('whatever', 42).catch((e) => e);
    expect(reason).toBeInstanceOf(TypeError);
    expect(reason.message).toMatch(/^reason must be a string/);
  });

  test('list filters are validated', async () => {
    const service = createService();
    const cases = [
      [7, TypeError, /^filter must be a plain object/],
      [
        { status: 'done' },
        RangeError,
        /^filter\.status must be one of 'pending', 'scheduled', 'running'/,
      ],
      [{ limit: 0 }, RangeError, /^filter\.limit must be a positive integer/],
      [{ offset: -1 }, RangeError, /^filter\.offset must be a non-negative integer/],
      [{ sort: 'asc' }, TypeError, /^filter\.sort is not a list filter field/],
      [{ classification: '' }, RangeError, /^filter\.classification/],
    ];
    for (const [filter, ErrorClass, message] of cases) {
      const err = await service.list(filter).catch((e) => e);
      expect(err).toBeInstanceOf(ErrorClass);
      expect(err.message).toMatch(message);
    }
  });

  test('register validates the classification and the handler', () => {
    const service = createService();
    service.register('bad:taken', () => 1);
    const cases = [
      [
        () => service.register('', () => 1),
        RangeError,
        /^classification must be a non-empty string/,
      ],
      [() => service.register(5, () => 1), TypeError, /^classification must be a non-empty string/],
      [
        () => service.register('native:mine', () => 1),
        TaskValidationError,
        /^classification 'native:mine' is reserved/,
      ],
      [
        () => service.register('bad:taken', () => 2),
        TaskValidationError,
        /^a handler is already registered for classification 'bad:taken'/,
      ],
      [() => service.register('bad:h', 'handler'), TypeError, /^handler must be a function/],
      [() => service.register('bad:h', {}), TypeError, /^handler\.run must be a function/],
      [
        () => service.register('bad:h', { run() {}, catch: true }),
        TypeError,
        /^handler\.catch must be a function/,
      ],
    ];
    for (const [fn, ErrorClass, message] of cases) {
      const err = thrown(fn);
      expect(err).toBeInstanceOf(ErrorClass);
      expect(err.code).toBe('E_INVALID');
      expect(err.message).toMatch(message);
    }
  });
});
