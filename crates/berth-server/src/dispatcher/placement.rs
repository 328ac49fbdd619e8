//! Where each task goes: the fleet as the placement engine
//! ([`berth_sched`]) sees it, built from the store (hosts, and the
//! reservations of the tasks under way), kept current as tasks are placed
//! and end, and rebuilt from the store now and then so that it never
//! drifts from the truth.

use crate::config::TaskDefaults;
use crate::dispatcher::request::package_image;
use berth_api::fleet::HostReport;
use berth_core::placement::{Relation, Resources, TaskPlacement};
use berth_sched::{Fleet, GroupRule, Hardness, Node, NodeState, Placement, Request};
use berth_store::{ClaimedTask, CodeRevision, PlaceDecision, Task};
use std::collections::HashMap;

/// The engine's fleet and what the dispatcher knows beside it.
pub(super) struct Placer {
    /// `Err`: the hosts made no snapshot (nothing is placed; said in `msg`).
    fleet: Result<Fleet, String>,
    /// Host name → host id (tasks name their host by id).
    ids: HashMap<String, String>,
    /// Task id → its placement, to release at its end.
    placed: HashMap<String, Placement>,
    defaults: TaskPlacement,
}

/// What every task gets that its code and itself leave unsaid.
pub(crate) fn default_placement(defaults: &TaskDefaults) -> TaskPlacement {
    TaskPlacement {
        memory_limit: defaults.memory,
        request: Resources {
            cpu_millis: 0,
            memory_bytes: defaults.memory_request,
            disk_bytes: 0,
            pids: defaults.pids,
        },
        constraints: Vec::new(),
        groups: Vec::new(),
        pool: None,
    }
}

fn sched_resources(r: &Resources) -> berth_sched::Resources {
    berth_sched::Resources::new(r.cpu_millis, r.memory_bytes, r.disk_bytes, r.pids)
}

fn sched_rule(rule: &berth_core::placement::GroupRule) -> GroupRule {
    let relation = match rule.relation {
        Relation::Affinity => berth_sched::Relation::Affinity,
        Relation::AntiAffinity => berth_sched::Relation::AntiAffinity,
    };
    let hardness = if rule.hard {
        Hardness::Hard
    } else {
        Hardness::Soft
    };
    GroupRule::new(rule.group.clone(), relation, hardness)
}

/// The placement of an attempt under way, as the engine would have made it.
fn placement_of(task: &Task, reserved: &TaskPlacement, node: &str) -> Placement {
    Placement {
        request_id: task.id.clone(),
        node: node.to_owned(),
        resources: sched_resources(&reserved.request),
        rules: reserved.groups.iter().map(sched_rule).collect(),
        soft_rules_given_up: Vec::new(),
        image_present: false,
        score: 0,
        hosts_checked: 0,
    }
}

impl Placer {
    /// The fleet of `nodes`, holding the reservations of `active` (the tasks
    /// preparing or running).
    pub(super) fn build(
        nodes: &[berth_store::Node],
        active: &[ClaimedTask],
        defaults: TaskPlacement,
    ) -> Placer {
        let names: HashMap<&str, &str> = nodes
            .iter()
            .map(|n| (n.id.as_str(), n.name.as_str()))
            .collect();
        let mut placed = HashMap::new();
        let mut on_node: HashMap<&str, Vec<&Placement>> = HashMap::new();
        for claimed in active {
            let task = &claimed.task;
            let (Some(agent), Some(reserved)) = (&task.agent, &task.reserved) else {
                continue;
            };
            let Some(name) = names.get(agent.as_str()) else {
                continue;
            };
            placed.insert(task.id.clone(), placement_of(task, reserved, name));
        }
        for placement in placed.values() {
            on_node
                .entry(placement.node.as_str())
                .or_default()
                .push(placement);
        }
        let mut sched_nodes = Vec::with_capacity(nodes.len());
        for node in nodes {
            let report: HostReport = match serde_json::from_str(&node.report) {
                Ok(report) => report,
                Err(e) => {
                    tracing::error!(node = %node.name, "its stored report does not parse: {e}; left out of placement");
                    continue;
                }
            };
            let state = if node.down {
                NodeState::Down
            } else if node.drained {
                NodeState::Draining
            } else {
                NodeState::Ready
            };
            let mut labels = report.labels.clone();
            labels.extend(node.operator_labels.clone());
            // Constraints reach host names through `node`; the fleet API
            // refuses it as a label, and an older row must not break the
            // snapshot of every host.
            labels.remove(berth_sched::NODE_KEY);
            let mut sched = Node::new(node.name.clone(), sched_resources(&report.allocatable))
                .with_state(state);
            sched.labels = labels;
            sched.images = report.images.iter().cloned().collect();
            let mut allocated = berth_sched::Resources::ZERO;
            for placement in on_node.get(node.name.as_str()).into_iter().flatten() {
                allocated = allocated.saturating_add(&placement.resources);
                for rule in &placement.rules {
                    sched
                        .groups
                        .entry(rule.group.clone())
                        .or_default()
                        .push(placement.request_id.clone());
                    if rule.relation == berth_sched::Relation::AntiAffinity
                        && rule.hardness == Hardness::Hard
                    {
                        sched.exclusive.insert(rule.group.clone());
                    }
                }
            }
            sched.allocated = allocated;
            sched_nodes.push(sched);
        }
        let fleet = Fleet::new(sched_nodes).map_err(|e| {
            tracing::error!("the fleet's hosts make no snapshot: {e}; placing nothing");
            format!("the fleet's hosts make no snapshot: {e}")
        });
        Placer {
            fleet,
            ids: nodes
                .iter()
                .map(|n| (n.name.clone(), n.id.clone()))
                .collect(),
            placed,
            defaults,
        }
    }

