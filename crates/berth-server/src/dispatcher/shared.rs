//! What the dispatcher's loops and its attempts share: the store, the
//! agents, the configuration, and the containers this process is driving.

use crate::config::ServerConfig;
use crate::dispatch::Dispatch;
use crate::leadership::Term;
use berth_store::Store;
use std::collections::HashSet;
use std::sync::{Arc, Mutex};

/// What the attempts share.
pub(crate) struct Shared {
    /// Fenced by the term: its dispatch writes fail once the term is over.
    pub store: Store,
    /// The term of the dispatch lease this dispatcher runs in; everything
    /// it starts is spawned through it and dropped when it ends.
    pub term: Term,
    pub dispatch: Arc<Dispatch>,
    pub config: Arc<ServerConfig>,
    /// Containers an attempt of this process is driving (the sweep leaves
    /// them alone).
    pub(super) in_flight: Mutex<HashSet<String>>,
    /// Where tasks go (held across a claim, so that a rebuild from the
    /// store never interleaves with one).
    pub(super) placer: tokio::sync::Mutex<super::placement::Placer>,
}

impl Shared {
    pub(super) fn in_flight_insert(&self, container: &str) {
        if let Ok(mut set) = self.in_flight.lock() {
            set.insert(container.to_owned());
        }
    }

    pub(super) fn in_flight_remove(&self, container: &str) {
        if let Ok(mut set) = self.in_flight.lock() {
            set.remove(container);
        }
    }

    pub(super) fn is_in_flight(&self, container: &str) -> bool {
        self.in_flight
            .lock()
            .map(|set| set.contains(container))
            .unwrap_or(true)
    }
}
