//! The engine: the single owner of claiming, tracking and emitting. One per service.

mod config;
mod dispatcher;
mod native;

pub use config::{EngineConfig, MIN_LEASE_MS};

use std::collections::{BTreeMap, HashMap};

use rustc_hash::FxHashMap;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::Sender;
use parking_lot::{Condvar, Mutex};
use serde_json::Value;

use crate::error::{EngineError, Result};
use crate::event::{Event, EventDraft, EventSink};
use crate::executor::{Executor, ExecutorId, Outcome};
use crate::handler::Handler;
use crate::model::{
    Atomicity, ListFilter, LogEntry, Millis, StepSpec, Task, TaskId, TaskSpec, TaskStatus,
};
use crate::spec;
use crate::state::{self, Change, Refused, StepPosition, StopReason};
use crate::store::{Applied, Store, Transition};
use native::NativeExecutor;

/// The current time in ms since the epoch.
pub fn now_ms() -> Millis {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as Millis)
        .unwrap_or(0)
}

/// Prefix reserved for native (Rust) handler classifications registered by bindings.
pub const NATIVE_PREFIX: &str = "native:";

/// Id of the engine's own native executor.
const NATIVE_EXECUTOR: ExecutorId = 0;

struct Run {
    token: u64,
    executor: ExecutorId,
    /// When the run times out (`timeoutMs`).
    deadline: Option<Millis>,
    /// The task's last event sequence number at the claim: an event of another engine
    /// numbered after it changed the task after this run began.
    claimed_at_seq: u64,
}

/// A timed-out run whose executor has not returned it yet.
struct Overdue {
    grace_until: Millis,
    executor: ExecutorId,
    task_id: TaskId,
    token: u64,
}

struct ExecutorEntry {
    executor: Arc<dyn Executor>,
    /// Whether the engine renews the leases of its runs (native threads), rather than the
    /// executor proving it is alive with [`Engine::renew_executor`].
    engine_renews: bool,
    load: usize,
    /// Most runs at once (`usize::MAX`: no limit but the engine's concurrency).
    capacity: usize,
}

pub(crate) struct State {
    seq: u64,
    running: FxHashMap<TaskId, Run>,
    executors: BTreeMap<ExecutorId, ExecutorEntry>,
    routes: HashMap<String, Vec<ExecutorId>>,
    next_executor: ExecutorId,
    accepting: bool,
    claiming: bool,
    stopped: bool,
    next_renewal: Millis,
    /// Runs whose lease the engine renews itself (native threads).
    native_runs: usize,
    /// When the dispatcher wakes up by itself (`None`: only when woken).
    sleeping_until: Option<Millis>,
    /// Run deadlines: `(deadline, token, task)`.
    deadlines: std::collections::BTreeSet<(Millis, u64, TaskId)>,
    /// Timed-out runs not returned yet.
    overdue: Vec<Overdue>,
    /// With a shared store: tasks this engine pushed that it has not seen end yet (other
    /// processes may run them). They count as active.
    watching: rustc_hash::FxHashSet<TaskId>,
}

impl State {
    /// The runs (task id, token) an executor has now.
    fn runs_of(&self, executor: ExecutorId) -> Vec<(TaskId, u64)> {
        self.running
            .iter()
            .filter(|(_, run)| run.executor == executor)
            .map(|(id, run)| (TaskId::clone(id), run.token))
            .collect()
    }
}

/// A transition of a batch ([`Store::apply_many`]).
type BoxedTransition<'a> = Box<dyn FnMut(&Task) -> Result<Change, Refused> + 'a>;

/// What became of one transition of a batch: its new status, why it was refused, or the
/// store's failure.
type Committed = Result<Result<TaskStatus, Refused>>;

/// The transition that ends run `token` with `outcome`.
fn outcome_transition(
    token: u64,
    outcome: &Outcome,
    now: Millis,
) -> impl FnMut(&Task) -> Result<Change, Refused> + '_ {
    let unit = fastrand::f64();
    move |task| match outcome {
        Outcome::Succeed { output } => state::succeed(task, token, output.clone(), now),
        Outcome::Fail { error } => state::fail(task, token, error.clone(), now, unit),
        Outcome::Retry { reason } => state::retry(task, token, reason.clone(), now, unit),
        Outcome::Cancel { reason } => state::cancel_run(task, token, reason.clone(), now),
        Outcome::Reschedule { at, reason } => {
            state::reschedule(task, token, *at, reason.clone(), now)
        }
    }
}

/// Engine internals shared by the public handle, the dispatcher and the native threads.
pub(crate) struct Shared {
    config: EngineConfig,
    store: Arc<dyn Store>,
    sink: Arc<dyn EventSink>,
    state: Mutex<State>,
    idle: Condvar,
    wake: Sender<()>,
    native: Arc<NativeExecutor>,
    /// Outcomes of native runs waiting to be recorded together ([`Shared::report_grouped`]).
    grouped: GroupedReports,
}

