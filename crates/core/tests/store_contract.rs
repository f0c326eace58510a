//! The `Store` contract: what every store must do, written once against the trait so that
//! each implementation (memory, SQLite, PostgreSQL) runs the same suite.

mod common;

use std::cell::Cell;

use decaf_tasks_core::state;
use decaf_tasks_core::{
    ClaimRequest, Event, EventDraft, MemoryStore, Retention, Store, Task, TaskSpec, TaskStatus,
};
use serde_json::json;

/// Every contract test, run against a fresh store from `make`.
fn contract(make: impl Fn() -> Box<dyn Store>) {
    insert_get_list_and_events(&*make());
    update_is_compare_and_set(&*make());
    apply_refusals_change_nothing(&*make());
    apply_many_applies_in_order_one_result_each(&*make());
    claim_order_priority_due_then_insertion(&*make());
    claim_stops_a_classification_without_room(&*make());
    claim_skips_held_locks_without_blocking_others(&*make());
    dependencies_gate_claims(&*make());
    timers_and_leases(&*make());
    retention_purges_ended_tasks(&*make());
}

#[test]
fn memory_store_keeps_the_contract() {
    contract(|| Box::new(MemoryStore::new()));
}

#[cfg(feature = "sqlite")]
#[test]
fn sqlite_store_keeps_the_contract() {
    // One fresh database file per store, all removed with the directory.
    let dir = tempfile::tempdir().unwrap();
    let count = Cell::new(0);
    contract(|| {
        count.set(count.get() + 1);
        let path = dir.path().join(format!("contract-{}.db", count.get()));
        Box::new(decaf_tasks_core::SqliteStore::open(path).unwrap())
    });
}

/// One fresh schema per store, all dropped at the end.
#[cfg(feature = "postgres")]
#[test]
fn postgres_store_keeps_the_contract() {
    let schemas = std::cell::RefCell::new(Vec::new());
    contract(|| {
        let schema = common::pg::Schema::new();
        let store = schema.store("contract");
        schemas.borrow_mut().push(schema);
        Box::new(store)
    });
}

/// The classifications the contract's tasks have (a store may limit claims to those the
/// engine serves).
fn classifications() -> Vec<String> {
    vec!["a".into(), "b".into()]
}

