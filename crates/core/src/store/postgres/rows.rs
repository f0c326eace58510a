//! Reading and writing task rows, keeping their queue, the held locks and the
//! dependencies right. Events a transaction stores are gathered in [`Written`] and
//! written, with the notification to the other processes, just before it commits.

use std::collections::{HashMap, HashSet};

use super::conn::{Db, Param};
use super::queue::{columns, dependency_state, held_locks, may_block, queue_of, waits_for, Queue};
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

/// How a read row is locked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Lock {
    /// Not at all (what was committed when the statement began).
    None,
    /// `FOR SHARE`: nobody changes it until this transaction ends.
    Share,
    /// `FOR UPDATE`: this transaction is about to change it.
    Update,
}

pub(super) fn exists(db: &mut Db<'_, '_>, id: &str) -> Result<bool> {
    db.one("SELECT EXISTS (SELECT 1 FROM task WHERE id = $1)", &[&id])
}

/// A task and its row's `seq`.
pub(super) fn load(db: &mut Db<'_, '_>, id: &str, lock: Lock) -> Result<Option<(i64, Task)>> {
    let sql = match lock {
        Lock::None => "SELECT seq, record FROM task WHERE id = $1",
        Lock::Share => "SELECT seq, record FROM task WHERE id = $1 FOR SHARE",
        Lock::Update => "SELECT seq, record FROM task WHERE id = $1 FOR UPDATE",
    };
    let Some(row) = db.row(sql, &[&id])? else {
        return Ok(None);
    };
    let seq: i64 = db.get(&row, 0)?;
    let record: String = db.get(&row, 1)?;
    Ok(Some((seq, decode_task(&record)?)))
}

/// What a write transaction did that the other processes should hear of: the events it
/// stores (written in one statement at the end), and whether it changed something they
/// may act on (a task became runnable or ended, a lock was released, a dependency
/// failed). A lease renewal is not such a change.
#[derive(Debug, Default)]
pub(super) struct Written {
    pub(super) events: Vec<Event>,
    pub(super) wakes: bool,
    /// Tasks it inserted.
    pub(super) inserted: usize,
}

impl Written {
    /// Stores the gathered events (stamped with `origin`) and notifies `channel`, in the
    /// transaction about to commit: `"<origin>:<first id>:<last id>"` when events were
    /// stored, `"<origin>::"` when only something else changed.
    pub(super) fn flush(&self, db: &mut Db<'_, '_>, channel: &str, origin: &str) -> Result<()> {
        if self.events.is_empty() {
            if self.wakes {
                let payload = format!("{origin}::");
                db.exec("SELECT pg_notify($1, $2)", &[&channel, &payload])?;
            }
            return Ok(());
        }
        let mut ids = Vec::with_capacity(self.events.len());
        let mut seqs = Vec::with_capacity(self.events.len());
        let mut texts = Vec::with_capacity(self.events.len());
        for event in &self.events {
            ids.push(&*event.task_id);
            seqs.push(super::to_i64(event.seq));
            texts.push(encode(event)?);
        }
        let params: [Param<'_>; 5] = [&ids, &seqs, &texts, &origin, &channel];
        db.exec(
            "WITH stored AS (
                 INSERT INTO task_event (task_id, seq, origin, event)
                 SELECT t, s, $4, e FROM unnest($1::text[], $2::int8[], $3::text[]) AS u(t, s, e)
                 RETURNING id
             )
             SELECT pg_notify($5, $4 || ':' || min(id) || ':' || max(id)) FROM stored",
            &params,
        )?;
        Ok(())
    }
}

/// Stores new tasks (their ids free and their dependencies checked), in one statement,
/// and their events.
pub(super) fn insert(
    db: &mut Db<'_, '_>,
    written: &mut Written,
    tasks: &[Task],
    events: &[Event],
) -> Result<()> {
    let mut rows = NewRows::default();
    for task in tasks {
        let waits = !task.status.is_terminal() && record_dependencies(db, task, written, true)?;
        rows.push(task, queue_of(task, waits))?;
    }
    let inserted = db.rows(
        "INSERT INTO task (id, record, queue, status, classification, run_class, priority,
                           due_at, lock_key, step_lock, lease_expiry, ended_at, version)
         SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],
                              $6::text[], $7::int4[], $8::int8[], $9::text[], $10::text[],
                              $11::int8[], $12::int8[], $13::int8[])
         ON CONFLICT (id) DO NOTHING RETURNING id",
        &[
            &rows.id,
            &rows.record,
            &rows.queue,
            &rows.status,
            &rows.classification,
            &rows.run_class,
            &rows.priority,
            &rows.due_at,
            &rows.lock_key,
            &rows.step_lock,
            &rows.lease_expiry,
            &rows.ended_at,
            &rows.version,
        ],
    )?;
    if inserted.len() != tasks.len() {
        // An id is taken (the transaction rolls back: nothing of the batch is stored).
        let mut stored = HashSet::with_capacity(inserted.len());
        for row in &inserted {
            stored.insert(db.get::<String>(row, 0)?);
        }
        let taken = tasks.iter().find(|t| !stored.contains(&*t.id));
        return Err(EngineError::Invalid(match taken {
            Some(task) => format!("task id {} already exists", task.id),
            None => "a task id of this insert already exists".into(),
        }));
    }
    take_locks(db, &tasks.iter().collect::<Vec<_>>())?;
    written.wakes = true;
    written.inserted += tasks.len();
    written.events.extend_from_slice(events);
    Ok(())
}

