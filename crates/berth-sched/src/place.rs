//! The entry points: [`place`] and [`can_ever_fit`].
//!
//! How [`place`] finds its host (see README.md for the diagram):
//!
//! 1. **Prepare** (`feasibility.rs`): decide the label constraints once per class
//!    through the label index (`class.rs`), resolve each group rule to the hosts
//!    holding its members (`groups.rs`).
//! 2. **Anchor**: if a hard affinity group already has members, only their hosts can
//!    take the request; check all of them (there are few) and skip to 5.
//! 3. **Special hosts**: check every host holding a member of a soft-affinity group:
//!    they are the only hosts that can keep more soft rules than a host holding no
//!    member of any of the request's groups (the "general mask"). If one of them is
//!    feasible and beats the general mask, no other host can win: skip to 5.
//! 4. **Walk** (`sample.rs`): visit the hosts of the eligible classes in the seeded
//!    order until `max(8, ⌈log₂ n⌉)` feasible hosts with the general mask are found,
//!    or every host has been seen. If the request names an image, also walk the hosts
//!    holding it (a second seeded walk, bounded) so a rare image is not missed.
//! 5. **Rank** (`rank.rs`): among the candidates with the best soft-rule key, the
//!    highest score wins; ties go to the one found first.
//!
//! If no candidate was found, every host has been ruled out (steps 2–4 only stop
//! early once they HAVE candidates), and an explanation pass over the whole fleet
//! builds the [`Refusal`].

use crate::feasibility::Prepared;
use crate::groups::{GroupRule, SoftKey};
use crate::rank::score;
use crate::refusal::{explain_never, explain_now, Refusal};
use crate::request::Request;
use crate::sample::{candidate_limit, mix, Walk};
use crate::snapshot::Fleet;
use crate::Resources;
use serde::{Deserialize, Serialize};

/// Salt separating the image walk's order from the main walk's.
const IMAGE_WALK_SALT: u64 = 0x696d_6167_6573_616c;

/// The image walk visits at most this many holders per candidate wanted, so a
/// popular image on busy hosts cannot make a placement slow.
const IMAGE_VISITS_PER_CANDIDATE: usize = 4;

/// Where a request goes. Pass it to [`Fleet::commit`] to reserve it and to
/// [`Fleet::release`] when it ends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Placement {
    /// The request's id: the member name its host holds in each of its groups.
    pub request_id: String,
    /// The chosen host's name.
    pub node: String,
    pub resources: Resources,
    /// Every group rule of the request (commit checks the hard ones again and makes
    /// the request a member of every group named).
    pub rules: Vec<GroupRule>,
    /// The soft rules this placement breaks, in listed order (empty when it keeps
    /// them all).
    pub soft_rules_given_up: Vec<GroupRule>,
    /// Whether the host already holds the request's image.
    pub image_present: bool,
    /// The winning score (`rank.rs`).
    pub score: i64,
    /// Hosts checked to decide (a measure of the work done).
    pub hosts_checked: u32,
}

#[derive(Debug, Clone, Copy)]
struct Candidate {
    node: u32,
    key: SoftKey,
}

struct Search<'p, 'a> {
    prepared: &'p Prepared<'a>,
    /// In the order found; the position breaks score ties.
    candidates: Vec<Candidate>,
    checked: u32,
}

impl<'p, 'a> Search<'p, 'a> {
    fn check(&mut self, node: u32) -> Option<SoftKey> {
        self.checked += 1;
        let mask = self.prepared.check(node).ok()?;
        let key = SoftKey::from_mask(mask);
        self.candidates.push(Candidate { node, key });
        Some(key)
    }

    fn best_key(&self) -> Option<SoftKey> {
        self.candidates.iter().map(|c| c.key).max()
    }
}

