//! Engine throughput on the durable store: push no-op tasks run by a native handler and
//! wait until all succeeded. Every push, claim and completion is a SQLite transaction (WAL,
//! `synchronous=NORMAL`) in a fresh database file under the temp directory.
//!
//! `cargo run --release -p decaf-tasks-core --example sqlite_bench [tasks] [memory]`: the
//! optional `memory` runs the same workload on the memory store, for comparison.

use std::sync::Arc;
use std::time::{Duration, Instant};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use decaf_tasks_core::{
    Engine, EngineConfig, Event, EventSink, HandlerResult, MemoryStore, SqliteStore, Store,
    TaskContext, TaskSpec, TaskStatus,
};
use parking_lot::{Condvar, Mutex};
use serde_json::Value;

/// Counts succeeded tasks and wakes the waiting main thread.
#[derive(Default)]
struct Counter {
    done: Mutex<usize>,
    changed: Condvar,
}

impl EventSink for Counter {
    fn deliver(&self, events: Vec<Event>) {
        let ended = events
            .iter()
            .filter(|e| e.status() == Some(TaskStatus::Succeeded))
            .count();
        if ended > 0 {
            *self.done.lock() += ended;
            self.changed.notify_all();
        }
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(20_000);
    let on_memory = args.next().as_deref() == Some("memory");
    let path = std::env::temp_dir().join(format!("decaf-sqlite-bench-{}.db", std::process::id()));
    let store: Arc<dyn Store> = if on_memory {
        Arc::new(MemoryStore::new())
    } else {
        Arc::new(SqliteStore::open(&path).expect("open the database"))
    };
    let counter = Arc::new(Counter::default());
    let engine = Engine::new(
        EngineConfig {
            concurrency: 256,
            ..EngineConfig::default()
        },
        store,
        Arc::clone(&counter) as Arc<dyn EventSink>,
    )
    .expect("engine");
    engine
        .register_native(
            "native:noop",
            Arc::new(|_: &Value, _: &TaskContext| -> HandlerResult { Ok(Value::Null) }),
        )
        .expect("register");
    let start = Instant::now();
    for chunk in (0..n).collect::<Vec<_>>().chunks(1000) {
        let specs = chunk
            .iter()
            .map(|_| TaskSpec::new("native:noop", Value::Null))
            .collect();
        engine.push(specs).expect("push");
    }
    let pushed = start.elapsed();
    let mut done = counter.done.lock();
    while *done < n {
        if counter
            .changed
            .wait_for(&mut done, Duration::from_secs(60))
            .timed_out()
        {
            panic!("stalled at {} of {n} tasks", *done);
        }
    }
    drop(done);
    let total = start.elapsed();
    println!(
        "{} store, {n} tasks: pushed in {pushed:?}, all done in {total:?}: {:.0} tasks/s",
        if on_memory { "memory" } else { "sqlite" },
        n as f64 / total.as_secs_f64()
    );
    engine.shutdown(Duration::from_secs(5)).expect("shutdown");
    drop(engine);
    if !on_memory {
        let size = std::fs::metadata(&path).map_or(0, |m| m.len());
        println!("database: {} KiB", size / 1024);
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
        }
    }
}
