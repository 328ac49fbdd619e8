//! What a task asks of the fleet: the resources reserved for it on a host,
//! its memory limit, the hosts it may run on (constraints), its group
//! rules and its fair-share pool.
//!
//! A code states defaults ([`PlacementSpec`], every part optional); a task
//! may override each part; the server resolves the result at queue time
//! into a [`TaskPlacement`] with every figure explicit, so that what a
//! queued task reserves never changes under it.
//!
//! [`Resources`], [`ResourceKind`] and [`Relation`] are also the placement
//! engine's (berth-sched re-exports them), so what the server stores is
//! what the engine counts, with no conversion between.

use serde::{Deserialize, Serialize};
use std::fmt;

/// An amount of each resource the fleet counts: what a task reserves, what a
/// host offers, what a pool may hold. Every field is a plain count so that
/// comparisons are exact.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Resources {
    /// Thousandths of a CPU (1000 = one CPU).
    #[serde(default)]
    pub cpu_millis: u64,
    #[serde(default)]
    pub memory_bytes: u64,
    #[serde(default)]
    pub disk_bytes: u64,
    /// Processes and threads.
    #[serde(default)]
    pub pids: u64,
}

/// One dimension of [`Resources`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResourceKind {
    Cpu,
    Memory,
    Disk,
    Pids,
}

impl ResourceKind {
    /// Every dimension, in the order refusals report a shortage.
    pub const ALL: [ResourceKind; 4] = [
        ResourceKind::Cpu,
        ResourceKind::Memory,
        ResourceKind::Disk,
        ResourceKind::Pids,
    ];

    /// `amount` of this resource as a person reads it: `0.5 CPUs`, `512 MiB`, `100 pids`.
    pub fn format_amount(self, amount: u64) -> String {
        match self {
            ResourceKind::Cpu => {
                let whole = amount / 1000;
                let frac = amount % 1000;
                let number = if frac == 0 {
                    whole.to_string()
                } else {
                    let digits = format!("{frac:03}");
                    format!("{whole}.{}", digits.trim_end_matches('0'))
                };
                if amount == 1000 {
                    format!("{number} CPU")
                } else {
                    format!("{number} CPUs")
                }
            }
            ResourceKind::Memory | ResourceKind::Disk => format_bytes(amount),
            ResourceKind::Pids => {
                if amount == 1 {
                    "1 pid".to_owned()
                } else {
                    format!("{amount} pids")
                }
            }
        }
    }
}

impl fmt::Display for ResourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ResourceKind::Cpu => "cpu",
            ResourceKind::Memory => "memory",
            ResourceKind::Disk => "disk",
            ResourceKind::Pids => "pids",
        })
    }
}

/// `512 MiB`, `1.5 GiB`, `0 B`: binary units, at most one decimal.
fn format_bytes(bytes: u64) -> String {
    const UNITS: [(u64, &str); 4] = [
        (1 << 40, "TiB"),
        (1 << 30, "GiB"),
        (1 << 20, "MiB"),
        (1 << 10, "KiB"),
    ];
    for (size, unit) in UNITS {
        if bytes >= size {
            if bytes.is_multiple_of(size) {
                return format!("{} {unit}", bytes / size);
            }
            // Tenths, rounded down so "free" never reads larger than it is.
            let tenths = (bytes as u128 * 10 / size as u128) as u64;
            return if tenths.is_multiple_of(10) {
                format!("{} {unit}", tenths / 10)
            } else {
                format!("{}.{} {unit}", tenths / 10, tenths % 10)
            };
        }
    }
    format!("{bytes} B")
}

impl Resources {
    pub const ZERO: Resources = Resources {
        cpu_millis: 0,
        memory_bytes: 0,
        disk_bytes: 0,
        pids: 0,
    };
    /// No limit in any dimension (a pool's default maximum).
    pub const UNLIMITED: Resources = Resources {
        cpu_millis: u64::MAX,
        memory_bytes: u64::MAX,
        disk_bytes: u64::MAX,
        pids: u64::MAX,
    };

    pub fn new(cpu_millis: u64, memory_bytes: u64, disk_bytes: u64, pids: u64) -> Self {
        Resources {
            cpu_millis,
            memory_bytes,
            disk_bytes,
            pids,
        }
    }

    pub fn get(&self, kind: ResourceKind) -> u64 {
        match kind {
            ResourceKind::Cpu => self.cpu_millis,
            ResourceKind::Memory => self.memory_bytes,
            ResourceKind::Disk => self.disk_bytes,
            ResourceKind::Pids => self.pids,
        }
    }

