//! Events to JS: queued here in engine order, then taken in one batch per wake-up of the
//! owning thread (one JSON string per batch: creating JS objects is the cost, not the call).

use std::sync::atomic::{AtomicBool, Ordering};

use decaf_tasks_core::{Event, EventSink};
use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi::Status;
use parking_lot::Mutex;

/// A weak, callee-unhandled threadsafe function taking no argument: a wake-up call.
pub(crate) type Wake = ThreadsafeFunction<(), (), (), Status, false, true>;

pub(crate) struct JsEventSink {
    queue: Mutex<Vec<Event>>,
    scheduled: AtomicBool,
    wake: Wake,
}

impl JsEventSink {
    pub(crate) fn new(wake: Wake) -> Self {
        JsEventSink {
            queue: Mutex::new(Vec::new()),
            scheduled: AtomicBool::new(false),
            wake,
        }
    }

    /// Takes every queued event, oldest first.
    pub(crate) fn drain(&self) -> Vec<Event> {
        self.scheduled.store(false, Ordering::Release);
        std::mem::take(&mut *self.queue.lock())
    }
}

impl EventSink for JsEventSink {
    fn deliver(&self, events: Vec<Event>) {
        self.queue.lock().extend(events);
        if !self.scheduled.swap(true, Ordering::AcqRel) {
            let status = self.wake.call((), ThreadsafeFunctionCallMode::NonBlocking);
            if status != Status::Ok {
                tracing::debug!(
                    ?status,
                    "event wake-up not delivered (JS environment closing)"
                );
            }
        }
    }
}
