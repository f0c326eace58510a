//! Claims: the `ready` queues of the engine's classifications merged in runnable order,
//! read a page at a time, each task taken with `FOR UPDATE SKIP LOCKED`, so that claims
//! of several processes never wait for each other and never take a task twice.

use std::cmp::Reverse;
use std::collections::{HashSet, VecDeque};

use postgres::Row;

use super::conn::Db;
use super::queue::{locks_are_free, status_of};
use super::rows::{decode_task, replace, Written};
use crate::error::{EngineError, Result};
use crate::model::Millis;
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
         LEFT JOIN (SELECT d.task_id, d.depends_on, d.failed, d.failed_seq, t.seq
                    FROM task_dependency d JOIN task t ON t.id = d.task_id
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

/// A task a claim considers, as its queue lists it.
#[derive(Debug, Clone)]
struct Candidate {
    seq: i64,
    priority: i32,
    due_at: Millis,
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
        })
    }
}

/// A claim's place in the `ready` queue of one classification.
struct Cursor<'a> {
    classification: &'a str,
    /// `false` once no executor has room for the classification.
    open: bool,
    page: VecDeque<Candidate>,
    /// The last candidate read: the next page starts after it.
    last: Option<Candidate>,
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

    /// The next candidate, reading a page when needed.
    fn head(&mut self, db: &mut Db<'_, '_>) -> Result<Option<&Candidate>> {
        if self.page.is_empty() && !self.exhausted {
            self.read_page(db)?;
        }
        Ok(self.page.front())
    }

    fn read_page(&mut self, db: &mut Db<'_, '_>) -> Result<()> {
        let class = self.classification;
        let Some(last) = &self.last else {
            let rows = db.rows(
                "SELECT seq, priority, due_at FROM task
                 WHERE queue = 'ready' AND run_class = $1
                 ORDER BY priority DESC, due_at, seq LIMIT $2",
                &[&class, &PAGE],
            )?;
            return self.take(db, &rows);
        };
        // The rest of the last priority, then the lower ones (two index ranges).
        let (priority, due_at, seq) = (last.priority, last.due_at, last.seq);
        let mut rows = db.rows(
            "SELECT seq, priority, due_at FROM task
             WHERE queue = 'ready' AND run_class = $1 AND priority = $2
               AND (due_at, seq) > ($3, $4)
             ORDER BY due_at, seq LIMIT $5",
            &[&class, &priority, &due_at, &seq, &PAGE],
        )?;
        if (rows.len() as i64) < PAGE {
            rows.extend(db.rows(
                "SELECT seq, priority, due_at FROM task
                 WHERE queue = 'ready' AND run_class = $1 AND priority < $2
                 ORDER BY priority DESC, due_at, seq LIMIT $3",
                &[&class, &priority, &PAGE],
            )?);
        }
        self.take(db, &rows)
    }

    /// Queues a page read; a short one was the last.
    fn take(&mut self, db: &mut Db<'_, '_>, rows: &[Row]) -> Result<()> {
        self.exhausted = (rows.len() as i64) < PAGE;
        for row in rows {
            let candidate = Candidate::read(db, row)?;
            self.last = Some(candidate.clone());
            self.page.push_back(candidate);
        }
        Ok(())
    }
}

/// Takes tasks from the classifications' `ready` queues in runnable order, each
/// classification as long as `reserve` finds room for it. A candidate another claim is
/// taking (its row locked) or whose lock is held is passed over (it keeps its place); the
/// tasks behind it are still taken.
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
    while claimed.len() < request.limit {
        let mut best: Option<(usize, Order)> = None;
        for (i, cursor) in cursors.iter_mut().enumerate() {
            if !cursor.open {
                continue;
            }
            if let Some(order) = cursor.head(db)?.map(Candidate::order) {
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
        // Still ready (not claimed by a claim that committed since the page was read)
        // and not being taken by another claim.
        let Some(row) = db.row(
            "SELECT record, lock_key, step_lock, id FROM task
             WHERE seq = $1 AND queue = 'ready' FOR UPDATE SKIP LOCKED",
            &[&candidate.seq],
        )?
        else {
            continue;
        };
        let lock_key: Option<String> = db.get(&row, 1)?;
        let step_lock: Option<String> = db.get(&row, 2)?;
        let id: String = db.get(&row, 3)?;
        if !locks_are_free(db, &id, [lock_key.as_deref(), step_lock.as_deref()])? {
            continue;
        }
        if !(request.reserve)(cursor.classification) {
            // No executor has room for this classification: leave its queue alone.
            cursor.open = false;
            continue;
        }
        let record: String = db.get(&row, 0)?;
        let old = decode_task(&record)?;
        let mut change = state::claim(&old, request.owner, request.now, request.lease_ms)
            .map_err(|e| EngineError::Internal(format!("claim of ready task {}: {e}", old.id)))?;
        change.task.version = old.version + 1;
        let events = (request.number)(&mut change.task, change.events);
        replace(db, written, candidate.seq, &old, &change.task, &events)?;
        claimed.push(Claimed {
            task: change.task,
            events,
        });
    }
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
