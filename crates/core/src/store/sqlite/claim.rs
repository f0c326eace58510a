//! Claims: the `ready` queues of the classifications merged in runnable order, read a page
//! at a time, as the memory store does it.

use std::cmp::Reverse;
use std::collections::{HashSet, VecDeque};

use rusqlite::{params, Row, Transaction};

use super::queue::{lock_is_free, status_of};
use super::rows::{load_seq, replace};
use super::{all, exec, to_i64};
use crate::error::{EngineError, Result};
use crate::model::{Millis, Task};
use crate::state;
use crate::store::{ClaimBatch, ClaimRequest, DependencyFailure};

/// Candidates a claim reads at a time from one classification's queue.
const PAGE: usize = 64;

/// Leases what `request` asks for and hands over the dependency failures.
pub(super) fn claim(tx: &Transaction<'_>, request: &ClaimRequest<'_>) -> Result<ClaimBatch> {
    // Due timers join the ready queues; they keep their status until claimed.
    exec(
        tx,
        "UPDATE task SET queue = 'ready' WHERE queue = 'timer' AND due_at <= ?1",
        [request.now],
    )?;
    Ok(ClaimBatch {
        claimed: claim_ready(tx, request)?,
        dependency_failures: dependency_failures(tx)?,
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
    lock_key: Option<String>,
}

impl Candidate {
    fn order(&self) -> Order {
        (Reverse(self.priority), self.due_at, self.seq)
    }

    fn read(r: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(Candidate {
            seq: r.get(0)?,
            priority: r.get(1)?,
            due_at: r.get(2)?,
            lock_key: r.get(3)?,
        })
    }
}

/// A claim's place in the `ready` queue of one classification.
struct Cursor {
    classification: String,
    /// `false` once no executor has room for the classification.
    open: bool,
    page: VecDeque<Candidate>,
    /// The last candidate read: the next page starts after it.
    last: Option<Candidate>,
    exhausted: bool,
}

impl Cursor {
    fn new(classification: String) -> Self {
        Cursor {
            classification,
            open: true,
            page: VecDeque::new(),
            last: None,
            exhausted: false,
        }
    }

    /// The next candidate, reading a page when needed.
    fn head(&mut self, tx: &Transaction<'_>) -> Result<Option<&Candidate>> {
        if self.page.is_empty() && !self.exhausted {
            self.read_page(tx)?;
        }
        Ok(self.page.front())
    }

    fn read_page(&mut self, tx: &Transaction<'_>) -> Result<()> {
        const READY: &str = "SELECT seq, priority, due_at, lock_key FROM task
                             WHERE queue = 'ready' AND classification = ?1";
        let class = self.classification.as_str();
        let size = to_i64(PAGE);
        let read = match &self.last {
            None => all(
                tx,
                &format!("{READY} ORDER BY priority DESC, due_at, seq LIMIT ?2"),
                params![class, size],
                Candidate::read,
            )?,
            Some(last) => {
                // The rest of the last priority, then the lower ones (two index ranges).
                let mut read = all(
                    tx,
                    &format!(
                        "{READY} AND priority = ?2 AND (due_at, seq) > (?3, ?4)
                         ORDER BY due_at, seq LIMIT ?5"
                    ),
                    params![class, last.priority, last.due_at, last.seq, size],
                    Candidate::read,
                )?;
                let left = to_i64(PAGE - read.len());
                read.extend(all(
                    tx,
                    &format!(
                        "{READY} AND priority < ?2 ORDER BY priority DESC, due_at, seq LIMIT ?3"
                    ),
                    params![class, last.priority, left],
                    Candidate::read,
                )?);
                read
            }
        };
        self.exhausted = read.len() < PAGE;
        if let Some(last) = read.last() {
            self.last = Some(last.clone());
        }
        self.page.extend(read);
        Ok(())
    }
}

/// The classifications that have `ready` tasks (one index probe each).
fn ready_classifications(tx: &Transaction<'_>) -> Result<Vec<String>> {
    all(
        tx,
        "WITH RECURSIVE c(name) AS (
             SELECT MIN(classification) FROM task WHERE queue = 'ready'
             UNION ALL
             SELECT (SELECT MIN(classification) FROM task
                     WHERE queue = 'ready' AND classification > c.name)
             FROM c WHERE c.name IS NOT NULL
         )
         SELECT name FROM c WHERE name IS NOT NULL",
        [],
        |r| r.get(0),
    )
}

/// Takes tasks from the classifications' `ready` queues in runnable order, each
/// classification as long as `reserve` finds room for it. A candidate whose lock is held
/// is passed over (it keeps its place); the tasks behind it are still taken.
fn claim_ready(tx: &Transaction<'_>, request: &ClaimRequest<'_>) -> Result<Vec<Task>> {
    let mut claimed = Vec::new();
    if request.limit == 0 {
        return Ok(claimed);
    }
    let mut cursors: Vec<Cursor> = ready_classifications(tx)?
        .into_iter()
        .map(Cursor::new)
        .collect();
    while claimed.len() < request.limit {
        let mut best: Option<(usize, Order)> = None;
        for (i, cursor) in cursors.iter_mut().enumerate() {
            if !cursor.open {
                continue;
            }
            if let Some(order) = cursor.head(tx)?.map(Candidate::order) {
                if best.is_none_or(|(_, b)| order < b) {
                    best = Some((i, order));
                }
            }
        }
        let Some(cursor) = best.map(|(i, _)| &mut cursors[i]) else {
            break;
        };
        let Some(candidate) = cursor.page.front() else {
            break;
        };
        if !lock_is_free(tx, candidate.lock_key.as_deref())? {
            cursor.page.pop_front();
            continue;
        }
        if !(request.reserve)(&cursor.classification) {
            // No executor has room for this classification: leave its queue alone.
            cursor.open = false;
            continue;
        }
        let seq = candidate.seq;
        cursor.page.pop_front();
        let old = load_seq(tx, seq)?;
        let change = state::claim(&old, request.owner, request.now, request.lease_ms)
            .map_err(|e| EngineError::Internal(format!("claim of ready task {}: {e}", old.id)))?;
        let mut task = change.task;
        task.version = old.version + 1;
        replace(tx, seq, &old, &task, &[])?;
        claimed.push(task);
    }
    Ok(claimed)
}

/// Blocked tasks whose dependency ended without succeeding, in the order the dependencies
/// ended, each task once (with the first of its dependencies that ended so). A task is
/// handed over until the engine fails it.
fn dependency_failures(tx: &Transaction<'_>) -> Result<Vec<DependencyFailure>> {
    let rows: Vec<(String, String, String)> = all(
        tx,
        "SELECT d.task_id, d.depends_on, d.failed FROM task_dependency d
         JOIN task t ON t.id = d.task_id
         WHERE d.failed_seq IS NOT NULL
         ORDER BY d.failed_seq, t.seq",
        [],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )?;
    let mut seen = HashSet::new();
    let mut failures = Vec::new();
    for (task_id, dependency, status) in rows {
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
