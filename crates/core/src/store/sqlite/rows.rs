//! Reading and writing task rows, keeping their queue, the held locks and the
//! dependencies right.

use rusqlite::types::ToSql;
use rusqlite::{params, Connection};

use super::queue::{columns, dependency_state, held_locks, may_block, queue_of, waits_for, Queue};
use super::{all, exec, one, Sql};
use crate::deps::{self, DepRef, DepState};
use crate::error::{EngineError, Result};
use crate::event::Event;
use crate::model::Task;

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

pub(super) fn exists(tx: &Connection, id: &str) -> Result<bool> {
    one(tx, "SELECT EXISTS (SELECT 1 FROM task WHERE id = ?1)", [id])
}

/// A task and its row's `seq`.
pub(super) fn load(tx: &Connection, id: &str) -> Result<Option<(i64, Task)>> {
    let row: Option<(i64, String)> = all(
        tx,
        "SELECT seq, record FROM task WHERE id = ?1",
        [id],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?
    .pop();
    row.map(|(seq, record)| Ok((seq, decode_task(&record)?)))
        .transpose()
}

pub(super) fn load_seq(tx: &Connection, seq: i64) -> Result<Task> {
    let record: String = one(tx, "SELECT record FROM task WHERE seq = ?1", [seq])?;
    decode_task(&record)
}

/// Stores a new task (its dependencies must have been checked) and its events.
pub(super) fn insert(tx: &Connection, task: &Task, events: &[Event]) -> Result<()> {
    if !task.status.is_terminal() {
        link_dependencies(tx, task)?;
    }
    put_new(tx, task)?;
    take_locks(tx, task)?;
    append(tx, events)
}

/// Replaces the stored `old` (row `seq`) by `task` and appends `events`.
pub(super) fn replace(
    tx: &Connection,
    seq: i64,
    old: &Task,
    task: &Task,
    events: &[Event],
) -> Result<()> {
    let ends = task.status.is_terminal() && !old.status.is_terminal();
    let moved_on = task.current_step != old.current_step;
    if ends {
        exec(
            tx,
            "DELETE FROM task_dependency WHERE task_id = ?1",
            [&*task.id],
        )?;
    } else if !task.status.is_terminal() && !waits_for(old).eq(waits_for(task)) {
        link_dependencies(tx, task)?;
    }
    put_over(tx, seq, old, task)?;
    if held_locks(old) != held_locks(task) {
        exec(tx, "DELETE FROM task_lock WHERE task_id = ?1", [&*task.id])?;
        take_locks(tx, task)?;
    }
    if ends || moved_on {
        progress_dependents(tx, task)?;
    }
    append(tx, events)
}

/// Appends events of stored tasks.
pub(super) fn append(tx: &Connection, events: &[Event]) -> Result<()> {
    for event in events {
        exec(
            tx,
            "INSERT INTO task_event (task_id, event) VALUES (?1, ?2)",
            [&*event.task_id, &encode(event)?],
        )?;
    }
    Ok(())
}

/// Writes the row of a new task.
fn put_new(tx: &Connection, task: &Task) -> Result<()> {
    let record = encode(task)?;
    let queue = queue_of(task, is_blocked(tx, task)?).map(Queue::as_str);
    let columns = columns(task);
    let mut values: Vec<&dyn ToSql> = vec![&task.id, &record, &queue];
    values.extend(columns.named().map(|(_, value)| value));
    exec(
        tx,
        "INSERT INTO task (id, record, queue, status, classification, run_class, priority,
                           due_at, lock_key, step_lock, lease_expiry, ended_at, version)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
        &*values,
    )?;
    Ok(())
}

