//! Fair-share pools: which pool's waiting work is served next.
//!
//! Every task belongs to a pool (by default its project) with a weight, a
//! guaranteed minimum and a maximum, each a [`Resources`]. [`serve_order`] takes the
//! pools, what each uses now and the head (oldest waiting request) of each pool's
//! queue, and returns the order in which pools should be served. It is a pure
//! function: same input, same order.
//!
//! # The rule, precisely
//!
//! Let `T` be the fleet's allocatable total (ready hosts, [`Fleet::allocatable_total`]).
//! The *dominant share* of an amount `R` is `max_d R_d / T_d` over the resources `d`
//! the fleet has (`T_d > 0`). A pool is *active* when it uses something or has work
//! waiting; an active pool's *fair share* is its weight divided by the sum of the
//! weights of the active pools (idle pools claim nothing, which is what makes their
//! capacity lendable).
//!
//! For a pool with usage `U` and head request `H`:
//!
//! 1. **Held at max** if `U + H` exceeds its maximum in any resource: a pool never
//!    goes above its max.
//! 2. **Guaranteed** if `U + H ≤ min` in every resource: the head fits in what is
//!    left of the pool's guarantee ("under its minimum").
//! 3. **Share** if not guaranteed and the dominant share of `U + H` is at most the
//!    pool's fair share: the pool uses what is its own.
//! 4. **Borrow** otherwise: the placement would use idle capacity beyond the pool's
//!    share.
//!
//! While any pool is Guaranteed, Borrow pools are **held** (no new borrowing while
//! a pool under its minimum waits). Pools are served Guaranteed first, then Share,
//! then Borrow — so when capacity frees up, an owner's new work takes it back before
//! a borrower gets more. Within Guaranteed, the pool that has used the smallest part
//! of its minimum (max over resources of `U_d / min_d`) goes first; within Share and
//! within Borrow, the smallest weighted dominant share (dominant share of `U` ÷
//! weight, as in weighted DRF) goes first. Ties go by pool name.
//!
//! # Example
//!
//! A fleet of 100 CPUs (only CPU shown). Pools `web` (weight 2, min 20), `batch`
//! (weight 1) and `ci` (weight 1, max 30); all active, so the fair shares are 50 %,
//! 25 % and 25 %. Usage web 10, batch 60, ci 30; heads web 4, batch 2, ci 1:
//!
//! - `ci`: 30 + 1 > 30 → held at max;
//! - `web`: 10 + 4 ≤ 20 → Guaranteed;
//! - `batch`: 62 % > 25 % → Borrow, and held while `web` is Guaranteed.
//!
//! Order: `[web]`. Once web uses 20, its next head (24 > 20, 24 % ≤ 50 %) is Share
//! and batch may borrow again: `[web (share), batch (borrow)]`.
//!
//! The dispatcher serves the first pool in the order whose head a host can take;
//! the placement itself is [`crate::place`]'s business.
//!
//! [`Fleet::allocatable_total`]: crate::Fleet::allocatable_total

use crate::{ResourceKind, Resources};
use serde::{Deserialize, Serialize};
use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};

fn unlimited() -> Resources {
    Resources::UNLIMITED
}

fn one() -> u32 {
    1
}

/// A pool's configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolSpec {
    pub name: String,
    /// Relative claim on the fleet; at least 1.
    #[serde(default = "one")]
    pub weight: u32,
    /// Guaranteed minimum.
    #[serde(default)]
    pub min: Resources,
    /// Never exceeded.
    #[serde(default = "unlimited")]
    pub max: Resources,
}

impl PoolSpec {
    /// Weight 1, no minimum, no maximum: the default for a project's pool.
    pub fn new(name: impl Into<String>) -> Self {
        PoolSpec {
            name: name.into(),
            weight: 1,
            min: Resources::ZERO,
            max: Resources::UNLIMITED,
        }
    }

    pub fn with_weight(mut self, weight: u32) -> Self {
        self.weight = weight;
        self
    }

    pub fn with_min(mut self, min: Resources) -> Self {
        self.min = min;
        self
    }

    pub fn with_max(mut self, max: Resources) -> Self {
        self.max = max;
        self
    }
}

/// What a pool uses now and the head of its queue, if work waits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolDemand {
    #[serde(default)]
    pub usage: Resources,
    /// The resources of the oldest waiting request; `None` when nothing waits.
    #[serde(default)]
    pub head: Option<Resources>,
}

