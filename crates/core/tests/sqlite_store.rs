//! What only the durable store has: data that outlives the process, a versioned schema,
//! clear errors on a bad path, claims shared by several stores on one file; and a check
//! that its claims match the memory store's on random workloads.

#![cfg(feature = "sqlite")]

use std::collections::{BTreeSet, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use decaf_tasks_core::state;
use decaf_tasks_core::{
    ClaimBatch, ClaimRequest, Engine, EngineConfig, EngineError, Event, EventDraft, HandlerResult,
    MemoryStore, NullSink, SqliteStore, Store, Task, TaskContext, TaskError, TaskSpec, TaskStatus,
};
use proptest::prelude::*;
use serde_json::{json, Value};

fn create(store: &dyn Store, id: &str, spec: TaskSpec, now: i64) -> Task {
    let change = state::create(spec, id.into(), now);
    let events: Vec<Event> = change
        .events
        .into_iter()
        .map(|d| Event::from_draft(&change.task.id, 0, now, d))
        .collect();
    store
        .insert(std::slice::from_ref(&change.task), &events)
        .unwrap();
    change.task
}

fn claim_with(
    store: &dyn Store,
    limit: usize,
    now: i64,
    owner: &str,
    reserve: &dyn Fn(&str) -> bool,
) -> ClaimBatch {
    store
        .claim(&ClaimRequest {
            limit,
            now,
            owner,
            lease_ms: 1000,
            classifications: &[],
            reserve,
            number: &number_claim,
        })
        .unwrap()
}

fn claim(store: &dyn Store, limit: usize, now: i64) -> Vec<Task> {
    claim_with(store, limit, now, "me", &|_| true)
        .claimed
        .into_iter()
        .map(|c| c.task)
        .collect()
}

/// Applies a transition, numbering its events with sequence 0.
fn apply(
    store: &dyn Store,
    id: &str,
    now: i64,
    mut transition: impl FnMut(&Task) -> Result<state::Change, state::Refused>,
) -> Result<(TaskStatus, Vec<Event>), state::Refused> {
    let mut number = |t: &mut Task, drafts: Vec<EventDraft>| {
        drafts
            .into_iter()
            .map(|d| Event::from_draft(&t.id, 0, now, d))
            .collect()
    };
    store.apply(id, &mut transition, &mut number).unwrap()
}

fn spec(classification: &str) -> TaskSpec {
    TaskSpec::new(classification, json!({"n": 1}))
}

fn invalid_message(result: Result<SqliteStore, EngineError>) -> String {
    match result {
        Err(EngineError::Invalid(message)) => message,
        other => panic!("expected EngineError::Invalid, got {other:?}"),
    }
}

#[test]
fn tasks_events_and_leases_survive_close_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tasks.db");
    let (before, events_before) = {
        let store = SqliteStore::open(&path).unwrap();
        let mut locked = spec("a");
        locked.lock = Some("k".into());
        create(&store, "run", locked.clone(), 10);
        create(&store, "same-lock", locked, 11);
        create(&store, "done", spec("a"), 12);
        let mut later = spec("a");
        later.scheduled_to = Some(5_000);
        create(&store, "later", later, 13);
        let mut dependent = spec("a");
        dependent.dependencies = Some(vec!["run".into()]);
        create(&store, "dependent", dependent, 14);
        let claimed: Vec<String> = claim(&store, 2, 20)
            .into_iter()
            .map(|t| t.id.to_string())
            .collect();
        assert_eq!(claimed, ["run", "done"]);
        // A `null` output must stay present.
        apply(&store, "done", 30, |t| {
            state::succeed(t, t.lease_token, Value::Null, 30)
        })
        .unwrap();
        apply(&store, "run", 31, |t| {
            state::progress(t, t.lease_token, json!({"status": "running", "pct": 50}))
        })
        .unwrap();
        let tasks = store.list(&Default::default()).unwrap();
        let events: Vec<Vec<Event>> = tasks.iter().map(|t| store.events(&t.id).unwrap()).collect();
        (tasks, events)
    };
    let store = SqliteStore::open(&path).unwrap();
    let after = store.list(&Default::default()).unwrap();
    assert_eq!(after, before);
    for (task, events) in after.iter().zip(&events_before) {
        assert_eq!(&store.events(&task.id).unwrap(), events);
    }
    let done = store.get("done").unwrap().unwrap();
    assert_eq!(done.output, Some(Value::Null));
    assert_eq!(done.version, 2);
    // Created, claimed (the claim stores its `running` event), progress.
    assert_eq!(store.events("run").unwrap().len(), 3);
    assert_eq!(store.active_count().unwrap(), 4);
    assert_eq!(store.next_due().unwrap(), Some(5_000));
    // The lease of the running task: held, then expired once its time passed.
    assert_eq!(store.next_expiry().unwrap(), Some(1_020));
    assert!(store.expired(1_019, 10).unwrap().is_empty());
    let expired = store.expired(1_020, 10).unwrap();
    assert_eq!(expired.len(), 1);
    assert_eq!(&*expired[0].id, "run");
    assert_eq!(expired[0].lease_token, 1);
    // Its lock still holds and the dependent still waits.
    assert!(claim(&store, 10, 100).is_empty());
    apply(&store, "run", 200, |t| {
        state::succeed(t, t.lease_token, json!(1), 200)
    })
    .unwrap();
    let ids: Vec<String> = claim(&store, 10, 300)
        .into_iter()
        .map(|t| t.id.to_string())
        .collect();
    assert_eq!(ids, ["same-lock", "dependent"]);
}

