//! # decaf-tasks-core
//!
//! The engine of decaf-tasks, free of any JS binding: the task model and its state
//! machine, retry backoff, leases with fencing tokens, an event-driven dispatcher, executors
//! (a native thread pool for Rust handlers; bindings add their own), ordered events and the
//! [`Store`] trait with an in-memory implementation, (feature `sqlite`, on by default) a
//! durable SQLite one and (feature `postgres`, on by default) a PostgreSQL one that
//! several engines share.
//!
//! Embed it to run Rust handlers: create an [`Engine`] over a [`Store`] and an
//! [`EventSink`], [`Engine::register_native`] your [`Handler`]s, and [`Engine::push`] tasks.

mod backoff;
pub mod deps;
mod engine;
mod error;
mod event;
mod executor;
mod handler;
mod model;
mod spec;
pub mod state;
mod store;

pub use backoff::delay_ms;
pub use engine::{now_ms, Engine, EngineConfig, ShutdownReport, MIN_LEASE_MS, NATIVE_PREFIX};
pub use error::{EngineError, Result};
pub use event::{Event, EventClass, EventDraft, EventSink, NullSink, Payload, StatusPayload};
pub use executor::{Executor, ExecutorId, Job, JobStep, Outcome};
pub use handler::{Handler, HandlerResult, Interrupt, TaskContext};
pub use model::{
    Atomicity, Backoff, BackoffStrategy, Jitter, ListFilter, LogEntry, Millis, StepResult,
    StepSpec, Task, TaskError, TaskId, TaskSpec, TaskStatus,
};
pub use spec::{validate as validate_spec, MAX_KEY_LEN};
pub use state::{Change, Refused, StepPosition, StopReason};
#[cfg(feature = "postgres")]
pub use store::PostgresStore;
#[cfg(feature = "sqlite")]
pub use store::SqliteStore;
pub use store::{
    Applied, ClaimBatch, ClaimRequest, Claimed, DependencyFailure, MemoryStore, Numbering,
    Retention, Store, Transition,
};
