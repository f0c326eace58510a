//! The task state machine. Every transition is a pure function that checks the current
//! record and returns the new record plus the events it causes, or says why it is refused.
//! Nothing else in the engine changes a task's status.

use serde_json::Value;

use crate::backoff;
use crate::event::EventDraft;
use crate::model::{
    Atomicity, LogEntry, Millis, StepResult, StepSpec, Task, TaskError, TaskId, TaskSpec,
    TaskStatus,
};

/// A new record and the events it causes.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    /// The record after the transition.
    pub task: Task,
    /// Events to persist and deliver, in order.
    pub events: Vec<EventDraft>,
}

/// Why a transition did not happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// The token is not the current run's: the run was canceled, released or its lease
    /// was taken over. Its result is dropped.
    #[error("stale lease token")]
    Stale,
    /// The task already ended; nothing changes.
    #[error("task already ended as {0:?}")]
    Ended(TaskStatus),
    /// The transition does not apply to the current status.
    #[error("cannot {action} a task that is {from:?}")]
    Illegal {
        /// Current status.
        from: TaskStatus,
        /// What was attempted.
        action: &'static str,
    },
}

/// Why a running task stops before its handler returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// Canceled by a user.
    Canceled,
    /// Its lease expired or was taken over.
    LeaseLost,
    /// The engine shut down.
    Shutdown,
    /// The run took longer than the task's `timeoutMs`.
    Timeout,
}

impl StopReason {
    /// As spelled in executor messages.
    pub fn as_str(self) -> &'static str {
        match self {
            StopReason::Canceled => "canceled",
            StopReason::LeaseLost => "lease_lost",
            StopReason::Shutdown => "shutdown",
            StopReason::Timeout => "timeout",
        }
    }
}

/// Builds a new record from a validated spec. `scheduled_to` in the future makes it
/// `scheduled`, otherwise `pending`.
pub fn create(spec: TaskSpec, id: TaskId, now: Millis) -> Change {
    let status = match spec.scheduled_to {
        Some(at) if at > now => TaskStatus::Scheduled,
        _ => TaskStatus::Pending,
    };
    let atomicity = spec.atomicity.unwrap_or(Atomicity::Atomic);
    let task = Task {
        id,
        classification: spec.classification,
        name: spec.name,
        atomicity,
        status,
        input: std::sync::Arc::new(spec.input),
        output: None,
        error: None,
        attempt: 0,
        max_attempts: spec.max_attempts.unwrap_or(1),
        backoff: spec.backoff.unwrap_or_default(),
        priority: spec.priority.unwrap_or(0),
        next_run_at: None,
        scheduled_to: spec.scheduled_to,
        dependencies: spec.dependencies.unwrap_or_default(),
        lock: spec.lock,
        timeout_ms: spec.timeout_ms,
        lease_owner: None,
        lease_expiry: None,
        lease_token: 0,
        steps: spec.steps.unwrap_or_default(),
        current_step: (atomicity == Atomicity::Composite).then_some(0),
        step_results: Vec::new(),
        step_attempt: 0,
        steps_inserted: 0,
        steps_appended: 0,
        log_tail: Vec::new(),
        created_at: now,
        updated_at: now,
        version: 0,
        last_seq: 0,
    };
    let events = vec![EventDraft::status(&task)];
    Change { task, events }
}

/// Whether a claim may take the task at `now`.
pub fn is_claimable(task: &Task, now: Millis) -> bool {
    match task.status {
        TaskStatus::Pending => true,
        TaskStatus::Scheduled | TaskStatus::WaitingRetry => task.due_at() <= now,
        TaskStatus::Running => task.is_between_steps() && task.due_at() <= now,
        _ => false,
    }
}