#[test]
fn a_database_of_a_newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("future.db");
    drop(SqliteStore::open(&path).unwrap());
    let future = SqliteStore::schema_version() + 1;
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.pragma_update(None, "user_version", future).unwrap();
    }
    let message = invalid_message(SqliteStore::open(&path));
    assert!(
        message.contains("cannot open SQLite database at"),
        "{message}"
    );
    assert!(
        message.contains(&format!("schema version is {future}")),
        "{message}"
    );
    assert!(
        message.contains(&format!("versions up to {}", SqliteStore::schema_version())),
        "{message}"
    );
    // A database of the current version opens again once it is set back.
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.pragma_update(None, "user_version", SqliteStore::schema_version())
            .unwrap();
    }
    SqliteStore::open(&path).unwrap();
}

#[test]
fn a_bad_path_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-dir").join("tasks.db");
    let message = invalid_message(SqliteStore::open(&missing));
    assert!(
        message.starts_with(&format!(
            "cannot open SQLite database at '{}'",
            missing.display()
        )),
        "{message}"
    );
    assert!(message.contains("does not exist"), "{message}");

    // Under a regular file: no directory can be made there, whoever runs the test.
    let file = dir.path().join("a-file");
    std::fs::write(&file, "not a directory").unwrap();
    let message = invalid_message(SqliteStore::open(file.join("tasks.db")));
    assert!(message.contains("is not a directory"), "{message}");
    assert!(
        message.contains("cannot open SQLite database at"),
        "{message}"
    );

    // A file that is not a database.
    let garbage = dir.path().join("garbage.db");
    std::fs::write(&garbage, vec![b'x'; 4096]).unwrap();
    let message = invalid_message(SqliteStore::open(&garbage));
    assert!(message.contains("not a database"), "{message}");
}

#[test]
fn two_stores_on_one_file_never_lease_a_task_twice() {
    const TASKS: usize = 400;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shared.db");
    let first = SqliteStore::open(&path).unwrap();
    let tasks: Vec<Task> = (0..TASKS)
        .map(|i| {
            let mut s = spec(if i % 2 == 0 { "a" } else { "b" });
            // Some tasks share locks, so that the stores also contend on them.
            s.lock = (i % 5 == 0).then(|| format!("k{}", i % 3));
            state::create(s, format!("t{i}").into(), 0).task
        })
        .collect();
    first.insert(&tasks, &[]).unwrap();
    let second = SqliteStore::open(&path).unwrap();
    let workers: Vec<_> = [first, second]
        .into_iter()
        .enumerate()
        .map(|(n, store)| {
            std::thread::spawn(move || {
                let owner = format!("store-{n}");
                let mut mine = Vec::new();
                let mut idle = 0;
                while idle < 50 {
                    let batch = claim_with(&store, 3, 10, &owner, &|_| true);
                    if batch.claimed.is_empty() {
                        idle += 1;
                        std::thread::yield_now();
                        continue;
                    }
                    idle = 0;
                    for task in batch.claimed.into_iter().map(|c| c.task) {
                        assert_eq!(task.lease_owner.as_deref(), Some(owner.as_str()));
                        apply(&store, &task.id, 20, |t| {
                            state::succeed(t, task.lease_token, json!(n), 20)
                        })
                        .expect("the lease is still ours");
                        mine.push(task.id.to_string());
                    }
                }
                mine
            })
        })
        .collect();
    let claims: Vec<Vec<String>> = workers.into_iter().map(|w| w.join().unwrap()).collect();
    let all: Vec<&String> = claims.iter().flatten().collect();
    let unique: HashSet<&String> = all.iter().copied().collect();
    let per_store: Vec<usize> = claims.iter().map(Vec::len).collect();
    assert_eq!(all.len(), TASKS, "claims per store: {per_store:?}");
    assert_eq!(unique.len(), TASKS);
    let store = SqliteStore::open(&path).unwrap();
    assert_eq!(store.active_count().unwrap(), 0);
}

