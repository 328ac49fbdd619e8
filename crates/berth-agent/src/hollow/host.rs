//! One hollow host: the containers it pretends to run, the images it
//! pretends to hold, and the report it heartbeats.

use crate::clock::now_ms;
use crate::join::{Identity, IdentityError, Member};
use berth_api::fleet::{HostReport, Resources};
use berth_api::{
    Capacity, CgroupMetrics, ContainerResult, ContainerState, ContainerView, CreateContainer,
    KillReason, Used,
};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::watch;

/// Env var of a create request that says how long the hollow container
/// "runs", in milliseconds.
pub const RUN_MS_ENV: &str = "BERTH_HOLLOW_RUN_MS";
/// Env var with the exit code it "exits" with (default 0).
pub const EXIT_ENV: &str = "BERTH_HOLLOW_EXIT";

/// How a simulated container ended.
#[derive(Debug, Clone)]
struct End {
    exited_at: u64,
    exit_code: Option<i32>,
    signal: Option<i32>,
    timed_out: bool,
    kill_reason: Option<KillReason>,
}

/// A container that runs nothing: it "ends" after its time.
pub struct SimContainer {
    id: String,
    image: String,
    labels: BTreeMap<String, String>,
    memory_request: u64,
    memory_limit: Option<u64>,
    cpu_millis: u64,
    created_at: u64,
    end: watch::Sender<Option<End>>,
}

const OUTPUT: &[u8] = b"hollow\n";

impl SimContainer {
    pub fn view(&self) -> ContainerView {
        let end = self.end.borrow().clone();
        ContainerView {
            id: self.id.clone(),
            state: if end.is_some() {
                ContainerState::Exited
            } else {
                ContainerState::Running
            },
            image: self.image.clone(),
            image_id: "sha256:hollow".to_owned(),
            created_at: self.created_at,
            started_at: Some(self.created_at),
            exited_at: end.as_ref().map(|e| e.exited_at),
            pid: None,
            shim_pid: None,
            memory_request: self.memory_request,
            memory_limit: self.memory_limit,
            labels: self.labels.clone(),
            result: end.as_ref().map(|e| ContainerResult {
                id: self.id.clone(),
                exit_code: e.exit_code,
                signal: e.signal,
                oom_killed: false,
                timed_out: e.timed_out,
                wall_time_ms: e.exited_at.saturating_sub(self.created_at) as f64,
                cpu_time_ms: None,
                peak_memory_bytes: None,
                teardown_ms: 0.0,
            }),
            error: None,
            kill_reason: end.as_ref().and_then(|e| e.kill_reason.clone()),
            log_bytes: end.as_ref().map(|_| OUTPUT.len() as u64),
            log_dropped_bytes: end.as_ref().map(|_| 0),
        }
    }

    pub fn has_ended(&self) -> bool {
        self.end.borrow().is_some()
    }

    /// Its output so far (all of it once ended).
    pub fn output(&self) -> &'static [u8] {
        if self.has_ended() {
            OUTPUT
        } else {
            b""
        }
    }

    /// Waits until it has ended or `limit` passed.
    pub async fn wait(&self, limit: Duration) {
        let mut end = self.end.subscribe();
        let _ = tokio::time::timeout(limit, end.wait_for(Option::is_some)).await;
    }

    /// Ends it by a signal (a stop or a kill), if it still runs.
    pub fn signal(&self, signal: i32, reason: Option<KillReason>) {
        self.finish(End {
            exited_at: now_ms(),
            exit_code: None,
            signal: Some(signal),
            timed_out: false,
            kill_reason: reason,
        });
    }

    fn finish(&self, end: End) {
        self.end.send_if_modified(|current| {
            if current.is_some() {
                return false;
            }
            *current = Some(end);
            true
        });
    }
}

/// How long a container of `request` "runs": [`RUN_MS_ENV`] if set, else
/// the first `sleep N` of its command, else not at all.
pub fn run_time(request: &CreateContainer) -> Duration {
    if let Some(ms) = env_value(request, RUN_MS_ENV).and_then(|v| v.parse::<u64>().ok()) {
        return Duration::from_millis(ms);
    }
    let words: Vec<&str> = request
        .command
        .iter()
        .flat_map(|arg| arg.split(|c: char| c.is_whitespace() || c == ';' || c == '\''))
        .filter(|w| !w.is_empty())
        .collect();
    words
        .windows(2)
        .find(|pair| pair[0] == "sleep")
        .and_then(|pair| pair[1].parse::<f64>().ok())
        .filter(|secs| secs.is_finite() && *secs >= 0.0)
        .map_or(Duration::ZERO, Duration::from_secs_f64)
}

fn env_value<'a>(request: &'a CreateContainer, key: &str) -> Option<&'a str> {
    request
        .env
        .iter()
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
}

/// What a hollow host is.
pub struct HollowHost {
    pub name: String,
    labels: BTreeMap<String, String>,
    allocatable: Resources,
    containers: Mutex<HashMap<String, Arc<SimContainer>>>,
    images: Mutex<BTreeSet<String>>,
    /// Where its identity is kept (all hosts of a process in one file).
    identities: Arc<super::Identities>,
    index: usize,
}

fn locked<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Why a create was refused.
pub enum CreateRefusal {
    Exists,
    ImageNotFound(String),
}