/// Leases a runnable task to `owner` until `now + lease_ms`; the token is incremented.
///
/// Events: the `running` status, unless a composite is only moving on to its next step
/// (it is `running` already); then, for a composite, a progress event
/// `{ currentStep, totalSteps }` announcing the step.
pub fn claim(task: &Task, owner: &str, now: Millis, lease_ms: u64) -> Result<Change, Refused> {
    if task.status.is_terminal() {
        return Err(Refused::Ended(task.status));
    }
    if !is_claimable(task, now) {
        return Err(Refused::Illegal {
            from: task.status,
            action: "claim",
        });
    }
    let mut next = task.clone();
    next.status = TaskStatus::Running;
    next.lease_owner = Some(owner.to_owned());
    next.lease_expiry = Some(now.saturating_add(lease_ms as i64));
    next.lease_token = task.lease_token + 1;
    next.next_run_at = None;
    next.updated_at = now;
    let mut events = Vec::with_capacity(2);
    if !task.is_between_steps() {
        events.push(EventDraft::status(&next));
    }
    if let Some(step) = next.current_step.filter(|_| next.is_composite()) {
        if let Some(update) = withdraw_planned_steps(&mut next) {
            events.push(update);
        }
        events.push(EventDraft::progress(serde_json::json!({
            "currentStep": step,
            "totalSteps": next.steps.len(),
        })));
    }
    Ok(Change { task: next, events })
}

/// A composite's step runs again after a run that did not succeed (an in-place or task
/// retry, a lost lease, a release), or failed for good and may fail (`canFail`): the steps
/// that run added with `ctx.scheduleSteps` are withdrawn, since the new run plans again, or
/// the composite goes on without them (steps added by a step that succeeded stay).
/// Returns the `update` event `{ status: 'update', currentStep, totalSteps, output: {
/// removed } }` announcing it, if there was anything to withdraw.
fn withdraw_planned_steps(next: &mut Task) -> Option<EventDraft> {
    let (after, at_end) = (next.steps_inserted as usize, next.steps_appended as usize);
    next.steps_inserted = 0;
    next.steps_appended = 0;
    if after + at_end == 0 {
        return None;
    }
    let current = next.current_step.unwrap_or(0);
    let len = next.steps.len();
    let first = (current as usize + 1).min(len);
    next.steps.drain(first..(first + after).min(len));
    let keep = next.steps.len().saturating_sub(at_end).max(first);
    next.steps.truncate(keep);
    next.step_results.truncate(next.steps.len());
    let removed = len - next.steps.len();
    Some(EventDraft {
        class: crate::event::EventClass::Update,
        payload: crate::event::Payload::Json(serde_json::json!({
            "status": "update",
            "currentStep": current,
            "totalSteps": next.steps.len(),
            "output": { "removed": removed },
        })),
    })
}

fn running(task: &Task, token: u64) -> Result<Task, Refused> {
    if task.is_run(token) {
        return Ok(task.clone());
    }
    if task.status.is_terminal() {
        return Err(Refused::Ended(task.status));
    }
    Err(Refused::Stale)
}

fn clear_lease(task: &mut Task) {
    task.lease_owner = None;
    task.lease_expiry = None;
}

fn status_change(task: Task) -> Change {
    let events = vec![EventDraft::status(&task)];
    Change { task, events }
}

/// The run ended with `output`.
pub fn succeed(task: &Task, token: u64, output: Value, now: Millis) -> Result<Change, Refused> {
    let mut next = running(task, token)?;
    if next.is_composite() {
        return Ok(step_succeeded(next, output, now));
    }
    next.status = TaskStatus::Succeeded;
    next.output = Some(output);
    next.error = None;
    clear_lease(&mut next);
    next.updated_at = now;
    Ok(status_change(next))
}

/// Counts a failed run: of the current step for a composite (see [`step_failed`]), of the
/// task otherwise (see [`task_failure`]).
fn count_failure(next: Task, error: TaskError, now: Millis, unit: f64) -> Change {
    if next.is_composite() {
        step_failed(next, error, now, unit)
    } else {
        task_failure(next, error, now, unit)
    }
}