/// Writes `task` over its row `seq`, which holds `old`. Only the columns that change are
/// set: SQLite rewrites the indexes of every column set, changed or not.
fn put_over(tx: &Connection, seq: i64, old: &Task, task: &Task) -> Result<()> {
    let record = encode(task)?;
    let queue = queue_of(task, is_blocked(tx, task)?).map(Queue::as_str);
    let (before, after) = (columns(old), columns(task));
    let mut sql = String::from("UPDATE task SET record = ?, queue = ?");
    let mut values: Vec<&dyn ToSql> = vec![&record, &queue];
    for ((name, new), (_, was)) in after.named().into_iter().zip(before.named()) {
        if new.to_sql().sql()? != was.to_sql().sql()? {
            sql.push_str(", ");
            sql.push_str(name);
            sql.push_str(" = ?");
            values.push(new);
        }
    }
    sql.push_str(" WHERE seq = ?");
    values.push(&seq);
    exec(tx, &sql, &*values)?;
    Ok(())
}

fn take_locks(tx: &Connection, task: &Task) -> Result<()> {
    for key in held_locks(task) {
        exec(
            tx,
            "INSERT OR REPLACE INTO task_lock (lock_key, task_id) VALUES (?1, ?2)",
            [key, &*task.id],
        )?;
    }
    Ok(())
}

/// Whether `task` waits for a dependency (only a pending or scheduled task, or a composite
/// between two steps, can).
fn is_blocked(tx: &Connection, task: &Task) -> Result<bool> {
    if !may_block(task) {
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
fn link_dependencies(tx: &Connection, task: &Task) -> Result<()> {
    exec(
        tx,
        "DELETE FROM task_dependency WHERE task_id = ?1",
        [&*task.id],
    )?;
    for dependency in waits_for(task) {
        let (failed, failed_seq) = match dependency_state(tx, dependency)? {
            DepState::Met => continue,
            DepState::Failed(status) => (Some(status.as_str()), Some(next_failure(tx)?)),
            DepState::Waiting => (None, None),
        };
        exec(
            tx,
            "INSERT OR REPLACE INTO task_dependency
                 (task_id, depends_on, target, failed, failed_seq)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![
                &*task.id,
                dependency,
                DepRef::parse(dependency).task_id,
                failed,
                failed_seq
            ],
        )?;
    }
    Ok(())
}

/// The number of the next dependency failure (claims hand them over in this order).
fn next_failure(tx: &Connection) -> Result<i64> {
    one(
        tx,
        "SELECT IFNULL(MAX(failed_seq), 0) + 1 FROM task_dependency WHERE failed_seq IS NOT NULL",
        [],
    )
}

/// `target` ended or moved to its next step: what its dependents wait for from it is
/// judged again. Met dependencies are dropped (a task with none left is queued); those
/// that can no longer succeed are marked for the claims to hand over.
fn progress_dependents(tx: &Connection, target: &Task) -> Result<()> {
    let rows: Vec<(String, String, bool)> = all(
        tx,
        // Dependents in insertion order, as the memory store judges them (so that the
        // failures are numbered, and handed over, in the same order).
        "SELECT d.task_id, d.depends_on, d.failed IS NOT NULL
         FROM task_dependency d JOIN task t ON t.id = d.task_id
         WHERE d.target = ?1 ORDER BY t.seq, d.depends_on",
        [&*target.id],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )?;
    let mut waiting = Vec::new();
    for (task_id, dependency, already_failed) in rows {
        match deps::state_of(DepRef::parse(&dependency), target) {
            DepState::Waiting => {}
            DepState::Failed(_) if already_failed => {}
            DepState::Failed(status) => {
                exec(
                    tx,
                    "UPDATE task_dependency SET failed = ?3, failed_seq = ?4
                     WHERE task_id = ?1 AND depends_on = ?2",
                    params![task_id, dependency, status.as_str(), next_failure(tx)?],
                )?;
            }
            DepState::Met => {
                exec(
                    tx,
                    "DELETE FROM task_dependency WHERE task_id = ?1 AND depends_on = ?2",
                    params![task_id, dependency],
                )?;
                waiting.push(task_id);
            }
        }
    }
    waiting.dedup();
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
