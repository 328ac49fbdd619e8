//! Property tests of the placement engine and the pools, against brute-force
//! oracles written here from the documented rules (not from the engine's code).

use berth_sched::{
    can_ever_fit, place, serve_order, Constraint, Fleet, GroupRule, Hardness, Hold, Node,
    NodeState, PoolDemand, PoolSpec, Reason, Refusal, RefusalScope, Relation, Request, Resources,
    SoftKey, Strategy as Ranking, Tier, MAX_NAMED_HOSTS,
};
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet};

const MIB: u64 = 1 << 20;
const GROUPS: [&str; 4] = ["g0", "g1", "g2", "g3"];
const IMAGES: [&str; 2] = ["img1", "img2"];
const CONSTRAINTS: [&str; 12] = [
    "zone==a",
    "zone!=b",
    "zone==*",
    "gpu==true",
    "gpu!=true",
    "zone=~a|c",
    "zone!~b",
    "rack==r?",
    "node==h01",
    "node!=h02",
    "node==h1?",
    "node=~h0[0-4]",
];

fn resources(max_units: u64) -> impl Strategy<Value = Resources> {
    resources_between(0, max_units)
}

fn resources_between(min_units: u64, max_units: u64) -> impl Strategy<Value = Resources> {
    (
        min_units..=max_units,
        min_units..=max_units,
        min_units / 2..=max_units / 2,
        min_units / 2..=max_units / 2,
    )
        .prop_map(|(c, m, d, p)| Resources::new(c * 500, m * 256 * MIB, d * 1024 * MIB, p * 100))
}

fn node(index: usize, load_can_exceed: bool) -> impl Strategy<Value = Node> {
    (
        prop_oneof![
            16 => Just(NodeState::Ready),
            1 => Just(NodeState::Draining),
            1 => Just(NodeState::Down)
        ],
        proptest::option::of(prop_oneof![Just("a"), Just("b"), Just("c")]),
        proptest::option::of(any::<bool>()),
        proptest::option::of(0..3u8),
        resources_between(2, 12),
        (prop_oneof![3 => 0..=60u64, 1 => 60..=100u64], any::<bool>()),
        proptest::collection::btree_set(prop_oneof![Just(IMAGES[0]), Just(IMAGES[1])], 0..=2),
        proptest::collection::vec((0..GROUPS.len(), 0..3u8, any::<bool>()), 0..3),
    )
        .prop_map(
            move |(state, zone, gpu, rack, allocatable, (load, over), images, members)| {
                let mut node = Node::new(format!("h{index:02}"), allocatable).with_state(state);
                if let Some(zone) = zone {
                    node = node.with_label("zone", zone);
                }
                if let Some(gpu) = gpu {
                    node = node.with_label("gpu", gpu.to_string());
                }
                if let Some(rack) = rack {
                    node = node.with_label("rack", format!("r{rack}"));
                }
                // A share of the allocatable in use; sometimes more (a host whose
                // allocatable shrank).
                let factor = if over && load_can_exceed {
                    load + 100
                } else {
                    load
                };
                let scale = |v: u64| v / 100 * factor;
                node.allocated = Resources::new(
                    scale(allocatable.cpu_millis),
                    scale(allocatable.memory_bytes),
                    scale(allocatable.disk_bytes),
                    scale(allocatable.pids),
                );
                for image in images {
                    node = node.with_image(image);
                }
                for (group, member, exclusive) in members {
                    let name = format!("{}_{member}", GROUPS[group]);
                    node = if exclusive && !node.groups.contains_key(GROUPS[group]) {
                        node.with_exclusive_member(GROUPS[group], name)
                    } else {
                        node.with_member(GROUPS[group], name)
                    };
                }
                node
            },
        )
}

fn nodes(max: usize, load_can_exceed: bool) -> impl Strategy<Value = Vec<Node>> {
    prop_oneof![1 => 0..=max.min(8), 3 => 0..=max]
        .prop_flat_map(move |n| (0..n).map(|i| node(i, load_can_exceed)).collect::<Vec<_>>())
}

