//! The connection's settings and the versioned schema.

use std::fmt::Display;
use std::path::Path;
use std::time::Duration;

use rusqlite::config::DbConfig;
use rusqlite::{Connection, TransactionBehavior};

use super::to_i64;
use crate::error::{EngineError, Result};

/// How long a call waits for another connection's write lock before it fails.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Schema migrations: step `i` takes the schema from version `i` to `i + 1`
/// (`PRAGMA user_version`). Append new steps; never change a released one.
const MIGRATIONS: &[&str] = &[SCHEMA_V1];

/// The schema version this code creates and reads.
pub(super) const VERSION: usize = MIGRATIONS.len();

/// `task`: the record as JSON plus the columns queries filter and sort on (see
/// [`super::queue::columns`]); `queue` is `ready`, `timer`, `lease`, `blocked` or NULL (ended).
/// `task_event`: events in append order. `task_dependency`: what a task still waits for;
/// `failed`/`failed_seq` mark a dependency that ended without succeeding, numbered in the
/// order they ended. `task_lock`: lock keys held by running tasks.
const SCHEMA_V1: &str = "
CREATE TABLE task (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    record TEXT NOT NULL,
    status TEXT NOT NULL,
    classification TEXT NOT NULL,
    run_class TEXT NOT NULL,
    priority INTEGER NOT NULL,
    due_at INTEGER NOT NULL,
    lock_key TEXT,
    step_lock TEXT,
    lease_expiry INTEGER,
    ended_at INTEGER,
    version INTEGER NOT NULL,
    queue TEXT
);
CREATE INDEX task_ready ON task (run_class, priority DESC, due_at, seq)
    WHERE queue = 'ready';
CREATE INDEX task_timer ON task (due_at) WHERE queue = 'timer';
CREATE INDEX task_lease ON task (lease_expiry) WHERE queue = 'lease';
CREATE INDEX task_ended ON task (status, ended_at) WHERE ended_at IS NOT NULL;
CREATE INDEX task_status ON task (status);
CREATE INDEX task_classification ON task (classification);

CREATE TABLE task_event (
    seq INTEGER PRIMARY KEY,
    task_id TEXT NOT NULL,
    event TEXT NOT NULL
);
CREATE INDEX task_event_task ON task_event (task_id, seq);

CREATE TABLE task_dependency (
    task_id TEXT NOT NULL,
    depends_on TEXT NOT NULL,
    target TEXT NOT NULL,
    failed TEXT,
    failed_seq INTEGER,
    PRIMARY KEY (task_id, depends_on)
) WITHOUT ROWID;
CREATE INDEX task_dependency_on ON task_dependency (target);
CREATE INDEX task_dependency_failed ON task_dependency (failed_seq)
    WHERE failed_seq IS NOT NULL;

CREATE TABLE task_lock (
    lock_key TEXT PRIMARY KEY,
    task_id TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX task_lock_task ON task_lock (task_id);
";

/// The error of a database that cannot be used.
pub(super) fn cannot_open(path: &Path, reason: impl Display) -> EngineError {
    EngineError::Invalid(format!(
        "cannot open SQLite database at '{}': {reason}",
        path.display()
    ))
}

/// Sets the connection up: busy timeout, WAL, `synchronous=NORMAL`; refuses a read-only
/// database.
pub(super) fn configure(conn: &Connection, path: &Path) -> Result<()> {
    let fail = |e: rusqlite::Error| cannot_open(path, e);
    conn.busy_timeout(BUSY_TIMEOUT).map_err(fail)?;
    conn.set_prepared_statement_cache_capacity(64);
    // One plan per statement, whatever the values bound: otherwise SQLite prepares the
    // claim's queries anew at every run (binding a value may change the best plan).
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)
        .map_err(fail)?;
    let mode: String = conn
        .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))
        .map_err(fail)?;
    // An in-memory database keeps its journal in memory.
    if !mode.eq_ignore_ascii_case("wal") && !mode.eq_ignore_ascii_case("memory") {
        return Err(cannot_open(
            path,
            format!("its journal mode stays '{mode}' where WAL is required"),
        ));
    }
    conn.pragma_update(None, "synchronous", "NORMAL")
        .map_err(fail)?;
    if conn.is_readonly("main").map_err(fail)? {
        return Err(cannot_open(path, "the database is read-only"));
    }
    Ok(())
}

/// Brings the schema to [`VERSION`], refusing a newer one. Runs in one write
/// transaction, so that two processes opening a new file do not both create it.
pub(super) fn migrate(conn: &mut Connection, path: &Path) -> Result<()> {
    let fail = |e: rusqlite::Error| cannot_open(path, e);
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(fail)?;
    let version: i64 = tx
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(fail)?;
    let Some(steps) = usize::try_from(version)
        .ok()
        .and_then(|v| MIGRATIONS.get(v..))
    else {
        return Err(cannot_open(
            path,
            format!(
                "its schema version is {version}, and this version of decaf-tasks knows \
                 versions up to {VERSION}: open it with the decaf-tasks that wrote it, or a \
                 newer one"
            ),
        ));
    };
    if steps.is_empty() {
        return Ok(());
    }
    for step in steps {
        tx.execute_batch(step).map_err(fail)?;
    }
    tx.pragma_update(None, "user_version", to_i64(VERSION))
        .map_err(fail)?;
    tx.commit().map_err(fail)
}