/// Counts a failed attempt of the task: `waiting_retry` with a backoff delay while
/// attempts remain, `failed` after the last one. `unit` in `[0, 1)` drives the jitter. A
/// composite resumes at its current step.
fn task_failure(mut next: Task, error: TaskError, now: Millis, unit: f64) -> Change {
    next.step_attempt = 0;
    next.attempt = next.attempt.saturating_add(1);
    next.error = Some(error);
    clear_lease(&mut next);
    next.updated_at = now;
    if next.attempt < next.max_attempts {
        let delay = backoff::delay_ms(&next.backoff, next.attempt, unit);
        next.status = TaskStatus::WaitingRetry;
        next.next_run_at = Some(now.saturating_add(delay.min(i64::MAX as u64) as i64));
    } else {
        next.status = TaskStatus::Failed;
        next.next_run_at = None;
    }
    status_change(next)
}

/// The run failed with `error`.
pub fn fail(
    task: &Task,
    token: u64,
    error: TaskError,
    now: Millis,
    unit: f64,
) -> Result<Change, Refused> {
    let next = running(task, token)?;
    Ok(count_failure(next, error, now, unit))
}

/// The handler asked for a retry (`ctx.retry`): a failed attempt under `max_attempts`.
pub fn retry(
    task: &Task,
    token: u64,
    reason: Option<String>,
    now: Millis,
    unit: f64,
) -> Result<Change, Refused> {
    let next = running(task, token)?;
    let error = TaskError::new(reason.unwrap_or_else(|| "retry requested by the handler".into()))
        .with_code("E_RETRY");
    // A retry asked for inside a step acts on the whole task, not on the step.
    Ok(task_failure(next, error, now, unit))
}

/// The lease of a running task ran out: its runner is presumed dead. Counts as an attempt.
pub fn expire(task: &Task, now: Millis, unit: f64) -> Result<Change, Refused> {
    if !task.is_leased() {
        return Err(Refused::Illegal {
            from: task.status,
            action: "expire",
        });
    }
    if task.lease_expiry.is_some_and(|at| at > now) {
        return Err(Refused::Illegal {
            from: task.status,
            action: "expire a live lease of",
        });
    }
    let owner = task.lease_owner.clone().unwrap_or_default();
    let error = TaskError::new(format!(
        "the lease of task {} held by '{owner}' expired before the run ended",
        task.id
    ))
    .with_code("E_LEASE_EXPIRED");
    Ok(count_failure(task.clone(), error, now, unit))
}

fn cancel_error(task: &Task, reason: Option<String>) -> TaskError {
    let mut error = TaskError::new(format!("Task {} canceled", task.id)).with_code(400);
    if let Some(reason) = reason {
        error.details = Some(serde_json::json!({ "reason": reason }));
    }
    error
}

/// Cancels a task that has not ended. Final. An ended task is refused with
/// [`Refused::Ended`] (callers treat that as "nothing to do").
pub fn cancel(task: &Task, reason: Option<String>, now: Millis) -> Result<Change, Refused> {
    if task.status.is_terminal() {
        return Err(Refused::Ended(task.status));
    }
    let mut next = task.clone();
    next.status = TaskStatus::Canceled;
    next.error = Some(cancel_error(task, reason));
    next.next_run_at = None;
    clear_lease(&mut next);
    next.updated_at = now;
    Ok(status_change(next))
}

/// The handler canceled its own task (`ctx.cancel`).
pub fn cancel_run(
    task: &Task,
    token: u64,
    reason: Option<String>,
    now: Millis,
) -> Result<Change, Refused> {
    running(task, token)?;
    cancel(task, reason, now)
}

/// The handler moved its task to `at` (`ctx.reschedule`): `scheduled`, attempts unchanged.
pub fn reschedule(
    task: &Task,
    token: u64,
    at: Millis,
    reason: Option<String>,
    now: Millis,
) -> Result<Change, Refused> {
    let mut next = running(task, token)?;
    next.status = TaskStatus::Scheduled;
    next.step_attempt = 0;
    next.scheduled_to = Some(at);
    next.next_run_at = None;
    if let Some(reason) = reason {
        next.error = Some(TaskError::new(reason).with_code("E_RESCHEDULED"));
    }
    clear_lease(&mut next);
    next.updated_at = now;
    Ok(status_change(next))
}

