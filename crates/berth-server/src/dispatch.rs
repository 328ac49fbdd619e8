//! The dispatcher's handle, as the API sees it: wake-ups, and the agents
//! for cancel and live logs.

use berth_api::{AgentClient, ClientError};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokio::sync::{Notify, Semaphore};

/// One agent the server runs tasks on.
pub struct AgentHandle {
    /// How tasks name it in the store: the host's id.
    pub name: String,
    /// What logs call it: the host's name.
    pub label: String,
    /// Where it is reached, and with what: a rejoining host may come back
    /// at another address (a restarted `berth up` gets a new port) and is
    /// the same host, so attempts under way carry on with the new one.
    reach: RwLock<Reach>,
    /// Whether it takes new tasks (not drained, not down).
    accepts_work: AtomicBool,
    /// Marked down: attempts on it are run elsewhere (a watch, so that
    /// attempts waiting on it hear of it at once).
    lost: tokio::sync::watch::Sender<bool>,
    /// Free task slots on it.
    pub slots: Arc<Semaphore>,
    /// Package images known to be imported there.
    images: Mutex<HashSet<String>>,
    /// One package import at a time per agent (tasks of a new code start
    /// together; the first imports, the others find it there).
    pub(crate) uploads: tokio::sync::Mutex<()>,
}

/// How an agent is reached.
struct Reach {
    client: AgentClient,
    /// What its client was made from.
    address: String,
    credential: String,
}

impl AgentHandle {
    /// The agent of a fleet host: tasks name it by the host's id.
    pub(crate) fn of_host(
        node: &berth_store::Node,
        client: AgentClient,
        max_tasks: usize,
    ) -> AgentHandle {
        AgentHandle {
            name: node.id.clone(),
            label: node.name.clone(),
            accepts_work: AtomicBool::new(true),
            lost: tokio::sync::watch::Sender::new(false),
            reach: RwLock::new(Reach {
                client,
                address: node.address.clone(),
                credential: node.credential.clone(),
            }),
            slots: Arc::new(Semaphore::new(max_tasks)),
            images: Mutex::new(HashSet::new()),
            uploads: tokio::sync::Mutex::new(()),
        }
    }

    /// The client of the agent, as of now.
    pub fn client(&self) -> AgentClient {
        match self.reach.read() {
            Ok(reach) => reach.client.clone(),
            Err(poisoned) => poisoned.into_inner().client.clone(),
        }
    }

    /// The agent's base URL, as of now.
    pub(crate) fn address(&self) -> String {
        match self.reach.read() {
            Ok(reach) => reach.address.clone(),
            Err(poisoned) => poisoned.into_inner().address.clone(),
        }
    }

    /// Whether the host is reached at this address with this credential.
    pub(crate) fn reached_at(&self, address: &str, credential: &str) -> bool {
        let check = |r: &Reach| r.address == address && r.credential == credential;
        match self.reach.read() {
            Ok(reach) => check(&reach),
            Err(poisoned) => check(&poisoned.into_inner()),
        }
    }

    /// Points the handle at the host's new address or credential.
    pub(crate) fn reach_at(&self, client: AgentClient, address: &str, credential: &str) {
        let reach = Reach {
            client,
            address: address.to_owned(),
            credential: credential.to_owned(),
        };
        match self.reach.write() {
            Ok(mut current) => *current = reach,
            Err(poisoned) => *poisoned.into_inner() = reach,
        }
    }

    pub fn accepts_work(&self) -> bool {
        self.accepts_work.load(Ordering::Relaxed) && !self.is_lost()
    }

    pub(crate) fn set_accepts_work(&self, accepts: bool) {
        self.accepts_work.store(accepts, Ordering::Relaxed);
    }

    /// Whether the host was marked down (its attempts stop waiting on it).
    pub fn is_lost(&self) -> bool {
        *self.lost.borrow()
    }