/// Chooses a host for `request` in `fleet`, or explains why none can take it now.
/// Pure: the same fleet and request always give the same answer.
pub fn place(fleet: &Fleet, request: &Request) -> Result<Placement, Refusal> {
    let prepared = Prepared::new(fleet, request);
    let mut search = Search {
        prepared: &prepared,
        candidates: Vec::new(),
        checked: 0,
    };
    let image_holders: &[u32] = request
        .image()
        .and_then(|image| fleet.images.get(image))
        .map_or(&[], Vec::as_slice);

    if let Some(anchor) = prepared.hard_affinity_anchor() {
        for &(node, _) in anchor {
            search.check(node);
        }
    } else {
        let special = prepared.soft_affinity_holders();
        for &node in &special {
            search.check(node);
        }
        let general = SoftKey::from_mask(prepared.general_mask());
        if search.best_key().is_none_or(|best| best <= general) {
            let population = prepared.population();
            let limit = candidate_limit(population.len());
            let mut found = 0;
            let mut stopped_early = false;
            for position in Walk::new(population.len(), request.seed()) {
                let node = population.get(position);
                if !special.is_empty() && special.binary_search(&node).is_ok() {
                    continue;
                }
                if search.check(node) == Some(general) {
                    found += 1;
                    if found >= limit {
                        stopped_early = true;
                        break;
                    }
                }
            }
            // A walk that ran to its end has already seen every image holder.
            if stopped_early && !image_holders.is_empty() {
                let mut found = 0;
                let walk = Walk::new(image_holders.len(), mix(request.seed() ^ IMAGE_WALK_SALT));
                for position in walk.take(IMAGE_VISITS_PER_CANDIDATE * limit) {
                    let node = image_holders[position];
                    if !special.is_empty() && special.binary_search(&node).is_ok() {
                        continue;
                    }
                    if search.check(node) == Some(general) {
                        found += 1;
                        if found >= limit {
                            break;
                        }
                    }
                }
            }
        }
    }

    if search.candidates.is_empty() {
        let (refusal, missed) = explain_now(&prepared);
        if missed.is_empty() {
            return Err(refusal);
        }
        debug_assert!(false, "the search missed feasible hosts {missed:?}");
        for node in missed {
            search.check(node);
        }
    }

    let has_image = |node: u32| image_holders.binary_search(&node).is_ok();
    // Best soft key first, then best score; on a full tie the earlier candidate stays.
    let mut winner: Option<(SoftKey, i64, u32)> = None;
    for candidate in &search.candidates {
        if winner.is_some_and(|(key, _, _)| candidate.key < key) {
            continue;
        }
        let hot = &fleet.hot[candidate.node as usize];
        let here = score(
            hot,
            request.resources(),
            request.strategy(),
            has_image(candidate.node),
        );
        if winner.is_none_or(|(key, best, _)| (candidate.key, here) > (key, best)) {
            winner = Some((candidate.key, here, candidate.node));
        }
    }
    let Some((best_key, best_score, node)) = winner else {
        // Only reachable if the explanation pass disagreed with itself.
        return Err(explain_now(&prepared).0);
    };
    let soft_rules_given_up = prepared
        .rules
        .iter()
        .filter(|r| r.bit != 0 && best_key.mask & r.bit == 0)
        .map(|r| r.rule.clone())
        .collect();
    Ok(Placement {
        request_id: request.id().to_owned(),
        node: fleet.nodes[node as usize].name.clone(),
        resources: *request.resources(),
        rules: request.rules().to_vec(),
        soft_rules_given_up,
        image_present: has_image(node),
        score: best_score,
        hosts_checked: search.checked,
    })
}

