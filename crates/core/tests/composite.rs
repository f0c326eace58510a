//! Composite tasks, step dependencies and step locks, end to end on the memory store with
//! manual executors (every run is driven by the test).

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{config, engine_on, recv, ManualExecutor};
use crossbeam_channel::Receiver;
use decaf_tasks_core::{
    Atomicity, Engine, EventClass, Handler, HandlerResult, Job, Outcome, StepPosition, StepSpec,
    Store, TaskContext, TaskError, TaskSpec, TaskStatus,
};
use serde_json::{json, Value};

fn step(value: Value) -> StepSpec {
    serde_json::from_value(value).expect("a step spec")
}

fn composite(steps: Vec<Value>) -> TaskSpec {
    let mut s = TaskSpec::new("pipeline", Value::Null);
    s.atomicity = Some(Atomicity::Composite);
    s.steps = Some(steps.into_iter().map(step).collect());
    s
}

type MakeStore = fn() -> Arc<dyn Store>;

/// Every test here runs on each store.
macro_rules! on_every_store {
    ($($name:ident),* $(,)?) => {
        mod memory {
            $(#[test] fn $name() { super::$name(super::common::memory_store) })*
        }
        mod sqlite {
            $(#[test] fn $name() { super::$name(super::common::sqlite_store) })*
        }
        // Each test's schema is dropped when it ends.
        #[cfg(feature = "postgres")]
        mod postgres {
            $(#[test] fn $name() {
                let _cleanup = super::common::pg::Cleanup;
                super::$name(super::common::postgres_store)
            })*
        }
    };
}

on_every_store!(
    steps_run_in_order_each_reading_the_outputs_before_it,
    a_step_retries_in_place_then_the_task_retry_resumes_at_that_step,
    a_failing_step_stops_the_composite_unless_it_can_fail,
    scheduled_steps_are_inserted_in_call_order_and_announced,
    steps_planned_by_a_run_that_failed_are_withdrawn_when_the_step_runs_again,
    a_step_that_may_fail_and_failed_goes_on_without_the_steps_it_planned,
    schedule_steps_is_refused_outside_a_composite_and_for_bad_steps,
    retry_cancel_and_reschedule_inside_a_step_act_on_the_task,
    log_lines_written_during_a_step_carry_its_index,
    a_step_waits_for_a_step_of_another_task_by_index_name_or_classification,
    a_dependency_on_a_failed_step_fails_the_dependent_and_missing_ones_are_refused,
    steps_sharing_a_lock_never_overlap_and_do_not_block_others,
    a_composite_holds_its_own_lock_between_steps_until_it_leaves_running,
    a_later_step_may_not_wait_for_a_task_needing_the_composites_lock,
    native_steps_run_with_catch_hooks_and_can_schedule_steps,
);

/// An engine with one manual executor serving the step classifications `a`, `b`, `c`.
fn abc_engine(store: MakeStore) -> (Engine, Arc<common::RecordingSink>, Receiver<Job>) {
    abc_engine_on(store())
}

fn abc_engine_on(store: Arc<dyn Store>) -> (Engine, Arc<common::RecordingSink>, Receiver<Job>) {
    let (engine, sink) = engine_on(config(8, 10_000), store);
    let (exec, jobs) = ManualExecutor::new();
    engine.add_executor(exec, &["a".into(), "b".into(), "c".into()]);
    (engine, sink, jobs)
}

fn ok(engine: &Engine, job: &Job, output: Value) {
    assert!(engine
        .report(&job.task_id, job.token, Outcome::Succeed { output })
        .unwrap());
}

fn fail(engine: &Engine, job: &Job, msg: &str) {
    assert!(engine
        .report(
            &job.task_id,
            job.token,
            Outcome::Fail {
                error: TaskError::new(msg)
            }
        )
        .unwrap());
}

fn quiet(jobs: &Receiver<Job>) {
    assert!(
        jobs.recv_timeout(Duration::from_millis(80)).is_err(),
        "no further run was expected"
    );
}

fn at_once() -> Value {
    json!({"baseMs": 0, "maxMs": 0})
}

fn steps_run_in_order_each_reading_the_outputs_before_it(store: MakeStore) {
    let (engine, sink, jobs) = abc_engine(store);
    let task = engine
        .push(vec![composite(vec![
            json!({"classification": "a", "input": 1}),
            json!({"classification": "b", "name": "second", "input": 2}),
            json!({"classification": "c", "input": 3}),
        ])])
        .unwrap()
        .remove(0);
    assert_eq!(task.current_step, Some(0));

    let first = recv(&jobs);
    assert_eq!(first.classification, "a");
    assert_eq!(*first.input, json!(1));
    let info = first.step.clone().unwrap();
    assert_eq!((info.index, info.total, info.attempt), (0, 3, 1));
    assert_eq!(first.result_cache, json!({}));
    quiet(&jobs);
    ok(&engine, &first, json!("A"));

    let second = recv(&jobs);
    assert_eq!(second.classification, "b");
    assert_eq!(second.name.as_deref(), Some("second"));
    let key0 = format!("{}:step:0", task.id);
    assert_eq!(second.result_cache, json!({"a": "A", key0.clone(): "A"}));
    ok(&engine, &second, json!({"b": true}));

    let third = recv(&jobs);
    assert_eq!(third.result_cache["b"], json!({"b": true}));
    assert_eq!(
        third.result_cache[&format!("{}:step:1", task.id)],
        json!({"b": true})
    );
    ok(&engine, &third, json!(3));

    let events = sink.wait_status(&task.id, TaskStatus::Succeeded);
    let done = engine.read(&task.id).unwrap();
    assert_eq!(done.step_results.len(), 3);
    assert!(done
        .step_results
        .iter()
        .all(|r| r.status == TaskStatus::Succeeded && r.attempt == 1));
    assert_eq!(
        done.output.as_ref().unwrap()["stepResults"][1]["output"],
        json!({"b": true})
    );
    // One `running` for the whole composite; a progress event before and after each step.
    assert_eq!(
        sink.statuses(&task.id),
        [
            TaskStatus::Pending,
            TaskStatus::Running,
            TaskStatus::Succeeded
        ]
    );
    let progress: Vec<Value> = events
        .iter()
        .filter(|e| e.task_id == task.id && e.classification == EventClass::Progress)
        .map(|e| e.payload.to_json())
        .collect();
    assert_eq!(
        progress,
        [
            json!({"currentStep": 0, "totalSteps": 3}),
            json!({"currentStep": 0, "totalSteps": 3, "output": "A"}),
            json!({"currentStep": 1, "totalSteps": 3}),
            json!({"currentStep": 1, "totalSteps": 3, "output": {"b": true}}),
            json!({"currentStep": 2, "totalSteps": 3}),
            json!({"currentStep": 2, "totalSteps": 3, "output": 3}),
        ]
    );
}

fn a_step_retries_in_place_then_the_task_retry_resumes_at_that_step(store: MakeStore) {
    let (engine, sink, jobs) = abc_engine(store);
    let mut spec = composite(vec![
        json!({"classification": "a"}),
        json!({"classification": "b", "maxAttempts": 2, "backoff": at_once()}),
    ]);
    spec.max_attempts = Some(2);
    spec.backoff = Some(serde_json::from_value(at_once()).unwrap());
    let task = engine.push(vec![spec]).unwrap().remove(0);

    let a = recv(&jobs);
    ok(&engine, &a, json!("A"));
    let b1 = recv(&jobs);
    assert_eq!((b1.attempt, b1.step.as_ref().unwrap().attempt), (1, 1));
    fail(&engine, &b1, "b broke once");
    let b2 = recv(&jobs);
    // In place: the task's attempt did not move.
    assert_eq!((b2.attempt, b2.step.as_ref().unwrap().attempt), (1, 2));
    assert!(b2.step.as_ref().unwrap().is_last_attempt());
    assert_eq!(engine.read(&task.id).unwrap().attempt, 0);
    fail(&engine, &b2, "b broke twice");

    // Out of step attempts: the task-level retry resumes at step 1, not step 0.
    let b3 = recv(&jobs);
    assert_eq!(b3.classification, "b");
    assert_eq!((b3.attempt, b3.step.as_ref().unwrap().attempt), (2, 1));
    assert_eq!(b3.result_cache["a"], json!("A"));
    ok(&engine, &b3, json!("B"));

    sink.wait_status(&task.id, TaskStatus::Succeeded);
    let done = engine.read(&task.id).unwrap();
    assert_eq!(done.attempt, 1);
    assert_eq!(done.step_results[1].attempt, 1);
    assert_eq!(
        sink.statuses(&task.id),
        [
            TaskStatus::Pending,
            TaskStatus::Running,
            TaskStatus::WaitingRetry,
            TaskStatus::Running,
            TaskStatus::Succeeded
        ]
    );
    // The in-place retry is visible as a warning log line of step 1.
    let logs: Vec<Value> = sink
        .events()
        .iter()
        .filter(|e| e.task_id == task.id && e.classification == EventClass::Log)
        .map(|e| e.payload.to_json()[0].clone())
        .collect();
    assert_eq!(logs.len(), 1);
    assert_eq!(logs[0]["step"], json!(1));
    assert_eq!(logs[0]["level"], json!("warn"));
}

fn a_failing_step_stops_the_composite_unless_it_can_fail(store: MakeStore) {
    let (engine, sink, jobs) = abc_engine(store);
    let stopping = engine
        .push(vec![composite(vec![
            json!({"classification": "a"}),
            json!({"classification": "b"}),
        ])])
        .unwrap()
        .remove(0);
    fail(&engine, &recv(&jobs), "a broke");
    sink.wait_status(&stopping.id, TaskStatus::Failed);
    quiet(&jobs);
    let failed = engine.read(&stopping.id).unwrap();
    assert_eq!(failed.error.unwrap().message, "a broke");
    assert_eq!(failed.step_results.len(), 1);
    assert_eq!(failed.step_results[0].status, TaskStatus::Failed);

    let going_on = engine
        .push(vec![composite(vec![
            json!({"classification": "a", "canFail": true}),
            json!({"classification": "b"}),
        ])])
        .unwrap()
        .remove(0);
    let a = recv(&jobs);
    assert!(a.step.as_ref().unwrap().can_fail);
    fail(&engine, &a, "a broke, allowed");
    let b = recv(&jobs);
    // A failed step has no output to read.
    assert_eq!(b.result_cache, json!({}));
    ok(&engine, &b, json!("B"));
    sink.wait_status(&going_on.id, TaskStatus::Succeeded);
    let done = engine.read(&going_on.id).unwrap();
    assert_eq!(done.step_results[0].status, TaskStatus::Failed);
    assert_eq!(
        done.step_results[0].error.as_ref().unwrap().message,
        "a broke, allowed"
    );
    assert_eq!(done.step_results[1].status, TaskStatus::Succeeded);
}

fn scheduled_steps_are_inserted_in_call_order_and_announced(store: MakeStore) {
    let (engine, sink, jobs) = abc_engine(store);
    let task = engine
        .push(vec![composite(vec![
            json!({"classification": "a"}),
            json!({"classification": "c", "name": "last"}),
        ])])
        .unwrap()
        .remove(0);
    let a = recv(&jobs);
    let first = engine
        .schedule_steps(
            &a.task_id,
            a.token,
            vec![step(json!({"classification": "b", "name": "x"}))],
            StepPosition::AfterCurrent,
        )
        .unwrap();
    let second = engine
        .schedule_steps(
            &a.task_id,
            a.token,
            vec![step(json!({"classification": "b", "name": "y"}))],
            StepPosition::AfterCurrent,
        )
        .unwrap();
    let end = engine
        .schedule_steps(
            &a.task_id,
            a.token,
            vec![step(json!({"classification": "a", "name": "z"}))],
            StepPosition::AtEnd,
        )
        .unwrap();
    assert_eq!(
        (first, second, end),
        (Some((1, 3)), Some((2, 4)), Some((4, 5)))
    );
    ok(&engine, &a, Value::Null);
    let mut names = Vec::new();
    for _ in 0..4 {
        let job = recv(&jobs);
        names.push(job.name.clone().unwrap());
        ok(&engine, &job, Value::Null);
    }
    assert_eq!(names, ["x", "y", "last", "z"]);
    sink.wait_status(&task.id, TaskStatus::Succeeded);
    let updates: Vec<Value> = sink
        .events()
        .iter()
        .filter(|e| e.task_id == task.id && e.classification == EventClass::Update)
        .map(|e| e.payload.to_json())
        .collect();
    assert_eq!(
        updates[0],
        json!({"status": "update", "currentStep": 0, "totalSteps": 3, "output": {"added": 1, "insertionIndex": 1}})
    );
    assert_eq!(updates.len(), 3);
    assert_eq!(engine.read(&task.id).unwrap().steps.len(), 5);
    // A stale run schedules nothing; an atomic task refuses.
    assert_eq!(
        engine
            .schedule_steps(
                &a.task_id,
                a.token,
                vec![step(json!({"classification": "b"}))],
                StepPosition::AtEnd
            )
            .unwrap(),
        None
    );
}

fn steps_planned_by_a_run_that_failed_are_withdrawn_when_the_step_runs_again(store: MakeStore) {
    let (engine, sink, jobs) = abc_engine(store);
    let task = engine
        .push(vec![composite(vec![
            json!({"classification": "a", "maxAttempts": 2, "backoff": at_once()}),
            json!({"classification": "c", "name": "last"}),
        ])])
        .unwrap()
        .remove(0);
    let plan = |job: &Job| {
        for (name, position) in [
            ("x", StepPosition::AfterCurrent),
            ("y", StepPosition::AtEnd),
            ("w", StepPosition::AfterCurrent),
        ] {
            engine
                .schedule_steps(
                    &job.task_id,
                    job.token,
                    vec![step(json!({"classification": "b", "name": name}))],
                    position,
                )
                .unwrap();
        }
    };
    let names = |engine: &Engine| -> Vec<String> {
        let task = engine.read(&task.id).unwrap();
        task.steps
            .iter()
            .map(|s| s.name.clone().unwrap_or_else(|| s.classification.clone()))
            .collect()
    };
    let first = recv(&jobs);
    plan(&first);
    assert_eq!(names(&engine), ["a", "x", "w", "last", "y"]);
    fail(&engine, &first, "after planning");
    // The retry of step 0 starts from the plan as it was before the failed run.
    let second = recv(&jobs);
    assert_eq!(names(&engine), ["a", "last"]);
    plan(&second);
    ok(&engine, &second, Value::Null);
    let mut ran = Vec::new();
    for _ in 0..4 {
        let job = recv(&jobs);
        ran.push(job.name.clone().unwrap());
        ok(&engine, &job, Value::Null);
    }
    assert_eq!(ran, ["x", "w", "last", "y"]);
    sink.wait_status(&task.id, TaskStatus::Succeeded);
    let withdrawn: Vec<Value> = sink
        .events()
        .iter()
        .filter(|e| e.task_id == task.id && e.classification == EventClass::Update)
        .map(|e| e.payload.to_json())
        .filter(|p| p["output"].get("removed").is_some())
        .collect();
    assert_eq!(
        withdrawn,
        [json!({"status": "update", "currentStep": 0, "totalSteps": 2, "output": {"removed": 3}})]
    );
    assert_eq!(engine.read(&task.id).unwrap().step_results.len(), 5);
}

fn a_step_that_may_fail_and_failed_goes_on_without_the_steps_it_planned(store: MakeStore) {
    let (engine, _sink, jobs) = abc_engine(store);
    let task = engine
        .push(vec![composite(vec![
            json!({"classification": "a", "canFail": true}),
            json!({"classification": "c", "name": "last"}),
        ])])
        .unwrap()
        .remove(0);
    let first = recv(&jobs);
    engine
        .schedule_steps(
            &first.task_id,
            first.token,
            vec![step(json!({"classification": "b", "name": "planned"}))],
            StepPosition::AfterCurrent,
        )
        .unwrap();
    fail(&engine, &first, "failed after planning");
    let next = recv(&jobs);
    assert_eq!(next.name.as_deref(), Some("last"));
    ok(&engine, &next, Value::Null);
    quiet(&jobs);
    let done = engine.read(&task.id).unwrap();
    assert_eq!(done.status, TaskStatus::Succeeded);
    assert_eq!(done.steps.len(), 2);
    assert_eq!(done.step_results[0].status, TaskStatus::Failed);
}

fn schedule_steps_is_refused_outside_a_composite_and_for_bad_steps(store: MakeStore) {
    let store = store();
    let shared = store.is_shared();
    let (engine, _sink, jobs) = abc_engine_on(store);
    engine.push(vec![TaskSpec::new("a", Value::Null)]).unwrap();
    let job = recv(&jobs);
    let err = engine
        .schedule_steps(
            &job.task_id,
            job.token,
            vec![step(json!({"classification": "b"}))],
            StepPosition::AtEnd,
        )
        .unwrap_err();
    assert_eq!(err.code(), "E_INVALID");
    assert!(err.to_string().contains("composite"), "{err}");
    engine
        .push(vec![composite(vec![json!({"classification": "a"})])])
        .unwrap();
    let job = recv(&jobs);
    let unknown = engine.schedule_steps(
        &job.task_id,
        job.token,
        vec![step(json!({"classification": "nope"}))],
        StepPosition::AtEnd,
    );
    if shared {
        // Another process sharing the store may serve it.
        assert_eq!(unknown.unwrap(), Some((1, 2)));
    } else {
        assert_eq!(unknown.unwrap_err().code(), "E_UNKNOWN_CLASSIFICATION");
    }
    let empty = engine
        .schedule_steps(&job.task_id, job.token, vec![], StepPosition::AtEnd)
        .unwrap_err();
    assert_eq!(empty.code(), "E_INVALID");
}

fn retry_cancel_and_reschedule_inside_a_step_act_on_the_task(store: MakeStore) {
    let (engine, sink, jobs) = abc_engine(store);
    let mut spec = composite(vec![
        json!({"classification": "a", "maxAttempts": 5, "canFail": true}),
        json!({"classification": "b"}),
    ]);
    spec.max_attempts = Some(2);
    spec.backoff = Some(serde_json::from_value(at_once()).unwrap());
    let task = engine.push(vec![spec.clone()]).unwrap().remove(0);
    let a = recv(&jobs);
    engine
        .report(
            &a.task_id,
            a.token,
            Outcome::Retry {
                reason: Some("again".into()),
            },
        )
        .unwrap();
    // Not the step's in-place retry (it has 5) and not swallowed by canFail: attempt 2.
    let again = recv(&jobs);
    assert_eq!(
        (again.attempt, again.step.as_ref().unwrap().attempt),
        (2, 1)
    );
    engine
        .report(
            &again.task_id,
            again.token,
            Outcome::Cancel { reason: None },
        )
        .unwrap();
    sink.wait_status(&task.id, TaskStatus::Canceled);
    quiet(&jobs);

    let later = engine.push(vec![spec]).unwrap().remove(0);
    let a = recv(&jobs);
    ok(&engine, &a, json!(1));
    let b = recv(&jobs);
    let at = decaf_tasks_core::now_ms() + 60_000;
    engine
        .report(
            &b.task_id,
            b.token,
            Outcome::Reschedule { at, reason: None },
        )
        .unwrap();
    let record = engine.read(&later.id).unwrap();
    assert_eq!(record.status, TaskStatus::Scheduled);
    assert_eq!(record.current_step, Some(1));
    assert_eq!(record.scheduled_to, Some(at));
}

fn log_lines_written_during_a_step_carry_its_index(store: MakeStore) {
    let (engine, sink, jobs) = abc_engine(store);
    let task = engine
        .push(vec![composite(vec![
            json!({"classification": "a"}),
            json!({"classification": "b"}),
        ])])
        .unwrap()
        .remove(0);
    let a = recv(&jobs);
    engine
        .log(&a.task_id, a.token, "info", "in a", None)
        .unwrap();
    ok(&engine, &a, Value::Null);
    let b = recv(&jobs);
    engine
        .log(&b.task_id, b.token, "info", "in b", None)
        .unwrap();
    ok(&engine, &b, Value::Null);
    sink.wait_status(&task.id, TaskStatus::Succeeded);
    let tail = engine.read(&task.id).unwrap().log_tail;
    let steps: Vec<_> = tail.iter().map(|l| (l.msg.as_str(), l.step)).collect();
    assert_eq!(steps, [("in a", Some(0)), ("in b", Some(1))]);
}

fn a_step_waits_for_a_step_of_another_task_by_index_name_or_classification(store: MakeStore) {
    let (engine, sink, jobs) = abc_engine(store);
    let upstream = engine
        .push(vec![composite(vec![
            json!({"classification": "a", "name": "fetch"}),
            json!({"classification": "b"}),
        ])])
        .unwrap()
        .remove(0);
    let up0 = recv(&jobs);
    let downstream = engine
        .push(vec![composite(vec![
            json!({"classification": "c", "dependsOn": [format!("{}:fetch", upstream.id)]}),
            json!({"classification": "c", "dependsOn": [format!("{}:b", upstream.id)]}),
        ])])
        .unwrap()
        .remove(0);
    // Its first step waits for upstream's step 0, which is running.
    quiet(&jobs);
    assert_eq!(
        engine.read(&downstream.id).unwrap().status,
        TaskStatus::Pending
    );
    ok(&engine, &up0, json!("fetched"));
    let mut got = vec![recv(&jobs), recv(&jobs)];
    got.sort_by_key(|j| j.classification.clone());
    let (up1, down0) = (got.remove(0), got.remove(0));
    assert_eq!(
        (up1.classification.as_str(), down0.classification.as_str()),
        ("b", "c")
    );
    ok(&engine, &down0, Value::Null);
    // Its second step waits for upstream's step 1 ("b"): between steps, still running.
    quiet(&jobs);
    let waiting = engine.read(&downstream.id).unwrap();
    assert!(waiting.is_between_steps());
    assert_eq!(waiting.current_step, Some(1));
    ok(&engine, &up1, Value::Null);
    let down1 = recv(&jobs);
    ok(&engine, &down1, Value::Null);
    sink.wait_status(&downstream.id, TaskStatus::Succeeded);
    // Waiting never showed as a status change.
    assert_eq!(
        sink.statuses(&downstream.id),
        [
            TaskStatus::Pending,
            TaskStatus::Running,
            TaskStatus::Succeeded
        ]
    );
}

fn a_dependency_on_a_failed_step_fails_the_dependent_and_missing_ones_are_refused(
    store: MakeStore,
) {
    let (engine, sink, jobs) = abc_engine(store);
    let upstream = engine
        .push(vec![composite(vec![
            json!({"classification": "a", "canFail": true}),
            json!({"classification": "b"}),
        ])])
        .unwrap()
        .remove(0);
    let task_dep = engine
        .push(vec![{
            let mut s = TaskSpec::new("c", Value::Null);
            s.dependencies = Some(vec![format!("{}:0", upstream.id)]);
            s
        }])
        .unwrap()
        .remove(0);
    let a = recv(&jobs);
    fail(&engine, &a, "a broke");
    // The composite goes on (canFail), but step 0 failed for good: the dependent fails.
    let b = recv(&jobs);
    sink.wait_status(&task_dep.id, TaskStatus::Failed);
    let failed = engine.read(&task_dep.id).unwrap();
    let error = failed.error.unwrap();
    assert_eq!(error.code, Some(json!("E_DEPENDENCY_FAILED")));
    assert_eq!(failed.attempt, 0);
    ok(&engine, &b, Value::Null);

    for bad in [
        format!("{}:9", upstream.id),
        format!("{}:nope", upstream.id),
        "0190a0a0-0000-7000-8000-000000000000:0".to_owned(),
    ] {
        let mut s = TaskSpec::new("c", Value::Null);
        s.dependencies = Some(vec![bad.clone()]);
        let err = engine.push(vec![s]).unwrap_err();
        assert_eq!(err.code(), "E_DEPENDENCY", "{bad}");
        let step_dep = composite(vec![json!({"classification": "c", "dependsOn": [bad]})]);
        assert_eq!(
            engine.push(vec![step_dep]).unwrap_err().code(),
            "E_DEPENDENCY"
        );
    }
}

fn steps_sharing_a_lock_never_overlap_and_do_not_block_others(store: MakeStore) {
    let (engine, _sink, jobs) = abc_engine(store);
    let locked = |name: &str| {
        composite(vec![
            json!({"classification": "a", "name": name, "lock": "L"}),
            json!({"classification": "b", "name": format!("{name}-after")}),
        ])
    };
    engine.push(vec![locked("one"), locked("two")]).unwrap();
    let mut free = TaskSpec::new("c", Value::Null);
    free.lock = Some("M".into());
    engine.push(vec![free]).unwrap();
    let first = recv(&jobs);
    let other = recv(&jobs);
    let (first, other) = if first.classification == "a" {
        (first, other)
    } else {
        (other, first)
    };
    assert_eq!(first.name.as_deref(), Some("one"));
    assert_eq!(
        other.classification, "c",
        "the unrelated task is not stuck behind L"
    );
    quiet(&jobs);
    ok(&engine, &first, Value::Null);
    // "one" moves to its unlocked step; "two" takes the lock.
    let mut next = [recv(&jobs), recv(&jobs)];
    next.sort_by_key(|j| j.name.clone());
    let names: Vec<_> = next.iter().map(|j| j.name.clone().unwrap()).collect();
    assert_eq!(names, ["one-after", "two"]);
}

fn a_composite_holds_its_own_lock_between_steps_until_it_leaves_running(store: MakeStore) {
    let (engine, _sink, jobs) = abc_engine(store);
    let mut spec = composite(vec![
        json!({"classification": "a", "name": "first"}),
        json!({"classification": "b", "name": "second", "maxAttempts": 1}),
    ]);
    spec.lock = Some("T".into());
    spec.max_attempts = Some(2);
    spec.backoff = Some(serde_json::from_value(at_once()).unwrap());
    engine.push(vec![spec]).unwrap();
    let first = recv(&jobs);
    assert_eq!(first.name.as_deref(), Some("first"));
    let mut other = TaskSpec::new("c", json!("other"));
    other.lock = Some("T".into());
    engine.push(vec![other]).unwrap();
    quiet(&jobs);
    ok(&engine, &first, Value::Null);
    // Between the steps, the composite keeps T: its next step runs, the other task waits.
    let second = recv(&jobs);
    assert_eq!(second.name.as_deref(), Some("second"));
    quiet(&jobs);
    // A task-level retry gives T up while the composite waits: the other task runs in
    // between, and the composite resumes after it.
    fail(&engine, &second, "once");
    let between = recv(&jobs);
    assert_eq!(between.classification, "c");
    quiet(&jobs);
    ok(&engine, &between, Value::Null);
    let again = recv(&jobs);
    assert_eq!(again.name.as_deref(), Some("second"));
    ok(&engine, &again, Value::Null);
}

fn a_later_step_may_not_wait_for_a_task_needing_the_composites_lock(store: MakeStore) {
    let (engine, _sink, jobs) = abc_engine(store);
    let mut other = TaskSpec::new("c", Value::Null);
    other.lock = Some("T".into());
    let other = engine.push(vec![other]).unwrap().remove(0);
    let on_t = |steps: Vec<Value>| {
        let mut spec = composite(steps);
        spec.lock = Some("T".into());
        spec
    };
    // Step 1 would wait, lock held, for a task that needs the lock: refused at push.
    let err = engine
        .push(vec![on_t(vec![
            json!({"classification": "a"}),
            json!({"classification": "b", "dependsOn": [other.id.to_string()]}),
        ])])
        .unwrap_err();
    assert_eq!(err.code(), "E_DEPENDENCY", "{err}");
    assert!(err.to_string().contains("can never be met"), "{err}");
    // Before its first step it holds nothing: step 0 may wait.
    engine
        .push(vec![on_t(vec![
            json!({"classification": "a", "dependsOn": [other.id.to_string()]}),
        ])])
        .unwrap();
    // Nor may a step added by scheduleSteps.
    let running = recv(&jobs);
    assert_eq!(running.task_id, other.id);
    let planner = engine
        .push(vec![on_t(vec![json!({"classification": "b"})])])
        .unwrap()
        .remove(0);
    let mut blocker = TaskSpec::new("c", Value::Null);
    blocker.lock = Some("T".into());
    let blocker = engine.push(vec![blocker]).unwrap().remove(0);
    ok(&engine, &running, Value::Null);
    // The composite of step 0 waiting for `other` runs now, then the planner.
    let mut planner_job = None;
    for _ in 0..2 {
        let job = recv(&jobs);
        if job.task_id == planner.id {
            planner_job = Some(job);
        } else {
            ok(&engine, &job, Value::Null);
        }
    }
    let planner_job = planner_job.expect("the planner's step ran");
    let refused = engine
        .schedule_steps(
            &planner_job.task_id,
            planner_job.token,
            vec![step(
                json!({"classification": "a", "dependsOn": [blocker.id.to_string()]}),
            )],
            StepPosition::AfterCurrent,
        )
        .unwrap_err();
    assert_eq!(refused.code(), "E_DEPENDENCY");
    // A task that ended needs nothing any more.
    assert!(engine
        .schedule_steps(
            &planner_job.task_id,
            planner_job.token,
            vec![step(
                json!({"classification": "a", "dependsOn": [other.id.to_string()]})
            )],
            StepPosition::AfterCurrent,
        )
        .unwrap()
        .is_some());
}

struct Flaky {
    caught: Arc<AtomicUsize>,
}

impl Handler for Flaky {
    fn run(&self, _input: &Value, _ctx: &TaskContext) -> HandlerResult {
        Err(TaskError::new("flaky").into())
    }

    fn catch(&self, _input: &Value, error: &TaskError, ctx: &TaskContext) {
        assert_eq!(error.message, "flaky");
        assert!(ctx.step().unwrap().can_fail);
        self.caught.fetch_add(1, Ordering::SeqCst);
    }
}

fn native_steps_run_with_catch_hooks_and_can_schedule_steps(store: MakeStore) {
    let (engine, sink) = engine_on(config(4, 10_000), store());
    let caught = Arc::new(AtomicUsize::new(0));
    engine
        .register_native(
            "native:flaky",
            Arc::new(Flaky {
                caught: Arc::clone(&caught),
            }),
        )
        .unwrap();
    engine
        .register_native(
            "native:grow",
            Arc::new(|input: &Value, ctx: &TaskContext| -> HandlerResult {
                if input == &json!("grow") {
                    let at = ctx
                        .schedule_steps(
                            vec![step(
                                json!({"classification": "native:grow", "input": "leaf"}),
                            )],
                            StepPosition::AfterCurrent,
                        )
                        .map_err(|e| TaskError::new(e.to_string()))?;
                    return Ok(json!(at));
                }
                Ok(json!(ctx.result_cache().as_object().map_or(0, |m| m.len())))
            }),
        )
        .unwrap();
    let atomic = engine
        .push(vec![TaskSpec::new("native:grow", json!("grow"))])
        .unwrap()
        .remove(0);
    let mut spec = composite(vec![
        json!({"classification": "native:flaky", "canFail": true, "maxAttempts": 2, "backoff": at_once()}),
        json!({"classification": "native:grow", "input": "grow"}),
    ]);
    spec.classification = "native:pipeline".into();
    let task = engine.push(vec![spec]).unwrap().remove(0);
    sink.wait_status(&task.id, TaskStatus::Succeeded);
    sink.wait_status(&atomic.id, TaskStatus::Failed);
    // The catch hook ran after each failed run of the step.
    assert_eq!(caught.load(Ordering::SeqCst), 2);
    let done = engine.read(&task.id).unwrap();
    assert_eq!(done.steps.len(), 3);
    assert_eq!(done.step_results[0].attempt, 2);
    assert_eq!(done.step_results[1].output, Some(json!(2)));
    // The leaf reads step 1's output (by classification and by index key).
    assert_eq!(done.step_results[2].output, Some(json!(2)));
    let refused = engine.read(&atomic.id).unwrap().error.unwrap().message;
    assert!(refused.contains("composite"), "{refused}");
}