    pub(crate) fn set_lost(&self, lost: bool) {
        self.lost
            .send_if_modified(|current| std::mem::replace(current, lost) != lost);
    }

    /// Completes when the host is marked down.
    pub(crate) async fn lost(&self) {
        let mut lost = self.lost.subscribe();
        // An error: the sender is gone with the handle, never lost then.
        if lost.wait_for(|lost| *lost).await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    pub(crate) fn has_image(&self, reference: &str) -> bool {
        self.images
            .lock()
            .map(|images| images.contains(reference))
            .unwrap_or(false)
    }

    pub(crate) fn images_remember(&self, references: impl IntoIterator<Item = String>) {
        if let Ok(mut images) = self.images.lock() {
            images.extend(references);
        }
    }

    pub(crate) fn image_forget(&self, reference: &str) {
        if let Ok(mut images) = self.images.lock() {
            images.remove(reference);
        }
    }

    pub(crate) fn images_forget(&self) {
        if let Ok(mut images) = self.images.lock() {
            images.clear();
        }
    }
}

/// Wakes the dispatcher and the schedule runner, and reaches running
/// containers for cancel and live logs.
#[derive(Default)]
pub struct Dispatch {
    pub(crate) tasks: Notify,
    pub(crate) schedules: Notify,
    /// Something may be left to free (a code was deleted).
    pub(crate) garbage: Notify,
    /// A host joined, came back, was drained, relabelled or removed.
    pub(crate) fleet: Notify,
    /// Hosts that joined or came back, to be swept of containers of
    /// attempts that ended elsewhere meanwhile (just them: a fleet of
    /// thousands is swept whole only now and then).
    returned: Mutex<HashSet<String>>,
    pub(crate) returned_changed: Notify,
    /// The fleet's hosts as the dispatcher last read them from the store.
    agents: RwLock<Agents>,
    /// The hosts and what each offers (no reservations): what a task is
    /// checked against at queue time (`None` until first read).
    capacity: RwLock<Option<Arc<berth_sched::Fleet>>>,
    /// Kept-alive connections to the hosts' agents, shared by their clients.
    pub(crate) connections: berth_api::ConnectionPool,
    /// What placement read of the hosts last time, to tell a change.
    facts: Mutex<crate::dispatcher::PlacementFacts>,
    /// The fleet's overlay networks, for heartbeats and dispatch.
    pub(crate) overlays: crate::overlays::OverlayDirectory,
}

/// The agents, in the store's order and by name (a task names its host;
/// a fleet has thousands).
#[derive(Default)]
struct Agents {
    all: Vec<Arc<AgentHandle>>,
    by_name: HashMap<String, Arc<AgentHandle>>,
}

/// A container could not be reached.
#[derive(Debug, thiserror::Error)]
#[error("agent {agent}: {message}")]
pub struct AgentUnreachable {
    pub agent: String,
    pub message: String,
}

/// How long a cancelled task gets between SIGTERM and SIGKILL.
const CANCEL_GRACE: Duration = Duration::from_secs(5);

impl Dispatch {
    /// The fleet's capacity, as of the last read of the hosts.
    pub(crate) fn capacity(&self) -> Option<Arc<berth_sched::Fleet>> {
        self.capacity.read().ok().and_then(|c| c.clone())
    }

    pub(crate) fn set_capacity(&self, fleet: Arc<berth_sched::Fleet>) {
        if let Ok(mut capacity) = self.capacity.write() {
            *capacity = Some(fleet);
        }
    }

    /// Takes the hosts just read in; true when they changed for placement
    /// since the last read.
    pub(crate) fn note_placement_facts(&self, nodes: &[berth_store::Node]) -> bool {
        match self.facts.lock() {
            Ok(mut facts) => facts.note(nodes),
            Err(_) => true,
        }
    }

