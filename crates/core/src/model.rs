//! The task model: records, specs and their parts. Everything here is plain data that
//! serializes to the camelCase JSON the bindings exchange; times are milliseconds since
//! the Unix epoch.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Milliseconds since the Unix epoch.
pub type Millis = i64;

/// Reads an optional JSON value so that a present `null` stays `Some(Value::Null)` (serde
/// reads it as `None` otherwise): a record read back from a store serializes as written.
pub(crate) fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

/// A task id: shared, cheap to clone.
pub type TaskId = std::sync::Arc<str>;

/// The lifecycle status of a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum TaskStatus {
    /// Runnable now.
    Pending,
    /// Runnable from `scheduled_to` on.
    Scheduled,
    /// Leased by a runner.
    Running,
    /// Failed an attempt; runnable again from `next_run_at` on.
    WaitingRetry,
    /// Ended with an output.
    Succeeded,
    /// Ended after its last attempt failed.
    Failed,
    /// Ended by a cancel; final.
    Canceled,
}

impl TaskStatus {
    /// Whether the status is final.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            TaskStatus::Succeeded | TaskStatus::Failed | TaskStatus::Canceled
        )
    }

    /// Whether a task in this status waits for a time (`scheduled`, `waiting_retry`).
    pub fn is_timed(self) -> bool {
        matches!(self, TaskStatus::Scheduled | TaskStatus::WaitingRetry)
    }

    /// The status as it is spelled in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskStatus::Pending => "pending",
            TaskStatus::Scheduled => "scheduled",
            TaskStatus::Running => "running",
            TaskStatus::WaitingRetry => "waiting_retry",
            TaskStatus::Succeeded => "succeeded",
            TaskStatus::Failed => "failed",
            TaskStatus::Canceled => "canceled",
        }
    }
}

/// Whether a task runs one handler or a list of steps.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Atomicity {
    /// One handler run.
    #[default]
    Atomic,
    /// A list of steps, each run by the handler of its classification.
    Composite,
}

/// How the delay before a retry grows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BackoffStrategy {
    /// `min(base · 2^(attempt−1), max)`.
    #[default]
    Exponential,
    /// `min(base, max)`.
    Fixed,
}

/// Randomisation applied to a retry delay.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Jitter {
    /// The delay as computed.
    None,
    /// Uniform in `[0, delay)`.
    #[default]
    Full,
}

/// Retry delay policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Backoff {
    /// Growth strategy.
    pub strategy: BackoffStrategy,
    /// Base delay in ms.
    pub base_ms: u64,
    /// Upper bound of the delay in ms.
    pub max_ms: u64,
    /// Randomisation.
    pub jitter: Jitter,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            strategy: BackoffStrategy::Exponential,
            base_ms: 1000,
            max_ms: 60_000,
            jitter: Jitter::Full,
        }
    }
}

/// The error recorded on a failed attempt or a canceled task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskError {
    /// Human readable message.
    pub message: String,
    /// Stack trace of the handler error, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stack: Option<String>,
    /// A string or number code (cancel uses `400`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[serde(deserialize_with = "present")]
    pub code: Option<Value>,
    /// Any JSON the handler attached.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[serde(deserialize_with = "present")]
    pub details: Option<Value>,
}

impl TaskError {
    /// An error with just a message.
    pub fn new(message: impl Into<String>) -> Self {
        TaskError {
            message: message.into(),
            stack: None,
            code: None,
            details: None,
        }
    }

    /// Sets the code.
    pub fn with_code(mut self, code: impl Into<Value>) -> Self {
        self.code = Some(code.into());
        self
    }
}

/// One step of a composite task, as pushed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StepSpec {
    /// Classification whose handler runs the step.
    pub classification: String,
    /// Optional display name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Step input (JSON).
    #[serde(default)]
    pub input: Value,
    /// Lock key of the step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lock: Option<String>,
    /// Dependencies of the step.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<String>,
    /// Whether the composite continues when this step fails.
    #[serde(default)]
    pub can_fail: bool,
    /// Attempts of the step itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
    /// Backoff of the step itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff: Option<Backoff>,
}

