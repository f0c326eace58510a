//! Native (Rust) handlers and the context they run with.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Weak};

use serde_json::Value;

use crate::engine::Shared;
use crate::error::{EngineError, Result};
use crate::executor::{JobStep, Outcome};
use crate::model::{Millis, StepSpec, TaskError, TaskId};
use crate::state::{StepPosition, StopReason};

/// How a handler run stops short of an output.
#[derive(Debug, Clone, PartialEq)]
pub enum Interrupt {
    /// The run failed: counts an attempt.
    Fail(TaskError),
    /// Retry under `maxAttempts` (counts an attempt).
    Retry(Option<String>),
    /// Cancel the task (final).
    Cancel(Option<String>),
    /// Run again at `at` (attempts unchanged).
    Reschedule {
        /// When.
        at: Millis,
        /// Why.
        reason: Option<String>,
    },
}

impl From<TaskError> for Interrupt {
    fn from(error: TaskError) -> Self {
        Interrupt::Fail(error)
    }
}

impl From<Interrupt> for Outcome {
    fn from(interrupt: Interrupt) -> Self {
        match interrupt {
            Interrupt::Fail(error) => Outcome::Fail { error },
            Interrupt::Retry(reason) => Outcome::Retry { reason },
            Interrupt::Cancel(reason) => Outcome::Cancel { reason },
            Interrupt::Reschedule { at, reason } => Outcome::Reschedule { at, reason },
        }
    }
}

/// What a handler returns.
pub type HandlerResult = Result<Value, Interrupt>;

/// A task handler written in Rust. It runs on one of the engine's native threads; long
/// handlers should check [`TaskContext::is_aborted`] now and then.
///
/// ```
/// use decaf_tasks_core::{HandlerResult, TaskContext};
/// use serde_json::{json, Value};
///
/// fn double(input: &Value, ctx: &TaskContext) -> HandlerResult {
///     ctx.log("info", "doubling", None);
///     Ok(json!(input.as_i64().unwrap_or(0) * 2))
/// }
/// # let _: &dyn decaf_tasks_core::Handler = &double;
/// ```
pub trait Handler: Send + Sync + 'static {
    /// Runs the task.
    fn run(&self, input: &Value, ctx: &TaskContext) -> HandlerResult;

    /// Runs when [`Handler::run`] failed (returned [`Interrupt::Fail`] or panicked), before
    /// the failure is recorded: a retry, the task's failure, or a `canFail` step recorded
    /// `failed` while its composite goes on ([`TaskContext::step`] tells which step, and
    /// whether it was its last attempt). The default does nothing.
    fn catch(&self, _input: &Value, _error: &TaskError, _ctx: &TaskContext) {}
}

impl<F> Handler for F
where
    F: Fn(&Value, &TaskContext) -> HandlerResult + Send + Sync + 'static,
{
    fn run(&self, input: &Value, ctx: &TaskContext) -> HandlerResult {
        self(input, ctx)
    }
}

const RUNNING: u8 = 0;

/// Shared stop flag of one run.
#[derive(Debug, Default)]
pub(crate) struct StopFlag(AtomicU8);

impl StopFlag {
    pub(crate) fn stop(&self, reason: StopReason) {
        let code = match reason {
            StopReason::Canceled => 1,
            StopReason::LeaseLost => 2,
            StopReason::Shutdown => 3,
            StopReason::Timeout => 4,
        };
        let _ = self
            .0
            .compare_exchange(RUNNING, code, Ordering::AcqRel, Ordering::Acquire);
    }

    fn reason(&self) -> Option<StopReason> {
        match self.0.load(Ordering::Acquire) {
            1 => Some(StopReason::Canceled),
            2 => Some(StopReason::LeaseLost),
            3 => Some(StopReason::Shutdown),
            4 => Some(StopReason::Timeout),
            _ => None,
        }
    }
}

/// The context of one native run: the same capabilities JS handlers get.
pub struct TaskContext {
    pub(crate) engine: Weak<Shared>,
    pub(crate) task_id: TaskId,
    pub(crate) classification: String,
    pub(crate) token: u64,
    pub(crate) attempt: u32,
    pub(crate) result_cache: Value,
    pub(crate) step: Option<JobStep>,
    pub(crate) stop: Arc<StopFlag>,
}

impl std::fmt::Debug for TaskContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskContext")
            .field("task_id", &self.task_id)
            .field("token", &self.token)
            .field("attempt", &self.attempt)
            .finish()
    }
}

impl TaskContext {
    /// The task id.
    pub fn task_id(&self) -> &str {
        &self.task_id
    }

    /// The classification being run.
    pub fn classification(&self) -> &str {
        &self.classification
    }

    /// 1-based number of this run.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// Outputs of earlier composite steps, by classification and by
    /// `"<taskId>:step:<i>"`.
    pub fn result_cache(&self) -> &Value {
        &self.result_cache
    }

    /// The step this run is, inside a composite task.
    pub fn step(&self) -> Option<&JobStep> {
        self.step.as_ref()
    }

    /// Adds steps to the running composite (right after the current step, after those
    /// this run added there already, or at the end). Returns the index of the first added
    /// step. Fails outside a composite step, or once the run is no longer current.
    pub fn schedule_steps(&self, steps: Vec<StepSpec>, position: StepPosition) -> Result<u32> {
        if self.step.is_none() {
            return Err(EngineError::Invalid(
                "schedule_steps works only inside a step of a composite task".into(),
            ));
        }
        let engine = self.engine.upgrade().ok_or(EngineError::Shutdown)?;
        engine
            .schedule_steps(&self.task_id, self.token, steps, position)?
            .map(|(index, _)| index)
            .ok_or_else(|| EngineError::Invalid("the run is no longer current".into()))
    }

    /// Whether the run was told to stop (cancel, lease lost, shutdown).
    pub fn is_aborted(&self) -> bool {
        self.stop.reason().is_some()
    }

    /// Why the run was told to stop.
    pub fn abort_reason(&self) -> Option<StopReason> {
        self.stop.reason()
    }

    /// Writes a log line (a `log` event, kept in the task's log tail). Returns `false` once
    /// the run is no longer current.
    pub fn log(&self, level: &str, msg: &str, meta: Option<Value>) -> bool {
        self.engine.upgrade().is_some_and(|e| {
            e.log(&self.task_id, self.token, level, msg, meta, None)
                .unwrap_or(false)
        })
    }

    /// Emits a `progress` event. Returns `false` once the run is no longer current.
    pub fn progress(&self, data: Value) -> bool {
        self.engine
            .upgrade()
            .is_some_and(|e| e.progress(&self.task_id, self.token, data).unwrap_or(false))
    }

    /// Renews the lease (the engine also renews native runs by itself).
    pub fn heartbeat(&self) -> bool {
        self.engine
            .upgrade()
            .is_some_and(|e| e.heartbeat(&self.task_id, self.token).unwrap_or(false))
    }

    /// `Err(ctx.retry(..))` ends the run asking for a retry.
    pub fn retry(&self, reason: impl Into<Option<String>>) -> Interrupt {
        Interrupt::Retry(reason.into())
    }

    /// `Err(ctx.cancel(..))` cancels the task.
    pub fn cancel(&self, reason: impl Into<Option<String>>) -> Interrupt {
        Interrupt::Cancel(reason.into())
    }

    /// `Err(ctx.reschedule(at, ..))` runs the task again at `at`.
    pub fn reschedule(&self, at: Millis, reason: impl Into<Option<String>>) -> Interrupt {
        Interrupt::Reschedule {
            at,
            reason: reason.into(),
        }
    }
}
