//! What a task asks for: resources, host constraints, group rules, an image it
//! would like to find already present, a ranking strategy, and a seed.
//!
//! The seed makes every choice reproducible: the same snapshot and the same request
//! (seed included) always give the same answer. By default it is derived from the
//! request's id with [`seed_from_id`], a fixed hash (FNV-1a, then a SplitMix64
//! finaliser) that will not change between releases.

use crate::constraint::{Constraint, ConstraintError};
use crate::groups::{GroupRule, Hardness};
use crate::Resources;
use serde::{Deserialize, Serialize};

/// How to rank the hosts that can take a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// The least loaded host: spreads load and failures (the default).
    #[default]
    Spread,
    /// The fullest host that still fits: keeps whole hosts free.
    Binpack,
}

/// At most this many group rules per request (a soft rule is one bit of a 64-bit
/// mask when hosts are compared).
pub const MAX_GROUP_RULES: usize = 64;

/// A request that cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("a group rule has an empty group name")]
    EmptyGroup,
    #[error("group {0:?} has two rules in one request; give it one")]
    DuplicateGroup(String),
    #[error("more than {MAX_GROUP_RULES} group rules in one request")]
    TooManyRules,
    #[error(transparent)]
    Constraint(#[from] ConstraintError),
}

/// A placement request. Built with [`Request::new`] and the `with_*` methods, which
/// validate, so a `Request` is always well formed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RequestFields", into = "RequestFields")]
pub struct Request {
    id: String,
    seed: u64,
    resources: Resources,
    constraints: Vec<Constraint>,
    rules: Vec<GroupRule>,
    image: Option<String>,
    strategy: Strategy,
}

/// The serialised form of a [`Request`]; deserialising goes through the same
/// validation as the builder.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct RequestFields {
    id: String,
    #[serde(default)]
    seed: Option<u64>,
    resources: Resources,
    #[serde(default)]
    constraints: Vec<Constraint>,
    #[serde(default)]
    rules: Vec<GroupRule>,
    #[serde(default)]
    image: Option<String>,
    #[serde(default)]
    strategy: Strategy,
}

impl TryFrom<RequestFields> for Request {
    type Error = RequestError;
    fn try_from(fields: RequestFields) -> Result<Self, Self::Error> {
        let mut request = Request::new(fields.id, fields.resources).with_strategy(fields.strategy);
        if let Some(seed) = fields.seed {
            request = request.with_seed(seed);
        }
        if let Some(image) = fields.image {
            request = request.with_image(image);
        }
        for constraint in fields.constraints {
            request = request.with_constraint(constraint);
        }
        for rule in fields.rules {
            request = request.with_rule(rule)?;
        }
        Ok(request)
    }
}

impl From<Request> for RequestFields {
    fn from(request: Request) -> Self {
        RequestFields {
            id: request.id,
            seed: Some(request.seed),
            resources: request.resources,
            constraints: request.constraints,
            rules: request.rules,
            image: request.image,
            strategy: request.strategy,
        }
    }
}

impl Request {
    /// A request named `id` (a task id or container name: it is the member name a
    /// host holds once the placement is committed) for `resources`.
    pub fn new(id: impl Into<String>, resources: Resources) -> Self {
        let id = id.into();
        Request {
            seed: seed_from_id(&id),
            id,
            resources,
            constraints: Vec::new(),
            rules: Vec::new(),
            image: None,
            strategy: Strategy::Spread,
        }
    }

    /// Replaces the seed derived from the id.
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    pub fn with_constraint(mut self, constraint: Constraint) -> Self {
        self.constraints.push(constraint);
        self
    }

