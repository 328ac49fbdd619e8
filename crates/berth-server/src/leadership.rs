//! Which server dispatches: the dispatch lease, held in the store.
//!
//! Every server serves the whole API. One at a time also dispatches and
//! fires schedules: the one holding the store's dispatch lease (see
//! `berth_store`'s lease module). This loop takes the lease when it is free
//! or expired, renews it while it holds it, and runs the dispatcher and the
//! schedule runner for exactly as long as its term lasts:
//!
//! ```text
//!   follower ──acquire──▶ leader (term N: dispatcher + schedules on a store
//!      ▲                    │     handle fenced by N)
//!      └── renewal refused, ┘
//!          a write fenced, the renewal overdue, or a graceful stop
//!          (which releases the lease so another server leads at once)
//! ```
//!
//! A term ends by dropping every task it spawned (see [`Term`]) — the same
//! thing a crash does, which the dispatcher survives by design: the next
//! leader reconciles the attempts under way and adopts their containers.
//! A server paused past its lease cannot do harm when it resumes: the
//! store refuses its term's writes.

use crate::config::ServerConfig;
use crate::dispatch::Dispatch;
use crate::dispatcher::{read_every, read_fleet, Dispatcher};
use berth_store::{LeaseGrant, ServerRecord, Store, StoreError, DISPATCH_LEASE};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{watch, Notify};
use tracing::Instrument;

/// How the lease is held.
#[derive(Debug, Clone)]
pub struct LeaseConfig {
    /// How long a term lasts without renewal: the longest a dead leader
    /// keeps the others from dispatching.
    pub ttl: Duration,
    /// How often a follower looks for a free lease.
    pub poll: Duration,
}

impl Default for LeaseConfig {
    fn default() -> Self {
        LeaseConfig {
            ttl: Duration::from_secs(3),
            poll: Duration::from_millis(250),
        }
    }
}

impl LeaseConfig {
    /// The leader renews three times per term, so one slow renewal does
    /// not end it.
    fn renew_every(&self) -> Duration {
        self.ttl / 3
    }
}

/// A server as the others see it (`berth server ls`).
#[derive(Debug, Clone)]
pub struct ServerIdentity {
    /// Unique per process start.
    pub id: String,
    /// What operators call it.
    pub name: String,
    /// Where its API answers.
    pub url: String,
}

impl Default for ServerIdentity {
    fn default() -> Self {
        ServerIdentity {
            id: berth_store::new_id(),
            name: "server".to_owned(),
            url: String::new(),
        }
    }
}

/// How often a server says it is there; a server silent for
/// [`FORGET_SERVER_AFTER`] is dropped from the list.
const SEEN_EVERY: Duration = Duration::from_secs(1);
const FORGET_SERVER_AFTER: Duration = Duration::from_secs(3600);

/// One term of the dispatch lease, as the tasks it runs see it.
#[derive(Clone)]
pub(crate) struct Term {
    ended: watch::Receiver<bool>,
    fenced: Arc<Notify>,
}

impl Term {
    /// Runs `work` in the background until it finishes or the term ends,
    /// whichever comes first (then it is dropped where it stands).
    /// It logs in the span it was spawned from (the term's).
    pub fn spawn(&self, work: impl Future<Output = ()> + Send + 'static) {
        let mut ended = self.ended.clone();
        let span = tracing::Span::current();
        tokio::spawn(
            async move {
                tokio::select! {
                    biased;
                    _ = ended.wait_for(|ended| *ended) => {}
                    _ = work => {}
                }
            }
            .instrument(span),
        );
    }

    /// A write of this term was refused by the store: the lease is lost.
    pub fn refused(&self, error: &StoreError) -> bool {
        if matches!(error, StoreError::Fenced { .. }) {
            self.fenced.notify_one();
            return true;
        }
        false
    }
}

/// A term this server is running.
struct Leading {
    grant: LeaseGrant,
    /// A write of the term was refused: the term is over.
    fenced: Arc<Notify>,
    /// Past it, the lease may have expired unseen: stop.
    deadline: Instant,
    end: watch::Sender<bool>,
}

impl Leading {
    fn finish(self) {
        let _ = self.end.send(true);
    }
}

/// The deadline a grant gives, judged from `asked` (when it was asked for)
/// by the database's account of how long it lasts, less a margin for a
/// slow renewal's reply.
fn deadline_of(grant: &LeaseGrant, asked: Instant, ttl: Duration) -> Instant {
    let lasts = Duration::from_millis(u64::try_from(grant.expires_at - grant.now).unwrap_or(0));
    asked + lasts.saturating_sub(ttl / 6)
}