/// Group commit of the native threads' outcomes: a thread that finds none being recorded
/// records every waiting one in one [`Shared::report_many`]; the others leave theirs to it.
#[derive(Default)]
struct GroupedReports {
    waiting: Mutex<Vec<(String, u64, Outcome)>>,
    recording: std::sync::atomic::AtomicBool,
}

/// What [`Engine::shutdown`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Runs that ended by themselves within the timeout.
    pub drained: usize,
    /// Runs that were aborted and released back to `pending`.
    pub released: usize,
}

impl Shared {
    fn wake(&self) {
        let _ = self.wake.try_send(());
    }

    fn number(
        &self,
        st: &mut State,
        task: &mut Task,
        drafts: Vec<EventDraft>,
        now: Millis,
    ) -> Vec<Event> {
        number_events(&mut st.seq, task, drafts, now)
    }

    /// Applies a transition to the stored task: persists the new record and its events
    /// (atomically, in the store), then delivers the events. Returns the new status.
    fn commit(
        &self,
        st: &mut State,
        id: &str,
        now: Millis,
        mut transition: impl FnMut(&Task) -> Result<Change, Refused>,
    ) -> Result<Result<TaskStatus, Refused>> {
        let mut number =
            |task: &mut Task, drafts: Vec<EventDraft>| self.number(st, task, drafts, now);
        match self.store.apply(id, &mut transition, &mut number)? {
            Ok((status, events)) => {
                if status.is_terminal() && !st.watching.is_empty() {
                    st.watching.remove(id);
                }
                if !events.is_empty() {
                    self.sink.deliver(events);
                }
                Ok(Ok(status))
            }
            Err(refused) => Ok(Err(refused)),
        }
    }

    /// Delivers the events of applied transitions, in order (and stops watching the tasks
    /// that ended). One result per item.
    fn delivered(
        &self,
        st: &mut State,
        ids: &[&str],
        results: Vec<Result<Applied>>,
    ) -> Vec<Committed> {
        let mut events = Vec::new();
        let out = ids
            .iter()
            .zip(results)
            .map(|(id, result)| match result {
                Ok(Ok((status, mut evts))) => {
                    if status.is_terminal() {
                        st.watching.remove(*id);
                    }
                    events.append(&mut evts);
                    Ok(Ok(status))
                }
                Ok(Err(refused)) => Ok(Err(refused)),
                Err(err) => Err(err),
            })
            .collect();
        if !events.is_empty() {
            self.sink.deliver(events);
        }
        out
    }

    /// Forgets the run `token` of `id` (if it is the current one) and frees its slot; the
    /// caller refills it (after telling the old runner to stop, if it must).
    fn end_run(&self, st: &mut State, id: &str, token: Option<u64>) -> Option<Run> {
        let matches = st
            .running
            .get(id)
            .is_some_and(|run| token.is_none_or(|t| t == run.token));
        if !matches {
            return None;
        }
        let run = st.running.remove(id)?;
        if let Some(deadline) = run.deadline {
            st.deadlines
                .remove(&(deadline, run.token, TaskId::from(id)));
        }
        if let Some(entry) = st.executors.get_mut(&run.executor) {
            entry.load = entry.load.saturating_sub(1);
        }
        if st.running.is_empty() {
            self.idle.notify_all();
        }
        if self.executor_renews_engine_side(st, run.executor) {
            st.native_runs -= 1;
        }
        Some(run)
    }

    /// After a change: claims into free slots right away (a freed slot never waits for the
    /// dispatcher), and watches the timers the change may have moved.
    fn refill(&self, st: &mut State) {
        self.watch_timers(st);
        self.claim_free(st);
    }

    /// Claims into free slots, unless the engine stopped claiming.
    fn claim_free(&self, st: &mut State) {
        if !st.claiming {
            return;
        }
        if let Err(err) = self.claim(st, now_ms()) {
            tracing::error!(%err, "claim failed; the dispatcher will try again");
            self.wake();
        }
    }

    /// After a change: purges what retention allows, and wakes the dispatcher if it sleeps
    /// past the change's new due time or purge time.
    fn watch_timers(&self, st: &mut State) {
        self.purge(now_ms());
        // A change may have put a task on a timer the sleeping dispatcher does not know
        // (a retry, a reschedule, a scheduled dependent whose last dependency succeeded).
        // And an ended task a purge the dispatcher does not know about yet.
        let purge = if self.config.retention.is_on() {
            self.store.next_purge(&self.config.retention).ok().flatten()
        } else {
            None
        };
        let due = self.store.next_due().ok().flatten();
        if let Some(at) = due.into_iter().chain(purge).min() {
            if st.sleeping_until.is_none_or(|sleep| sleep > at) {
                st.sleeping_until = Some(at);
                self.wake();
            }
        }
    }

