//! The shared store: tasks and their events in one PostgreSQL schema, used by several
//! engines (processes) at once.
//!
//! The tables follow `SqliteStore`'s ([`schema`], versioned in `decaf_meta` and migrated
//! on connect under an advisory lock), and so do the rules that queue a task, lock it and
//! make it wait ([`queue`]): each task is a row holding its record as JSON plus the
//! columns queries filter and sort on; events, dependencies still waited for and locks
//! held by running tasks have tables of their own.
//!
//! Several processes: every call is one transaction. A transition locks the task's row
//! (`FOR UPDATE`) and writes the record its version comes from, so a runner whose lease
//! was taken over cannot overwrite the new attempt. A claim reads the `ready` queues of
//! the engine's classifications page by page and takes each task with `FOR UPDATE SKIP
//! LOCKED`, so two claims never take one task and never wait for each other ([`claim`]);
//! lock keys are rows of `task_lock` (one per key), taken in the claim's transaction and
//! deleted when the run ends.
//!
//! Hearing the others: each write transaction notifies the schema's channel with the ids
//! of the events it stored (or just that something changed), delivered at commit in
//! commit order; a listener thread wakes the engine ([`listen`]), whose
//! [`Store::remote_events`] then reads the other processes' events.
//!
//! A lost connection is opened again on the next call, with growing pauses while the
//! server stays away; calls fail meanwhile ([`EngineError::Store`]) and the engine tries
//! again. A call returns `Ok` only once its transaction committed.

mod claim;
mod conn;
mod listen;
mod queue;
mod rows;
mod schema;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

use super::{
    next_record, Applied, ClaimBatch, ClaimRequest, Claimed, Numbering, Retention, Store,
    Transition,
};
use crate::deps::DepRef;
use crate::error::{EngineError, Result};
use crate::event::Event;
use crate::model::{ListFilter, Millis, Task, TaskId, TaskStatus};
use crate::state::Refused;
use conn::{Connector, Db, Main, Param};
use listen::{Feed, Range, Seen};
use rows::{decode_event, decode_task, exists, load, Lock, Replacement, Written};

/// Most tasks one purge deletes (the next purge goes on).
const PURGE_BATCH: i64 = 10_000;
/// Longest origin accepted: it goes into every notification, which PostgreSQL limits to
/// 8000 bytes.
const MAX_ORIGIN: usize = 1024;
/// Rows (tasks and events) a store writes before it analyzes its tables the first time;
/// then it does again each time it wrote as many again (see [`Growth`]).
const ANALYZE_FIRST: u64 = 1_000;
/// Most events one catch-up after a reconnection of the listener reads.
const CATCH_UP_BATCH: i64 = 10_000;

fn to_i64(n: impl TryInto<i64>) -> i64 {
    n.try_into().unwrap_or(i64::MAX)
}

/// Keeps tasks and events in a PostgreSQL schema that several engines share.
///
/// Each engine has its own store, named by its `origin` (the engine's owner id): events
/// are stored with it, and [`Store::remote_events`] returns those of the other origins,
/// in commit order. Claims are atomic in the database: a task is leased once, a lock key
/// is held by one run at a time and dependencies are followed across processes. Expired
/// leases are found whoever held them, so a task of a process that died is run again.
///
/// The schema is created and migrated by [`PostgresStore::connect`]; one written by a
/// newer version is refused. A write returns `Ok` only after it committed; a lost
/// connection is opened again by the next call (with growing pauses while the server is
/// away), and the listener of [`Store::subscribe`] reconnects by itself. Connections are
/// named `decaf-tasks/<origin>` (`application_name`).
pub struct PostgresStore {
    connector: Arc<Connector>,
    main: Mutex<Main>,
    schema: String,
    origin: String,
    /// What the listener heard (once subscribed).
    feed: Mutex<Option<Arc<Feed>>>,
    growth: Growth,
}

/// How much a store wrote, to analyze its tables as they grow.
///
/// The planner sizes a table by its statistics, which autovacuum refreshes only after a
/// while: a new schema filled fast is planned as if it were still empty, and the claim and
/// lookup queries would then scan it whole. So the store analyzes the tables itself
/// once it wrote [`ANALYZE_FIRST`] rows, and again each time its writes doubled (a few
/// times over the life of a queue).
#[derive(Debug)]
struct Growth {
    written: AtomicU64,
    next: AtomicU64,
}