fn rule() -> impl Strategy<Value = GroupRule> {
    (
        0..GROUPS.len(),
        prop_oneof![Just(Relation::Affinity), Just(Relation::AntiAffinity)],
        prop_oneof![Just(Hardness::Hard), Just(Hardness::Soft)],
    )
        .prop_map(|(g, relation, hardness)| GroupRule::new(GROUPS[g], relation, hardness))
}

fn request(id: String) -> impl Strategy<Value = Request> {
    (
        resources(3),
        proptest::collection::vec(0..CONSTRAINTS.len(), 0..=2),
        proptest::collection::vec(rule(), 0..4),
        proptest::option::of(0..IMAGES.len()),
        any::<bool>(),
        any::<u64>(),
    )
        .prop_map(move |(res, constraints, rules, image, binpack, seed)| {
            let mut request = Request::new(id.clone(), res)
                .with_seed(seed)
                .with_constraints(constraints.iter().map(|&i| CONSTRAINTS[i]))
                .expect("the listed constraints parse");
            for rule in rules {
                // Duplicate groups are refused by the builder; skip them.
                request = request.clone().with_rule(rule).unwrap_or(request);
            }
            if let Some(image) = image {
                request = request.with_image(IMAGES[image]);
            }
            if binpack {
                request = request.with_strategy(Ranking::Binpack);
            }
            request
        })
}

// ---- Oracles, from the documented rules ----

fn holds(node: &Node, group: &str) -> bool {
    node.groups.get(group).is_some_and(|m| !m.is_empty())
}

fn anyone_holds(fleet: &Fleet, group: &str) -> bool {
    fleet.nodes().iter().any(|n| holds(n, group))
}

fn meets_constraints(node: &Node, request: &Request) -> bool {
    request
        .constraints()
        .iter()
        .all(|c| c.matches(&node.name, &node.labels))
}

fn keeps(fleet: &Fleet, node: &Node, rule: &GroupRule) -> bool {
    match rule.relation {
        Relation::AntiAffinity => !holds(node, &rule.group),
        Relation::Affinity => holds(node, &rule.group) || !anyone_holds(fleet, &rule.group),
    }
}

fn feasible(fleet: &Fleet, node: &Node, request: &Request) -> bool {
    node.state == NodeState::Ready
        && meets_constraints(node, request)
        // A host closed to a group by a member placed under hard anti-affinity
        // takes no other member of it.
        && request.rules().iter().all(|r| !node.exclusive.contains(&r.group))
        && request
            .rules()
            .iter()
            .filter(|r| r.is_hard())
            .all(|r| keeps(fleet, node, r))
        && request.resources().fits_within(&node.free())
}

fn soft_key(fleet: &Fleet, node: &Node, request: &Request) -> SoftKey {
    let soft: Vec<&GroupRule> = request.soft_rules().collect();
    let mask = soft
        .iter()
        .enumerate()
        .filter(|(_, r)| keeps(fleet, node, r))
        .fold(0u64, |mask, (i, _)| mask | 1 << (soft.len() - 1 - i));
    SoftKey::from_mask(mask)
}

/// Whether a refusal's reason is true of a host (independently of the engine).
fn reason_true(fleet: &Fleet, request: &Request, reason: &Reason, node: &Node) -> bool {
    let free = node.free();
    match reason {
        Reason::Down => node.state == NodeState::Down,
        Reason::Drained => node.state == NodeState::Draining,
        Reason::Constraint { constraint } => {
            request.constraints().contains(constraint)
                && !constraint.matches(&node.name, &node.labels)
        }
        Reason::AntiAffinity { group, members } => {
            (request
                .rules()
                .iter()
                .any(|r| r.group == *group && r.is_hard() && r.relation == Relation::AntiAffinity)
                || (node.exclusive.contains(group)
                    && request.rules().iter().any(|r| r.group == *group)))
                && holds(node, group)
                && node.groups[group].iter().all(|m| members.contains(m))
        }
        Reason::Affinity { group } => {
            request
                .rules()
                .iter()
                .any(|r| r.group == *group && r.is_hard() && r.relation == Relation::Affinity)
                && !holds(node, group)
                && anyone_holds(fleet, group)
        }
        Reason::Insufficient {
            resource,
            requested,
            most_free,
        } => {
            *requested == request.resources().get(*resource)
                && free.get(*resource) < *requested
                && free.get(*resource) <= *most_free
        }
        Reason::TooSmall {
            resource,
            requested,
            most_allocatable,
        } => {
            *requested == request.resources().get(*resource)
                && node.allocatable.get(*resource) < *requested
                && node.allocatable.get(*resource) <= *most_allocatable
        }
    }
}

