//! Where tasks and their events live. One trait, several implementations; the engine
//! only talks to [`Store`].

mod memory;

pub use memory::MemoryStore;

use crate::error::Result;
use crate::event::Event;
use crate::model::{ListFilter, Millis, Task};

/// What a claim asks the store for.
pub struct ClaimRequest<'a> {
    /// At most this many tasks.
    pub limit: usize,
    /// The current time: only tasks due at or before it.
    pub now: Millis,
    /// The lease owner written on claimed tasks.
    pub owner: &'a str,
    /// Lease length.
    pub lease_ms: u64,
    /// Whether this engine can run the task (it has a handler for its classification).
    pub can_run: &'a dyn Fn(&Task) -> bool,
}

/// Storage of tasks and events.
///
/// Every method is atomic. Updates are optimistic: [`Store::update`] writes only if the
/// stored version is still the one the caller read, so two engines (or two threads) cannot
/// overwrite each other's transitions.
pub trait Store: Send + Sync {
    /// Stores new tasks (version 0) and their creation events, all or nothing.
    fn insert(&self, tasks: &[Task], events: &[Event]) -> Result<()>;

    /// One task.
    fn get(&self, id: &str) -> Result<Option<Task>>;

    /// Tasks matching `filter`, oldest first.
    fn list(&self, filter: &ListFilter) -> Result<Vec<Task>>;

    /// The persisted events of a task, oldest first.
    fn events(&self, task_id: &str) -> Result<Vec<Event>>;

    /// Replaces the task whose stored version is `task.version - 1` by `task` and appends
    /// `events`. Returns `false` (and changes nothing) when the stored version differs.
    fn update(&self, task: &Task, events: &[Event]) -> Result<bool>;

    /// Appends events that change no record (progress).
    fn append_events(&self, events: &[Event]) -> Result<()>;

    /// Leases up to `limit` claimable tasks, highest priority first, then earliest due
    /// time, then insertion order, skipping tasks `can_run` refuses. The returned records
    /// are already `running` (see [`crate::state::claim`]).
    fn claim(&self, request: &ClaimRequest<'_>) -> Result<Vec<Task>>;

    /// The earliest due time of a scheduled or waiting task not yet due at the last claim.
    fn next_due(&self) -> Result<Option<Millis>>;

    /// The earliest lease expiry of a running task, if any.
    fn next_expiry(&self) -> Result<Option<Millis>>;

    /// Running tasks whose lease expired at or before `now`.
    fn expired(&self, now: Millis, limit: usize) -> Result<Vec<Task>>;

    /// Number of tasks that have not ended.
    fn active_count(&self) -> Result<usize>;

    /// Whether other processes share this store (they may run classifications this
    /// engine does not know).
    fn is_shared(&self) -> bool {
        false
    }
}
