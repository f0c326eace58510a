//! The engine end to end on the memory store, with a manual executor so every step is
//! driven by the test (no sleeps).

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{engine, recv, ManualExecutor};
use decaf_tasks_core::{
    now_ms, Backoff, BackoffStrategy, EngineError, EventClass, HandlerResult, Jitter, Outcome,
    StopReason, TaskContext, TaskError, TaskSpec, TaskStatus,
};
use serde_json::{json, Value};

fn spec(classification: &str, input: Value) -> TaskSpec {
    TaskSpec::new(classification, input)
}

/// A `"js"` task of `max_attempts` whose retries are due at once.
fn retrying_at_once(max_attempts: u32) -> TaskSpec {
    let mut s = spec("js", json!(null));
    s.max_attempts = Some(max_attempts);
    s.backoff = Some(Backoff {
        base_ms: 0,
        max_ms: 0,
        ..Backoff::default()
    });
    s
}

#[test]
fn runs_a_task_and_emits_events_in_order() {
    let (engine, sink, _exec, jobs) = common::js_engine(4, 10_000);
    let task = engine
        .push(vec![spec("js", json!({"n": 1}))])
        .unwrap()
        .remove(0);
    assert_eq!(task.status, TaskStatus::Pending);
    let job = recv(&jobs);
    assert_eq!(job.task_id, task.id);
    assert_eq!(job.attempt, 1);
    assert_eq!(*job.input, json!({"n": 1}));
    assert!(engine
        .log(&task.id, job.token, "info", "hello", None)
        .unwrap());
    assert!(engine
        .progress(&task.id, job.token, json!({"pct": 50}))
        .unwrap());
    assert!(engine
        .report(&task.id, job.token, Outcome::Succeed { output: json!(0) })
        .unwrap());
    let events = sink.wait_status(&task.id, TaskStatus::Succeeded);
    let kinds: Vec<_> = events
        .iter()
        .map(|e| match e.classification {
            EventClass::Status => e.payload.to_json()["status"].as_str().unwrap().to_owned(),
            other => other.as_str().to_owned(),
        })
        .collect();
    assert_eq!(
        kinds,
        ["pending", "running", "log", "progress", "succeeded"]
    );
    assert!(events.windows(2).all(|w| w[0].seq < w[1].seq));
    assert_eq!(events.last().unwrap().payload.to_json()["output"], json!(0));
    assert_eq!(engine.events(&task.id).unwrap(), events);
    let stored = engine.read(&task.id).unwrap();
    assert_eq!(stored.output, Some(json!(0)));
    assert_eq!(stored.log_tail.len(), 1);
    assert_eq!(engine.active_count().unwrap(), 0);
}

#[test]
fn priority_then_due_time_then_insertion_order() {
    let (engine, _sink) = engine(1, 10_000);
    let (exec, jobs) = ManualExecutor::new();
    // Push before any executor exists is refused for an unknown classification...
    assert!(matches!(
        engine.push(vec![spec("js", json!(0))]),
        Err(EngineError::UnknownClassification(_))
    ));
    let id = engine.add_executor(exec, &["js".into()]);
    // ...so block the only slot with a first task, then queue the rest behind it.
    let first = engine
        .push(vec![spec("js", json!("first"))])
        .unwrap()
        .remove(0);
    let blocker = recv(&jobs);
    assert_eq!(blocker.task_id, first.id);
    let mut low = spec("js", json!("low"));
    low.priority = Some(-1);
    let mut high = spec("js", json!("high"));
    high.priority = Some(5);
    engine
        .push(vec![
            low,
            spec("js", json!("a")),
            high,
            spec("js", json!("b")),
        ])
        .unwrap();
    let mut order = Vec::new();
    let mut current = blocker;
    for _ in 0..4 {
        engine
            .report(
                &current.task_id,
                current.token,
                Outcome::Succeed {
                    output: Value::Null,
                },
            )
            .unwrap();
        current = recv(&jobs);
        order.push(current.input.as_str().unwrap().to_owned());
    }
    assert_eq!(order, ["high", "a", "b", "low"]);
    let _ = id;
}