impl HollowHost {
    pub fn new(
        name: String,
        labels: BTreeMap<String, String>,
        allocatable: Resources,
        images: &[String],
        identities: Arc<super::Identities>,
        index: usize,
    ) -> HollowHost {
        HollowHost {
            name,
            labels,
            allocatable,
            containers: Mutex::new(HashMap::new()),
            images: Mutex::new(images.iter().cloned().collect()),
            identities,
            index,
        }
    }

    /// "Starts" a container: it ends after [`run_time`] (or its timeout,
    /// whichever is first) with the exit code [`EXIT_ENV`] says.
    pub fn create(&self, request: &CreateContainer) -> Result<ContainerView, CreateRefusal> {
        let image = request.image.to_string();
        if !locked(&self.images).contains(&image) {
            return Err(CreateRefusal::ImageNotFound(image));
        }
        let id = match &request.id {
            Some(id) => id.to_string(),
            None => format!("hollow-{}", super::next_serial()),
        };
        let mut containers = locked(&self.containers);
        if containers.contains_key(&id) {
            return Err(CreateRefusal::Exists);
        }
        let container = Arc::new(SimContainer {
            id: id.clone(),
            image,
            labels: request.labels.clone(),
            memory_request: request.memory_request.map_or(0, |b| b.bytes()),
            memory_limit: request.limits.memory.map(|b| b.bytes()),
            cpu_millis: request.limits.cpus.map_or(0, |c| u64::from(c.millicpus())),
            created_at: now_ms(),
            end: watch::Sender::new(None),
        });
        containers.insert(id, container.clone());
        drop(containers);
        let runs = run_time(request);
        let timeout = request.limits.timeout;
        let exit_code = env_value(request, EXIT_ENV)
            .and_then(|v| v.parse::<i32>().ok())
            .unwrap_or(0);
        let view = container.view();
        tokio::spawn(async move {
            let timed_out = timeout.is_some_and(|t| t < runs);
            tokio::time::sleep(timeout.filter(|_| timed_out).unwrap_or(runs)).await;
            container.finish(End {
                exited_at: now_ms(),
                exit_code: (!timed_out).then_some(exit_code),
                signal: timed_out.then_some(libc::SIGKILL),
                timed_out,
                kill_reason: None,
            });
        });
        Ok(view)
    }

    pub fn container(&self, id: &str) -> Option<Arc<SimContainer>> {
        locked(&self.containers).get(id).cloned()
    }

    pub fn containers(&self) -> Vec<Arc<SimContainer>> {
        locked(&self.containers).values().cloned().collect()
    }

    /// Forgets a container (it ends first if it still runs).
    pub fn remove(&self, id: &str) -> bool {
        match locked(&self.containers).remove(id) {
            Some(container) => {
                container.signal(libc::SIGKILL, None);
                true
            }
            None => false,
        }
    }

    pub fn images(&self) -> Vec<String> {
        locked(&self.images).iter().cloned().collect()
    }

    pub fn add_image(&self, reference: String) {
        locked(&self.images).insert(reference);
    }

    pub fn remove_image(&self, reference: &str) -> bool {
        locked(&self.images).remove(reference)
    }
}

impl Member for HollowHost {
    fn report(&self) -> HostReport {
        let containers = locked(&self.containers);
        let running: Vec<&Arc<SimContainer>> =
            containers.values().filter(|c| !c.has_ended()).collect();
        let allocated = Resources {
            cpu_millis: running.iter().map(|c| c.cpu_millis).sum(),
            memory_bytes: running.iter().map(|c| c.memory_request).sum(),
            disk_bytes: 0,
            pids: 0,
        };
        HostReport {
            capacity: Capacity {
                cpus: u32::try_from(self.allocatable.cpu_millis.div_ceil(1000)).unwrap_or(u32::MAX),
                memory_bytes: self.allocatable.memory_bytes,
                memory_ceiling_bytes: self.allocatable.memory_bytes,
                memory_pressure: 1.0,
                disk_bytes: self.allocatable.disk_bytes,
                disk_free_bytes: self.allocatable.disk_bytes,
                pids: self.allocatable.pids,
            },
            allocatable: self.allocatable,
            allocated,
            used: Used {
                containers_running: running.len(),
                metrics: CgroupMetrics {
                    memory_usage_bytes: Some(allocated.memory_bytes),
                    ..CgroupMetrics::default()
                },
            },
            images: self.images(),
            labels: self.labels.clone(),
            version: concat!(env!("CARGO_PKG_VERSION"), "-hollow").to_owned(),
        }
    }

    fn keep_identity(&self, identity: &Identity) -> Result<(), IdentityError> {
        self.identities.set(self.index, identity.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(command: &[&str], env: &[&str]) -> CreateContainer {
        serde_json::from_value(serde_json::json!({
            "image": "busybox:latest",
            "command": command,
            "env": env,
        }))
        .unwrap()
    }

    #[test]
    fn a_hollow_container_runs_for_what_it_asks() {
        assert_eq!(
            run_time(&request(&["sh", "-c", "sleep 2.5; echo done"], &[])),
            Duration::from_millis(2500)
        );
        assert_eq!(
            run_time(&request(
                &["sh", "-c", "echo; sleep 3"],
                &["BERTH_HOLLOW_RUN_MS=40"]
            )),
            Duration::from_millis(40),
            "the env var wins"
        );
        assert_eq!(run_time(&request(&["true"], &[])), Duration::ZERO);
        assert_eq!(
            run_time(&request(&["sleep", "forever"], &[])),
            Duration::ZERO,
            "what does not parse runs not at all"
        );
    }
}