    /// Deletes ended tasks past their retention (nothing when retention is off).
    fn purge(&self, now: Millis) {
        let retention = &self.config.retention;
        if !retention.is_on() {
            return;
        }
        if let Err(err) = self.store.purge(now, retention) {
            tracing::warn!(%err, "purge of ended tasks failed; retrying later");
        }
    }

    fn executor_renews_engine_side(&self, st: &State, executor: ExecutorId) -> bool {
        st.executors.get(&executor).is_some_and(|e| e.engine_renews)
    }

    fn abort_run(&self, st: &State, id: &str, run: &Run, reason: StopReason) {
        if let Some(entry) = st.executors.get(&run.executor) {
            entry.executor.abort(id, run.token, reason);
        }
    }

    /// One outcome: a batch of one ([`Shared::report_many`]).
    pub(crate) fn report(&self, id: &str, token: u64, outcome: Outcome) -> Result<bool> {
        let accepted = self.report_many(&[(id.to_owned(), token, outcome)])?;
        Ok(accepted.first().copied().unwrap_or(false))
    }

    /// Records the outcome of a run together with those other threads report meanwhile
    /// (one store write for all of them, on a database). Failures are logged: the run
    /// keeps its lease in the store and is retried when it expires.
    pub(crate) fn report_grouped(&self, id: &str, token: u64, outcome: Outcome) {
        use std::sync::atomic::Ordering;
        let grouped = &self.grouped;
        grouped.waiting.lock().push((id.to_owned(), token, outcome));
        loop {
            if grouped.recording.swap(true, Ordering::AcqRel) {
                // The thread recording now, or the next one, takes it.
                return;
            }
            let batch = std::mem::take(&mut *grouped.waiting.lock());
            if !batch.is_empty() {
                // A panic (of a sink or a store) must not leave `recording` set: every
                // later outcome would wait for a recorder that never comes.
                let recorded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    self.report_many(&batch)
                }));
                match recorded {
                    Ok(Ok(_)) => {}
                    Ok(Err(err)) => {
                        tracing::warn!(%err, runs = batch.len(), "native results not recorded");
                    }
                    Err(_) => {
                        tracing::error!(runs = batch.len(), "recording native results panicked");
                    }
                }
            }
            grouped.recording.store(false, Ordering::Release);
            // An outcome pushed while this one recorded, by a thread that then left.
            if grouped.waiting.lock().is_empty() {
                return;
            }
        }
    }

    /// Records many outcomes and refills the freed slots, in one store write where the
    /// store can ([`Store::apply_many_then_claim`]). The first store failure, if any, is
    /// returned after the other outcomes were recorded (a failed run keeps its lease in
    /// the store: it is retried when that expires).
    pub(crate) fn report_many(&self, reports: &[(String, u64, Outcome)]) -> Result<Vec<bool>> {
        let now = now_ms();
        let mut st = self.state.lock();
        // The runs that report end now: the claim made in the same write reuses their
        // slots. A stale report ends nothing (and its transition is refused).
        for (id, token, _) in reports {
            self.forget_overdue(&mut st, id, *token);
            self.end_run(&mut st, id, Some(*token));
        }
        let mut transitions: Vec<BoxedTransition<'_>> = reports
            .iter()
            .map(|(_, token, outcome)| {
                Box::new(outcome_transition(*token, outcome, now)) as BoxedTransition<'_>
            })
            .collect();
        let mut batch: Vec<(&str, Transition<'_>)> = reports
            .iter()
            .zip(transitions.iter_mut())
            .map(|((id, _, _), transition)| (id.as_str(), &mut **transition as Transition<'_>))
            .collect();
        let results = if st.claiming {
            let (results, claimed) = self.claim_after(&mut st, now, Some(&mut batch));
            if let Err(err) = claimed {
                tracing::error!(%err, "claim failed; the dispatcher will try again");
                self.wake();
            }
            results
        } else {
            let ids: Vec<&str> = reports.iter().map(|(id, ..)| id.as_str()).collect();
            let mut number = |task: &mut Task, drafts: Vec<EventDraft>| {
                number_events(&mut st.seq, task, drafts, now)
            };
            let results = self.store.apply_many(&mut batch, &mut number);
            self.delivered(&mut st, &ids, results)
        };
        let mut accepted = Vec::with_capacity(reports.len());
        let mut failure = None;
        for ((id, token, _), result) in reports.iter().zip(results) {
            match result {
                Ok(Ok(status)) => {
                    if status.is_timed() {
                        // A new due time the dispatcher may have to sleep less for.
                        self.wake();
                    }
                    accepted.push(true);
                }
                Ok(Err(refused)) => {
                    tracing::debug!(task = %id, token, %refused, "late or stale result dropped");
                    accepted.push(false);
                }
                Err(err) => {
                    failure.get_or_insert(err);
                    accepted.push(false);
                }
            }
        }
        if accepted.contains(&true) {
            self.watch_timers(&mut st);
        }
        match failure {
            Some(err) => Err(err),
            None => Ok(accepted),
        }
    }

    /// A timed-out run came back, late: its executor is not stuck.
    fn forget_overdue(&self, st: &mut State, id: &str, token: u64) {
        if !st.overdue.is_empty() {
            st.overdue
                .retain(|o| !(o.token == token && &*o.task_id == id));
        }
    }

    pub(crate) fn log(
        &self,
        id: &str,
        token: u64,
        level: &str,
        msg: &str,
        meta: Option<Value>,
        step: Option<u32>,
    ) -> Result<bool> {
        let now = now_ms();
        let entry = LogEntry {
            ts: now,
            level: level.to_owned(),
            msg: msg.to_owned(),
            meta,
            step,
        };
        let tail = self.config.log_tail_max;
        let mut st = self.state.lock();
        let result = self.commit(&mut st, id, now, |task| {
            state::log(task, token, entry.clone(), tail)
        })?;
        Ok(result.is_ok())
    }

    pub(crate) fn progress(&self, id: &str, token: u64, data: Value) -> Result<bool> {
        let now = now_ms();
        let mut st = self.state.lock();
        let current = self
            .store
            .get(id)?
            .ok_or_else(|| EngineError::NotFound(id.to_owned()))?;
        let Ok(mut change) = state::progress(&current, token, data) else {
            return Ok(false);
        };
        // The record is not rewritten: the engine's own sequence keeps the next event of
        // the task after this one.
        let events = self.number(&mut st, &mut change.task, change.events, now);
        self.store.append_events(&events)?;
        self.sink.deliver(events);
        Ok(true)
    }

    /// Adds `steps` to the composite whose run `token` is in flight; `None` when the token
    /// is stale. Returns the insertion index and the new number of steps.
    pub(crate) fn schedule_steps(
        &self,
        id: &str,
        token: u64,
        steps: Vec<StepSpec>,
        position: StepPosition,
    ) -> Result<Option<(u32, u32)>> {
        if steps.is_empty() {
            return Err(EngineError::Invalid(
                "scheduleSteps needs at least one step".into(),
            ));
        }
        for (i, step) in steps.iter().enumerate() {
            spec::validate_step(&format!("steps[{i}]"), step)?;
        }
        let now = now_ms();
        let mut st = self.state.lock();
        self.check_known(&st, steps.iter().map(|s| s.classification.as_str()))?;
        self.check_dependencies(steps.iter().flat_map(|s| &s.depends_on))?;
        let current = self
            .store
            .get(id)?
            .ok_or_else(|| EngineError::NotFound(id.to_owned()))?;
        self.check_lock_waits(
            current.lock.as_deref(),
            steps.iter().flat_map(|s| &s.depends_on),
        )?;
        if !current.is_composite() {
            return Err(EngineError::Invalid(format!(
                "scheduleSteps works only inside a step of a composite task; task {id} is atomic"
            )));
        }
        let mut placed = None;
        let result = self.commit(&mut st, id, now, |task| {
            let (change, index) = state::schedule_steps(task, token, steps.clone(), position, now)?;
            placed = Some((index, change.task.steps.len() as u32));
            Ok(change)
        })?;
        Ok(result.ok().and(placed))
    }

    /// Refuses classifications no executor serves (unless other processes share the
    /// store: they may).
    fn check_known<'a>(
        &self,
        st: &State,
        classifications: impl IntoIterator<Item = &'a str>,
    ) -> Result<()> {
        if self.store.is_shared() {
            return Ok(());
        }
        for c in classifications {
            if !st.routes.contains_key(c) {
                return Err(EngineError::UnknownClassification(c.to_owned()));
            }
        }
        Ok(())
    }

    /// Refuses a dependency on a task (or step) that does not exist.
    /// Refuses step dependencies of a composite holding `lock` that can never be met (see
    /// [`crate::deps::check_lock`]).
    fn check_lock_waits<'a>(
        &self,
        lock: Option<&str>,
        deps: impl IntoIterator<Item = &'a String>,
    ) -> Result<()> {
        let Some(lock) = lock else {
            return Ok(());
        };
        for dep in deps {
            if let Some(target) = self.store.get(crate::deps::DepRef::parse(dep).task_id)? {
                crate::deps::check_lock(dep, lock, &target)
                    .map_err(EngineError::DependencyNotFound)?;
            }
        }
        Ok(())
    }

    fn check_dependencies<'a>(&self, deps: impl IntoIterator<Item = &'a String>) -> Result<()> {
        let mut seen: Vec<&str> = Vec::new();
        for dep in deps {
            if seen.contains(&dep.as_str()) {
                continue;
            }
            seen.push(dep);
            let target = self.store.get(crate::deps::DepRef::parse(dep).task_id)?;
            crate::deps::check(dep, target.as_ref()).map_err(EngineError::DependencyNotFound)?;
        }
        Ok(())
    }

    pub(crate) fn heartbeat(&self, id: &str, token: u64) -> Result<bool> {
        let now = now_ms();
        let lease = self.config.lease_ms;
        let mut st = self.state.lock();
        let result = self.commit(&mut st, id, now, |task| {
            state::renew(task, token, now, lease)
        })?;
        Ok(result.is_ok())
    }
}