/// Whether some host could ever take `request`: one whose labels and name satisfy
/// every constraint and whose allocatable (not free) resources cover the request,
/// whatever its current load or state. Group rules are ignored (they depend on
/// load). The server refuses a request that fails this at queue time.
///
/// An empty fleet refuses nothing: hosts may still join.
pub fn can_ever_fit(fleet: &Fleet, request: &Request) -> Result<(), Refusal> {
    if fleet.is_empty() {
        return Ok(());
    }
    let prepared = Prepared::new(fleet, request);
    let population = prepared.population();
    for position in 0..population.len() {
        let node = population.get(position);
        let host = &fleet.nodes[node as usize];
        let class_ok = prepared
            .class_ok
            .as_ref()
            .is_none_or(|set| set.contains(fleet.classes.class_of(node)));
        if class_ok
            && prepared
                .name_constraints
                .iter()
                .all(|(_, c)| c.matches_value(Some(&host.name)))
            && request.resources().fits_within(&host.allocatable)
        {
            return Ok(());
        }
    }
    match explain_never(&prepared) {
        Some(refusal) => Err(refusal),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::groups::GroupRule;
    use crate::refusal::{Reason, RefusalScope};
    use crate::request::Strategy;
    use crate::snapshot::{CommitError, Node, NodeState};

    const MIB: u64 = 1 << 20;
    const GIB: u64 = 1 << 30;

    fn host(name: &str) -> Node {
        Node::new(name, Resources::new(4000, 4 * GIB, 10 * GIB, 1000))
    }

    fn req(id: &str) -> Request {
        Request::new(id, Resources::new(500, 512 * MIB, 0, 10))
    }

    fn fleet(nodes: Vec<Node>) -> Fleet {
        Fleet::new(nodes).expect("valid fleet")
    }

    fn placed(fleet: &Fleet, request: &Request) -> Placement {
        place(fleet, request).unwrap_or_else(|r| panic!("{} refused: {r}", request.id()))
    }

    #[test]
    fn spread_picks_the_least_loaded_and_binpack_the_fullest() {
        let half = Resources::new(2000, 2 * GIB, 0, 0);
        let f = fleet(vec![
            host("a").with_allocated(half),
            host("b"),
            host("c").with_allocated(half),
        ]);
        assert_eq!(placed(&f, &req("t")).node, "b");
        let binpack = req("t").with_strategy(Strategy::Binpack);
        assert_ne!(placed(&f, &binpack).node, "b");
    }

    #[test]
    fn image_holders_are_preferred_when_load_is_close() {
        let f = fleet(vec![
            host("a"),
            host("b")
                .with_image("app:1")
                .with_allocated(Resources::new(400, 0, 0, 0)),
            host("c"),
        ]);
        let p = placed(&f, &req("t").with_image("app:1"));
        assert_eq!(p.node, "b");
        assert!(p.image_present);
        assert!(!placed(&f, &req("t").with_image("other")).image_present);
    }

    #[test]
    fn the_issue_refusal_is_explained_host_by_host() {
        let f = fleet(vec![
            host("h1").with_label("gpu", "false"),
            host("h2"),
            host("h3")
                .with_label("gpu", "true")
                .with_allocated(Resources::new(0, 4 * GIB - 200 * MIB, 0, 0)),
            host("h4")
                .with_label("gpu", "true")
                .with_member("web", "web_red"),
            host("h5")
                .with_label("gpu", "true")
                .with_state(NodeState::Draining),
        ]);
        let request = req("web_blue")
            .with_constraints(["gpu==true"])
            .expect("valid")
            .with_rule(GroupRule::hard_anti_affinity("web"))
            .expect("rule");
        let refusal = place(&f, &request).expect_err("nothing fits");
        assert_eq!(
            refusal.to_string(),
            "2 hosts lack label gpu=true; 1 host has 200 MiB of the 512 MiB of memory requested free; \
             1 host holds web_red (anti-affinity, group web); 1 host is drained"
        );
        assert_eq!(refusal.scope, RefusalScope::Now);
        assert_eq!(refusal.hosts, 5);
        assert_eq!(refusal.groups[0].hosts, vec!["h1", "h2"]);
        // Nothing can fit NOW, but it could ever: the queue keeps it.
        assert_eq!(can_ever_fit(&f, &request), Ok(()));
    }

    #[test]
    fn large_groups_are_counted_in_full_and_named_in_part() {
        let f = fleet(
            (0..50)
                .map(|i| host(&format!("h{i:02}")).with_state(NodeState::Down))
                .collect(),
        );
        let refusal = place(&f, &req("t")).expect_err("every host is down");
        assert_eq!(refusal.to_string(), "50 hosts are down");
        let group = &refusal.groups[0];
        assert_eq!(group.count, 50);
        assert_eq!(group.hosts.len(), crate::refusal::MAX_NAMED_HOSTS);
        assert_eq!(group.hosts[0], "h00");
        assert_eq!(group.hosts[31], "h31");
    }

    #[test]
    fn never_fitting_requests_are_told_apart() {
        let f = fleet(vec![host("a"), host("b").with_label("gpu", "true")]);
        let huge = Request::new("t", Resources::new(500, 8 * GIB, 0, 0));
        let refusal = can_ever_fit(&f, &huge).expect_err("larger than every host");
        assert_eq!(refusal.scope, RefusalScope::Ever);
        assert_eq!(
            refusal.to_string(),
            "2 hosts have at most 4 GiB of memory allocatable (8 GiB requested)"
        );
        let nowhere = req("t")
            .with_constraints(["gpu==true", "zone==x"])
            .expect("valid");
        let refusal = can_ever_fit(&f, &nowhere).expect_err("no host in zone x");
        assert_eq!(
            refusal.to_string(),
            "1 host lacks label gpu=true; 1 host lacks label zone=x"
        );
        // Load and state do not matter to can_ever_fit.
        let busy = fleet(vec![host("a")
            .with_allocated(Resources::new(4000, 4 * GIB, 0, 0))
            .with_state(NodeState::Down)]);
        assert_eq!(can_ever_fit(&busy, &req("t")), Ok(()));
        assert_eq!(can_ever_fit(&fleet(vec![]), &req("t")), Ok(()));
        assert_eq!(
            place(&fleet(vec![]), &req("t"))
                .expect_err("empty")
                .to_string(),
            "no hosts in the fleet"
        );
    }

    #[test]
    fn node_names_can_be_required_or_excluded() {
        let f = fleet(vec![host("host-1"), host("host-2"), host("host-3")]);
        let only = req("t").with_constraints(["node==host-3"]).expect("valid");
        assert_eq!(placed(&f, &only).node, "host-3");
        let not = req("t").with_constraints(["node!=host-*"]).expect("valid");
        let refusal = place(&f, &not).expect_err("every host excluded");
        assert_eq!(refusal.to_string(), "3 hosts have names matching host-*");
        let missing = req("t").with_constraints(["node==host-9"]).expect("valid");
        assert_eq!(
            place(&f, &missing).expect_err("no such host").to_string(),
            "3 hosts are not host-9"
        );
        assert!(can_ever_fit(&f, &missing).is_err());
    }

    #[test]
    fn hard_anti_affinity_spreads_a_group_and_then_refuses() {
        let mut f = fleet(vec![host("a"), host("b"), host("c")]);
        let mut used = Vec::new();
        for member in ["web_1", "web_2", "web_3"] {
            let r = req(member)
                .with_rule(GroupRule::hard_anti_affinity("web"))
                .expect("rule");
            let p = placed(&f, &r);
            f.commit(&p).expect("commit");
            used.push(p.node);
        }
        used.sort();
        assert_eq!(used, vec!["a", "b", "c"]);
        let fourth = req("web_4")
            .with_rule(GroupRule::hard_anti_affinity("web"))
            .expect("rule");
        let refusal = place(&f, &fourth).expect_err("every host holds a member");
        assert_eq!(
            refusal.to_string(),
            "3 hosts hold web_1, web_2, web_3 (anti-affinity, group web)"
        );
        assert!(
            matches!(&refusal.groups[0].reason, Reason::AntiAffinity { group, .. } if group == "web")
        );
    }

    #[test]
    fn hard_anti_affinity_keeps_its_host_even_from_softer_members() {
        // web_1 went to a under hard anti-affinity; b is full.
        let full = Resources::new(4000, 4 * GIB, 0, 0);
        let mut f = fleet(vec![host("a"), host("b").with_allocated(full)]);
        let first = req("web_1")
            .with_rule(GroupRule::hard_anti_affinity("web"))
            .expect("rule");
        let p = placed(&f, &first);
        assert_eq!(p.node, "a");
        f.commit(&p).expect("commit");
        assert!(f.node("a").is_some_and(|n| n.exclusive.contains("web")));
        // A member that would only prefer to be apart (or wants to be together!)
        // still may not join a.
        for rule in [
            GroupRule::soft_anti_affinity("web"),
            GroupRule::soft_affinity("web"),
            GroupRule::hard_affinity("web"),
        ] {
            let second = req("web_2").with_rule(rule).expect("rule");
            let refusal = place(&f, &second).expect_err("a is closed to web, b is full");
            assert!(
                refusal
                    .to_string()
                    .contains("1 host holds web_1 (anti-affinity, group web)"),
                "{refusal}"
            );
        }
        // Not a member of web: welcome.
        assert_eq!(placed(&f, &req("other")).node, "a");
        // Once web_1 ends, a is open again.
        f.release(&p).expect("release");
        assert!(f.node("a").is_some_and(|n| n.exclusive.is_empty()));
        let second = req("web_2")
            .with_rule(GroupRule::soft_anti_affinity("web"))
            .expect("rule");
        assert_eq!(placed(&f, &second).node, "a");
    }

    #[test]
    fn hard_affinity_follows_the_first_member() {
        let mut f = fleet((0..20).map(|i| host(&format!("h{i:02}"))).collect());
        let first = req("db_1")
            .with_rule(GroupRule::hard_affinity("db"))
            .expect("rule");
        let p = placed(&f, &first);
        f.commit(&p).expect("commit");
        for i in 2..=6 {
            let r = req(&format!("db_{i}"))
                .with_rule(GroupRule::hard_affinity("db"))
                .expect("rule");
            let q = placed(&f, &r);
            assert_eq!(q.node, p.node);
            f.commit(&q).expect("commit");
        }
        // The host is now full (6 × 0.5 CPU of 4, 6 × 512 MiB of 4 GiB): the 9th cannot follow.
        for i in 7..=8 {
            let r = req(&format!("db_{i}"))
                .with_rule(GroupRule::hard_affinity("db"))
                .expect("rule");
            f.commit(&placed(&f, &r)).expect("commit");
        }
        let r = req("db_9")
            .with_rule(GroupRule::hard_affinity("db"))
            .expect("rule");
        let refusal = place(&f, &r).expect_err("the group's host is full");
        assert!(
            refusal
                .to_string()
                .contains("19 hosts hold no member of group db (affinity)"),
            "{refusal}"
        );
    }

    #[test]
    fn soft_rules_are_given_up_one_at_a_time_in_listed_order() {
        // Host a holds x (which we want to join) and y (which we want to avoid);
        // host b holds y; host c holds nothing.
        let f = fleet(vec![
            host("a").with_member("x", "x_1").with_member("y", "y_1"),
            host("b").with_member("y", "y_2"),
            host("c").with_member("z", "z_1"),
        ]);
        let both = |first: GroupRule, second: GroupRule| {
            req("t")
                .with_rule(first)
                .and_then(|r| r.with_rule(second))
                .expect("rules")
        };
        // Join x first, avoid y second: a keeps the first, c keeps the second. Both
        // break one rule; the first-listed is kept longest → a.
        let p = placed(
            &f,
            &both(
                GroupRule::soft_affinity("x"),
                GroupRule::soft_anti_affinity("y"),
            ),
        );
        assert_eq!(p.node, "a");
        assert_eq!(
            p.soft_rules_given_up,
            vec![GroupRule::soft_anti_affinity("y")]
        );
        // Listed the other way round → c.
        let p = placed(
            &f,
            &both(
                GroupRule::soft_anti_affinity("y"),
                GroupRule::soft_affinity("x"),
            ),
        );
        assert_eq!(p.node, "c");
        assert_eq!(p.soft_rules_given_up, vec![GroupRule::soft_affinity("x")]);
        // Avoid y, avoid z: c breaks z only, b breaks y only, a breaks y only.
        // Fewest broken first (all one), then the first-listed (y) is kept → c.
        let p = placed(
            &f,
            &both(
                GroupRule::soft_anti_affinity("y"),
                GroupRule::soft_anti_affinity("z"),
            ),
        );
        assert_eq!(p.node, "c");
        // A host keeping every rule wins over any that breaks one.
        let p = placed(
            &f,
            &both(
                GroupRule::soft_anti_affinity("z"),
                GroupRule::soft_affinity("x"),
            ),
        );
        assert_eq!(p.node, "a");
        assert!(p.soft_rules_given_up.is_empty());
    }

    #[test]
    fn soft_affinity_finds_its_group_in_a_large_fleet() {
        let mut nodes: Vec<Node> = (0..2000).map(|i| host(&format!("h{i:04}"))).collect();
        nodes[1234] = host("h1234").with_member("cache", "cache_1");
        let f = fleet(nodes);
        let r = req("cache_2")
            .with_rule(GroupRule::soft_affinity("cache"))
            .expect("rule");
        let p = placed(&f, &r);
        assert_eq!(p.node, "h1234");
        assert!(p.hosts_checked < 10, "checked {}", p.hosts_checked);
    }

    #[test]
    fn sampling_checks_a_few_hosts_not_the_fleet() {
        let f = fleet((0..10_000).map(|i| host(&format!("h{i:05}"))).collect());
        let p = placed(&f, &req("t"));
        assert_eq!(p.hosts_checked, 14);
    }

    #[test]
    fn commit_rechecks_and_release_undoes() {
        let mut f = fleet(vec![host("a")]);
        let request = req("t")
            .with_rule(GroupRule::hard_anti_affinity("g"))
            .expect("rule");
        let p = placed(&f, &request);
        f.commit(&p).expect("first commit");
        assert_eq!(f.node("a").map(|n| n.allocated), Some(p.resources));
        assert!(matches!(
            f.commit(&p),
            Err(CommitError::AntiAffinityViolated { .. })
        ));
        f.release(&p).expect("release");
        assert_eq!(f.node("a").map(|n| n.allocated), Some(Resources::ZERO));
        assert!(f.node("a").is_some_and(|n| n.groups.is_empty()));
        assert!(matches!(
            f.release(&p),
            Err(CommitError::NotAllocated { .. })
        ));

        let big = Request::new("big", Resources::new(3000, GIB, 0, 0));
        let p1 = placed(&f, &big);
        f.commit(&p1).expect("fits once");
        let err = f.commit(&p1).expect_err("not twice");
        assert_eq!(
            err.to_string(),
            "host \"a\" has 1 CPU free of the 3 CPUs requested (cpu)"
        );
        f.set_state("a", NodeState::Draining).expect("known host");
        f.release(&p1).expect("release");
        assert_eq!(f.commit(&p1), Err(CommitError::NodeNotReady("a".into())));
        let mut gone = p1.clone();
        gone.node = "zz".into();
        assert_eq!(f.commit(&gone), Err(CommitError::UnknownNode("zz".into())));
    }

    #[test]
    fn answers_depend_on_the_snapshot_and_request_only() {
        let nodes: Vec<Node> = (0..500)
            .map(|i| host(&format!("h{i:03}")).with_label("zone", ["a", "b", "c"][i % 3]))
            .collect();
        let mut reversed = nodes.clone();
        reversed.reverse();
        let f1 = fleet(nodes);
        let f2 = fleet(reversed);
        for i in 0..50 {
            let r = req(&format!("t{i}"))
                .with_constraints(["zone!=b"])
                .expect("valid");
            assert_eq!(place(&f1, &r), place(&f2, &r));
        }
        let a = placed(&f1, &req("x").with_seed(1)).node;
        let spread: std::collections::BTreeSet<String> = (0..20)
            .map(|s| placed(&f1, &req("x").with_seed(s)).node)
            .collect();
        assert!(spread.len() > 10, "seeds spread ties: {spread:?}");
        assert_eq!(placed(&f1, &req("x").with_seed(1)).node, a);
    }
}