#[test]
fn concurrency_caps_running_tasks_and_a_freed_slot_refills_at_once() {
    let (engine, _sink, _exec, jobs) = common::js_engine(3, 10_000);
    engine
        .push((0..10).map(|i| spec("js", json!(i))).collect())
        .unwrap();
    let running: Vec<_> = (0..3).map(|_| recv(&jobs)).collect();
    assert!(
        jobs.recv_timeout(Duration::from_millis(50)).is_err(),
        "a 4th task started"
    );
    engine
        .report(
            &running[0].task_id,
            running[0].token,
            Outcome::Succeed {
                output: Value::Null,
            },
        )
        .unwrap();
    let next = recv(&jobs);
    assert_eq!(*next.input, json!(3));
    assert!(jobs.recv_timeout(Duration::from_millis(50)).is_err());
}

#[test]
fn failures_retry_with_backoff_until_max_attempts() {
    let (engine, sink, _exec, jobs) = common::js_engine(2, 10_000);
    let mut s = spec("js", json!(null));
    s.max_attempts = Some(3);
    s.backoff = Some(Backoff {
        strategy: BackoffStrategy::Fixed,
        base_ms: 20,
        max_ms: 20,
        jitter: Jitter::None,
    });
    let task = engine.push(vec![s]).unwrap().remove(0);
    for attempt in 1..=3 {
        let job = recv(&jobs);
        assert_eq!(job.attempt, attempt);
        let failed_at = now_ms();
        engine
            .report(
                &task.id,
                job.token,
                Outcome::Fail {
                    error: TaskError::new(format!("boom {attempt}")),
                },
            )
            .unwrap();
        if attempt < 3 {
            let stored = engine.read(&task.id).unwrap();
            assert_eq!(stored.status, TaskStatus::WaitingRetry);
            assert!(stored.next_run_at.unwrap() >= failed_at + 20);
        }
    }
    sink.wait_status(&task.id, TaskStatus::Failed);
    let stored = engine.read(&task.id).unwrap();
    assert_eq!(stored.attempt, 3);
    assert_eq!(stored.error.unwrap().message, "boom 3");
    assert_eq!(
        sink.statuses(&task.id),
        [
            TaskStatus::Pending,
            TaskStatus::Running,
            TaskStatus::WaitingRetry,
            TaskStatus::Running,
            TaskStatus::WaitingRetry,
            TaskStatus::Running,
            TaskStatus::Failed
        ]
    );
}

#[test]
fn scheduled_tasks_wait_for_their_time() {
    let (engine, sink, _exec, jobs) = common::js_engine(2, 10_000);
    let at = now_ms() + 150;
    let mut s = spec("js", json!(null));
    s.scheduled_to = Some(at);
    let task = engine.push(vec![s]).unwrap().remove(0);
    assert_eq!(task.status, TaskStatus::Scheduled);
    let job = recv(&jobs);
    assert!(now_ms() >= at, "ran before its scheduled time");
    engine
        .report(&task.id, job.token, Outcome::Succeed { output: json!(1) })
        .unwrap();
    sink.wait_status(&task.id, TaskStatus::Succeeded);
}