fn task(store: &dyn Store, seq: &Cell<u64>, spec: TaskSpec, now: i64) -> Task {
    let id = format!("t{}", seq.get());
    seq.set(seq.get() + 1);
    let change = state::create(spec, id.as_str().into(), now);
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

fn spec(classification: &str) -> TaskSpec {
    TaskSpec::new(classification, json!(null))
}

fn claim(store: &dyn Store, limit: usize, now: i64, room: &dyn Fn(&str) -> bool) -> Vec<String> {
    store
        .claim(&ClaimRequest {
            limit,
            now,
            owner: "me",
            lease_ms: 1000,
            classifications: &classifications(),
            reserve: room,
            number: &number_claim,
        })
        .unwrap()
        .claimed
        .into_iter()
        .map(|t| t.task.id.to_string())
        .collect()
}

fn any(_: &str) -> bool {
    true
}

fn finish(store: &dyn Store, id: &str, status: TaskStatus, now: i64) {
    let mut number = |_: &mut Task, drafts: Vec<EventDraft>| {
        drafts
            .into_iter()
            .map(|d| Event::from_draft(&id.into(), 0, now, d))
            .collect()
    };
    let mut transition = |t: &Task| match status {
        TaskStatus::Succeeded => state::succeed(t, t.lease_token, json!(1), now),
        TaskStatus::Canceled => state::cancel(t, None, now),
        _ => state::fail(
            t,
            t.lease_token,
            decaf_tasks_core::TaskError::new("x"),
            now,
            0.0,
        ),
    };
    store
        .apply(id, &mut transition, &mut number)
        .unwrap()
        .unwrap();
}

fn apply_many_applies_in_order_one_result_each(store: &dyn Store) {
    let seq = Cell::new(0);
    let mut l = spec("a");
    l.lock = Some("L".into());
    let locked = task(store, &seq, l, 10);
    let plain = task(store, &seq, spec("b"), 11);
    let waiting = {
        let mut s = spec("b");
        s.dependencies = Some(vec![locked.id.to_string()]);
        task(store, &seq, s, 12)
    };
    assert_eq!(claim(store, 10, 20, &any).len(), 2, "the dependent waits");
    let number = Cell::new(100_u64);
    let mut numbering = |t: &mut Task, drafts: Vec<EventDraft>| {
        drafts
            .into_iter()
            .map(|d| {
                number.set(number.get() + 1);
                t.last_seq = number.get();
                Event::from_draft(&t.id, number.get(), 30, d)
            })
            .collect()
    };
    let mut succeed = |t: &Task| state::succeed(t, t.lease_token, json!("done"), 30);
    let mut again = |t: &Task| state::succeed(t, t.lease_token, json!("twice"), 30);
    let mut fail = |t: &Task| {
        state::fail(
            t,
            t.lease_token,
            decaf_tasks_core::TaskError::new("x"),
            30,
            0.0,
        )
    };
    let mut cancel = |t: &Task| state::cancel(t, None, 30);
    let mut batch: Vec<(&str, decaf_tasks_core::Transition<'_>)> = vec![
        (&locked.id, &mut succeed),
        ("missing", &mut cancel),
        (&plain.id, &mut fail),
        // The second change of a task in one batch sees the first: it ended already.
        (&locked.id, &mut again),
    ];
    let results = store.apply_many(&mut batch, &mut numbering);
    assert_eq!(results.len(), 4);
    let (status, events) = results[0].clone().unwrap().unwrap();
    assert_eq!(status, TaskStatus::Succeeded);
    assert_eq!(events.iter().map(|e| e.seq).collect::<Vec<_>>(), [101]);
    assert!(results[1].is_err(), "a missing task fails alone");
    let (status, events) = results[2].clone().unwrap().unwrap();
    assert_eq!(status, TaskStatus::Failed);
    assert_eq!(events[0].seq, 102);
    assert!(results[3].clone().unwrap().is_err(), "refused: it ended");
    assert_eq!(
        store.get(&locked.id).unwrap().unwrap().output,
        Some(json!("done"))
    );
    let stored: Vec<u64> = store
        .events(&locked.id)
        .unwrap()
        .iter()
        .map(|e| e.seq)
        .collect();
    assert_eq!(stored.last(), Some(&101));
    // The lock was released and the dependency met: the dependent runs, another task on L too.
    let mut l = spec("a");
    l.lock = Some("L".into());
    let next_on_l = task(store, &seq, l, 40);
    let mut got = claim(store, 10, 50, &any);
    got.sort();
    assert_eq!(got, [waiting.id.to_string(), next_on_l.id.to_string()]);
}

fn insert_get_list_and_events(store: &dyn Store) {
    let seq = Cell::new(0);
    let a = task(store, &seq, spec("a"), 10);
    let b = task(store, &seq, spec("b"), 11);
    assert_eq!(store.get(&a.id).unwrap(), Some(a.clone()));
    assert_eq!(store.get("nope").unwrap(), None);
    let all = store.list(&Default::default()).unwrap();
    assert_eq!(
        all.iter().map(|t| t.id.to_string()).collect::<Vec<_>>(),
        ["t0", "t1"]
    );
    let only_b = store
        .list(&decaf_tasks_core::ListFilter {
            classification: Some("b".into()),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(only_b, [b]);
    let paged = store
        .list(&decaf_tasks_core::ListFilter {
            offset: Some(1),
            limit: Some(5),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(paged.len(), 1);
    assert_eq!(store.events(&a.id).unwrap().len(), 1);
    assert!(store.events("nope").is_err());
    assert_eq!(store.active_count().unwrap(), 2);
    // Duplicate ids are refused, nothing of the batch stored.
    assert!(store.insert(std::slice::from_ref(&a), &[]).is_err());
    assert_eq!(store.list(&Default::default()).unwrap().len(), 2);
}

fn update_is_compare_and_set(store: &dyn Store) {
    let seq = Cell::new(0);
    let a = task(store, &seq, spec("a"), 10);
    let mut next = a.clone();
    next.priority = 5;
    next.version = a.version + 1;
    assert!(store.update(next.clone(), &[]).unwrap());
    // Same version again: somebody else's stale view.
    assert!(!store.update(next, &[]).unwrap());
    assert_eq!(store.get(&a.id).unwrap().unwrap().priority, 5);
}

fn apply_refusals_change_nothing(store: &dyn Store) {
    let seq = Cell::new(0);
    let a = task(store, &seq, spec("a"), 10);
    let mut number = |_: &mut Task, d: Vec<EventDraft>| {
        d.into_iter()
            .map(|d| Event::from_draft(&a.id, 0, 10, d))
            .collect()
    };
    let refused = store
        .apply(
            &a.id,
            &mut |t| state::succeed(t, 7, json!(1), 10),
            &mut number,
        )
        .unwrap();
    assert_eq!(refused, Err(state::Refused::Stale));
    assert_eq!(store.get(&a.id).unwrap(), Some(a.clone()));
    assert_eq!(store.events(&a.id).unwrap().len(), 1);
}

fn claim_order_priority_due_then_insertion(store: &dyn Store) {
    let seq = Cell::new(0);
    let mut low = spec("a");
    low.priority = Some(-1);
    let mut high = spec("a");
    high.priority = Some(3);
    let mut later = spec("a");
    later.scheduled_to = Some(50);
    task(store, &seq, low, 10); // t0
    task(store, &seq, spec("a"), 11); // t1
    task(store, &seq, high, 12); // t2
    task(store, &seq, later, 13); // t3, due at 50
    task(store, &seq, spec("a"), 14); // t4
    assert_eq!(claim(store, 2, 20, &any), ["t2", "t1"]);
    assert_eq!(claim(store, 10, 20, &any), ["t4", "t0"]);
    assert_eq!(store.next_due().unwrap(), Some(50));
    assert_eq!(claim(store, 10, 50, &any), ["t3"]);
    let claimed = store.get("t3").unwrap().unwrap();
    assert_eq!(claimed.status, TaskStatus::Running);
    assert_eq!(claimed.lease_token, 1);
    assert_eq!(claimed.lease_expiry, Some(1050));
}

fn claim_stops_a_classification_without_room(store: &dyn Store) {
    let seq = Cell::new(0);
    for c in ["a", "a", "b", "a", "b"] {
        task(store, &seq, spec(c), 10);
    }
    let room_for_one_a = Cell::new(1u32);
    let reserve = |c: &str| {
        if c != "a" {
            return true;
        }
        let left = room_for_one_a.get();
        room_for_one_a.set(left.saturating_sub(1));
        left > 0
    };
    assert_eq!(claim(store, 10, 20, &reserve), ["t0", "t2", "t4"]);
}

fn claim_skips_held_locks_without_blocking_others(store: &dyn Store) {
    let seq = Cell::new(0);
    let locked = || {
        let mut s = spec("a");
        s.lock = Some("k".into());
        s
    };
    task(store, &seq, locked(), 10); // t0
    task(store, &seq, locked(), 11); // t1
    task(store, &seq, spec("a"), 12); // t2
    assert_eq!(claim(store, 10, 20, &any), ["t0", "t2"]);
    assert!(claim(store, 10, 20, &any).is_empty());
    finish(store, "t0", TaskStatus::Succeeded, 30);
    assert_eq!(claim(store, 10, 40, &any), ["t1"]);
}

fn dependencies_gate_claims(store: &dyn Store) {
    let seq = Cell::new(0);
    let a = task(store, &seq, spec("a"), 10); // t0
    let mut dep = spec("a");
    dep.dependencies = Some(vec![a.id.to_string()]);
    task(store, &seq, dep.clone(), 11); // t1 waits for t0
    let mut missing = spec("a");
    missing.dependencies = Some(vec!["nope".into()]);
    let bad = state::create(missing, "tx".into(), 12);
    assert!(store.insert(&[bad.task], &[]).is_err());
    assert_eq!(claim(store, 10, 20, &any), ["t0"]);
    finish(store, "t0", TaskStatus::Failed, 30);
    let batch = store
        .claim(&ClaimRequest {
            limit: 10,
            now: 40,
            owner: "me",
            lease_ms: 1000,
            classifications: &classifications(),
            reserve: &any,
            number: &number_claim,
        })
        .unwrap();
    assert!(batch.claimed.is_empty());
    assert_eq!(batch.dependency_failures.len(), 1);
    assert_eq!(&*batch.dependency_failures[0].task_id, "t1");
    assert_eq!(batch.dependency_failures[0].status, TaskStatus::Failed);
}

fn timers_and_leases(store: &dyn Store) {
    let seq = Cell::new(0);
    task(store, &seq, spec("a"), 10);
    assert_eq!(store.next_expiry().unwrap(), None);
    assert_eq!(claim(store, 1, 20, &any), ["t0"]);
    assert_eq!(store.next_expiry().unwrap(), Some(1020));
    assert!(store.expired(1019, 10).unwrap().is_empty());
    assert_eq!(store.expired(1020, 10).unwrap()[0].id.to_string(), "t0");
}

fn retention_purges_ended_tasks(store: &dyn Store) {
    let seq = Cell::new(0);
    task(store, &seq, spec("a"), 10);
    task(store, &seq, spec("a"), 11);
    assert_eq!(claim(store, 2, 20, &any), ["t0", "t1"]);
    finish(store, "t0", TaskStatus::Succeeded, 30);
    finish(store, "t1", TaskStatus::Canceled, 30);
    let retention = Retention {
        completed_ms: Some(100),
        failed_ms: None,
    };
    assert_eq!(store.next_purge(&retention).unwrap(), Some(130));
    assert_eq!(store.purge(129, &retention).unwrap(), 0);
    assert_eq!(store.purge(130, &retention).unwrap(), 1);
    assert_eq!(store.get("t0").unwrap(), None);
    assert!(store.get("t1").unwrap().is_some());
    assert_eq!(store.active_count().unwrap(), 0);
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