/// Numbers `drafts` as the next events of `task`: after the engine's sequence `seq` and after
/// the task's own `last_seq` (another engine sharing the store may have written it), which
/// both end at the last number given.
pub(crate) fn number_events(
    seq: &mut u64,
    task: &mut Task,
    drafts: Vec<EventDraft>,
    now: Millis,
) -> Vec<Event> {
    if drafts.is_empty() {
        return Vec::new();
    }
    *seq = (*seq).max(task.last_seq);
    let events: Vec<Event> = drafts
        .into_iter()
        .map(|draft| {
            *seq += 1;
            Event::from_draft(&task.id, *seq, now, draft)
        })
        .collect();
    task.last_seq = *seq;
    events
}

/// A task engine: claims tasks from a [`Store`], hands them to executors, tracks leases,
/// retries with backoff, and emits events to an [`EventSink`] in order.
///
/// ```
/// use std::sync::Arc;
/// use decaf_tasks_core::{Engine, EngineConfig, MemoryStore, NullSink, TaskSpec, TaskContext, HandlerResult};
/// use serde_json::{json, Value};
///
/// let engine = Engine::new(EngineConfig::default(), Arc::new(MemoryStore::new()), Arc::new(NullSink)).unwrap();
/// engine.register_native("native:double", Arc::new(|input: &Value, _ctx: &TaskContext| -> HandlerResult {
///     Ok(json!(input.as_i64().unwrap_or(0) * 2))
/// })).unwrap();
/// let task = engine.push(vec![TaskSpec::new("native:double", json!(21))]).unwrap().remove(0);
/// // Graceful shutdown waits for the running task (up to the timeout).
/// # while engine.read(&task.id).unwrap().status == decaf_tasks_core::TaskStatus::Pending {
/// #     std::thread::yield_now();
/// # }
/// engine.shutdown(std::time::Duration::from_secs(5)).unwrap();
/// assert_eq!(engine.read(&task.id).unwrap().output, Some(json!(42)));
/// ```
pub struct Engine {
    shared: Arc<Shared>,
    dispatcher: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("config", &self.shared.config)
            .finish()
    }
}

