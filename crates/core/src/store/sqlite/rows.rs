//! Reading and writing task rows, keeping their queue, the held locks and the
//! dependencies right.

use rusqlite::types::ToSql;
use rusqlite::{params, Transaction};

use super::queue::{columns, dependency_status, held_locks, queue_of, waits_for, Queue};
use super::{all, exec, maybe, one};
use crate::error::{EngineError, Result};
use crate::event::Event;
use crate::model::{Task, TaskStatus};

pub(super) fn decode_task(text: &str) -> Result<Task> {
    serde_json::from_str(text)
        .map_err(|e| EngineError::Store(format!("a stored task record does not parse: {e}")))
}

pub(super) fn decode_event(text: &str) -> Result<Event> {
    serde_json::from_str(text)
        .map_err(|e| EngineError::Store(format!("a stored event does not parse: {e}")))
}

fn encode(value: &impl serde::Serialize) -> Result<String> {
    serde_json::to_string(value).map_err(|e| EngineError::Internal(format!("encoding: {e}")))
}

pub(super) fn exists(tx: &Transaction<'_>, id: &str) -> Result<bool> {
    one(tx, "SELECT EXISTS (SELECT 1 FROM task WHERE id = ?1)", [id])
}

/// A task and its row's `seq`.
pub(super) fn load(tx: &Transaction<'_>, id: &str) -> Result<Option<(i64, Task)>> {
    let seq: Option<i64> = maybe(tx, "SELECT seq FROM task WHERE id = ?1", [id])?;
    seq.map(|seq| Ok((seq, load_seq(tx, seq)?))).transpose()
}

pub(super) fn load_seq(tx: &Transaction<'_>, seq: i64) -> Result<Task> {
    let record: String = one(tx, "SELECT record FROM task WHERE seq = ?1", [seq])?;
    decode_task(&record)
}

/// Stores a new task (its dependencies must have been checked) and its events.
pub(super) fn insert(tx: &Transaction<'_>, task: &Task, events: &[Event]) -> Result<()> {
    if !task.status.is_terminal() {
        link_dependencies(tx, task)?;
    }
    put(tx, None, task)?;
    take_locks(tx, task)?;
    append(tx, events)
}

/// Replaces the stored `old` (row `seq`) by `task` and appends `events`.
pub(super) fn replace(
    tx: &Transaction<'_>,
    seq: i64,
    old: &Task,
    task: &Task,
    events: &[Event],
) -> Result<()> {
    let ends = task.status.is_terminal() && !old.status.is_terminal();
    if ends {
        exec(
            tx,
            "DELETE FROM task_dependency WHERE task_id = ?1",
            [&*task.id],
        )?;
    } else if !task.status.is_terminal() && !waits_for(old).eq(waits_for(task)) {
        link_dependencies(tx, task)?;
    }
    put(tx, Some(seq), task)?;
    if held_locks(old) != held_locks(task) {
        exec(tx, "DELETE FROM task_lock WHERE task_id = ?1", [&*task.id])?;
        take_locks(tx, task)?;
    }
    if ends {
        settle_dependents(tx, &task.id, task.status)?;
    }
    append(tx, events)
}

/// Appends events of stored tasks.
pub(super) fn append(tx: &Transaction<'_>, events: &[Event]) -> Result<()> {
    for event in events {
        exec(
            tx,
            "INSERT INTO task_event (task_id, event) VALUES (?1, ?2)",
            [&*event.task_id, &encode(event)?],
        )?;
    }
    Ok(())
}