#[test]
fn the_engine_runs_tasks_on_a_sqlite_store() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("engine.db");
    let store = Arc::new(SqliteStore::open(&path).unwrap());
    let engine = Engine::new(
        EngineConfig {
            native_threads: 2,
            ..EngineConfig::default()
        },
        store,
        Arc::new(NullSink),
    )
    .unwrap();
    engine
        .register_native(
            "native:double",
            Arc::new(|input: &Value, _: &TaskContext| -> HandlerResult {
                Ok(json!(input.as_i64().unwrap_or(0) * 2))
            }),
        )
        .unwrap();
    let first = engine
        .push(vec![TaskSpec::new("native:double", json!(21))])
        .unwrap()
        .remove(0);
    let mut dependent = TaskSpec::new("native:double", json!(1));
    dependent.dependencies = Some(vec![first.id.to_string()]);
    let second = engine.push(vec![dependent]).unwrap().remove(0);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while engine.active_count().unwrap() > 0 {
        assert!(std::time::Instant::now() < deadline, "tasks did not finish");
        std::thread::sleep(Duration::from_millis(5));
    }
    engine.shutdown(Duration::from_secs(5)).unwrap();
    drop(engine);
    let store = SqliteStore::open(&path).unwrap();
    assert_eq!(
        store.get(&first.id).unwrap().unwrap().output,
        Some(json!(42))
    );
    assert_eq!(
        store.get(&second.id).unwrap().unwrap().output,
        Some(json!(2))
    );
    let statuses: Vec<_> = store
        .events(&second.id)
        .unwrap()
        .iter()
        .filter_map(Event::status)
        .collect();
    assert_eq!(
        statuses,
        [
            TaskStatus::Pending,
            TaskStatus::Running,
            TaskStatus::Succeeded
        ]
    );
}

/// One step of a random workload.
#[derive(Debug, Clone)]
enum Op {
    Push {
        classification: u8,
        priority: i32,
        delay: Option<i64>,
        lock: Option<u8>,
        dependencies: Vec<usize>,
    },
    Claim {
        limit: usize,
        room_a: u32,
    },
    Finish {
        pick: usize,
        outcome: u8,
    },
    Cancel {
        pick: usize,
    },
    Tick {
        ms: i64,
    },
    /// Many tasks at once, so that claims read more than one page.
    Bulk {
        count: usize,
        seed: u64,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (
            0u8..3,
            -1i32..2,
            prop::option::weighted(0.3, 1i64..50),
            prop::option::weighted(0.3, 0u8..2),
            prop::collection::vec(0usize..64, 0..3),
        )
            .prop_map(|(classification, priority, delay, lock, dependencies)| Op::Push {
                classification,
                priority,
                delay,
                lock,
                dependencies,
            }),
        3 => (0usize..100, 0u32..80).prop_map(|(limit, room_a)| Op::Claim { limit, room_a }),
        3 => (0usize..64, 0u8..4).prop_map(|(pick, outcome)| Op::Finish { pick, outcome }),
        1 => (0usize..64).prop_map(|pick| Op::Cancel { pick }),
        2 => (1i64..40).prop_map(|ms| Op::Tick { ms }),
        1 => (60usize..200, any::<u64>()).prop_map(|(count, seed)| Op::Bulk { count, seed }),
    ]
}

