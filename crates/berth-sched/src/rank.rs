//! Ranking: among the feasible candidates that keep the most soft rules (see
//! `groups.rs`), which host is best?
//!
//! Each candidate's load after the placement is measured per resource as a share
//! of its allocatable, in millionths (integers, so every host ranks the same way on
//! every machine). `load = max share + mean share` (0 ..= 2,000,000): the dominant
//! resource counts most, the others break near-ties.
//!
//! - Spread (default): score = 2,000,000 − load — the least loaded host wins, which
//!   keeps hot spots and correlated failures down.
//! - Binpack: score = load — the fullest host that still fits wins, which keeps
//!   whole hosts free for large requests.
//! - Image preference: a host that already holds the request's image gets
//!   [`IMAGE_BONUS`] (a fifth of the range): it wins unless it is much more loaded
//!   (spread) or much emptier (binpack) than the best host without the image.
//!
//! Nomad scores CPU and memory only, with `10^free%` curves; berth scores every
//! resource it accounts for, so a host short of disk or pids is not picked as
//! "empty".
//!
//! Ties go to the candidate found first in the seeded walk.

use crate::request::Strategy;
use crate::snapshot::Hot;
use crate::{ResourceKind, Resources};

/// One million: a whole host.
const WHOLE: u64 = 1_000_000;

/// Score added for a host that already holds the request's image.
pub const IMAGE_BONUS: i64 = 400_000;

/// `load` in millionths: max share + mean share after adding `request`.
pub(crate) fn load_after(hot: &Hot, request: &Resources) -> u64 {
    let mut max = 0u64;
    let mut sum = 0u64;
    let mut counted = 0u64;
    for kind in ResourceKind::ALL {
        let capacity = hot.allocatable.get(kind);
        if capacity == 0 {
            continue;
        }
        let used = hot
            .allocated
            .get(kind)
            .saturating_add(request.get(kind))
            .min(capacity);
        let share = (u128::from(used) * u128::from(WHOLE) / u128::from(capacity)) as u64;
        max = max.max(share);
        sum += share;
        counted += 1;
    }
    let mean = sum.checked_div(counted).unwrap_or(0);
    max + mean
}

/// The candidate's score: greater is better.
pub(crate) fn score(hot: &Hot, request: &Resources, strategy: Strategy, has_image: bool) -> i64 {
    let load = load_after(hot, request) as i64;
    let base = match strategy {
        Strategy::Spread => 2 * WHOLE as i64 - load,
        Strategy::Binpack => load,
    };
    base + if has_image { IMAGE_BONUS } else { 0 }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::NodeState;

    fn hot(allocated_cpu: u64, allocated_memory: u64) -> Hot {
        Hot {
            allocatable: Resources::new(4000, 4000, 0, 0),
            allocated: Resources::new(allocated_cpu, allocated_memory, 0, 0),
            state: NodeState::Ready,
            class: 0,
        }
    }

    #[test]
    fn load_weighs_the_dominant_resource() {
        let request = Resources::new(0, 0, 0, 0);
        // 50% cpu, 0% memory: max 0.5 + mean 0.25.
        assert_eq!(load_after(&hot(2000, 0), &request), 750_000);
        // Unaccounted dimensions (capacity 0) are skipped, not counted as empty.
        assert_eq!(load_after(&hot(0, 0), &request), 0);
    }

    #[test]
    fn spread_prefers_empty_and_binpack_full_hosts() {
        let request = Resources::new(1000, 1000, 0, 0);
        let empty = hot(0, 0);
        let half = hot(2000, 2000);
        assert!(
            score(&empty, &request, Strategy::Spread, false)
                > score(&half, &request, Strategy::Spread, false)
        );
        assert!(
            score(&half, &request, Strategy::Binpack, false)
                > score(&empty, &request, Strategy::Binpack, false)
        );
    }

    #[test]
    fn the_image_outweighs_small_load_differences_only() {
        let request = Resources::new(0, 0, 0, 0);
        let with_image = score(&hot(600, 600), &request, Strategy::Spread, true);
        assert!(with_image > score(&hot(0, 0), &request, Strategy::Spread, false));
        let busy_with_image = score(&hot(3600, 3600), &request, Strategy::Spread, true);
        assert!(busy_with_image < score(&hot(0, 0), &request, Strategy::Spread, false));
    }
}