    pub fn set(&mut self, kind: ResourceKind, value: u64) {
        match kind {
            ResourceKind::Cpu => self.cpu_millis = value,
            ResourceKind::Memory => self.memory_bytes = value,
            ResourceKind::Disk => self.disk_bytes = value,
            ResourceKind::Pids => self.pids = value,
        }
    }

    /// True when every dimension of `self` is at most the same dimension of `other`.
    pub fn fits_within(&self, other: &Resources) -> bool {
        self.cpu_millis <= other.cpu_millis
            && self.memory_bytes <= other.memory_bytes
            && self.disk_bytes <= other.disk_bytes
            && self.pids <= other.pids
    }

    pub fn is_zero(&self) -> bool {
        *self == Resources::ZERO
    }

    pub fn checked_add(&self, other: &Resources) -> Option<Resources> {
        Some(Resources {
            cpu_millis: self.cpu_millis.checked_add(other.cpu_millis)?,
            memory_bytes: self.memory_bytes.checked_add(other.memory_bytes)?,
            disk_bytes: self.disk_bytes.checked_add(other.disk_bytes)?,
            pids: self.pids.checked_add(other.pids)?,
        })
    }

    pub fn checked_sub(&self, other: &Resources) -> Option<Resources> {
        Some(Resources {
            cpu_millis: self.cpu_millis.checked_sub(other.cpu_millis)?,
            memory_bytes: self.memory_bytes.checked_sub(other.memory_bytes)?,
            disk_bytes: self.disk_bytes.checked_sub(other.disk_bytes)?,
            pids: self.pids.checked_sub(other.pids)?,
        })
    }

    pub fn saturating_add(&self, other: &Resources) -> Resources {
        Resources {
            cpu_millis: self.cpu_millis.saturating_add(other.cpu_millis),
            memory_bytes: self.memory_bytes.saturating_add(other.memory_bytes),
            disk_bytes: self.disk_bytes.saturating_add(other.disk_bytes),
            pids: self.pids.saturating_add(other.pids),
        }
    }

    pub fn saturating_sub(&self, other: &Resources) -> Resources {
        Resources {
            cpu_millis: self.cpu_millis.saturating_sub(other.cpu_millis),
            memory_bytes: self.memory_bytes.saturating_sub(other.memory_bytes),
            disk_bytes: self.disk_bytes.saturating_sub(other.disk_bytes),
            pids: self.pids.saturating_sub(other.pids),
        }
    }

    /// The first dimension (in [`ResourceKind::ALL`] order) where `self` needs more
    /// than `available` has.
    pub fn first_shortage(&self, available: &Resources) -> Option<ResourceKind> {
        ResourceKind::ALL
            .into_iter()
            .find(|&kind| self.get(kind) > available.get(kind))
    }
}

/// Whether members of a group go together or apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Relation {
    /// Always on a host that holds members of the group.
    Affinity,
    /// Never two members of the group on one host.
    AntiAffinity,
}

/// A group rule: `web` (hard) or `web:soft` in text.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct GroupRule {
    pub group: String,
    pub relation: Relation,
    /// A hard rule is never broken; a soft one is kept where some host
    /// allows it.
    pub hard: bool,
}

/// Longest group or pool name.
pub const MAX_GROUP_NAME: usize = 128;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlacementError {
    #[error("group {0:?}: 1 to 128 of letters, digits and - _ . (then :hard or :soft)")]
    BadGroup(String),
    #[error("pool {0:?}: 1 to 128 of letters, digits and - _ .")]
    BadPool(String),
    #[error("{what} must be above zero")]
    Zero { what: &'static str },
    #[error("memory_request {request} is above the memory limit {limit}")]
    RequestAboveLimit { request: u64, limit: u64 },
    #[error("at most {max} {what}")]
    TooMany { what: &'static str, max: usize },
}

fn is_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_GROUP_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

impl GroupRule {
    /// `GROUP`, `GROUP:hard` or `GROUP:soft`.
    pub fn parse(text: &str, relation: Relation) -> Result<GroupRule, PlacementError> {
        let (group, hard) = match text.rsplit_once(':') {
            Some((group, "hard")) => (group, true),
            Some((group, "soft")) => (group, false),
            Some(_) => return Err(PlacementError::BadGroup(text.to_owned())),
            None => (text, true),
        };
        if !is_name(group) {
            return Err(PlacementError::BadGroup(text.to_owned()));
        }
        Ok(GroupRule {
            group: group.to_owned(),
            relation,
            hard,
        })
    }
}

impl fmt::Display for GroupRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let relation = match self.relation {
            Relation::Affinity => "affinity",
            Relation::AntiAffinity => "anti-affinity",
        };
        let hardness = if self.hard { "hard" } else { "soft" };
        write!(f, "{relation} {}:{hardness}", self.group)
    }
}