/// Gives a running task back (shutdown): `pending` again, attempts unchanged.
pub fn release(task: &Task, token: u64, now: Millis) -> Result<Change, Refused> {
    let mut next = running(task, token)?;
    next.status = TaskStatus::Pending;
    next.scheduled_to = None;
    clear_lease(&mut next);
    next.updated_at = now;
    Ok(status_change(next))
}

/// A dependency of a waiting task ended without succeeding: the task fails, final,
/// without running and without counting an attempt.
pub fn dependency_failed(
    task: &Task,
    dependency: &str,
    dependency_status: TaskStatus,
    now: Millis,
) -> Result<Change, Refused> {
    if task.status.is_terminal() {
        return Err(Refused::Ended(task.status));
    }
    if task.is_leased() {
        return Err(Refused::Illegal {
            from: task.status,
            action: "fail on a dependency",
        });
    }
    let mut next = task.clone();
    next.status = TaskStatus::Failed;
    next.error = Some(TaskError {
        message: format!(
            "dependency {dependency} of task {} ended {}: the task cannot run",
            task.id,
            dependency_status.as_str()
        ),
        stack: None,
        code: Some(Value::from("E_DEPENDENCY_FAILED")),
        details: Some(serde_json::json!({
            "dependency": dependency,
            "status": dependency_status.as_str(),
        })),
    });
    next.next_run_at = None;
    next.updated_at = now;
    Ok(status_change(next))
}

/// Extends the lease of the current run. No event.
pub fn renew(task: &Task, token: u64, now: Millis, lease_ms: u64) -> Result<Change, Refused> {
    let mut next = running(task, token)?;
    next.lease_expiry = Some(now.saturating_add(lease_ms as i64));
    Ok(Change {
        task: next,
        events: Vec::new(),
    })
}

/// A log line of the current run, kept in the last `tail_max` lines of `log_tail`.
pub fn log(
    task: &Task,
    token: u64,
    mut entry: LogEntry,
    tail_max: usize,
) -> Result<Change, Refused> {
    let mut next = running(task, token)?;
    if next.is_composite() {
        entry.step = next.current_step;
    }
    let event = EventDraft::log(entry.clone());
    if tail_max > 0 {
        if next.log_tail.len() >= tail_max {
            let excess = next.log_tail.len() + 1 - tail_max;
            next.log_tail.drain(..excess);
        }
        next.log_tail.push(entry);
    }
    Ok(Change {
        task: next,
        events: vec![event],
    })
}

/// A progress report of the current run. The record does not change.
pub fn progress(task: &Task, token: u64, data: Value) -> Result<Change, Refused> {
    let next = running(task, token)?;
    Ok(Change {
        task: next,
        events: vec![EventDraft::progress(data)],
    })
}

/// Where [`schedule_steps`] inserts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepPosition {
    /// Right after the running step, after the steps its run inserted there already.
    AfterCurrent,
    /// After the last step.
    AtEnd,
}

fn set_step_result(task: &mut Task, index: usize, result: StepResult) {
    if index < task.step_results.len() {
        task.step_results[index] = result;
    } else {
        // Steps run in order, so `index` is the next one.
        task.step_results.push(result);
    }
}

/// The current step's run returned `output`: it is recorded, announced with a progress
/// event `{ currentStep, totalSteps, output }`, and the composite moves on.
fn step_succeeded(mut next: Task, output: Value, now: Millis) -> Change {
    let index = next.current_step.unwrap_or(0);
    let attempt = next.step_attempt + 1;
    let event = EventDraft::progress(serde_json::json!({
        "currentStep": index,
        "totalSteps": next.steps.len(),
        "output": output,
    }));
    set_step_result(
        &mut next,
        index as usize,
        StepResult {
            status: TaskStatus::Succeeded,
            output: Some(output),
            error: None,
            attempt,
        },
    );
    advance(next, vec![event], now)
}

