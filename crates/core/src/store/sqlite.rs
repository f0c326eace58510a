//! The durable store: tasks and their events in one SQLite database file.
//!
//! Durability: the database runs in WAL mode with `synchronous=NORMAL`. A call that
//! returned survives a crash of the process, which is what decaf-tasks promises; a power
//! loss or an OS crash may lose the last calls, never the database's consistency.
//!
//! Each task is a row holding its record as JSON, plus the columns that queries filter and
//! sort on, all derived from the record ([`queue`]); events, dependencies still waited
//! for and locks held by running tasks have tables of their own ([`schema`], versioned
//! with `PRAGMA user_version` and migrated on open).
//!
//! Claims follow [`MemoryStore`](super::MemoryStore): a task sits in one queue (`ready`,
//! `timer`, `lease`, `blocked`, none once ended); a claim moves due timers to `ready`, then
//! merges the `ready` queues of the classifications page by page in runnable order,
//! passing over tasks whose lock is held ([`claim`]). A blocked task is queued once its
//! last dependency succeeded; one whose dependency ended otherwise is handed over by the
//! claims until the engine fails it.
//!
//! Every call is one transaction, and writes take the write lock up front (`BEGIN
//! IMMEDIATE`): several stores, in one process or several, may share a file, and two
//! claims never lease one task twice.

mod claim;
mod queue;
mod rows;
mod schema;

use std::path::{Path, PathBuf};

use parking_lot::Mutex;
use rusqlite::types::{FromSql, ToSql};
use rusqlite::{params, Connection, OpenFlags, Params, Row};

use super::{
    next_record, Applied, ClaimBatch, ClaimRequest, Numbering, Retention, Store, Transition,
};
use crate::deps::DepRef;
use crate::error::{EngineError, Result};
use crate::event::Event;
use crate::model::{ListFilter, Millis, Task, TaskStatus};
use rows::{decode_event, decode_task, exists, load};
use schema::cannot_open;

/// Most tasks one purge deletes (the next purge goes on).
const PURGE_BATCH: usize = 10_000;

/// Turns SQLite errors into the engine's.
trait Sql<T> {
    fn sql(self) -> Result<T>;
}

impl<T> Sql<T> for rusqlite::Result<T> {
    fn sql(self) -> Result<T> {
        self.map_err(|e| EngineError::Store(format!("SQLite: {e}")))
    }
}

fn to_i64(n: impl TryInto<i64>) -> i64 {
    n.try_into().unwrap_or(i64::MAX)
}

/// Runs one statement; returns how many rows it changed.
fn exec(conn: &Connection, sql: &str, params: impl Params) -> Result<usize> {
    conn.prepare_cached(sql)
        .and_then(|mut s| s.execute(params))
        .sql()
}

/// The first column of the one row a query returns.
fn one<T: FromSql>(conn: &Connection, sql: &str, params: impl Params) -> Result<T> {
    conn.prepare_cached(sql)
        .and_then(|mut s| s.query_row(params, |r| r.get(0)))
        .sql()
}

/// Every row a query returns, each read by `row`.
fn all<T>(
    conn: &Connection,
    sql: &str,
    params: impl Params,
    row: impl FnMut(&Row<'_>) -> rusqlite::Result<T>,
) -> Result<Vec<T>> {
    conn.prepare_cached(sql)
        .and_then(|mut s| s.query_map(params, row)?.collect())
        .sql()
}

/// One transaction, rolled back unless committed. `BEGIN` and `COMMIT` are cached
/// statements (rusqlite's `Transaction` parses them anew on every call).
struct Tx<'a> {
    conn: &'a Connection,
    open: bool,
}

impl<'a> Tx<'a> {
    /// A write transaction takes the write lock up front (`BEGIN IMMEDIATE`), so that it
    /// never fails to upgrade a read lock when another connection wrote in between.
    fn begin(conn: &'a Connection, write: bool) -> Result<Self> {
        exec(conn, if write { "BEGIN IMMEDIATE" } else { "BEGIN" }, [])?;
        Ok(Tx { conn, open: true })
    }

    fn commit(mut self) -> Result<()> {
        exec(self.conn, "COMMIT", [])?;
        self.open = false;
        Ok(())
    }
}

impl Drop for Tx<'_> {
    fn drop(&mut self) {
        if self.open {
            // A failed rollback leaves nothing to undo: SQLite rolled back already.
            let _ = exec(self.conn, "ROLLBACK", []);
        }
    }
}

