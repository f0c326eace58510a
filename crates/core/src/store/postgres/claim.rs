//! Claims: the `ready` queues of the engine's classifications merged in runnable order,
//! read a page at a time, each task taken with `FOR UPDATE SKIP LOCKED`, so that claims
//! of several processes never wait for each other and never take a task twice.

use std::cmp::Reverse;
use std::collections::{HashSet, VecDeque};

use postgres::Row;

use super::conn::Db;
use super::queue::{locks_are_free, status_of};
use super::rows::{decode_task, replace_many, Replacement, Written};
use super::to_i64;
use crate::error::{EngineError, Result};
use crate::model::{Millis, Task};
use crate::state;
use crate::store::{ClaimBatch, ClaimRequest, Claimed, DependencyFailure};

/// Candidates a claim reads at a time from one classification's queue.
const PAGE: i64 = 64;

/// Leases what `request` asks for and hands over the dependency failures.
pub(super) fn claim(
    db: &mut Db<'_, '_>,
    written: &mut Written,
    request: &ClaimRequest<'_>,
) -> Result<ClaimBatch> {
    // Due timers join the ready queues; they keep their status until claimed (rows
    // another transaction holds are left to it). The same statement reads the dependency
    // failures (taking tasks makes none).
    let rows = db.rows(
        "WITH promoted AS (
             UPDATE task SET queue = 'ready' WHERE seq IN (
                 SELECT seq FROM task WHERE queue = 'timer' AND due_at <= $1
                 FOR UPDATE SKIP LOCKED)
             RETURNING 1)
         SELECT (SELECT count(*) FROM promoted), f.task_id, f.depends_on, f.failed
         FROM (SELECT 1) AS one
         LEFT JOIN (SELECT d.task_id, d.depends_on, d.failed, d.failed_seq,
                           (SELECT t.seq FROM task t WHERE t.id = d.task_id) AS seq
                    FROM task_dependency d
                    WHERE d.failed_seq IS NOT NULL) AS f ON true
         ORDER BY f.failed_seq, f.seq",
        &[&request.now],
    )?;
    let promoted: i64 = match rows.first() {
        Some(row) => db.get(row, 0)?,
        None => 0,
    };
    // Tasks became runnable: other engines may run some of them.
    written.wakes |= promoted > 0;
    let dependency_failures = dependency_failures(db, &rows)?;
    Ok(ClaimBatch {
        claimed: claim_ready(db, written, request)?,
        dependency_failures,
    })
}

/// Runnable order: higher priority, earlier due time, older insertion (`seq`).
type Order = (Reverse<i32>, Millis, i64);

/// A task a claim considers, as its queue lists it: its row is locked by the claim's
/// transaction (`FOR UPDATE SKIP LOCKED`), so no other claim takes it meanwhile.
#[derive(Debug)]
struct Candidate {
    seq: i64,
    priority: i32,
    due_at: Millis,
    record: String,
    lock_key: Option<String>,
    step_lock: Option<String>,
}

impl Candidate {
    fn order(&self) -> Order {
        (Reverse(self.priority), self.due_at, self.seq)
    }

    fn read(db: &mut Db<'_, '_>, row: &Row) -> Result<Self> {
        Ok(Candidate {
            seq: db.get(row, 0)?,
            priority: db.get(row, 1)?,
            due_at: db.get(row, 2)?,
            record: db.get(row, 3)?,
            lock_key: db.get(row, 4)?,
            step_lock: db.get(row, 5)?,
        })
    }
}

/// The candidates' columns a page reads.
const COLUMNS: &str = "seq, priority, due_at, record, lock_key, step_lock";

/// A claim's place in the `ready` queue of one classification.
struct Cursor<'a> {
    classification: &'a str,
    /// `false` once no executor has room for the classification.
    open: bool,
    page: VecDeque<Candidate>,
    /// Where the last page read ended: the next one starts after it.
    last: Option<Order>,
    exhausted: bool,
}

