//! Deterministic sampling: the order in which hosts are visited, and how many
//! feasible hosts are enough.
//!
//! Nomad shuffles the node list per evaluation and stops after `max(2, ⌈log₂ n⌉)`
//! feasible nodes (its limit iterator). A full shuffle costs O(n) per placement.
//! berth visits the population in the order `start, start + stride, start +
//! 2·stride, … (mod n)` with `start` and `stride` drawn from the request's seed and
//! `stride` coprime with `n`: a permutation of every position, produced in O(1)
//! per step. So the walk is seeded, costs nothing up front, and — because it is a
//! full permutation — a walk that runs to its end has seen every host, which is what
//! makes refusals complete.

/// SplitMix64's finaliser: a bijective mix of 64 bits.
pub(crate) fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// Enough feasible candidates to rank among: `max(8, ⌈log₂ n⌉)` for a population
/// of `n` (14 for 10,000 hosts). Nomad uses `max(2, ⌈log₂ n⌉)`; berth's floor of 8
/// means a small fleet is compared in full, which costs nothing there. Sampling a
/// few random hosts and taking the best is the "power of d choices": the load it
/// leaves is close to that of a full scan, at a fraction of the cost.
pub(crate) fn candidate_limit(population: usize) -> usize {
    let log2 = usize::BITS - population.saturating_sub(1).leading_zeros();
    (log2 as usize).max(MIN_CANDIDATES)
}

/// The floor of [`candidate_limit`].
const MIN_CANDIDATES: usize = 8;

/// A seeded permutation of `0..len`.
#[derive(Debug, Clone)]
pub(crate) struct Walk {
    len: u64,
    next: u64,
    stride: u64,
    left: u64,
}

impl Walk {
    pub fn new(len: usize, seed: u64) -> Walk {
        let len = len as u64;
        if len == 0 {
            return Walk {
                len,
                next: 0,
                stride: 1,
                left: 0,
            };
        }
        let a = mix(seed);
        let b = mix(a);
        let start = a % len;
        let mut stride = if len > 1 { 1 + b % (len - 1) } else { 1 };
        while gcd(stride, len) != 1 {
            stride = if stride + 1 >= len { 1 } else { stride + 1 };
        }
        Walk {
            len,
            next: start,
            stride,
            left: len,
        }
    }
}

impl Iterator for Walk {
    type Item = usize;

    #[inline]
    fn next(&mut self) -> Option<usize> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let here = self.next;
        self.next += self.stride;
        if self.next >= self.len {
            self.next -= self.len;
        }
        Some(here as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn walks_are_permutations() {
        for len in [0usize, 1, 2, 3, 10, 64, 97, 100, 1000] {
            for seed in 0..20u64 {
                let mut seen: Vec<usize> = Walk::new(len, seed).collect();
                seen.sort();
                assert_eq!(seen, (0..len).collect::<Vec<_>>(), "len {len} seed {seed}");
            }
        }
    }

    #[test]
    fn walks_depend_on_the_seed_only() {
        let a: Vec<usize> = Walk::new(1000, 7).take(10).collect();
        let b: Vec<usize> = Walk::new(1000, 7).take(10).collect();
        let c: Vec<usize> = Walk::new(1000, 8).take(10).collect();
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn limits_follow_log2() {
        assert_eq!(candidate_limit(0), 8);
        assert_eq!(candidate_limit(3), 8);
        assert_eq!(candidate_limit(256), 8);
        assert_eq!(candidate_limit(257), 9);
        assert_eq!(candidate_limit(1024), 10);
        assert_eq!(candidate_limit(10_000), 14);
    }
}
