//! Hearing the other processes: a listener thread with a connection of its own `LISTEN`s
//! on the schema's channel, notes which events each notification announces and wakes
//! the engine; [`Feed::take`] then tells what to read.
//!
//! Notifications are sent by the writing transactions and delivered when they commit, in
//! commit order: reading the announced ranges in notification order gives the events in
//! the order they were committed. While the listener is disconnected, notifications are
//! lost: after it reconnects, the events stored after the last one read are read by id
//! instead (an event of a transaction that committed late with a smaller id than one
//! already read would be missed there).

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use postgres::fallible_iterator::FallibleIterator;
use postgres::Client;

use super::conn::{describe, Connector, BACKOFF_MAX, BACKOFF_MIN};
use crate::error::{EngineError, Result};

/// How long the listener waits for a notification before it looks at its stop flag.
const TICK: Duration = Duration::from_millis(200);
/// How often an idle listener checks that its connection still answers.
const PING: Duration = Duration::from_secs(5);
/// Ids of events read by id (after a reconnection, or by a claim), kept to drop them if a
/// notification announces them too.
const RECENT_MAX: usize = 10_000;

/// Events of one transaction of another process: `origin`'s, with ids `first..=last`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Range {
    pub(super) origin: String,
    pub(super) first: i64,
    pub(super) last: i64,
}

/// What a notification says, from `"<origin>:<first id>:<last id>"` (ids empty when the
/// transaction stored no event). Origins may contain `:`.
pub(super) fn parse(payload: &str) -> Option<(&str, Option<(i64, i64)>)> {
    let mut parts = payload.rsplitn(3, ':');
    let last = parts.next()?;
    let first = parts.next()?;
    let origin = parts.next()?;
    if first.is_empty() && last.is_empty() {
        return Some((origin, None));
    }
    Some((origin, Some((first.parse().ok()?, last.parse().ok()?))))
}

/// What the listener heard and the store has not read yet.
#[derive(Debug, Default)]
pub(super) struct Heard {
    /// Announced ranges, in notification order.
    pub(super) ranges: Vec<Range>,
    /// The listener reconnected when this many of `ranges` were heard: read by id what
    /// was stored after `last_id` there.
    pub(super) resync_at: Option<usize>,
}

#[derive(Debug, Default)]
struct FeedState {
    heard: Heard,
    /// The largest event id read so far.
    last_id: i64,
    /// Ids read by id (after a reconnection, or by a claim).
    recent: BTreeSet<i64>,
    /// Reconnections so far.
    reconnections: u64,
}

/// What was read before.
#[derive(Debug, Clone)]
pub(super) struct Seen {
    /// The largest event id read.
    pub(super) last_id: i64,
    /// Ids read by id (after a reconnection, or by a claim): a notification may announce
    /// them too.
    pub(super) recent: BTreeSet<i64>,
    reconnections: u64,
}

/// Shared by the listener thread and the store.
pub(super) struct Feed {
    origin: String,
    state: Mutex<FeedState>,
    stop: AtomicBool,
}

impl Feed {
    pub(super) fn new(origin: &str, last_id: i64) -> Self {
        Feed {
            origin: origin.to_owned(),
            state: Mutex::new(FeedState {
                last_id,
                ..FeedState::default()
            }),
            stop: AtomicBool::new(false),
        }
    }

    pub(super) fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// Notes a notification; whether it is another process's (worth waking for).
    fn hear(&self, payload: &str) -> bool {
        let Some((origin, ids)) = parse(payload) else {
            tracing::warn!(
                payload,
                "unexpected notification on the decaf-tasks channel"
            );
            return true;
        };
        if origin == self.origin {
            return false;
        }
        if let Some((first, last)) = ids {
            self.state.lock().heard.ranges.push(Range {
                origin: origin.to_owned(),
                first,
                last,
            });
        }
        true
    }

    fn resync(&self) {
        let mut st = self.state.lock();
        st.reconnections += 1;
        if st.heard.resync_at.is_none() {
            st.heard.resync_at = Some(st.heard.ranges.len());
        }
    }

    /// Whether anything is waiting to be read.
    pub(super) fn is_empty(&self) -> bool {
        let st = self.state.lock();
        st.heard.ranges.is_empty() && st.heard.resync_at.is_none()
    }

    /// The largest id read so far, and the ranges heard but not read.
    pub(super) fn unread(&self) -> (i64, Vec<Range>) {
        let st = self.state.lock();
        (st.last_id, st.heard.ranges.clone())
    }

    /// Events read otherwise (by a claim): not to be returned again.
    pub(super) fn returned(&self, ids: &[i64]) {
        if ids.is_empty() {
            return;
        }
        let mut st = self.state.lock();
        st.recent.extend(ids.iter().copied());
        while st.recent.len() > RECENT_MAX {
            st.recent.pop_first();
        }
    }

    /// Whether an event was read by id already.
    pub(super) fn was_returned(&self, id: i64) -> bool {
        self.state.lock().recent.contains(&id)
    }