/// Keeps tasks and events in a SQLite database file.
///
/// Durable against a crash of the process: the database runs in WAL mode with
/// `synchronous=NORMAL`, so a call that returned is on disk unless the machine itself
/// fails (a power loss or an OS crash may lose the last calls, never consistency).
///
/// Claims behave as [`MemoryStore`](super::MemoryStore)'s. Every call is one
/// transaction and writes take the write lock up front, so several stores, in one
/// process or several, may share a file: a task is never leased twice. The schema is
/// created and migrated by [`SqliteStore::open`]; a database written by a newer version
/// is refused.
pub struct SqliteStore {
    conn: Mutex<Connection>,
    path: PathBuf,
}

impl SqliteStore {
    /// Opens (creating it if needed) the database at `path`, and creates or migrates its
    /// schema. [`EngineError::Invalid`] when the file cannot be opened or written, or its
    /// schema is newer than this version knows.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags).map_err(|e| {
            match path.parent().filter(|p| !p.as_os_str().is_empty()) {
                Some(dir) if dir.is_file() => {
                    cannot_open(path, format!("'{}' is not a directory", dir.display()))
                }
                Some(dir) if !dir.exists() => cannot_open(
                    path,
                    format!("directory '{}' does not exist", dir.display()),
                ),
                _ => cannot_open(path, e),
            }
        })?;
        Self::with(conn, path)
    }

    /// A database in memory, gone with the store (for tests).
    pub fn open_in_memory() -> Result<Self> {
        let path = Path::new(":memory:");
        let conn = Connection::open_in_memory().map_err(|e| cannot_open(path, e))?;
        Self::with(conn, path)
    }

    fn with(mut conn: Connection, path: &Path) -> Result<Self> {
        schema::configure(&conn, path)?;
        schema::migrate(&mut conn, path)?;
        Ok(SqliteStore {
            conn: Mutex::new(conn),
            path: path.to_owned(),
        })
    }

    /// The schema version this code creates and reads (`PRAGMA user_version`).
    pub fn schema_version() -> u32 {
        schema::VERSION as u32
    }

    /// Runs `f` in one write transaction, committed when it returns `Ok`.
    fn writing<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        let conn = self.conn.lock();
        let tx = Tx::begin(&conn, true)?;
        let value = f(tx.conn)?;
        tx.commit()?;
        Ok(value)
    }

    /// Runs `f` in one read transaction.
    fn reading<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        let conn = self.conn.lock();
        let tx = Tx::begin(&conn, false)?;
        let value = f(tx.conn)?;
        tx.commit()?;
        Ok(value)
    }
}

/// Applies one transition in the transaction `tx` (see [`Store::apply`]).
fn apply_in(
    tx: &Connection,
    id: &str,
    transition: Transition<'_>,
    number: Numbering<'_>,
) -> Result<Applied> {
    let (seq, old) = load(tx, id)?.ok_or_else(|| EngineError::NotFound(id.to_owned()))?;
    let (task, status, events) = match next_record(&old, transition, number) {
        Ok(next) => next,
        Err(refused) => return Ok(Err(refused)),
    };
    rows::replace(tx, seq, &old, &task, &events)?;
    Ok(Ok((status, events)))
}

