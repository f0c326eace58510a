//! Engine-only throughput: push, claim and complete no-op tasks through an executor that
//! completes them inline, with a sink that drops events. Shows the engine's own cost per
//! task, with no JS involved: `cargo run --release -p decaf-tasks-core --example throughput`.

use std::sync::{Arc, OnceLock, Weak};
use std::time::Instant;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use decaf_tasks_core::{
    Engine, EngineConfig, Executor, Job, MemoryStore, NullSink, Outcome, StopReason, TaskSpec,
};
use serde_json::Value;

/// Completes every job on a thread of its own, as fast as it arrives.
struct Completer {
    jobs: crossbeam_channel::Sender<Job>,
}

impl Executor for Completer {
    fn execute(&self, job: Job) {
        let _ = self.jobs.send(job);
    }
    fn abort(&self, _task_id: &str, _token: u64, _reason: StopReason) {}
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(200_000);
    let engine = Arc::new(
        Engine::new(
            EngineConfig {
                concurrency: 1024,
                ..EngineConfig::default()
            },
            Arc::new(MemoryStore::new()),
            Arc::new(NullSink),
        )
        .expect("engine"),
    );
    let (tx, rx) = crossbeam_channel::unbounded::<Job>();
    engine.add_executor(Arc::new(Completer { jobs: tx }), &["noop".to_owned()]);
    let weak: Arc<OnceLock<Weak<Engine>>> = Arc::new(OnceLock::new());
    let _ = weak.set(Arc::downgrade(&engine));
    let done = std::thread::spawn(move || {
        let engine = weak.get().and_then(Weak::upgrade).expect("engine");
        for _ in 0..n {
            let job = rx.recv().expect("job");
            engine
                .report(
                    &job.task_id,
                    job.token,
                    Outcome::Succeed {
                        output: Value::Null,
                    },
                )
                .expect("report");
        }
    });
    let start = Instant::now();
    for _ in 0..n / 1000 {
        let specs = (0..1000)
            .map(|_| TaskSpec::new("noop", Value::Null))
            .collect();
        engine.push(specs).expect("push");
    }
    let pushed = start.elapsed();
    done.join().expect("completer");
    let total = start.elapsed();
    println!(
        "{n} tasks: pushed in {:?}, all done in {:?}: {:.0} tasks/s",
        pushed,
        total,
        n as f64 / total.as_secs_f64()
    );
    engine
        .shutdown(std::time::Duration::from_secs(1))
        .expect("shutdown");
}
