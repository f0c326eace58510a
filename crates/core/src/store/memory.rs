//! The in-memory store: the default, the fastest, and the test double.
//!
//! Tasks live in a vector ordered by insertion sequence; the indexes (ready queue, timers,
//! leases) hold only small copyable keys, so keeping them up to date allocates nothing.
//!
//! Tasks are queued by the classification of their next run (a composite's current step).
//!
//! Dependencies: a task whose next run waits for dependencies that have not all succeeded
//! sits in no index (it is not scanned by claims); it is placed when the last one succeeds,
//! and reported by the next claim when one fails or is canceled. A dependency is looked at
//! again only when the task it names ends or moves to its next step. Locks: a lock key
//! held by a running task (or step) makes claims skip the other tasks of that key (they
//! keep their place; unrelated tasks behind them are still claimed).

use std::cmp::Reverse;
use std::collections::{BTreeSet, VecDeque};

use parking_lot::Mutex;
use rustc_hash::FxHashMap;

use super::{
    next_record, ClaimBatch, ClaimRequest, Claimed, DependencyFailure, Numbering, Retention, Store,
    Transition,
};
use crate::deps::{self, DepRef, DepState};
use crate::error::{EngineError, Result};
use crate::event::Event;
use crate::model::{ListFilter, Millis, Task, TaskId, TaskStatus};
use crate::state::{self, Refused};

/// Runnable order: higher priority, earlier due time, older insertion (`seq`).
type ReadyKey = (Reverse<i32>, Millis, u64);

/// Where a task sits in the indexes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    /// Runnable now.
    Ready(ReadyKey),
    /// Runnable from `due` on: `(due, seq)`.
    Timer(Millis, u64),
    /// Running with a lease until: `(expiry, seq)`.
    Lease(Millis, u64),
    /// Waiting for dependencies to succeed.
    Blocked,
    /// Ended.
    None,
}

struct Entry {
    task: Task,
    /// Interned classification of the next run (index into `Inner::ready`).
    class: u32,
    slot: Slot,
    events: Vec<Event>,
    /// Dependencies of the next run that have not succeeded (yet).
    waiting: Vec<String>,
}

#[derive(Default)]
struct Inner {
    ids: FxHashMap<TaskId, u64>,
    /// By insertion sequence (the index is the `seq`). Boxed so that growing the vector
    /// moves pointers, not records.
    /// `None` once purged by retention.
    entries: Vec<Option<Box<Entry>>>,
    /// Ended tasks in the order they ended: `(ended at, seq)`; succeeded, then the others.
    ended_ok: VecDeque<(Millis, u64)>,
    ended_ko: VecDeque<(Millis, u64)>,
    /// Runnable tasks, one queue per classification (so a claim never scans tasks of a
    /// classification whose executors are full).
    ready: Vec<BTreeSet<ReadyKey>>,
    class_ids: FxHashMap<String, u32>,
    timers: BTreeSet<(Millis, u64)>,
    leases: BTreeSet<(Millis, u64)>,
    active: usize,
    /// Tasks waiting for each (unended) task, or for one of its steps.
    dependents: FxHashMap<TaskId, Vec<u64>>,
    /// Blocked tasks whose dependency ended without succeeding, for the next claim.
    doomed: Vec<DependencyFailure>,
    /// Lock keys held by runs in flight.
    locks: FxHashMap<String, u64>,
}

fn now_of(entries: &[Option<Box<Entry>>], seq: u64) -> Millis {
    entries
        .get(seq as usize)
        .and_then(|e| e.as_deref())
        .map_or(0, |e| e.task.updated_at)
}

fn slot_of(task: &Task, seq: u64, blocked: bool) -> Slot {
    let waits = matches!(task.status, TaskStatus::Pending | TaskStatus::Scheduled)
        || task.is_between_steps();
    if blocked && waits {
        return Slot::Blocked;
    }
    let ready = || Slot::Ready((Reverse(task.priority), task.due_at(), seq));
    match task.status {
        TaskStatus::Pending => ready(),
        TaskStatus::Scheduled | TaskStatus::WaitingRetry => Slot::Timer(task.due_at(), seq),
        TaskStatus::Running if task.is_between_steps() => match task.next_run_at {
            Some(at) => Slot::Timer(at, seq),
            None => ready(),
        },
        TaskStatus::Running => Slot::Lease(task.lease_expiry.unwrap_or(Millis::MAX), seq),
        _ => Slot::None,
    }
}

fn owned_locks(task: &Task) -> Vec<String> {
    task.held_locks().into_iter().map(str::to_owned).collect()
}