#[test]
fn cancel_is_final_aborts_the_run_and_drops_its_late_result() {
    let (engine, sink, exec, jobs) = common::js_engine(2, 10_000);
    let task = engine
        .push(vec![spec("js", json!(null))])
        .unwrap()
        .remove(0);
    let job = recv(&jobs);
    let canceled = engine.cancel(&task.id, None).unwrap();
    assert_eq!(canceled.status, TaskStatus::Canceled);
    let error = canceled.error.unwrap();
    assert_eq!(error.message, format!("Task {} canceled", task.id));
    assert_eq!(error.code, Some(json!(400)));
    assert_eq!(
        exec.aborts.lock().clone(),
        [(task.id.to_string(), job.token, StopReason::Canceled)]
    );
    assert!(!engine
        .report(&task.id, job.token, Outcome::Succeed { output: json!(1) })
        .unwrap());
    assert!(!engine
        .log(&task.id, job.token, "info", "late", None)
        .unwrap());
    let before = sink.events().len();
    let again = engine.cancel(&task.id, None).unwrap();
    assert_eq!(again.status, TaskStatus::Canceled);
    assert_eq!(
        sink.events().len(),
        before,
        "cancelling an ended task emitted something"
    );
    assert_eq!(engine.read(&task.id).unwrap().output, None);
    // A pending task can be canceled too and never runs.
    let (engine2, _sink2) = common::engine(1, 10_000);
    let (exec2, jobs2) = ManualExecutor::new();
    engine2.add_executor(exec2, &["js".into()]);
    let tasks = engine2
        .push(vec![spec("js", json!(1)), spec("js", json!(2))])
        .unwrap();
    let first = recv(&jobs2);
    engine2.cancel(&tasks[1].id, None).unwrap();
    engine2
        .report(
            &first.task_id,
            first.token,
            Outcome::Succeed {
                output: Value::Null,
            },
        )
        .unwrap();
    assert!(jobs2.recv_timeout(Duration::from_millis(100)).is_err());
}

#[test]
fn an_expired_lease_is_recovered_counts_an_attempt_and_fences_the_old_runner() {
    let (engine, sink, exec, jobs) = common::js_engine(2, 150);
    let s = retrying_at_once(2);
    let task = engine.push(vec![s]).unwrap().remove(0);
    let first = recv(&jobs);
    // The executor never renews: the lease runs out and the task is handed out again.
    let second = recv(&jobs);
    assert_eq!(second.task_id, task.id);
    assert_eq!(second.attempt, 2);
    assert!(second.token > first.token);
    assert!(exec.aborts.lock().contains(&(
        task.id.to_string(),
        first.token,
        StopReason::LeaseLost
    )));
    assert!(!engine
        .report(
            &task.id,
            first.token,
            Outcome::Succeed {
                output: json!("old")
            }
        )
        .unwrap());
    assert!(engine
        .report(
            &task.id,
            second.token,
            Outcome::Succeed {
                output: json!("new")
            }
        )
        .unwrap());
    sink.wait_status(&task.id, TaskStatus::Succeeded);
    let stored = engine.read(&task.id).unwrap();
    assert_eq!(stored.output, Some(json!("new")));
    assert_eq!(stored.attempt, 1);
}

#[test]
fn renewals_keep_a_lease_alive() {
    let (engine, _sink) = engine(2, 150);
    let (exec, jobs) = ManualExecutor::new();
    let id = engine.add_executor(exec, &["js".into()]);
    let task = engine
        .push(vec![spec("js", json!(null))])
        .unwrap()
        .remove(0);
    let job = recv(&jobs);
    for _ in 0..8 {
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(engine.renew_executor(id).unwrap(), 1);
    }
    assert!(engine
        .report(&task.id, job.token, Outcome::Succeed { output: json!(1) })
        .unwrap());
}

#[test]
fn handler_control_outcomes() {
    let (engine, sink, _exec, jobs) = common::js_engine(4, 10_000);
    let tasks = engine
        .push(vec![
            spec("js", json!("cancel")),
            spec("js", json!("retry")),
            spec("js", json!("later")),
        ])
        .unwrap();
    let at = now_ms() + 60_000;
    for _ in 0..3 {
        let job = recv(&jobs);
        let outcome = match job.input.as_str().unwrap() {
            "cancel" => Outcome::Cancel {
                reason: Some("no".into()),
            },
            "retry" => Outcome::Retry {
                reason: Some("again".into()),
            },
            _ => Outcome::Reschedule { at, reason: None },
        };
        assert!(engine.report(&job.task_id, job.token, outcome).unwrap());
    }
    sink.wait_status(&tasks[0].id, TaskStatus::Canceled);
    sink.wait_status(&tasks[1].id, TaskStatus::Failed);
    sink.wait_status(&tasks[2].id, TaskStatus::Scheduled);
    assert_eq!(engine.read(&tasks[2].id).unwrap().scheduled_to, Some(at));
    assert_eq!(engine.read(&tasks[2].id).unwrap().attempt, 0);
}