/// Why a pool is served when it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Tier {
    /// Its head fits in what is left of its guaranteed minimum.
    Guaranteed,
    /// Its head keeps it within its fair share.
    Share,
    /// Its head takes it beyond its fair share, on idle capacity.
    Borrow,
}

/// Why a pool with waiting work is not served now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Hold {
    /// Its head would take it above its maximum.
    AtMax,
    /// It would borrow while a pool under its minimum waits.
    BorrowingPaused,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Turn {
    pub pool: String,
    pub tier: Tier,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Held {
    pub pool: String,
    pub why: Hold,
}

/// The pools with waiting work: those to serve, in order, and those held.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServeOrder {
    pub turns: Vec<Turn>,
    /// Sorted by pool name.
    pub held: Vec<Held>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PoolError {
    #[error("pool {0:?} has weight 0; weights start at 1")]
    ZeroWeight(String),
    #[error("pool {0:?} has a minimum above its maximum")]
    MinAboveMax(String),
    #[error("pool {0:?} is configured twice")]
    DuplicatePool(String),
    #[error("demand names pool {0:?}, which is not configured")]
    UnknownPool(String),
}

/// A non-negative fraction compared exactly (no rounding, so equal shares tie and
/// fall back to the pool name).
#[derive(Debug, Clone, Copy)]
struct Fraction {
    num: u64,
    /// Positive and below 2^96 (a u64 total times a u32 weight).
    den: u128,
}

/// `a × b` as a 192-bit number (high 128 bits, low 64 bits), for `b < 2^96`.
fn wide_mul(a: u64, b: u128) -> (u128, u64) {
    let low_half = u128::from(a) * (b & u128::from(u64::MAX));
    let high_half = u128::from(a) * (b >> 64);
    (high_half + (low_half >> 64), low_half as u64)
}

impl Fraction {
    const ZERO: Fraction = Fraction { num: 0, den: 1 };

    fn new(num: u64, den: u64) -> Fraction {
        Fraction {
            num,
            den: u128::from(den.max(1)),
        }
    }

    fn divided_by(self, weight: u32) -> Fraction {
        Fraction {
            num: self.num,
            den: self.den * u128::from(weight.max(1)),
        }
    }
}

impl PartialEq for Fraction {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Fraction {}

impl PartialOrd for Fraction {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Fraction {
    fn cmp(&self, other: &Self) -> Ordering {
        wide_mul(self.num, other.den).cmp(&wide_mul(other.num, self.den))
    }
}

/// The dominant share of `amount` over `total`.
fn dominant_share(amount: &Resources, total: &Resources) -> Fraction {
    ResourceKind::ALL
        .into_iter()
        .filter(|&d| total.get(d) > 0)
        .map(|d| Fraction::new(amount.get(d), total.get(d)))
        .max()
        .unwrap_or(Fraction::ZERO)
}

/// How much of its minimum a pool uses: max over resources with a minimum of
/// `usage / min`.
fn part_of_min(usage: &Resources, min: &Resources) -> Fraction {
    ResourceKind::ALL
        .into_iter()
        .filter(|&d| min.get(d) > 0)
        .map(|d| Fraction::new(usage.get(d), min.get(d)))
        .max()
        .unwrap_or(Fraction::ZERO)
}

/// Exactly: dominant share of `amount` ≤ `weight / total_weight`.
fn within_fair_share(
    amount: &Resources,
    total: &Resources,
    weight: u64,
    total_weight: u64,
) -> bool {
    ResourceKind::ALL
        .into_iter()
        .filter(|&d| total.get(d) > 0)
        .all(|d| {
            u128::from(amount.get(d)) * u128::from(total_weight)
                <= u128::from(weight) * u128::from(total.get(d))
        })
}

/// Checks the pool configuration.
pub fn validate(specs: &[PoolSpec]) -> Result<(), PoolError> {
    let mut names = BTreeSet::new();
    for spec in specs {
        if !names.insert(spec.name.as_str()) {
            return Err(PoolError::DuplicatePool(spec.name.clone()));
        }
        if spec.weight == 0 {
            return Err(PoolError::ZeroWeight(spec.name.clone()));
        }
        if !spec.min.fits_within(&spec.max) {
            return Err(PoolError::MinAboveMax(spec.name.clone()));
        }
    }
    Ok(())
}

/// The order in which pools with waiting work should be served (see the module
/// documentation for the rule). `demand` maps pool names to usage and queue head;
/// configured pools missing from it use nothing and wait for nothing.
pub fn serve_order(
    specs: &[PoolSpec],
    demand: &BTreeMap<String, PoolDemand>,
    fleet_allocatable: &Resources,
) -> Result<ServeOrder, PoolError> {
    validate(specs)?;
    let by_name: BTreeMap<&str, &PoolSpec> = specs.iter().map(|s| (s.name.as_str(), s)).collect();
    if let Some(unknown) = demand
        .keys()
        .find(|name| !by_name.contains_key(name.as_str()))
    {
        return Err(PoolError::UnknownPool(unknown.clone()));
    }
    let total_weight: u64 = demand
        .iter()
        .filter(|(_, d)| !d.usage.is_zero() || d.head.is_some())
        .map(|(name, _)| u64::from(by_name[name.as_str()].weight))
        .sum();

    struct Ranked<'a> {
        name: &'a str,
        tier: Tier,
        /// Sort key within the tier.
        key: Fraction,
    }
    let mut ranked: Vec<Ranked<'_>> = Vec::new();
    let mut held: Vec<Held> = Vec::new();
    for (name, d) in demand {
        let Some(head) = d.head else { continue };
        let spec = by_name[name.as_str()];
        let after = match d.usage.checked_add(&head) {
            Some(after) if after.fits_within(&spec.max) => after,
            _ => {
                held.push(Held {
                    pool: name.clone(),
                    why: Hold::AtMax,
                });
                continue;
            }
        };
        let weight = u64::from(spec.weight);
        let (tier, key) = if after.fits_within(&spec.min) {
            (Tier::Guaranteed, part_of_min(&d.usage, &spec.min))
        } else {
            let weighted = dominant_share(&d.usage, fleet_allocatable).divided_by(spec.weight);
            if within_fair_share(&after, fleet_allocatable, weight, total_weight) {
                (Tier::Share, weighted)
            } else {
                (Tier::Borrow, weighted)
            }
        };
        ranked.push(Ranked { name, tier, key });
    }
    if ranked.iter().any(|r| r.tier == Tier::Guaranteed) {
        ranked.retain(|r| {
            if r.tier == Tier::Borrow {
                held.push(Held {
                    pool: r.name.to_owned(),
                    why: Hold::BorrowingPaused,
                });
                false
            } else {
                true
            }
        });
    }
    ranked.sort_by(|a, b| {
        a.tier
            .cmp(&b.tier)
            .then(a.key.cmp(&b.key))
            .then_with(|| a.name.cmp(b.name))
    });
    held.sort_by(|a, b| a.pool.cmp(&b.pool));
    Ok(ServeOrder {
        turns: ranked
            .into_iter()
            .map(|r| Turn {
                pool: r.name.to_owned(),
                tier: r.tier,
            })
            .collect(),
        held,
    })
}

/// The pool whose waiting work gets the next placement: the first of
/// [`serve_order`], if any.
pub fn next_pool(
    specs: &[PoolSpec],
    demand: &BTreeMap<String, PoolDemand>,
    fleet_allocatable: &Resources,
) -> Result<Option<String>, PoolError> {
    Ok(serve_order(specs, demand, fleet_allocatable)?
        .turns
        .into_iter()
        .next()
        .map(|t| t.pool))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cpus(n: u64) -> Resources {
        Resources::new(n * 1000, 0, 0, 0)
    }

    fn demand(entries: &[(&str, u64, Option<u64>)]) -> BTreeMap<String, PoolDemand> {
        entries
            .iter()
            .map(|&(name, usage, head)| {
                (
                    name.to_owned(),
                    PoolDemand {
                        usage: cpus(usage),
                        head: head.map(cpus),
                    },
                )
            })
            .collect()
    }

    fn specs() -> Vec<PoolSpec> {
        vec![
            PoolSpec::new("web").with_weight(2).with_min(cpus(20)),
            PoolSpec::new("batch"),
            PoolSpec::new("ci").with_max(cpus(30)),
        ]
    }

    fn turns(order: &ServeOrder) -> Vec<(&str, Tier)> {
        order
            .turns
            .iter()
            .map(|t| (t.pool.as_str(), t.tier))
            .collect()
    }

    #[test]
    fn the_documented_example() {
        let order = serve_order(
            &specs(),
            &demand(&[
                ("web", 10, Some(4)),
                ("batch", 60, Some(2)),
                ("ci", 30, Some(1)),
            ]),
            &cpus(100),
        )
        .expect("valid pools");
        assert_eq!(turns(&order), vec![("web", Tier::Guaranteed)]);
        assert_eq!(
            order.held,
            vec![
                Held {
                    pool: "batch".into(),
                    why: Hold::BorrowingPaused
                },
                Held {
                    pool: "ci".into(),
                    why: Hold::AtMax
                },
            ]
        );
        let order = serve_order(
            &specs(),
            &demand(&[
                ("web", 20, Some(4)),
                ("batch", 60, Some(2)),
                ("ci", 30, Some(1)),
            ]),
            &cpus(100),
        )
        .expect("valid pools");
        assert_eq!(
            turns(&order),
            vec![("web", Tier::Share), ("batch", Tier::Borrow)]
        );
    }

    #[test]
    fn idle_pools_lend_their_share() {
        // web is idle, so batch's fair share is the whole fleet: no borrowing.
        let order = serve_order(
            &specs(),
            &demand(&[("batch", 60, Some(2)), ("web", 0, None)]),
            &cpus(100),
        )
        .expect("valid pools");
        assert_eq!(turns(&order), vec![("batch", Tier::Share)]);
    }

    #[test]
    fn owners_come_before_borrowers_and_weights_order_within_a_tier() {
        let specs = vec![
            PoolSpec::new("a").with_weight(3),
            PoolSpec::new("b"),
            PoolSpec::new("c"),
        ];
        // Fair shares: a 60 %, b 20 %, c 20 %.
        let order = serve_order(
            &specs,
            &demand(&[("a", 30, Some(1)), ("b", 10, Some(1)), ("c", 50, Some(1))]),
            &cpus(100),
        )
        .expect("valid pools");
        // a: 30 %/3 = 10 % weighted; b: 10 %; tie broken by name. c borrows.
        assert_eq!(
            turns(&order),
            vec![("a", Tier::Share), ("b", Tier::Share), ("c", Tier::Borrow)]
        );
    }

    #[test]
    fn guaranteed_pools_go_by_how_much_of_their_minimum_they_use() {
        let specs = vec![
            PoolSpec::new("x").with_min(cpus(10)),
            PoolSpec::new("y").with_min(cpus(40)),
        ];
        let order = serve_order(
            &specs,
            &demand(&[("x", 5, Some(1)), ("y", 10, Some(1))]),
            &cpus(100),
        )
        .expect("valid pools");
        // x uses 50 % of its minimum, y 25 %: y first.
        assert_eq!(
            turns(&order),
            vec![("y", Tier::Guaranteed), ("x", Tier::Guaranteed)]
        );
    }

    #[test]
    fn fractions_compare_exactly() {
        // 3/10 ÷ 3 and 1/10 are equal; rounding would tell them apart.
        let a = Fraction::new(3, 10).divided_by(3);
        let b = Fraction::new(1, 10);
        assert_eq!(a.cmp(&b), Ordering::Equal);
        let huge = Fraction::new(u64::MAX, u64::MAX).divided_by(u32::MAX);
        let tiny = Fraction::new(1, u64::MAX);
        assert!(huge > tiny);
        assert_eq!(wide_mul(u64::MAX, 1 << 95).1, 0);
    }

    #[test]
    fn bad_configuration_is_refused() {
        let d = BTreeMap::new();
        let t = cpus(1);
        assert_eq!(
            serve_order(&[PoolSpec::new("a").with_weight(0)], &d, &t),
            Err(PoolError::ZeroWeight("a".into()))
        );
        assert_eq!(
            serve_order(&[PoolSpec::new("a"), PoolSpec::new("a")], &d, &t),
            Err(PoolError::DuplicatePool("a".into()))
        );
        assert_eq!(
            serve_order(
                &[PoolSpec::new("a").with_min(cpus(2)).with_max(cpus(1))],
                &d,
                &t
            ),
            Err(PoolError::MinAboveMax("a".into()))
        );
        assert_eq!(
            serve_order(&[], &demand(&[("ghost", 0, Some(1))]), &t),
            Err(PoolError::UnknownPool("ghost".into()))
        );
        assert_eq!(
            next_pool(&specs(), &demand(&[("batch", 0, Some(1))]), &t),
            Ok(Some("batch".into()))
        );
    }
}