impl Inner {
    fn class_id(&mut self, classification: &str) -> u32 {
        if let Some(&id) = self.class_ids.get(classification) {
            return id;
        }
        let id = self.ready.len() as u32;
        self.ready.push(BTreeSet::new());
        self.class_ids.insert(classification.to_owned(), id);
        id
    }

    fn unplace(&mut self, class: u32, slot: Slot) {
        match slot {
            Slot::Ready(key) => {
                self.ready[class as usize].remove(&key);
            }
            Slot::Timer(due, seq) => {
                self.timers.remove(&(due, seq));
            }
            Slot::Lease(at, seq) => {
                self.leases.remove(&(at, seq));
            }
            Slot::Blocked | Slot::None => {}
        }
    }

    fn place(&mut self, class: u32, slot: Slot) {
        match slot {
            Slot::Ready(key) => {
                self.ready[class as usize].insert(key);
            }
            Slot::Timer(due, seq) => {
                self.timers.insert((due, seq));
            }
            Slot::Lease(at, seq) => {
                self.leases.insert((at, seq));
            }
            Slot::Blocked | Slot::None => {}
        }
    }

    /// Moves due timers to the ready set; they keep their status until claimed.
    fn promote(&mut self, now: Millis) {
        while let Some(&(due, seq)) = self.timers.first() {
            if due > now {
                break;
            }
            self.timers.pop_first();
            if let Some(entry) = self
                .entries
                .get_mut(seq as usize)
                .and_then(|e| e.as_deref_mut())
            {
                let key = (Reverse(entry.task.priority), due, seq);
                entry.slot = Slot::Ready(key);
                self.ready[entry.class as usize].insert(key);
            }
        }
    }

    fn entry(&self, id: &str) -> Option<&Entry> {
        self.ids
            .get(id)
            .and_then(|&seq| self.entries.get(seq as usize).and_then(|e| e.as_deref()))
    }

