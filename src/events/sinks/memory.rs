//! The `memory` sink: the in-process bus of embedded mode. Keeps the CloudEvents published
//! (deduplicated by `id`, like JetStream; bounded, oldest dropped) and broadcasts each new one
//! to in-process subscribers such as the trigger engine.

use std::collections::{HashSet, VecDeque};
use std::sync::{Mutex, MutexGuard};

use cloudevents::{AttributesReader, Event};
use futures::future::BoxFuture;
use tokio::sync::broadcast;

use crate::events::sink::{Delivery, Outgoing, Sink, SinkError};

const NAME: &str = "memory";
/// How many events a subscriber may fall behind before it misses some
/// (`RecvError::Lagged`).
const BROADCAST_CAPACITY: usize = 4096;

/// Keeps and broadcasts published CloudEvents (see the [module](self) docs).
#[derive(Debug)]
pub struct MemorySink {
    capacity: usize,
    state: Mutex<State>,
    sender: broadcast::Sender<Event>,
}

#[derive(Debug, Default)]
struct State {
    events: VecDeque<Event>,
    ids: HashSet<String>,
}

impl Default for MemorySink {
    fn default() -> Self {
        Self::new()
    }
}

impl MemorySink {
    /// How many events are kept by default.
    pub const DEFAULT_CAPACITY: usize = 10_000;

    /// A sink keeping [`Self::DEFAULT_CAPACITY`] events.
    pub fn new() -> Self {
        Self::with_capacity(Self::DEFAULT_CAPACITY)
    }

    /// A sink keeping at most `capacity` events (at least one); the oldest are dropped, and
    /// an id dropped that way is accepted again, like a JetStream duplicate window.
    pub fn with_capacity(capacity: usize) -> Self {
        let (sender, _) = broadcast::channel(BROADCAST_CAPACITY);
        Self { capacity: capacity.max(1), state: Mutex::new(State::default()), sender }
    }

    /// The events kept, oldest first.
    pub fn published(&self) -> Vec<Event> {
        self.state().events.iter().cloned().collect()
    }

    /// How many events are kept.
    pub fn len(&self) -> usize {
        self.state().events.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Receives every event recorded from now on (not the ones already kept: read those with
    /// [`Self::published`] after subscribing). A receiver that falls more than 4096 events
    /// behind gets `RecvError::Lagged`.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.sender.subscribe()
    }

    /// Records `event` unless one with its id is kept already; returns whether it was new.
    pub fn record(&self, event: &Event) -> bool {
        let mut state = self.state();
        if !state.ids.insert(event.id().to_owned()) {
            return false;
        }
        state.events.push_back(event.clone());
        while state.events.len() > self.capacity {
            if let Some(old) = state.events.pop_front() {
                state.ids.remove(old.id());
            }
        }
        // Sent under the lock, so subscribers see events in recording order; no receivers is fine.
        let _ = self.sender.send(event.clone());
        true
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Sink for MemorySink {
    fn name(&self) -> &'static str {
        NAME
    }

    fn publish<'a>(&'a self, outgoing: &'a Outgoing) -> BoxFuture<'a, Result<Delivery, SinkError>> {
        let delivery = outgoing.cloud_events.iter().fold(Delivery::default(), |delivery, event| {
            delivery.and(Delivery::acknowledged(!self.record(event)))
        });
        Box::pin(std::future::ready(Ok(delivery)))
    }
}
