//! Dependency references: `"<taskId>"` waits for a task to succeed, `"<taskId>:<step>"`
//! for one step of a composite (by index, name or classification) to succeed. Every store
//! evaluates them with these functions, so they mean the same everywhere.

use crate::model::{Task, TaskStatus};

/// A parsed reference.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DepRef<'a> {
    /// The task it names.
    pub task_id: &'a str,
    /// The step of that task (index, name or classification), if any.
    pub step: Option<&'a str>,
}

impl<'a> DepRef<'a> {
    /// Splits `"<taskId>[:<step>]"` at its first `:` (task ids never contain one).
    pub fn parse(dep: &'a str) -> Self {
        match dep.split_once(':') {
            Some((task_id, step)) => DepRef {
                task_id,
                step: Some(step),
            },
            None => DepRef {
                task_id: dep,
                step: None,
            },
        }
    }
}

/// Where a dependency stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DepState {
    /// It succeeded: no longer waited for.
    Met,
    /// Not yet decided.
    Waiting,
    /// It can never succeed; how it ended (`failed` or `canceled`).
    Failed(TaskStatus),
}

/// The index of the step `step` names in `task`: an index, else the first step with that
/// name, else the first with that classification.
pub fn resolve_step(task: &Task, step: &str) -> Option<usize> {
    if let Ok(index) = step.parse::<usize>() {
        return (index < task.steps.len()).then_some(index);
    }
    task.steps
        .iter()
        .position(|s| s.name.as_deref() == Some(step))
        .or_else(|| task.steps.iter().position(|s| s.classification == step))
}

/// How `dep` stands, given the task it names (`target.id` must be `dep`'s task id).
pub fn state_of(dep: DepRef<'_>, target: &Task) -> DepState {
    let Some(step) = dep.step else {
        return match target.status {
            TaskStatus::Succeeded => DepState::Met,
            s if s.is_terminal() => DepState::Failed(s),
            _ => DepState::Waiting,
        };
    };
    let result =
        resolve_step(target, step).and_then(|i| target.step_results.get(i).map(|r| (i, r)));
    match result {
        Some((_, r)) if r.status == TaskStatus::Succeeded => DepState::Met,
        // A failed step the composite moved past (`canFail`) is final.
        Some((i, r))
            if r.status == TaskStatus::Failed
                && target.current_step.is_some_and(|c| c as usize > i) =>
        {
            DepState::Failed(TaskStatus::Failed)
        }
        _ if target.status.is_terminal() => DepState::Failed(match target.status {
            TaskStatus::Canceled => TaskStatus::Canceled,
            _ => TaskStatus::Failed,
        }),
        _ => DepState::Waiting,
    }
}

/// Why a reference cannot be accepted at push, given the task it names (`None`: that
/// task does not exist).
pub fn check(dep: &str, target: Option<&Task>) -> Result<(), String> {
    let parsed = DepRef::parse(dep);
    let Some(target) = target else {
        return Err(format!(
            "dependency {dep} does not exist: a task can only depend on tasks pushed before it"
        ));
    };
    match parsed.step {
        Some(step) if resolve_step(target, step).is_none() => Err(format!(
            "dependency {dep}: task {} has no step '{step}' (give a step index, name or classification)",
            target.id
        )),
        _ => Ok(()),
    }
}

/// Whether a step of a composite that holds lock key `lock` (from its first step to its
/// end, between steps too) may wait for `target`: not when `target` has not ended and needs
/// that key itself (as its own lock or a step's). It could not run before the composite
/// ends, and the composite would wait for it forever. `Err` is the refusal's message.
pub fn check_lock(dep: &str, lock: &str, target: &Task) -> Result<(), String> {
    let needs = target.lock.as_deref() == Some(lock)
        || target.steps.iter().any(|s| s.lock.as_deref() == Some(lock));
    if needs && !target.status.is_terminal() {
        return Err(format!(
            "dependency {dep} can never be met: task {} needs lock '{lock}', which the composite \
             holds from its first step to its end, so neither would ever run",
            target.id
        ));
    }
    Ok(())
}
