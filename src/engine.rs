//! `NativeEngine`: the JS handle of one engine. Every method maps 1:1 to the contract in
//! docs/native-binding.md.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, LazyLock, Weak};
use std::time::Duration;

use decaf_tasks_core::{
    Engine, EngineConfig, EngineError, ExecutorId, ListFilter, MemoryStore, Outcome, PostgresStore,
    SqliteStore, StepPosition, Store, TaskSpec,
};
use napi::bindgen_prelude::{AsyncTask, Function};
use napi::{Env, Task};
use napi_derive::napi;
use parking_lot::Mutex;
use serde::Deserialize;
use serde_json::Value;

use crate::errors::{invalid, parse, to_js, to_json};
use crate::executor::JsExecutor;
use crate::native_handlers;
use crate::sink::{JsEventSink, Wake};

static NEXT_ID: AtomicU32 = AtomicU32::new(1);

/// Most events one `drainEvents` call returns.
const DRAIN_BATCH: usize = 512;

/// Engines of this process by id, so worker threads can attach to their service's engine.
/// Weak: an engine lives as long as its owning `NativeEngine` (or an attached one).
static ENGINES: LazyLock<Mutex<HashMap<u32, Weak<Engine>>>> = LazyLock::new(Default::default);

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AdapterConfig {
    kind: String,
    path: Option<String>,
    url: Option<String>,
    schema: Option<String>,
    poll_ms: Option<u64>,
}