/// A host's reason as the documented order gives it: the first failing check.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Expected {
    Down,
    Drained,
    Constraint(String),
    Anti(String),
    Affinity(String),
    Short(berth_sched::ResourceKind),
    TooSmall(berth_sched::ResourceKind),
}

fn expected_now(fleet: &Fleet, request: &Request, node: &Node) -> Option<Expected> {
    match node.state {
        NodeState::Down => return Some(Expected::Down),
        NodeState::Draining => return Some(Expected::Drained),
        NodeState::Ready => {}
    }
    if let Some(c) = request
        .constraints()
        .iter()
        .find(|c| !c.matches(&node.name, &node.labels))
    {
        return Some(Expected::Constraint(c.to_string()));
    }
    for rule in request.rules() {
        let closed = node.exclusive.contains(&rule.group);
        let hard = rule.is_hard();
        if closed || (hard && rule.relation == Relation::AntiAffinity && holds(node, &rule.group)) {
            return Some(Expected::Anti(rule.group.clone()));
        }
        if hard && rule.relation == Relation::Affinity && !keeps(fleet, node, rule) {
            return Some(Expected::Affinity(rule.group.clone()));
        }
    }
    request
        .resources()
        .first_shortage(&node.free())
        .map(Expected::Short)
}

fn expected_ever(request: &Request, node: &Node) -> Option<Expected> {
    if let Some(c) = request
        .constraints()
        .iter()
        .find(|c| !c.matches(&node.name, &node.labels))
    {
        return Some(Expected::Constraint(c.to_string()));
    }
    request
        .resources()
        .first_shortage(&node.allocatable)
        .map(Expected::TooSmall)
}

fn key_of(reason: &Reason) -> Expected {
    match reason {
        Reason::Down => Expected::Down,
        Reason::Drained => Expected::Drained,
        Reason::Constraint { constraint } => Expected::Constraint(constraint.to_string()),
        Reason::AntiAffinity { group, .. } => Expected::Anti(group.clone()),
        Reason::Affinity { group } => Expected::Affinity(group.clone()),
        Reason::Insufficient { resource, .. } => Expected::Short(*resource),
        Reason::TooSmall { resource, .. } => Expected::TooSmall(*resource),
    }
}

/// Every host is counted once, under the first check it fails; the named hosts are
/// the first of their group by name; every reason is true of every host it names.
fn check_refusal(fleet: &Fleet, request: &Request, refusal: &Refusal) -> Result<(), TestCaseError> {
    prop_assert_eq!(refusal.hosts, fleet.len());
    prop_assert_eq!(refusal.request_id.as_str(), request.id());
    let mut by_key: BTreeMap<Expected, Vec<&Node>> = BTreeMap::new();
    for node in fleet.nodes() {
        let expected = match refusal.scope {
            RefusalScope::Now => expected_now(fleet, request, node),
            RefusalScope::Ever => expected_ever(request, node),
        };
        let expected = expected.expect("a refused request has no feasible host");
        by_key.entry(expected).or_default().push(node);
    }
    prop_assert_eq!(refusal.groups.len(), by_key.len());
    prop_assert!(refusal.groups.windows(2).all(|w| w[0].count >= w[1].count));
    for group in &refusal.groups {
        let hosts = by_key
            .get(&key_of(&group.reason))
            .expect("a group per reason");
        prop_assert_eq!(group.count, hosts.len());
        let first: Vec<&str> = hosts
            .iter()
            .take(MAX_NAMED_HOSTS)
            .map(|n| n.name.as_str())
            .collect();
        prop_assert_eq!(
            &group.hosts.iter().map(String::as_str).collect::<Vec<_>>(),
            &first
        );
        for host in &group.hosts {
            let node = fleet.node(host).expect("named hosts exist");
            prop_assert!(
                reason_true(fleet, request, &group.reason, node),
                "reason {:?} is false of {}",
                group.reason,
                host
            );
        }
        // The aggregate figures are those of the whole group.
        match &group.reason {
            Reason::Insufficient {
                resource,
                most_free,
                ..
            } => {
                prop_assert_eq!(
                    hosts.iter().map(|n| n.free().get(*resource)).max(),
                    Some(*most_free)
                );
            }
            Reason::TooSmall {
                resource,
                most_allocatable,
                ..
            } => {
                prop_assert_eq!(
                    hosts.iter().map(|n| n.allocatable.get(*resource)).max(),
                    Some(*most_allocatable)
                );
            }
            Reason::AntiAffinity { group: g, members } => {
                let held: BTreeSet<&String> = hosts.iter().flat_map(|n| &n.groups[g]).collect();
                prop_assert_eq!(members.iter().collect::<BTreeSet<_>>(), held);
            }
            _ => {}
        }
    }
    Ok(())
}