impl Default for Growth {
    fn default() -> Self {
        Growth {
            written: AtomicU64::new(0),
            next: AtomicU64::new(ANALYZE_FIRST),
        }
    }
}

impl PostgresStore {
    /// Connects to the database at `url` (`postgres://user:password@host:port/database`),
    /// creating or migrating the tables in `schema` (created if needed), for the engine
    /// named `origin`: each engine sharing the schema needs an origin of its own (its
    /// owner id), or it would take another's events for its own.
    ///
    /// [`EngineError::Invalid`] for a bad URL, schema name (`[a-z_][a-z0-9_]{0,62}`) or
    /// origin (1 to 1024 bytes), or a schema of a newer version; [`EngineError::Store`]
    /// when the server cannot be reached (within the URL's `connect_timeout`, 5 s by
    /// default) or refuses.
    pub fn connect(url: &str, schema: &str, origin: &str) -> Result<Self> {
        schema::validate_name(schema)?;
        if origin.is_empty() || origin.len() > MAX_ORIGIN {
            return Err(EngineError::Invalid(format!(
                "the origin of a PostgreSQL store (the engine's owner id) must be 1 to \
                 {MAX_ORIGIN} bytes long; it is {} bytes",
                origin.len()
            )));
        }
        let connector = Connector::new(url, schema, origin)?;
        let mut client = connector.open()?;
        schema::migrate(&mut client, schema)?;
        Ok(PostgresStore {
            connector: Arc::new(connector),
            main: Mutex::new(Main::new(conn::Conn::new(client))),
            schema: schema.to_owned(),
            origin: origin.to_owned(),
            feed: Mutex::new(None),
            growth: Growth::default(),
        })
    }

    /// The schema version this code creates and reads.
    pub fn schema_version() -> u32 {
        schema::VERSION as u32
    }

    /// The `application_name` of the connections of a store of `origin`:
    /// `decaf-tasks/<origin>`, cut to the 63 bytes PostgreSQL keeps.
    pub fn application_name(origin: &str) -> String {
        conn::application_name(origin)
    }

    /// The schema it keeps its tables in.
    pub fn schema(&self) -> &str {
        &self.schema
    }

    /// The engine it stores for.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// Runs `f` in one write transaction, then stores the events it gathered and notifies
    /// the other processes, and commits. `retry`: `f` may run again after a deadlock.
    fn writing<T>(
        &self,
        retry: bool,
        mut f: impl FnMut(&mut Db<'_, '_>, &mut Written) -> Result<T>,
    ) -> Result<T> {
        let mut rows = 0;
        let value = self.main.lock().writing(&self.connector, retry, |db| {
            let mut written = Written::default();
            let value = f(db, &mut written)?;
            written.flush(db, &self.schema, &self.origin)?;
            rows = written.inserted + written.events.len();
            Ok(value)
        })?;
        self.grew(rows as u64);
        Ok(value)
    }

    /// Counts rows written; analyzes the tables when they doubled (see [`Growth`]).
    fn grew(&self, rows: u64) {
        let growth = &self.growth;
        let total = growth.written.fetch_add(rows, Ordering::Relaxed) + rows;
        if total < growth.next.load(Ordering::Relaxed) {
            return;
        }
        growth
            .next
            .store(total.saturating_mul(2), Ordering::Relaxed);
        // A failure (the tables belong to another role, the connection dropped) only
        // leaves it to autovacuum; the write itself is done.
        // In a transaction of its own that never waits long for its lock (another engine's
        // ANALYZE, a vacuum): the engine waits for this call.
        let analyzed = self.main.lock().writing(&self.connector, false, |db| {
            db.batch("SET LOCAL lock_timeout = '200ms'")?;
            db.batch("ANALYZE task, task_event, task_dependency")
        });
        if let Err(err) = analyzed {
            tracing::warn!(%err, "cannot analyze the PostgreSQL tables; leaving it to autovacuum");
        }
    }

    /// Runs `f`, which only reads.
    fn reading<T>(&self, f: impl FnMut(&mut Db<'_, '_>) -> Result<T>) -> Result<T> {
        self.main.lock().reading(&self.connector, f)
    }