#[test]
fn native_handlers_run_on_engine_threads_and_panics_become_failures() {
    let (engine, sink) = engine(4, 10_000);
    engine
        .register_native(
            "native:square",
            Arc::new(|input: &Value, ctx: &TaskContext| -> HandlerResult {
                ctx.log("info", "squaring", None);
                let n = input.as_i64().unwrap_or(0);
                Ok(json!(n * n))
            }),
        )
        .unwrap();
    engine
        .register_native(
            "native:boom",
            Arc::new(|_: &Value, _: &TaskContext| -> HandlerResult { panic!("kaboom") }),
        )
        .unwrap();
    let tasks = engine
        .push(vec![
            spec("native:square", json!(7)),
            spec("native:boom", json!(null)),
        ])
        .unwrap();
    sink.wait_status(&tasks[0].id, TaskStatus::Succeeded);
    sink.wait_status(&tasks[1].id, TaskStatus::Failed);
    assert_eq!(engine.read(&tasks[0].id).unwrap().output, Some(json!(49)));
    let error = engine.read(&tasks[1].id).unwrap().error.unwrap();
    assert!(error.message.contains("kaboom"), "{}", error.message);
    assert_eq!(error.code, Some(json!("E_PANIC")));
}

#[test]
fn shutdown_drains_then_releases_and_refuses_new_work() {
    let (engine, sink, exec, jobs) = common::js_engine(4, 10_000);
    let task = engine
        .push(vec![spec("js", json!(null))])
        .unwrap()
        .remove(0);
    let job = recv(&jobs);
    let report = engine.shutdown(Duration::from_millis(50)).unwrap();
    assert_eq!(report.released, 1);
    assert_eq!(engine.read(&task.id).unwrap().status, TaskStatus::Pending);
    assert_eq!(
        exec.aborts.lock().clone(),
        [(task.id.to_string(), job.token, StopReason::Shutdown)]
    );
    assert!(!engine
        .report(&task.id, job.token, Outcome::Succeed { output: json!(1) })
        .unwrap());
    assert_eq!(
        engine.push(vec![spec("js", json!(1))]),
        Err(EngineError::Shutdown)
    );
    assert_eq!(engine.shutdown(Duration::ZERO).unwrap().released, 0);
    assert_eq!(
        *sink.statuses(&task.id).last().unwrap(),
        TaskStatus::Pending
    );
}

#[test]
fn shutdown_waits_for_a_run_that_ends_in_time() {
    let (engine, sink) = engine(4, 10_000);
    engine
        .register_native(
            "native:nap",
            Arc::new(|_: &Value, _: &TaskContext| -> HandlerResult {
                std::thread::sleep(Duration::from_millis(100));
                Ok(json!("rested"))
            }),
        )
        .unwrap();
    let task = engine
        .push(vec![spec("native:nap", json!(null))])
        .unwrap()
        .remove(0);
    sink.wait_status(&task.id, TaskStatus::Running);
    let report = engine.shutdown(Duration::from_secs(5)).unwrap();
    assert_eq!(report.drained, 1);
    assert_eq!(engine.read(&task.id).unwrap().output, Some(json!("rested")));
}

#[test]
fn a_dependent_runs_only_after_its_dependency_succeeded() {
    let (engine, sink, _exec, jobs) = common::js_engine(4, 10_000);
    let a = engine.push(vec![spec("js", json!("a"))]).unwrap().remove(0);
    let mut b = spec("js", json!("b"));
    b.dependencies = Some(vec![a.id.to_string()]);
    let b = engine.push(vec![b]).unwrap().remove(0);
    assert_eq!(b.status, TaskStatus::Pending);
    let job_a = recv(&jobs);
    assert_eq!(job_a.task_id, a.id);
    assert!(
        jobs.recv_timeout(Duration::from_millis(100)).is_err(),
        "b ran before a ended"
    );
    engine
        .report(&a.id, job_a.token, Outcome::Succeed { output: json!(1) })
        .unwrap();
    let job_b = recv(&jobs);
    assert_eq!(job_b.task_id, b.id);
    engine
        .report(&b.id, job_b.token, Outcome::Succeed { output: json!(2) })
        .unwrap();
    sink.wait_status(&b.id, TaskStatus::Succeeded);
    // Waiting was not a status change.
    assert_eq!(
        sink.statuses(&b.id),
        [
            TaskStatus::Pending,
            TaskStatus::Running,
            TaskStatus::Succeeded
        ]
    );
}