/// Runs `ops` on a store and records everything observable.
fn run(store: &dyn Store, ops: &[Op]) -> Vec<String> {
    let mut seen = Vec::new();
    let mut now = 100;
    let mut ids: Vec<String> = Vec::new();
    for op in ops {
        match op {
            Op::Push {
                classification,
                priority,
                delay,
                lock,
                dependencies,
            } => {
                let mut s = spec(["a", "b", "c"][usize::from(*classification)]);
                s.priority = Some(*priority);
                s.scheduled_to = delay.map(|d| now + d);
                s.lock = lock.map(|l| format!("k{l}"));
                s.max_attempts = Some(2);
                s.backoff = Some(decaf_tasks_core::Backoff {
                    strategy: decaf_tasks_core::BackoffStrategy::Fixed,
                    base_ms: 10,
                    max_ms: 10,
                    jitter: decaf_tasks_core::Jitter::None,
                });
                let deps: BTreeSet<String> = dependencies
                    .iter()
                    .filter(|_| !ids.is_empty())
                    .map(|d| ids[d % ids.len()].clone())
                    .collect();
                s.dependencies = Some(deps.into_iter().collect());
                let id = format!("t{}", ids.len());
                create(store, &id, s, now);
                ids.push(id);
            }
            Op::Claim { limit, room_a } => {
                let left = std::cell::Cell::new(*room_a);
                let reserve = |c: &str| {
                    if c != "a" {
                        return c == "b";
                    }
                    let l = left.get();
                    left.set(l.saturating_sub(1));
                    l > 0
                };
                let batch = claim_with(store, *limit, now, "me", &reserve);
                let claimed: Vec<String> = batch
                    .claimed
                    .iter()
                    .map(|c| c.task.id.to_string())
                    .collect();
                // The engine fails blocked tasks whose dependency failed, right away. (The
                // memory store may hand over a task the same claim already failed; only
                // failures that change a task are compared.)
                let mut doomed = BTreeSet::new();
                for f in &batch.dependency_failures {
                    let failed = apply(store, &f.task_id, now, |t| {
                        state::dependency_failed(t, &f.dependency, f.status, now)
                    });
                    if failed.is_ok() {
                        doomed.insert(f.task_id.to_string());
                    }
                }
                seen.push(format!("claim {claimed:?} doomed {doomed:?}"));
            }
            Op::Finish { pick, outcome } => {
                if ids.is_empty() {
                    continue;
                }
                let id = &ids[pick % ids.len()];
                let result = apply(store, id, now, |t| match outcome {
                    0 => state::succeed(t, t.lease_token, json!(1), now),
                    1 => state::fail(t, t.lease_token, TaskError::new("x"), now, 0.0),
                    2 => state::reschedule(t, t.lease_token, now + 15, None, now),
                    _ => state::release(t, t.lease_token, now),
                })
                .map(|(status, _)| status);
                seen.push(format!("finish {id} {result:?}"));
            }
            Op::Cancel { pick } => {
                if ids.is_empty() {
                    continue;
                }
                let id = &ids[pick % ids.len()];
                let result = apply(store, id, now, |t| state::cancel(t, None, now))
                    .map(|(status, _)| status);
                seen.push(format!("cancel {id} {result:?}"));
            }
            Op::Tick { ms } => now += ms,
            Op::Bulk { count, seed } => {
                let mut rng = fastrand::Rng::with_seed(*seed);
                let tasks: Vec<Task> = (0..*count)
                    .map(|i| {
                        let mut s = spec(["a", "b", "c"][rng.usize(0..3)]);
                        s.priority = Some(rng.i32(-1..2));
                        let lock = rng.u8(0..6);
                        s.lock = (lock < 3).then(|| format!("k{lock}"));
                        let id = format!("t{}", ids.len() + i);
                        state::create(s, id.into(), now).task
                    })
                    .collect();
                store.insert(&tasks, &[]).unwrap();
                ids.extend(tasks.iter().map(|t| t.id.to_string()));
            }
        }
        seen.push(format!(
            "due {:?} expiry {:?} active {}",
            store.next_due().unwrap(),
            store.next_expiry().unwrap(),
            store.active_count().unwrap()
        ));
    }
    seen.push(format!("{:?}", store.expired(now + 2_000, 100).unwrap()));
    seen.push(format!("{:?}", store.list(&Default::default()).unwrap()));
    seen
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn claims_match_the_memory_store(ops in prop::collection::vec(op(), 1..60)) {
        let memory = run(&MemoryStore::new(), &ops);
        let sqlite = run(&SqliteStore::open_in_memory().unwrap(), &ops);
        prop_assert_eq!(memory, sqlite);
    }
}

#[test]
fn a_store_in_memory_opens() {
    let store = SqliteStore::open_in_memory().unwrap();
    create(&store, "t", spec("a"), 1);
    assert_eq!(store.active_count().unwrap(), 1);
    assert!(format!("{store:?}").contains(":memory:"));
    assert!(!Path::new(":memory:").exists());
}

/// Numbers a claim's events after the task's own last event.
fn number_claim(task: &mut Task, drafts: Vec<EventDraft>) -> Vec<Event> {
    drafts
        .into_iter()
        .map(|d| {
            task.last_seq += 1;
            Event::from_draft(&task.id, task.last_seq, 0, d)
        })
        .collect()
}