    /// Whether the leader's placement snapshot is to be rebuilt: the hosts
    /// changed since it was, or it is older than `resync`. Answering true
    /// counts as rebuilt.
    pub(crate) fn snapshot_due(&self, resync: Duration) -> bool {
        match self.facts.lock() {
            Ok(mut facts) => facts.snapshot_due(resync),
            Err(_) => true,
        }
    }

    /// Hosts in the fleet as of the last read (0 before the first).
    pub(crate) fn fleet_size(&self) -> usize {
        self.capacity().map_or(0, |fleet| fleet.len())
    }

    /// Every agent, as of now.
    pub fn agents(&self) -> Vec<Arc<AgentHandle>> {
        self.agents
            .read()
            .map(|a| a.all.clone())
            .unwrap_or_default()
    }

    pub(crate) fn set_agents(&self, agents: Vec<Arc<AgentHandle>>) {
        let by_name = agents.iter().map(|a| (a.name.clone(), a.clone())).collect();
        if let Ok(mut current) = self.agents.write() {
            *current = Agents {
                all: agents,
                by_name,
            };
        }
    }

    pub(crate) fn agent(&self, name: &str) -> Option<Arc<AgentHandle>> {
        self.agents.read().ok()?.by_name.get(name).cloned()
    }

    /// Tasks were queued (or became runnable): look at the queue now.
    pub fn tasks_changed(&self) {
        self.tasks.notify_one();
    }

    /// A code was deleted: free what it held now rather than at the next
    /// periodic sweep.
    pub fn garbage_changed(&self) {
        self.garbage.notify_one();
    }

    /// The fleet changed: look at the hosts again.
    pub fn fleet_changed(&self) {
        self.fleet.notify_one();
        self.tasks.notify_one();
    }

    /// A host joined or came back from down: it may run containers of
    /// attempts that ended elsewhere meanwhile; sweep it now.
    pub fn host_returned(&self, node_id: &str) {
        if let Ok(mut returned) = self.returned.lock() {
            returned.insert(node_id.to_owned());
        }
        self.returned_changed.notify_one();
        self.fleet_changed();
    }

    /// The hosts to sweep now (and forgets them).
    pub(crate) fn take_returned(&self) -> Vec<String> {
        self.returned
            .lock()
            .map(|mut returned| returned.drain().collect())
            .unwrap_or_default()
    }

    /// A schedule was created or cancelled.
    pub fn schedules_changed(&self) {
        self.schedules.notify_one();
    }

    /// Stops a running task's container (SIGTERM, then SIGKILL after a
    /// grace period), in the background: the dispatcher records the end.
    pub async fn stop(&self, agent: &str, container: &str) -> Result<(), AgentUnreachable> {
        let handle = self.agent(agent).ok_or_else(|| AgentUnreachable {
            agent: agent.to_owned(),
            message: "not an agent of this server".to_owned(),
        })?;
        let client = handle.client();
        let container = container.to_owned();
        tokio::spawn(async move {
            match client.stop(&container, None, CANCEL_GRACE).await {
                Ok(_) => {}
                // Not created yet, or already gone: the dispatcher sees the
                // cancel request when the attempt ends or starts.
                Err(e) if e.is_not_found() => {}
                Err(e) => tracing::warn!("stopping a cancelled task: {e}"),
            }
        });
        Ok(())
    }

    /// The output so far of a running task's container; `None` if the agent
    /// no longer has it.
    pub async fn live_log(
        &self,
        agent: &str,
        container: &str,
    ) -> Result<Option<Vec<u8>>, AgentUnreachable> {
        let handle = self.agent(agent).ok_or_else(|| AgentUnreachable {
            agent: agent.to_owned(),
            message: "not an agent of this server".to_owned(),
        })?;
        match handle.client().logs(container, 0).await {
            Ok(bytes) => Ok(Some(bytes.to_vec())),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(unreachable(agent, e)),
        }
    }
}

fn unreachable(agent: &str, error: ClientError) -> AgentUnreachable {
    AgentUnreachable {
        agent: agent.to_owned(),
        message: error.to_string(),
    }
}
