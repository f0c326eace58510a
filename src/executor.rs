//! An executor living on a JS thread: jobs and aborts are queued here, the thread is woken
//! once per batch and takes everything waiting with one call.

use decaf_tasks_core::{Executor, Job, StopReason};
use parking_lot::Mutex;
use serde::Serialize;

use crate::sink::{Wake, Waker};

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
    waker: Waker,
}

impl JsExecutor {
    pub(crate) fn new(wake: Wake) -> Self {
        JsExecutor {
            inbox: Mutex::new(Vec::new()),
            waker: Waker::new(wake),
        }
    }

    pub(crate) fn take(&self) -> Vec<Message> {
        self.waker.answered();
        std::mem::take(&mut *self.inbox.lock())
    }

    /// Releases the threadsafe function (after shutdown).
    pub(crate) fn close(&self) {
        self.waker.close();
    }

    fn send(&self, message: Message) {
        self.inbox.lock().push(message);
        if !self.waker.wake() {
            tracing::warn!("JS executor unreachable; the leases of its runs will expire");
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