#[test]
fn a_failed_dependency_fails_its_dependents_without_running_them() {
    let (engine, sink, _exec, jobs) = common::js_engine(4, 10_000);
    let a = engine.push(vec![spec("js", json!("a"))]).unwrap().remove(0);
    let mut b = spec("js", json!("b"));
    b.dependencies = Some(vec![a.id.to_string()]);
    let b = engine.push(vec![b]).unwrap().remove(0);
    let mut c = spec("js", json!("c"));
    c.dependencies = Some(vec![b.id.to_string()]);
    let c = engine.push(vec![c]).unwrap().remove(0);
    let job_a = recv(&jobs);
    engine
        .report(
            &a.id,
            job_a.token,
            Outcome::Fail {
                error: TaskError::new("no"),
            },
        )
        .unwrap();
    sink.wait_status(&c.id, TaskStatus::Failed);
    for id in [&b.id, &c.id] {
        let task = engine.read(id).unwrap();
        assert_eq!(task.status, TaskStatus::Failed);
        assert_eq!(task.attempt, 0);
        let error = task.error.unwrap();
        assert_eq!(error.code, Some(json!("E_DEPENDENCY_FAILED")));
        assert_eq!(error.details.unwrap()["status"], json!("failed"));
    }
    assert!(jobs.recv_timeout(Duration::from_millis(50)).is_err());
    // A dependency that already failed dooms a new dependent at once; a canceled one too.
    let mut d = spec("js", json!("d"));
    d.dependencies = Some(vec![a.id.to_string()]);
    let d = engine.push(vec![d]).unwrap().remove(0);
    sink.wait_status(&d.id, TaskStatus::Failed);
}

#[test]
fn a_dependency_on_a_missing_task_is_refused_and_nothing_is_stored() {
    let (engine, _sink, _exec, _jobs) = common::js_engine(4, 10_000);
    let mut s = spec("js", json!(null));
    s.dependencies = Some(vec!["no-such-task".into()]);
    let err = engine.push(vec![spec("js", json!(1)), s]).unwrap_err();
    assert_eq!(err.code(), "E_DEPENDENCY");
    assert!(engine.list(&Default::default()).unwrap().is_empty());
}

#[test]
fn tasks_sharing_a_lock_never_overlap_and_do_not_block_others() {
    let (engine, _sink, _exec, jobs) = common::js_engine(4, 10_000);
    let locked = |name: &str| {
        let mut s = spec("js", json!(name));
        s.lock = Some("printer".into());
        s
    };
    engine
        .push(vec![locked("l1"), locked("l2"), spec("js", json!("free"))])
        .unwrap();
    let first = recv(&jobs);
    let second = recv(&jobs);
    let mut names = [
        first.input.as_str().unwrap(),
        second.input.as_str().unwrap(),
    ];
    names.sort();
    assert_eq!(names, ["free", "l1"]);
    assert!(
        jobs.recv_timeout(Duration::from_millis(100)).is_err(),
        "l2 overlapped l1"
    );
    let l1 = if *first.input == json!("l1") {
        &first
    } else {
        &second
    };
    engine
        .report(
            &l1.task_id,
            l1.token,
            Outcome::Succeed {
                output: Value::Null,
            },
        )
        .unwrap();
    let third = recv(&jobs);
    assert_eq!(*third.input, json!("l2"));
}