    /// The tasks a claim takes: a merge of the per-classification ready queues in runnable
    /// order, each classification up to its budget, skipping tasks whose lock is held
    /// (they keep their place; tasks behind them are still taken).
    fn pick(&self, request: &ClaimRequest<'_>) -> Vec<u64> {
        struct Queue<'a> {
            name: &'a str,
            open: bool,
            iter: std::collections::btree_set::Iter<'a, ReadyKey>,
            head: Option<ReadyKey>,
        }
        let mut queues: Vec<Queue<'_>> = self
            .class_ids
            .iter()
            .filter(|(_, &class)| !self.ready[class as usize].is_empty())
            .map(|(name, &class)| {
                let mut iter = self.ready[class as usize].iter();
                let head = iter.next().copied();
                Queue {
                    name,
                    open: true,
                    iter,
                    head,
                }
            })
            .collect();
        let mut picked = Vec::new();
        let mut taken_locks: Vec<&str> = Vec::new();
        while picked.len() < request.limit {
            let Some(queue) = queues
                .iter_mut()
                .filter(|q| q.open && q.head.is_some())
                .min_by_key(|q| q.head)
            else {
                break;
            };
            let Some(key) = queue.head else {
                break;
            };
            let Some(entry) = self.entries.get(key.2 as usize).and_then(|e| e.as_deref()) else {
                queue.head = queue.iter.next().copied();
                continue;
            };
            // Held by another task (a composite holds its own lock between its steps).
            let held = |l: &str| self.locks.get(l).is_some_and(|&owner| owner != key.2);
            let mut locks = entry.task.run_locks();
            if locks.any(|l| held(l) || taken_locks.contains(&l)) {
                queue.head = queue.iter.next().copied();
                continue;
            }
            if !(request.reserve)(queue.name) {
                // No executor has room for this classification: leave its queue alone.
                queue.open = false;
                continue;
            }
            taken_locks.extend(entry.task.run_locks());
            queue.head = queue.iter.next().copied();
            picked.push(key.2);
        }
        picked
    }

    /// Replaces the record of task `seq`, keeping the indexes and the active count right.
    fn store(&mut self, seq: u64, task: Task, events: &[Event]) {
        // A composite's next run may be of another classification.
        let new_class = task
            .is_composite()
            .then(|| self.class_id(task.run_classification()));
        let Some(entry) = self.entries.get(seq as usize).and_then(|e| e.as_deref()) else {
            return;
        };
        let moved_on = task.current_step != entry.task.current_step;
        // A new step waits for its own dependencies.
        let waiting = (moved_on && !task.status.is_terminal()).then(|| self.evaluate(seq, &task));
        let Some(entry) = self
            .entries
            .get_mut(seq as usize)
            .and_then(|e| e.as_deref_mut())
        else {
            return;
        };
        let was_active = !entry.task.status.is_terminal();
        let is_active = !task.status.is_terminal();
        let old_locks = owned_locks(&entry.task);
        let new_locks = owned_locks(&task);
        if let Some(waiting) = waiting {
            entry.waiting = waiting;
        }
        let old_slot = entry.slot;
        let old_class = entry.class;
        let class = new_class.unwrap_or(old_class);
        let new_slot = slot_of(&task, seq, !entry.waiting.is_empty());
        entry.task = task;
        entry.slot = new_slot;
        entry.class = class;
        // Exact growth: a task has a handful of events, and this memory lives as long as it.
        entry.events.reserve_exact(events.len());
        entry.events.extend_from_slice(events);
        let progressed =
            (moved_on || (was_active && !is_active)).then(|| TaskId::clone(&entry.task.id));
        let ended = (was_active && !is_active).then_some(entry.task.status);
        if old_slot != new_slot || old_class != class {
            self.unplace(old_class, old_slot);
            self.place(class, new_slot);
        }
        for lock in old_locks {
            if self.locks.get(&lock) == Some(&seq) {
                self.locks.remove(&lock);
            }
        }
        for lock in new_locks {
            self.locks.insert(lock, seq);
        }
        match (was_active, is_active) {
            (true, false) => self.active -= 1,
            (false, true) => self.active += 1,
            _ => {}
        }
        if let Some(status) = ended {
            let queue = if status == TaskStatus::Succeeded {
                &mut self.ended_ok
            } else {
                &mut self.ended_ko
            };
            queue.push_back((now_of(&self.entries, seq), seq));
        }
        if let Some(id) = progressed {
            self.dependency_progressed(&id);
        }
    }

    /// The dependencies of `task`'s next run (task `seq`) that have not succeeded: `seq`
    /// is registered as a dependent of the tasks they name, and those that never can are
    /// doomed (reported by the next claim; the task stays blocked until the engine fails
    /// it).
    fn evaluate(&mut self, seq: u64, task: &Task) -> Vec<String> {
        let states: Vec<(&str, DepState)> = task
            .run_dependencies()
            .map(|dep| {
                let parsed = DepRef::parse(dep);
                let state = self.entry(parsed.task_id).map_or(
                    // Gone: purged by retention, so it ended; how is not known any more.
                    DepState::Failed(TaskStatus::Failed),
                    |e| deps::state_of(parsed, &e.task),
                );
                (dep, state)
            })
            .collect();
        let mut waiting = Vec::new();
        for (dep, state) in states {
            match state {
                DepState::Met => continue,
                DepState::Waiting => {
                    let target: TaskId = DepRef::parse(dep).task_id.into();
                    let dependents = self.dependents.entry(target).or_default();
                    if dependents.last() != Some(&seq) {
                        dependents.push(seq);
                    }
                }
                DepState::Failed(status) => self.doomed.push(DependencyFailure {
                    task_id: TaskId::clone(&task.id),
                    dependency: dep.into(),
                    status,
                }),
            }
            waiting.push(dep.to_owned());
        }
        waiting
    }

    /// Task `id` ended or moved to its next step: its dependents look at what they wait
    /// for from it again. Those with nothing left to wait for become runnable; those
    /// waiting for something that can no longer succeed are doomed.
    fn dependency_progressed(&mut self, id: &TaskId) {
        let Some(mut dependents) = self.dependents.remove(id) else {
            return;
        };
        dependents.sort_unstable();
        dependents.dedup();
        let Some(target) = self.entry(id) else {
            return;
        };
        let verdicts: Vec<(u64, Vec<(usize, DepState)>)> = dependents
            .iter()
            .filter_map(|&seq| {
                let entry = self.entries.get(seq as usize)?.as_deref()?;
                if entry.task.status.is_terminal() {
                    return None;
                }
                let states = entry
                    .waiting
                    .iter()
                    .enumerate()
                    .map(|(i, dep)| (i, DepRef::parse(dep)))
                    .filter(|(_, dep)| dep.task_id == &**id)
                    .map(|(i, dep)| (i, deps::state_of(dep, &target.task)))
                    .collect();
                Some((seq, states))
            })
            .collect();
        let mut still = Vec::new();
        for (seq, states) in verdicts {
            let Some(entry) = self
                .entries
                .get_mut(seq as usize)
                .and_then(|e| e.as_deref_mut())
            else {
                continue;
            };
            let mut met = Vec::new();
            let mut waits = false;
            for (i, state) in states {
                match state {
                    DepState::Met => met.push(i),
                    DepState::Waiting => waits = true,
                    DepState::Failed(status) => self.doomed.push(DependencyFailure {
                        task_id: TaskId::clone(&entry.task.id),
                        dependency: entry.waiting[i].as_str().into(),
                        status,
                    }),
                }
            }
            for i in met.into_iter().rev() {
                entry.waiting.remove(i);
            }
            if waits {
                still.push(seq);
            }
            if entry.waiting.is_empty() {
                let old = entry.slot;
                let new = slot_of(&entry.task, seq, false);
                let class = entry.class;
                entry.slot = new;
                self.unplace(class, old);
                self.place(class, new);
            }
        }
        if !still.is_empty() {
            self.dependents.insert(TaskId::clone(id), still);
        }
    }
}