    /// What to read, the largest id read so far, and the ids read by id after the last
    /// reconnections. It stays queued until [`Feed::done`] (a failed read is tried again).
    pub(super) fn peek(&self) -> (Heard, Seen) {
        let st = self.state.lock();
        let heard = Heard {
            ranges: st.heard.ranges.clone(),
            resync_at: st.heard.resync_at,
        };
        let seen = Seen {
            last_id: st.last_id,
            recent: st.recent.clone(),
            reconnections: st.reconnections,
        };
        (heard, seen)
    }

    /// What [`Feed::peek`] returned was read (the catch-up only in part unless
    /// `caught_up`): `by_id` are the ids read by id, `max_id` the largest id read.
    pub(super) fn done(
        &self,
        heard: &Heard,
        seen: &Seen,
        caught_up: bool,
        by_id: &[i64],
        max_id: i64,
    ) {
        let mut st = self.state.lock();
        let read = heard.ranges.len().min(st.heard.ranges.len());
        st.heard.ranges.drain(..read);
        if heard.resync_at.is_some() {
            st.heard.resync_at = if !caught_up || st.reconnections != seen.reconnections {
                // More to catch up (or a gap since): first thing next time.
                Some(0)
            } else {
                None
            };
        } else if let Some(at) = st.heard.resync_at {
            st.heard.resync_at = Some(at.saturating_sub(read));
        }
        st.recent.extend(by_id.iter().copied());
        while st.recent.len() > RECENT_MAX {
            st.recent.pop_first();
        }
        st.last_id = st.last_id.max(max_id);
    }
}

/// Starts the listener thread on `client` (listening already), which calls `wake` after
/// each batch of notifications from other processes and after each reconnection.
pub(super) fn spawn(
    client: Client,
    connector: Arc<Connector>,
    channel: String,
    feed: Arc<Feed>,
    wake: Arc<dyn Fn() + Send + Sync>,
) -> Result<()> {
    std::thread::Builder::new()
        .name("decaf-pg-listener".into())
        .spawn(move || run(client, &connector, &channel, &feed, &*wake))
        .map_err(|e| EngineError::Internal(format!("could not start the listener thread: {e}")))?;
    Ok(())
}

/// A new connection listening on `channel`.
pub(super) fn listen(connector: &Connector, channel: &str) -> Result<Client> {
    let mut client = connector.open()?;
    client
        .batch_execute(&format!("LISTEN \"{channel}\""))
        .map_err(|e| {
            EngineError::Store(format!(
                "PostgreSQL at {}: LISTEN failed: {}",
                connector.target(),
                describe(&e)
            ))
        })?;
    Ok(client)
}

fn run(
    mut client: Client,
    connector: &Connector,
    channel: &str,
    feed: &Feed,
    wake: &(dyn Fn() + Send + Sync),
) {
    loop {
        if let Err(why) = hear(&mut client, feed, wake) {
            tracing::warn!(error = %why, "the PostgreSQL listener lost its connection; reconnecting");
        }
        let mut delay = BACKOFF_MIN;
        client = loop {
            if feed.stopped() {
                return;
            }
            match listen(connector, channel) {
                Ok(client) => break client,
                Err(err) => {
                    tracing::warn!(%err, "the PostgreSQL listener cannot reconnect yet");
                    pause(feed, delay);
                    delay = (delay * 2).min(BACKOFF_MAX);
                }
            }
        };
        tracing::info!("the PostgreSQL listener reconnected");
        // Notifications sent meanwhile are lost: catch up by id, and wake the engine for
        // whatever became runnable.
        feed.resync();
        wake();
    }
}

/// Sleeps `delay`, a tick at a time, unless the store is dropped.
fn pause(feed: &Feed, delay: Duration) {
    let until = Instant::now() + delay;
    while !feed.stopped() {
        let now = Instant::now();
        if now >= until {
            return;
        }
        std::thread::sleep((until - now).min(TICK));
    }
}

/// Hears notifications until the store is dropped (`Ok`) or the connection fails.
fn hear(client: &mut Client, feed: &Feed, wake: &(dyn Fn() + Send + Sync)) -> Result<(), String> {
    let mut quiet_since = Instant::now();
    loop {
        if feed.stopped() {
            return Ok(());
        }
        let mut notifications = client.notifications();
        let first = notifications
            .timeout_iter(TICK)
            .next()
            .map_err(|e| describe(&e))?;
        let Some(first) = first else {
            drop(notifications);
            if client.is_closed() {
                return Err("connection closed".into());
            }
            if quiet_since.elapsed() >= PING {
                // A connection that died quietly only shows when it is used.
                client.simple_query("").map_err(|e| describe(&e))?;
                quiet_since = Instant::now();
            }
            continue;
        };
        let mut others = feed.hear(first.payload());
        // Whatever else arrived with it, without waiting.
        let mut more = notifications.iter();
        while let Some(notification) = more.next().map_err(|e| describe(&e))? {
            others |= feed.hear(notification.payload());
        }
        quiet_since = Instant::now();
        if others {
            wake();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn payloads_parse_from_the_right() {
        assert_eq!(parse("a:1:2"), Some(("a", Some((1, 2)))));
        assert_eq!(parse("host:42:7:9"), Some(("host:42", Some((7, 9)))));
        assert_eq!(parse("b::"), Some(("b", None)));
        assert_eq!(parse("b:x:1"), None);
        assert_eq!(parse("nothing"), None);
    }
}
