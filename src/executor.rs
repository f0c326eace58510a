//! An executor living on a JS thread: jobs and aborts are queued here, the thread is woken
//! once per batch and takes everything waiting with one call.

use std::sync::atomic::{AtomicBool, Ordering};

use decaf_tasks_core::{Executor, Job, StopReason};
use napi::threadsafe_function::ThreadsafeFunctionCallMode;
use napi::Status;
use parking_lot::Mutex;
use serde::Serialize;

use crate::sink::Wake;

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub(crate) enum Message {
    Run(Job),
    #[serde(rename_all = "camelCase")]
    Abort {
        task_id: String,
        token: u64,
        reason: &'static str,
    },
}

pub(crate) struct JsExecutor {
    inbox: Mutex<Vec<Message>>,
    scheduled: AtomicBool,
    wake: Wake,
}

impl JsExecutor {
    pub(crate) fn new(wake: Wake) -> Self {
        JsExecutor {
            inbox: Mutex::new(Vec::new()),
            scheduled: AtomicBool::new(false),
            wake,
        }
    }

    pub(crate) fn take(&self) -> Vec<Message> {
        self.scheduled.store(false, Ordering::Release);
        std::mem::take(&mut *self.inbox.lock())
    }

    fn send(&self, message: Message) {
        self.inbox.lock().push(message);
        if !self.scheduled.swap(true, Ordering::AcqRel) {
            let status = self.wake.call((), ThreadsafeFunctionCallMode::NonBlocking);
            if status != Status::Ok {
                tracing::warn!(?status, "JS executor unreachable; its leases will expire");
            }
        }
    }
}

impl Executor for JsExecutor {
    fn execute(&self, job: Job) {
        self.send(Message::Run(job));
    }

    fn abort(&self, task_id: &str, token: u64, reason: StopReason) {
        self.send(Message::Abort {
            task_id: task_id.to_owned(),
            token,
            reason: reason.as_str(),
        });
    }
}