/// The recorded result of one composite step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StepResult {
    /// `succeeded` or `failed`.
    pub status: TaskStatus,
    /// Output of the step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[serde(deserialize_with = "present")]
    pub output: Option<Value>,
    /// Error of the step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<TaskError>,
    /// Attempts the step took.
    pub attempt: u32,
}

/// One log line written by a handler.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogEntry {
    /// When it was written.
    pub ts: Millis,
    /// `debug`, `info`, `warn` or `error` (or a pipe's own level name).
    pub level: String,
    /// The message.
    pub msg: String,
    /// Structured data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[serde(deserialize_with = "present")]
    pub meta: Option<Value>,
    /// Composite step index.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<u32>,
}

/// What a producer pushes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TaskSpec {
    /// Which handler runs it.
    pub classification: String,
    /// Input (JSON).
    #[serde(default)]
    pub input: Value,
    /// Optional display name.
    #[serde(default)]
    pub name: Option<String>,
    /// Attempts before the task fails (default 1).
    #[serde(default)]
    pub max_attempts: Option<u32>,
    /// Retry delay policy.
    #[serde(default)]
    pub backoff: Option<Backoff>,
    /// Higher runs first (default 0).
    #[serde(default)]
    pub priority: Option<i32>,
    /// Not before this time.
    #[serde(default)]
    pub scheduled_to: Option<Millis>,
    /// Lock key.
    #[serde(default)]
    pub lock: Option<String>,
    /// Ids this task waits for.
    #[serde(default)]
    pub dependencies: Option<Vec<String>>,
    /// Atomic (default) or composite.
    #[serde(default)]
    pub atomicity: Option<Atomicity>,
    /// Steps of a composite task.
    #[serde(default)]
    pub steps: Option<Vec<StepSpec>>,
    /// Longest a run may take before it counts as failed (`E_TIMEOUT`).
    #[serde(default)]
    pub timeout_ms: Option<u64>,
}

impl TaskSpec {
    /// A spec with a classification and an input, everything else default.
    pub fn new(classification: impl Into<String>, input: Value) -> Self {
        TaskSpec {
            classification: classification.into(),
            input,
            name: None,
            max_attempts: None,
            backoff: None,
            priority: None,
            scheduled_to: None,
            lock: None,
            dependencies: None,
            atomicity: None,
            steps: None,
            timeout_ms: None,
        }
    }
}

