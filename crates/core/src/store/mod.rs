//! Where tasks and their events live. One trait, several implementations; the engine
//! only talks to [`Store`].

mod memory;
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "sqlite")]
mod sqlite;

pub use memory::MemoryStore;
#[cfg(feature = "postgres")]
pub use postgres::PostgresStore;
#[cfg(feature = "sqlite")]
pub use sqlite::SqliteStore;

use crate::error::{EngineError, Result};
use crate::event::{Event, EventDraft};
use crate::model::{ListFilter, Millis, Task, TaskId, TaskStatus};
use crate::state::{Change, Refused};

/// A transition: from the current record to the next one and its events (see
/// [`crate::state`]).
pub type Transition<'a> = &'a mut dyn FnMut(&Task) -> Result<Change, Refused>;

/// What [`Store::apply`] did: the new status and the events, or why the transition was
/// refused.
pub type Applied = Result<(TaskStatus, Vec<Event>), Refused>;

/// What `transition` makes of `current`: the next record (its version the next one), its
/// status and its events numbered by `number`; or why it was refused. Every store's
/// [`Store::apply`] does this before it writes.
pub(crate) fn next_record(
    current: &Task,
    transition: Transition<'_>,
    number: Numbering<'_>,
) -> Result<(Task, TaskStatus, Vec<Event>), Refused> {
    let mut change = transition(current)?;
    change.task.version = current.version + 1;
    let status = change.task.status;
    let events = number(&mut change.task, change.events);
    Ok((change.task, status, events))
}

/// Numbers the drafts of a change into events (the engine's sequence, after the task's
/// `last_seq`), and sets the task's `last_seq`: call it on the record about to be written.
pub type Numbering<'a> = &'a mut dyn FnMut(&mut Task, Vec<EventDraft>) -> Vec<Event>;

/// What a claim asks the store for.
pub struct ClaimRequest<'a> {
    /// At most this many tasks.
    pub limit: usize,
    /// The current time: only tasks due at or before it.
    pub now: Millis,
    /// The lease owner written on claimed tasks.
    pub owner: &'a str,
    /// Lease length.
    pub lease_ms: u64,
    /// The classifications some executor of the engine serves: a store may limit its scan
    /// to them (`reserve` still decides).
    pub classifications: &'a [String],
    /// Reserves an executor for one more task of a classification; `false` when none has
    /// room (then no more tasks of it are taken in this claim). Called once for each task
    /// the claim returns, just before taking it, in the order of the returned tasks.
    pub reserve: &'a dyn Fn(&str) -> bool,
    /// Numbers the events of a claim (as [`Numbering`] does); the store persists them
    /// with it, in the same write.
    pub number: &'a dyn Fn(&mut Task, Vec<EventDraft>) -> Vec<Event>,
}

/// A task a claim leased, with the events of the claim (numbered and persisted with it).
#[derive(Debug, Clone)]
pub struct Claimed {
    /// The record, now `running` under the claim's lease.
    pub task: Task,
    /// Its `running` status (unless a composite moves on to its next step) and a
    /// composite's step progress event. A shared store puts before them the task's events
    /// stored by other processes that [`Store::remote_events`] has not returned yet (and
    /// will not return): the engine delivers a task's events in order.
    pub events: Vec<Event>,
}

/// How long ended tasks (and their events) are kept. `None`: forever (the default).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Retention {
    /// Keep `succeeded` tasks this long after they ended.
    pub completed_ms: Option<u64>,
    /// Keep `failed` and `canceled` tasks this long after they ended.
    pub failed_ms: Option<u64>,
}

impl Retention {
    /// Whether anything is ever purged.
    pub fn is_on(&self) -> bool {
        self.completed_ms.is_some() || self.failed_ms.is_some()
    }
}

/// A blocked task one of whose dependencies ended without succeeding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DependencyFailure {
    /// The dependent task.
    pub task_id: TaskId,
    /// The dependency.
    pub dependency: TaskId,
    /// How the dependency ended (`failed` or `canceled`).
    pub status: TaskStatus,
}

/// What a claim returns.
#[derive(Debug, Default)]
pub struct ClaimBatch {
    /// The tasks now leased (stored `running`) and their claim events (stored too).
    pub claimed: Vec<Claimed>,
    /// Blocked tasks that can never run: the engine fails them.
    pub dependency_failures: Vec<DependencyFailure>,
}

/// Storage of tasks and events.
///
/// Every method is atomic. Updates are optimistic: [`Store::update`] writes only if the
/// stored version is still the one the caller read, so two engines (or two threads) cannot
/// overwrite each other's transitions.
pub trait Store: Send + Sync {
    /// Stores new tasks (version 0) and their creation events (grouped by task, in the
    /// order of `tasks`), all or nothing. Every dependency must name a stored task
    /// ([`EngineError::DependencyNotFound`] otherwise).
    fn insert(&self, tasks: &[Task], events: &[Event]) -> Result<()>;

    /// One task.
    fn get(&self, id: &str) -> Result<Option<Task>>;

    /// Tasks matching `filter`, oldest first.
    fn list(&self, filter: &ListFilter) -> Result<Vec<Task>>;

