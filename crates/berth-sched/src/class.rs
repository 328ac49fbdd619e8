//! Host classes: hosts with identical label sets share a class, so a request's
//! label constraints are decided once per class, never once per host.
//!
//! Nomad caches a class's verdict the first time one of its hosts is visited; berth
//! goes one step further and never visits a host whose class fails. A per-label
//! index (label key → value → set of classes) decides every class at once per
//! constraint, and the hosts of the eligible classes form the population the
//! sampler walks (`sample.rs`). Host-name constraints (`node==…`) cannot be decided
//! per class (names are unique); they are checked per host, as Nomad's "escaped"
//! constraints are.

use crate::constraint::Constraint;
use crate::snapshot::Node;
use std::collections::{BTreeMap, HashMap};

/// A set of classes, one bit each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ClassSet {
    words: Vec<u64>,
}

impl ClassSet {
    pub fn empty(classes: usize) -> Self {
        ClassSet {
            words: vec![0; classes.div_ceil(64)],
        }
    }

    pub fn full(classes: usize) -> Self {
        let mut set = ClassSet {
            words: vec![u64::MAX; classes.div_ceil(64)],
        };
        let spare = set.words.len() * 64 - classes;
        if spare > 0 {
            if let Some(last) = set.words.last_mut() {
                *last >>= spare;
            }
        }
        set
    }

    pub fn insert(&mut self, class: u32) {
        self.words[class as usize / 64] |= 1 << (class % 64);
    }

    #[inline]
    pub fn contains(&self, class: u32) -> bool {
        self.words[class as usize / 64] & (1 << (class % 64)) != 0
    }

    pub fn union_with(&mut self, other: &ClassSet) {
        for (a, b) in self.words.iter_mut().zip(&other.words) {
            *a |= b;
        }
    }

    pub fn intersect_with(&mut self, other: &ClassSet) {
        for (a, b) in self.words.iter_mut().zip(&other.words) {
            *a &= b;
        }
    }

    /// Complement within `classes` classes.
    pub fn complement(&self, classes: usize) -> ClassSet {
        let mut full = ClassSet::full(classes);
        for (a, b) in full.words.iter_mut().zip(&self.words) {
            *a &= !b;
        }
        full
    }

    pub fn count(&self) -> usize {
        self.words.iter().map(|w| w.count_ones() as usize).sum()
    }

    /// Member classes in ascending order.
    pub fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        self.words.iter().enumerate().flat_map(|(i, &word)| {
            let mut rest = word;
            std::iter::from_fn(move || {
                if rest == 0 {
                    return None;
                }
                let bit = rest.trailing_zeros();
                rest &= rest - 1;
                Some(i as u32 * 64 + bit)
            })
        })
    }
}

#[derive(Debug, Clone)]
struct Class {
    labels: BTreeMap<String, String>,
    /// Where this class's hosts sit in `ClassIndex::by_class`.
    start: u32,
    len: u32,
}

/// For one label key: which classes carry each value.
#[derive(Debug, Clone)]
struct KeyIndex {
    values: Vec<(String, ClassSet)>,
}

#[derive(Debug, Clone)]
pub(crate) struct ClassIndex {
    class_of: Vec<u32>,
    classes: Vec<Class>,
    /// Host indexes grouped by class (class 0's hosts first), ascending within a class.
    by_class: Vec<u32>,
    keys: HashMap<String, KeyIndex>,
}

