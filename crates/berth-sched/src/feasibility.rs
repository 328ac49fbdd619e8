//! Feasibility: can this host take this request at all? A host is feasible when
//!
//! 1. it is Ready (drained and down hosts take nothing new);
//! 2. its class passes every label constraint (decided once per class, `class.rs`);
//! 3. its name passes every `node` constraint;
//! 4. it keeps every hard group rule (`groups.rs`), and is not closed to any of the
//!    request's groups by a member placed there under hard anti-affinity;
//! 5. the request fits in what it has free: for every resource,
//!    requested ≤ allocatable − allocated. A host never gets more.
//!
//! The checks run in that order and the first that fails is the host's reason in a
//! refusal. A feasible host also gets its soft-rule mask (which soft rules it keeps).

use crate::class::{ClassSet, Population};
use crate::constraint::Constraint;
use crate::groups::{holds, soft_bit, GroupRule, Hardness};
use crate::request::Request;
use crate::snapshot::{Fleet, NodeState};
use crate::{Relation, ResourceKind};

/// A request's group rule resolved against the fleet's holder index.
#[derive(Debug)]
pub(crate) struct PreparedRule<'a> {
    /// Position in `Request::rules`.
    pub index: usize,
    pub rule: &'a GroupRule,
    /// Hosts holding members of the group: (host, count), ascending.
    pub holders: &'a [(u32, u32)],
    /// Hosts closed to the group (a member there was placed under hard
    /// anti-affinity), ascending.
    pub exclusive: &'a [u32],
    /// This rule's bit in the soft mask; 0 for a hard rule.
    pub bit: u64,
}

/// Why a host cannot take the request (the first failing check).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reject {
    Down,
    Draining,
    /// Its class fails a label constraint.
    Labels,
    /// It fails the host-name constraint at this position in `Request::constraints`.
    Name(usize),
    /// It holds a member of the group of the rule at this position, and either
    /// that rule is hard anti-affinity or the member there was placed under one.
    AntiAffinity(usize),
    /// It holds no member of the group of the rule at this position, which has
    /// members elsewhere.
    Affinity(usize),
    Resource(ResourceKind),
}

/// A request made ready to check hosts quickly.
#[derive(Debug)]
pub(crate) struct Prepared<'a> {
    pub fleet: &'a Fleet,
    pub request: &'a Request,
    /// The eligible classes; `None` when there is no label constraint.
    pub class_ok: Option<ClassSet>,
    /// Host-name constraints with their positions in `Request::constraints`.
    pub name_constraints: Vec<(usize, &'a Constraint)>,
    pub rules: Vec<PreparedRule<'a>>,
}