/// Writes the row of `task`, a new one or over row `seq`; returns its `seq`.
fn put(tx: &Transaction<'_>, seq: Option<i64>, task: &Task) -> Result<i64> {
    let c = columns(task);
    let record = encode(task)?;
    let queue = queue_of(task, is_blocked(tx, task)?).map(Queue::as_str);
    let values = params![
        &*task.id,
        record,
        c.status,
        c.classification,
        c.priority,
        c.due_at,
        c.lock_key,
        c.lease_expiry,
        c.ended_at,
        c.version,
        queue,
    ];
    let Some(seq) = seq else {
        exec(
            tx,
            "INSERT INTO task (id, record, status, classification, priority, due_at, lock_key,
                               lease_expiry, ended_at, version, queue)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            values,
        )?;
        return Ok(tx.last_insert_rowid());
    };
    let mut values: Vec<&dyn ToSql> = values.to_vec();
    values.push(&seq);
    exec(
        tx,
        "UPDATE task SET id = ?1, record = ?2, status = ?3, classification = ?4, priority = ?5,
                         due_at = ?6, lock_key = ?7, lease_expiry = ?8, ended_at = ?9,
                         version = ?10, queue = ?11
         WHERE seq = ?12",
        &*values,
    )?;
    Ok(seq)
}

fn take_locks(tx: &Transaction<'_>, task: &Task) -> Result<()> {
    for key in held_locks(task) {
        exec(
            tx,
            "INSERT OR REPLACE INTO task_lock (lock_key, task_id) VALUES (?1, ?2)",
            [key, &*task.id],
        )?;
    }
    Ok(())
}

/// Whether `task` waits for a dependency (only a pending or scheduled one can).
fn is_blocked(tx: &Transaction<'_>, task: &Task) -> Result<bool> {
    if !matches!(task.status, TaskStatus::Pending | TaskStatus::Scheduled) {
        return Ok(false);
    }
    one(
        tx,
        "SELECT EXISTS (SELECT 1 FROM task_dependency WHERE task_id = ?1)",
        [&*task.id],
    )
}

/// Records what `task` waits for, replacing what it waited for before: nothing for a
/// dependency that succeeded; one that ended otherwise is marked failed, for the claims to
/// hand over.
fn link_dependencies(tx: &Transaction<'_>, task: &Task) -> Result<()> {
    exec(
        tx,
        "DELETE FROM task_dependency WHERE task_id = ?1",
        [&*task.id],
    )?;
    for dependency in waits_for(task) {
        let (failed, failed_seq) = match dependency_status(tx, dependency)? {
            Some(TaskStatus::Succeeded) => continue,
            Some(status) if status.is_terminal() => {
                (Some(status.as_str()), Some(next_failure(tx)?))
            }
            _ => (None, None),
        };
        exec(
            tx,
            "INSERT OR REPLACE INTO task_dependency (task_id, depends_on, failed, failed_seq)
             VALUES (?1, ?2, ?3, ?4)",
            params![&*task.id, dependency, failed, failed_seq],
        )?;
    }
    Ok(())
}

/// The number of the next dependency failure (claims hand them over in this order).
fn next_failure(tx: &Transaction<'_>) -> Result<i64> {
    one(
        tx,
        "SELECT IFNULL(MAX(failed_seq), 0) + 1 FROM task_dependency WHERE failed_seq IS NOT NULL",
        [],
    )
}

/// `dependency` ended with `status`: the tasks waiting for it wait for one fewer (and
/// are queued when it was their last), or are marked to be failed.
fn settle_dependents(tx: &Transaction<'_>, dependency: &str, status: TaskStatus) -> Result<()> {
    if status != TaskStatus::Succeeded {
        exec(
            tx,
            "UPDATE task_dependency SET failed = ?2, failed_seq = ?3 WHERE depends_on = ?1",
            params![dependency, status.as_str(), next_failure(tx)?],
        )?;
        return Ok(());
    }
    let waiting: Vec<String> = all(
        tx,
        "DELETE FROM task_dependency WHERE depends_on = ?1 RETURNING task_id",
        [dependency],
        |r| r.get(0),
    )?;
    for id in waiting {
        let Some((seq, task)) = load(tx, &id)? else {
            continue;
        };
        if !is_blocked(tx, &task)? {
            let queue = queue_of(&task, false).map(Queue::as_str);
            exec(
                tx,
                "UPDATE task SET queue = ?2 WHERE seq = ?1",
                params![seq, queue],
            )?;
        }
    }
    Ok(())
}
