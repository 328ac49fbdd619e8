//! The fleet snapshot: hosts, what they can give, what they already hold, and the
//! indexes the engine searches (classes, group holders, image holders, names).
//!
//! A [`Fleet`] is built once from [`Node`]s (the server reads them from the store)
//! and then changed only through [`Fleet::commit`] / [`Fleet::release`] /
//! [`Fleet::set_state`], which keep every index in step, so a batch of placements
//! sees each other's reservations.

use crate::class::ClassIndex;
use crate::groups::GroupIndex;
use crate::place::Placement;
use crate::{Relation, ResourceKind, Resources};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// Whether a host takes new work.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeState {
    /// Takes new work.
    #[default]
    Ready,
    /// Finishes what it runs, gets nothing new.
    Draining,
    /// Missed its heartbeats; gets nothing new.
    Down,
}

/// One host as the control plane knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    /// Unique in the fleet; constraints reach it through the reserved key `node`.
    pub name: String,
    #[serde(default)]
    pub state: NodeState,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// What the host offers to tasks (its capacity less a system reserve).
    pub allocatable: Resources,
    /// What reservations already hold. May exceed `allocatable` if the host's
    /// allocatable shrank; the host then has nothing free.
    #[serde(default)]
    pub allocated: Resources,
    /// Image references present on the host.
    #[serde(default)]
    pub images: BTreeSet<String>,
    /// Group name → the members of that group the host holds.
    #[serde(default)]
    pub groups: BTreeMap<String, Vec<String>>,
    /// Groups whose member on this host was placed under hard anti-affinity: no
    /// other member of those groups may join the host.
    #[serde(default)]
    pub exclusive: BTreeSet<String>,
}

impl Node {
    pub fn new(name: impl Into<String>, allocatable: Resources) -> Self {
        Node {
            name: name.into(),
            state: NodeState::Ready,
            labels: BTreeMap::new(),
            allocatable,
            allocated: Resources::ZERO,
            images: BTreeSet::new(),
            groups: BTreeMap::new(),
            exclusive: BTreeSet::new(),
        }
    }

    pub fn with_state(mut self, state: NodeState) -> Self {
        self.state = state;
        self
    }

    pub fn with_label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.labels.insert(key.into(), value.into());
        self
    }

    pub fn with_allocated(mut self, allocated: Resources) -> Self {
        self.allocated = allocated;
        self
    }

    pub fn with_image(mut self, image: impl Into<String>) -> Self {
        self.images.insert(image.into());
        self
    }

    pub fn with_member(mut self, group: impl Into<String>, member: impl Into<String>) -> Self {
        self.groups
            .entry(group.into())
            .or_default()
            .push(member.into());
        self
    }

    /// Adds a member placed under hard anti-affinity: the host is closed to the
    /// rest of its group.
    pub fn with_exclusive_member(
        self,
        group: impl Into<String>,
        member: impl Into<String>,
    ) -> Self {
        let group = group.into();
        let mut node = self.with_member(group.clone(), member);
        node.exclusive.insert(group);
        node
    }

    /// What is left to give: allocatable − allocated, never negative.
    pub fn free(&self) -> Resources {
        self.allocatable.saturating_sub(&self.allocated)
    }
}

/// A snapshot that cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    #[error("two hosts are named {0:?}; host names must be unique")]
    DuplicateNode(String),
    #[error("a host has an empty name")]
    EmptyName,
    #[error("host {node:?} has a label named \"node\"; that key is reserved for host names in constraints")]
    ReservedLabel { node: String },
    #[error("the fleet has more than {max} hosts", max = u32::MAX)]
    TooManyNodes,
    #[error("host {node:?} is marked exclusive for group {group:?} but holds no member of it")]
    ExclusiveWithoutMember { node: String, group: String },
}

/// Why a commit, release or state change was refused. Nothing is changed when one
/// of these is returned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommitError {
    #[error("no host named {0:?} in the fleet")]
    UnknownNode(String),
    #[error("host {0:?} takes no new work (drained or down)")]
    NodeNotReady(String),
    #[error("host {node:?} has {free} free of the {requested} requested ({resource})")]
    WouldOvercommit {
        node: String,
        resource: ResourceKind,
        requested: String,
        free: String,
    },
    #[error("host {node:?} already holds {member:?} of group {group:?} (anti-affinity)")]
    AntiAffinityViolated {
        node: String,
        group: String,
        member: String,
    },
    #[error("host {node:?} holds no member of group {group:?}, which has members elsewhere (hard affinity)")]
    AffinityViolated { node: String, group: String },
    #[error("host {node:?} does not hold {resources:?} for {request_id:?}; nothing to release")]
    NotAllocated {
        node: String,
        request_id: String,
        resources: Resources,
    },
}

/// The per-host figures every placement touches, kept apart from [`Node`]'s maps so
/// a scan stays within a few cache lines per host.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Hot {
    pub allocatable: Resources,
    pub allocated: Resources,
    pub state: NodeState,
    pub class: u32,
}