/// Moves a composite past its current step: to the next one (it stays `running`, between
/// steps, claimable at once) or, after the last, to `succeeded` with output
/// `{ stepResults }`.
fn advance(mut next: Task, mut events: Vec<EventDraft>, now: Millis) -> Change {
    clear_lease(&mut next);
    next.updated_at = now;
    next.step_attempt = 0;
    next.steps_inserted = 0;
    next.steps_appended = 0;
    next.next_run_at = None;
    let following = next.current_step.unwrap_or(0) + 1;
    if (following as usize) < next.steps.len() {
        next.current_step = Some(following);
        return Change { task: next, events };
    }
    next.status = TaskStatus::Succeeded;
    next.error = None;
    next.output = Some(serde_json::json!({ "stepResults": next.step_results }));
    events.push(EventDraft::status(&next));
    Change { task: next, events }
}

/// The current step's run failed. While the step has attempts left (its own
/// `maxAttempts`, else the task's), it runs again in place after its backoff (its own, else
/// the task's) and the task's `attempt` does not change; a warning log line says so. When
/// it has none left, it is recorded `failed`; a `canFail` step lets the composite move on,
/// otherwise the task-level retry applies ([`task_failure`]) and a retry resumes here.
fn step_failed(mut next: Task, error: TaskError, now: Millis, unit: f64) -> Change {
    let index = next.current_step.unwrap_or(0);
    let Some(step) = next.steps.get(index as usize) else {
        return task_failure(next, error, now, unit);
    };
    let max_attempts = step.max_attempts.unwrap_or(next.max_attempts);
    let backoff = step.backoff.unwrap_or(next.backoff);
    let can_fail = step.can_fail;
    let classification = step.classification.clone();
    next.step_attempt = next.step_attempt.saturating_add(1);
    if next.step_attempt < max_attempts {
        let delay = backoff::delay_ms(&backoff, next.step_attempt, unit);
        clear_lease(&mut next);
        next.updated_at = now;
        next.next_run_at = Some(now.saturating_add(delay.min(i64::MAX as u64) as i64));
        let line = LogEntry {
            ts: now,
            level: "warn".into(),
            msg: format!(
                "step {index} ({classification}) failed on attempt {} of {max_attempts}: {}; retrying in {delay} ms",
                next.step_attempt, error.message
            ),
            meta: serde_json::to_value(&error).ok(),
            step: Some(index),
        };
        next.error = Some(error);
        return Change {
            task: next,
            events: vec![EventDraft::log(line)],
        };
    }
    let result = StepResult {
        status: TaskStatus::Failed,
        output: None,
        error: Some(error.clone()),
        attempt: next.step_attempt,
    };
    set_step_result(&mut next, index as usize, result);
    if can_fail {
        // The composite goes on without the steps the failed run planned.
        let mut events: Vec<EventDraft> = withdraw_planned_steps(&mut next).into_iter().collect();
        events.push(EventDraft::progress(serde_json::json!({
            "currentStep": index,
            "totalSteps": next.steps.len(),
            "error": error,
        })));
        return advance(next, events, now);
    }
    task_failure(next, error, now, unit)
}

/// The running step of a composite adds `steps` to the plan (`ctx.scheduleSteps`). They are
/// persisted with the task (a later retry keeps them once the step succeeded; a retry of the
/// step itself withdraws them, see [`claim`]) and announced by an `update` event
/// `{ status: 'update', currentStep, totalSteps, output: { added, insertionIndex } }`.
/// Returns the change and the insertion index.
pub fn schedule_steps(
    task: &Task,
    token: u64,
    steps: Vec<StepSpec>,
    position: StepPosition,
    now: Millis,
) -> Result<(Change, u32), Refused> {
    let mut next = running(task, token)?;
    if !next.is_composite() {
        return Err(Refused::Illegal {
            from: task.status,
            action: "schedule steps of an atomic task",
        });
    }
    let current = next.current_step.unwrap_or(0);
    let added = steps.len() as u32;
    let index = match position {
        StepPosition::AfterCurrent => {
            let at = (current + 1 + next.steps_inserted) as usize;
            next.steps_inserted += added;
            at.min(next.steps.len())
        }
        StepPosition::AtEnd => {
            next.steps_appended += added;
            next.steps.len()
        }
    };
    next.steps.splice(index..index, steps);
    next.updated_at = now;
    let event = EventDraft {
        class: crate::event::EventClass::Update,
        payload: crate::event::Payload::Json(serde_json::json!({
            "status": "update",
            "currentStep": current,
            "totalSteps": next.steps.len(),
            "output": { "added": added, "insertionIndex": index },
        })),
    };
    Ok((
        Change {
            task: next,
            events: vec![event],
        },
        index as u32,
    ))
}

