//! Executors run handlers somewhere else than the dispatcher: on the engine's native
//! threads, on a JS thread, in a worker. The engine hands each claimed task to one of them.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use std::sync::Arc;

use crate::model::{Millis, TaskError, TaskId};
use crate::state::StopReason;

/// Identifies an executor within its engine.
pub type ExecutorId = u64;

/// One run of a task, as handed to an executor.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Job {
    /// The task.
    pub task_id: TaskId,
    /// The lease token of this run: pass it back with every report.
    pub token: u64,
    /// The handler to run.
    pub classification: String,
    /// Display name of the task.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// 1-based number of this run (failed attempts so far + 1).
    pub attempt: u32,
    /// Task input.
    pub input: Arc<Value>,
    /// Outputs of earlier composite steps (an object; empty for atomic tasks).
    pub result_cache: Value,
    /// The step this run is, for a composite task.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step: Option<JobStep>,
}

/// Which step of a composite a [`Job`] runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct JobStep {
    /// Index of the step (0-based).
    pub index: u32,
    /// Steps in the composite now.
    pub total: u32,
    /// Name of the step.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// 1-based number of this run of the step (its failed runs so far + 1).
    pub attempt: u32,
    /// Runs the step may take before it fails.
    pub max_attempts: u32,
    /// Whether the composite continues when the step fails.
    pub can_fail: bool,
    /// Classification of the composite task.
    pub task_classification: String,
}

impl JobStep {
    /// Whether a failure of this run fails the step for good (no in-place retry left):
    /// then a `canFail` step's `catch` hook runs.
    pub fn is_last_attempt(&self) -> bool {
        self.attempt >= self.max_attempts
    }
}

/// What a handler's run came to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Outcome {
    /// Returned an output.
    Succeed {
        /// The output (JSON).
        #[serde(default)]
        output: Value,
    },
    /// Threw or returned an error.
    Fail {
        /// The error.
        error: TaskError,
    },
    /// Asked for a retry (`ctx.retry`).
    Retry {
        /// Why.
        #[serde(default)]
        reason: Option<String>,
    },
    /// Canceled its own task (`ctx.cancel`).
    Cancel {
        /// Why.
        #[serde(default)]
        reason: Option<String>,
    },
    /// Moved its task to a later time (`ctx.reschedule`).
    Reschedule {
        /// When it runs again.
        at: Millis,
        /// Why.
        #[serde(default)]
        reason: Option<String>,
    },
}

/// Something that runs jobs. Both methods must return quickly: queue the work and run it
/// elsewhere, then report through the engine ([`crate::Engine::report`]).
pub trait Executor: Send + Sync {
    /// Starts a run.
    fn execute(&self, job: Job);

    /// Asks the run `token` of `task_id` to stop (its result will be dropped anyway).
    fn abort(&self, task_id: &str, token: u64, reason: StopReason);
}