impl Engine {
    /// Starts an engine: its dispatcher thread and `native_threads` handler threads.
    pub fn new(
        config: EngineConfig,
        store: Arc<dyn Store>,
        sink: Arc<dyn EventSink>,
    ) -> Result<Self> {
        config.validate()?;
        let first_seq = store.last_event_seq()?;
        let (wake, wake_rx) = crossbeam_channel::bounded(1);
        let threads = config.native_threads;
        let shared = Arc::new_cyclic(|weak| {
            let native = NativeExecutor::start(threads, weak.clone());
            let mut executors = BTreeMap::new();
            executors.insert(
                NATIVE_EXECUTOR,
                ExecutorEntry {
                    executor: Arc::clone(&native) as Arc<dyn Executor>,
                    engine_renews: true,
                    load: 0,
                    // One run per native thread: a native task waiting for a thread would
                    // hold a service slot that an inline or worker task could use.
                    capacity: threads,
                },
            );
            Shared {
                config,
                store,
                sink,
                state: Mutex::new(State {
                    seq: first_seq,
                    running: FxHashMap::default(),
                    executors,
                    routes: HashMap::new(),
                    next_executor: NATIVE_EXECUTOR + 1,
                    accepting: true,
                    claiming: true,
                    stopped: false,
                    next_renewal: 0,
                    native_runs: 0,
                    sleeping_until: None,
                    deadlines: Default::default(),
                    overdue: Vec::new(),
                    watching: Default::default(),
                }),
                idle: Condvar::new(),
                wake,
                native,
                grouped: GroupedReports::default(),
            }
        });
        if shared.store.is_shared() {
            let weak = Arc::downgrade(&shared);
            shared.store.subscribe(Arc::new(move || {
                if let Some(shared) = weak.upgrade() {
                    shared.wake();
                }
            }))?;
        }
        let handle = dispatcher::spawn(Arc::clone(&shared), wake_rx)
            .map_err(|e| EngineError::Internal(format!("could not start the dispatcher: {e}")))?;
        Ok(Engine {
            shared,
            dispatcher: Mutex::new(Some(handle)),
        })
    }

