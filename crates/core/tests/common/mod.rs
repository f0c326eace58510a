//! Test fixtures: a sink that records events and lets tests wait on them, and an executor
//! that hands jobs to the test instead of running them.

#![allow(dead_code, unreachable_pub)]

#[cfg(feature = "postgres")]
pub mod pg;

use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use decaf_tasks_core::{
    Engine, EngineConfig, Event, EventSink, Executor, ExecutorId, Job, MemoryStore, StopReason,
    Store, TaskStatus,
};
use parking_lot::{Condvar, Mutex};

pub const WAIT: Duration = Duration::from_secs(10);

#[derive(Default)]
pub struct RecordingSink {
    events: Mutex<Vec<Event>>,
    changed: Condvar,
    pub stuck: Mutex<Vec<ExecutorId>>,
}

impl EventSink for RecordingSink {
    fn deliver(&self, events: Vec<Event>) {
        self.events.lock().extend(events);
        self.changed.notify_all();
    }

    fn executor_stuck(&self, executor: ExecutorId) {
        self.stuck.lock().push(executor);
        self.changed.notify_all();
    }
}

impl RecordingSink {
    pub fn events(&self) -> Vec<Event> {
        self.events.lock().clone()
    }

    /// Waits until `done` holds for the recorded events.
    pub fn wait_until(&self, done: impl Fn(&[Event]) -> bool) -> Vec<Event> {
        let deadline = Instant::now() + WAIT;
        let mut events = self.events.lock();
        while !done(&events) {
            assert!(
                !self.changed.wait_until(&mut events, deadline).timed_out(),
                "timed out waiting; events so far: {:#?}",
                events
                    .iter()
                    .map(|e| (&e.task_id, e.classification, &e.payload))
                    .collect::<Vec<_>>()
            );
        }
        events.clone()
    }

    /// Waits until an executor is reported stuck.
    pub fn wait_stuck(&self) -> Vec<ExecutorId> {
        let deadline = Instant::now() + WAIT;
        let mut events = self.events.lock();
        loop {
            let stuck = self.stuck.lock().clone();
            if !stuck.is_empty() {
                return stuck;
            }
            assert!(
                !self.changed.wait_until(&mut events, deadline).timed_out(),
                "no executor reported stuck"
            );
        }
    }

    /// Waits for a status event `status` of `task_id`.
    pub fn wait_status(&self, task_id: &str, status: TaskStatus) -> Vec<Event> {
        self.wait_until(|events| {
            events
                .iter()
                .any(|e| &*e.task_id == task_id && e.status() == Some(status))
        })
    }

    /// The statuses of a task, in order.
    pub fn statuses(&self, task_id: &str) -> Vec<TaskStatus> {
        self.events()
            .iter()
            .filter(|e| &*e.task_id == task_id)
            .filter_map(Event::status)
            .collect()
    }
}

/// Jobs go to the test through a channel; aborts are recorded.
pub struct ManualExecutor {
    jobs: Sender<Job>,
    pub aborts: Mutex<Vec<(String, u64, StopReason)>>,
}

impl ManualExecutor {
    pub fn new() -> (Arc<Self>, Receiver<Job>) {
        let (tx, rx) = crossbeam_channel::unbounded();
        (
            Arc::new(ManualExecutor {
                jobs: tx,
                aborts: Mutex::new(Vec::new()),
            }),
            rx,
        )
    }
}

impl Executor for ManualExecutor {
    fn execute(&self, job: Job) {
        let _ = self.jobs.send(job);
    }

    fn abort(&self, task_id: &str, token: u64, reason: StopReason) {
        self.aborts.lock().push((task_id.to_owned(), token, reason));
    }
}

pub fn config(concurrency: usize, lease_ms: u64) -> EngineConfig {
    EngineConfig {
        concurrency,
        lease_ms,
        native_threads: 2,
        owner: "test".into(),
        ..EngineConfig::default()
    }
}

pub fn engine(concurrency: usize, lease_ms: u64) -> (Engine, Arc<RecordingSink>) {
    engine_with(config(concurrency, lease_ms))
}

pub fn engine_with(config: EngineConfig) -> (Engine, Arc<RecordingSink>) {
    engine_on(config, Arc::new(MemoryStore::new()))
}

/// An engine over `store`.
pub fn engine_on(config: EngineConfig, store: Arc<dyn Store>) -> (Engine, Arc<RecordingSink>) {
    let sink = Arc::new(RecordingSink::default());
    let engine =
        Engine::new(config, store, Arc::clone(&sink) as Arc<dyn EventSink>).expect("engine starts");
    (engine, sink)
}

/// A fresh store of each kind, for suites that run on all of them.
pub fn memory_store() -> Arc<dyn Store> {
    Arc::new(MemoryStore::new())
}

/// A fresh SQLite store in a temporary file (deleted when the test process ends).
pub fn sqlite_store() -> Arc<dyn Store> {
    let dir = tempfile::tempdir().expect("a temp dir");
    let store = decaf_tasks_core::SqliteStore::open(dir.path().join("tasks.db")).expect("opens");
    // The directory must outlive the store: leak it (a test process is short-lived).
    std::mem::forget(dir);
    Arc::new(store)
}

/// A fresh PostgreSQL store on a schema of its own, dropped by the test's
/// [`pg::Cleanup`].
#[cfg(feature = "postgres")]
pub fn postgres_store() -> Arc<dyn Store> {
    Arc::new(pg::scoped_store("test"))
}

pub fn recv(rx: &Receiver<Job>) -> Job {
    rx.recv_timeout(WAIT).expect("a job arrives")
}

/// An engine with one manual executor serving `"js"`.
pub fn js_engine(
    concurrency: usize,
    lease_ms: u64,
) -> (
    Engine,
    Arc<RecordingSink>,
    Arc<ManualExecutor>,
    Receiver<Job>,
) {
    let (engine, sink) = engine(concurrency, lease_ms);
    let (exec, jobs) = ManualExecutor::new();
    engine.add_executor(exec.clone(), &["js".into()]);
    (engine, sink, exec, jobs)
}
