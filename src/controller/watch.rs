//! Watches that are back within seconds of an API server outage, and their health for
//! `/readyz`.
//!
//! kube's `Controller` pauses all of its trigger streams together on any error, with a backoff
//! that grows to 30 s and resets only after two quiet minutes, and its `watches`/`owns` add
//! watchers without a backoff of their own; after an API server restart that kept controllers
//! deaf for minutes. Here each watch backs off on its own ([`RETRY_MIN`] doubling to
//! [`RETRY_MAX`]), starts over with a fresh list after an error (so it is known to be in step
//! again once that list is done), and reports its state to a [`WatchHealth`]; the controllers'
//! shared backoff is reduced to a short pause.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use dashmap::DashMap;
use futures::stream::BoxStream;
use futures::{Stream, StreamExt};
use kube::Resource;
use kube::api::Api;
use kube::runtime::watcher::{self, Event};
use serde::de::DeserializeOwned;

/// The first pause after a watch error.
pub const RETRY_MIN: Duration = Duration::from_millis(250);
/// The longest pause between two attempts to watch again.
pub const RETRY_MAX: Duration = Duration::from_secs(2);

/// Where one watch is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchState {
    /// Listing, at the start or after an error: not yet in step.
    Listing,
    /// Listed and watching.
    Watching,
    /// The last attempt failed with this error.
    Down(String),
}

/// The state of every watch the operator depends on.
#[derive(Debug, Default)]
pub struct WatchHealth {
    watches: DashMap<u64, (String, WatchState)>,
    next_id: AtomicU64,
}

impl WatchHealth {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Registers a watch named `name` (what and where it watches); it counts as listing until
    /// it reports otherwise, and is forgotten when the reporter is dropped.
    pub fn register(self: &Arc<Self>, name: String) -> WatchReporter {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.watches.insert(id, (name, WatchState::Listing));
        WatchReporter { health: self.clone(), id }
    }

    /// Every watch that is not in step, by name, with its state; empty when all are.
    pub fn problems(&self) -> BTreeMap<String, WatchState> {
        self.watches
            .iter()
            .filter(|entry| entry.value().1 != WatchState::Watching)
            .map(|entry| entry.value().clone())
            .collect()
    }

    /// Why the operator is not ready, in one line, or `None` when every watch is in step.
    pub fn not_ready_reason(&self) -> Option<String> {
        let problems = self.problems();
        let (name, state) = problems.iter().next()?;
        let what = match state {
            WatchState::Down(error) => format!("the watch of {name} is down ({error})"),
            _ => format!("the watch of {name} is listing"),
        };
        Some(match problems.len() {
            1 => what,
            n => format!("{what}, and {} more watches are not in step", n - 1),
        })
    }
}

/// One watch's handle on the [`WatchHealth`].
pub struct WatchReporter {
    health: Arc<WatchHealth>,
    id: u64,
}

impl WatchReporter {
    fn set(&self, state: WatchState) {
        if let Some(mut entry) = self.health.watches.get_mut(&self.id) {
            entry.1 = state;
        }
    }
}

impl Drop for WatchReporter {
    fn drop(&mut self) {
        self.health.watches.remove(&self.id);
    }
}

struct Resumable<K: Resource + Clone + 'static> {
    api: Api<K>,
    config: watcher::Config,
    reporter: WatchReporter,
    stream: Option<BoxStream<'static, Result<Event<K>, watcher::Error>>>,
    pause: Option<Duration>,
    next_pause: Duration,
}

/// The watch events of `api`, listed again after every error (with a pause of its own), and
/// reported to `reporter`.
pub fn watch<K>(
    api: Api<K>,
    config: watcher::Config,
    reporter: WatchReporter,
) -> impl Stream<Item = Result<Event<K>, watcher::Error>> + Send + 'static
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    let state = Resumable { api, config, reporter, stream: None, pause: None, next_pause: RETRY_MIN };
    futures::stream::unfold(state, |mut state| async move {
        loop {
            if let Some(pause) = state.pause.take() {
                tokio::time::sleep(pause).await;
            }
            let stream = state
                .stream
                .get_or_insert_with(|| watcher::watcher(state.api.clone(), state.config.clone()).boxed());
            match stream.next().await {
                Some(Ok(event)) => {
                    match &event {
                        Event::Init => state.reporter.set(WatchState::Listing),
                        Event::InitDone => {
                            state.reporter.set(WatchState::Watching);
                            state.next_pause = RETRY_MIN;
                        }
                        _ => {}
                    }
                    return Some((Ok(event), state));
                }
                Some(Err(error)) => {
                    tracing::debug!(%error, "watch failed; listing again");
                    state.reporter.set(WatchState::Down(error.to_string()));
                    state.stream = None;
                    state.pause = Some(state.next_pause);
                    state.next_pause = (state.next_pause * 2).min(RETRY_MAX);
                    return Some((Err(error), state));
                }
                None => {
                    state.stream = None;
                    state.pause = Some(RETRY_MIN);
                }
            }
        }
    })
}