    /// The same hosts with nothing reserved: what queue-time checks use.
    pub(super) fn capacity(&self) -> Option<Fleet> {
        let fleet = self.fleet.as_ref().ok()?;
        let nodes = fleet
            .nodes()
            .iter()
            .map(|n| {
                let mut node = Node::new(n.name.clone(), n.allocatable).with_state(n.state);
                node.labels = n.labels.clone();
                node
            })
            .collect();
        Fleet::new(nodes).ok()
    }

    /// Where `task` goes now, reserved in this fleet when it goes somewhere.
    pub(super) fn decide(&mut self, task: &Task, code: &CodeRevision) -> PlaceDecision {
        let spec = task.placement.over(&code.spec.placement);
        let reserved = match spec.resolve(&self.defaults) {
            Ok(reserved) => reserved,
            Err(e) => {
                return PlaceDecision::Waits {
                    msg: format!("cannot be placed: {e}"),
                }
            }
        };
        let request = match request_for(&task.id, code, &reserved) {
            Ok(request) => request,
            Err(msg) => return PlaceDecision::Waits { msg },
        };
        let fleet = match &mut self.fleet {
            Ok(fleet) => fleet,
            Err(e) => return PlaceDecision::Waits { msg: e.clone() },
        };
        let placement = match berth_sched::place(fleet, &request) {
            Ok(placement) => placement,
            Err(refusal) => {
                return PlaceDecision::Waits {
                    msg: format!("waiting for room: {refusal}"),
                }
            }
        };
        if let Err(e) = fleet.commit(&placement) {
            return PlaceDecision::Waits {
                msg: format!("waiting for room: {e}"),
            };
        }
        let Some(agent) = self.ids.get(&placement.node).cloned() else {
            let _ = fleet.release(&placement);
            return PlaceDecision::Waits {
                msg: format!("host {} left the fleet", placement.node),
            };
        };
        let node_name = placement.node.clone();
        self.placed.insert(task.id.clone(), placement);
        PlaceDecision::On {
            agent,
            node_name,
            reserved,
        }
    }

    /// Gives back what a task's attempt held (it ended, or was not
    /// claimed after all).
    pub(super) fn release(&mut self, task_id: &str) {
        if let (Some(placement), Ok(fleet)) = (self.placed.remove(task_id), &mut self.fleet) {
            if let Err(e) = fleet.release(&placement) {
                tracing::warn!(task = task_id, "releasing its reservation: {e}");
            }
        }
    }
}

/// The engine's request for a task: its reservation, constraints, group
/// rules and the image it runs (hosts holding it are preferred).
pub(crate) fn request_for(
    task_id: &str,
    code: &CodeRevision,
    reserved: &TaskPlacement,
) -> Result<Request, String> {
    let mut request = Request::new(task_id, sched_resources(&reserved.request))
        .with_constraints(reserved.constraints.iter().map(String::as_str))
        .map_err(|e| format!("cannot be placed: {e}"))?;
    for rule in &reserved.groups {
        request = request
            .with_rule(sched_rule(rule))
            .map_err(|e| format!("cannot be placed: {e}"))?;
    }
    let image = match &code.package_sha256 {
        Some(sha) => Some(package_image(sha)),
        None => code.spec.image.clone(),
    };
    if let Some(image) = image {
        request = request.with_image(image);
    }
    Ok(request)
}