impl<'a> Prepared<'a> {
    pub fn new(fleet: &'a Fleet, request: &'a Request) -> Prepared<'a> {
        let soft_count = request.soft_rules().count();
        let mut soft_position = 0;
        let rules = request
            .rules()
            .iter()
            .enumerate()
            .map(|(index, rule)| {
                let bit = if rule.hardness == Hardness::Soft {
                    soft_position += 1;
                    soft_bit(soft_position - 1, soft_count)
                } else {
                    0
                };
                PreparedRule {
                    index,
                    rule,
                    holders: fleet.groups.holders_of(&rule.group),
                    exclusive: fleet.groups.exclusive_of(&rule.group),
                    bit,
                }
            })
            .collect();
        Prepared {
            fleet,
            request,
            class_ok: fleet.classes.eligible(request.constraints()),
            name_constraints: request
                .constraints()
                .iter()
                .enumerate()
                .filter(|(_, c)| c.is_node_name())
                .collect(),
            rules,
        }
    }

    /// Checks one host; on success returns the mask of the soft rules it keeps.
    #[inline]
    pub fn check(&self, node: u32) -> Result<u64, Reject> {
        let hot = &self.fleet.hot[node as usize];
        match hot.state {
            NodeState::Ready => {}
            NodeState::Draining => return Err(Reject::Draining),
            NodeState::Down => return Err(Reject::Down),
        }
        if let Some(classes) = &self.class_ok {
            if !classes.contains(hot.class) {
                return Err(Reject::Labels);
            }
        }
        for &(position, constraint) in &self.name_constraints {
            if !constraint.matches_value(Some(&self.fleet.nodes[node as usize].name)) {
                return Err(Reject::Name(position));
            }
        }
        let mut mask = 0;
        for rule in &self.rules {
            if !rule.exclusive.is_empty() && rule.exclusive.binary_search(&node).is_ok() {
                return Err(Reject::AntiAffinity(rule.index));
            }
            let held = holds(rule.holders, node);
            match (rule.rule.relation, rule.bit) {
                (Relation::AntiAffinity, 0) if held => {
                    return Err(Reject::AntiAffinity(rule.index));
                }
                (Relation::Affinity, 0) if !held && !rule.holders.is_empty() => {
                    return Err(Reject::Affinity(rule.index));
                }
                (_, 0) => {}
                (Relation::AntiAffinity, bit) => {
                    if !held {
                        mask |= bit;
                    }
                }
                (Relation::Affinity, bit) => {
                    if held || rule.holders.is_empty() {
                        mask |= bit;
                    }
                }
            }
        }
        if let Some(kind) = self.request.resources().first_shortage(&hot.free()) {
            return Err(Reject::Resource(kind));
        }
        Ok(mask)
    }

    /// The soft mask of a host that holds no member of any of the request's groups
    /// (almost every host): anti-affinity kept, affinity kept only for groups with
    /// no member placed yet.
    pub fn general_mask(&self) -> u64 {
        self.rules
            .iter()
            .filter(|r| match r.rule.relation {
                Relation::AntiAffinity => true,
                Relation::Affinity => r.holders.is_empty(),
            })
            .fold(0, |mask, r| mask | r.bit)
    }

    /// When a hard affinity rule's group has members, only their hosts can take the
    /// request: the holders of the group with the fewest.
    pub fn hard_affinity_anchor(&self) -> Option<&'a [(u32, u32)]> {
        self.rules
            .iter()
            .filter(|r| {
                r.bit == 0 && r.rule.relation == Relation::Affinity && !r.holders.is_empty()
            })
            .map(|r| r.holders)
            .min_by_key(|holders| holders.len())
    }

    /// Hosts that hold a member of a soft-affinity group: the only ones whose soft
    /// mask can beat [`Prepared::general_mask`]. Ascending, without duplicates.
    pub fn soft_affinity_holders(&self) -> Vec<u32> {
        let mut hosts: Vec<u32> = self
            .rules
            .iter()
            .filter(|r| r.bit != 0 && r.rule.relation == Relation::Affinity)
            .flat_map(|r| r.holders.iter().map(|h| h.0))
            .collect();
        hosts.sort_unstable();
        hosts.dedup();
        hosts
    }

    /// The hosts worth walking: those of the eligible classes, or the one host a
    /// `node==name` constraint names.
    pub fn population(&self) -> Population<'a> {
        if let Some((_, named)) = self
            .name_constraints
            .iter()
            .find(|(_, c)| c.is_literal_eq())
        {
            let host = self.fleet.by_name.get(named.value()).copied();
            return Population::List(host.into_iter().collect());
        }
        self.fleet.classes.population(self.class_ok.as_ref())
    }

    /// The position in `Request::constraints` of the first constraint this host
    /// fails, if any (the refusal pass does the same with a per-class cache).
    #[cfg(test)]
    pub fn first_failed_constraint(&self, node: u32) -> Option<usize> {
        let host = &self.fleet.nodes[node as usize];
        self.request
            .constraints()
            .iter()
            .position(|c| !c.matches(&host.name, &host.labels))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::groups::GroupRule;
    use crate::snapshot::Node;
    use crate::Resources;

    fn fleet() -> Fleet {
        let big = Resources::new(4000, 4 << 30, 10 << 30, 1000);
        Fleet::new(vec![
            Node::new("a", big).with_label("zone", "x"),
            Node::new("b", big)
                .with_label("zone", "y")
                .with_member("web", "web_red"),
            Node::new("c", big)
                .with_label("zone", "x")
                .with_state(NodeState::Draining),
            Node::new("d", big)
                .with_label("zone", "x")
                .with_state(NodeState::Down),
            Node::new("e", big)
                .with_label("zone", "x")
                .with_allocated(Resources::new(3800, 0, 0, 0)),
        ])
        .expect("valid fleet")
    }

    fn request() -> Request {
        Request::new("t", Resources::new(500, 1 << 30, 0, 10))
    }

    #[test]
    fn each_check_rejects_for_its_reason() {
        let fleet = fleet();
        let req = request();
        let p = Prepared::new(&fleet, &req);
        assert_eq!(p.check(0), Ok(0));
        assert_eq!(p.check(2), Err(Reject::Draining));
        assert_eq!(p.check(3), Err(Reject::Down));
        assert_eq!(p.check(4), Err(Reject::Resource(ResourceKind::Cpu)));

        let req = request().with_constraints(["zone==y"]).expect("valid");
        let p = Prepared::new(&fleet, &req);
        assert_eq!(p.check(0), Err(Reject::Labels));
        assert_eq!(p.check(1), Ok(0));

        let req = request()
            .with_constraints(["zone==x", "node!=a"])
            .expect("valid");
        let p = Prepared::new(&fleet, &req);
        assert_eq!(p.check(0), Err(Reject::Name(1)));
        assert_eq!(p.first_failed_constraint(0), Some(1));

        let req = request()
            .with_rule(GroupRule::hard_anti_affinity("web"))
            .expect("valid");
        let p = Prepared::new(&fleet, &req);
        assert_eq!(p.check(1), Err(Reject::AntiAffinity(0)));
        assert_eq!(p.check(0), Ok(0));

        let req = request()
            .with_rule(GroupRule::hard_affinity("web"))
            .expect("valid");
        let p = Prepared::new(&fleet, &req);
        assert_eq!(p.check(0), Err(Reject::Affinity(0)));
        assert_eq!(p.check(1), Ok(0));
        assert_eq!(p.hard_affinity_anchor(), Some(&[(1, 1)][..]));
    }

    #[test]
    fn hard_affinity_to_an_empty_group_allows_any_host() {
        let fleet = fleet();
        let req = request()
            .with_rule(GroupRule::hard_affinity("nobody-yet"))
            .expect("valid");
        let p = Prepared::new(&fleet, &req);
        assert_eq!(p.check(0), Ok(0));
        assert_eq!(p.hard_affinity_anchor(), None);
    }

    #[test]
    fn soft_masks_put_the_first_rule_highest() {
        let fleet = fleet();
        let req = request()
            .with_rule(GroupRule::soft_affinity("web"))
            .and_then(|r| r.with_rule(GroupRule::soft_anti_affinity("web2")))
            .expect("valid");
        let p = Prepared::new(&fleet, &req);
        // Host b holds web: keeps both rules. Host a keeps only the anti-affinity.
        assert_eq!(p.check(1), Ok(0b11));
        assert_eq!(p.check(0), Ok(0b01));
        assert_eq!(p.general_mask(), 0b01);
        assert_eq!(p.soft_affinity_holders(), vec![1]);
    }
}
