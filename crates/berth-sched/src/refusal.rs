//! Explained refusals: why no host can take a request, host by host, in groups.
//!
//! Every host of the fleet is named in exactly one group, under the FIRST check it
//! fails in the order of `feasibility.rs` (state, constraints in listed order, hard
//! group rules in listed order, resources cpu → memory → disk → pids). Every reason
//! is true of every host it names. Display reads, for example:
//!
//! `2 hosts lack label gpu=true; 1 host has 200 MiB of the 512 MiB of memory
//! requested free; 1 host holds web_red (anti-affinity, group web); 1 host is drained`
//!
//! Groups are listed by host count (largest first), then in check order.

use crate::constraint::Constraint;
use crate::feasibility::{Prepared, Reject};
use crate::request::Request;
use crate::snapshot::Fleet;
use crate::ResourceKind;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::fmt;

/// Whether the request fits nowhere now, or nowhere ever.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefusalScope {
    /// No host can take it with today's load (`place`): it may wait.
    Now,
    /// No host could take it even empty (`can_ever_fit`): refuse it at queue time.
    Ever,
}

/// One reason, shared by a group of hosts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Reason {
    Down,
    Drained,
    /// The hosts fail this constraint.
    Constraint {
        constraint: Constraint,
    },
    /// The hosts hold these members of `group`, which the request must avoid.
    AntiAffinity {
        group: String,
        members: Vec<String>,
    },
    /// The hosts hold no member of `group`, which the request must join and which
    /// has members elsewhere.
    Affinity {
        group: String,
    },
    /// The hosts have less of `resource` free than requested; `most_free` is the
    /// largest amount free among them.
    Insufficient {
        resource: ResourceKind,
        requested: u64,
        most_free: u64,
    },
    /// Even empty, the hosts have less of `resource` than requested;
    /// `most_allocatable` is the largest among them.
    TooSmall {
        resource: ResourceKind,
        requested: u64,
        most_allocatable: u64,
    },
}

/// At most this many hosts are named per group (the first by name); `count` has
/// them all. A refusal travels into task records and API answers: naming all
/// 10,000 hosts of a fleet there would cost more than it tells.
pub const MAX_NAMED_HOSTS: usize = 32;

/// Hosts that share a reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefusalGroup {
    pub reason: Reason,
    /// How many hosts have this reason.
    pub count: usize,
    /// The first [`MAX_NAMED_HOSTS`] of them by name, ascending.
    pub hosts: Vec<String>,
}

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusal {
    pub request_id: String,
    pub scope: RefusalScope,
    /// Hosts in the fleet; each is counted in exactly one group.
    pub hosts: usize,
    pub groups: Vec<RefusalGroup>,
}

impl std::error::Error for Refusal {}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.groups.is_empty() {
            return f.write_str("no hosts in the fleet");
        }
        for (i, group) in self.groups.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{group}")?;
        }
        Ok(())
    }
}

impl fmt::Display for RefusalGroup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.count;
        let plural = n != 1;
        let pick = |one: &'static str, many: &'static str| if plural { many } else { one };
        write!(f, "{n} {} ", pick("host", "hosts"))?;
        match &self.reason {
            Reason::Down => f.write_str(pick("is down", "are down")),
            Reason::Drained => f.write_str(pick("is drained", "are drained")),
            Reason::Constraint { constraint } => f.write_str(&constraint.failure_phrase(plural)),
            Reason::AntiAffinity { group, members } => {
                const SHOWN: usize = 3;
                let mut list = members
                    .iter()
                    .take(SHOWN)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ");
                if members.len() > SHOWN {
                    list.push_str(&format!(" and {} more", members.len() - SHOWN));
                }
                write!(
                    f,
                    "{} {list} (anti-affinity, group {group})",
                    pick("holds", "hold")
                )
            }
            Reason::Affinity { group } => write!(
                f,
                "{} no member of group {group} (affinity)",
                pick("holds", "hold")
            ),
            Reason::Insufficient {
                resource,
                requested,
                most_free,
            } => write!(
                f,
                "{} {} of the {}{} requested free",
                pick("has", "have at most"),
                resource.format_amount(*most_free),
                resource.format_amount(*requested),
                of_what(*resource),
            ),
            Reason::TooSmall {
                resource,
                requested,
                most_allocatable,
            } => write!(
                f,
                "{} {}{} allocatable ({} requested)",
                pick("has only", "have at most"),
                resource.format_amount(*most_allocatable),
                of_what(*resource),
                resource.format_amount(*requested),
            ),
        }
    }
}

/// Units that do not say which resource they measure get it spelled out.
fn of_what(resource: ResourceKind) -> &'static str {
    match resource {
        ResourceKind::Memory => " of memory",
        ResourceKind::Disk => " of disk",
        ResourceKind::Cpu | ResourceKind::Pids => "",
    }
}

/// Groups hosts by reason; the order of the variants is the display order among
/// groups of equal size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum GroupKey {
    Constraint(usize),
    Resource(ResourceKind),
    AntiAffinity(usize),
    Affinity(usize),
    TooSmall(ResourceKind),
    Drained,
    Down,
}