/// Most constraints or group rules one code or task may state.
pub const MAX_RULES: usize = 32;

/// What a code (defaults) or a task (overrides) asks; each part optional.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlacementSpec {
    /// Memory limit in bytes: the container is killed above it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<u64>,
    /// Memory reserved on the host, in bytes [default: the limit].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_request: Option<u64>,
    /// CPU, in thousandths: reserved on the host and the container's quota.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_millis: Option<u64>,
    /// Disk reserved on the host, in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk: Option<u64>,
    /// Processes and threads: reserved and the container's limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids: Option<u64>,
    /// Host constraints (`zone==a`, `gpu!=true`, `rack==r1*`, `node=~^db`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub constraints: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<GroupRule>,
    /// The fair-share pool [default: the project's].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
}

impl PlacementSpec {
    /// `self`'s parts where given, else `under`'s. Constraints and group
    /// rules add up (a task cannot drop its code's).
    pub fn over(&self, under: &PlacementSpec) -> PlacementSpec {
        let mut constraints = under.constraints.clone();
        constraints.extend(self.constraints.iter().cloned());
        let mut groups = under.groups.clone();
        for rule in &self.groups {
            // A task's rule for a group replaces its code's.
            groups.retain(|r| r.group != rule.group);
            groups.push(rule.clone());
        }
        PlacementSpec {
            memory: self.memory.or(under.memory),
            memory_request: self.memory_request.or(under.memory_request),
            cpu_millis: self.cpu_millis.or(under.cpu_millis),
            disk: self.disk.or(under.disk),
            pids: self.pids.or(under.pids),
            constraints,
            groups,
            pool: self.pool.clone().or_else(|| under.pool.clone()),
        }
    }

    /// Checks what can be checked without a fleet: positive figures, a
    /// request within the limit, names, counts. (Constraint syntax is the
    /// placement engine's to check.)
    pub fn validate(&self) -> Result<(), PlacementError> {
        for (what, value) in [
            ("memory", self.memory),
            ("memory_request", self.memory_request),
            ("pids", self.pids),
        ] {
            if value == Some(0) {
                return Err(PlacementError::Zero { what });
            }
        }
        if let (Some(request), Some(limit)) = (self.memory_request, self.memory) {
            if request > limit {
                return Err(PlacementError::RequestAboveLimit { request, limit });
            }
        }
        if self.constraints.len() > MAX_RULES {
            return Err(PlacementError::TooMany {
                what: "constraints",
                max: MAX_RULES,
            });
        }
        if self.groups.len() > MAX_RULES {
            return Err(PlacementError::TooMany {
                what: "group rules",
                max: MAX_RULES,
            });
        }
        for rule in &self.groups {
            if !is_name(&rule.group) {
                return Err(PlacementError::BadGroup(rule.group.clone()));
            }
        }
        if let Some(pool) = &self.pool {
            if !is_name(pool) {
                return Err(PlacementError::BadPool(pool.clone()));
            }
        }
        Ok(())
    }

    /// The task's placement with every figure explicit: `self`'s where
    /// given, else `defaults`'. The memory request defaults to the limit.
    pub fn resolve(&self, defaults: &TaskPlacement) -> Result<TaskPlacement, PlacementError> {
        self.validate()?;
        let memory_limit = self.memory.unwrap_or(defaults.memory_limit);
        let memory_request = self.memory_request.unwrap_or(if self.memory.is_some() {
            memory_limit
        } else {
            defaults.request.memory_bytes
        });
        if memory_request > memory_limit {
            return Err(PlacementError::RequestAboveLimit {
                request: memory_request,
                limit: memory_limit,
            });
        }
        Ok(TaskPlacement {
            memory_limit,
            request: Resources {
                cpu_millis: self.cpu_millis.unwrap_or(defaults.request.cpu_millis),
                memory_bytes: memory_request,
                disk_bytes: self.disk.unwrap_or(defaults.request.disk_bytes),
                pids: self.pids.unwrap_or(defaults.request.pids),
            },
            constraints: self.constraints.clone(),
            groups: self.groups.clone(),
            pool: self.pool.clone(),
        })
    }
}

