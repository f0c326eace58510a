//! Task events: what the engine tells the world, in causal order per task.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::model::{LogEntry, Millis, Task, TaskError, TaskId, TaskStatus};

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

/// Payload of a status event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusPayload {
    /// The new status.
    pub status: TaskStatus,
    /// The output (present, possibly `null`, when `succeeded`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[serde(deserialize_with = "crate::model::present")]
    pub output: Option<Value>,
    /// The error (`failed`, `canceled`, `waiting_retry`); boxed to keep events small.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<Box<TaskError>>,
    /// When a `waiting_retry` task runs again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_run_at: Option<Millis>,
    /// When a `scheduled` task runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduled_to: Option<Millis>,
}

/// What an event carries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Payload {
    /// Of a `status` event.
    Status(StatusPayload),
    /// Of a `log` event.
    Log(Vec<LogEntry>),
    /// Of `progress` and `update` events: any JSON.
    Json(Value),
}

impl Payload {
    /// The payload as a JSON value.
    pub fn to_json(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}

/// An event before the engine numbers it.
#[derive(Debug, Clone, PartialEq)]
pub struct EventDraft {
    /// Kind of event.
    pub class: EventClass,
    /// Payload.
    pub payload: Payload,
}

impl EventDraft {
    /// The status event describing `task`'s current status.
    pub fn status(task: &Task) -> Self {
        let status = task.status;
        let payload = StatusPayload {
            status,
            output: (status == TaskStatus::Succeeded)
                .then(|| task.output.clone().unwrap_or(Value::Null)),
            error: matches!(
                status,
                TaskStatus::Failed | TaskStatus::Canceled | TaskStatus::WaitingRetry
            )
            .then(|| task.error.clone().map(Box::new))
            .flatten(),
            next_run_at: (status == TaskStatus::WaitingRetry)
                .then_some(task.next_run_at)
                .flatten(),
            scheduled_to: (status == TaskStatus::Scheduled)
                .then_some(task.scheduled_to)
                .flatten(),
        };
        EventDraft {
            class: EventClass::Status,
            payload: Payload::Status(payload),
        }
    }

    /// A log event of one entry.
    pub fn log(entry: LogEntry) -> Self {
        EventDraft {
            class: EventClass::Log,
            payload: Payload::Log(vec![entry]),
        }
    }

    /// A progress event.
    pub fn progress(data: Value) -> Self {
        EventDraft {
            class: EventClass::Progress,
            payload: Payload::Json(data),
        }
    }
}

/// A numbered, persisted event. Serializes as
/// `{ uuid, seq, taskId, ts, classification, payload }`; its id,
/// `"<taskId>:<classification>:<uuid>"` ([`Event::id`]), is derived, not sent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", try_from = "EventRecord")]
pub struct Event {
    /// Unique id of the event.
    pub uuid: Uuid,
    /// Engine-wide sequence number: events are delivered in this order.
    pub seq: u64,
    /// The task it is about.
    pub task_id: TaskId,
    /// When it happened.
    pub ts: Millis,
    /// Kind of event.
    pub classification: EventClass,
    /// Payload.
    pub payload: Payload,
}

/// An event as read back: its payload is decoded by its classification, since the untagged
/// [`Payload`] alone would read a progress payload shaped like a status one as a status.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct EventRecord {
    uuid: Uuid,
    seq: u64,
    task_id: TaskId,
    ts: Millis,
    classification: EventClass,
    payload: Value,
}

impl TryFrom<EventRecord> for Event {
    type Error = serde_json::Error;

    fn try_from(record: EventRecord) -> Result<Self, Self::Error> {
        let payload = match record.classification {
            EventClass::Status => Payload::Status(serde_json::from_value(record.payload)?),
            EventClass::Log => Payload::Log(serde_json::from_value(record.payload)?),
            EventClass::Progress | EventClass::Update => Payload::Json(record.payload),
        };
        Ok(Event {
            uuid: record.uuid,
            seq: record.seq,
            task_id: record.task_id,
            ts: record.ts,
            classification: record.classification,
            payload,
        })
    }
}

impl Event {
    /// Numbers a draft.
    pub fn from_draft(task_id: &TaskId, seq: u64, ts: Millis, draft: EventDraft) -> Self {
        Event {
            uuid: Uuid::new_v4(),
            seq,
            task_id: TaskId::clone(task_id),
            ts,
            classification: draft.class,
            payload: draft.payload,
        }
    }

    /// `"<taskId>:<classification>:<uuid>"`.
    pub fn id(&self) -> String {
        format!(
            "{}:{}:{}",
            self.task_id,
            self.classification.as_str(),
            self.uuid
        )
    }

    /// The status carried by a status event.
    pub fn status(&self) -> Option<TaskStatus> {
        match &self.payload {
            Payload::Status(p) if self.classification == EventClass::Status => Some(p.status),
            _ => None,
        }
    }
}

/// Where the engine delivers events once they are persisted. Called with the engine's
/// commit lock held, so calls arrive in event order: implementations must only queue.
pub trait EventSink: Send + Sync {
    /// Takes a batch of events, in order.
    fn deliver(&self, events: Vec<Event>);

    /// An executor did not return a timed-out run within the grace period: its thread is
    /// stuck (a worker can be terminated and replaced). The default ignores it.
    fn executor_stuck(&self, _executor: crate::executor::ExecutorId) {}
}

/// A sink that drops everything.
#[derive(Debug, Default)]
pub struct NullSink;

impl EventSink for NullSink {
    fn deliver(&self, _events: Vec<Event>) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn serializes_without_the_derived_id() {
        let task_id: TaskId = "t1".into();
        let e = Event::from_draft(&task_id, 7, 1000, EventDraft::progress(json!({"p": 1})));
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(e.id(), format!("t1:progress:{}", e.uuid));
        assert!(v.get("id").is_none());
        assert_eq!(v["taskId"], json!("t1"));
        assert_eq!(v["seq"], json!(7));
        assert_eq!(v["payload"], json!({"p": 1}));
        let back: Event = serde_json::from_value(v).unwrap();
        assert_eq!(back, e);
    }

    #[test]
    fn reads_back_what_it_wrote() {
        let task_id: TaskId = "t1".into();
        // A progress payload shaped like a status payload stays a progress payload.
        let lookalike = json!({"status": "running", "pct": 5});
        let progress = Event::from_draft(&task_id, 1, 10, EventDraft::progress(lookalike));
        // A `null` output stays present.
        let status = Event::from_draft(
            &task_id,
            2,
            20,
            EventDraft {
                class: EventClass::Status,
                payload: Payload::Status(StatusPayload {
                    status: TaskStatus::Succeeded,
                    output: Some(Value::Null),
                    error: None,
                    next_run_at: None,
                    scheduled_to: None,
                }),
            },
        );
        for e in [progress, status] {
            let text = serde_json::to_string(&e).unwrap();
            let back: Event = serde_json::from_str(&text).unwrap();
            assert_eq!(back, e);
            assert_eq!(serde_json::to_string(&back).unwrap(), text);
        }
    }
}
