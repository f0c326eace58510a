// Retention: ended tasks and their events are purged after retention.completedMs/failedMs.

const { TaskNotFoundError } = require('..');
const { useServices, waitFor } = require('./helpers');

const makeService = useServices();

describe('retention', () => {
  test('off by default: ended tasks stay readable', async () => {
    const service = makeService();
    const { task, tracker } = await service.push({ classification: 'native:echo', input: 1 }, true);
    await tracker.wait();
    expect((await service.read(task.id)).status).toBe('succeeded');
  });

  test('succeeded tasks go after completedMs, failed ones after failedMs; trackers still settle', async () => {
    const service = makeService({ retention: { completedMs: 0, failedMs: 60_000 } });
    const ok = await service.push({ classification: 'native:echo', input: 'kept briefly' }, true);
    const ko = await service.push({ classification: 'native:fail' }, true);
    expect(await ok.tracker.wait()).toBe('kept briefly');
    await expect(ko.tracker.wait()).rejects.toMatchObject({ taskId: ko.task.id });
    await waitFor(
      async () => (await service.read(ok.task.id).catch((e) => e)) instanceof TaskNotFoundError,
      {
        what: 'the succeeded task purged',
      },
    );
    await expect(service.events(ok.task.id)).rejects.toBeInstanceOf(TaskNotFoundError);
    expect((await service.read(ko.task.id)).status).toBe('failed');
    expect((await service.list()).map((t) => t.id)).toEqual([ko.task.id]);
  });

  test('a dependency on a purged task is refused like a missing one', async () => {
    const { TaskDependencyError } = require('..');
    const service = makeService({ retention: { completedMs: 0 } });
    const { task, tracker } = await service.push({ classification: 'native:echo', input: 1 }, true);
    await tracker.wait();
    await waitFor(
      async () => (await service.read(task.id).catch((e) => e)) instanceof TaskNotFoundError,
      {
        what: 'the task purged',
      },
    );
    await expect(
      service.push({ classification: 'native:echo', dependencies: [task.id] }),
    ).rejects.toBeInstanceOf(TaskDependencyError);
  });

  test('bad retention options get precise errors', () => {
    expect(() => makeService({ retention: { completedMs: -1 } })).toThrow(RangeError);
    expect(() => makeService({ retention: { keep: 1 } })).toThrow(/keep/);
  });
});