/// One group being gathered.
struct Gathering {
    key: GroupKey,
    reason: Reason,
    count: usize,
    /// The first hosts (by index, which is by name).
    named: Vec<u32>,
    /// For anti-affinity: every member held by the group's hosts.
    members: BTreeSet<String>,
}

/// Hosts gathered by reason during an explanation pass. The few distinct keys are
/// searched linearly, starting with the last one used (neighbouring hosts tend to
/// share a reason); hosts are named once at the end.
#[derive(Default)]
struct Grouper {
    groups: Vec<Gathering>,
    last: usize,
}

impl Grouper {
    /// Counts `node` under `key`; returns the group so the caller can update its
    /// aggregate figure.
    fn add(&mut self, key: GroupKey, node: u32, reason: impl FnOnce() -> Reason) -> &mut Gathering {
        let at = if self.groups.get(self.last).is_some_and(|g| g.key == key) {
            self.last
        } else if let Some(at) = self.groups.iter().position(|g| g.key == key) {
            at
        } else {
            self.groups.push(Gathering {
                key,
                reason: reason(),
                count: 0,
                named: Vec::new(),
                members: BTreeSet::new(),
            });
            self.groups.len() - 1
        };
        self.last = at;
        let group = &mut self.groups[at];
        group.count += 1;
        if group.named.len() < MAX_NAMED_HOSTS {
            group.named.push(node);
        }
        group
    }

    fn finish(mut self, fleet: &Fleet, request: &Request, scope: RefusalScope) -> Refusal {
        self.groups
            .sort_by(|a, b| b.count.cmp(&a.count).then(a.key.cmp(&b.key)));
        let groups = self
            .groups
            .into_iter()
            .map(|mut g| {
                if let Reason::AntiAffinity { members, .. } = &mut g.reason {
                    *members = g.members.into_iter().collect();
                }
                RefusalGroup {
                    reason: g.reason,
                    count: g.count,
                    hosts: g
                        .named
                        .iter()
                        .map(|&n| fleet.nodes[n as usize].name.clone())
                        .collect(),
                }
            })
            .collect();
        Refusal {
            request_id: request.id().to_owned(),
            scope,
            hosts: fleet.len(),
            groups,
        }
    }
}

/// The first constraint a host fails, with label constraints decided once per class.
struct ConstraintCache<'p, 'a> {
    prepared: &'p Prepared<'a>,
    /// Per class: not yet computed / first failing label constraint (if any).
    by_class: Vec<Option<Option<usize>>>,
}

impl<'p, 'a> ConstraintCache<'p, 'a> {
    fn new(prepared: &'p Prepared<'a>) -> Self {
        ConstraintCache {
            prepared,
            by_class: vec![None; prepared.fleet.classes.len()],
        }
    }