impl Hot {
    pub fn free(&self) -> Resources {
        self.allocatable.saturating_sub(&self.allocated)
    }
}

/// The fleet snapshot the engine places against. Hosts are kept sorted by name, so
/// two snapshots of the same hosts are identical whatever order they were read in.
#[derive(Debug, Clone)]
pub struct Fleet {
    pub(crate) nodes: Vec<Node>,
    pub(crate) hot: Vec<Hot>,
    pub(crate) by_name: HashMap<String, u32>,
    pub(crate) classes: ClassIndex,
    pub(crate) groups: GroupIndex,
    /// Image → indexes of the hosts holding it, ascending.
    pub(crate) images: HashMap<String, Vec<u32>>,
}

impl Fleet {
    pub fn new(mut nodes: Vec<Node>) -> Result<Fleet, SnapshotError> {
        if u32::try_from(nodes.len()).is_err() {
            return Err(SnapshotError::TooManyNodes);
        }
        nodes.sort_by(|a, b| a.name.cmp(&b.name));
        let mut by_name = HashMap::with_capacity(nodes.len());
        for (index, node) in nodes.iter().enumerate() {
            if node.name.is_empty() {
                return Err(SnapshotError::EmptyName);
            }
            if node.labels.contains_key(crate::constraint::NODE_KEY) {
                return Err(SnapshotError::ReservedLabel {
                    node: node.name.clone(),
                });
            }
            if let Some(group) = node
                .exclusive
                .iter()
                .find(|g| node.groups.get(*g).is_none_or(|m| m.is_empty()))
            {
                return Err(SnapshotError::ExclusiveWithoutMember {
                    node: node.name.clone(),
                    group: group.clone(),
                });
            }
            if by_name.insert(node.name.clone(), index as u32).is_some() {
                return Err(SnapshotError::DuplicateNode(node.name.clone()));
            }
        }
        let classes = ClassIndex::build(&nodes);
        let hot = nodes
            .iter()
            .enumerate()
            .map(|(index, node)| Hot {
                allocatable: node.allocatable,
                allocated: node.allocated,
                state: node.state,
                class: classes.class_of(index as u32),
            })
            .collect();
        let mut groups = GroupIndex::default();
        let mut images: HashMap<String, Vec<u32>> = HashMap::new();
        for (index, node) in nodes.iter().enumerate() {
            for (group, members) in &node.groups {
                for _ in members {
                    groups.add(group, index as u32);
                }
            }
            for group in &node.exclusive {
                groups.set_exclusive(group, index as u32);
            }
            for image in &node.images {
                // Indexes ascend because hosts are visited in order.
                images.entry(image.clone()).or_default().push(index as u32);
            }
        }
        Ok(Fleet {
            nodes,
            hot,
            by_name,
            classes,
            groups,
            images,
        })
    }