/// The columns of new rows, one array each (for `unnest`).
#[derive(Default)]
struct NewRows<'a> {
    id: Vec<&'a str>,
    record: Vec<String>,
    queue: Vec<Option<&'static str>>,
    status: Vec<&'static str>,
    classification: Vec<&'a str>,
    run_class: Vec<&'a str>,
    priority: Vec<i32>,
    due_at: Vec<i64>,
    lock_key: Vec<Option<&'a str>>,
    step_lock: Vec<Option<&'a str>>,
    lease_expiry: Vec<Option<i64>>,
    ended_at: Vec<Option<i64>>,
    version: Vec<i64>,
}

impl<'a> NewRows<'a> {
    fn push(&mut self, task: &'a Task, queue: Option<Queue>) -> Result<()> {
        let c = columns(task);
        self.id.push(&task.id);
        self.record.push(encode(task)?);
        self.queue.push(queue.map(Queue::as_str));
        self.status.push(c.status);
        self.classification.push(c.classification);
        self.run_class.push(c.run_class);
        self.priority.push(c.priority);
        self.due_at.push(c.due_at);
        self.lock_key.push(c.lock_key);
        self.step_lock.push(c.step_lock);
        self.lease_expiry.push(c.lease_expiry);
        self.ended_at.push(c.ended_at);
        self.version.push(c.version);
        Ok(())
    }
}

/// Replaces the stored `old` (row `seq`, locked by this transaction) by `task` and
/// appends `events`.
pub(super) fn replace(
    db: &mut Db<'_, '_>,
    written: &mut Written,
    seq: i64,
    old: &Task,
    task: &Task,
    events: &[Event],
) -> Result<()> {
    replace_many(db, written, &[Replacement { seq, old, task }])?;
    written.events.extend_from_slice(events);
    Ok(())
}

/// One row a write replaces: the stored `old` (row `seq`, locked by this transaction)
/// becomes `task`.
pub(super) struct Replacement<'a> {
    pub(super) seq: i64,
    pub(super) old: &'a Task,
    pub(super) task: &'a Task,
}