/// A task's placement, resolved at queue time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskPlacement {
    /// Memory limit in bytes.
    pub memory_limit: u64,
    /// What is reserved on its host while it runs (memory: the request).
    pub request: Resources,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub constraints: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<GroupRule>,
    /// `None`: the project's pool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults() -> TaskPlacement {
        TaskPlacement {
            memory_limit: 512 << 20,
            request: Resources {
                cpu_millis: 0,
                memory_bytes: 32 << 20,
                disk_bytes: 0,
                pids: 1024,
            },
            constraints: Vec::new(),
            groups: Vec::new(),
            pool: None,
        }
    }

    #[test]
    fn bytes_read_like_a_person_writes_them() {
        assert_eq!(format_bytes(0), "0 B");
        assert_eq!(format_bytes(512), "512 B");
        assert_eq!(format_bytes(200 << 20), "200 MiB");
        assert_eq!(format_bytes(3 << 29), "1.5 GiB");
        // 1.99 GiB reads as 1.9, never rounded up to 2.
        assert_eq!(format_bytes((2 << 30) - (10 << 20)), "1.9 GiB");
        assert_eq!(ResourceKind::Cpu.format_amount(500), "0.5 CPUs");
        assert_eq!(ResourceKind::Cpu.format_amount(1000), "1 CPU");
        assert_eq!(ResourceKind::Cpu.format_amount(1250), "1.25 CPUs");
        assert_eq!(ResourceKind::Pids.format_amount(100), "100 pids");
    }

    #[test]
    fn resources_compare_and_subtract_exactly() {
        let a = Resources::new(1000, 100, 10, 5);
        let b = Resources::new(500, 100, 20, 5);
        assert!(!b.fits_within(&a));
        assert_eq!(b.first_shortage(&a), Some(ResourceKind::Disk));
        assert_eq!(a.checked_sub(&b), None);
        assert_eq!(a.saturating_sub(&b), Resources::new(500, 0, 0, 0));
        assert_eq!(
            Resources::UNLIMITED.checked_add(&Resources::new(0, 0, 0, 1)),
            None
        );
    }

    #[test]
    fn a_task_overrides_its_code_which_overrides_the_server() {
        let code = PlacementSpec {
            memory: Some(256 << 20),
            cpu_millis: Some(500),
            constraints: vec!["zone==a".into()],
            groups: vec![GroupRule::parse("web", Relation::AntiAffinity).unwrap()],
            ..PlacementSpec::default()
        };
        let task = PlacementSpec {
            cpu_millis: Some(250),
            constraints: vec!["gpu==true".into()],
            groups: vec![GroupRule::parse("web:soft", Relation::AntiAffinity).unwrap()],
            ..PlacementSpec::default()
        };
        let placed = task.over(&code).resolve(&defaults()).unwrap();
        assert_eq!(placed.memory_limit, 256 << 20);
        // A limit given without a request reserves the limit.
        assert_eq!(placed.request.memory_bytes, 256 << 20);
        assert_eq!(placed.request.cpu_millis, 250);
        assert_eq!(placed.request.pids, 1024);
        assert_eq!(placed.constraints, ["zone==a", "gpu==true"]);
        assert_eq!(placed.groups.len(), 1);
        assert!(
            !placed.groups[0].hard,
            "the task's rule for web replaces the code's"
        );
        // Nothing given: the server's defaults.
        assert_eq!(
            PlacementSpec::default().resolve(&defaults()).unwrap(),
            defaults()
        );
    }

    #[test]
    fn impossible_asks_are_refused() {
        let bad = [
            PlacementSpec {
                memory: Some(0),
                ..PlacementSpec::default()
            },
            PlacementSpec {
                memory: Some(64 << 20),
                memory_request: Some(128 << 20),
                ..PlacementSpec::default()
            },
            PlacementSpec {
                memory_request: Some(1 << 30),
                ..PlacementSpec::default()
            },
            PlacementSpec {
                pool: Some("a b".into()),
                ..PlacementSpec::default()
            },
        ];
        for spec in bad {
            assert!(spec.resolve(&defaults()).is_err(), "{spec:?}");
        }
        for text in ["", "a:b", "web:", "we b"] {
            assert!(
                GroupRule::parse(text, Relation::Affinity).is_err(),
                "{text}"
            );
        }
        assert_eq!(
            GroupRule::parse("db:soft", Relation::Affinity)
                .unwrap()
                .to_string(),
            "affinity db:soft"
        );
    }
}