/// One watch, shared: every consumer gets a copy of each event (errors stay with the source,
/// which reports them to the health and lists again). A task polls the source until every
/// consumer is gone.
pub fn share<K>(
    source: impl Stream<Item = Result<Event<K>, watcher::Error>> + Send + 'static,
    consumers: usize,
) -> Vec<futures::channel::mpsc::UnboundedReceiver<Event<K>>>
where
    K: Clone + Send + Sync + 'static,
{
    let (senders, receivers): (Vec<_>, Vec<_>) =
        (0..consumers).map(|_| futures::channel::mpsc::unbounded()).unzip();
    tokio::spawn(async move {
        let mut source = std::pin::pin!(source);
        while let Some(item) = source.next().await {
            let Ok(event) = item else { continue };
            for sender in &senders {
                let _ = sender.unbounded_send(event.clone());
            }
            if senders.iter().all(futures::channel::mpsc::UnboundedSender::is_closed) {
                break;
            }
        }
    });
    receivers
}

/// The watch events of several namespaces as the events of one watch, for one reflector: one
/// first list (`Init`, every object, `InitDone` once every namespace has listed), and after that
/// a namespace that lists again gives changes only (`Apply`, and `Delete` for what is gone from
/// it), so that it never replaces the other namespaces' objects in the store.
pub fn merge_namespaces<K>(
    feeds: Vec<(String, futures::channel::mpsc::UnboundedReceiver<Event<K>>)>,
    store: kube::runtime::reflector::Store<K>,
) -> impl Stream<Item = Event<K>> + Send + 'static
where
    K: Resource<DynamicType = ()> + Clone + Send + Sync + 'static,
{
    use std::collections::HashSet;

    use kube::ResourceExt;

    let namespaces: Vec<String> = feeds.iter().map(|(ns, _)| ns.clone()).collect();
    let tagged = futures::stream::select_all(
        feeds.into_iter().enumerate().map(|(i, (_, feed))| feed.map(move |event| (i, event)).boxed()),
    );
    struct Merge<K: Resource<DynamicType = ()> + Clone + 'static> {
        store: kube::runtime::reflector::Store<K>,
        namespaces: Vec<String>,
        listed: Vec<bool>,
        first_list_done: bool,
        relisting: Vec<Option<HashSet<String>>>,
        pending: std::collections::VecDeque<Event<K>>,
    }
    let state = Merge {
        store,
        listed: vec![false; namespaces.len()],
        relisting: vec![None; namespaces.len()],
        namespaces,
        first_list_done: false,
        pending: std::collections::VecDeque::from([Event::Init]),
    };
    futures::stream::unfold((state, tagged), |(mut state, mut tagged)| async move {
        loop {
            if let Some(event) = state.pending.pop_front() {
                return Some((event, (state, tagged)));
            }
            let (i, event) = tagged.next().await?;
            let listing = !state.first_list_done;
            match event {
                Event::Init => state.relisting[i] = Some(HashSet::new()),
                Event::InitApply(object) | Event::Apply(object) => {
                    if let Some(seen) = &mut state.relisting[i] {
                        seen.insert(object.name_any());
                    }
                    state.pending.push_back(if listing {
                        Event::InitApply(object)
                    } else {
                        Event::Apply(object)
                    });
                }
                Event::Delete(object) => state.pending.push_back(Event::Delete(object)),
                Event::InitDone => {
                    let seen = state.relisting[i].take().unwrap_or_default();
                    if listing {
                        state.listed[i] = true;
                        if state.listed.iter().all(|listed| *listed) {
                            state.first_list_done = true;
                            state.pending.push_back(Event::InitDone);
                        }
                    } else {
                        let namespace = &state.namespaces[i];
                        for gone in state.store.state().into_iter().filter(|object| {
                            object.namespace().as_deref() == Some(namespace.as_str())
                                && !seen.contains(&object.name_any())
                        }) {
                            state.pending.push_back(Event::Delete(gone.as_ref().clone()));
                        }
                    }
                }
            }
        }
    })
}