#[test]
fn an_executor_never_gets_more_than_its_capacity_and_the_least_loaded_gets_work() {
    let (engine, _sink) = engine(16, 10_000);
    let (a, jobs_a) = ManualExecutor::new();
    let (b, jobs_b) = ManualExecutor::new();
    engine.add_executor_with_capacity(a, &["js".into()], 2);
    engine.add_executor_with_capacity(b, &["js".into()], 1);
    engine
        .push((0..6).map(|i| spec("js", json!(i))).collect())
        .unwrap();
    let on_a = [recv(&jobs_a), recv(&jobs_a)];
    let on_b = recv(&jobs_b);
    assert!(jobs_a.recv_timeout(Duration::from_millis(50)).is_err());
    assert!(jobs_b.try_recv().is_err());
    // A slot of b frees: the next task goes to b (a is full).
    engine
        .report(
            &on_b.task_id,
            on_b.token,
            Outcome::Succeed {
                output: Value::Null,
            },
        )
        .unwrap();
    let next = recv(&jobs_b);
    assert_eq!(*next.input, json!(3));
    let _ = on_a;
}

#[test]
fn removing_an_executor_counts_an_attempt_for_its_runs_and_they_wait_for_another() {
    let (engine, sink) = engine(4, 10_000);
    let (gone, jobs_gone) = ManualExecutor::new();
    let id = engine.add_executor(gone, &["js".into()]);
    let s = retrying_at_once(2);
    let task = engine.push(vec![s]).unwrap().remove(0);
    let first = recv(&jobs_gone);
    assert_eq!(engine.remove_executor(id, "worker exited").unwrap(), 1);
    assert_eq!(engine.remove_executor(id, "worker exited").unwrap(), 0);
    let stored = engine.read(&task.id).unwrap();
    assert_eq!(stored.status, TaskStatus::WaitingRetry);
    assert_eq!(stored.attempt, 1);
    assert_eq!(stored.error.unwrap().code, Some(json!("E_EXECUTOR_LOST")));
    // Still a known classification: a push is accepted and waits for a new executor.
    let later = engine
        .push(vec![spec("js", json!("later"))])
        .unwrap()
        .remove(0);
    assert!(!engine
        .report(&task.id, first.token, Outcome::Succeed { output: json!(1) })
        .unwrap());
    let (fresh, jobs_fresh) = ManualExecutor::new();
    engine.add_executor(fresh, &["js".into()]);
    let mut got = [recv(&jobs_fresh).task_id, recv(&jobs_fresh).task_id];
    got.sort();
    let mut want = [task.id.clone(), later.id.clone()];
    want.sort();
    assert_eq!(got, want);
    let _ = sink;
}

#[test]
fn leases_of_claims_made_while_the_dispatcher_sleeps_are_still_renewed_and_recovered() {
    let (engine, sink, _exec, jobs) = common::js_engine(4, 150);
    engine
        .register_native(
            "native:long",
            Arc::new(|_: &Value, _: &TaskContext| -> HandlerResult {
                std::thread::sleep(Duration::from_millis(600));
                Ok(json!("done"))
            }),
        )
        .unwrap();
    // Let the dispatcher finish its rounds and sleep with nothing to wait for.
    std::thread::sleep(Duration::from_millis(100));
    let native = engine
        .push(vec![spec("native:long", json!(null))])
        .unwrap()
        .remove(0);
    let stalled = engine
        .push(vec![spec("js", json!(null))])
        .unwrap()
        .remove(0);
    let job = recv(&jobs);
    // The JS run never renews: recovered (failed, its only attempt) and fenced.
    sink.wait_status(&stalled.id, TaskStatus::Failed);
    assert!(!engine
        .report(
            &stalled.id,
            job.token,
            Outcome::Succeed { output: json!(1) }
        )
        .unwrap());
    // The native run outlives its lease length but is renewed by the engine.
    sink.wait_status(&native.id, TaskStatus::Succeeded);
    assert_eq!(engine.read(&native.id).unwrap().output, Some(json!("done")));
}