    /// The configuration the engine runs with.
    pub fn config(&self) -> &EngineConfig {
        &self.shared.config
    }

    /// Registers a native handler; it runs on the engine's native threads.
    pub fn register_native(&self, classification: &str, handler: Arc<dyn Handler>) -> Result<()> {
        if classification.is_empty() {
            return Err(EngineError::Invalid(
                "classification must be a non-empty string".into(),
            ));
        }
        self.shared
            .native
            .register(classification.to_owned(), handler);
        let mut st = self.shared.state.lock();
        let routes = st.routes.entry(classification.to_owned()).or_default();
        if !routes.contains(&NATIVE_EXECUTOR) {
            routes.push(NATIVE_EXECUTOR);
        }
        drop(st);
        self.shared.wake();
        Ok(())
    }

    /// Adds an executor serving `classifications`. It proves it is alive by calling
    /// [`Engine::renew_executor`] more often than the lease length; otherwise the leases of
    /// its runs expire and the tasks are retried elsewhere.
    pub fn add_executor(
        &self,
        executor: Arc<dyn Executor>,
        classifications: &[String],
    ) -> ExecutorId {
        self.add_executor_with_capacity(executor, classifications, usize::MAX)
    }

    /// [`Engine::add_executor`] for an executor that takes at most `capacity` runs at once
    /// (a worker thread with `concurrencyPerWorker`).
    pub fn add_executor_with_capacity(
        &self,
        executor: Arc<dyn Executor>,
        classifications: &[String],
        capacity: usize,
    ) -> ExecutorId {
        let mut st = self.shared.state.lock();
        let id = st.next_executor;
        st.next_executor += 1;
        st.executors.insert(
            id,
            ExecutorEntry {
                executor,
                engine_renews: false,
                load: 0,
                capacity: capacity.max(1),
            },
        );
        for c in classifications {
            st.routes.entry(c.clone()).or_default().push(id);
        }
        drop(st);
        self.shared.wake();
        id
    }

    /// The executor now also serves `classifications`.
    pub fn add_classifications(
        &self,
        executor: ExecutorId,
        classifications: &[String],
    ) -> Result<()> {
        let mut st = self.shared.state.lock();
        if !st.executors.contains_key(&executor) {
            return Err(EngineError::Invalid(format!("unknown executor {executor}")));
        }
        for c in classifications {
            let routes = st.routes.entry(c.clone()).or_default();
            if !routes.contains(&executor) {
                routes.push(executor);
            }
        }
        drop(st);
        self.shared.wake();
        Ok(())
    }

    /// Removes an executor whose thread is gone (a worker exited or crashed). Each of its
    /// runs counts a failed attempt (code `E_EXECUTOR_LOST`, `reason` as message) and is
    /// retried under `maxAttempts`. Its classifications stay known, so tasks pushed meanwhile
    /// wait for a replacement. Returns how many runs it had; removing twice does nothing.
    pub fn remove_executor(&self, executor: ExecutorId, reason: &str) -> Result<usize> {
        self.drop_executor(executor, Some(reason))
    }

    /// Removes an executor that is going away cleanly with the engine's own thread (its
    /// process exits): its runs are released back to `pending`, attempts unchanged (their
    /// handlers may not even have started), and run again later (a durable store keeps
    /// them for the next process). Returns how many runs it had.
    pub fn retire_executor(&self, executor: ExecutorId) -> Result<usize> {
        self.drop_executor(executor, None)
    }

    /// Removes `executor`; its runs fail with `lost` as reason (`E_EXECUTOR_LOST`), or are
    /// released when `lost` is `None`.
    fn drop_executor(&self, executor: ExecutorId, lost: Option<&str>) -> Result<usize> {
        if executor == NATIVE_EXECUTOR {
            return Err(EngineError::Invalid(
                "the native executor cannot be removed".into(),
            ));
        }
        let shared = &self.shared;
        let now = now_ms();
        let mut st = shared.state.lock();
        if st.executors.remove(&executor).is_none() {
            return Ok(0);
        }
        for routes in st.routes.values_mut() {
            routes.retain(|id| *id != executor);
        }
        let runs = st.runs_of(executor);
        for (id, token) in &runs {
            shared.end_run(&mut st, id, Some(*token));
            let unit = fastrand::f64();
            let _ = match lost {
                Some(reason) => {
                    let error = crate::model::TaskError::new(reason).with_code("E_EXECUTOR_LOST");
                    shared.commit(&mut st, id, now, |task| {
                        state::fail(task, *token, error.clone(), now, unit)
                    })?
                }
                None => {
                    shared.commit(&mut st, id, now, |task| state::release(task, *token, now))?
                }
            };
        }
        shared.refill(&mut st);
        if !runs.is_empty() {
            shared.wake();
        }
        Ok(runs.len())
    }