/// The pause of a controller's trigger streams after an error: the watches back off on their
/// own, so this only keeps a failing stream from spinning.
#[derive(Debug, Clone)]
pub struct ShortPause;

impl Iterator for ShortPause {
    type Item = Duration;
    fn next(&mut self) -> Option<Duration> {
        Some(Duration::from_millis(50))
    }
}

impl kube::runtime::utils::Backoff for ShortPause {
    fn reset(&mut self) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_names_what_is_not_in_step_and_forgets_dropped_watches() {
        let health = WatchHealth::new();
        let runs = health.register("Runs in ml".into());
        let pipelines = health.register("Pipelines in ml".into());
        assert_eq!(health.problems().len(), 2, "a new watch is listing");
        runs.set(WatchState::Watching);
        pipelines.set(WatchState::Watching);
        assert_eq!(health.not_ready_reason(), None);
        runs.set(WatchState::Down("connection refused".into()));
        assert_eq!(
            health.not_ready_reason().as_deref(),
            Some("the watch of Runs in ml is down (connection refused)")
        );
        pipelines.set(WatchState::Listing);
        assert!(health.not_ready_reason().is_some_and(|r| r.ends_with("and 1 more watches are not in step")));
        drop(runs);
        drop(pipelines);
        assert_eq!(health.not_ready_reason(), None);
    }

    fn pipeline(namespace: &str, name: &str) -> crate::api::Pipeline {
        let mut pipeline = crate::api::Pipeline::new(name, Default::default());
        pipeline.metadata.namespace = Some(namespace.into());
        pipeline
    }

    fn names(events: &[Event<crate::api::Pipeline>]) -> Vec<String> {
        use kube::ResourceExt;
        events
            .iter()
            .map(|event| match event {
                Event::Init => "Init".to_owned(),
                Event::InitDone => "InitDone".to_owned(),
                Event::InitApply(p) => format!("InitApply {}", p.name_any()),
                Event::Apply(p) => format!("Apply {}", p.name_any()),
                Event::Delete(p) => format!("Delete {}", p.name_any()),
            })
            .collect()
    }

    /// Two namespaces list as one watch, and a namespace that lists again changes only itself.
    #[tokio::test]
    async fn namespaces_merge_into_one_watch_for_one_store() {
        use kube::runtime::WatchStreamExt;
        let (a, a_events) = futures::channel::mpsc::unbounded();
        let (b, b_events) = futures::channel::mpsc::unbounded();
        let (store, writer) = kube::runtime::reflector::store();
        let merged = merge_namespaces(vec![("a".into(), a_events), ("b".into(), b_events)], store.clone());
        let mut reflected = std::pin::pin!(merged.map(Ok).reflect(writer));
        let mut next = async |count: usize| {
            let mut seen = Vec::new();
            for _ in 0..count {
                seen.push(reflected.next().await.unwrap().unwrap());
            }
            names(&seen)
        };
        for event in [Event::Init, Event::InitApply(pipeline("a", "p1")), Event::InitDone] {
            a.unbounded_send(event).unwrap();
        }
        assert_eq!(next(2).await, ["Init", "InitApply p1"], "a's list is held until b has listed");
        a.unbounded_send(Event::Apply(pipeline("a", "p2"))).unwrap();
        for event in [Event::Init, Event::InitApply(pipeline("b", "q1")), Event::InitDone] {
            b.unbounded_send(event).unwrap();
        }
        assert_eq!(next(3).await, ["InitApply p2", "InitApply q1", "InitDone"]);
        assert_eq!(store.state().len(), 3);

        for event in [Event::Init, Event::InitApply(pipeline("a", "p2")), Event::InitDone] {
            a.unbounded_send(event).unwrap();
        }
        assert_eq!(next(2).await, ["Apply p2", "Delete p1"], "a lists again: p1 is gone from it");
        let mut left: Vec<String> =
            store.state().iter().map(|p| kube::ResourceExt::name_any(p.as_ref())).collect();
        left.sort();
        assert_eq!(left, ["p2", "q1"], "b's objects stay");
    }

    #[test]
    fn the_controller_pause_is_short_and_never_grows() {
        let pauses: Vec<_> = ShortPause.take(100).collect();
        assert!(pauses.iter().all(|p| *p == Duration::from_millis(50)));
    }
}
