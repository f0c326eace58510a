//! The native executor: a pool of engine-owned threads running Rust handlers.

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Weak};

use crossbeam_channel::{Receiver, Sender};
use parking_lot::{Mutex, RwLock};

use super::Shared;
use crate::executor::{Executor, Job, Outcome};
use crate::handler::{Handler, StopFlag, TaskContext};
use crate::model::{TaskError, TaskId};
use crate::state::StopReason;

struct NativeJob {
    job: Job,
    stop: Arc<StopFlag>,
}

/// Runs native handlers on a fixed pool of threads.
pub(crate) struct NativeExecutor {
    handlers: RwLock<HashMap<String, Arc<dyn Handler>>>,
    jobs: Mutex<Option<Sender<NativeJob>>>,
    stops: Mutex<HashMap<TaskId, (u64, Arc<StopFlag>)>>,
}

impl NativeExecutor {
    /// Starts `threads` threads that report to `engine`.
    pub(crate) fn start(threads: usize, engine: Weak<Shared>) -> Arc<Self> {
        let (tx, rx) = crossbeam_channel::unbounded();
        let executor = Arc::new(NativeExecutor {
            handlers: RwLock::new(HashMap::new()),
            jobs: Mutex::new(Some(tx)),
            stops: Mutex::new(HashMap::new()),
        });
        for i in 0..threads {
            let rx: Receiver<NativeJob> = rx.clone();
            let engine = engine.clone();
            let executor = Arc::clone(&executor);
            let spawned = std::thread::Builder::new()
                .name(format!("decaf-native-{i}"))
                .spawn(move || {
                    for job in rx {
                        executor.run_one(&engine, job);
                    }
                });
            if let Err(err) = spawned {
                tracing::error!(%err, "could not start a native handler thread");
            }
        }
        executor
    }

    pub(crate) fn register(&self, classification: String, handler: Arc<dyn Handler>) {
        self.handlers.write().insert(classification, handler);
    }

    /// Stops taking jobs; threads end once their current handler returns.
    pub(crate) fn close(&self) {
        self.jobs.lock().take();
    }

    fn run_one(&self, engine: &Weak<Shared>, NativeJob { job, stop }: NativeJob) {
        let handler = self.handlers.read().get(&job.classification).cloned();
        let ctx = TaskContext {
            engine: engine.clone(),
            task_id: TaskId::clone(&job.task_id),
            classification: job.classification.clone(),
            token: job.token,
            attempt: job.attempt,
            result_cache: job.result_cache,
            step: job.step,
            stop,
        };
        let outcome = match handler {
            None => Outcome::Fail {
                error: TaskError::new(format!(
                    "no native handler for classification '{}'",
                    job.classification
                ))
                .with_code("E_UNKNOWN_CLASSIFICATION"),
            },
            Some(handler) => {
                let outcome = match catch_unwind(AssertUnwindSafe(|| handler.run(&job.input, &ctx)))
                {
                    Ok(Ok(output)) => Outcome::Succeed { output },
                    Ok(Err(interrupt)) => interrupt.into(),
                    Err(panic) => Outcome::Fail {
                        error: TaskError::new(format!(
                            "native handler panicked: {}",
                            panic_message(&*panic)
                        ))
                        .with_code("E_PANIC"),
                    },
                };
                if let Outcome::Fail { error } = &outcome {
                    let caught =
                        catch_unwind(AssertUnwindSafe(|| handler.catch(&job.input, error, &ctx)));
                    if let Err(panic) = caught {
                        tracing::warn!(task = %job.task_id, panic = panic_message(&*panic), "catch hook panicked");
                    }
                }
                outcome
            }
        };
        {
            let mut stops = self.stops.lock();
            if stops
                .get(&job.task_id)
                .is_some_and(|(t, _)| *t == job.token)
            {
                stops.remove(&job.task_id);
            }
        }
        if let Some(engine) = engine.upgrade() {
            engine.report_grouped(&job.task_id, job.token, outcome);
        }
    }
}

impl Executor for NativeExecutor {
    fn execute(&self, job: Job) {
        let stop = Arc::new(StopFlag::default());
        self.stops
            .lock()
            .insert(TaskId::clone(&job.task_id), (job.token, Arc::clone(&stop)));
        let sent = match self.jobs.lock().as_ref() {
            Some(tx) => tx.send(NativeJob { job, stop }).is_ok(),
            None => false,
        };
        if !sent {
            tracing::warn!("native executor closed: job dropped; its lease will expire");
        }
    }

    fn abort(&self, task_id: &str, token: u64, reason: StopReason) {
        if let Some((t, stop)) = self.stops.lock().get(task_id) {
            if *t == token {
                stop.stop(reason);
            }
        }
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}