    /// Parses and adds constraints (`zone==a`, …).
    pub fn with_constraints<'a>(
        mut self,
        texts: impl IntoIterator<Item = &'a str>,
    ) -> Result<Self, ConstraintError> {
        for text in texts {
            self.constraints.push(Constraint::parse(text)?);
        }
        Ok(self)
    }

    /// Adds a group rule. Soft rules are given up in listed order from the last (see
    /// `groups.rs`), so list the one that matters most first.
    pub fn with_rule(mut self, rule: GroupRule) -> Result<Self, RequestError> {
        if rule.group.is_empty() {
            return Err(RequestError::EmptyGroup);
        }
        if self.rules.iter().any(|r| r.group == rule.group) {
            return Err(RequestError::DuplicateGroup(rule.group));
        }
        if self.rules.len() >= MAX_GROUP_RULES {
            return Err(RequestError::TooManyRules);
        }
        self.rules.push(rule);
        Ok(self)
    }

    pub fn with_image(mut self, image: impl Into<String>) -> Self {
        self.image = Some(image.into());
        self
    }

    pub fn with_strategy(mut self, strategy: Strategy) -> Self {
        self.strategy = strategy;
        self
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn seed(&self) -> u64 {
        self.seed
    }

    pub fn resources(&self) -> &Resources {
        &self.resources
    }

    pub fn constraints(&self) -> &[Constraint] {
        &self.constraints
    }

    /// Group rules in listed order.
    pub fn rules(&self) -> &[GroupRule] {
        &self.rules
    }

    /// The soft rules, in listed order (the first is given up last).
    pub fn soft_rules(&self) -> impl Iterator<Item = &GroupRule> {
        self.rules.iter().filter(|r| r.hardness == Hardness::Soft)
    }

    pub fn image(&self) -> Option<&str> {
        self.image.as_deref()
    }

    pub fn strategy(&self) -> Strategy {
        self.strategy
    }
}

/// A stable 64-bit seed from an id: FNV-1a over the bytes, then the SplitMix64
/// finaliser to spread the bits. Fixed forever: changing it would move placements.
pub fn seed_from_id(id: &str) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in id.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    crate::sample::mix(hash)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_are_stable_and_differ_by_id() {
        assert_eq!(seed_from_id("task-1"), seed_from_id("task-1"));
        assert_ne!(seed_from_id("task-1"), seed_from_id("task-2"));
        // Pinned: a change here would move every placement.
        assert_eq!(seed_from_id(""), crate::sample::mix(0xcbf2_9ce4_8422_2325));
    }

    #[test]
    fn rules_are_validated() {
        let request = Request::new("t", Resources::ZERO);
        assert_eq!(
            request
                .clone()
                .with_rule(GroupRule::hard_affinity(""))
                .err(),
            Some(RequestError::EmptyGroup)
        );
        let once = request
            .with_rule(GroupRule::hard_affinity("g"))
            .expect("first rule");
        assert_eq!(
            once.with_rule(GroupRule::soft_anti_affinity("g")).err(),
            Some(RequestError::DuplicateGroup("g".into()))
        );
        let mut many = Request::new("t", Resources::ZERO);
        for i in 0..MAX_GROUP_RULES {
            many = many
                .with_rule(GroupRule::soft_anti_affinity(format!("g{i}")))
                .expect("within the limit");
        }
        assert_eq!(
            many.with_rule(GroupRule::soft_anti_affinity("one-more"))
                .err(),
            Some(RequestError::TooManyRules)
        );
    }

    #[test]
    fn serde_validates_like_the_builder() {
        let request = Request::new("t", Resources::new(500, 1 << 20, 0, 10))
            .with_constraints(["zone==a"])
            .expect("valid constraint")
            .with_rule(GroupRule::soft_affinity("db"))
            .expect("valid rule")
            .with_image("busybox")
            .with_strategy(Strategy::Binpack);
        let json = serde_json::to_string(&request).expect("serialize");
        let back: Request = serde_json::from_str(&json).expect("deserialize");
        assert_eq!(back, request);
        let bad = r#"{"id":"t","resources":{},"rules":[
            {"group":"g","relation":"affinity","hardness":"hard"},
            {"group":"g","relation":"anti_affinity","hardness":"soft"}]}"#;
        let err = serde_json::from_str::<Request>(bad).expect_err("duplicate group");
        assert!(err.to_string().contains("two rules"), "{err}");
        let bad = r#"{"id":"t","resources":{},"constraints":["zone=a"]}"#;
        let err = serde_json::from_str::<Request>(bad).expect_err("bad constraint");
        assert!(err.to_string().contains("column 5"), "{err}");
    }
}
