//! What only the shared store has: several stores (engines) on one schema claiming at
//! once, lock keys and leases across them, the other processes' events, clear errors on
//! a bad URL, server or schema, reconnection after the server dropped the connections;
//! and two engines sharing the work.

#![cfg(feature = "postgres")]

mod common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use common::pg::{self, Schema};
use common::RecordingSink;
use decaf_tasks_core::state;
use decaf_tasks_core::{
    ClaimRequest, Engine, EngineConfig, EngineError, Event, EventDraft, EventSink, HandlerResult,
    PostgresStore, Store, Task, TaskContext, TaskSpec, TaskStatus,
};
use parking_lot::{Condvar, Mutex};
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(10);

fn spec(classification: &str) -> TaskSpec {
    TaskSpec::new(classification, json!({"n": 1}))
}

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

fn claim(store: &dyn Store, limit: usize, now: i64, classes: &[&str]) -> Vec<Task> {
    let classifications: Vec<String> = classes.iter().map(|c| c.to_string()).collect();
    store
        .claim(&ClaimRequest {
            limit,
            now,
            owner: "me",
            lease_ms: 1000,
            classifications: &classifications,
            reserve: &|_| true,
            number: &number_claim,
        })
        .unwrap()
        .claimed
        .into_iter()
        .map(|c| c.task)
        .collect()
}

fn succeed(store: &dyn Store, id: &str, now: i64) {
    let mut number = |t: &mut Task, drafts: Vec<EventDraft>| number_claim(t, drafts);
    store
        .apply(
            id,
            &mut |t| state::succeed(t, t.lease_token, json!(1), now),
            &mut number,
        )
        .unwrap()
        .unwrap();
}

/// Counts the wake-ups of a subscription and lets the test wait for the next one.
#[derive(Default)]
struct Wakes {
    count: Mutex<usize>,
    changed: Condvar,
}

impl Wakes {
    fn subscribe(store: &dyn Store) -> Arc<Wakes> {
        let wakes = Arc::new(Wakes::default());
        let inner = Arc::clone(&wakes);
        store
            .subscribe(Arc::new(move || {
                *inner.count.lock() += 1;
                inner.changed.notify_all();
            }))
            .unwrap();
        wakes
    }

    fn count(&self) -> usize {
        *self.count.lock()
    }

    /// Waits until there were more than `seen` wake-ups.
    fn wait_past(&self, seen: usize) {
        let deadline = Instant::now() + WAIT;
        let mut count = self.count.lock();
        while *count <= seen {
            assert!(
                !self.changed.wait_until(&mut count, deadline).timed_out(),
                "no wake-up within {WAIT:?}"
            );
        }
    }
}

