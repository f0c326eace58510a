//! The schema: its name, its tables, and migrations serialized across processes.

use postgres::Client;

use super::conn::describe;
use crate::error::{EngineError, Result};

/// Schema migrations: step `i` takes the schema from version `i` to `i + 1` (the one row
/// of `decaf_meta`). Append new steps; never change a released one.
const MIGRATIONS: &[&str] = &[SCHEMA_V1];

/// The schema version this code creates and reads.
pub(super) const VERSION: usize = MIGRATIONS.len();

/// `task`: the record as JSON plus the columns queries filter and sort on (see
/// [`super::queue::columns`]); `queue` is `ready`, `timer`, `lease`, `blocked` or NULL
/// (ended). `task_event`: events in the order they were stored (`id`), with the engine's
/// number (`seq`) and the engine that stored them (`origin`). `task_dependency`: what a
/// task still waits for; `failed`/`failed_seq` mark a dependency that ended without
/// succeeding, numbered in the order they ended. `task_lock`: lock keys held by running
/// tasks (the primary key makes a key held once, across processes).
const SCHEMA_V1: &str = "
CREATE TABLE task (
    seq BIGSERIAL PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    record TEXT NOT NULL,
    status TEXT NOT NULL,
    classification TEXT NOT NULL,
    run_class TEXT NOT NULL,
    priority INTEGER NOT NULL,
    due_at BIGINT NOT NULL,
    lock_key TEXT,
    step_lock TEXT,
    lease_expiry BIGINT,
    ended_at BIGINT,
    version BIGINT NOT NULL,
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
    id BIGSERIAL PRIMARY KEY,
    task_id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    origin TEXT NOT NULL,
    event TEXT NOT NULL
);
CREATE INDEX task_event_task ON task_event (task_id, id);
CREATE INDEX task_event_seq ON task_event (seq);

CREATE TABLE task_dependency (
    task_id TEXT NOT NULL,
    depends_on TEXT NOT NULL,
    target TEXT NOT NULL,
    failed TEXT,
    failed_seq BIGINT,
    PRIMARY KEY (task_id, depends_on)
);
CREATE INDEX task_dependency_on ON task_dependency (target);
CREATE INDEX task_dependency_failed ON task_dependency (failed_seq)
    WHERE failed_seq IS NOT NULL;
CREATE SEQUENCE task_failure_seq;

CREATE TABLE task_lock (
    lock_key TEXT PRIMARY KEY,
    task_id TEXT NOT NULL
);
CREATE INDEX task_lock_task ON task_lock (task_id);
";

/// Refuses a schema name that is not a plain lower-case identifier of at most 63
/// characters (`[a-z_][a-z0-9_]{0,62}`).
pub(super) fn validate_name(schema: &str) -> Result<()> {
    let mut chars = schema.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_');
    let rest_ok = chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if first_ok && rest_ok && schema.len() <= 63 {
        return Ok(());
    }
    Err(EngineError::Invalid(format!(
        "invalid PostgreSQL schema name '{schema}': use 1 to 63 lower-case letters, digits \
         and underscores, not starting with a digit"
    )))
}

fn cannot_migrate(schema: &str, e: postgres::Error) -> EngineError {
    EngineError::Store(format!(
        "cannot create or migrate the PostgreSQL schema '{schema}': {}",
        describe(&e)
    ))
}

/// Creates the schema or brings it to [`VERSION`], refusing a newer one. One transaction,
/// serialized across processes by an advisory lock on the schema's name.
pub(super) fn migrate(client: &mut Client, schema: &str) -> Result<()> {
    let fail = |e| cannot_migrate(schema, e);
    let mut tx = client.transaction().map_err(fail)?;
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtext('decaf-tasks migrate'), hashtext($1))",
        &[&schema],
    )
    .map_err(fail)?;
    tx.batch_execute(&format!(
        "CREATE SCHEMA IF NOT EXISTS \"{schema}\";
         CREATE TABLE IF NOT EXISTS \"{schema}\".decaf_meta (version INTEGER NOT NULL);"
    ))
    .map_err(fail)?;
    let row = tx
        .query_opt(&format!("SELECT version FROM \"{schema}\".decaf_meta"), &[])
        .map_err(fail)?;
    let version: i32 = match &row {
        Some(row) => row.try_get(0).map_err(fail)?,
        None => {
            tx.execute(
                &format!("INSERT INTO \"{schema}\".decaf_meta (version) VALUES (0)"),
                &[],
            )
            .map_err(fail)?;
            0
        }
    };
    let Some(steps) = usize::try_from(version)
        .ok()
        .and_then(|v| MIGRATIONS.get(v..))
    else {
        return Err(EngineError::Invalid(format!(
            "the PostgreSQL schema '{schema}' has version {version}, and this version of \
             decaf-tasks knows versions up to {VERSION}: use the decaf-tasks that wrote it, or \
             a newer one"
        )));
    };
    if steps.is_empty() {
        return tx.commit().map_err(fail);
    }
    tx.batch_execute(&format!("SET LOCAL search_path TO \"{schema}\""))
        .map_err(fail)?;
    for step in steps {
        tx.batch_execute(step).map_err(fail)?;
    }
    tx.execute(
        "UPDATE decaf_meta SET version = $1",
        &[&i32::try_from(VERSION).unwrap_or(i32::MAX)],
    )
    .map_err(fail)?;
    tx.commit().map_err(fail)
}
