//! Engines sharing a PostgreSQL schema: throughput of no-op native tasks with one engine
//! and with two engines on one schema, and the latency from a push on one engine to the
//! start of the handler on the other (the only one serving the task's classification).
//! Every push, claim and completion is a PostgreSQL transaction; the engines hear of each
//! other through `LISTEN`/`NOTIFY`.
//!
//! `DECAF_PG_URL=postgres://... cargo run --release -p decaf-tasks-core --example
//! postgres_bench [tasks] [latency samples]`. It works in a schema of its own, dropped at
//! the end.

use std::sync::Arc;
use std::time::{Duration, Instant};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use decaf_tasks_core::{
    Engine, EngineConfig, Event, EventSink, HandlerResult, PostgresStore, TaskContext, TaskSpec,
    TaskStatus,
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

impl Counter {
    fn wait_for(&self, n: usize) {
        let mut done = self.done.lock();
        while *done < n {
            if self
                .changed
                .wait_for(&mut done, Duration::from_secs(60))
                .timed_out()
            {
                panic!("stalled at {} of {n} tasks", *done);
            }
        }
    }
}

fn url() -> String {
    std::env::var("DECAF_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

fn engine(schema: &str, owner: &str, sink: Arc<dyn EventSink>) -> Engine {
    let store = PostgresStore::connect(&url(), schema, owner).expect("connect");
    Engine::new(
        EngineConfig {
            owner: owner.into(),
            concurrency: 64,
            native_threads: 4,
            ..EngineConfig::default()
        },
        Arc::new(store),
        sink,
    )
    .expect("engine")
}

fn noop() -> Arc<dyn decaf_tasks_core::Handler> {
    Arc::new(|_: &Value, _: &TaskContext| -> HandlerResult { Ok(Value::Null) })
}

fn push(engine: &Engine, classification: &str, n: usize) {
    for chunk in (0..n).collect::<Vec<_>>().chunks(500) {
        let specs = chunk
            .iter()
            .map(|_| TaskSpec::new(classification, Value::Null))
            .collect();
        engine.push(specs).expect("push");
    }
}

/// `n` no-op tasks pushed on the first engine, run by all of them; tasks/s.
fn throughput(schema: &str, engines: usize, n: usize) -> f64 {
    let counter = Arc::new(Counter::default());
    let all: Vec<Engine> = (0..engines)
        .map(|i| {
            let e = engine(
                schema,
                &format!("bench-{i}"),
                Arc::clone(&counter) as Arc<dyn EventSink>,
            );
            e.register_native("native:noop", noop()).expect("register");
            e
        })
        .collect();
    let start = Instant::now();
    push(&all[0], "native:noop", n);
    // Each engine's sink hears of every task (its own runs and the others' events): the
    // first engine alone counts every success once.
    counter.wait_for(n * engines);
    let elapsed = start.elapsed();
    for e in &all {
        e.shutdown(Duration::from_secs(5)).expect("shutdown");
    }
    n as f64 / elapsed.as_secs_f64()
}

/// Push on A, run on B: the time until B's handler starts, for `samples` tasks one at a
/// time.
fn latency(schema: &str, samples: usize) -> Vec<Duration> {
    let (started_tx, started_rx) = crossbeam_channel::unbounded::<Instant>();
    let a = engine(schema, "latency-a", Arc::new(decaf_tasks_core::NullSink));
    let b = engine(schema, "latency-b", Arc::new(decaf_tasks_core::NullSink));
    b.register_native(
        "native:on-b",
        Arc::new(move |_: &Value, _: &TaskContext| -> HandlerResult {
            let _ = started_tx.send(Instant::now());
            Ok(Value::Null)
        }),
    )
    .expect("register");
    let mut times = Vec::with_capacity(samples);
    for _ in 0..samples {
        std::thread::sleep(Duration::from_millis(20));
        let pushed = Instant::now();
        a.push(vec![TaskSpec::new("native:on-b", Value::Null)])
            .expect("push");
        let started = started_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("B runs the task");
        times.push(started - pushed);
    }
    a.shutdown(Duration::from_secs(5)).expect("shutdown");
    b.shutdown(Duration::from_secs(5)).expect("shutdown");
    times.sort();
    times
}

fn drop_schema(schema: &str) {
    match postgres::Client::connect(&url(), postgres::NoTls) {
        Ok(mut client) => {
            if let Err(e) =
                client.batch_execute(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
            {
                eprintln!("could not drop schema {schema}: {e}");
            }
        }
        Err(e) => eprintln!("could not drop schema {schema}: {e}"),
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(5_000);
    let samples: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(100);
    let base = format!("decaf_bench_{}", std::process::id());
    for engines in [1, 2] {
        let schema = format!("{base}_{engines}");
        let rate = throughput(&schema, engines, n);
        println!("{engines} engine(s), {n} no-op tasks: {rate:.0} tasks/s");
        drop_schema(&schema);
    }
    let schema = format!("{base}_latency");
    let times = latency(&schema, samples);
    drop_schema(&schema);
    let at = |q: f64| times[((times.len() - 1) as f64 * q).round() as usize];
    println!(
        "push on A -> handler start on B, {samples} tasks one at a time: p50 {:?}, p90 {:?}, p99 {:?}, max {:?}",
        at(0.5),
        at(0.9),
        at(0.99),
        times[times.len() - 1]
    );
}