/// Replaces several rows (each once) in a few statements whatever their number: the
/// rows are written, the ending tasks stop waiting, the locks of runs that ended are
/// released and those of new runs taken, and the dependents of the tasks that ended or
/// moved on are judged again. The caller stores the events. Returns whether a lock key
/// was released.
pub(super) fn replace_many(
    db: &mut Db<'_, '_>,
    written: &mut Written,
    rows: &[Replacement<'_>],
) -> Result<bool> {
    if rows.is_empty() {
        return Ok(false);
    }
    // What a task waits for changes when a composite moves to a step with `dependsOn`.
    for r in rows {
        if !r.task.status.is_terminal() && !waits_for(r.old).eq(waits_for(r.task)) {
            record_dependencies(db, r.task, written, false)?;
        }
    }
    let blocked = blocked_among(db, rows.iter().map(|r| r.task))?;
    let mut columns_of = NewRows::default();
    let mut seqs = Vec::with_capacity(rows.len());
    let (mut ended, mut released, mut progressed) = (Vec::new(), Vec::new(), Vec::new());
    let mut taking = Vec::new();
    for r in rows {
        let (old, task) = (r.old, r.task);
        let ends = task.status.is_terminal() && !old.status.is_terminal();
        let moved_on = task.current_step != old.current_step;
        let (held, holds) = (held_locks(old), held_locks(task));
        if held != holds {
            if !held.is_empty() {
                released.push(&*task.id);
            }
            taking.push(task);
        }
        if ends {
            ended.push(&*task.id);
        }
        if ends || moved_on {
            progressed.push(&*task.id);
        }
        seqs.push(r.seq);
        columns_of.push(task, queue_of(task, blocked.contains(&*task.id)))?;
        written.wakes |= ends
            || moved_on
            || held != holds
            || old.status != task.status
            || old.is_leased() != task.is_leased()
            || old.due_at() != task.due_at()
            || old.priority != task.priority;
    }
    let c = &columns_of;
    // One statement: ending tasks stop waiting, ended runs' locks are released, the rows
    // are written, and the dependents to judge again are read.
    let dependents = db.rows(
        "WITH waited AS (DELETE FROM task_dependency WHERE task_id = ANY($14)),
              released AS (DELETE FROM task_lock WHERE task_id = ANY($15)),
              written AS (
                  UPDATE task SET record = u.record, queue = u.queue, status = u.status,
                                  classification = u.classification, run_class = u.run_class,
                                  priority = u.priority, due_at = u.due_at,
                                  lock_key = u.lock_key, step_lock = u.step_lock,
                                  lease_expiry = u.lease_expiry, ended_at = u.ended_at,
                                  version = u.version
                  FROM unnest($1::int8[], $2::text[], $3::text[], $4::text[], $5::text[],
                              $6::text[], $7::int4[], $8::int8[], $9::text[], $10::text[],
                              $11::int8[], $12::int8[], $13::int8[])
                       AS u(seq, record, queue, status, classification, run_class, priority,
                            due_at, lock_key, step_lock, lease_expiry, ended_at, version)
                  WHERE task.seq = u.seq)
         SELECT target, task_id, depends_on FROM task_dependency
         WHERE target = ANY($16) ORDER BY target, task_id, depends_on",
        &[
            &seqs,
            &c.record,
            &c.queue,
            &c.status,
            &c.classification,
            &c.run_class,
            &c.priority,
            &c.due_at,
            &c.lock_key,
            &c.step_lock,
            &c.lease_expiry,
            &c.ended_at,
            &c.version,
            &ended,
            &released,
            &progressed,
        ],
    )?;
    take_locks(db, &taking)?;
    let released = !released.is_empty();
    if dependents.is_empty() {
        return Ok(released);
    }
    let mut by_target: Vec<(String, Vec<(String, String)>)> = Vec::new();
    for row in &dependents {
        let target: String = db.get(row, 0)?;
        let pair = (db.get(row, 1)?, db.get(row, 2)?);
        match by_target.last_mut() {
            Some((t, pairs)) if *t == target => pairs.push(pair),
            _ => by_target.push((target, vec![pair])),
        }
    }
    // Every dependent locked at once, in id order as every transaction locks rows: locked
    // target by target, two batches could lock two dependents in opposite orders.
    let mut ids: Vec<&str> = by_target
        .iter()
        .flat_map(|(_, pairs)| pairs.iter().map(|(id, _)| id.as_str()))
        .collect();
    ids.sort_unstable();
    ids.dedup();
    let mut locked = HashMap::with_capacity(ids.len());
    for row in db.rows(
        "SELECT seq, record FROM task WHERE id = ANY($1) ORDER BY id FOR UPDATE",
        &[&ids],
    )? {
        let seq: i64 = db.get(&row, 0)?;
        let task = decode_task(&db.get::<String>(&row, 1)?)?;
        locked.insert(task.id.to_string(), (seq, task));
    }
    for r in rows {
        if let Some((_, pairs)) = by_target.iter().find(|(t, _)| *t == *r.task.id) {
            progress_dependents(db, r.task, pairs, &locked, written)?;
        }
    }
    Ok(released)
}

/// Takes the locks of runs in flight (a claim checked they were free), in one statement.
fn take_locks(db: &mut Db<'_, '_>, tasks: &[&Task]) -> Result<()> {
    let mut keys: Vec<&str> = Vec::new();
    let mut owners: Vec<&str> = Vec::new();
    for task in tasks {
        for key in held_locks(task) {
            if let Some(i) = keys.iter().position(|k| *k == key) {
                owners[i] = &task.id;
            } else {
                keys.push(key);
                owners.push(&task.id);
            }
        }
    }
    if keys.is_empty() {
        return Ok(());
    }
    db.exec(
        "INSERT INTO task_lock (lock_key, task_id)
         SELECT * FROM unnest($1::text[], $2::text[])
         ON CONFLICT (lock_key) DO UPDATE SET task_id = EXCLUDED.task_id",
        &[&keys, &owners],
    )?;
    Ok(())
}

/// The ids among `tasks` that wait for a dependency (see [`is_blocked`]), in one query.
fn blocked_among<'t>(
    db: &mut Db<'_, '_>,
    tasks: impl Iterator<Item = &'t Task>,
) -> Result<HashSet<String>> {
    let ids: Vec<&str> = tasks.filter(|t| may_block(t)).map(|t| &*t.id).collect();
    if ids.is_empty() {
        return Ok(HashSet::new());
    }
    let rows = db.rows(
        "SELECT DISTINCT task_id FROM task_dependency WHERE task_id = ANY($1)",
        &[&ids],
    )?;
    rows.iter().map(|row| db.get(row, 0)).collect()
}