impl<'a> Cursor<'a> {
    fn new(classification: &'a str) -> Self {
        Cursor {
            classification,
            open: true,
            page: VecDeque::new(),
            last: None,
            exhausted: false,
        }
    }

    /// Reads and locks the first page of every cursor, in one query.
    fn prime(db: &mut Db<'_, '_>, cursors: &mut [Cursor<'_>], size: i64) -> Result<()> {
        let size = size.clamp(1, PAGE);
        let names: Vec<&str> = cursors.iter().map(|c| c.classification).collect();
        let rows = db.rows(
            &format!(
                "SELECT {COLUMNS}, c.name FROM unnest($1::text[]) AS c(name),
                 LATERAL (SELECT {COLUMNS} FROM task
                          WHERE queue = 'ready' AND run_class = c.name
                          ORDER BY priority DESC, due_at, seq LIMIT $2
                          FOR UPDATE SKIP LOCKED) AS t"
            ),
            &[&names, &size],
        )?;
        let mut pages: Vec<Vec<&Row>> = vec![Vec::new(); cursors.len()];
        for row in &rows {
            let name: String = db.get(row, 6)?;
            if let Some(i) = names.iter().position(|n| *n == name) {
                pages[i].push(row);
            }
        }
        for (cursor, page) in cursors.iter_mut().zip(pages) {
            cursor.take(db, &page, size)?;
        }
        Ok(())
    }

    /// The next candidate, reading a page of at most `want` rows when needed.
    fn head(&mut self, db: &mut Db<'_, '_>, want: i64) -> Result<Option<&Candidate>> {
        if self.page.is_empty() && !self.exhausted {
            self.read_page(db, want.clamp(1, PAGE))?;
        }
        Ok(self.page.front())
    }

    /// Reads and locks the next `size` ready rows, skipping those other claims hold.
    fn read_page(&mut self, db: &mut Db<'_, '_>, size: i64) -> Result<()> {
        let class = self.classification;
        let Some((Reverse(priority), due_at, seq)) = self.last else {
            let rows = db.rows(
                &format!(
                    "SELECT {COLUMNS} FROM task
                     WHERE queue = 'ready' AND run_class = $1
                     ORDER BY priority DESC, due_at, seq LIMIT $2 FOR UPDATE SKIP LOCKED"
                ),
                &[&class, &size],
            )?;
            return self.take(db, &rows.iter().collect::<Vec<_>>(), size);
        };
        // The rest of the last priority, then the lower ones (two index ranges).
        let mut rows = db.rows(
            &format!(
                "SELECT {COLUMNS} FROM task
                 WHERE queue = 'ready' AND run_class = $1 AND priority = $2
                   AND (due_at, seq) > ($3, $4)
                 ORDER BY due_at, seq LIMIT $5 FOR UPDATE SKIP LOCKED"
            ),
            &[&class, &priority, &due_at, &seq, &size],
        )?;
        if (rows.len() as i64) < size {
            let rest = size - rows.len() as i64;
            rows.extend(db.rows(
                &format!(
                    "SELECT {COLUMNS} FROM task
                     WHERE queue = 'ready' AND run_class = $1 AND priority < $2
                     ORDER BY priority DESC, due_at, seq LIMIT $3 FOR UPDATE SKIP LOCKED"
                ),
                &[&class, &priority, &rest],
            )?);
        }
        self.take(db, &rows.iter().collect::<Vec<_>>(), size)
    }

    /// Queues a page read; a short one was the last.
    fn take(&mut self, db: &mut Db<'_, '_>, rows: &[&Row], size: i64) -> Result<()> {
        self.exhausted = (rows.len() as i64) < size;
        for row in rows {
            let candidate = Candidate::read(db, row)?;
            self.last = Some(candidate.order());
            self.page.push_back(candidate);
        }
        Ok(())
    }
}

/// Takes tasks from the classifications' `ready` queues in runnable order, each
/// classification as long as `reserve` finds room for it. A candidate another claim is
/// taking (its row locked) or whose lock is held is passed over (it keeps its place); the
/// tasks behind it are still taken. The taken rows are written together at the end.
fn claim_ready(
    db: &mut Db<'_, '_>,
    written: &mut Written,
    request: &ClaimRequest<'_>,
) -> Result<Vec<Claimed>> {
    let mut claimed = Vec::new();
    if request.limit == 0 {
        return Ok(claimed);
    }
    let mut names: Vec<&str> = request.classifications.iter().map(String::as_str).collect();
    names.sort_unstable();
    names.dedup();
    let mut cursors: Vec<Cursor<'_>> = names.into_iter().map(Cursor::new).collect();
    Cursor::prime(db, &mut cursors, to_i64(request.limit))?;
    // (row, stored record) of each taken task, in the order of `claimed`.
    let mut taken: Vec<(i64, Task)> = Vec::new();
    // Lock keys taken by this claim: their rows are written at the end.
    let mut taken_locks: HashSet<String> = HashSet::new();
    while claimed.len() < request.limit {
        let want = to_i64(request.limit - claimed.len());
        let mut best: Option<(usize, Order)> = None;
        for (i, cursor) in cursors.iter_mut().enumerate() {
            if !cursor.open {
                continue;
            }
            if let Some(order) = cursor.head(db, want)?.map(Candidate::order) {
                if best.is_none_or(|(_, b)| order < b) {
                    best = Some((i, order));
                }
            }
        }
        let Some(cursor) = best.map(|(i, _)| &mut cursors[i]) else {
            break;
        };
        let Some(candidate) = cursor.page.pop_front() else {
            break;
        };
        let locks = [
            candidate.lock_key.as_deref(),
            candidate.step_lock.as_deref(),
        ];
        if locks.iter().flatten().any(|l| taken_locks.contains(*l)) {
            continue;
        }
        let old = decode_task(&candidate.record)?;
        if !locks_are_free(db, &old.id, locks)? {
            continue;
        }
        if !(request.reserve)(cursor.classification) {
            // No executor has room for this classification: leave its queue alone.
            cursor.open = false;
            continue;
        }
        let mut change = state::claim(&old, request.owner, request.now, request.lease_ms)
            .map_err(|e| EngineError::Internal(format!("claim of ready task {}: {e}", old.id)))?;
        change.task.version = old.version + 1;
        let events = (request.number)(&mut change.task, change.events);
        taken_locks.extend(locks.into_iter().flatten().map(str::to_owned));
        written.events.extend_from_slice(&events);
        taken.push((candidate.seq, old));
        claimed.push(Claimed {
            task: change.task,
            events,
        });
    }
    let replacements: Vec<Replacement<'_>> = taken
        .iter()
        .zip(&claimed)
        .map(|((seq, old), c)| Replacement {
            seq: *seq,
            old,
            task: &c.task,
        })
        .collect();
    replace_many(db, written, &replacements)?;
    Ok(claimed)
}

/// Blocked tasks whose dependency ended without succeeding, in the order the dependencies
/// ended, each task once (with the first of its dependencies that ended so), from `rows`
/// of `(_, task_id, depends_on, failed)` (all NULL when there is none). A task is handed
/// over until an engine fails it.
fn dependency_failures(db: &mut Db<'_, '_>, rows: &[Row]) -> Result<Vec<DependencyFailure>> {
    let mut seen = HashSet::new();
    let mut failures = Vec::new();
    for row in rows {
        let Some(task_id): Option<String> = db.get(row, 1)? else {
            continue;
        };
        let dependency: String = db.get(row, 2)?;
        let status: String = db.get(row, 3)?;
        if seen.insert(task_id.clone()) {
            failures.push(DependencyFailure {
                task_id: task_id.into(),
                dependency: dependency.into(),
                status: status_of(&status)?,
            });
        }
    }
    Ok(failures)
}
