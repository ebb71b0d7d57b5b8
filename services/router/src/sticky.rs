//! Sticky sessions: weighted rendezvous (highest-random-weight) hashing.
//!
//! A client key first chooses a version (image) among those with weight,
//! then an instance within that version. For each candidate `c` of weight
//! `w_c` the key scores `-ln(u(key, c)) / w_c`, where `u` is a hash of the
//! key and the candidate's name mapped into (0, 1); the lowest score wins.
//! Scores are exponential variables of rate `w_c`, so a candidate wins a
//! share `w_c / Σw` of keys. Two properties follow:
//!
//! - a key's choice depends only on the candidates and their weights, so it
//!   never changes while they hold, on any router;
//! - when one candidate's weight grows (and the others' stay or shrink),
//!   its scores only fall and the others' only rise: keys only move toward
//!   it. A canary growing from 10 to 50 takes keys, never swaps them.

/// A stable 64-bit hash of `label` then `key` (FNV-1a, then the splitmix64
/// finaliser for avalanche). Stable across processes and versions.
pub fn hash(label: &str, key: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in label.bytes().chain([0xff]).chain(key.iter().copied()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// The score of `key` for a candidate called `label` with `weight` (> 0):
/// lower wins.
pub fn score(label: &str, weight: u64, key: &[u8]) -> f64 {
    // 53 random bits, mapped into the open interval (0, 1).
    let u = ((hash(label, key) >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
    -u.ln() / weight as f64
}

/// Index of the winning candidate among `(label, weight)` pairs; candidates
/// of weight 0 never win. `None` when no weight is positive.
pub fn choose<'a>(
    key: &[u8],
    candidates: impl IntoIterator<Item = (&'a str, u64)>,
) -> Option<usize> {
    let mut best: Option<(usize, f64)> = None;
    for (i, (label, weight)) in candidates.into_iter().enumerate() {
        if weight == 0 {
            continue;
        }
        let s = score(label, weight, key);
        if best.is_none_or(|(_, b)| s < b) {
            best = Some((i, s));
        }
    }
    best.map(|(i, _)| i)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const KEYS: usize = 10_000;

    fn key(i: usize) -> Vec<u8> {
        format!("session-{i}").into_bytes()
    }

    fn shares(versions: &[(&str, u64)]) -> Vec<f64> {
        let mut counts = vec![0usize; versions.len()];
        for i in 0..KEYS {
            if let Some(v) = choose(&key(i), versions.iter().copied()) {
                counts[v] += 1;
            }
        }
        counts
            .iter()
            .map(|c| *c as f64 * 100.0 / KEYS as f64)
            .collect()
    }

    #[test]
    fn shares_of_keys_match_weights_within_two_points() {
        for weights in [
            vec![("v1", 90), ("v2", 10)],
            vec![("v1", 50), ("v2", 50)],
            vec![("v1", 99), ("v2", 1)],
            vec![("v1", 20), ("v2", 30), ("v3", 50)],
            vec![("v1", 0), ("v2", 100)],
        ] {
            let total: u64 = weights.iter().map(|(_, w)| w).sum();
            for ((name, w), share) in weights.iter().zip(shares(&weights)) {
                let want = *w as f64 * 100.0 / total as f64;
                assert!(
                    (share - want).abs() <= 2.0,
                    "{name}: {share}% of keys for weight {want}% in {weights:?}"
                );
            }
        }
    }

    #[test]
    fn no_candidate_with_weight_chooses_nothing() {
        assert_eq!(choose(b"k", [("a", 0), ("b", 0)]), None);
        assert_eq!(choose(b"k", []), None);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]

        /// Any weights: shares within 2 points over 10,000 keys.
        #[test]
        fn shares_hold_for_any_weights(a in 1u64..=100, b in 1u64..=100, c in 0u64..=100) {
            let versions = [("stable", a), ("canary", b), ("third", c)];
            let total = (a + b + c) as f64;
            for ((_, w), share) in versions.iter().zip(shares(&versions)) {
                prop_assert!((share - *w as f64 * 100.0 / total).abs() <= 2.0);
            }
        }

        /// Growing the canary (and shrinking the stable version) only moves
        /// keys to the canary, and the same weights give the same choice.
        #[test]
        fn keys_only_move_toward_a_growing_canary(from in 0u64..=99, step in 1u64..=50) {
            let to = (from + step).min(100);
            for i in 0..2_000 {
                let k = key(i);
                let before = choose(&k, [("v1", 100 - from), ("v2", from)]);
                let again = choose(&k, [("v1", 100 - from), ("v2", from)]);
                let after = choose(&k, [("v1", 100 - to), ("v2", to)]);
                prop_assert_eq!(before, again);
                if before == Some(1) {
                    prop_assert_eq!(after, Some(1), "key {} left the canary", i);
                }
            }
        }
    }
}
