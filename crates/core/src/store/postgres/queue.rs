//! What queues a task, which locks it holds and what it waits for, each in one small
//! function, on the model's own rules ([`Task::run_classification`],
//! [`Task::run_locks`], [`Task::run_dependencies`], [`crate::deps`]): the rules of
//! `SqliteStore`'s queue, so that both stores claim alike.

use super::conn::Db;
use super::rows::{load, Lock};
use crate::deps::{self, DepRef, DepState};
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
    pub(super) run_class: &'a str,
    pub(super) priority: i32,
    pub(super) due_at: Millis,
    pub(super) lock_key: Option<&'a str>,
    pub(super) step_lock: Option<&'a str>,
    pub(super) lease_expiry: Option<Millis>,
    pub(super) ended_at: Option<Millis>,
    pub(super) version: i64,
}

/// Extracts the indexed columns of a task, all from its record: it is queued by the
/// classification of its next run (a composite's current step's), whose locks are the
/// task's and its current step's.
pub(super) fn columns(task: &Task) -> Columns<'_> {
    let mut locks = task.run_locks();
    Columns {
        status: task.status.as_str(),
        classification: &task.classification,
        run_class: task.run_classification(),
        priority: task.priority,
        due_at: task.due_at(),
        lock_key: locks.next(),
        step_lock: locks.next(),
        lease_expiry: task.lease_expiry,
        ended_at: task.status.is_terminal().then_some(task.updated_at),
        version: super::to_i64(task.version),
    }
}

/// The queue of a task (the memory store's slot): `blocked` while it waits for
/// dependencies, then by status (a composite between two steps is claimable again, at
/// once or after its step's backoff); none once ended.
pub(super) fn queue_of(task: &Task, blocked: bool) -> Option<Queue> {
    if blocked && may_block(task) {
        return Some(Queue::Blocked);
    }
    match task.status {
        TaskStatus::Pending => Some(Queue::Ready),
        TaskStatus::Scheduled | TaskStatus::WaitingRetry => Some(Queue::Timer),
        TaskStatus::Running if task.is_between_steps() => Some(match task.next_run_at {
            Some(_) => Queue::Timer,
            None => Queue::Ready,
        }),
        TaskStatus::Running => Some(Queue::Lease),
        _ => None,
    }
}

/// Whether a task in this state may wait for dependencies.
pub(super) fn may_block(task: &Task) -> bool {
    matches!(task.status, TaskStatus::Pending | TaskStatus::Scheduled) || task.is_between_steps()
}

/// The lock keys a task holds as it is ([`Task::held_locks`]).
pub(super) fn held_locks(task: &Task) -> Vec<&str> {
    task.held_locks()
}

/// Whether candidate `task_id` of a claim may take its locks: no other task holds one (a
/// composite holds its own lock between its steps), and no other claim is taking one
/// right now.
///
/// Each key is first reserved for this transaction with a transaction-level advisory lock
/// that is tried, never waited for (a key another claim is taking counts as held: that
/// claim wakes the others when it commits). Only then are the `task_lock` rows looked at,
/// in a statement of its own: its snapshot is taken after the advisory lock is held, so it
/// sees the row of a claim that held the key until a moment ago (a transaction is visible
/// before its locks are released). Checked in the statement that takes the advisory lock,
/// a snapshot taken before could miss that row, and two runs would hold the key.
pub(super) fn locks_are_free(
    db: &mut Db<'_, '_>,
    task_id: &str,
    locks: [Option<&str>; 2],
) -> Result<bool> {
    for key in locks.into_iter().flatten() {
        // A composite holding its own key between steps: nobody else can take it.
        let owner: Option<String> = db
            .row("SELECT task_id FROM task_lock WHERE lock_key = $1", &[&key])?
            .map(|row| db.get(&row, 0))
            .transpose()?;
        if owner.as_deref() == Some(task_id) {
            continue;
        }
        let reserved: bool = db.one(
            "SELECT pg_try_advisory_xact_lock(hashtext(current_schema()), hashtext($1))",
            &[&key],
        )?;
        if !reserved {
            return Ok(false);
        }
        let held: bool = db.one(
            "SELECT EXISTS (SELECT 1 FROM task_lock WHERE lock_key = $1 AND task_id <> $2)",
            &[&key, &task_id],
        )?;
        if held {
            return Ok(false);
        }
    }
    Ok(true)
}

/// What a task waits for before its next run (see [`Task::run_dependencies`]).
pub(super) fn waits_for(task: &Task) -> impl Iterator<Item = &str> {
    task.run_dependencies()
}

/// How a dependency stands, judged on the task it names. A task that is gone was purged
/// after it ended; how is not known any more, so it counts as failed.
///
/// A dependency still undecided is judged again with the task it names locked (`FOR
/// SHARE`): the transaction that decides it waits for this one to commit, and then sees
/// the dependency this one records.
pub(super) fn dependency_state(db: &mut Db<'_, '_>, dependency: &str) -> Result<DepState> {
    let parsed = DepRef::parse(dependency);
    let state = |target: Option<(i64, Task)>| match target {
        Some((_, target)) => deps::state_of(parsed, &target),
        None => DepState::Failed(TaskStatus::Failed),
    };
    match state(load(db, parsed.task_id, Lock::None)?) {
        DepState::Waiting => Ok(state(load(db, parsed.task_id, Lock::Share)?)),
        decided => Ok(decided),
    }
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