/// Opens the store the adapter config names (validated by `lib/`, checked again here).
/// `origin` names this engine in a shared store.
fn open_store(adapter: Option<&AdapterConfig>, origin: &str) -> napi::Result<Arc<dyn Store>> {
    let Some(adapter) = adapter else {
        return Ok(Arc::new(MemoryStore::new()));
    };
    match adapter.kind.as_str() {
        "memory" => Ok(Arc::new(MemoryStore::new())),
        "sqlite" => {
            let path = adapter
                .path
                .as_deref()
                .ok_or_else(|| invalid("adapter.path is required for the 'sqlite' store"))?;
            Ok(Arc::new(SqliteStore::open(path).map_err(to_js)?))
        }
        "postgres" => {
            let url = adapter
                .url
                .as_deref()
                .ok_or_else(|| invalid("adapter.url is required for the 'postgres' store"))?;
            let schema = adapter.schema.as_deref().unwrap_or("decaf_tasks");
            // Not reaching the server at start is a configuration error for the caller.
            let store = PostgresStore::connect(url, schema, origin).map_err(|e| match e {
                EngineError::Store(msg) => to_js(EngineError::Invalid(msg)),
                other => to_js(other),
            })?;
            Ok(Arc::new(store))
        }
        kind => Err(invalid(format!(
            "adapter.kind '{kind}' is not supported: use 'memory', 'sqlite' or 'postgres'"
        ))),
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Config {
    concurrency: Option<usize>,
    lease_ms: Option<u64>,
    log_tail_max: Option<usize>,
    worker_id: Option<String>,
    native_threads: Option<usize>,
    adapter: Option<AdapterConfig>,
    logger: Option<String>,
    timeout_grace_ms: Option<u64>,
    retention: Option<RetentionConfig>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RetentionConfig {
    completed_ms: Option<u64>,
    failed_ms: Option<u64>,
}

fn engine_config(config: &Config, id: u32) -> EngineConfig {
    let defaults = EngineConfig::default();
    EngineConfig {
        concurrency: config.concurrency.unwrap_or(defaults.concurrency),
        lease_ms: config.lease_ms.unwrap_or(defaults.lease_ms),
        log_tail_max: config.log_tail_max.unwrap_or(defaults.log_tail_max),
        owner: config
            .worker_id
            .clone()
            .unwrap_or_else(|| format!("{}:{id}", defaults.owner)),
        native_threads: config.native_threads.unwrap_or(defaults.native_threads),
        timeout_grace_ms: config.timeout_grace_ms.unwrap_or(defaults.timeout_grace_ms),
        retention: config
            .retention
            .as_ref()
            .map_or_else(Default::default, |r| decaf_tasks_core::Retention {
                completed_ms: r.completed_ms,
                failed_ms: r.failed_ms,
            }),
        poll_ms: config
            .adapter
            .as_ref()
            .and_then(|a| a.poll_ms)
            .unwrap_or(defaults.poll_ms),
    }
}

/// One engine, owned by one TaskService; or, made by `attach`, a handle on it from a
/// worker thread (which registers executors and reports runs, but receives no events).
#[napi]
pub struct NativeEngine {
    id: u32,
    engine: Arc<Engine>,
    sink: Option<Arc<JsEventSink>>,
    executors: Mutex<HashMap<ExecutorId, Arc<JsExecutor>>>,
}

fn wake_of(callback: Function<(), ()>) -> napi::Result<Wake> {
    callback
        .build_threadsafe_function::<()>()
        .weak::<true>()
        .callee_handled::<false>()
        .build()
}

#[napi]
impl NativeEngine {
    /// Starts an engine. `on_events` is called (weakly, coalesced) when events wait.
    #[napi(constructor, catch_unwind)]
    pub fn new(config_json: String, on_events: Function<(), ()>) -> napi::Result<Self> {
        let config: Config = parse("config", &config_json)?;
        crate::tracing_setup::init(config.logger.as_deref());
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let engine_config = engine_config(&config, id);
        // Unique per engine, even for two services of one process with one workerId.
        let origin = format!("{}#{id}-{:08x}", engine_config.owner, fastrand::u32(..));
        let store = open_store(config.adapter.as_ref(), &origin)?;
        let sink = Arc::new(JsEventSink::new(wake_of(on_events)?));
        let engine = Engine::new(engine_config, store, Arc::clone(&sink) as _).map_err(to_js)?;
        native_handlers::register_all(&engine).map_err(to_js)?;
        let engine = Arc::new(engine);
        let mut engines = ENGINES.lock();
        engines.retain(|_, e| e.strong_count() > 0);
        engines.insert(id, Arc::downgrade(&engine));
        Ok(NativeEngine {
            id,
            engine,
            sink: Some(sink),
            executors: Mutex::new(HashMap::new()),
        })
    }

    /// A handle on the engine `engine_id` of this process, for a worker thread.
    #[napi(factory, catch_unwind)]
    pub fn attach(engine_id: u32) -> napi::Result<Self> {
        let engine = ENGINES
            .lock()
            .get(&engine_id)
            .and_then(Weak::upgrade)
            .ok_or_else(|| {
                to_js(decaf_tasks_core::EngineError::NotFound(format!(
                    "engine {engine_id} (its service is gone)"
                )))
            })?;
        Ok(NativeEngine {
            id: engine_id,
            engine,
            sink: None,
            executors: Mutex::new(HashMap::new()),
        })
    }

    /// Engine id, unique in the process.
    #[napi(getter)]
    pub fn id(&self) -> u32 {
        self.id
    }

    /// Stores tasks (a JSON array of specs); returns one row `[id, status, createdAt]` per
    /// task (the caller has the rest: it sent the specs).
    #[napi(catch_unwind)]
    pub fn push(&self, specs_json: String) -> napi::Result<String> {
        let specs: Vec<TaskSpec> = parse("task specs", &specs_json)?;
        let tasks = self.engine.push(specs).map_err(to_js)?;
        let rows: Vec<(&str, &str, i64)> = tasks
            .iter()
            .map(|t| (&*t.id, t.status.as_str(), t.created_at))
            .collect();
        to_json(&rows)
    }

    /// One task as JSON.
    #[napi(catch_unwind)]
    pub fn read(&self, id: String) -> napi::Result<String> {
        to_json(&self.engine.read(&id).map_err(to_js)?)
    }

    /// Tasks matching a JSON filter.
    #[napi(catch_unwind)]
    pub fn list(&self, filter_json: String) -> napi::Result<String> {
        let filter: ListFilter = parse("list filter", &filter_json)?;
        to_json(&self.engine.list(&filter).map_err(to_js)?)
    }

    /// Persisted events of a task.
    #[napi(catch_unwind)]
    pub fn events(&self, id: String) -> napi::Result<String> {
        to_json(&self.engine.events(&id).map_err(to_js)?)
    }

    /// Cancels a task; returns the record.
    #[napi(catch_unwind)]
    pub fn cancel(&self, id: String, reason: Option<String>) -> napi::Result<String> {
        to_json(&self.engine.cancel(&id, reason).map_err(to_js)?)
    }

    /// Takes up to 512 waiting events (oldest first) as a JSON array; `"[]"` once none wait.
    /// Call again until it returns `"[]"`.
    #[napi(catch_unwind)]
    pub fn drain_events(&self) -> napi::Result<String> {
        let Some(sink) = &self.sink else {
            return Ok("[]".into());
        };
        let events = sink.drain(DRAIN_BATCH);
        if events.is_empty() {
            return Ok("[]".into());
        }
        to_json(&events)
    }

    /// Executors whose timed-out run did not return within the grace period (ids), since
    /// the last call. The owner of a worker executor terminates that worker.
    #[napi(catch_unwind)]
    pub fn drain_stuck(&self) -> Vec<u32> {
        self.sink
            .as_ref()
            .map(|sink| {
                sink.drain_stuck()
                    .into_iter()
                    .filter_map(|id| u32::try_from(id).ok())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Tasks that have not ended.
    #[napi(catch_unwind)]
    pub fn active_count(&self) -> napi::Result<u32> {
        let n = self.engine.active_count().map_err(to_js)?;
        Ok(u32::try_from(n).unwrap_or(u32::MAX))
    }

    /// Adds an executor on the calling JS thread, taking at most `capacity` runs at once
    /// (no limit when omitted). When the thread's environment is torn down (a worker
    /// exits), the executor is removed and its runs count a failed attempt.
    #[napi(catch_unwind)]
    pub fn register_executor(
        &self,
        env: Env,
        classifications: Vec<String>,
        on_work: Function<(), ()>,
        capacity: Option<u32>,
    ) -> napi::Result<u32> {
        let executor = Arc::new(JsExecutor::new(wake_of(on_work)?));
        let capacity = capacity.map_or(usize::MAX, |c| c as usize);
        let id = self.engine.add_executor_with_capacity(
            Arc::clone(&executor) as _,
            &classifications,
            capacity,
        );
        self.executors.lock().insert(id, executor);
        let engine = Arc::downgrade(&self.engine);
        // The thread that owns the engine exiting is a clean end (the process exits): its
        // runs are released, not failed. Any other thread (a pool worker) exiting with runs
        // is a lost executor: they count a failed attempt.
        let owner = self.sink.is_some();
        env.add_env_cleanup_hook((engine, id, owner), |(engine, id, owner)| {
            if let Some(engine) = engine.upgrade() {
                let _ = if owner {
                    engine.retire_executor(id)
                } else {
                    engine.remove_executor(id, "the thread of its executor exited")
                };
            }
        })?;
        u32::try_from(id).map_err(|_| invalid("too many executors"))
    }

    /// Removes an executor whose thread is gone; returns how many runs it lost (each counts
    /// a failed attempt and is retried under `maxAttempts`).
    #[napi(catch_unwind)]
    pub fn remove_executor(&self, executor_id: u32, reason: String) -> napi::Result<u32> {
        self.executors.lock().remove(&ExecutorId::from(executor_id));
        let n = self
            .engine
            .remove_executor(ExecutorId::from(executor_id), &reason)
            .map_err(to_js)?;
        Ok(u32::try_from(n).unwrap_or(u32::MAX))
    }

    /// The executor now also serves these classifications.
    #[napi(catch_unwind)]
    pub fn add_classifications(
        &self,
        executor_id: u32,
        classifications: Vec<String>,
    ) -> napi::Result<()> {
        self.engine
            .add_classifications(ExecutorId::from(executor_id), &classifications)
            .map_err(to_js)
    }

    /// Takes every message waiting for an executor, as a JSON array.
    #[napi(catch_unwind)]
    pub fn take(&self, executor_id: u32) -> napi::Result<String> {
        let executor = self
            .executors
            .lock()
            .get(&ExecutorId::from(executor_id))
            .cloned()
            .ok_or_else(|| invalid(format!("unknown executor {executor_id}")))?;
        let messages = executor.take();
        if messages.is_empty() {
            return Ok("[]".into());
        }
        to_json(&messages)
    }

    /// Proof of life of an executor: renews the leases of its runs.
    #[napi(catch_unwind)]
    pub fn renew(&self, executor_id: u32) -> napi::Result<u32> {
        let n = self
            .engine
            .renew_executor(ExecutorId::from(executor_id))
            .map_err(to_js)?;
        Ok(u32::try_from(n).unwrap_or(u32::MAX))
    }

    /// Ends a run. `false` when the token is stale and the outcome was dropped.
    #[napi(catch_unwind)]
    pub fn report(&self, task_id: String, token: f64, outcome_json: String) -> napi::Result<bool> {
        let outcome: Outcome = parse("outcome", &outcome_json)?;
        self.engine
            .report(&task_id, token_of(token)?, outcome)
            .map_err(to_js)
    }

    /// Ends many runs: a JSON array of `[taskId, token, outcome]`. Returns how many were
    /// recorded (the others were stale and dropped).
    #[napi(catch_unwind)]
    pub fn report_many(&self, reports_json: String) -> napi::Result<u32> {
        let reports: Vec<(String, u64, Outcome)> = parse("reports", &reports_json)?;
        let accepted = self.engine.report_many(&reports).map_err(to_js)?;
        Ok(accepted.iter().filter(|a| **a).count() as u32)
    }

    /// One log line of a run.
    #[napi(catch_unwind)]
    pub fn log(
        &self,
        task_id: String,
        token: f64,
        level: String,
        msg: String,
        meta_json: Option<String>,
    ) -> napi::Result<bool> {
        let meta: Option<Value> = match meta_json {
            Some(json) => Some(parse("log meta", &json)?),
            None => None,
        };
        self.engine
            .log(&task_id, token_of(token)?, &level, &msg, meta)
            .map_err(to_js)
    }

    /// A progress event of a run.
    #[napi(catch_unwind)]
    pub fn progress(&self, task_id: String, token: f64, data_json: String) -> napi::Result<bool> {
        let data: Value = parse("progress data", &data_json)?;
        self.engine
            .progress(&task_id, token_of(token)?, data)
            .map_err(to_js)
    }

    /// Adds steps to the composite of a step run (`ctx.scheduleSteps`): `position` is
    /// `"afterCurrent"` or `"atEnd"`. Returns `[insertionIndex, totalSteps]`, or `null` when
    /// the run is no longer current.
    #[napi(catch_unwind)]
    pub fn schedule_steps(
        &self,
        task_id: String,
        token: f64,
        steps_json: String,
        position: String,
    ) -> napi::Result<Option<Vec<u32>>> {
        let steps: Vec<decaf_tasks_core::StepSpec> = parse("steps", &steps_json)?;
        let position = match position.as_str() {
            "afterCurrent" => StepPosition::AfterCurrent,
            "atEnd" => StepPosition::AtEnd,
            other => {
                return Err(invalid(format!(
                    "position must be 'afterCurrent' or 'atEnd' (got '{other}')"
                )))
            }
        };
        let placed = self
            .engine
            .schedule_steps(&task_id, token_of(token)?, steps, position)
            .map_err(to_js)?;
        Ok(placed.map(|(index, total)| vec![index, total]))
    }

    /// Renews the lease of a run.
    #[napi(catch_unwind)]
    pub fn heartbeat(&self, task_id: String, token: f64) -> napi::Result<bool> {
        self.engine
            .heartbeat(&task_id, token_of(token)?)
            .map_err(to_js)
    }

    /// Classifications served by native handlers.
    #[napi(catch_unwind)]
    pub fn native_classifications(&self) -> Vec<String> {
        self.engine
            .classifications()
            .into_iter()
            .filter(|c| c.starts_with(decaf_tasks_core::NATIVE_PREFIX))
            .collect()
    }

    /// Graceful shutdown; resolves once the engine's threads stopped.
    #[napi(catch_unwind, ts_return_type = "Promise<void>")]
    pub fn shutdown(&self, timeout_ms: f64) -> napi::Result<AsyncTask<Shutdown>> {
        if !(timeout_ms.is_finite() && timeout_ms >= 0.0) {
            return Err(invalid("timeoutMs must be a non-negative number"));
        }
        Ok(AsyncTask::new(Shutdown {
            engine: Arc::clone(&self.engine),
            timeout: Duration::from_millis(timeout_ms as u64),
            sink: self.sink.clone(),
            executors: self.executors.lock().values().cloned().collect(),
        }))
    }
}

fn token_of(token: f64) -> napi::Result<u64> {
    if token.is_finite() && token >= 0.0 && token.fract() == 0.0 {
        Ok(token as u64)
    } else {
        Err(invalid("token must be a non-negative integer"))
    }
}

/// Runs [`Engine::shutdown`] off the JS thread (handlers may need that thread to finish).
pub struct Shutdown {
    engine: Arc<Engine>,
    timeout: Duration,
    sink: Option<Arc<JsEventSink>>,
    executors: Vec<Arc<JsExecutor>>,
}

impl Task for Shutdown {
    type Output = ();
    type JsValue = ();

    fn compute(&mut self) -> napi::Result<()> {
        self.engine
            .shutdown(self.timeout)
            .map(|_| ())
            .map_err(to_js)
    }

    /// On the JS thread, once the engine stopped: release the threadsafe functions, so
    /// nothing of this service stays registered with Node.
    fn resolve(&mut self, _env: Env, _output: ()) -> napi::Result<()> {
        if let Some(sink) = &self.sink {
            sink.close();
        }
        for executor in &self.executors {
            executor.close();
        }
        Ok(())
    }
}
