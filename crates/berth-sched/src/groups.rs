//! Group rules: anti-affinity (never two members of a group on one host) and
//! affinity (always together), each hard or soft.
//!
//! - A request with a rule on group G is a member of G: once committed, its host
//!   holds it, under the request's id.
//! - Hard anti-affinity: the host must hold no member of G. It is also a promise to
//!   the member that asked for it: its host is closed to G for as long as it stays,
//!   so no later member of G joins it, whatever that member's own rules (otherwise
//!   a member with a soft or no anti-affinity rule could land beside it). The host's
//!   [`Node::exclusive`](crate::Node::exclusive) records this.
//! - Hard affinity: if G has members anywhere in the fleet (on a host in any
//!   state), the host must hold at least one; if it has none yet, any host will do.
//! - Soft rules say the same but may be given up. They are given up ONE AT A TIME,
//!   in this documented order:
//!
//!   1. A host satisfying every soft rule is chosen if one exists.
//!   2. Otherwise the engine gives up as few soft rules as it must: a host breaking
//!      one rule is preferred to a host breaking two, and so on.
//!   3. Among hosts breaking the same number of rules, the rules listed first in the
//!      request are kept longest: the host whose broken rules are listed later wins
//!      (compare the rules in listed order; the first one that one host keeps and
//!      the other breaks decides).
//!
//!   Precisely: each feasible host gets a [`SoftKey`] `(kept count, kept mask)`,
//!   where the mask has one bit per soft rule, the first-listed rule in the highest
//!   bit; the engine always returns a host whose key is the maximum over ALL
//!   feasible hosts of the fleet (not just the sampled ones), and ranks only among
//!   hosts with that key. The placement reports which soft rules it gave up.
//!
//! Containers created through the agent API may take their group from their name,
//! the Docker multiplexer's convention `<group>_<member>`: see [`split_container_name`].

use crate::Relation;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// Whether a rule may be given up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Hardness {
    /// Never broken: a request no host can take with it is refused.
    Hard,
    /// Kept when some host allows it; given up one at a time otherwise.
    Soft,
}

/// A rule tying a request to the other members of a group.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct GroupRule {
    pub group: String,
    pub relation: Relation,
    pub hardness: Hardness,
}

impl GroupRule {
    pub fn new(group: impl Into<String>, relation: Relation, hardness: Hardness) -> Self {
        GroupRule {
            group: group.into(),
            relation,
            hardness,
        }
    }

    pub fn hard_anti_affinity(group: impl Into<String>) -> Self {
        GroupRule::new(group, Relation::AntiAffinity, Hardness::Hard)
    }

    pub fn soft_anti_affinity(group: impl Into<String>) -> Self {
        GroupRule::new(group, Relation::AntiAffinity, Hardness::Soft)
    }

    pub fn hard_affinity(group: impl Into<String>) -> Self {
        GroupRule::new(group, Relation::Affinity, Hardness::Hard)
    }

    pub fn soft_affinity(group: impl Into<String>) -> Self {
        GroupRule::new(group, Relation::Affinity, Hardness::Soft)
    }

    pub fn is_hard(&self) -> bool {
        self.hardness == Hardness::Hard
    }

    /// The rule for a container named `<group>_<member>`, with the relation and
    /// hardness the caller chose (the name carries only the group). `None` when the
    /// name does not follow the convention. The request's id should then be the
    /// whole container name, which is what refusals show (`holds web_red`).
    pub fn from_container_name(
        name: &str,
        relation: Relation,
        hardness: Hardness,
    ) -> Option<GroupRule> {
        split_container_name(name).map(|(group, _)| GroupRule::new(group, relation, hardness))
    }
}

/// Splits a container name of the form `<group>_<member>` at its FIRST underscore:
/// `web_red` → (`web`, `red`), `web_red_2` → (`web`, `red_2`). Group names therefore
/// cannot contain `_`. `None` when there is no underscore or either side is empty.
pub fn split_container_name(name: &str) -> Option<(&str, &str)> {
    let (group, member) = name.split_once('_')?;
    if group.is_empty() || member.is_empty() {
        return None;
    }
    Some((group, member))
}

/// How well a host keeps the soft rules: compared as `(count, mask)`, greater is
/// better (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SoftKey {
    pub kept: u32,
    pub mask: u64,
}

impl SoftKey {
    pub fn from_mask(mask: u64) -> Self {
        SoftKey {
            kept: mask.count_ones(),
            mask,
        }
    }
}

/// The bit of the `position`-th soft rule (0 = first listed) among `count`.
pub(crate) fn soft_bit(position: usize, count: usize) -> u64 {
    1u64 << (count - 1 - position)
}

