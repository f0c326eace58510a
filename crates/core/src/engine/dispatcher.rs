//! The dispatcher thread. Event driven: it sleeps until woken (a push, a freed slot, a new
//! handler) or until the earliest due time, lease expiry or renewal, never polling.

use std::cell::{Cell, RefCell};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError};
use rustc_hash::FxHashMap;

use super::{now_ms, Committed, Overdue, Run, Shared, State};
use crate::error::Result;
use crate::event::EventDraft;
use crate::executor::{ExecutorId, Job, JobStep};
use crate::model::{Millis, Task, TaskError, TaskId, TaskStatus};
use crate::state::{self, StopReason};
use crate::store::{ClaimBatch, ClaimRequest, Claimed, DependencyFailure, Transition};

/// Most expired leases recovered per wake-up.
const RECOVER_BATCH: usize = 256;
/// Pause after a store error before trying again.
const ERROR_PAUSE_MS: Millis = 200;

pub(super) fn spawn(shared: Arc<Shared>, wake: Receiver<()>) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("decaf-dispatcher".into())
        .spawn(move || run(&shared, &wake))
}

fn run(shared: &Shared, wake: &Receiver<()>) {
    loop {
        let next = {
            let mut st = shared.state.lock();
            if st.stopped {
                return;
            }
            let now = now_ms();
            let next = match shared.dispatch(&mut st, now) {
                Ok(next) => next,
                Err(err) => {
                    tracing::error!(%err, "dispatch failed; retrying");
                    Some(now + ERROR_PAUSE_MS)
                }
            };
            st.sleeping_until = next;
            next
        };
        let woken = match next {
            Some(at) => {
                let ms = (at - now_ms()).clamp(0, i64::from(u32::MAX)) as u64;
                wake.recv_timeout(Duration::from_millis(ms))
            }
            None => wake.recv().map_err(|_| RecvTimeoutError::Disconnected),
        };
        if let Err(RecvTimeoutError::Disconnected) = woken {
            return;
        }
    }
}

impl Shared {
    /// One round: recover expired leases, renew native runs, claim into free slots.
    /// Returns when the next round is due without a wake-up.
    fn dispatch(&self, st: &mut State, now: Millis) -> Result<Option<Millis>> {
        let shared = self.store.is_shared();
        if shared {
            self.deliver_remote_events(st)?;
        }
        self.purge(now);
        self.time_out_runs(st, now)?;
        self.report_stuck(st, now);
        self.recover_expired(st, now)?;
        self.renew_native_runs(st, now)?;
        if st.claiming {
            self.claim(st, now)?;
        }
        let mut next = [self.store.next_due()?, self.store.next_expiry()?]
            .into_iter()
            .flatten()
            .min();
        if st.native_runs > 0 {
            next = Some(next.map_or(st.next_renewal, |n| n.min(st.next_renewal)));
        }
        let deadline = st.deadlines.first().map(|&(at, _, _)| at);
        let grace = st.overdue.iter().map(|o| o.grace_until).min();
        let purge = self.store.next_purge(&self.config.retention)?;
        // Other processes notify; the poll only covers a lost notification.
        let poll = shared.then(|| now + self.config.poll_ms as Millis);
        Ok([next, deadline, grace, purge, poll]
            .into_iter()
            .flatten()
            .min())
    }