fn fleet_and_request(
    max_nodes: usize,
    can_exceed: bool,
) -> impl Strategy<Value = (Vec<Node>, Request)> {
    (nodes(max_nodes, can_exceed), request("t".to_owned()))
}

/// Many roomy ready hosts and a request with soft rules only: exercises the sampled
/// walk, where a sample could miss the hosts keeping the most soft rules.
fn roomy_fleet_and_soft_request() -> impl Strategy<Value = (Vec<Node>, Request)> {
    let roomy = |i: usize| {
        (
            resources_between(8, 12),
            0..=50u64,
            proptest::collection::vec((0..GROUPS.len(), 0..3u8), 0..3),
        )
            .prop_map(move |(allocatable, load, members)| {
                let scale = |v: u64| v / 100 * load;
                let mut node =
                    Node::new(format!("h{i:02}"), allocatable).with_allocated(Resources::new(
                        scale(allocatable.cpu_millis),
                        scale(allocatable.memory_bytes),
                        scale(allocatable.disk_bytes),
                        scale(allocatable.pids),
                    ));
                for (group, member) in members {
                    node = node.with_member(GROUPS[group], format!("{}_{member}", GROUPS[group]));
                }
                node
            })
    };
    let nodes = (9..=60usize).prop_flat_map(move |n| (0..n).map(roomy).collect::<Vec<_>>());
    let soft = (
        0..GROUPS.len(),
        prop_oneof![Just(Relation::Affinity), Just(Relation::AntiAffinity)],
    )
        .prop_map(|(g, relation)| GroupRule::new(GROUPS[g], relation, Hardness::Soft));
    let request = (
        resources(2),
        proptest::collection::vec(soft, 1..4),
        any::<u64>(),
    )
        .prop_map(|(res, rules, seed)| {
            rules
                .into_iter()
                .fold(Request::new("t", res).with_seed(seed), |r, rule| {
                    r.clone().with_rule(rule).unwrap_or(r)
                })
        });
    (nodes, request)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// A placement is feasible, keeps as many soft rules as any feasible host could
    /// (with the listed-order tie-break), and reports what it gave up; a refusal
    /// means no host is feasible and explains every host truthfully.
    #[test]
    fn place_matches_the_rules((nodes, request) in fleet_and_request(40, true)) {
        let fleet = Fleet::new(nodes).expect("unique names");
        let best = fleet
            .nodes()
            .iter()
            .filter(|n| feasible(&fleet, n, &request))
            .map(|n| soft_key(&fleet, n, &request))
            .max();
        match place(&fleet, &request) {
            Ok(p) => {
                let node = fleet.node(&p.node).expect("placed on a known host");
                prop_assert!(feasible(&fleet, node, &request), "{} is not feasible", p.node);
                prop_assert_eq!(Some(soft_key(&fleet, node, &request)), best);
                let given_up: Vec<GroupRule> = request
                    .soft_rules()
                    .filter(|r| !keeps(&fleet, node, r))
                    .cloned()
                    .collect();
                prop_assert_eq!(&p.soft_rules_given_up, &given_up);
                prop_assert_eq!(p.resources, *request.resources());
                prop_assert_eq!(p.image_present, request.image().is_some_and(|i| node.images.contains(i)));
            }
            Err(refusal) => {
                prop_assert_eq!(best, None, "refused although a host is feasible: {}", refusal);
                prop_assert_eq!(refusal.scope, RefusalScope::Now);
                check_refusal(&fleet, &request, &refusal)?;
            }
        }
    }

    /// The same with many feasible hosts and soft rules only: the sampled walk
    /// still returns a host with the best soft-rule key of the whole fleet.
    #[test]
    fn sampling_never_misses_the_best_soft_key((nodes, request) in roomy_fleet_and_soft_request()) {
        let fleet = Fleet::new(nodes).expect("unique names");
        let best = fleet
            .nodes()
            .iter()
            .filter(|n| feasible(&fleet, n, &request))
            .map(|n| soft_key(&fleet, n, &request))
            .max();
        let p = place(&fleet, &request);
        prop_assert_eq!(p.is_ok(), best.is_some());
        if let Ok(p) = p {
            let node = fleet.node(&p.node).expect("known host");
            prop_assert!(feasible(&fleet, node, &request));
            prop_assert_eq!(Some(soft_key(&fleet, node, &request)), best);
        }
    }

    /// The same snapshot and request give the same answer, whatever order the hosts
    /// were read in.
    #[test]
    fn answers_are_deterministic((nodes, request) in fleet_and_request(40, true), rotate in 0..40usize) {
        let fleet = Fleet::new(nodes.clone()).expect("unique names");
        let mut rotated = nodes;
        if !rotated.is_empty() {
            let by = rotate % rotated.len();
            rotated.rotate_left(by);
        }
        let other = Fleet::new(rotated).expect("unique names");
        let first = place(&fleet, &request);
        prop_assert_eq!(&first, &place(&fleet, &request));
        prop_assert_eq!(&first, &place(&other, &request));
        prop_assert_eq!(can_ever_fit(&fleet, &request), can_ever_fit(&other, &request));
    }

    /// `can_ever_fit` refuses exactly when no host satisfies the constraints with
    /// enough allocatable, and explains why truthfully.
    #[test]
    fn can_ever_fit_matches_the_rules((nodes, request) in fleet_and_request(30, true)) {
        let fleet = Fleet::new(nodes).expect("unique names");
        let possible = fleet.is_empty()
            || fleet
                .nodes()
                .iter()
                .any(|n| meets_constraints(n, &request) && request.resources().fits_within(&n.allocatable));
        match can_ever_fit(&fleet, &request) {
            Ok(()) => prop_assert!(possible),
            Err(refusal) => {
                prop_assert!(!possible);
                prop_assert_eq!(refusal.scope, RefusalScope::Ever);
                check_refusal(&fleet, &request, &refusal)?;
            }
        }
        // A request that can be placed now can certainly fit ever.
        if place(&fleet, &request).is_ok() {
            prop_assert_eq!(can_ever_fit(&fleet, &request), Ok(()));
        }
    }

    /// Placing and committing a stream of requests (releasing some on the way) never
    /// overcommits a host nor breaks a hard rule, and every placement commits.
    #[test]
    fn a_stream_of_placements_never_overcommits(
        nodes in nodes(20, false),
        requests in proptest::collection::vec((request(String::new()), any::<bool>()), 1..60),
    ) {
        let mut fleet = Fleet::new(nodes).expect("unique names");
        let initial = fleet.clone();
        let mut live = Vec::new();
        for (i, (request, release_one)) in requests.into_iter().enumerate() {
            // Unique ids, so members can be told apart.
            let request = {
                let mut r = Request::new(format!("t{i}"), *request.resources())
                    .with_seed(request.seed())
                    .with_strategy(request.strategy());
                for c in request.constraints() {
                    r = r.with_constraint(c.clone());
                }
                for rule in request.rules() {
                    r = r.with_rule(rule.clone()).expect("rules were valid");
                }
                r
            };
            if let Ok(p) = place(&fleet, &request) {
                let node = fleet.node(&p.node).expect("known host");
                prop_assert!(feasible(&fleet, node, &request));
                fleet.commit(&p).expect("a fresh placement commits");
                live.push(p);
            }
            if release_one && !live.is_empty() {
                let p = live.remove(i % live.len());
                fleet.release(&p).expect("a committed placement releases");
            }
            for n in fleet.nodes() {
                prop_assert!(n.allocated.fits_within(&n.allocatable), "{} overcommitted", n.name);
            }
        }
        // Hard anti-affinity holds both ways: a placement made under it is alone
        // of its group on its host, whatever came after it.
        for p in &live {
            let node = fleet.node(&p.node).expect("known host");
            for rule in p.rules.iter().filter(|r| r.is_hard() && r.relation == Relation::AntiAffinity) {
                prop_assert_eq!(&node.groups[&rule.group], &vec![p.request_id.clone()]);
                prop_assert!(node.exclusive.contains(&rule.group));
            }
        }
        // Releasing everything leaves the hosts as they were.
        for p in live.iter().rev() {
            fleet.release(p).expect("a committed placement releases");
        }
        prop_assert_eq!(fleet.nodes(), initial.nodes());
    }

    /// Committing the same placement over and over stops at the host's allocatable.
    #[test]
    fn commit_refuses_what_does_not_fit(nodes in nodes(5, false), req in resources(3)) {
        let mut fleet = Fleet::new(nodes).expect("unique names");
        if let Ok(p) = place(&fleet, &Request::new("t", req)) {
            for _ in 0..64 {
                if fleet.commit(&p).is_err() {
                    break;
                }
            }
            for n in fleet.nodes() {
                prop_assert!(n.allocated.fits_within(&n.allocatable));
            }
        }
    }
}

