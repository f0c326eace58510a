//! Task events: what the engine tells the world, in causal order per task.

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::model::{LogEntry, Millis, Task, TaskError, TaskStatus};

/// The four kinds of event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventClass {
    /// A status change; payload `{ status, output?, error?, nextRunAt?, scheduledTo? }`.
    Status,
    /// Log lines; payload `[{ ts, level, msg, meta?, step? }]`.
    Log,
    /// Whatever the handler passed to `progress`.
    Progress,
    /// A change of a composite's step list.
    Update,
}

impl EventClass {
    /// The class as spelled in JSON and in event ids.
    pub fn as_str(self) -> &'static str {
        match self {
            EventClass::Status => "status",
            EventClass::Log => "log",
            EventClass::Progress => "progress",
            EventClass::Update => "update",
        }
    }
}

/// An event before the engine numbers it.
#[derive(Debug, Clone, PartialEq)]
pub struct EventDraft {
    /// Kind of event.
    pub class: EventClass,
    /// Payload.
    pub payload: Value,
}

impl EventDraft {
    /// The status event describing `task`'s current status.
    pub fn status(task: &Task) -> Self {
        let mut payload = Map::new();
        payload.insert("status".into(), json!(task.status.as_str()));
        if task.status == TaskStatus::Succeeded {
            payload.insert("output".into(), task.output.clone().unwrap_or(Value::Null));
        }
        if matches!(
            task.status,
            TaskStatus::Failed | TaskStatus::Canceled | TaskStatus::WaitingRetry
        ) {
            if let Some(error) = &task.error {
                payload.insert("error".into(), error_json(error));
            }
        }
        if task.status == TaskStatus::WaitingRetry {
            if let Some(at) = task.next_run_at {
                payload.insert("nextRunAt".into(), json!(at));
            }
        }
        if task.status == TaskStatus::Scheduled {
            if let Some(at) = task.scheduled_to {
                payload.insert("scheduledTo".into(), json!(at));
            }
        }
        EventDraft {
            class: EventClass::Status,
            payload: Value::Object(payload),
        }
    }

    /// A log event of one entry.
    pub fn log(entry: &LogEntry) -> Self {
        EventDraft {
            class: EventClass::Log,
            payload: Value::Array(vec![serde_json::to_value(entry).unwrap_or(Value::Null)]),
        }
    }

    /// A progress event.
    pub fn progress(data: Value) -> Self {
        EventDraft {
            class: EventClass::Progress,
            payload: data,
        }
    }
}

fn error_json(error: &TaskError) -> Value {
    serde_json::to_value(error).unwrap_or(Value::Null)
}

/// A numbered, persisted event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    /// `"<taskId>:<classification>:<uuid>"`.
    pub id: String,
    /// Unique id of the event.
    pub uuid: String,
    /// Engine-wide sequence number: events are delivered in this order.
    pub seq: u64,
    /// The task it is about.
    pub task_id: String,
    /// When it happened.
    pub ts: Millis,
    /// Kind of event.
    pub classification: EventClass,
    /// Payload.
    pub payload: Value,
}

impl Event {
    /// Numbers a draft.
    pub fn from_draft(task_id: &str, seq: u64, ts: Millis, draft: EventDraft) -> Self {
        let uuid = uuid::Uuid::new_v4().to_string();
        Event {
            id: format!("{task_id}:{}:{uuid}", draft.class.as_str()),
            uuid,
            seq,
            task_id: task_id.to_owned(),
            ts,
            classification: draft.class,
            payload: draft.payload,
        }
    }

    /// The status carried by a status event.
    pub fn status(&self) -> Option<TaskStatus> {
        if self.classification != EventClass::Status {
            return None;
        }
        self.payload
            .get("status")
            .and_then(|s| serde_json::from_value(s.clone()).ok())
    }
}

/// Where the engine delivers events once they are persisted. Called with the engine's
/// commit lock held, so calls arrive in event order: implementations must only queue.
pub trait EventSink: Send + Sync {
    /// Takes a batch of events, in order.
    fn deliver(&self, events: &[Event]);
}

/// A sink that drops everything.
#[derive(Debug, Default)]
pub struct NullSink;

impl EventSink for NullSink {
    fn deliver(&self, _events: &[Event]) {}
}