/// Runs until `shutdown` completes: follows, leads when it can, and at the
/// end hands the lease over and leaves the servers' list.
pub(crate) async fn run(
    store: Store,
    dispatch: Arc<Dispatch>,
    config: Arc<ServerConfig>,
    shutdown: impl Future<Output = ()>,
) {
    let identity = &config.identity;
    let lease = &config.lease;
    let record = ServerRecord {
        id: identity.id.clone(),
        name: identity.name.clone(),
        url: identity.url.clone(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        started_at: berth_core::time::now_millis(),
        last_seen: 0,
    };
    let mut leading: Option<Leading> = None;
    let mut last_seen: Option<Instant> = None;
    let mut fleet_read: Option<Instant> = None;
    tokio::pin!(shutdown);
    loop {
        if last_seen.is_none_or(|at| at.elapsed() >= SEEN_EVERY) {
            match store.server_seen(&record).await {
                Ok(()) => last_seen = Some(Instant::now()),
                Err(e) => tracing::warn!("recording this server in the store: {e}"),
            }
        }
        leading = match leading.take() {
            None => {
                let asked = Instant::now();
                match store
                    .acquire_lease(DISPATCH_LEASE, &identity.id, lease.ttl)
                    .await
                {
                    Ok(Some(grant)) => {
                        tracing::info!(
                            term = grant.token,
                            "leading: dispatching and firing schedules"
                        );
                        Some(lead(&store, &dispatch, &config, grant, asked))
                    }
                    Ok(None) => {
                        // A follower still reaches agents for cancels and
                        // live logs, and checks tasks against the fleet.
                        if fleet_read
                            .is_none_or(|at| at.elapsed() >= read_every(&dispatch, &config))
                        {
                            match read_fleet(&store, &dispatch, &config).await {
                                Ok(_) => fleet_read = Some(Instant::now()),
                                Err(e) => tracing::warn!("reading the fleet's hosts: {e}"),
                            }
                        }
                        None
                    }
                    Err(e) => {
                        tracing::warn!("asking for the dispatch lease: {e}");
                        None
                    }
                }
            }
            Some(mut term) => {
                let asked = Instant::now();
                match store
                    .renew_lease(DISPATCH_LEASE, &identity.id, term.grant.token, lease.ttl)
                    .await
                {
                    Ok(Some(grant)) => {
                        term.deadline = deadline_of(&grant, asked, lease.ttl);
                        term.grant = grant;
                        Some(term)
                    }
                    Ok(None) => {
                        tracing::warn!(
                            term = term.grant.token,
                            "another server took the dispatch lease: following"
                        );
                        term.finish();
                        None
                    }
                    Err(e) if Instant::now() >= term.deadline => {
                        tracing::error!(
                            term = term.grant.token,
                            "the dispatch lease could not be renewed in time ({e}): following"
                        );
                        term.finish();
                        None
                    }
                    Err(e) => {
                        tracing::warn!(
                            term = term.grant.token,
                            "renewing the dispatch lease: {e}; trying again"
                        );
                        Some(term)
                    }
                }
            }
        };
        let wait = match &leading {
            Some(term) => lease
                .renew_every()
                .min(term.deadline.saturating_duration_since(Instant::now())),
            None => lease.poll,
        };
        let fenced = leading.as_ref().map(|term| term.fenced.clone());
        tokio::select! {
            _ = &mut shutdown => break,
            // A write was refused: work of the term may have been dropped
            // (an attempt left to the next leader), so the term ends; the
            // next one, here or elsewhere, reconciles.
            _ = async {
                match fenced {
                    Some(fenced) => fenced.notified().await,
                    None => std::future::pending().await,
                }
            } => {
                if let Some(term) = leading.take() {
                    tracing::warn!(term = term.grant.token, "a write was refused: the term is over");
                    term.finish();
                }
            }
            _ = tokio::time::sleep(wait) => {}
        }
    }
    if let Some(term) = leading {
        let token = term.grant.token;
        term.finish();
        match store
            .release_lease(DISPATCH_LEASE, &identity.id, token)
            .await
        {
            Ok(_) => tracing::info!(term = token, "handed the dispatch lease over"),
            Err(e) => tracing::warn!("releasing the dispatch lease: {e}"),
        }
    }
    if let Err(e) = store.server_gone(&identity.id, FORGET_SERVER_AFTER).await {
        tracing::warn!("leaving the servers' list: {e}");
    }
}

/// Starts a term: the dispatcher and the schedule runner on a store handle
/// fenced by its token.
fn lead(
    store: &Store,
    dispatch: &Arc<Dispatch>,
    config: &Arc<ServerConfig>,
    grant: LeaseGrant,
    asked: Instant,
) -> Leading {
    let (end, ended) = watch::channel(false);
    let fenced = Arc::new(Notify::new());
    let term = Term {
        ended,
        fenced: fenced.clone(),
    };
    let store = store.fenced(grant.token);
    let dispatcher = Dispatcher::new(
        store.clone(),
        dispatch.clone(),
        config.clone(),
        term.clone(),
    );
    // Everything the term does is logged with its token.
    let span = tracing::info_span!("term", term = grant.token);
    term.spawn(dispatcher.run().instrument(span.clone()));
    term.spawn(crate::scheduler::run(store, dispatch.clone(), term.clone()).instrument(span));
    Leading {
        deadline: deadline_of(&grant, asked, config.lease.ttl),
        grant,
        fenced,
        end,
    }
}