#[test]
fn native_tasks_waiting_for_a_native_thread_do_not_hold_service_slots() {
    // 2 native threads (see common::config), 8 slots.
    let (engine, sink, _exec, jobs) = common::js_engine(8, 10_000);
    engine
        .register_native(
            "native:gate",
            Arc::new(|_: &Value, ctx: &TaskContext| -> HandlerResult {
                while !ctx.is_aborted() {
                    std::thread::sleep(Duration::from_millis(2));
                }
                Ok(Value::Null)
            }),
        )
        .unwrap();
    let natives = engine
        .push((0..6).map(|_| spec("native:gate", json!(null))).collect())
        .unwrap();
    let running = sink.wait_until(|events| {
        events
            .iter()
            .filter(|e| e.status() == Some(TaskStatus::Running))
            .count()
            >= 2
    });
    assert_eq!(
        running
            .iter()
            .filter(|e| e.status() == Some(TaskStatus::Running))
            .count(),
        2,
        "more native runs than native threads"
    );
    // A JS task still gets a slot at once.
    engine.push(vec![spec("js", json!("js"))]).unwrap();
    assert_eq!(*recv(&jobs).input, json!("js"));
    for task in natives {
        engine.cancel(&task.id, None).unwrap();
    }
}

#[test]
fn a_run_past_its_timeout_fails_its_attempt_and_a_stuck_executor_is_reported() {
    let (engine, sink) = common::engine_with(decaf_tasks_core::EngineConfig {
        timeout_grace_ms: 150,
        ..common::config(4, 10_000)
    });
    let (exec, jobs) = ManualExecutor::new();
    let id = engine.add_executor(exec.clone(), &["js".into()]);
    let mut s = retrying_at_once(2);
    s.timeout_ms = Some(100);
    let task = engine.push(vec![s]).unwrap().remove(0);
    let first = recv(&jobs);
    let second = recv(&jobs);
    assert_eq!(second.attempt, 2);
    let stored = engine.read(&task.id).unwrap();
    assert_eq!(stored.status, TaskStatus::Running);
    assert!(exec
        .aborts
        .lock()
        .contains(&(task.id.to_string(), first.token, StopReason::Timeout)));
    let retry = sink.wait_status(&task.id, TaskStatus::WaitingRetry);
    let retry = retry
        .iter()
        .find(|e| e.status() == Some(TaskStatus::WaitingRetry))
        .unwrap();
    assert_eq!(retry.payload.to_json()["error"]["code"], json!("E_TIMEOUT"));
    // The second run returns in time; the first never does: its executor is stuck.
    engine
        .report(
            &task.id,
            second.token,
            Outcome::Succeed { output: json!(2) },
        )
        .unwrap();
    sink.wait_status(&task.id, TaskStatus::Succeeded);
    assert_eq!(sink.wait_stuck(), [id]);
}

#[test]
fn a_timed_out_run_that_returns_within_the_grace_is_not_reported_stuck() {
    let (engine, sink) = common::engine_with(decaf_tasks_core::EngineConfig {
        timeout_grace_ms: 300,
        ..common::config(4, 10_000)
    });
    let (exec, jobs) = ManualExecutor::new();
    engine.add_executor(exec, &["js".into()]);
    let mut s = spec("js", json!(null));
    s.timeout_ms = Some(50);
    let task = engine.push(vec![s]).unwrap().remove(0);
    let job = recv(&jobs);
    sink.wait_status(&task.id, TaskStatus::Failed);
    assert!(!engine
        .report(&task.id, job.token, Outcome::Succeed { output: json!(1) })
        .unwrap());
    // Past the grace, nothing was reported.
    let mut probe = spec("js", json!("probe"));
    probe.scheduled_to = Some(now_ms() + 400);
    let probe = engine.push(vec![probe]).unwrap().remove(0);
    let job = recv(&jobs);
    engine
        .report(&probe.id, job.token, Outcome::Succeed { output: json!(1) })
        .unwrap();
    assert!(sink.stuck.lock().is_empty());
}