/// A task record as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Task {
    /// Unique id (UUID v7, so ids sort by creation).
    pub id: TaskId,
    /// Which handler runs it.
    pub classification: String,
    /// Display name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Atomic or composite.
    pub atomicity: Atomicity,
    /// Current status.
    pub status: TaskStatus,
    /// Input (JSON), shared with the runs that read it.
    pub input: std::sync::Arc<Value>,
    /// Output once succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[serde(deserialize_with = "present")]
    pub output: Option<Value>,
    /// Last error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<TaskError>,
    /// Failed attempts so far.
    pub attempt: u32,
    /// Attempts allowed.
    pub max_attempts: u32,
    /// Retry delay policy.
    pub backoff: Backoff,
    /// Higher runs first.
    pub priority: i32,
    /// When a `waiting_retry` task may run again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_run_at: Option<Millis>,
    /// When a `scheduled` task may run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduled_to: Option<Millis>,
    /// Ids this task waits for.
    pub dependencies: Vec<String>,
    /// Lock key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lock: Option<String>,
    /// Longest a run may take.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// Who holds the lease.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_owner: Option<String>,
    /// When the lease ends unless renewed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_expiry: Option<Millis>,
    /// Fencing token: incremented by every claim.
    pub lease_token: u64,
    /// Steps of a composite task.
    pub steps: Vec<StepSpec>,
    /// Index of the running step of a composite task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_step: Option<u32>,
    /// Results of the steps run so far (index = step index).
    pub step_results: Vec<StepResult>,
    /// Failed runs of the current step since it started (its in-place retries).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub step_attempt: u32,
    /// Steps the current step's run inserted right after itself (`afterCurrent`), so that
    /// several insertions keep their call order.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub steps_inserted: u32,
    /// Steps the current step's run appended at the end (`atEnd`). With
    /// `steps_inserted`, what a run that did not succeed planned: its retry withdraws them.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub steps_appended: u32,
    /// The last log lines (bounded by the engine's `log_tail_max`).
    pub log_tail: Vec<LogEntry>,
    /// Creation time.
    pub created_at: Millis,
    /// Last change.
    pub updated_at: Millis,
    /// Optimistic concurrency version, incremented by every stored change.
    pub version: u64,
    /// Sequence number of the task's last event: whichever engine writes its next events
    /// numbers them after it, so a task's events keep increasing across processes.
    #[serde(default)]
    pub last_seq: u64,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl Task {
    /// Whether the task is a composite (a list of steps).
    pub fn is_composite(&self) -> bool {
        self.atomicity == Atomicity::Composite
    }

    /// The step a composite runs next (or now); `None` for atomic tasks.
    pub fn step(&self) -> Option<&StepSpec> {
        if !self.is_composite() {
            return None;
        }
        self.steps.get(self.current_step.unwrap_or(0) as usize)
    }

    /// A composite between two runs of its steps: `running` for its users, but holding
    /// no lease, and claimable again (for its next step, or a retry of the current one)
    /// from [`Task::due_at`] on.
    pub fn is_between_steps(&self) -> bool {
        self.status == TaskStatus::Running && self.lease_expiry.is_none()
    }

    /// Whether a lease is held on the task (a run is in flight).
    pub fn is_leased(&self) -> bool {
        self.status == TaskStatus::Running && self.lease_expiry.is_some()
    }

    /// The classification whose handler runs the task's next run: the current step's for
    /// a composite. Stores queue tasks by it.
    pub fn run_classification(&self) -> &str {
        self.step()
            .map_or(&self.classification, |s| &s.classification)
    }

    /// The lock keys a run of the task holds: the task's, and the current step's.
    pub fn run_locks(&self) -> impl Iterator<Item = &str> {
        let step = self.step().and_then(|s| s.lock.as_deref());
        self.lock
            .as_deref()
            .into_iter()
            .chain(step.filter(|s| Some(*s) != self.lock.as_deref()))
    }

    /// The lock keys the task holds as it stands. A run in flight holds its
    /// [`Task::run_locks`]; a composite also holds its own `lock` between its steps, from
    /// the claim of its first step until it leaves `running` (it ended, waits for a
    /// task-level retry, or was released), so no other task with that key runs in the
    /// middle of it. A step's own lock is held only while that step runs.
    pub fn held_locks(&self) -> Vec<&str> {
        if self.is_leased() {
            self.run_locks().collect()
        } else if self.is_between_steps() {
            self.lock.as_deref().into_iter().collect()
        } else {
            Vec::new()
        }
    }

    /// What the task waits for before its next run: its own dependencies until it first
    /// runs, then (for a composite) those of the current step.
    pub fn run_dependencies(&self) -> impl Iterator<Item = &str> {
        let started = self.attempt > 0
            || self.current_step.unwrap_or(0) > 0
            || self.step_attempt > 0
            || self.lease_token > 0;
        let own = (!started).then_some(&self.dependencies);
        own.into_iter()
            .flatten()
            .chain(self.step().into_iter().flat_map(|s| &s.depends_on))
            .map(String::as_str)
    }

    /// When the task may next run: `scheduled_to`, `next_run_at` or its creation time.
    pub fn due_at(&self) -> Millis {
        match self.status {
            TaskStatus::Scheduled => self.scheduled_to.unwrap_or(self.created_at),
            TaskStatus::WaitingRetry => self.next_run_at.unwrap_or(self.updated_at),
            TaskStatus::Running => self.next_run_at.unwrap_or(self.updated_at),
            _ => self.scheduled_to.unwrap_or(self.created_at),
        }
    }

    /// Whether `token` is the lease token of the current run.
    pub fn is_run(&self, token: u64) -> bool {
        self.is_leased() && self.lease_token == token
    }
}

/// Filter of [`crate::Store::list`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct ListFilter {
    /// Only tasks with this status.
    pub status: Option<TaskStatus>,
    /// Only tasks of this classification.
    pub classification: Option<String>,
    /// At most this many.
    pub limit: Option<usize>,
    /// Skip this many.
    pub offset: Option<usize>,
}