    /// Renews the lease of every run of `executor`: its proof of life.
    pub fn renew_executor(&self, executor: ExecutorId) -> Result<usize> {
        let now = now_ms();
        let lease = self.shared.config.lease_ms;
        let mut st = self.shared.state.lock();
        let runs = st.runs_of(executor);
        let mut renewed = 0;
        for (id, token) in runs {
            if self
                .shared
                .commit(&mut st, &id, now, |task| {
                    state::renew(task, token, now, lease)
                })?
                .is_ok()
            {
                renewed += 1;
            }
        }
        Ok(renewed)
    }

    /// Classifications some executor of this engine serves.
    pub fn classifications(&self) -> Vec<String> {
        let mut all: Vec<String> = self.shared.state.lock().routes.keys().cloned().collect();
        all.sort();
        all
    }

    /// Validates and stores new tasks, all or nothing, emitting one status event each.
    pub fn push(&self, specs: Vec<TaskSpec>) -> Result<Vec<Task>> {
        for (i, spec) in specs.iter().enumerate() {
            spec::validate(spec).map_err(|e| match e {
                EngineError::Invalid(msg) if specs.len() > 1 => {
                    EngineError::Invalid(format!("task {i}: {msg}"))
                }
                other => other,
            })?;
        }
        let shared = &self.shared;
        let now = now_ms();
        let mut st = shared.state.lock();
        if !st.accepting {
            return Err(EngineError::Shutdown);
        }
        for spec in &specs {
            let steps = spec.steps.iter().flatten();
            match spec.atomicity.unwrap_or_default() {
                // A composite's own classification names it; its steps' handlers run it.
                Atomicity::Composite => {
                    shared.check_known(&st, steps.clone().map(|s| s.classification.as_str()))?
                }
                Atomicity::Atomic => shared.check_known(&st, [spec.classification.as_str()])?,
            }
            let deps = spec.dependencies.iter().flatten();
            if deps.clone().any(|d| d.contains(':'))
                || steps.clone().any(|s| !s.depends_on.is_empty())
            {
                shared.check_dependencies(deps.chain(steps.clone().flat_map(|s| &s.depends_on)))?;
                // The composite holds its lock from its first step on: what a later step
                // waits for must not need it.
                shared.check_lock_waits(
                    spec.lock.as_deref(),
                    steps.skip(1).flat_map(|s| &s.depends_on),
                )?;
            }
        }
        let mut tasks = Vec::with_capacity(specs.len());
        let mut events = Vec::with_capacity(specs.len());
        for spec in specs {
            let id: TaskId = uuid::Uuid::now_v7().to_string().into();
            let mut change = state::create(spec, id, now);
            events.extend(shared.number(&mut st, &mut change.task, change.events, now));
            tasks.push(change.task);
        }
        shared.store.insert(&tasks, &events)?;
        if shared.store.is_shared() {
            st.watching
                .extend(tasks.iter().map(|t| TaskId::clone(&t.id)));
        }
        shared.sink.deliver(events);
        // New tasks end nothing and move no other task's timer: the scheduled ones wake
        // the dispatcher below.
        shared.claim_free(&mut st);
        drop(st);
        if tasks.iter().any(|t| t.status.is_timed()) {
            shared.wake();
        }
        Ok(tasks)
    }

    /// One task.
    pub fn read(&self, id: &str) -> Result<Task> {
        self.shared
            .store
            .get(id)?
            .ok_or_else(|| EngineError::NotFound(id.to_owned()))
    }

    /// Tasks matching `filter`, oldest first.
    pub fn list(&self, filter: &ListFilter) -> Result<Vec<Task>> {
        self.shared.store.list(filter)
    }

    /// The persisted events of a task, oldest first.
    pub fn events(&self, id: &str) -> Result<Vec<Event>> {
        self.shared.store.events(id)
    }

    /// Number of tasks that have not ended. Read under the engine lock, so a transition
    /// is counted only once its events are queued for delivery. With a shared store, only
    /// this engine's business counts: its runs, and the tasks it pushed that it has not
    /// seen end (other processes' queues do not keep this one alive).
    pub fn active_count(&self) -> Result<usize> {
        let st = self.shared.state.lock();
        if self.shared.store.is_shared() {
            return Ok(st.running.len() + st.watching.len());
        }
        self.shared.store.active_count()
    }