// ---- Pools ----

fn cpus_mem(cpu: u64, mem: u64) -> Resources {
    Resources::new(cpu * 1000, mem * 1024 * MIB, 0, 0)
}

fn pool_specs() -> impl Strategy<Value = Vec<PoolSpec>> {
    proptest::collection::vec(
        (
            1..5u32,
            0..6u64,
            0..6u64,
            proptest::option::of((0..30u64, 0..30u64)),
        ),
        1..6,
    )
    .prop_map(|pools| {
        pools
            .into_iter()
            .enumerate()
            .map(|(i, (weight, min_cpu, min_mem, max))| {
                let min = cpus_mem(min_cpu, min_mem);
                let max = max.map_or(Resources::UNLIMITED, |(c, m)| {
                    cpus_mem(c, m).saturating_add(&min)
                });
                PoolSpec::new(format!("p{i}"))
                    .with_weight(weight)
                    .with_min(min)
                    .with_max(max)
            })
            .collect()
    })
}

fn demand(pools: usize) -> impl Strategy<Value = BTreeMap<String, PoolDemand>> {
    proptest::collection::vec(
        (0..20u64, 0..20u64, proptest::option::of((0..4u64, 0..4u64))),
        pools,
    )
    .prop_map(|entries| {
        entries
            .into_iter()
            .enumerate()
            .map(|(i, (cpu, mem, head))| {
                (
                    format!("p{i}"),
                    PoolDemand {
                        usage: cpus_mem(cpu, mem),
                        head: head.map(|(c, m)| cpus_mem(c, m)),
                    },
                )
            })
            .collect()
    })
}