/// Applies `batch` in the transaction `tx`, in order (see [`Store::apply_many`]): a missing
/// task fails alone, any other error the whole batch.
fn apply_batch(
    tx: &Connection,
    batch: &mut [(&str, Transition<'_>)],
    number: Numbering<'_>,
) -> Result<Vec<Result<Applied>>> {
    let mut out = Vec::with_capacity(batch.len());
    for (id, transition) in batch.iter_mut() {
        match apply_in(tx, id, &mut **transition, &mut *number) {
            Err(EngineError::NotFound(id)) => out.push(Err(EngineError::NotFound(id))),
            other => out.push(Ok(other?)),
        }
    }
    Ok(out)
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .finish()
    }
}

/// The statuses each retention setting covers, with how long they are kept.
fn retained(retention: &Retention) -> [(&'static [TaskStatus], Option<u64>); 2] {
    [
        (&[TaskStatus::Succeeded], retention.completed_ms),
        (
            &[TaskStatus::Failed, TaskStatus::Canceled],
            retention.failed_ms,
        ),
    ]
}

impl Store for SqliteStore {
    fn insert(&self, tasks: &[Task], events: &[Event]) -> Result<()> {
        self.writing(|tx| {
            // Dependencies name tasks stored before this batch (as in the memory store).
            for task in tasks {
                if exists(tx, &task.id)? {
                    return Err(EngineError::Invalid(format!(
                        "task id {} already exists",
                        task.id
                    )));
                }
                let steps = task.steps.iter().flat_map(|s| &s.depends_on);
                for dependency in task.dependencies.iter().chain(steps) {
                    let target = load(tx, DepRef::parse(dependency).task_id)?;
                    crate::deps::check(dependency, target.as_ref().map(|(_, t)| t))
                        .map_err(EngineError::DependencyNotFound)?;
                }
            }
            let mut events = events.iter().peekable();
            for task in tasks {
                if exists(tx, &task.id)? {
                    return Err(EngineError::Invalid(format!(
                        "task id {} is twice in one insert",
                        task.id
                    )));
                }
                let mut own = Vec::with_capacity(1);
                while let Some(event) = events.next_if(|e| e.task_id == task.id) {
                    own.push(event.clone());
                }
                rows::insert(tx, task, &own)?;
            }
            if events.next().is_some() {
                return Err(EngineError::Internal(
                    "insert: events must follow the order of their tasks".into(),
                ));
            }
            Ok(())
        })
    }

    fn get(&self, id: &str) -> Result<Option<Task>> {
        self.reading(|tx| Ok(load(tx, id)?.map(|(_, task)| task)))
    }

    fn list(&self, filter: &ListFilter) -> Result<Vec<Task>> {
        let mut sql = String::from("SELECT record FROM task");
        let mut args: Vec<&dyn ToSql> = Vec::new();
        let status = filter.status.map(TaskStatus::as_str);
        if let Some(status) = &status {
            sql.push_str(" WHERE status = ?");
            args.push(status);
        }
        if let Some(classification) = &filter.classification {
            sql.push_str(if args.is_empty() { " WHERE" } else { " AND" });
            sql.push_str(" classification = ?");
            args.push(classification);
        }
        sql.push_str(" ORDER BY seq LIMIT ? OFFSET ?");
        let limit = filter.limit.map_or(-1, to_i64);
        let offset = to_i64(filter.offset.unwrap_or(0));
        args.push(&limit);
        args.push(&offset);
        self.reading(|tx| {
            let records: Vec<String> = all(tx, &sql, &*args, |r| r.get(0))?;
            records.iter().map(|r| decode_task(r)).collect()
        })
    }

    fn events(&self, task_id: &str) -> Result<Vec<Event>> {
        self.reading(|tx| {
            if !exists(tx, task_id)? {
                return Err(EngineError::NotFound(task_id.to_owned()));
            }
            let events: Vec<String> = all(
                tx,
                "SELECT event FROM task_event WHERE task_id = ?1 ORDER BY seq",
                [task_id],
                |r| r.get(0),
            )?;
            events.iter().map(|e| decode_event(e)).collect()
        })
    }

    fn update(&self, task: Task, events: &[Event]) -> Result<bool> {
        self.writing(|tx| {
            let (seq, old) =
                load(tx, &task.id)?.ok_or_else(|| EngineError::NotFound(task.id.to_string()))?;
            if old.version + 1 != task.version {
                return Ok(false);
            }
            rows::replace(tx, seq, &old, &task, events)?;
            Ok(true)
        })
    }

    fn apply(
        &self,
        id: &str,
        transition: Transition<'_>,
        number: Numbering<'_>,
    ) -> Result<Applied> {
        self.writing(|tx| apply_in(tx, id, transition, number))
    }

    fn apply_many(
        &self,
        batch: &mut [(&str, Transition<'_>)],
        number: Numbering<'_>,
    ) -> Vec<Result<Applied>> {
        let done = self.writing(|tx| apply_batch(tx, batch, number));
        match done {
            Ok(out) => out,
            Err(err) => batch.iter().map(|_| Err(err.clone())).collect(),
        }
    }

    fn apply_many_then_claim(
        &self,
        batch: &mut [(&str, Transition<'_>)],
        number: Numbering<'_>,
        request: &ClaimRequest<'_>,
    ) -> (Vec<Result<Applied>>, Result<ClaimBatch>) {
        // One transaction for both.
        let done = self.writing(|tx| {
            let applied = apply_batch(tx, batch, number)?;
            Ok((applied, claim::claim(tx, request)?))
        });
        match done {
            Ok((applied, claimed)) => (applied, Ok(claimed)),
            // The batch alone again (a failed claim does not lose it); the claim is left to
            // the engine's next try.
            Err(err) => (self.apply_many(batch, number), Err(err)),
        }
    }

    fn append_events(&self, events: &[Event]) -> Result<()> {
        self.writing(|tx| {
            for event in events {
                if !exists(tx, &event.task_id)? {
                    return Err(EngineError::NotFound(event.task_id.to_string()));
                }
            }
            rows::append(tx, events)
        })
    }

    fn claim(&self, request: &ClaimRequest<'_>) -> Result<ClaimBatch> {
        self.writing(|tx| claim::claim(tx, request))
    }

    fn next_due(&self) -> Result<Option<Millis>> {
        self.reading(|tx| one(tx, "SELECT MIN(due_at) FROM task WHERE queue = 'timer'", []))
    }

    fn next_expiry(&self) -> Result<Option<Millis>> {
        self.reading(|tx| {
            one(
                tx,
                "SELECT MIN(lease_expiry) FROM task WHERE queue = 'lease'",
                [],
            )
        })
    }

    fn expired(&self, now: Millis, limit: usize) -> Result<Vec<Task>> {
        self.reading(|tx| {
            let records: Vec<String> = all(
                tx,
                "SELECT record FROM task WHERE queue = 'lease' AND lease_expiry <= ?1
                 ORDER BY lease_expiry, seq LIMIT ?2",
                params![now, to_i64(limit)],
                |r| r.get(0),
            )?;
            records.iter().map(|r| decode_task(r)).collect()
        })
    }

    fn purge(&self, now: Millis, retention: &Retention) -> Result<usize> {
        if !retention.is_on() {
            return Ok(0);
        }
        self.writing(|tx| {
            let mut purged = 0;
            for (statuses, keep) in retained(retention) {
                let Some(cutoff) = keep.and_then(|keep| now.checked_sub(to_i64(keep))) else {
                    continue;
                };
                for status in statuses {
                    let ended: Vec<(i64, String)> = all(
                        tx,
                        &format!(
                            "SELECT seq, id FROM task WHERE status = ?1 AND ended_at <= ?2
                             ORDER BY ended_at LIMIT {PURGE_BATCH}"
                        ),
                        params![status.as_str(), cutoff],
                        |r| Ok((r.get(0)?, r.get(1)?)),
                    )?;
                    for (seq, id) in ended.into_iter().take(PURGE_BATCH - purged) {
                        exec(tx, "DELETE FROM task_event WHERE task_id = ?1", [&id])?;
                        exec(tx, "DELETE FROM task WHERE seq = ?1", [seq])?;
                        purged += 1;
                    }
                }
            }
            Ok(purged)
        })
    }

    fn next_purge(&self, retention: &Retention) -> Result<Option<Millis>> {
        self.reading(|tx| {
            let mut next: Option<Millis> = None;
            for (statuses, keep) in retained(retention) {
                let Some(keep) = keep else {
                    continue;
                };
                for status in statuses {
                    let ended: Option<Millis> = one(
                        tx,
                        "SELECT MIN(ended_at) FROM task WHERE status = ?1 AND ended_at IS NOT NULL",
                        [status.as_str()],
                    )?;
                    if let Some(at) = ended.map(|ended| ended.saturating_add(to_i64(keep))) {
                        next = Some(next.map_or(at, |n| n.min(at)));
                    }
                }
            }
            Ok(next)
        })
    }

    fn active_count(&self) -> Result<usize> {
        let count: i64 = self.reading(|tx| {
            one(
                tx,
                "SELECT COUNT(*) FROM task
                 WHERE status IN ('pending', 'scheduled', 'running', 'waiting_retry')",
                [],
            )
        })?;
        Ok(usize::try_from(count).unwrap_or(0))
    }

    fn last_event_seq(&self) -> Result<u64> {
        let last: Vec<String> = self.reading(|tx| {
            all(
                tx,
                "SELECT event FROM task_event ORDER BY seq DESC LIMIT 1",
                [],
                |r| r.get(0),
            )
        })?;
        last.first()
            .map_or(Ok(0), |text| decode_event(text).map(|e| e.seq))
    }
}