/// Group → which hosts hold how many of its members, and which hosts hold a member
/// placed under hard anti-affinity (closed to the rest of the group).
#[derive(Debug, Clone, Default)]
pub(crate) struct GroupIndex {
    ids: HashMap<String, u32>,
    /// Per group: (host index, members held), ascending by host.
    holders: Vec<Vec<(u32, u32)>>,
    /// Per group: hosts closed to new members, ascending.
    exclusive: Vec<Vec<u32>>,
}

static NO_HOLDERS: Vec<(u32, u32)> = Vec::new();

impl GroupIndex {
    pub fn holders_of(&self, group: &str) -> &[(u32, u32)] {
        match self.ids.get(group) {
            Some(&id) => &self.holders[id as usize],
            None => &NO_HOLDERS,
        }
    }

    /// Hosts that hold a member of `group` placed under hard anti-affinity.
    pub fn exclusive_of(&self, group: &str) -> &[u32] {
        match self.ids.get(group) {
            Some(&id) => &self.exclusive[id as usize],
            None => &[],
        }
    }

    fn id(&mut self, group: &str) -> u32 {
        match self.ids.get(group) {
            Some(&id) => id,
            None => {
                let id = self.holders.len() as u32;
                self.ids.insert(group.to_owned(), id);
                self.holders.push(Vec::new());
                self.exclusive.push(Vec::new());
                id
            }
        }
    }

    pub fn set_exclusive(&mut self, group: &str, node: u32) {
        let id = self.id(group);
        let hosts = &mut self.exclusive[id as usize];
        if let Err(at) = hosts.binary_search(&node) {
            hosts.insert(at, node);
        }
    }

    pub fn clear_exclusive(&mut self, group: &str, node: u32) {
        let Some(&id) = self.ids.get(group) else {
            return;
        };
        let hosts = &mut self.exclusive[id as usize];
        if let Ok(at) = hosts.binary_search(&node) {
            hosts.remove(at);
        }
    }

    pub fn add(&mut self, group: &str, node: u32) {
        let id = self.id(group);
        let holders = &mut self.holders[id as usize];
        match holders.binary_search_by_key(&node, |h| h.0) {
            Ok(at) => holders[at].1 += 1,
            Err(at) => holders.insert(at, (node, 1)),
        }
    }

    pub fn remove(&mut self, group: &str, node: u32) {
        let Some(&id) = self.ids.get(group) else {
            return;
        };
        let holders = &mut self.holders[id as usize];
        if let Ok(at) = holders.binary_search_by_key(&node, |h| h.0) {
            holders[at].1 -= 1;
            if holders[at].1 == 0 {
                holders.remove(at);
            }
        }
    }
}

/// Whether `node` holds a member, given a group's holder list.
#[inline]
pub(crate) fn holds(holders: &[(u32, u32)], node: u32) -> bool {
    holders.binary_search_by_key(&node, |h| h.0).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_names_split_at_the_first_underscore() {
        assert_eq!(split_container_name("web_red"), Some(("web", "red")));
        assert_eq!(split_container_name("web_red_2"), Some(("web", "red_2")));
        assert_eq!(split_container_name("web"), None);
        assert_eq!(split_container_name("_red"), None);
        assert_eq!(split_container_name("web_"), None);
        let rule = GroupRule::from_container_name("db_a", Relation::Affinity, Hardness::Soft)
            .expect("follows the convention");
        assert_eq!(rule, GroupRule::soft_affinity("db"));
    }

    #[test]
    fn soft_keys_prefer_fewer_broken_rules_then_earlier_rules() {
        // Three rules; bit 2 = first listed.
        let all = SoftKey::from_mask(0b111);
        let broke_last = SoftKey::from_mask(0b110);
        let broke_first = SoftKey::from_mask(0b011);
        let kept_first_only = SoftKey::from_mask(0b100);
        assert!(all > broke_last);
        assert!(broke_last > broke_first);
        assert!(
            broke_first > kept_first_only,
            "fewer rules broken wins first"
        );
        assert_eq!(soft_bit(0, 3), 0b100);
        assert_eq!(soft_bit(2, 3), 0b001);
    }

    #[test]
    fn holder_index_counts_members_per_host() {
        let mut index = GroupIndex::default();
        index.add("g", 5);
        index.add("g", 2);
        index.add("g", 5);
        assert_eq!(index.holders_of("g"), &[(2, 1), (5, 2)]);
        index.remove("g", 5);
        assert!(holds(index.holders_of("g"), 5));
        index.remove("g", 5);
        assert!(!holds(index.holders_of("g"), 5));
        assert!(index.holders_of("unknown").is_empty());
        index.remove("unknown", 1);
        index.set_exclusive("g", 7);
        index.set_exclusive("g", 7);
        index.set_exclusive("g", 3);
        assert_eq!(index.exclusive_of("g"), &[3, 7]);
        index.clear_exclusive("g", 7);
        assert_eq!(index.exclusive_of("g"), &[3]);
        assert!(index.exclusive_of("unknown").is_empty());
    }
}
