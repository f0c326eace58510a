//! Events to JS: queued here in engine order, then taken in one batch per wake-up of the
//! owning thread (one JSON string per batch: creating JS objects is the cost, not the call).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};

use decaf_tasks_core::{Event, EventSink};
use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi::Status;
use parking_lot::Mutex;

/// A weak, callee-unhandled threadsafe function taking no argument: a wake-up call.
pub(crate) type Wake = ThreadsafeFunction<(), (), (), Status, false, true>;

/// A wake-up call that can be released early (at shutdown) and is coalesced: it is made
/// only when the previous one has been answered by a `take`.
pub(crate) struct Waker {
    wake: Mutex<Option<Wake>>,
    scheduled: AtomicBool,
}

impl Waker {
    pub(crate) fn new(wake: Wake) -> Self {
        Waker {
            wake: Mutex::new(Some(wake)),
            scheduled: AtomicBool::new(false),
        }
    }

    /// Wakes the JS thread unless a wake-up is already pending. `false` if it cannot.
    pub(crate) fn wake(&self) -> bool {
        if self.scheduled.swap(true, Ordering::AcqRel) {
            return true;
        }
        match self.wake.lock().as_ref() {
            Some(wake) => wake.call((), ThreadsafeFunctionCallMode::NonBlocking) == Status::Ok,
            None => false,
        }
    }

    /// The JS thread is taking what waits: the next delivery wakes it again.
    pub(crate) fn answered(&self) {
        self.scheduled.store(false, Ordering::Release);
    }

    /// Releases the threadsafe function, so nothing stays registered with Node.
    pub(crate) fn close(&self) {
        self.wake.lock().take();
    }
}

pub(crate) struct JsEventSink {
    queue: Mutex<VecDeque<Event>>,
    stuck: Mutex<Vec<u64>>,
    waker: Waker,
}

impl JsEventSink {
    pub(crate) fn new(wake: Wake) -> Self {
        JsEventSink {
            queue: Mutex::new(VecDeque::new()),
            stuck: Mutex::new(Vec::new()),
            waker: Waker::new(wake),
        }
    }

    /// Takes up to `max` queued events, oldest first. Small batches keep every string
    /// that crosses out of V8's large-object space (fresh pages for each one otherwise).
    pub(crate) fn drain(&self, max: usize) -> Vec<Event> {
        self.waker.answered();
        let mut queue = self.queue.lock();
        let n = queue.len().min(max);
        queue.drain(..n).collect()
    }

    /// Executors reported stuck since the last call.
    pub(crate) fn drain_stuck(&self) -> Vec<u64> {
        std::mem::take(&mut *self.stuck.lock())
    }

    /// After shutdown: events still queue for `drain`, nobody is woken for them.
    pub(crate) fn close(&self) {
        self.waker.close();
    }
}

impl EventSink for JsEventSink {
    fn deliver(&self, events: Vec<Event>) {
        self.queue.lock().extend(events);
        if !self.waker.wake() {
            tracing::debug!("event wake-up not delivered (JS environment closing or closed)");
        }
    }

    fn executor_stuck(&self, executor: decaf_tasks_core::ExecutorId) {
        self.stuck.lock().push(executor);
        self.waker.wake();
    }
}