/// Keeps everything in process memory, behind one mutex.
#[derive(Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore")
            .field("tasks", &self.inner.lock().ids.len())
            .finish()
    }
}

impl Store for MemoryStore {
    fn insert(&self, tasks: &[Task], events: &[Event]) -> Result<()> {
        let mut inner = self.inner.lock();
        if let Some(dup) = tasks.iter().find(|t| inner.ids.contains_key(&t.id)) {
            return Err(EngineError::Invalid(format!(
                "task id {} already exists",
                dup.id
            )));
        }
        let all_deps = tasks.iter().flat_map(|t| {
            let steps = t.steps.iter().flat_map(|s| &s.depends_on);
            t.dependencies.iter().chain(steps)
        });
        for dep in all_deps {
            if let Err(msg) = deps::check(
                dep,
                inner.entry(DepRef::parse(dep).task_id).map(|e| &e.task),
            ) {
                return Err(EngineError::DependencyNotFound(msg));
            }
        }
        let mut events = events.iter().peekable();
        for task in tasks {
            let seq = inner.entries.len() as u64;
            let waiting = inner.evaluate(seq, task);
            let slot = slot_of(task, seq, !waiting.is_empty());
            let class = inner.class_id(task.run_classification());
            inner.place(class, slot);
            if !task.status.is_terminal() {
                inner.active += 1;
            }
            let mut own = Vec::with_capacity(1);
            while let Some(event) = events.next_if(|e| e.task_id == task.id) {
                own.push(event.clone());
            }
            inner.ids.insert(TaskId::clone(&task.id), seq);
            inner.entries.push(Some(Box::new(Entry {
                task: task.clone(),
                class,
                slot,
                events: own,
                waiting,
            })));
        }
        if events.next().is_some() {
            return Err(EngineError::Internal(
                "insert: events must follow the order of their tasks".into(),
            ));
        }
        Ok(())
    }

    fn get(&self, id: &str) -> Result<Option<Task>> {
        Ok(self.inner.lock().entry(id).map(|e| e.task.clone()))
    }

    fn list(&self, filter: &ListFilter) -> Result<Vec<Task>> {
        let inner = self.inner.lock();
        let matches = inner
            .entries
            .iter()
            .flatten()
            .map(|e| &e.task)
            .filter(|t| filter.status.is_none_or(|s| s == t.status))
            .filter(|t| {
                filter
                    .classification
                    .as_deref()
                    .is_none_or(|c| c == t.classification)
            })
            .skip(filter.offset.unwrap_or(0))
            .take(filter.limit.unwrap_or(usize::MAX))
            .cloned()
            .collect();
        Ok(matches)
    }

    fn events(&self, task_id: &str) -> Result<Vec<Event>> {
        let inner = self.inner.lock();
        let entry = inner
            .entry(task_id)
            .ok_or_else(|| EngineError::NotFound(task_id.to_owned()))?;
        Ok(entry.events.clone())
    }

    fn update(&self, task: Task, events: &[Event]) -> Result<bool> {
        let mut inner = self.inner.lock();
        let Some(&seq) = inner.ids.get(&task.id) else {
            return Err(EngineError::NotFound(task.id.to_string()));
        };
        let current = inner
            .entries
            .get(seq as usize)
            .and_then(|e| e.as_deref())
            .map(|e| e.task.version);
        if current.map(|v| v + 1) != Some(task.version) {
            return Ok(false);
        }
        inner.store(seq, task, events);
        Ok(true)
    }