    /// The persisted events of a task, oldest first.
    fn events(&self, task_id: &str) -> Result<Vec<Event>>;

    /// Replaces the task whose stored version is `task.version - 1` by `task` and appends
    /// `events`. Returns `false` (and changes nothing) when the stored version differs.
    fn update(&self, task: Task, events: &[Event]) -> Result<bool>;

    /// Applies `transition` to the stored task atomically: the new record (its version
    /// set to the stored one + 1) replaces the old one and its events, numbered by `number`,
    /// are appended. Returns the new status and the events, or why it was refused.
    ///
    /// The default reads, transitions and writes with [`Store::update`], retrying on a
    /// version conflict; a store that can do better in place overrides it.
    fn apply(
        &self,
        id: &str,
        transition: Transition<'_>,
        number: Numbering<'_>,
    ) -> Result<Applied> {
        loop {
            let current = self
                .get(id)?
                .ok_or_else(|| EngineError::NotFound(id.to_owned()))?;
            let (task, status, events) = match next_record(&current, &mut *transition, &mut *number)
            {
                Ok(next) => next,
                Err(refused) => return Ok(Err(refused)),
            };
            if self.update(task, &events)? {
                return Ok(Ok((status, events)));
            }
        }
    }

    /// Applies several transitions, each as [`Store::apply`] would, in order (their events
    /// numbered in that order; a task named twice sees its first change). One result per
    /// item, whatever happened to the others: a store that writes them in one transaction
    /// fails them all together. The default applies them one by one.
    fn apply_many(
        &self,
        batch: &mut [(&str, Transition<'_>)],
        number: Numbering<'_>,
    ) -> Vec<Result<Applied>> {
        batch
            .iter_mut()
            .map(|(id, transition)| self.apply(id, &mut **transition, &mut *number))
            .collect()
    }

    /// Applies `batch` (as [`Store::apply_many`]), then claims (as [`Store::claim`]), in
    /// one write where the store can: the runs that just ended free their slots for the
    /// claim without a second transaction. The default does one, then the other.
    fn apply_many_then_claim(
        &self,
        batch: &mut [(&str, Transition<'_>)],
        number: Numbering<'_>,
        request: &ClaimRequest<'_>,
    ) -> (Vec<Result<Applied>>, Result<ClaimBatch>) {
        let applied = self.apply_many(batch, number);
        (applied, self.claim(request))
    }

    /// Appends events that change no record (progress).
    fn append_events(&self, events: &[Event]) -> Result<()>;

    /// Leases up to `limit` claimable tasks, highest priority first, then earliest due
    /// time, then insertion order, as long as `reserve(run classification)` finds room for
    /// them ([`Task::run_classification`]: a composite's current step's). It skips tasks
    /// whose next run has dependencies that have not all succeeded
    /// ([`Task::run_dependencies`], evaluated with [`crate::deps`]), and tasks one of whose
    /// [`Task::run_locks`] is held by a run in flight (or by one claimed earlier in the same
    /// batch), without blocking the tasks behind them. The returned records are already `running` (see
    /// [`crate::state::claim`]). It also hands over blocked tasks whose dependency ended
    /// without succeeding.
    fn claim(&self, request: &ClaimRequest<'_>) -> Result<ClaimBatch>;

    /// The earliest due time of a scheduled or waiting task not yet due at the last claim.
    fn next_due(&self) -> Result<Option<Millis>>;

    /// The earliest lease expiry of a running task, if any.
    fn next_expiry(&self) -> Result<Option<Millis>>;

    /// Running tasks whose lease expired at or before `now`.
    fn expired(&self, now: Millis, limit: usize) -> Result<Vec<Task>>;

    /// Deletes ended tasks (and their events) older than `retention` allows; returns how
    /// many. The default keeps everything.
    fn purge(&self, _now: Millis, _retention: &Retention) -> Result<usize> {
        Ok(0)
    }

    /// When the next [`Store::purge`] has something to delete.
    fn next_purge(&self, _retention: &Retention) -> Result<Option<Millis>> {
        Ok(None)
    }

    /// Number of tasks that have not ended.
    fn active_count(&self) -> Result<usize>;

    /// The sequence number of the last event stored (0 when none): an engine opened on a
    /// durable store numbers its events after it.
    fn last_event_seq(&self) -> Result<u64> {
        Ok(0)
    }

    /// Whether other processes share this store (they may run classifications this
    /// engine does not know).
    fn is_shared(&self) -> bool {
        false
    }

    /// Calls `wake` (from any thread) whenever another process changed something this
    /// engine may act on: a task became runnable, a lock or a dependency was released, new
    /// events were stored. Shared stores only; the default never calls it.
    fn subscribe(&self, _wake: std::sync::Arc<dyn Fn() + Send + Sync>) -> Result<()> {
        Ok(())
    }

    /// The events other engines stored since the last call, in the order they were
    /// committed. Shared stores only; the default has none.
    fn remote_events(&self) -> Result<Vec<Event>> {
        Ok(Vec::new())
    }

    /// The engine shut down: release what it held open for its work (connections, the
    /// listener of [`Store::subscribe`]). Reads may follow and must still work (a store
    /// may open a connection again for them). The default holds nothing.
    fn close(&self) {}
}