    /// Reads what the listener heard of: the announced events, in notification order,
    /// and after a reconnection the events stored since the last one read.
    fn read_remote(&self, feed: &Feed) -> Result<Vec<Event>> {
        let (heard, seen) = feed.peek();
        let (read, caught_up) = self.reading(|db| {
            let mut read = Read::new(&seen);
            let Some(at) = heard.resync_at else {
                read.ranges(db, &heard.ranges)?;
                return Ok((read, true));
            };
            let (before, after) = heard.ranges.split_at(at.min(heard.ranges.len()));
            read.ranges(db, before)?;
            let caught_up = read.catch_up(db, &self.origin)?;
            read.ranges(db, after)?;
            Ok((read, caught_up))
        })?;
        feed.done(&heard, &seen, caught_up, &read.by_id, read.max_id);
        Ok(read.events)
    }
}

/// The other processes' events read by one [`Store::remote_events`].
struct Read<'a> {
    seen: &'a Seen,
    events: Vec<Event>,
    /// Ids read by id (catching up).
    by_id: Vec<i64>,
    max_id: i64,
}

impl<'a> Read<'a> {
    fn new(seen: &'a Seen) -> Self {
        Read {
            seen,
            events: Vec::new(),
            by_id: Vec::new(),
            max_id: seen.last_id,
        }
    }

    /// Keeps the events of `(id, event)` rows not read before; how many rows there were.
    fn keep(
        &mut self,
        db: &mut Db<'_, '_>,
        sql: &str,
        params: &[Param<'_>],
        by_id: bool,
    ) -> Result<usize> {
        let rows = db.rows(sql, params)?;
        for row in &rows {
            let id: i64 = db.get(row, 0)?;
            if self.seen.recent.contains(&id) || self.by_id.contains(&id) {
                continue;
            }
            let text: String = db.get(row, 1)?;
            self.events.push(decode_event(&text)?);
            self.max_id = self.max_id.max(id);
            if by_id {
                self.by_id.push(id);
            }
        }
        Ok(rows.len())
    }

    /// The events notifications announced, in their order.
    fn ranges(&mut self, db: &mut Db<'_, '_>, ranges: &[Range]) -> Result<()> {
        if ranges.is_empty() {
            return Ok(());
        }
        let origins: Vec<&str> = ranges.iter().map(|r| r.origin.as_str()).collect();
        let firsts: Vec<i64> = ranges.iter().map(|r| r.first).collect();
        let lasts: Vec<i64> = ranges.iter().map(|r| r.last).collect();
        self.keep(
            db,
            "SELECT e.id, e.event
             FROM unnest($1::text[], $2::int8[], $3::int8[]) WITH ORDINALITY
                  AS r(origin, first_id, last_id, n)
             JOIN task_event e
               ON e.origin = r.origin AND e.id BETWEEN r.first_id AND r.last_id
             ORDER BY r.n, e.id",
            &[&origins, &firsts, &lasts],
            false,
        )?;
        Ok(())
    }

    /// The other origins' events stored after the last one read; whether all were read.
    fn catch_up(&mut self, db: &mut Db<'_, '_>, origin: &str) -> Result<bool> {
        let count = self.keep(
            db,
            "SELECT id, event FROM task_event WHERE id > $1 AND origin <> $2 ORDER BY id LIMIT $3",
            &[&self.seen.last_id, &origin, &CATCH_UP_BATCH],
            true,
        )?;
        Ok(to_i64(count) < CATCH_UP_BATCH)
    }
}

/// Puts before the events of each claimed task its events of other processes that
/// [`Store::remote_events`] has not returned yet (the notification may not even have
/// arrived): the engine delivers them first, so that its sink hears of a task pushed
/// elsewhere before it hears that it runs. Returns their ids.
fn history(
    db: &mut Db<'_, '_>,
    feed: &Feed,
    origin: &str,
    claimed: &mut [Claimed],
) -> Result<Vec<i64>> {
    let (last_id, unread) = feed.unread();
    let floor = unread.iter().map(|r| r.first - 1).fold(last_id, i64::min);
    let ids: Vec<&str> = claimed.iter().map(|c| &*c.task.id).collect();
    // Filtered by id and ordered here, not in the query: a condition or an order on the
    // event id there can lead the planner to walk the event table by id from `floor` (the
    // whole table while no other process wrote) rather than look the few tasks up.
    let mut rows = Vec::new();
    for row in db.rows(
        "SELECT id, origin, task_id, event FROM task_event
         WHERE task_id = ANY($1) AND origin <> $2",
        &[&ids, &origin],
    )? {
        let id: i64 = db.get(&row, 0)?;
        if id > floor {
            rows.push((id, row));
        }
    }
    rows.sort_unstable_by_key(|(id, _)| *id);
    let mut early: Vec<(String, Event)> = Vec::new();
    let mut returned = Vec::new();
    for (id, row) in &rows {
        let id = *id;
        let from: String = db.get(row, 1)?;
        let unheard = id > last_id
            || unread
                .iter()
                .any(|r| r.origin == from && (r.first..=r.last).contains(&id));
        if !unheard || feed.was_returned(id) {
            continue;
        }
        let text: String = db.get(row, 3)?;
        early.push((db.get(row, 2)?, decode_event(&text)?));
        returned.push(id);
    }
    for claim in claimed.iter_mut() {
        let mut before: Vec<Event> = early
            .iter()
            .filter(|(task, _)| *task == *claim.task.id)
            .map(|(_, event)| event.clone())
            .collect();
        if !before.is_empty() {
            before.append(&mut claim.events);
            claim.events = before;
        }
    }
    Ok(returned)
}

impl Drop for PostgresStore {
    fn drop(&mut self) {
        if let Some(feed) = self.feed.lock().take() {
            feed.stop();
        }
    }
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("server", &self.connector.target())
            .field("schema", &self.schema)
            .field("origin", &self.origin)
            .finish()
    }
}