impl ClassIndex {
    pub fn build(nodes: &[Node]) -> ClassIndex {
        let mut ids: HashMap<&BTreeMap<String, String>, u32> = HashMap::new();
        let mut class_of = Vec::with_capacity(nodes.len());
        let mut members: Vec<Vec<u32>> = Vec::new();
        for (index, node) in nodes.iter().enumerate() {
            let next = ids.len() as u32;
            let class = *ids.entry(&node.labels).or_insert(next);
            if class == next {
                members.push(Vec::new());
            }
            members[class as usize].push(index as u32);
            class_of.push(class);
        }
        let count = members.len();
        let mut classes = Vec::with_capacity(count);
        let mut by_class = Vec::with_capacity(nodes.len());
        let mut keys: HashMap<String, BTreeMap<String, ClassSet>> = HashMap::new();
        for (class, hosts) in members.iter().enumerate() {
            let labels = nodes[hosts[0] as usize].labels.clone();
            for (key, value) in &labels {
                keys.entry(key.clone())
                    .or_default()
                    .entry(value.clone())
                    .or_insert_with(|| ClassSet::empty(count))
                    .insert(class as u32);
            }
            classes.push(Class {
                labels,
                start: by_class.len() as u32,
                len: hosts.len() as u32,
            });
            by_class.extend_from_slice(hosts);
        }
        let keys = keys
            .into_iter()
            .map(|(key, values)| {
                (
                    key,
                    KeyIndex {
                        values: values.into_iter().collect(),
                    },
                )
            })
            .collect();
        ClassIndex {
            class_of,
            classes,
            by_class,
            keys,
        }
    }

    pub fn len(&self) -> usize {
        self.classes.len()
    }

    #[inline]
    pub fn class_of(&self, node: u32) -> u32 {
        self.class_of[node as usize]
    }

    pub fn labels(&self, class: u32) -> &BTreeMap<String, String> {
        &self.classes[class as usize].labels
    }

    /// The classes whose labels satisfy every label constraint (host-name
    /// constraints are ignored here). `None` when there is no label constraint:
    /// every class is eligible.
    pub fn eligible(&self, constraints: &[Constraint]) -> Option<ClassSet> {
        let count = self.classes.len();
        let mut result: Option<ClassSet> = None;
        for constraint in constraints.iter().filter(|c| !c.is_node_name()) {
            // Classes whose value for the key matches the positive form.
            let mut positive = ClassSet::empty(count);
            if let Some(index) = self.keys.get(constraint.key()) {
                if constraint.is_literal() {
                    if let Ok(at) = index
                        .values
                        .binary_search_by(|(v, _)| v.as_str().cmp(constraint.value()))
                    {
                        positive = index.values[at].1.clone();
                    }
                } else {
                    for (value, set) in &index.values {
                        // matches_value is the negated form for != and !~; flip it back.
                        let holds = constraint.matches_value(Some(value));
                        if holds != constraint.op().is_negated() {
                            positive.union_with(set);
                        }
                    }
                }
            }
            let allowed = if constraint.op().is_negated() {
                positive.complement(count)
            } else {
                positive
            };
            match &mut result {
                None => result = Some(allowed),
                Some(set) => set.intersect_with(&allowed),
            }
        }
        result
    }

    /// The hosts of the given classes, as a population the sampler can index.
    pub fn population(&self, eligible: Option<&ClassSet>) -> Population<'_> {
        let Some(set) = eligible else {
            return Population::All(&self.by_class);
        };
        let mut ranges = Vec::with_capacity(set.count());
        let mut total = 0u32;
        for class in set.iter() {
            let class = &self.classes[class as usize];
            total += class.len;
            ranges.push((class.start, total));
        }
        Population::Ranges {
            by_class: &self.by_class,
            ranges,
            total,
        }
    }
}

/// Hosts the sampler may visit, addressable by position `0..len()`.
#[derive(Debug)]
pub(crate) enum Population<'a> {
    /// Every host, grouped by class.
    All(&'a [u32]),
    /// The hosts of some classes: (start in `by_class`, cumulative end position).
    Ranges {
        by_class: &'a [u32],
        ranges: Vec<(u32, u32)>,
        total: u32,
    },
    /// An explicit list.
    List(Vec<u32>),
}

