//! The in-memory store: the default, the fastest, and the test double.

use std::cmp::Reverse;
use std::collections::{BTreeSet, HashMap};

use parking_lot::Mutex;

use super::{ClaimRequest, Store};
use crate::error::{EngineError, Result};
use crate::event::Event;
use crate::model::{ListFilter, Millis, Task, TaskStatus};
use crate::state;

/// Priority order of runnable tasks: higher priority, earlier due time, older insertion.
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
    /// Ended.
    None,
}

struct Entry {
    task: Task,
    seq: u64,
    slot: Slot,
    events: Vec<Event>,
}

#[derive(Default)]
struct Inner {
    entries: HashMap<String, Entry>,
    by_seq: BTreeSet<(u64, String)>,
    ready: BTreeSet<(ReadyKey, String)>,
    timers: BTreeSet<(Millis, u64, String)>,
    leases: BTreeSet<(Millis, u64, String)>,
    next_seq: u64,
    active: usize,
}

fn slot_of(task: &Task, seq: u64) -> Slot {
    match task.status {
        TaskStatus::Pending => Slot::Ready((Reverse(task.priority), task.due_at(), seq)),
        TaskStatus::Scheduled | TaskStatus::WaitingRetry => Slot::Timer(task.due_at(), seq),
        TaskStatus::Running => Slot::Lease(task.lease_expiry.unwrap_or(Millis::MAX), seq),
        _ => Slot::None,
    }
}

impl Inner {
    fn unplace(&mut self, id: &str, slot: Slot) {
        match slot {
            Slot::Ready(key) => {
                self.ready.remove(&(key, id.to_owned()));
            }
            Slot::Timer(due, seq) => {
                self.timers.remove(&(due, seq, id.to_owned()));
            }
            Slot::Lease(at, seq) => {
                self.leases.remove(&(at, seq, id.to_owned()));
            }
            Slot::None => {}
        }
    }

    fn place(&mut self, id: &str, slot: Slot) {
        match slot {
            Slot::Ready(key) => {
                self.ready.insert((key, id.to_owned()));
            }
            Slot::Timer(due, seq) => {
                self.timers.insert((due, seq, id.to_owned()));
            }
            Slot::Lease(at, seq) => {
                self.leases.insert((at, seq, id.to_owned()));
            }
            Slot::None => {}
        }
    }

    /// Moves due timers to the ready set; they keep their status until claimed.
    fn promote(&mut self, now: Millis) {
        while let Some((due, seq, id)) = self.timers.first().cloned() {
            if due > now {
                break;
            }
            self.timers.pop_first();
            if let Some(entry) = self.entries.get_mut(&id) {
                let key = (Reverse(entry.task.priority), due, seq);
                entry.slot = Slot::Ready(key);
                self.ready.insert((key, id));
            }
        }
    }

    fn store(&mut self, task: Task, events: &[Event]) {
        let id = task.id.clone();
        let Some(entry) = self.entries.get_mut(&id) else {
            return;
        };
        let was_active = !entry.task.status.is_terminal();
        let old_slot = entry.slot;
        let new_slot = slot_of(&task, entry.seq);
        entry.task = task;
        entry.slot = new_slot;
        entry.events.extend_from_slice(events);
        let is_active = !entry.task.status.is_terminal();
        if old_slot != new_slot {
            self.unplace(&id, old_slot);
            self.place(&id, new_slot);
        }
        match (was_active, is_active) {
            (true, false) => self.active -= 1,
            (false, true) => self.active += 1,
            _ => {}
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
            .field("tasks", &self.inner.lock().entries.len())
            .finish()
    }
}

impl Store for MemoryStore {
    fn insert(&self, tasks: &[Task], events: &[Event]) -> Result<()> {
        let mut inner = self.inner.lock();
        if let Some(dup) = tasks.iter().find(|t| inner.entries.contains_key(&t.id)) {
            return Err(EngineError::Invalid(format!(
                "task id {} already exists",
                dup.id
            )));
        }
        let mut by_task: HashMap<&str, Vec<Event>> = HashMap::new();
        for event in events {
            by_task
                .entry(&event.task_id)
                .or_default()
                .push(event.clone());
        }
        for task in tasks {
            let seq = inner.next_seq;
            inner.next_seq += 1;
            let slot = slot_of(task, seq);
            inner.place(&task.id, slot);
            inner.by_seq.insert((seq, task.id.clone()));
            if !task.status.is_terminal() {
                inner.active += 1;
            }
            let events = by_task.remove(task.id.as_str()).unwrap_or_default();
            inner.entries.insert(
                task.id.clone(),
                Entry {
                    task: task.clone(),
                    seq,
                    slot,
                    events,
                },
            );
        }
        Ok(())
    }