#[test]
fn retention_purges_ended_tasks_and_their_events() {
    let (engine, sink) = common::engine_with(decaf_tasks_core::EngineConfig {
        retention: decaf_tasks_core::Retention {
            completed_ms: Some(0),
            failed_ms: Some(150),
        },
        ..common::config(4, 10_000)
    });
    let (exec, jobs) = ManualExecutor::new();
    engine.add_executor(exec, &["js".into()]);
    let tasks = engine
        .push(vec![spec("js", json!("ok")), spec("js", json!("ko"))])
        .unwrap();
    for _ in 0..2 {
        let job = recv(&jobs);
        let outcome = if *job.input == json!("ok") {
            Outcome::Succeed { output: json!(1) }
        } else {
            Outcome::Fail {
                error: TaskError::new("no"),
            }
        };
        engine.report(&job.task_id, job.token, outcome).unwrap();
    }
    sink.wait_status(&tasks[1].id, TaskStatus::Failed);
    // Succeeded: gone at once (the events were delivered before). Failed: kept 150 ms.
    assert!(matches!(
        engine.read(&tasks[0].id),
        Err(EngineError::NotFound(_))
    ));
    assert!(matches!(
        engine.events(&tasks[0].id),
        Err(EngineError::NotFound(_))
    ));
    assert_eq!(
        engine.read(&tasks[1].id).unwrap().status,
        TaskStatus::Failed
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while engine.read(&tasks[1].id).is_ok() {
        assert!(
            std::time::Instant::now() < deadline,
            "failed task never purged"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(engine.list(&Default::default()).unwrap().is_empty());
    assert_eq!(
        sink.statuses(&tasks[0].id).last(),
        Some(&TaskStatus::Succeeded)
    );
}

#[test]
fn an_executor_serving_several_classifications_is_never_promised_more_than_its_capacity() {
    let (engine, sink) = engine(8, 150);
    let (exec, jobs) = ManualExecutor::new();
    engine.add_executor_with_capacity(exec, &["a".into(), "b".into()], 1);
    let tasks = engine
        .push(vec![spec("a", json!(1)), spec("b", json!(2))])
        .unwrap();
    let first = recv(&jobs);
    assert!(jobs.recv_timeout(Duration::from_millis(50)).is_err());
    // The other task was not claimed: still pending, no running event, no lease to expire.
    let other = if first.task_id == tasks[0].id {
        &tasks[1]
    } else {
        &tasks[0]
    };
    assert_eq!(engine.read(&other.id).unwrap().status, TaskStatus::Pending);
    assert_eq!(sink.statuses(&other.id), [TaskStatus::Pending]);
    engine.renew_executor(1).unwrap();
    engine
        .report(
            &first.task_id,
            first.token,
            Outcome::Succeed {
                output: Value::Null,
            },
        )
        .unwrap();
    let second = recv(&jobs);
    assert_eq!(second.task_id, other.id);
    engine
        .report(
            &second.task_id,
            second.token,
            Outcome::Succeed {
                output: Value::Null,
            },
        )
        .unwrap();
    sink.wait_status(&other.id, TaskStatus::Succeeded);
}

#[test]
fn a_scheduled_dependent_runs_on_time_once_its_dependency_succeeded() {
    let (engine, sink, _exec, jobs) = common::js_engine(4, 60_000);
    let a = engine.push(vec![spec("js", json!("a"))]).unwrap().remove(0);
    let at = now_ms() + 200;
    let mut b = spec("js", json!("b"));
    b.dependencies = Some(vec![a.id.to_string()]);
    b.scheduled_to = Some(at);
    let b = engine.push(vec![b]).unwrap().remove(0);
    let job_a = recv(&jobs);
    std::thread::sleep(Duration::from_millis(50));
    engine
        .report(&a.id, job_a.token, Outcome::Succeed { output: json!(1) })
        .unwrap();
    // Must run soon after `at`, not at the next lease-driven wake-up (a minute away).
    let job_b = jobs
        .recv_timeout(Duration::from_secs(5))
        .expect("b ran on time");
    assert_eq!(job_b.task_id, b.id);
    assert!(now_ms() >= at);
    let _ = sink;
}