    fn first_failed(&mut self, node: u32) -> Option<usize> {
        let fleet = self.prepared.fleet;
        let class = fleet.classes.class_of(node);
        let constraints = self.prepared.request.constraints();
        let label = *self.by_class[class as usize].get_or_insert_with(|| {
            let labels = fleet.classes.labels(class);
            constraints.iter().position(|c| {
                !c.is_node_name() && !c.matches_value(labels.get(c.key()).map(String::as_str))
            })
        });
        let name = &fleet.nodes[node as usize].name;
        let by_name = self
            .prepared
            .name_constraints
            .iter()
            .find(|(_, c)| !c.matches_value(Some(name)))
            .map(|(position, _)| *position);
        match (label, by_name) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// Explains why no host can take the request now, examining every host. Also
/// returns the hosts that CAN take it, which is empty unless the caller's search
/// missed some (a bug, which the caller recovers from).
pub(crate) fn explain_now(prepared: &Prepared<'_>) -> (Refusal, Vec<u32>) {
    let fleet = prepared.fleet;
    let request = prepared.request;
    let mut cache = ConstraintCache::new(prepared);
    let mut grouper = Grouper::default();
    let mut feasible = Vec::new();
    for node in 0..fleet.len() as u32 {
        match prepared.check(node) {
            Ok(_) => feasible.push(node),
            Err(Reject::Down) => {
                grouper.add(GroupKey::Down, node, || Reason::Down);
            }
            Err(Reject::Draining) => {
                grouper.add(GroupKey::Drained, node, || Reason::Drained);
            }
            Err(Reject::Labels | Reject::Name(_)) => match cache.first_failed(node) {
                Some(position) => {
                    grouper.add(GroupKey::Constraint(position), node, || {
                        Reason::Constraint {
                            constraint: request.constraints()[position].clone(),
                        }
                    });
                }
                // Cannot happen: the check found a failing constraint.
                None => feasible.push(node),
            },
            Err(Reject::AntiAffinity(index)) => {
                let group = &request.rules()[index].group;
                let gathering = grouper.add(GroupKey::AntiAffinity(index), node, || {
                    Reason::AntiAffinity {
                        group: group.clone(),
                        members: Vec::new(),
                    }
                });
                if let Some(held) = fleet.nodes[node as usize].groups.get(group) {
                    gathering.members.extend(held.iter().cloned());
                }
            }
            Err(Reject::Affinity(index)) => {
                grouper.add(GroupKey::Affinity(index), node, || Reason::Affinity {
                    group: request.rules()[index].group.clone(),
                });
            }
            Err(Reject::Resource(resource)) => {
                let free = fleet.hot[node as usize].free().get(resource);
                let gathering = grouper.add(GroupKey::Resource(resource), node, || {
                    Reason::Insufficient {
                        resource,
                        requested: request.resources().get(resource),
                        most_free: free,
                    }
                });
                if let Reason::Insufficient { most_free, .. } = &mut gathering.reason {
                    *most_free = (*most_free).max(free);
                }
            }
        }
    }
    (grouper.finish(fleet, request, RefusalScope::Now), feasible)
}

/// Explains why no host could ever take the request, whatever its load or state:
/// each host fails a constraint or is too small. `None` if some host could.
pub(crate) fn explain_never(prepared: &Prepared<'_>) -> Option<Refusal> {
    let fleet = prepared.fleet;
    let request = prepared.request;
    let mut cache = ConstraintCache::new(prepared);
    let mut grouper = Grouper::default();
    for node in 0..fleet.len() as u32 {
        let allocatable = &fleet.hot[node as usize].allocatable;
        if let Some(position) = cache.first_failed(node) {
            grouper.add(GroupKey::Constraint(position), node, || {
                Reason::Constraint {
                    constraint: request.constraints()[position].clone(),
                }
            });
        } else if let Some(resource) = request.resources().first_shortage(allocatable) {
            let here = allocatable.get(resource);
            let gathering = grouper.add(GroupKey::TooSmall(resource), node, || Reason::TooSmall {
                resource,
                requested: request.resources().get(resource),
                most_allocatable: here,
            });
            if let Reason::TooSmall {
                most_allocatable, ..
            } = &mut gathering.reason
            {
                *most_allocatable = (*most_allocatable).max(here);
            }
        } else {
            return None;
        }
    }
    Some(grouper.finish(fleet, request, RefusalScope::Ever))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::{Node, NodeState};
    use crate::Resources;

    #[test]
    fn the_issue_example_reads_as_written() {
        let mib = 1u64 << 20;
        let refusal = Refusal {
            request_id: "t".into(),
            scope: RefusalScope::Now,
            hosts: 5,
            groups: vec![
                RefusalGroup {
                    reason: Reason::Constraint {
                        constraint: Constraint::parse("gpu==true").expect("valid"),
                    },
                    count: 2,
                    hosts: vec!["a".into(), "b".into()],
                },
                RefusalGroup {
                    reason: Reason::Insufficient {
                        resource: ResourceKind::Memory,
                        requested: 512 * mib,
                        most_free: 200 * mib,
                    },
                    count: 1,
                    hosts: vec!["c".into()],
                },
                RefusalGroup {
                    reason: Reason::AntiAffinity {
                        group: "web".into(),
                        members: vec!["web_red".into()],
                    },
                    count: 1,
                    hosts: vec!["d".into()],
                },
                RefusalGroup {
                    reason: Reason::Drained,
                    count: 1,
                    hosts: vec!["e".into()],
                },
            ],
        };
        assert_eq!(
            refusal.to_string(),
            "2 hosts lack label gpu=true; 1 host has 200 MiB of the 512 MiB of memory requested free; \
             1 host holds web_red (anti-affinity, group web); 1 host is drained"
        );
    }

    #[test]
    fn plural_groups_report_the_most_available() {
        let group = RefusalGroup {
            reason: Reason::TooSmall {
                resource: ResourceKind::Cpu,
                requested: 8000,
                most_allocatable: 4000,
            },
            count: 2,
            hosts: vec!["a".into(), "b".into()],
        };
        assert_eq!(
            group.to_string(),
            "2 hosts have at most 4 CPUs allocatable (8 CPUs requested)"
        );
        let many = RefusalGroup {
            reason: Reason::AntiAffinity {
                group: "g".into(),
                members: ["a", "b", "c", "d"].map(String::from).to_vec(),
            },
            count: 2,
            hosts: vec!["h1".into(), "h2".into()],
        };
        assert_eq!(
            many.to_string(),
            "2 hosts hold a, b, c and 1 more (anti-affinity, group g)"
        );
    }

    #[test]
    fn refusals_serialise_as_structured_data() {
        let fleet = Fleet::new(vec![
            Node::new("a", Resources::new(1000, 0, 0, 0)).with_state(NodeState::Down)
        ])
        .expect("fleet");
        let request = Request::new("t", Resources::new(500, 0, 0, 0));
        let prepared = Prepared::new(&fleet, &request);
        let (refusal, feasible) = explain_now(&prepared);
        assert!(feasible.is_empty());
        let json = serde_json::to_value(&refusal).expect("serialize");
        assert_eq!(json["groups"][0]["reason"]["kind"], "down");
        assert_eq!(json["groups"][0]["hosts"][0], "a");
        assert_eq!(json["scope"], "now");
    }
}