fn specs_and_demand() -> impl Strategy<Value = (Vec<PoolSpec>, BTreeMap<String, PoolDemand>)> {
    pool_specs().prop_flat_map(|specs| {
        let n = specs.len();
        (Just(specs), demand(n))
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Every waiting pool is either served or held, for the documented reason; the
    /// tiers come in order; nobody borrows while a guaranteed pool waits; nobody
    /// goes above its max; the order does not depend on the order of the specs.
    #[test]
    fn serve_order_follows_the_rules((specs, demand) in specs_and_demand(), fleet_cpu in 1..60u64) {
        let fleet = cpus_mem(fleet_cpu, fleet_cpu * 2);
        let order = serve_order(&specs, &demand, &fleet).expect("valid pools");
        let spec = |name: &str| specs.iter().find(|s| s.name == name).expect("configured");
        let waiting: BTreeSet<&str> = demand.iter().filter(|(_, d)| d.head.is_some()).map(|(n, _)| n.as_str()).collect();
        let mut seen = BTreeSet::new();
        for turn in &order.turns {
            prop_assert!(seen.insert(turn.pool.as_str()));
            let d = &demand[&turn.pool];
            let head = d.head.expect("served pools wait");
            let after = d.usage.checked_add(&head).expect("small figures");
            prop_assert!(after.fits_within(&spec(&turn.pool).max), "above max");
            prop_assert_eq!(turn.tier == Tier::Guaranteed, after.fits_within(&spec(&turn.pool).min));
        }
        for held in &order.held {
            prop_assert!(seen.insert(held.pool.as_str()));
            let d = &demand[&held.pool];
            let after = d.usage.checked_add(&d.head.expect("held pools wait")).expect("small figures");
            match held.why {
                Hold::AtMax => prop_assert!(!after.fits_within(&spec(&held.pool).max)),
                Hold::BorrowingPaused => {
                    prop_assert!(order.turns.iter().any(|t| t.tier == Tier::Guaranteed));
                }
            }
        }
        prop_assert_eq!(seen, waiting);
        prop_assert!(order.turns.windows(2).all(|w| w[0].tier <= w[1].tier));
        if order.turns.iter().any(|t| t.tier == Tier::Guaranteed) {
            prop_assert!(order.turns.iter().all(|t| t.tier != Tier::Borrow));
        }
        let mut reversed = specs.clone();
        reversed.reverse();
        prop_assert_eq!(&order, &serve_order(&reversed, &demand, &fleet).expect("valid pools"));
    }

    /// Starting empty, with guarantees that fit in the fleet and pools that always
    /// have more work, serving the first pool in order (and stopping when its head
    /// does not fit) gives every pool its minimum — up to one request — before any
    /// pool is served beyond its guarantee; and never takes a pool above its max nor
    /// the fleet above its size.
    #[test]
    fn guarantees_fill_first(
        specs in pool_specs(),
        heads in proptest::collection::vec((1..3u64, 0..3u64), 6),
    ) {
        let fleet = cpus_mem(40, 80);
        let total_min = specs.iter().fold(Resources::ZERO, |sum, s| sum.saturating_add(&s.min));
        prop_assume!(total_min.fits_within(&fleet));
        let head_of = |i: usize| cpus_mem(heads[i].0, heads[i].1);
        let mut usage: BTreeMap<String, Resources> =
            specs.iter().map(|s| (s.name.clone(), Resources::ZERO)).collect();
        let mut guaranteed_phase = true;
        for _ in 0..200 {
            let demand: BTreeMap<String, PoolDemand> = specs
                .iter()
                .enumerate()
                .map(|(i, s)| (s.name.clone(), PoolDemand { usage: usage[&s.name], head: Some(head_of(i)) }))
                .collect();
            let order = serve_order(&specs, &demand, &fleet).expect("valid pools");
            let first = order.turns.first();
            if guaranteed_phase && first.is_none_or(|t| t.tier != Tier::Guaranteed) {
                guaranteed_phase = false;
                for (i, s) in specs.iter().enumerate() {
                    let next = usage[&s.name].saturating_add(&head_of(i));
                    prop_assert!(!next.fits_within(&s.min), "{} still under its minimum", s.name);
                }
            }
            let Some(turn) = first else { break };
            let i = specs.iter().position(|s| s.name == turn.pool).expect("configured");
            let used = usage.values().fold(Resources::ZERO, |sum, u| sum.saturating_add(u));
            if !used.saturating_add(&head_of(i)).fits_within(&fleet) {
                prop_assert!(!guaranteed_phase, "a guaranteed head did not fit although the minimums do");
                break;
            }
            let pool = usage.get_mut(&turn.pool).expect("configured");
            *pool = pool.saturating_add(&head_of(i));
            prop_assert!(pool.fits_within(&specs[i].max), "{} above its max", turn.pool);
        }
        prop_assert!(!guaranteed_phase, "the guaranteed phase ends within 200 rounds");
    }
}

#[test]
fn constraint_list_used_by_the_properties_parses() {
    for text in CONSTRAINTS {
        Constraint::parse(text).unwrap_or_else(|e| panic!("{e}"));
    }
}
