//! Weighted selection: a smooth weighted round-robin schedule computed once
//! per table change, walked by one atomic counter on the request path.
//!
//! Weights 1:3 give the cycle `B A B B` rather than `A B B B`, so a burst of
//! requests is spread as evenly as the weights allow, and any run of
//! `total weight` requests matches the weights exactly.

/// Longest schedule kept; larger totals are scaled down to fit, which keeps
/// every positive weight at least 1.
pub const MAX_SCHEDULE: u64 = 10_000;

/// Indices into the weight list, in the order requests should use them.
/// Empty when no weight is positive.
pub fn schedule(weights: &[u32]) -> Vec<usize> {
    let weights = fit(weights);
    let total: i64 = weights.iter().map(|w| i64::from(*w)).sum();
    let mut current = vec![0i64; weights.len()];
    let mut order = Vec::with_capacity(usize::try_from(total).unwrap_or(0));
    for _ in 0..total {
        let mut best: Option<usize> = None;
        for (i, w) in weights.iter().enumerate() {
            if *w == 0 {
                continue;
            }
            current[i] += i64::from(*w);
            if best.is_none_or(|b| current[i] > current[b]) {
                best = Some(i);
            }
        }
        if let Some(b) = best {
            current[b] -= total;
            order.push(b);
        }
    }
    order
}

/// Divide by the greatest common divisor, then scale down if the total is
/// still above [`MAX_SCHEDULE`].
fn fit(weights: &[u32]) -> Vec<u32> {
    let divisor = weights.iter().fold(0, |g, w| gcd(g, *w)).max(1);
    let reduced: Vec<u32> = weights.iter().map(|w| w / divisor).collect();
    let total: u64 = reduced.iter().map(|w| u64::from(*w)).sum();
    if total <= MAX_SCHEDULE {
        return reduced;
    }
    reduced
        .iter()
        .map(|w| match *w {
            0 => 0,
            w => u32::try_from(u64::from(w) * MAX_SCHEDULE / total)
                .unwrap_or(u32::MAX)
                .max(1),
        })
        .collect()
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(weights: &[u32], picks: usize) -> Vec<usize> {
        let s = schedule(weights);
        let mut c = vec![0; weights.len()];
        for i in 0..picks {
            c[s[i % s.len()]] += 1;
        }
        c
    }

    #[test]
    fn no_positive_weight_gives_an_empty_schedule() {
        assert!(schedule(&[]).is_empty());
        assert!(schedule(&[0, 0]).is_empty());
    }

    #[test]
    fn a_cycle_matches_the_weights_exactly() {
        assert_eq!(counts(&[1, 3], 4), [1, 3]);
        assert_eq!(counts(&[25, 75], 2000), [500, 1500]);
        assert_eq!(counts(&[10, 0, 90], 100), [10, 0, 90]);
        assert_eq!(counts(&[5, 5, 5], 3), [1, 1, 1]);
    }

    #[test]
    fn the_schedule_is_smooth_and_reduced() {
        assert_eq!(schedule(&[1, 3]), [1, 0, 1, 1]);
        assert_eq!(schedule(&[50, 50]), [0, 1]);
        assert_eq!(schedule(&[100]), [0]);
    }

    #[test]
    fn huge_totals_are_scaled_but_keep_every_backend() {
        let s = schedule(&[u32::MAX, 1, 7]);
        assert!(s.len() as u64 <= MAX_SCHEDULE + 2);
        assert!(s.contains(&1) && s.contains(&2));
    }
}
