//! Claims: the `ready` queues of the classifications merged in runnable order, read a page
//! at a time, as the memory store does it.

use std::cmp::Reverse;
use std::collections::{HashSet, VecDeque};

use rusqlite::{params, Connection, Row};

use super::queue::{locks_are_free, status_of};
use super::rows::{load_seq, replace};
use super::{all, exec, one};
use crate::error::{EngineError, Result};
use crate::model::Millis;
use crate::state;
use crate::store::{ClaimBatch, ClaimRequest, Claimed, DependencyFailure};

/// Candidates a claim reads at a time from one classification's queue.
const PAGE: usize = 64;

/// Leases what `request` asks for and hands over the dependency failures.
pub(super) fn claim(tx: &Connection, request: &ClaimRequest<'_>) -> Result<ClaimBatch> {
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
    step_lock: Option<String>,
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
            step_lock: r.get(4)?,
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
    fn head(&mut self, tx: &Connection) -> Result<Option<&Candidate>> {
        if self.page.is_empty() && !self.exhausted {
            self.read_page(tx)?;
        }
        Ok(self.page.front())
    }

    fn read_page(&mut self, tx: &Connection) -> Result<()> {
        const READY: &str = "SELECT seq, priority, due_at, lock_key, step_lock FROM task
                             WHERE queue = 'ready' AND run_class = ?1";
        let class = self.classification.as_str();
        let Some(last) = &self.last else {
            let read = all(
                tx,
                &format!("{READY} ORDER BY priority DESC, due_at, seq LIMIT {PAGE}"),
                [class],
                Candidate::read,
            )?;
            self.take(read);
            return Ok(());
        };
        // The rest of the last priority, then the lower ones (two index ranges).
        let mut read = all(
            tx,
            &format!(
                "{READY} AND priority = ?2 AND (due_at, seq) > (?3, ?4)
                 ORDER BY due_at, seq LIMIT {PAGE}"
            ),
            params![class, last.priority, last.due_at, last.seq],
            Candidate::read,
        )?;
        if read.len() < PAGE {
            let lower = all(
                tx,
                &format!(
                    "{READY} AND priority < ?2 ORDER BY priority DESC, due_at, seq LIMIT {PAGE}"
                ),
                params![class, last.priority],
                Candidate::read,
            )?;
            read.extend(lower);
        }
        self.take(read);
        Ok(())
    }

    /// Queues a page read; a short one was the last.
    fn take(&mut self, read: Vec<Candidate>) {
        self.exhausted = read.len() < PAGE;
        if let Some(last) = read.last() {
            self.last = Some(last.clone());
        }
        self.page.extend(read);
    }
}

/// The classifications that have `ready` tasks, one index probe each.
fn ready_classifications(tx: &Connection) -> Result<Vec<String>> {
    let mut names = Vec::new();
    let mut next: Option<String> = one(
        tx,
        "SELECT MIN(run_class) FROM task WHERE queue = 'ready'",
        [],
    )?;
    while let Some(name) = next {
        next = one(
            tx,
            "SELECT MIN(run_class) FROM task WHERE queue = 'ready' AND run_class > ?1",
            [&name],
        )?;
        names.push(name);
    }
    Ok(names)
}

/// Takes tasks from the classifications' `ready` queues in runnable order, each
/// classification as long as `reserve` finds room for it. A candidate whose lock is held
/// is passed over (it keeps its place); the tasks behind it are still taken.
fn claim_ready(tx: &Connection, request: &ClaimRequest<'_>) -> Result<Vec<Claimed>> {
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
        let locks = [
            candidate.lock_key.as_deref(),
            candidate.step_lock.as_deref(),
        ];
        if !locks_are_free(tx, candidate.seq, locks)? {
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
        let mut change = state::claim(&old, request.owner, request.now, request.lease_ms)
            .map_err(|e| EngineError::Internal(format!("claim of ready task {}: {e}", old.id)))?;
        change.task.version = old.version + 1;
        let events = (request.number)(&mut change.task, change.events);
        replace(tx, seq, &old, &change.task, &events)?;
        claimed.push(Claimed {
            task: change.task,
            events,
        });
    }
    Ok(claimed)
}

/// Blocked tasks whose dependency ended without succeeding, in the order the dependencies
/// ended, each task once (with the first of its dependencies that ended so). A task is
/// handed over until the engine fails it.
fn dependency_failures(tx: &Connection) -> Result<Vec<DependencyFailure>> {
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