    /// Cancels a task that has not ended (final; a running handler is told to stop and
    /// its late result is dropped). An ended task is returned unchanged, with no event.
    pub fn cancel(&self, id: &str, reason: Option<String>) -> Result<Task> {
        let shared = &self.shared;
        let now = now_ms();
        let mut st = shared.state.lock();
        match shared.commit(&mut st, id, now, |task| {
            state::cancel(task, reason.clone(), now)
        })? {
            Ok(_) => {
                if let Some(run) = shared.end_run(&mut st, id, None) {
                    shared.abort_run(&st, id, &run, StopReason::Canceled);
                }
                // A freed slot, or dependents of this task to fail.
                shared.refill(&mut st);
            }
            Err(refused) => tracing::debug!(task = id, %refused, "cancel changed nothing"),
        }
        drop(st);
        self.read(id)
    }

    /// Ends the run `token` of task `id` with `outcome`. Returns `false` when the token is
    /// stale (canceled, released, or the lease was taken over): the outcome is dropped.
    pub fn report(&self, id: &str, token: u64, outcome: Outcome) -> Result<bool> {
        self.shared.report(id, token, outcome)
    }

    /// Ends many runs at once (one lock, one refill): `(task id, token, outcome)` each.
    /// Returns, for each, whether it was recorded (see [`Engine::report`]).
    pub fn report_many(&self, reports: &[(String, u64, Outcome)]) -> Result<Vec<bool>> {
        self.shared.report_many(reports)
    }

    /// A log line of run `token`. `false` when stale.
    pub fn log(
        &self,
        id: &str,
        token: u64,
        level: &str,
        msg: &str,
        meta: Option<Value>,
    ) -> Result<bool> {
        self.shared.log(id, token, level, msg, meta, None)
    }

    /// A progress event of run `token`. `false` when stale.
    pub fn progress(&self, id: &str, token: u64, data: Value) -> Result<bool> {
        self.shared.progress(id, token, data)
    }

    /// Renews the lease of run `token`. `false` when stale.
    pub fn heartbeat(&self, id: &str, token: u64) -> Result<bool> {
        self.shared.heartbeat(id, token)
    }

    /// Adds `steps` to the composite task `id` from its step run `token`
    /// (`ctx.scheduleSteps`): right after the current step (after those this run added
    /// there already) or at the end. The steps are persisted with the task and announced
    /// by an `update` event. Returns `(insertion index, total steps)`, or `None` when the
    /// token is stale. Refused for an atomic task, bad steps, unknown classifications and
    /// dependencies on tasks that do not exist.
    pub fn schedule_steps(
        &self,
        id: &str,
        token: u64,
        steps: Vec<StepSpec>,
        position: StepPosition,
    ) -> Result<Option<(u32, u32)>> {
        self.shared.schedule_steps(id, token, steps, position)
    }

    /// Stops claiming, waits up to `timeout` for running tasks, then tells the rest to
    /// stop and releases them back to `pending` (attempts unchanged), and stops the
    /// engine's threads. Pushing afterwards fails with [`EngineError::Shutdown`]. Calling it
    /// again does nothing.
    pub fn shutdown(&self, timeout: Duration) -> Result<ShutdownReport> {
        let shared = &self.shared;
        let deadline = Instant::now() + timeout;
        let mut st = shared.state.lock();
        if st.stopped {
            return Ok(ShutdownReport::default());
        }
        st.accepting = false;
        st.claiming = false;
        let in_flight = st.running.len();
        while !st.running.is_empty() {
            if shared.idle.wait_until(&mut st, deadline).timed_out() {
                break;
            }
        }
        let left: Vec<(TaskId, u64)> = st
            .running
            .iter()
            .map(|(id, run)| (TaskId::clone(id), run.token))
            .collect();
        let now = now_ms();
        for (id, token) in &left {
            if let Some(run) = shared.end_run(&mut st, id, Some(*token)) {
                shared.abort_run(&st, id, &run, StopReason::Shutdown);
            }
            if let Err(refused) =
                shared.commit(&mut st, id, now, |task| state::release(task, *token, now))?
            {
                tracing::debug!(task = %id, %refused, "not released at shutdown");
            }
        }
        st.stopped = true;
        drop(st);
        shared.wake();
        shared.native.close();
        if let Some(handle) = self.dispatcher.lock().take() {
            let _ = handle.join();
        }
        shared.store.close();
        Ok(ShutdownReport {
            drained: in_flight - left.len(),
            released: left.len(),
        })
    }

    /// Whether [`Engine::shutdown`] has run.
    pub fn is_shut_down(&self) -> bool {
        self.shared.state.lock().stopped
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.shared.state.lock().stopped = true;
        self.shared.wake();
        self.shared.native.close();
    }
}
