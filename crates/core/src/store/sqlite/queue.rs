//! What queues a task, which locks it holds and what it waits for: the rules that
//! composite tasks are about to change, each in one small function.

use rusqlite::types::ToSql;
use rusqlite::Connection;

use super::{maybe, one};
use crate::error::{EngineError, Result};
use crate::model::{Millis, Task, TaskStatus};

/// Where a task waits: the `queue` column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Queue {
    /// Runnable now.
    Ready,
    /// Runnable from `due_at` on.
    Timer,
    /// Running under a lease until `lease_expiry`.
    Lease,
    /// Waiting for dependencies.
    Blocked,
}

impl Queue {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Queue::Ready => "ready",
            Queue::Timer => "timer",
            Queue::Lease => "lease",
            Queue::Blocked => "blocked",
        }
    }
}

/// The columns of a task's row that queries filter and sort on.
pub(super) struct Columns<'a> {
    pub(super) status: &'static str,
    pub(super) classification: &'a str,
    pub(super) priority: i32,
    pub(super) due_at: Millis,
    pub(super) lock_key: Option<&'a str>,
    pub(super) lease_expiry: Option<Millis>,
    pub(super) ended_at: Option<Millis>,
    pub(super) version: i64,
}

impl Columns<'_> {
    /// The columns with their names.
    pub(super) fn named(&self) -> [(&'static str, &dyn ToSql); 8] {
        [
            ("status", &self.status),
            ("classification", &self.classification),
            ("priority", &self.priority),
            ("due_at", &self.due_at),
            ("lock_key", &self.lock_key),
            ("lease_expiry", &self.lease_expiry),
            ("ended_at", &self.ended_at),
            ("version", &self.version),
        ]
    }
}

/// Extracts the indexed columns of a task, all from its record.
///
/// About to change with composite tasks: a task is queued by its current step's
/// classification, and takes the task's lock and its current step's lock.
pub(super) fn columns(task: &Task) -> Columns<'_> {
    Columns {
        status: task.status.as_str(),
        classification: &task.classification,
        priority: task.priority,
        due_at: task.due_at(),
        lock_key: task.lock.as_deref(),
        lease_expiry: task.lease_expiry,
        ended_at: task.status.is_terminal().then_some(task.updated_at),
        version: super::to_i64(task.version),
    }
}

/// The queue of a task (the memory store's slot): `blocked` while it waits for
/// dependencies, then by status; none once ended.
///
/// About to change with composite tasks: a composite between two steps is `running`
/// without a lease, and claimable again.
pub(super) fn queue_of(task: &Task, blocked: bool) -> Option<Queue> {
    match task.status {
        TaskStatus::Pending | TaskStatus::Scheduled if blocked => Some(Queue::Blocked),
        TaskStatus::Pending => Some(Queue::Ready),
        TaskStatus::Scheduled | TaskStatus::WaitingRetry => Some(Queue::Timer),
        TaskStatus::Running => Some(Queue::Lease),
        _ => None,
    }
}

/// The lock keys a task holds as it is: its lock while it runs.
///
/// About to change with composite tasks: a run holds the task's lock and its current
/// step's lock.
pub(super) fn held_locks(task: &Task) -> Vec<&str> {
    match (task.status, task.lock.as_deref()) {
        (TaskStatus::Running, Some(lock)) => vec![lock],
        _ => Vec::new(),
    }
}

/// Whether a candidate of a claim may take its lock: no running task holds it. Tasks
/// taken earlier in the same claim count, since each is written before the next candidate
/// is checked.
///
/// About to change with composite tasks: a candidate takes the task's lock and its current
/// step's lock (the `lock_key` column then has to list both).
pub(super) fn lock_is_free(tx: &Connection, lock_key: Option<&str>) -> Result<bool> {
    let Some(key) = lock_key else {
        return Ok(true);
    };
    let held: bool = one(
        tx,
        "SELECT EXISTS (SELECT 1 FROM task_lock WHERE lock_key = ?1)",
        [key],
    )?;
    Ok(!held)
}

/// What a task waits for before it may run: the ids of its dependencies.
///
/// About to change with composite tasks: a composite that started waits for its current
/// step's dependencies (`"<taskId>:<step>"`, resolved by [`dependency_status`]).
pub(super) fn waits_for(task: &Task) -> impl Iterator<Item = &str> {
    task.dependencies.iter().map(String::as_str)
}

/// How a dependency stands; `None` when no such task is stored.
///
/// About to change with composite tasks: a step dependency (`"<taskId>:<step>"`) stands as
/// that step does.
pub(super) fn dependency_status(tx: &Connection, dependency: &str) -> Result<Option<TaskStatus>> {
    let status: Option<String> = maybe(tx, "SELECT status FROM task WHERE id = ?1", [dependency])?;
    status.as_deref().map(status_of).transpose()
}

/// A status as the `status` column spells it.
pub(super) fn status_of(text: &str) -> Result<TaskStatus> {
    Ok(match text {
        "pending" => TaskStatus::Pending,
        "scheduled" => TaskStatus::Scheduled,
        "running" => TaskStatus::Running,
        "waiting_retry" => TaskStatus::WaitingRetry,
        "succeeded" => TaskStatus::Succeeded,
        "failed" => TaskStatus::Failed,
        "canceled" => TaskStatus::Canceled,
        other => {
            return Err(EngineError::Store(format!(
                "unknown task status '{other}' in the database"
            )))
        }
    })
}