impl Population<'_> {
    pub fn len(&self) -> usize {
        match self {
            Population::All(hosts) => hosts.len(),
            Population::Ranges { total, .. } => *total as usize,
            Population::List(hosts) => hosts.len(),
        }
    }

    /// The host at `position` (< `len()`).
    #[inline]
    pub fn get(&self, position: usize) -> u32 {
        match self {
            Population::All(hosts) => hosts[position],
            Population::Ranges {
                by_class, ranges, ..
            } => {
                let position = position as u32;
                // First range whose cumulative end lies beyond the position.
                let at = ranges.partition_point(|&(_, end)| end <= position);
                let (start, end) = ranges[at];
                let before = if at == 0 { 0 } else { ranges[at - 1].1 };
                debug_assert!(position < end);
                by_class[(start + position - before) as usize]
            }
            Population::List(hosts) => hosts[position],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Resources;

    fn node(name: &str, labels: &[(&str, &str)]) -> Node {
        labels
            .iter()
            .fold(Node::new(name, Resources::ZERO), |n, (k, v)| {
                n.with_label(*k, *v)
            })
    }

    fn constraints(texts: &[&str]) -> Vec<Constraint> {
        texts
            .iter()
            .map(|t| Constraint::parse(t).expect("valid"))
            .collect()
    }

    fn hosts(index: &ClassIndex, cs: &[Constraint]) -> Vec<u32> {
        let eligible = index.eligible(cs);
        let population = index.population(eligible.as_ref());
        let mut out: Vec<u32> = (0..population.len()).map(|p| population.get(p)).collect();
        out.sort();
        out
    }

    #[test]
    fn identical_label_sets_share_a_class() {
        let nodes = vec![
            node("a", &[("zone", "x")]),
            node("b", &[("zone", "y")]),
            node("c", &[("zone", "x")]),
            node("d", &[]),
        ];
        let index = ClassIndex::build(&nodes);
        assert_eq!(index.len(), 3);
        assert_eq!(index.class_of(0), index.class_of(2));
        assert_ne!(index.class_of(0), index.class_of(1));
    }

    #[test]
    fn eligibility_by_index_agrees_with_direct_evaluation() {
        let zones = ["a", "b", "c", "eu-1", "eu-2"];
        let nodes: Vec<Node> = (0..40)
            .map(|i| {
                let mut labels = vec![("zone", zones[i % zones.len()])];
                if i % 3 == 0 {
                    labels.push(("gpu", "true"));
                }
                node(&format!("h{i:02}"), &labels)
            })
            .collect();
        let index = ClassIndex::build(&nodes);
        for text in [
            "zone==a",
            "zone!=a",
            "zone==eu-*",
            "zone!=eu-*",
            "zone=~a|b",
            "zone!~a|b",
            "gpu==true",
            "gpu!=true",
            "missing==x",
            "missing!=x",
            "node==h01",
        ] {
            let cs = constraints(&[text]);
            let expected: Vec<u32> = (0..nodes.len() as u32)
                .filter(|&i| {
                    let n = &nodes[i as usize];
                    cs.iter()
                        .filter(|c| !c.is_node_name())
                        .all(|c| c.matches(&n.name, &n.labels))
                })
                .collect();
            assert_eq!(hosts(&index, &cs), expected, "{text}");
        }
        let both = constraints(&["zone==eu-*", "gpu==true"]);
        let got = hosts(&index, &both);
        assert!(!got.is_empty());
        assert!(got.iter().all(|&i| {
            let n = &nodes[i as usize];
            n.labels["zone"].starts_with("eu-") && n.labels.contains_key("gpu")
        }));
    }

    #[test]
    fn class_sets_complement_within_bounds() {
        let mut set = ClassSet::empty(70);
        set.insert(3);
        set.insert(69);
        let other = set.complement(70);
        assert_eq!(other.count(), 68);
        assert!(!other.contains(69));
        assert_eq!(set.iter().collect::<Vec<_>>(), vec![3, 69]);
        assert_eq!(ClassSet::full(64).count(), 64);
        assert_eq!(ClassSet::full(0).count(), 0);
    }
}
