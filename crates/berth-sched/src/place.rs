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
//!    order until `max(2, ⌈log₂ n⌉)` feasible hosts with the general mask are found,
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
use crate::snapshot::{Fleet, Resources};
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