    fn apply(
        &self,
        id: &str,
        transition: Transition<'_>,
        number: Numbering<'_>,
    ) -> Result<Result<(TaskStatus, Vec<Event>), Refused>> {
        let mut inner = self.inner.lock();
        let seq = *inner
            .ids
            .get(id)
            .ok_or_else(|| EngineError::NotFound(id.to_owned()))?;
        let Some(entry) = inner.entries.get(seq as usize).and_then(|e| e.as_deref()) else {
            return Err(EngineError::NotFound(id.to_owned()));
        };
        let (task, status, events) = match next_record(&entry.task, transition, number) {
            Ok(next) => next,
            Err(refused) => return Ok(Err(refused)),
        };
        inner.store(seq, task, &events);
        Ok(Ok((status, events)))
    }

    fn append_events(&self, events: &[Event]) -> Result<()> {
        let mut inner = self.inner.lock();
        for event in events {
            let seq = *inner
                .ids
                .get(&event.task_id)
                .ok_or_else(|| EngineError::NotFound(event.task_id.to_string()))?;
            if let Some(entry) = inner
                .entries
                .get_mut(seq as usize)
                .and_then(|e| e.as_deref_mut())
            {
                entry.events.reserve_exact(1);
                entry.events.push(event.clone());
            }
        }
        Ok(())
    }

    fn claim(&self, request: &ClaimRequest<'_>) -> Result<ClaimBatch> {
        let mut inner = self.inner.lock();
        inner.promote(request.now);
        let picked = inner.pick(request);
        let mut claimed = Vec::with_capacity(picked.len());
        for seq in picked {
            let Some(entry) = inner.entries.get(seq as usize).and_then(|e| e.as_deref()) else {
                continue;
            };
            let mut change =
                state::claim(&entry.task, request.owner, request.now, request.lease_ms).map_err(
                    |e| {
                        EngineError::Internal(format!("claim of ready task {}: {e}", entry.task.id))
                    },
                )?;
            change.task.version += 1;
            let events = (request.number)(&mut change.task, change.events);
            inner.store(seq, change.task.clone(), &events);
            claimed.push(Claimed {
                task: change.task,
                events,
            });
        }
        let dependency_failures = std::mem::take(&mut inner.doomed);
        Ok(ClaimBatch {
            claimed,
            dependency_failures,
        })
    }

    fn next_due(&self) -> Result<Option<Millis>> {
        Ok(self.inner.lock().timers.first().map(|&(due, _)| due))
    }

    fn next_expiry(&self) -> Result<Option<Millis>> {
        Ok(self.inner.lock().leases.first().map(|&(at, _)| at))
    }

    fn expired(&self, now: Millis, limit: usize) -> Result<Vec<Task>> {
        let inner = self.inner.lock();
        Ok(inner
            .leases
            .iter()
            .take_while(|&&(at, _)| at <= now)
            .take(limit)
            .filter_map(|&(_, seq)| {
                inner
                    .entries
                    .get(seq as usize)
                    .and_then(|e| e.as_deref())
                    .map(|e| e.task.clone())
            })
            .collect())
    }

    fn purge(&self, now: Millis, retention: &Retention) -> Result<usize> {
        let mut inner = self.inner.lock();
        let mut purged = 0;
        for (ok, keep) in [(true, retention.completed_ms), (false, retention.failed_ms)] {
            let Some(keep) = keep else {
                continue;
            };
            loop {
                let queue = if ok { &inner.ended_ok } else { &inner.ended_ko };
                let Some(&(ended, seq)) = queue.front() else {
                    break;
                };
                if ended.saturating_add(keep.min(i64::MAX as u64) as Millis) > now {
                    break;
                }
                if ok {
                    inner.ended_ok.pop_front();
                } else {
                    inner.ended_ko.pop_front();
                }
                let slot = &mut inner.entries[seq as usize];
                if slot.as_ref().is_some_and(|e| e.task.status.is_terminal()) {
                    if let Some(entry) = slot.take() {
                        inner.ids.remove(&entry.task.id);
                        purged += 1;
                    }
                }
            }
        }
        Ok(purged)
    }

    fn next_purge(&self, retention: &Retention) -> Result<Option<Millis>> {
        let inner = self.inner.lock();
        let due = |queue: &VecDeque<(Millis, u64)>, keep: Option<u64>| {
            let keep = keep?;
            let &(ended, _) = queue.front()?;
            Some(ended.saturating_add(keep.min(i64::MAX as u64) as Millis))
        };
        Ok([
            due(&inner.ended_ok, retention.completed_ms),
            due(&inner.ended_ko, retention.failed_ms),
        ]
        .into_iter()
        .flatten()
        .min())
    }

    fn active_count(&self) -> Result<usize> {
        Ok(self.inner.lock().active)
    }
}