/// Calls `remote_events` until `n` events came out (or fails after [`WAIT`]).
fn remote_events(store: &dyn Store, n: usize) -> Vec<Event> {
    let deadline = Instant::now() + WAIT;
    let mut events = Vec::new();
    while events.len() < n {
        assert!(
            Instant::now() < deadline,
            "{} of {n} remote events within {WAIT:?}",
            events.len()
        );
        match store.remote_events() {
            Ok(more) if more.is_empty() => std::thread::sleep(Duration::from_millis(20)),
            Ok(more) => events.extend(more),
            Err(e) => {
                eprintln!("remote_events: {e}; trying again");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
    events
}

#[test]
fn two_stores_claiming_at_once_take_each_task_exactly_once() {
    const TASKS: usize = 500;
    let schema = Schema::new();
    let a = schema.store("a");
    let b = schema.store("b");
    let tasks: Vec<Task> = (0..TASKS)
        .map(|i| {
            let mut s = spec(if i % 2 == 0 { "x" } else { "y" });
            s.priority = Some((i % 3) as i32);
            state::create(s, format!("t{i}").into(), 10).task
        })
        .collect();
    for chunk in tasks.chunks(100) {
        a.insert(chunk, &[]).unwrap();
    }
    let stores: [&PostgresStore; 2] = [&a, &b];
    let start = Barrier::new(2);
    let taken: Vec<Vec<String>> = std::thread::scope(|scope| {
        let handles: Vec<_> = stores
            .iter()
            .map(|store| {
                let start = &start;
                scope.spawn(move || {
                    start.wait();
                    let deadline = Instant::now() + Duration::from_secs(60);
                    let mut mine = Vec::new();
                    loop {
                        let got = claim(*store, 7, 20, &["x", "y"]);
                        if got.is_empty() {
                            break;
                        }
                        assert!(Instant::now() < deadline, "claims took too long");
                        mine.extend(got.into_iter().map(|t| t.id.to_string()));
                    }
                    mine
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let all: Vec<&String> = taken.iter().flatten().collect();
    let unique: HashSet<&String> = all.iter().copied().collect();
    assert_eq!(all.len(), TASKS, "every task claimed once");
    assert_eq!(unique.len(), TASKS, "no task claimed twice");
    assert!(
        taken.iter().all(|mine| !mine.is_empty()),
        "both stores claimed: {} and {}",
        taken[0].len(),
        taken[1].len()
    );
    assert_eq!(a.list(&Default::default()).unwrap().len(), TASKS);
    assert!(a
        .list(&Default::default())
        .unwrap()
        .iter()
        .all(|t| t.status == TaskStatus::Running && t.lease_token == 1));
}

#[test]
fn a_claim_takes_only_the_classifications_it_serves() {
    let schema = Schema::new();
    let a = schema.store("a");
    create(&a, "x1", spec("x"), 10);
    create(&a, "y1", spec("y"), 11);
    assert!(claim(&a, 10, 20, &["z"]).is_empty());
    let ids: Vec<String> = claim(&a, 10, 20, &["y"])
        .into_iter()
        .map(|t| t.id.to_string())
        .collect();
    assert_eq!(ids, ["y1"]);
}

#[test]
fn a_lock_key_held_by_one_store_blocks_the_other() {
    let schema = Schema::new();
    let a = schema.store("a");
    let b = schema.store("b");
    let locked = || {
        let mut s = spec("x");
        s.lock = Some("k".into());
        s
    };
    create(&a, "first", locked(), 10);
    create(&a, "second", locked(), 11);
    create(&a, "free", spec("x"), 12);
    assert_eq!(claim(&a, 1, 20, &["x"])[0].id.to_string(), "first");
    let ids: Vec<String> = claim(&b, 10, 20, &["x"])
        .into_iter()
        .map(|t| t.id.to_string())
        .collect();
    assert_eq!(ids, ["free"], "the key is held by A's run");
    succeed(&a, "first", 30);
    let ids: Vec<String> = claim(&b, 10, 40, &["x"])
        .into_iter()
        .map(|t| t.id.to_string())
        .collect();
    assert_eq!(ids, ["second"], "the key was released when A's run ended");
}

#[test]
fn a_lock_key_is_held_by_one_run_at_a_time_across_concurrent_claims() {
    const TASKS: usize = 300;
    let schema = Schema::new();
    let stores: Vec<PostgresStore> = (0..4).map(|i| schema.store(&format!("s{i}"))).collect();
    let a = &stores[0];
    let tasks: Vec<Task> = (0..TASKS)
        .map(|i| {
            let mut s = spec("x");
            s.lock = Some("k".into());
            state::create(s, format!("t{i}").into(), 10).task
        })
        .collect();
    a.insert(&tasks, &[]).unwrap();
    let held = AtomicBool::new(false);
    let done = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for store in &stores {
            let (held, done) = (&held, &done);
            scope.spawn(move || {
                let deadline = Instant::now() + Duration::from_secs(60);
                while done.load(Ordering::SeqCst) < TASKS {
                    assert!(Instant::now() < deadline, "the runs took too long");
                    let got = claim(store, 5, 20, &["x"]);
                    assert!(got.len() <= 1, "two runs of one key in one claim");
                    let Some(task) = got.first() else {
                        std::thread::yield_now();
                        continue;
                    };
                    assert!(!held.swap(true, Ordering::SeqCst), "the key is held twice");
                    std::thread::sleep(Duration::from_millis(1));
                    // Let go before the end is committed: from then on the key is free.
                    held.store(false, Ordering::SeqCst);
                    succeed(store, &task.id, 30);
                    done.fetch_add(1, Ordering::SeqCst);
                }
            });
        }
    });
    assert_eq!(done.load(Ordering::SeqCst), TASKS);
}

#[test]
fn dependencies_are_followed_across_stores() {
    let schema = Schema::new();
    let a = schema.store("a");
    let b = schema.store("b");
    create(&a, "first", spec("x"), 10);
    let mut dependent = spec("x");
    dependent.dependencies = Some(vec!["first".into()]);
    create(&b, "then", dependent, 11);
    let ids: Vec<String> = claim(&b, 10, 20, &["x"])
        .into_iter()
        .map(|t| t.id.to_string())
        .collect();
    assert_eq!(ids, ["first"]);
    assert!(claim(&a, 10, 20, &["x"]).is_empty(), "`then` waits");
    succeed(&b, "first", 30);
    let ids: Vec<String> = claim(&a, 10, 40, &["x"])
        .into_iter()
        .map(|t| t.id.to_string())
        .collect();
    assert_eq!(ids, ["then"]);
}

#[test]
fn events_of_one_store_come_out_of_the_others_remote_events_in_order() {
    let schema = Schema::new();
    let a = schema.store("a");
    let b = schema.store("b");
    let wakes_a = Wakes::subscribe(&a);
    let wakes_b = Wakes::subscribe(&b);
    let seen = wakes_b.count();
    let task = create(&a, "t", spec("x"), 10);
    wakes_b.wait_past(seen);
    let created = remote_events(&b, 1);
    assert_eq!(created, a.events("t").unwrap());
    // Progress events appended by A, in several transactions.
    let mut sent = Vec::new();
    for i in 0..20u64 {
        let batch: Vec<Event> = (0..3)
            .map(|j| {
                Event::from_draft(
                    &task.id,
                    100 + i * 3 + j,
                    20,
                    EventDraft::progress(json!({"i": i, "j": j})),
                )
            })
            .collect();
        a.append_events(&batch).unwrap();
        sent.extend(batch);
    }
    let got = remote_events(&b, sent.len());
    assert_eq!(got, sent, "all of them, in commit order");
    std::thread::sleep(Duration::from_millis(200));
    assert!(b.remote_events().unwrap().is_empty(), "each event once");
    assert!(
        a.remote_events().unwrap().is_empty(),
        "a store's own events are not remote"
    );
    assert_eq!(wakes_a.count(), 0, "nothing woke A: nobody else wrote");
    // And the other way round.
    let b_event = Event::from_draft(&task.id, 999, 30, EventDraft::progress(json!("from b")));
    b.append_events(std::slice::from_ref(&b_event)).unwrap();
    assert_eq!(remote_events(&a, 1), [b_event]);
    assert!(wakes_a.count() > 0);
}

#[test]
fn a_claim_hands_over_the_other_stores_unread_events_of_its_tasks_first() {
    let schema = Schema::new();
    let a = schema.store("a");
    let b = schema.store("b");
    let _wakes = Wakes::subscribe(&b);
    create(&a, "t", spec("x"), 10);
    let created = a.events("t").unwrap();
    // B claims before it read A's news: the claim brings the task's creation first.
    let classifications = vec!["x".to_string()];
    let batch = b
        .claim(&ClaimRequest {
            limit: 1,
            now: 20,
            owner: "b",
            lease_ms: 1000,
            classifications: &classifications,
            reserve: &|_| true,
            number: &number_claim,
        })
        .unwrap();
    let events = &batch.claimed[0].events;
    assert_eq!(events.len(), 2, "{events:?}");
    assert_eq!(events[0], created[0]);
    assert_eq!(events[1].status(), Some(TaskStatus::Running));
    // And `remote_events` does not return it again.
    std::thread::sleep(Duration::from_millis(300));
    assert!(b.remote_events().unwrap().is_empty());
}

#[test]
fn an_expired_lease_of_one_store_is_recovered_by_the_other() {
    let schema = Schema::new();
    let a = schema.store("a");
    let b = schema.store("b");
    create(&a, "t", spec("x"), 10);
    let claimed = claim(&a, 1, 20, &["x"]);
    assert_eq!(claimed[0].lease_owner.as_deref(), Some("me"));
    assert_eq!(b.next_expiry().unwrap(), Some(1020));
    assert!(b.expired(1019, 10).unwrap().is_empty());
    let expired = b.expired(1020, 10).unwrap();
    assert_eq!(expired.len(), 1);
    assert_eq!(&*expired[0].id, "t");
    let mut number = |t: &mut Task, drafts: Vec<EventDraft>| number_claim(t, drafts);
    let (status, _) = b
        .apply("t", &mut |t| state::expire(t, 1020, 0.0), &mut number)
        .unwrap()
        .unwrap();
    assert_eq!(status, TaskStatus::Failed);
    // The old runner's result is refused: its token is stale.
    let late = a
        .apply(
            "t",
            &mut |t| state::succeed(t, 1, json!(1), 1030),
            &mut number,
        )
        .unwrap();
    assert!(late.is_err());
    assert_eq!(a.get("t").unwrap().unwrap().status, TaskStatus::Failed);
}

fn error_of(result: Result<PostgresStore, EngineError>) -> EngineError {
    match result {
        Err(e) => e,
        Ok(store) => panic!("expected an error, got {store:?}"),
    }
}

#[test]
fn a_bad_url_server_or_schema_is_a_clear_error_within_seconds() {
    let schema = Schema::new();
    let started = Instant::now();
    let bad_url = error_of(PostgresStore::connect("not a url", &schema.name, "a"));
    assert!(
        matches!(&bad_url, EngineError::Invalid(m) if m.starts_with("invalid PostgreSQL URL")),
        "{bad_url:?}"
    );
    let unreachable = error_of(PostgresStore::connect(
        "postgres://postgres@127.0.0.1:1/test",
        &schema.name,
        "a",
    ));
    assert!(
        matches!(&unreachable, EngineError::Store(m) if m.contains("127.0.0.1:1")),
        "{unreachable:?}"
    );
    for name in [
        "",
        "Upper",
        "1digit",
        "with-dash",
        "quote\"",
        &"x".repeat(64),
    ] {
        let bad = error_of(PostgresStore::connect(&pg::url(), name, "a"));
        assert!(
            matches!(&bad, EngineError::Invalid(m) if m.contains("invalid PostgreSQL schema name")),
            "{name}: {bad:?}"
        );
    }
    let no_origin = error_of(PostgresStore::connect(&pg::url(), &schema.name, ""));
    assert!(matches!(no_origin, EngineError::Invalid(_)));
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn a_schema_of_a_newer_version_is_refused() {
    let schema = Schema::new();
    drop(schema.store("a"));
    let future = PostgresStore::schema_version() + 1;
    let mut client = pg::client();
    client
        .execute(
            &format!("UPDATE \"{}\".decaf_meta SET version = $1", schema.name),
            &[&(future as i32)],
        )
        .unwrap();
    let refused = error_of(PostgresStore::connect(&pg::url(), &schema.name, "a"));
    assert!(
        matches!(&refused, EngineError::Invalid(m) if m.contains(&format!("has version {future}"))),
        "{refused:?}"
    );
    client
        .execute(
            &format!("UPDATE \"{}\".decaf_meta SET version = $1", schema.name),
            &[&(PostgresStore::schema_version() as i32)],
        )
        .unwrap();
    schema.store("a");
}

#[test]
fn stores_connecting_at_once_migrate_the_schema_once() {
    let schema = Schema::new();
    let stores: Vec<PostgresStore> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..4)
            .map(|i| {
                let schema = &schema;
                scope.spawn(move || schema.store(&format!("s{i}")))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    create(&stores[0], "t", spec("x"), 10);
    assert!(stores[3].get("t").unwrap().is_some());
}

/// Ends every connection of the stores of `origin` (what a restart of the server does).
fn terminate(origin: &str) -> u64 {
    let name = PostgresStore::application_name(origin);
    let rows = pg::client()
        .query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
            &[&name],
        )
        .unwrap();
    rows.len() as u64
}

#[test]
fn the_store_and_its_listener_reconnect_after_the_server_dropped_them() {
    let schema = Schema::new();
    let origin = format!("reconnect-{}", schema.name);
    let store = schema.store(&origin);
    let other = schema.store("other");
    let wakes = Wakes::subscribe(&store);
    create(&store, "t", spec("x"), 10);
    let before = wakes.count();
    assert_eq!(
        terminate(&origin),
        2,
        "the main connection and the listener"
    );
    // The next calls succeed: a connection found dropped is opened again.
    let deadline = Instant::now() + WAIT;
    let mut failures = 0;
    let task = loop {
        match store.get("t") {
            Ok(task) => break task,
            Err(e) => {
                failures += 1;
                assert!(Instant::now() < deadline, "no reconnection: {e}");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    };
    assert!(task.is_some());
    assert!(failures <= 1, "{failures} failed calls");
    create(&store, "u", spec("x"), 11);
    assert_eq!(claim(&store, 10, 20, &["x"]).len(), 2);
    // The listener came back: it woke the engine (nobody else wrote), and hears the
    // others again.
    wakes.wait_past(before);
    let deadline = Instant::now() + WAIT;
    while connections_of(&origin) < 2 {
        assert!(Instant::now() < deadline, "the listener did not reconnect");
        std::thread::sleep(Duration::from_millis(50));
    }
    let seen = wakes.count();
    let event = Event::from_draft(&"t".into(), 50, 30, EventDraft::progress(json!("news")));
    other.append_events(std::slice::from_ref(&event)).unwrap();
    wakes.wait_past(seen);
    let got = remote_events(&store, 1);
    assert!(got.contains(&event), "{got:?}");
}

/// How many connections the stores of `origin` have.
fn connections_of(origin: &str) -> i64 {
    let name = PostgresStore::application_name(origin);
    pg::client()
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1",
            &[&name],
        )
        .unwrap()
        .get(0)
}

#[test]
fn a_write_on_a_dropped_connection_fails_or_commits_and_is_never_lost() {
    let schema = Schema::new();
    let origin = format!("writes-{}", schema.name);
    let store = schema.store(&origin);
    let mut acknowledged = Vec::new();
    for i in 0..30 {
        if i % 10 == 5 {
            terminate(&origin);
        }
        let id = format!("t{i}");
        let task = state::create(spec("x"), id.as_str().into(), 10).task;
        if store.insert(&[task], &[]).is_ok() {
            acknowledged.push(id);
        }
    }
    assert!(acknowledged.len() >= 27, "{acknowledged:?}");
    for id in acknowledged {
        assert!(store.get(&id).unwrap().is_some(), "{id} was acknowledged");
    }
}

/// Native handler classifications of the engine test.
const ON_B: &str = "native:only-b";
const ON_A: &str = "native:only-a";

fn engine(store: PostgresStore, owner: &str, sink: Arc<RecordingSink>) -> Engine {
    let config = EngineConfig {
        owner: owner.into(),
        concurrency: 8,
        native_threads: 2,
        lease_ms: 5_000,
        ..EngineConfig::default()
    };
    Engine::new(config, Arc::new(store), sink as Arc<dyn EventSink>).unwrap()
}

#[test]
fn a_task_pushed_on_one_engine_runs_on_the_one_that_serves_it_and_both_hear_of_it() {
    let schema = Schema::new();
    let sink_a = Arc::new(RecordingSink::default());
    let sink_b = Arc::new(RecordingSink::default());
    let a = engine(schema.store("a"), "a", Arc::clone(&sink_a));
    let b = engine(schema.store("b"), "b", Arc::clone(&sink_b));
    let ran_on = Arc::new(Mutex::new(Vec::new()));
    for (engine, name, classification) in [(&a, "a", ON_A), (&b, "b", ON_B)] {
        let ran_on = Arc::clone(&ran_on);
        engine
            .register_native(
                classification,
                Arc::new(move |input: &Value, _ctx: &TaskContext| -> HandlerResult {
                    ran_on.lock().push(name);
                    Ok(json!({"by": name, "input": input}))
                }),
            )
            .unwrap();
    }
    let pushed = a
        .push(
            (0..5)
                .map(|i| TaskSpec::new(ON_B, json!(i)))
                .chain([TaskSpec::new(ON_A, json!("here"))])
                .collect(),
        )
        .unwrap();
    for task in &pushed {
        sink_a.wait_status(&task.id, TaskStatus::Succeeded);
    }
    let ran = ran_on.lock().clone();
    assert_eq!(ran.iter().filter(|n| **n == "b").count(), 5, "{ran:?}");
    assert_eq!(ran.iter().filter(|n| **n == "a").count(), 1, "{ran:?}");
    for task in &pushed[..5] {
        let statuses = sink_a.statuses(&task.id);
        assert_eq!(
            statuses,
            [
                TaskStatus::Pending,
                TaskStatus::Running,
                TaskStatus::Succeeded
            ],
            "A hears B's events of the task it pushed, in order"
        );
        let done = a.read(&task.id).unwrap();
        assert_eq!(done.output.as_ref().unwrap()["by"], "b");
        // B heard of the push and ran it; its own events went to its sink (maybe a
        // moment after A heard of them: a sink hears of a change once it is committed).
        sink_b.wait_status(&task.id, TaskStatus::Succeeded);
        assert_eq!(
            sink_b.statuses(&task.id),
            [
                TaskStatus::Pending,
                TaskStatus::Running,
                TaskStatus::Succeeded
            ]
        );
        // One engine-wide order: each task's events keep increasing.
        let seqs: Vec<u64> = a.events(&task.id).unwrap().iter().map(|e| e.seq).collect();
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    }
    // A watched the tasks it pushed until they ended.
    let deadline = Instant::now() + WAIT;
    while a.active_count().unwrap() > 0 {
        assert!(Instant::now() < deadline, "A still counts tasks as active");
        std::thread::sleep(Duration::from_millis(20));
    }
    a.shutdown(Duration::from_secs(5)).unwrap();
    b.shutdown(Duration::from_secs(5)).unwrap();
}

#[test]
fn a_shut_down_engine_closes_its_connections_and_still_reads() {
    let schema = Schema::new();
    let origin = format!("closing-{}", schema.name);
    let sink = Arc::new(RecordingSink::default());
    let a = engine(schema.store(&origin), &origin, Arc::clone(&sink));
    a.register_native(
        ON_A,
        Arc::new(|_: &Value, _: &TaskContext| -> HandlerResult { Ok(json!(null)) }),
    )
    .unwrap();
    let pushed = a.push(vec![TaskSpec::new(ON_A, json!(null))]).unwrap();
    sink.wait_status(&pushed[0].id, TaskStatus::Succeeded);
    assert_eq!(
        connections_of(&origin),
        2,
        "the main connection and the listener"
    );
    a.shutdown(Duration::from_secs(5)).unwrap();
    let deadline = Instant::now() + WAIT;
    while connections_of(&origin) > 0 {
        assert!(
            Instant::now() < deadline,
            "connections left open after shutdown"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // Reads after shutdown open a connection again.
    let task = a.read(&pushed[0].id).unwrap();
    assert_eq!(task.status, TaskStatus::Succeeded);
}

#[test]
fn a_cancel_on_one_engine_stops_the_run_on_the_other_and_frees_its_slot() {
    let schema = Schema::new();
    let sink_a = Arc::new(RecordingSink::default());
    let sink_b = Arc::new(RecordingSink::default());
    let a = engine(schema.store("a"), "a", Arc::clone(&sink_a));
    let b = engine(schema.store("b"), "b", Arc::clone(&sink_b));
    let stopped = Arc::new(Mutex::new(None));
    let seen = Arc::clone(&stopped);
    b.register_native(
        ON_B,
        Arc::new(move |_: &Value, ctx: &TaskContext| -> HandlerResult {
            let deadline = Instant::now() + WAIT;
            while !ctx.is_aborted() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            *seen.lock() = ctx.abort_reason();
            Ok(json!("late"))
        }),
    )
    .unwrap();
    let task = a
        .push(vec![TaskSpec::new(ON_B, json!(null))])
        .unwrap()
        .remove(0);
    sink_b.wait_status(&task.id, TaskStatus::Running);
    a.cancel(&task.id, Some("from a".into())).unwrap();
    sink_b.wait_status(&task.id, TaskStatus::Canceled);
    let deadline = Instant::now() + WAIT;
    while b.active_count().unwrap() > 0 || stopped.lock().is_none() {
        assert!(Instant::now() < deadline, "B's run was not stopped");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(*stopped.lock(), Some(state::StopReason::Canceled));
    // The late result changed nothing.
    assert_eq!(a.read(&task.id).unwrap().status, TaskStatus::Canceled);
    a.shutdown(Duration::from_secs(5)).unwrap();
    b.shutdown(Duration::from_secs(5)).unwrap();
}

/// The planner's idea of the task table's size (-1: never analyzed).
fn planned_tasks(schema: &Schema) -> f32 {
    pg::client()
        .query_one(
            "SELECT c.reltuples FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = $1 AND c.relname = 'task'",
            &[&schema.name],
        )
        .unwrap()
        .get(0)
}

#[test]
fn a_store_analyzes_its_tables_as_they_grow() {
    let schema = Schema::new();
    let store = schema.store("growing");
    let batch = |from: usize, n: usize| {
        let tasks: Vec<Task> = (from..from + n)
            .map(|i| state::create(spec("x"), format!("t{i}").as_str().into(), 10).task)
            .collect();
        store.insert(&tasks, &[]).unwrap();
    };
    batch(0, 900);
    assert!(
        planned_tasks(&schema) < 900.0,
        "analyzed before it grew (autovacuum?)"
    );
    batch(900, 200);
    // Written by the ANALYZE the store ran after the write that crossed 1000 rows.
    assert_eq!(planned_tasks(&schema), 1100.0);
}