    fn get(&self, id: &str) -> Result<Option<Task>> {
        Ok(self.inner.lock().entries.get(id).map(|e| e.task.clone()))
    }

    fn list(&self, filter: &ListFilter) -> Result<Vec<Task>> {
        let inner = self.inner.lock();
        let matches = inner
            .by_seq
            .iter()
            .filter_map(|(_, id)| inner.entries.get(id))
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
            .entries
            .get(task_id)
            .ok_or_else(|| EngineError::NotFound(task_id.to_owned()))?;
        Ok(entry.events.clone())
    }

    fn update(&self, task: &Task, events: &[Event]) -> Result<bool> {
        let mut inner = self.inner.lock();
        let Some(entry) = inner.entries.get(&task.id) else {
            return Err(EngineError::NotFound(task.id.clone()));
        };
        if entry.task.version + 1 != task.version {
            return Ok(false);
        }
        inner.store(task.clone(), events);
        Ok(true)
    }

    fn append_events(&self, events: &[Event]) -> Result<()> {
        let mut inner = self.inner.lock();
        for event in events {
            let entry = inner
                .entries
                .get_mut(&event.task_id)
                .ok_or_else(|| EngineError::NotFound(event.task_id.clone()))?;
            entry.events.push(event.clone());
        }
        Ok(())
    }

    fn claim(&self, request: &ClaimRequest<'_>) -> Result<Vec<Task>> {
        let mut inner = self.inner.lock();
        inner.promote(request.now);
        let mut picked = Vec::new();
        for (_, id) in inner.ready.iter() {
            if picked.len() >= request.limit {
                break;
            }
            if let Some(entry) = inner.entries.get(id) {
                if (request.can_run)(&entry.task) {
                    picked.push(id.clone());
                }
            }
        }
        let mut claimed = Vec::with_capacity(picked.len());
        for id in picked {
            let Some(entry) = inner.entries.get(&id) else {
                continue;
            };
            let change = state::claim(&entry.task, request.owner, request.now, request.lease_ms)
                .map_err(|e| EngineError::Internal(format!("claim of ready task {id}: {e}")))?;
            let mut task = change.task;
            task.version += 1;
            inner.store(task.clone(), &[]);
            claimed.push(task);
        }
        Ok(claimed)
    }

    fn next_due(&self) -> Result<Option<Millis>> {
        Ok(self.inner.lock().timers.first().map(|(due, _, _)| *due))
    }

    fn next_expiry(&self) -> Result<Option<Millis>> {
        Ok(self.inner.lock().leases.first().map(|(at, _, _)| *at))
    }

    fn expired(&self, now: Millis, limit: usize) -> Result<Vec<Task>> {
        let inner = self.inner.lock();
        Ok(inner
            .leases
            .iter()
            .take_while(|(at, _, _)| *at <= now)
            .take(limit)
            .filter_map(|(_, _, id)| inner.entries.get(id).map(|e| e.task.clone()))
            .collect())
    }

    fn active_count(&self) -> Result<usize> {
        Ok(self.inner.lock().active)
    }
}
