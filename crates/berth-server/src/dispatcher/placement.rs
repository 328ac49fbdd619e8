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
use berth_sched::{Hold, PoolDemand, PoolSpec, Tier};
use berth_store::{ClaimedTask, CodeRevision, PlaceDecision, Task};
use std::collections::{BTreeMap, HashMap, VecDeque};

/// The engine's fleet and what the dispatcher knows beside it.
pub(super) struct Placer {
    /// `Err`: the hosts made no snapshot (nothing is placed; said in `msg`).
    fleet: Result<Fleet, String>,
    /// Host name → host id (tasks name their host by id).
    ids: HashMap<String, String>,
    /// Task id → its placement and pool, to release at its end.
    placed: HashMap<String, (Placement, String)>,
    defaults: TaskPlacement,
    /// The pools an operator configured (any other pool: weight 1, no
    /// minimum, no maximum).
    pools: Vec<PoolSpec>,
    /// Pool → what its tasks under way reserve.
    usage: BTreeMap<String, Resources>,
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

fn sched_rule(rule: &berth_core::placement::GroupRule) -> GroupRule {
    let hardness = if rule.hard {
        Hardness::Hard
    } else {
        Hardness::Soft
    };
    GroupRule::new(rule.group.clone(), rule.relation, hardness)
}

/// The placement of an attempt under way, as the engine would have made it.
fn placement_of(task: &Task, reserved: &TaskPlacement, node: &str) -> Placement {
    Placement {
        request_id: task.id.clone(),
        node: node.to_owned(),
        resources: reserved.request,
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
        pools: &[berth_store::PoolConfig],
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
            placed.insert(
                task.id.clone(),
                (placement_of(task, reserved, name), pool_of(task, reserved)),
            );
        }
        let mut usage: BTreeMap<String, Resources> = BTreeMap::new();
        for (placement, pool) in placed.values() {
            let used = usage.entry(pool.clone()).or_default();
            *used = used.saturating_add(&placement.resources);
        }
        for (placement, _) in placed.values() {
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
            let mut sched = Node::new(node.name.clone(), report.allocatable).with_state(state);
            sched.labels = labels;
            sched.images = report.images.iter().cloned().collect();
            let mut allocated = Resources::ZERO;
            for placement in on_node.get(node.name.as_str()).into_iter().flatten() {
                allocated = allocated.saturating_add(&placement.resources);
                for rule in &placement.rules {
                    sched
                        .groups
                        .entry(rule.group.clone())
                        .or_default()
                        .push(placement.request_id.clone());
                    if rule.relation == Relation::AntiAffinity && rule.hardness == Hardness::Hard {
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
            pools: pools.iter().map(pool_spec).collect(),
            usage,
        }
    }

    /// Whether the snapshot holds these pools' configuration.
    pub(super) fn has_pools(&self, pools: &[berth_store::PoolConfig]) -> bool {
        self.pools.len() == pools.len()
            && self
                .pools
                .iter()
                .zip(pools)
                .all(|(held, now)| *held == pool_spec(now))
    }

    /// Where each of `candidates` (in queue order) goes: pool by pool in
    /// the fair-share order (berth_sched::serve_order, asked again after
    /// every placement), each pool's tasks in queue order. A pool held at
    /// its maximum, or held from borrowing while another waits under its
    /// minimum, keeps its tasks queued, saying so.
    ///
    /// The store offers each pool's first few tasks, not its whole queue.
    /// Once a pool has run out of them in a round, nobody borrows for the
    /// rest of it: the capacity is left for that pool's next tasks, which
    /// the next round (at once) offers. Otherwise a pool whose share is
    /// larger than what it offers a round would lend it away each round.
    pub(super) fn plan(&mut self, candidates: &[(Task, CodeRevision)]) -> Vec<PlaceDecision> {
        let mut decisions: Vec<Option<PlaceDecision>> = vec![None; candidates.len()];
        let mut ready: Vec<Option<(TaskPlacement, Request)>> = Vec::with_capacity(candidates.len());
        let mut queues: BTreeMap<String, VecDeque<usize>> = BTreeMap::new();
        for (i, (task, code)) in candidates.iter().enumerate() {
            match self.prepare(task, code) {
                Ok((reserved, request)) => {
                    queues
                        .entry(pool_of(task, &reserved))
                        .or_default()
                        .push_back(i);
                    ready.push(Some((reserved, request)));
                }
                Err(msg) => {
                    decisions[i] = Some(PlaceDecision::Waits { msg });
                    ready.push(None);
                }
            }
        }
        let total = match &self.fleet {
            Ok(fleet) => fleet.allocatable_total(),
            Err(_) => Resources::ZERO,
        };
        let mut ran_out = false;
        loop {
            let demand = self.demand(&queues, &ready);
            let specs = self.specs_for(&demand);
            let order = match berth_sched::serve_order(&specs, &demand, &total) {
                Ok(order) => order,
                Err(e) => {
                    tracing::error!("ordering the pools: {e}");
                    break;
                }
            };
            let Some(turn) = order.turns.first() else {
                // Whatever is left is held: say why.
                for held in &order.held {
                    let msg = match held.why {
                        Hold::AtMax => format!("waiting: pool {} is at its maximum", held.pool),
                        Hold::BorrowingPaused => format!(
                            "waiting: pool {} is above its share, and a pool under its minimum waits",
                            held.pool
                        ),
                    };
                    for &i in queues.get(&held.pool).into_iter().flatten() {
                        decisions[i] = Some(PlaceDecision::Waits { msg: msg.clone() });
                    }
                }
                break;
            };
            if ran_out && turn.tier == Tier::Borrow {
                break;
            }
            let Some(queue) = queues.get_mut(&turn.pool) else {
                break;
            };
            let Some(i) = queue.pop_front() else {
                break;
            };
            ran_out |= queue.is_empty();
            let Some((reserved, request)) = ready[i].take() else {
                continue;
            };
            decisions[i] = Some(self.place(&candidates[i].0, reserved, &request));
        }
        decisions
            .into_iter()
            .map(|d| {
                d.unwrap_or_else(|| PlaceDecision::Waits {
                    msg: "waiting for its pool's turn".to_owned(),
                })
            })
            .collect()
    }

    /// Every pool with work waiting (its head's request) or in use.
    fn demand(
        &self,
        queues: &BTreeMap<String, VecDeque<usize>>,
        ready: &[Option<(TaskPlacement, Request)>],
    ) -> BTreeMap<String, PoolDemand> {
        let mut demand: BTreeMap<String, PoolDemand> = self
            .usage
            .iter()
            .filter(|(_, used)| **used != Resources::ZERO)
            .map(|(pool, used)| {
                (
                    pool.clone(),
                    PoolDemand {
                        usage: *used,
                        head: None,
                    },
                )
            })
            .collect();
        for (pool, queue) in queues {
            let head = queue
                .front()
                .and_then(|&i| ready[i].as_ref())
                .map(|(reserved, _)| reserved.request);
            if head.is_some() {
                demand.entry(pool.clone()).or_default().head = head;
            }
        }
        demand
    }

    /// The configured pools, and the defaults for any other in `demand`.
    fn specs_for(&self, demand: &BTreeMap<String, PoolDemand>) -> Vec<PoolSpec> {
        let mut specs = self.pools.clone();
        for pool in demand.keys() {
            if !specs.iter().any(|s| &s.name == pool) {
                specs.push(PoolSpec::new(pool.clone()));
            }
        }
        specs
    }

    /// The task's reservation and the engine's request, or why it has none.
    fn prepare(
        &self,
        task: &Task,
        code: &CodeRevision,
    ) -> Result<(TaskPlacement, Request), String> {
        let reserved = task
            .placement
            .over(&code.spec.placement)
            .resolve(&self.defaults)
            .map_err(|e| format!("cannot be placed: {e}"))?;
        let request = request_for(&task.id, code, &reserved)?;
        Ok((reserved, request))
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

    /// Places one prepared task now, reserved in this fleet when it goes
    /// somewhere.
    fn place(&mut self, task: &Task, reserved: TaskPlacement, request: &Request) -> PlaceDecision {
        let fleet = match &mut self.fleet {
            Ok(fleet) => fleet,
            Err(e) => return PlaceDecision::Waits { msg: e.clone() },
        };
        let placement = match berth_sched::place(fleet, request) {
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
        let pool = pool_of(task, &reserved);
        let used = self.usage.entry(pool.clone()).or_default();
        *used = used.saturating_add(&placement.resources);
        let node_name = placement.node.clone();
        self.placed.insert(task.id.clone(), (placement, pool));
        PlaceDecision::On {
            agent,
            node_name,
            reserved,
        }
    }

    /// Gives back what a task's attempt held (it ended, or was not
    /// claimed after all).
    pub(super) fn release(&mut self, task_id: &str) {
        let Some((placement, pool)) = self.placed.remove(task_id) else {
            return;
        };
        if let Some(used) = self.usage.get_mut(&pool) {
            *used = used.saturating_sub(&placement.resources);
        }
        if let Ok(fleet) = &mut self.fleet {
            if let Err(e) = fleet.release(&placement) {
                tracing::warn!(task = task_id, "releasing its reservation: {e}");
            }
        }
    }
}

/// A task's pool: the one it names, else its project's.
fn pool_of(task: &Task, reserved: &TaskPlacement) -> String {
    reserved
        .pool
        .clone()
        .unwrap_or_else(|| task.project_id.clone())
}

fn pool_spec(pool: &berth_store::PoolConfig) -> PoolSpec {
    let mut spec = PoolSpec::new(pool.name.clone())
        .with_weight(pool.weight.max(1))
        .with_min(pool.min);
    if let Some(max) = &pool.max {
        spec = spec.with_max(*max);
    }
    spec
}

/// The engine's request for a task: its reservation, constraints, group
/// rules and the image it runs (hosts holding it are preferred).
pub(crate) fn request_for(
    task_id: &str,
    code: &CodeRevision,
    reserved: &TaskPlacement,
) -> Result<Request, String> {
    let mut request = Request::new(task_id, reserved.request)
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

#[cfg(test)]
mod tests {
    use super::*;
    use berth_core::placement::PlacementSpec;
    use serde_json::json;

    fn host(name: &str, cpu_millis: u64) -> berth_store::Node {
        let report = json!({
            "capacity": {"cpus": 4, "memory_bytes": 8u64 << 30, "memory_ceiling_bytes": 8u64 << 30,
                         "memory_pressure": 0.9, "disk_bytes": 1u64 << 40, "disk_free_bytes": 1u64 << 39,
                         "pids": 100_000},
            "allocatable": {"cpu_millis": cpu_millis, "memory_bytes": 4u64 << 30,
                            "disk_bytes": 1u64 << 39, "pids": 50_000},
            "allocated": {},
            "used": {"containers_running": 0, "metrics": {"oom_events": 0, "oom_kills": 0}},
            "images": [], "labels": {}, "version": "test"
        });
        berth_store::Node {
            id: format!("id-{name}"),
            name: name.into(),
            address: "http://127.0.0.1:1".into(),
            credential: "c".into(),
            drained: false,
            down: false,
            operator_labels: Default::default(),
            report: report.to_string(),
            joined_at: 0,
            last_heartbeat: 0,
        }
    }

    fn task(id: &str, project: &str, cpu_millis: u64, pool: Option<&str>) -> Task {
        let mut task: Task = serde_json::from_value(json!({
            "id": id, "project_id": project, "code_id": "c", "code_name": "c", "code_rev": 1,
            "status": "queued", "msg": null, "payload": "", "priority": 0, "timeout": 60,
            "delay": 0, "cluster": null, "label": null, "schedule_id": null,
            "original_task_id": null, "retry_count": 0, "infra_failures": 0, "percent": null,
            "exit_code": null, "created_at": 0, "updated_at": 0, "eligible_at": 0,
            "start_time": null, "end_time": null, "attempt": 0, "agent": null,
            "cancel_requested": false,
        }))
        .expect("a task");
        task.placement = PlacementSpec {
            cpu_millis: Some(cpu_millis),
            pool: pool.map(str::to_owned),
            ..PlacementSpec::default()
        };
        task
    }

    fn code() -> CodeRevision {
        CodeRevision {
            code_id: "c".into(),
            id: "r".into(),
            project_id: "p".into(),
            rev: 1,
            spec: berth_store::NewCodeRevision {
                name: "c".into(),
                image: Some("busybox".into()),
                ..Default::default()
            },
            package_sha256: None,
            package_size: 0,
            created_at: 0,
        }
    }

    fn defaults() -> TaskPlacement {
        default_placement(&TaskDefaults::default())
    }

    fn placed_on(decision: &PlaceDecision) -> Option<&str> {
        match decision {
            PlaceDecision::On { node_name, .. } => Some(node_name),
            PlaceDecision::Waits { .. } => None,
        }
    }

    #[test]
    fn a_pool_at_its_maximum_waits_and_says_so_while_others_go_on() {
        let pools = [berth_store::PoolConfig {
            name: "capped".into(),
            weight: 1,
            min: Resources::default(),
            // A maximum on CPU alone (the API fills what is not given
            // with "no limit").
            max: Some(Resources {
                cpu_millis: 500,
                memory_bytes: u64::MAX,
                disk_bytes: u64::MAX,
                pids: u64::MAX,
            }),
        }];
        let mut placer = Placer::build(&[host("h1", 2000)], &[], &pools, defaults());
        let candidates = [
            (task("t1", "p", 300, Some("capped")), code()),
            (task("t2", "p", 300, Some("capped")), code()),
            (task("t3", "q", 300, None), code()),
        ];
        let decisions = placer.plan(&candidates);
        assert_eq!(placed_on(&decisions[0]), Some("h1"), "{decisions:?}");
        match &decisions[1] {
            PlaceDecision::Waits { msg } => {
                assert!(msg.contains("pool capped is at its maximum"), "{msg}")
            }
            other => panic!("t2 placed: {other:?}"),
        }
        assert_eq!(
            placed_on(&decisions[2]),
            Some("h1"),
            "another pool is not held"
        );
        // Its first task ends: the pool has room again.
        placer.release("t1");
        let decisions = placer.plan(&[(task("t2", "p", 300, Some("capped")), code())]);
        assert_eq!(placed_on(&decisions[0]), Some("h1"));
    }

    #[test]
    fn a_pool_under_its_minimum_goes_first_and_stops_borrowing() {
        let pools = [berth_store::PoolConfig {
            name: "owner".into(),
            weight: 1,
            min: Resources {
                cpu_millis: 600,
                ..Resources::default()
            },
            max: None,
        }];
        let mut placer = Placer::build(&[host("h1", 1000)], &[], &pools, defaults());
        // A borrower takes idle capacity while the owner is idle.
        let borrowing = placer.plan(&[
            (task("b1", "p", 300, Some("borrower")), code()),
            (task("b2", "p", 300, Some("borrower")), code()),
        ]);
        assert!(borrowing.iter().all(|d| placed_on(d).is_some()));
        // The owner's new work comes first, and the borrower gets no more
        // while the owner waits under its minimum.
        let decisions = placer.plan(&[
            (task("b3", "p", 300, Some("borrower")), code()),
            (task("o1", "p", 300, Some("owner")), code()),
            (task("o2", "p", 300, Some("owner")), code()),
        ]);
        assert_eq!(placed_on(&decisions[1]), Some("h1"), "{decisions:?}");
        assert_eq!(placed_on(&decisions[0]), None, "{decisions:?}");
        // o2 would need 300 of the 100 left: it waits for room, not for a turn.
        match &decisions[2] {
            PlaceDecision::Waits { msg } => assert!(msg.contains("waiting for room"), "{msg}"),
            other => panic!("o2: {other:?}"),
        }
    }

    #[test]
    fn a_reservation_is_never_given_twice() {
        let mut placer = Placer::build(&[host("h1", 1000), host("h2", 1000)], &[], &[], defaults());
        let candidates: Vec<_> = (0..7)
            .map(|i| (task(&format!("t{i}"), "p", 300, None), code()))
            .collect();
        let decisions = placer.plan(&candidates);
        let mut per_host: BTreeMap<&str, u64> = BTreeMap::new();
        for decision in &decisions {
            if let Some(node) = placed_on(decision) {
                *per_host.entry(node).or_default() += 300;
            }
        }
        assert_eq!(
            per_host.values().sum::<u64>(),
            1800,
            "six fit, the seventh waits"
        );
        assert!(per_host.values().all(|&cpu| cpu <= 1000), "{per_host:?}");
    }

    /// Pool b (weight 2) offers fewer tasks a round than its share holds;
    /// a (weight 1) does not borrow what b's next round will take.
    #[test]
    fn a_pool_that_ran_out_of_candidates_is_not_lent_away() {
        let pools = [
            berth_store::PoolConfig {
                name: "a".into(),
                weight: 1,
                min: Resources::default(),
                max: None,
            },
            berth_store::PoolConfig {
                name: "b".into(),
                weight: 2,
                min: Resources::default(),
                max: None,
            },
        ];
        let mut placer = Placer::build(&[host("h1", 1200)], &[], &pools, defaults());
        let round = |pool: &str, from: usize, n: usize| -> Vec<(Task, CodeRevision)> {
            (from..from + n)
                .map(|i| (task(&format!("{pool}{i}"), "p", 100, Some(pool)), code()))
                .collect()
        };
        let placed = |decisions: &[PlaceDecision], candidates: &[(Task, CodeRevision)], pool| {
            decisions
                .iter()
                .zip(candidates)
                .filter(|(d, (t, _))| placed_on(d).is_some() && t.id.starts_with(pool))
                .count()
        };
        let first: Vec<_> = round("a", 0, 6)
            .into_iter()
            .chain(round("b", 0, 3))
            .collect();
        let decisions = placer.plan(&first);
        assert_eq!(placed(&decisions, &first, "b"), 3, "{decisions:?}");
        assert_eq!(
            placed(&decisions, &first, "a"),
            4,
            "a stays within its third (400 of 1200): {decisions:?}"
        );
        let second: Vec<_> = round("a", 6, 2)
            .into_iter()
            .chain(round("b", 3, 5))
            .collect();
        let decisions = placer.plan(&second);
        assert_eq!(placed(&decisions, &second, "b"), 5, "{decisions:?}");
    }
}