    /// Every host, sorted by name.
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    pub fn node(&self, name: &str) -> Option<&Node> {
        self.by_name.get(name).map(|&i| &self.nodes[i as usize])
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// How many distinct label sets ("classes") the hosts have.
    pub fn class_count(&self) -> usize {
        self.classes.len()
    }

    /// The sum of the allocatable resources of the hosts that take work: the
    /// denominator of the pools' shares.
    pub fn allocatable_total(&self) -> Resources {
        self.hot
            .iter()
            .filter(|h| h.state == NodeState::Ready)
            .fold(Resources::ZERO, |sum, h| sum.saturating_add(&h.allocatable))
    }

    /// Changes a host's state (drain, undrain, mark down).
    pub fn set_state(&mut self, name: &str, state: NodeState) -> Result<(), CommitError> {
        let index = self.index_of(name)?;
        self.nodes[index].state = state;
        self.hot[index].state = state;
        Ok(())
    }

    fn index_of(&self, name: &str) -> Result<usize, CommitError> {
        self.by_name
            .get(name)
            .map(|&i| i as usize)
            .ok_or_else(|| CommitError::UnknownNode(name.to_owned()))
    }

    /// Records a placement: its resources are reserved on its host and it joins its
    /// groups there. Checks again everything that could have changed since the
    /// placement was computed (host state, free resources, hard group rules), so the
    /// fleet is never overcommitted nor a hard rule broken, whatever the caller does.
    pub fn commit(&mut self, placement: &Placement) -> Result<(), CommitError> {
        let index = self.index_of(&placement.node)?;
        let hot = &self.hot[index];
        if hot.state != NodeState::Ready {
            return Err(CommitError::NodeNotReady(placement.node.clone()));
        }
        let free = hot.free();
        if let Some(resource) = placement.resources.first_shortage(&free) {
            return Err(CommitError::WouldOvercommit {
                node: placement.node.clone(),
                resource,
                requested: resource.format_amount(placement.resources.get(resource)),
                free: resource.format_amount(free.get(resource)),
            });
        }
        for rule in &placement.rules {
            let holders = self.groups.holders_of(&rule.group);
            let holds = crate::groups::holds(holders, index as u32);
            let closed = self
                .groups
                .exclusive_of(&rule.group)
                .binary_search(&(index as u32))
                .is_ok();
            let hard = rule.is_hard();
            let violated_anti =
                closed || (hard && rule.relation == Relation::AntiAffinity && holds);
            if violated_anti {
                let member = self.nodes[index]
                    .groups
                    .get(&rule.group)
                    .and_then(|m| m.first())
                    .cloned()
                    .unwrap_or_default();
                return Err(CommitError::AntiAffinityViolated {
                    node: placement.node.clone(),
                    group: rule.group.clone(),
                    member,
                });
            }
            if hard && rule.relation == Relation::Affinity && !holders.is_empty() && !holds {
                return Err(CommitError::AffinityViolated {
                    node: placement.node.clone(),
                    group: rule.group.clone(),
                });
            }
        }
        // Checked above: allocated + resources ≤ allocatable, so no overflow.
        let allocated = self.hot[index]
            .allocated
            .saturating_add(&placement.resources);
        self.hot[index].allocated = allocated;
        let node = &mut self.nodes[index];
        node.allocated = allocated;
        for rule in &placement.rules {
            node.groups
                .entry(rule.group.clone())
                .or_default()
                .push(placement.request_id.clone());
            self.groups.add(&rule.group, index as u32);
            if rule.is_hard() && rule.relation == Relation::AntiAffinity {
                node.exclusive.insert(rule.group.clone());
                self.groups.set_exclusive(&rule.group, index as u32);
            }
        }
        Ok(())
    }

    /// Undoes [`Fleet::commit`] for a placement that ended: frees its resources and
    /// removes it from its groups. Refused (and nothing changed) if the host does not
    /// hold it.
    pub fn release(&mut self, placement: &Placement) -> Result<(), CommitError> {
        let index = self.index_of(&placement.node)?;
        let not_allocated = || CommitError::NotAllocated {
            node: placement.node.clone(),
            request_id: placement.request_id.clone(),
            resources: placement.resources,
        };
        let allocated = self.hot[index]
            .allocated
            .checked_sub(&placement.resources)
            .ok_or_else(not_allocated)?;
        let node = &mut self.nodes[index];
        // Each rule added one membership; a request may not name a group twice, so
        // one occurrence per rule must be present.
        for rule in &placement.rules {
            let present = node
                .groups
                .get(&rule.group)
                .is_some_and(|members| members.contains(&placement.request_id));
            if !present {
                return Err(not_allocated());
            }
        }
        for rule in &placement.rules {
            if let Some(members) = node.groups.get_mut(&rule.group) {
                if let Some(at) = members.iter().position(|m| *m == placement.request_id) {
                    members.remove(at);
                }
                if members.is_empty() {
                    node.groups.remove(&rule.group);
                }
            }
            self.groups.remove(&rule.group, index as u32);
            if rule.is_hard() && rule.relation == Relation::AntiAffinity {
                node.exclusive.remove(&rule.group);
                self.groups.clear_exclusive(&rule.group, index as u32);
            }
        }
        node.allocated = allocated;
        self.hot[index].allocated = allocated;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_is_canonical_and_rejects_bad_hosts() {
        let a = Node::new("b", Resources::ZERO);
        let b = Node::new("a", Resources::ZERO);
        let fleet = Fleet::new(vec![a.clone(), b.clone()]).expect("valid fleet");
        assert_eq!(fleet.nodes()[0].name, "a");
        assert_eq!(
            Fleet::new(vec![a.clone(), a.clone()]).err(),
            Some(SnapshotError::DuplicateNode("b".into()))
        );
        assert_eq!(
            Fleet::new(vec![Node::new("", Resources::ZERO)]).err(),
            Some(SnapshotError::EmptyName)
        );
        assert!(matches!(
            Fleet::new(vec![b.clone().with_label("node", "x")]),
            Err(SnapshotError::ReservedLabel { .. })
        ));
        let mut closed_to_nobody = b;
        closed_to_nobody.exclusive.insert("web".into());
        assert_eq!(
            Fleet::new(vec![closed_to_nobody]).err(),
            Some(SnapshotError::ExclusiveWithoutMember {
                node: "a".into(),
                group: "web".into()
            })
        );
    }

    #[test]
    fn allocated_beyond_allocatable_leaves_nothing_free() {
        let node = Node::new("a", Resources::new(1000, 10, 0, 0))
            .with_allocated(Resources::new(2000, 5, 0, 0));
        assert_eq!(node.free(), Resources::new(0, 5, 0, 0));
    }

    #[test]
    fn state_changes_reach_unknown_hosts_as_errors() {
        let mut fleet = Fleet::new(vec![Node::new("a", Resources::ZERO)]).expect("fleet");
        fleet
            .set_state("a", NodeState::Draining)
            .expect("known host");
        assert_eq!(fleet.nodes()[0].state, NodeState::Draining);
        assert_eq!(
            fleet.set_state("zz", NodeState::Ready),
            Err(CommitError::UnknownNode("zz".into()))
        );
    }
}
