//! The dispatcher's handle, as the API sees it: wake-ups, and the agents
//! for cancel and live logs.

use berth_api::{AgentClient, ClientError};
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, Semaphore};

/// One agent the server runs tasks on.
pub struct AgentHandle {
    /// How tasks name it in the store (its URL).
    pub name: String,
    pub client: AgentClient,
    /// Free task slots on it.
    pub slots: Arc<Semaphore>,
    /// Package images known to be imported there.
    images: Mutex<HashSet<String>>,
    /// One package import at a time per agent (tasks of a new code start
    /// together; the first imports, the others find it there).
    pub(crate) uploads: tokio::sync::Mutex<()>,
}

impl AgentHandle {
    pub fn new(client: AgentClient, max_tasks: usize) -> AgentHandle {
        AgentHandle {
            name: client.endpoint().to_string(),
            client,
            slots: Arc::new(Semaphore::new(max_tasks)),
            images: Mutex::new(HashSet::new()),
            uploads: tokio::sync::Mutex::new(()),
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
    pub(crate) agents: Vec<Arc<AgentHandle>>,
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
    /// A handle over these agents (none: tasks stay queued).
    pub fn new(agents: Vec<Arc<AgentHandle>>) -> Dispatch {
        Dispatch {
            agents,
            ..Dispatch::default()
        }
    }

    pub fn agents(&self) -> &[Arc<AgentHandle>] {
        &self.agents
    }

    pub(crate) fn agent(&self, name: &str) -> Option<&Arc<AgentHandle>> {
        self.agents.iter().find(|agent| agent.name == name)
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
        let client = handle.client.clone();
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
        match handle.client.logs(container, 0).await {
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