    /// Delivers what other engines sharing the store emitted, in their commit order. The
    /// engine's sequence moves past their numbers (a Lamport clock), so the next events
    /// this engine writes come after them.
    ///
    /// A status change another engine made to a task running here after this run was
    /// claimed ended the run: it was canceled there, or its lease was taken over. The run is
    /// told to stop (its late result would be refused anyway) and its slot is freed. An
    /// event of that engine committed before the claim (heard late) is numbered before it
    /// (a task's events are numbered after its `last_seq`, whichever engine writes) and
    /// changes nothing here.
    fn deliver_remote_events(&self, st: &mut State) -> Result<()> {
        let events = self.store.remote_events()?;
        if events.is_empty() {
            return Ok(());
        }
        let mut freed = false;
        for event in &events {
            st.seq = st.seq.max(event.seq);
            if let crate::event::Payload::Status(p) = &event.payload {
                if p.status.is_terminal() {
                    st.watching.remove(&event.task_id);
                }
                let after_claim = st
                    .running
                    .get(&*event.task_id)
                    .is_some_and(|run| event.seq > run.claimed_at_seq);
                if let Some(run) = after_claim
                    .then(|| self.end_run(st, &event.task_id, None))
                    .flatten()
                {
                    let reason = if p.status == TaskStatus::Canceled {
                        StopReason::Canceled
                    } else {
                        StopReason::LeaseLost
                    };
                    self.abort_run(st, &event.task_id, &run, reason);
                    freed = true;
                }
            }
        }
        self.sink.deliver(events);
        if freed {
            self.refill(st);
        }
        Ok(())
    }

    /// Runs past their task's `timeoutMs`: a failed attempt (`E_TIMEOUT`), retried under
    /// `maxAttempts`; the runner is told to stop and has `timeout_grace_ms` to return.
    fn time_out_runs(&self, st: &mut State, now: Millis) -> Result<()> {
        while let Some(&(deadline, token, ref id)) = st.deadlines.first() {
            if deadline > now {
                break;
            }
            let id = TaskId::clone(id);
            st.deadlines.pop_first();
            let Some(run) = self.end_run(st, &id, Some(token)) else {
                continue;
            };
            let timeout = self
                .store
                .get(&id)?
                .and_then(|t| t.timeout_ms)
                .unwrap_or_default();
            let error = TaskError::new(format!("task {id} timed out after {timeout} ms"))
                .with_code("E_TIMEOUT");
            let unit = fastrand::f64();
            let _ = self.commit(st, &id, now, |t| {
                state::fail(t, token, error.clone(), now, unit)
            })?;
            self.abort_run(st, &id, &run, StopReason::Timeout);
            st.overdue.push(Overdue {
                grace_until: now + self.config.timeout_grace_ms as Millis,
                executor: run.executor,
                task_id: id,
                token,
            });
        }
        Ok(())
    }

    /// Timed-out runs still not returned after the grace period: their executor is stuck.
    fn report_stuck(&self, st: &mut State, now: Millis) {
        if st.overdue.is_empty() {
            return;
        }
        let (stuck, waiting): (Vec<Overdue>, Vec<Overdue>) = std::mem::take(&mut st.overdue)
            .into_iter()
            .partition(|o| o.grace_until <= now);
        st.overdue = waiting;
        for o in stuck {
            if st.executors.contains_key(&o.executor) {
                tracing::warn!(task = %o.task_id, executor = o.executor, "a timed-out run did not return: executor stuck");
                self.sink.executor_stuck(o.executor);
            }
        }
    }

    /// A lease that ran out means its runner is gone or stuck: the task counts a failed
    /// attempt and is retried (or fails), and a runner still holding it is told to stop.
    fn recover_expired(&self, st: &mut State, now: Millis) -> Result<()> {
        if self.store.next_expiry()?.is_none_or(|at| at > now) {
            return Ok(());
        }
        for task in self.store.expired(now, RECOVER_BATCH)? {
            let unit = fastrand::f64();
            let recovered = self.commit(st, &task.id, now, |t| {
                if t.lease_token != task.lease_token {
                    return Err(state::Refused::Stale);
                }
                state::expire(t, now, unit)
            })?;
            if recovered.is_ok() {
                tracing::warn!(task = %task.id, owner = ?task.lease_owner, "lease expired; task recovered");
                if let Some(run) = self.end_run(st, &task.id, Some(task.lease_token)) {
                    self.abort_run(st, &task.id, &run, StopReason::LeaseLost);
                }
            }
        }
        // The claim that follows in this round refills the freed slots.
        Ok(())
    }