/// The statuses each retention setting covers, with how long they are kept.
/// Applies `batch` in the transaction of `db` (see [`Store::apply_many`]): the rows locked
/// in one statement (in id order, as everywhere), the transitions applied in order, then
/// the changed rows written at once. Also returns whether a lock key was released.
fn apply_batch(
    db: &mut Db<'_, '_>,
    written: &mut Written,
    batch: &mut [(&str, Transition<'_>)],
    number: Numbering<'_>,
) -> Result<(Vec<Result<Applied>>, bool)> {
    let mut ids: Vec<&str> = batch.iter().map(|(id, _)| *id).collect();
    ids.sort_unstable();
    ids.dedup();
    let rows = db.rows(
        "SELECT seq, record FROM task WHERE id = ANY($1) ORDER BY id FOR UPDATE",
        &[&ids],
    )?;
    // Per task: its row, the stored record and the changed one.
    let mut tasks: HashMap<TaskId, (i64, Task, Option<Task>)> = HashMap::new();
    for row in &rows {
        let seq: i64 = db.get(row, 0)?;
        let text: String = db.get(row, 1)?;
        let task = decode_task(&text)?;
        tasks.insert(TaskId::clone(&task.id), (seq, task, None));
    }
    let mut out = Vec::with_capacity(batch.len());
    for (id, transition) in batch.iter_mut() {
        let Some((_, stored, changed)) = tasks.get_mut(*id) else {
            out.push(Err(EngineError::NotFound((*id).to_owned())));
            continue;
        };
        let current = changed.as_ref().unwrap_or(stored);
        match next_record(current, &mut **transition, &mut *number) {
            Err(refused) => out.push(Ok(Err(refused))),
            Ok((task, status, events)) => {
                written.events.extend_from_slice(&events);
                *changed = Some(task);
                out.push(Ok(Ok((status, events))));
            }
        }
    }
    let mut replacements: Vec<Replacement<'_>> = tasks
        .values()
        .filter_map(|(seq, old, new)| {
            new.as_ref().map(|task| Replacement {
                seq: *seq,
                old,
                task,
            })
        })
        .collect();
    replacements.sort_unstable_by_key(|r| r.seq);
    let released = rows::replace_many(db, written, &replacements)?;
    Ok((out, released))
}

/// Claims in the transaction of `db` (see [`Store::claim`]); with the listener's `feed`,
/// puts before the claimed tasks' events their unread ones of other processes (see
/// [`history`]), whose ids it returns.
fn claim_in(
    db: &mut Db<'_, '_>,
    written: &mut Written,
    request: &ClaimRequest<'_>,
    feed: Option<&Feed>,
    origin: &str,
) -> Result<(ClaimBatch, Vec<i64>)> {
    let mut batch = claim::claim(db, written, request)?;
    let early = match feed {
        Some(feed) if !batch.claimed.is_empty() => history(db, feed, origin, &mut batch.claimed)?,
        _ => Vec::new(),
    };
    Ok((batch, early))
}

fn retained(retention: &Retention) -> [(&'static [TaskStatus], Option<u64>); 2] {
    [
        (&[TaskStatus::Succeeded], retention.completed_ms),
        (
            &[TaskStatus::Failed, TaskStatus::Canceled],
            retention.failed_ms,
        ),
    ]
}

fn records(db: &mut Db<'_, '_>, sql: &str, params: &[Param<'_>]) -> Result<Vec<Task>> {
    let rows = db.rows(sql, params)?;
    let mut tasks = Vec::with_capacity(rows.len());
    for row in &rows {
        let text: String = db.get(row, 0)?;
        tasks.push(decode_task(&text)?);
    }
    Ok(tasks)
}

impl Store for PostgresStore {
    fn insert(&self, tasks: &[Task], events: &[Event]) -> Result<()> {
        let mut seen = HashSet::with_capacity(tasks.len());
        let mut ids = Vec::with_capacity(tasks.len());
        for task in tasks {
            if !seen.insert(&*task.id) {
                return Err(EngineError::Invalid(format!(
                    "task id {} is twice in one insert",
                    task.id
                )));
            }
            ids.push(&*task.id);
        }
        // The events of each task follow it, in the order of the tasks.
        let mut order = tasks.iter().map(|t| &t.id).peekable();
        for event in events {
            while order.next_if(|id| **id != event.task_id).is_some() {}
            if order.peek().is_none() {
                return Err(EngineError::Internal(
                    "insert: events must follow the order of their tasks".into(),
                ));
            }
        }
        self.writing(true, |db, written| {
            // Dependencies name tasks stored before this batch (as in the memory store).
            for task in tasks {
                let steps = task.steps.iter().flat_map(|s| &s.depends_on);
                for dependency in task.dependencies.iter().chain(steps) {
                    let target = load(db, DepRef::parse(dependency).task_id, Lock::None)?;
                    crate::deps::check(dependency, target.as_ref().map(|(_, t)| t))
                        .map_err(EngineError::DependencyNotFound)?;
                }
            }
            rows::insert(db, written, tasks, events)
        })
    }

    fn get(&self, id: &str) -> Result<Option<Task>> {
        self.reading(|db| Ok(load(db, id, Lock::None)?.map(|(_, task)| task)))
    }

    fn list(&self, filter: &ListFilter) -> Result<Vec<Task>> {
        let status = filter.status.map(TaskStatus::as_str);
        let limit = filter.limit.map(to_i64);
        let offset = to_i64(filter.offset.unwrap_or(0));
        let classification = filter.classification.as_deref();
        self.reading(|db| {
            records(
                db,
                "SELECT record FROM task
                 WHERE ($1::text IS NULL OR status = $1)
                   AND ($2::text IS NULL OR classification = $2)
                 ORDER BY seq LIMIT $3 OFFSET $4",
                &[&status, &classification, &limit, &offset],
            )
        })
    }

    fn events(&self, task_id: &str) -> Result<Vec<Event>> {
        self.reading(|db| {
            let rows = db.rows(
                "SELECT e.event FROM task t
                 LEFT JOIN task_event e ON e.task_id = t.id
                 WHERE t.id = $1 ORDER BY e.id",
                &[&task_id],
            )?;
            if rows.is_empty() {
                return Err(EngineError::NotFound(task_id.to_owned()));
            }
            let mut events = Vec::with_capacity(rows.len());
            for row in &rows {
                let text: Option<String> = db.get(row, 0)?;
                if let Some(text) = text {
                    events.push(decode_event(&text)?);
                }
            }
            Ok(events)
        })
    }

    fn update(&self, task: Task, events: &[Event]) -> Result<bool> {
        self.writing(true, |db, written| {
            let (seq, old) = load(db, &task.id, Lock::Update)?
                .ok_or_else(|| EngineError::NotFound(task.id.to_string()))?;
            if old.version + 1 != task.version {
                return Ok(false);
            }
            rows::replace(db, written, seq, &old, &task, events)?;
            Ok(true)
        })
    }

    fn apply(
        &self,
        id: &str,
        transition: Transition<'_>,
        number: Numbering<'_>,
    ) -> Result<Result<(TaskStatus, Vec<Event>), Refused>> {
        self.writing(true, |db, written| {
            let (seq, old) =
                load(db, id, Lock::Update)?.ok_or_else(|| EngineError::NotFound(id.to_owned()))?;
            let (task, status, events) = match next_record(&old, &mut *transition, &mut *number) {
                Ok(next) => next,
                Err(refused) => return Ok(Err(refused)),
            };
            rows::replace(db, written, seq, &old, &task, &events)?;
            Ok(Ok((status, events)))
        })
    }

    fn apply_many(
        &self,
        batch: &mut [(&str, Transition<'_>)],
        number: Numbering<'_>,
    ) -> Vec<Result<Applied>> {
        if let [(id, transition)] = batch {
            return vec![self.apply(id, &mut **transition, number)];
        }
        // One transaction: the rows locked in one statement (in id order, as everywhere),
        // the transitions applied in order, the rows written and the events stored at once.
        let done = self.writing(true, |db, written| {
            apply_batch(db, written, batch, number).map(|(out, _)| out)
        });
        match done {
            Ok(out) => out,
            Err(err) => batch.iter().map(|_| Err(err.clone())).collect(),
        }
    }

    fn append_events(&self, events: &[Event]) -> Result<()> {
        self.writing(true, |db, written| {
            let mut ids: Vec<&str> = events.iter().map(|e| &*e.task_id).collect();
            ids.sort_unstable();
            ids.dedup();
            let found: i64 = db.one("SELECT count(*) FROM task WHERE id = ANY($1)", &[&ids])?;
            if to_i64(ids.len()) != found {
                for id in ids {
                    if !exists(db, id)? {
                        return Err(EngineError::NotFound(id.to_owned()));
                    }
                }
            }
            written.events.extend_from_slice(events);
            Ok(())
        })
    }

    fn claim(&self, request: &ClaimRequest<'_>) -> Result<ClaimBatch> {
        let feed = self.feed.lock().clone();
        // Not run again on a conflict: `reserve` was called for the tasks taken.
        let (batch, early) = self.writing(false, |db, written| {
            claim_in(db, written, request, feed.as_deref(), &self.origin)
        })?;
        if let Some(feed) = feed {
            feed.returned(&early);
        }
        Ok(batch)
    }

    fn apply_many_then_claim(
        &self,
        batch: &mut [(&str, Transition<'_>)],
        number: Numbering<'_>,
        request: &ClaimRequest<'_>,
    ) -> (Vec<Result<Applied>>, Result<ClaimBatch>) {
        let feed = self.feed.lock().clone();
        // One transaction; not run again on a conflict (`reserve` was called). Unless the
        // batch released a lock key: then it commits first, so that the other processes
        // hear the key is free and may take it for their waiting tasks, rather than this
        // one taking it again in the same breath, run after run.
        let done = self.writing(false, |db, written| {
            let (applied, released) = apply_batch(db, written, batch, number)?;
            if released {
                return Ok((applied, None));
            }
            let claimed = claim_in(db, written, request, feed.as_deref(), &self.origin)?;
            Ok((applied, Some(claimed)))
        });
        match done {
            Ok((applied, Some((claimed, early)))) => {
                if let Some(feed) = feed {
                    feed.returned(&early);
                }
                (applied, Ok(claimed))
            }
            Ok((applied, None)) => (applied, self.claim(request)),
            // A conflict (a deadlock, a serialization failure) or a failure of the claim:
            // the batch alone again, retried on a conflict as `apply_many` is; the claim is
            // left to the engine's next try (it was reserved for: it cannot run twice).
            Err(err) => (self.apply_many(batch, number), Err(err)),
        }
    }

    fn next_due(&self) -> Result<Option<Millis>> {
        self.reading(|db| db.one("SELECT MIN(due_at) FROM task WHERE queue = 'timer'", &[]))
    }

    fn next_expiry(&self) -> Result<Option<Millis>> {
        self.reading(|db| {
            db.one(
                "SELECT MIN(lease_expiry) FROM task WHERE queue = 'lease'",
                &[],
            )
        })
    }

    fn expired(&self, now: Millis, limit: usize) -> Result<Vec<Task>> {
        let limit = to_i64(limit);
        self.reading(|db| {
            records(
                db,
                "SELECT record FROM task WHERE queue = 'lease' AND lease_expiry <= $1
                 ORDER BY lease_expiry, seq LIMIT $2",
                &[&now, &limit],
            )
        })
    }

    fn purge(&self, now: Millis, retention: &Retention) -> Result<usize> {
        if !retention.is_on() {
            return Ok(0);
        }
        self.writing(true, |db, _| {
            let mut purged = 0;
            for (statuses, keep) in retained(retention) {
                let Some(cutoff) = keep.and_then(|keep| now.checked_sub(to_i64(keep))) else {
                    continue;
                };
                let statuses: Vec<&str> = statuses.iter().map(|s| s.as_str()).collect();
                let left = PURGE_BATCH - to_i64(purged);
                // Rows another process is purging (or changing) are left to it.
                let rows = db.rows(
                    "DELETE FROM task WHERE seq IN (
                         SELECT seq FROM task
                         WHERE status = ANY($1) AND ended_at <= $2
                         ORDER BY ended_at LIMIT $3 FOR UPDATE SKIP LOCKED)
                     RETURNING id",
                    &[&statuses, &cutoff, &left],
                )?;
                let mut ids: Vec<String> = Vec::with_capacity(rows.len());
                for row in &rows {
                    ids.push(db.get(row, 0)?);
                }
                if !ids.is_empty() {
                    db.exec("DELETE FROM task_event WHERE task_id = ANY($1)", &[&ids])?;
                }
                purged += ids.len();
            }
            Ok(purged)
        })
    }

    fn next_purge(&self, retention: &Retention) -> Result<Option<Millis>> {
        if !retention.is_on() {
            return Ok(None);
        }
        self.reading(|db| {
            let mut next: Option<Millis> = None;
            for (statuses, keep) in retained(retention) {
                let Some(keep) = keep else {
                    continue;
                };
                for status in statuses {
                    let ended: Option<Millis> = db.one(
                        "SELECT MIN(ended_at) FROM task WHERE status = $1 AND ended_at IS NOT NULL",
                        &[&status.as_str()],
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
        let count: i64 = self.reading(|db| {
            db.one(
                "SELECT COUNT(*) FROM task
                 WHERE status IN ('pending', 'scheduled', 'running', 'waiting_retry')",
                &[],
            )
        })?;
        Ok(usize::try_from(count).unwrap_or(0))
    }

    fn last_event_seq(&self) -> Result<u64> {
        let last: Option<i64> =
            self.reading(|db| db.one("SELECT MAX(seq) FROM task_event", &[]))?;
        Ok(last.map_or(0, |seq| u64::try_from(seq).unwrap_or(0)))
    }

    fn is_shared(&self) -> bool {
        true
    }

    fn subscribe(&self, wake: Arc<dyn Fn() + Send + Sync>) -> Result<()> {
        let mut slot = self.feed.lock();
        if let Some(old) = slot.take() {
            old.stop();
        }
        let client = listen::listen(&self.connector, &self.schema)?;
        // Events stored from now on are the others' news, those before are not: the
        // listener listens already, so none falls in between.
        let last_id: i64 =
            self.reading(|db| db.one("SELECT COALESCE(MAX(id), 0) FROM task_event", &[]))?;
        let feed = Arc::new(Feed::new(&self.origin, last_id));
        listen::spawn(
            client,
            Arc::clone(&self.connector),
            self.schema.clone(),
            Arc::clone(&feed),
            wake,
        )?;
        *slot = Some(feed);
        Ok(())
    }

    fn close(&self) {
        if let Some(feed) = self.feed.lock().take() {
            feed.stop();
        }
        self.main.lock().close();
    }

    fn remote_events(&self) -> Result<Vec<Event>> {
        let Some(feed) = self.feed.lock().clone() else {
            return Ok(Vec::new());
        };
        if feed.is_empty() {
            return Ok(Vec::new());
        }
        self.read_remote(&feed)
    }
}