/// What the runs of a composite's later steps read in `ctx.resultCache`: the output of
/// every succeeded step before the current one, by classification (the latest wins) and by
/// `"<taskId>:step:<i>"`. Empty for an atomic task.
pub fn result_cache(task: &Task) -> Value {
    let mut cache = serde_json::Map::new();
    if task.is_composite() {
        let done = task.current_step.unwrap_or(0) as usize;
        for (i, result) in task.step_results.iter().enumerate().take(done) {
            let (TaskStatus::Succeeded, Some(output)) = (result.status, &result.output) else {
                continue;
            };
            if let Some(step) = task.steps.get(i) {
                cache.insert(step.classification.clone(), output.clone());
            }
            cache.insert(format!("{}:step:{i}", task.id), output.clone());
        }
    }
    Value::Object(cache)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::EventClass;
    use crate::model::{Backoff, BackoffStrategy, Jitter};
    use serde_json::json;

    fn spec(max_attempts: u32) -> TaskSpec {
        let mut spec = TaskSpec::new("c", json!({"x": 1}));
        spec.max_attempts = Some(max_attempts);
        spec.backoff = Some(Backoff {
            strategy: BackoffStrategy::Fixed,
            base_ms: 100,
            max_ms: 100,
            jitter: Jitter::None,
        });
        spec
    }

    fn claimed(max_attempts: u32) -> Task {
        let t = create(spec(max_attempts), "t1".into(), 0).task;
        claim(&t, "me", 10, 1000).unwrap().task
    }

    fn payload(change: &Change) -> serde_json::Value {
        change.events[0].payload.to_json()
    }

    fn status_of(change: &Change) -> String {
        assert_eq!(change.events[0].class, EventClass::Status);
        payload(change)["status"].as_str().unwrap().to_owned()
    }

    #[test]
    fn create_is_pending_or_scheduled() {
        let c = create(spec(1), "a".into(), 100);
        assert_eq!(c.task.status, TaskStatus::Pending);
        assert_eq!(status_of(&c), "pending");
        let mut s = spec(1);
        s.scheduled_to = Some(500);
        let c = create(s, "b".into(), 100);
        assert_eq!(c.task.status, TaskStatus::Scheduled);
        assert_eq!(payload(&c)["scheduledTo"], json!(500));
        assert!(!is_claimable(&c.task, 499));
        assert!(is_claimable(&c.task, 500));
    }

    #[test]
    fn claim_leases_and_increments_the_token() {
        let t = claimed(1);
        assert_eq!(t.status, TaskStatus::Running);
        assert_eq!(t.lease_token, 1);
        assert_eq!(t.lease_owner.as_deref(), Some("me"));
        assert_eq!(t.lease_expiry, Some(1010));
        assert!(matches!(
            claim(&t, "me", 20, 10),
            Err(Refused::Illegal { .. })
        ));
    }

    #[test]
    fn success_keeps_falsy_outputs_and_the_attempt_count() {
        for output in [json!(0), json!(""), json!(false), json!(null)] {
            let c = succeed(&claimed(1), 1, output.clone(), 20).unwrap();
            assert_eq!(c.task.status, TaskStatus::Succeeded);
            assert_eq!(c.task.attempt, 0);
            assert_eq!(payload(&c)["output"], output);
            assert!(payload(&c).get("output").is_some());
        }
    }

    #[test]
    fn a_stale_token_is_refused() {
        let t = claimed(1);
        assert_eq!(succeed(&t, 2, json!(1), 20), Err(Refused::Stale));
        let done = succeed(&t, 1, json!(1), 20).unwrap().task;
        assert_eq!(
            succeed(&done, 1, json!(2), 30),
            Err(Refused::Ended(TaskStatus::Succeeded))
        );
    }

    #[test]
    fn failures_retry_with_backoff_then_fail() {
        let t = claimed(2);
        let c = fail(&t, 1, TaskError::new("boom"), 20, 0.0).unwrap();
        assert_eq!(c.task.status, TaskStatus::WaitingRetry);
        assert_eq!(c.task.attempt, 1);
        assert_eq!(c.task.next_run_at, Some(120));
        assert_eq!(payload(&c)["nextRunAt"], json!(120));
        assert!(!is_claimable(&c.task, 119));
        let again = claim(&c.task, "me", 120, 1000).unwrap().task;
        assert_eq!(again.lease_token, 2);
        let c = fail(&again, 2, TaskError::new("boom"), 130, 0.0).unwrap();
        assert_eq!(c.task.status, TaskStatus::Failed);
        assert_eq!(c.task.attempt, 2);
        assert_eq!(payload(&c)["error"]["message"], json!("boom"));
    }

    #[test]
    fn retry_respects_max_attempts() {
        let c = retry(&claimed(1), 1, Some("later".into()), 20, 0.0).unwrap();
        assert_eq!(c.task.status, TaskStatus::Failed);
        assert_eq!(c.task.error.unwrap().message, "later");
    }

    #[test]
    fn cancel_is_final_and_idempotent() {
        let t = claimed(3);
        let c = cancel(&t, None, 20).unwrap();
        assert_eq!(c.task.status, TaskStatus::Canceled);
        let err = c.task.error.clone().unwrap();
        assert_eq!(err.message, "Task t1 canceled");
        assert_eq!(err.code, Some(json!(400)));
        assert_eq!(
            cancel(&c.task, None, 30),
            Err(Refused::Ended(TaskStatus::Canceled))
        );
        assert_eq!(
            succeed(&c.task, 1, json!(1), 30),
            Err(Refused::Ended(TaskStatus::Canceled))
        );
    }

    #[test]
    fn reschedule_and_release() {
        let t = claimed(1);
        let c = reschedule(&t, 1, 5000, Some("later".into()), 20).unwrap();
        assert_eq!(c.task.status, TaskStatus::Scheduled);
        assert_eq!(c.task.attempt, 0);
        assert_eq!(payload(&c)["scheduledTo"], json!(5000));
        let c = release(&t, 1, 20).unwrap();
        assert_eq!(c.task.status, TaskStatus::Pending);
        assert_eq!(c.task.lease_owner, None);
        assert_eq!(c.task.attempt, 0);
    }

    #[test]
    fn expiry_counts_an_attempt_only_once_the_lease_ran_out() {
        let t = claimed(2);
        assert!(expire(&t, 1009, 0.0).is_err());
        let c = expire(&t, 1010, 0.0).unwrap();
        assert_eq!(c.task.status, TaskStatus::WaitingRetry);
        assert_eq!(c.task.attempt, 1);
        assert_eq!(c.task.error.unwrap().code, Some(json!("E_LEASE_EXPIRED")));
        let renewed = renew(&t, 1, 1000, 1000).unwrap();
        assert!(renewed.events.is_empty());
        assert_eq!(renewed.task.lease_expiry, Some(2000));
    }

    #[test]
    fn log_tail_is_bounded() {
        let mut t = claimed(1);
        for i in 0..5 {
            let entry = LogEntry {
                ts: i,
                level: "info".into(),
                msg: format!("m{i}"),
                meta: None,
                step: None,
            };
            t = log(&t, 1, entry, 3).unwrap().task;
        }
        let msgs: Vec<_> = t.log_tail.iter().map(|e| e.msg.as_str()).collect();
        assert_eq!(msgs, ["m2", "m3", "m4"]);
        assert_eq!(progress(&t, 9, json!(1)), Err(Refused::Stale));
    }
}