    /// Native threads cannot stall the way an event loop can: the engine renews their
    /// leases itself, every third of the lease.
    fn renew_native_runs(&self, st: &mut State, now: Millis) -> Result<()> {
        if now < st.next_renewal {
            return Ok(());
        }
        let lease = self.config.lease_ms;
        st.next_renewal = now + (lease / 3) as Millis;
        let runs: Vec<(TaskId, u64)> = st
            .running
            .iter()
            .filter(|(_, run)| self.executor_renews_engine_side(st, run.executor))
            .map(|(id, run)| (TaskId::clone(id), run.token))
            .collect();
        for (id, token) in runs {
            let _ = self.commit(st, &id, now, |t| state::renew(t, token, now, lease))?;
        }
        Ok(())
    }

    pub(super) fn claim(&self, st: &mut State, now: Millis) -> Result<()> {
        self.claim_after(st, now, None).1
    }

    /// Claims into free slots, after applying `batch` (if any) in the same store call
    /// ([`crate::Store::apply_many_then_claim`]): the batch's events are delivered first.
    /// Returns the batch's results (as [`Shared::commit_many`]) and how the claim went.
    pub(super) fn claim_after(
        &self,
        st: &mut State,
        now: Millis,
        batch: Option<&mut [(&str, Transition<'_>)]>,
    ) -> (Vec<Committed>, Result<()>) {
        let free = self.config.concurrency.saturating_sub(st.running.len());
        // Executors reserved while the store picks, one per picked task, in pick order:
        // an executor serving several classifications is never promised twice.
        let reserved: RefCell<Vec<ExecutorId>> = RefCell::default();
        let tentative: RefCell<FxHashMap<ExecutorId, usize>> = RefCell::default();
        let state = &*st;
        let reserve = |classification: &str| {
            let mut tentative = tentative.borrow_mut();
            let pick = self.least_loaded(state, classification, &tentative);
            if let Some(id) = pick {
                *tentative.entry(id).or_default() += 1;
                reserved.borrow_mut().push(id);
            }
            pick.is_some()
        };
        // One sequence for the batch's events and the claim's, in that order.
        let seq = Cell::new(st.seq);
        let number = |task: &mut Task, drafts: Vec<EventDraft>| {
            let mut next = seq.get();
            let events = super::number_events(&mut next, task, drafts, now);
            seq.set(next);
            events
        };
        let classifications: Vec<String> = st.routes.keys().cloned().collect();
        let request = ClaimRequest {
            limit: free,
            now,
            owner: &self.config.owner,
            lease_ms: self.config.lease_ms,
            classifications: &classifications,
            reserve: &reserve,
            number: &number,
        };
        let mut ids: Vec<&str> = Vec::new();
        let (applied, claim) = match batch {
            Some(batch) => {
                ids.extend(batch.iter().map(|(id, _)| *id));
                let mut numbering = |task: &mut Task, drafts: Vec<EventDraft>| number(task, drafts);
                self.store
                    .apply_many_then_claim(batch, &mut numbering, &request)
            }
            None => (Vec::new(), self.store.claim(&request)),
        };
        // Numbers handed out are used even if the claim failed half way.
        st.seq = seq.get();
        let applied = self.delivered(st, &ids, applied);
        let reserved = reserved.into_inner();
        let taken = claim.and_then(|batch| self.take_claimed(st, now, batch, &reserved));
        (applied, taken)
    }

    /// Hands what a claim took to the executors `reserved` for it (in claim order), and
    /// fails the blocked tasks whose dependency failed.
    fn take_claimed(
        &self,
        st: &mut State,
        now: Millis,
        batch: ClaimBatch,
        reserved: &[ExecutorId],
    ) -> Result<()> {
        let ClaimBatch {
            claimed,
            dependency_failures,
        } = batch;
        if !dependency_failures.is_empty() {
            // Their own dependents are handed over by the next claim.
            self.wake();
        }
        for failure in dependency_failures {
            let DependencyFailure {
                task_id,
                dependency,
                status,
            } = failure;
            let _ = self.commit(st, &task_id, now, |t| {
                state::dependency_failed(t, &dependency, status, now)
            })?;
        }
        if claimed.is_empty() {
            return Ok(());
        }
        if st.running.is_empty() {
            st.next_renewal = now + (self.config.lease_ms / 3) as Millis;
        }
        let mut events = Vec::with_capacity(claimed.len());
        let mut jobs = Vec::with_capacity(claimed.len());
        let mut unassigned = Vec::new();
        for (i, Claimed { task, events: own }) in claimed.into_iter().enumerate() {
            events.extend(own);
            let Some(&executor) = reserved.get(i).filter(|id| st.executors.contains_key(id)) else {
                unassigned.push((TaskId::clone(&task.id), task.lease_token));
                continue;
            };
            let deadline = task
                .timeout_ms
                .map(|ms| now.saturating_add(ms.min(i64::MAX as u64) as Millis));
            if let Some(at) = deadline {
                st.deadlines
                    .insert((at, task.lease_token, TaskId::clone(&task.id)));
            }
            st.running.insert(
                TaskId::clone(&task.id),
                Run {
                    token: task.lease_token,
                    executor,
                    deadline,
                    claimed_at_seq: task.last_seq,
                },
            );
            if let Some(entry) = st.executors.get_mut(&executor) {
                entry.load += 1;
                if entry.engine_renews {
                    st.native_runs += 1;
                }
            }
            jobs.push((executor, job_of(task)));
        }
        self.sink.deliver(events);
        for (id, token) in unassigned {
            // The store claimed more than was reserved (a store bug): give it back.
            tracing::error!(task = %id, "claimed without an executor; released");
            let _ = self.commit(st, &id, now, |t| state::release(t, token, now))?;
        }
        // The new leases expire, native ones need renewing, runs may time out: wake the
        // dispatcher once if it would sleep past the earliest of these.
        let mut needed = st.next_renewal.min(now + self.config.lease_ms as Millis);
        if let Some(&(deadline, _, _)) = st.deadlines.first() {
            needed = needed.min(deadline);
        }
        if st.sleeping_until.is_none_or(|at| at > needed) {
            st.sleeping_until = Some(needed);
            self.wake();
        }
        for (executor, job) in jobs {
            if let Some(entry) = st.executors.get(&executor) {
                entry.executor.execute(job);
            }
        }
        Ok(())
    }

    /// The least loaded executor serving `classification` with room, counting `extra`
    /// runs promised in the claim under way.
    fn least_loaded(
        &self,
        st: &State,
        classification: &str,
        extra: &FxHashMap<ExecutorId, usize>,
    ) -> Option<ExecutorId> {
        st.routes
            .get(classification)?
            .iter()
            .filter_map(|id| {
                let e = st.executors.get(id)?;
                let load = e.load + extra.get(id).copied().unwrap_or(0);
                (load < e.capacity).then_some((load, *id))
            })
            .min()
            .map(|(_, id)| id)
    }
}

fn job_of(task: Task) -> Job {
    let Some(step) = task.step() else {
        return Job {
            attempt: task.attempt + 1,
            token: task.lease_token,
            classification: task.classification,
            name: task.name,
            input: task.input,
            result_cache: serde_json::Value::Object(Default::default()),
            step: None,
            task_id: task.id,
        };
    };
    let index = task.current_step.unwrap_or(0);
    Job {
        attempt: task.attempt + 1,
        token: task.lease_token,
        classification: step.classification.clone(),
        name: step.name.clone().or_else(|| task.name.clone()),
        input: std::sync::Arc::new(step.input.clone()),
        result_cache: state::result_cache(&task),
        step: Some(JobStep {
            index,
            total: task.steps.len() as u32,
            name: step.name.clone(),
            attempt: task.step_attempt + 1,
            max_attempts: step.max_attempts.unwrap_or(task.max_attempts),
            can_fail: step.can_fail,
            task_classification: task.classification.clone(),
        }),
        task_id: task.id,
    }
}