/// Whether `task` waits for a dependency (only a pending or scheduled task, or a composite
/// between two steps, can).
fn is_blocked(db: &mut Db<'_, '_>, task: &Task) -> Result<bool> {
    if !may_block(task) {
        return Ok(false);
    }
    db.one(
        "SELECT EXISTS (SELECT 1 FROM task_dependency WHERE task_id = $1)",
        &[&&*task.id],
    )
}

/// Records what `task` waits for, replacing what it waited for before (unless it is
/// `new`): nothing for a dependency that succeeded; one that ended otherwise is marked
/// failed, for the claims to hand over (and the other processes are woken to do so).
/// Whether it waits for anything.
fn record_dependencies(
    db: &mut Db<'_, '_>,
    task: &Task,
    written: &mut Written,
    new: bool,
) -> Result<bool> {
    if !new {
        db.exec(
            "DELETE FROM task_dependency WHERE task_id = $1",
            &[&&*task.id],
        )?;
    }
    let mut waits = false;
    for dependency in waits_for(task) {
        let failed = match dependency_state(db, dependency)? {
            DepState::Met => continue,
            DepState::Failed(status) => Some(status.as_str()),
            DepState::Waiting => None,
        };
        db.exec(
            "INSERT INTO task_dependency (task_id, depends_on, target, failed, failed_seq)
             VALUES ($1, $2, $3, $4,
                     CASE WHEN $4::text IS NULL THEN NULL ELSE nextval('task_failure_seq') END)
             ON CONFLICT (task_id, depends_on) DO UPDATE
                 SET target = EXCLUDED.target, failed = EXCLUDED.failed,
                     failed_seq = EXCLUDED.failed_seq",
            &[
                &&*task.id,
                &dependency,
                &DepRef::parse(dependency).task_id,
                &failed,
            ],
        )?;
        written.wakes |= failed.is_some();
        waits = true;
    }
    Ok(waits)
}

/// `target` ended or moved to its next step: what its dependents wait for from it is
/// judged again. Met dependencies are dropped (a task with none left is queued); those
/// that can no longer succeed are marked for the claims to hand over.
///
/// `pairs`: `(task_id, depends_on)` of the dependencies on `target`, by task id; `locked`:
/// the dependents' rows, locked by the caller (`seq` and record by id) before their
/// dependencies are touched, as every transaction that changes a task locks its row first.
fn progress_dependents(
    db: &mut Db<'_, '_>,
    target: &Task,
    pairs: &[(String, String)],
    locked: &HashMap<String, (i64, Task)>,
    written: &mut Written,
) -> Result<()> {
    let mut waiting: Vec<(&str, Vec<&str>)> = Vec::new();
    for (task_id, dependency) in pairs {
        match waiting.last_mut() {
            Some((id, deps)) if *id == task_id => deps.push(dependency),
            _ => waiting.push((task_id, vec![dependency])),
        }
    }
    // Failures are numbered in the dependents' insertion order, as the memory store judges
    // them (the rows are locked in id order, as everywhere).
    let mut failures: Vec<(i64, &str, &str, &'static str)> = Vec::new();
    for (task_id, dependencies) in waiting {
        let Some(&(seq, ref task)) = locked.get(task_id) else {
            continue;
        };
        let mut met = false;
        for dependency in dependencies {
            match deps::state_of(DepRef::parse(dependency), target) {
                DepState::Waiting => {}
                DepState::Failed(status) => {
                    failures.push((seq, task_id, dependency, status.as_str()))
                }
                DepState::Met => {
                    met |= db.exec(
                        "DELETE FROM task_dependency WHERE task_id = $1 AND depends_on = $2",
                        &[&task_id, &dependency],
                    )? > 0;
                }
            }
        }
        if met && !is_blocked(db, task)? {
            let queue = queue_of(task, false).map(Queue::as_str);
            db.exec("UPDATE task SET queue = $2 WHERE seq = $1", &[&seq, &queue])?;
            written.wakes = true;
        }
    }
    failures.sort_by_key(|(seq, ..)| *seq);
    for (_, task_id, dependency, status) in failures {
        db.exec(
            "UPDATE task_dependency
             SET failed = $3, failed_seq = nextval('task_failure_seq')
             WHERE task_id = $1 AND depends_on = $2 AND failed IS NULL",
            &[&task_id, &dependency, &status],
        )?;
        written.wakes = true;
    }
    Ok(())
}
