//! Wave sizes: cumulative percentages of the targets, rounded up, empty
//! waves skipped.

/// The waves of a rollout when none are given: 1, 5, 25, 50 and 100 percent.
pub const DEFAULT_WAVES: [u32; 5] = [1, 5, 25, 50, 100];

/// How many targets have been reached after each wave: `ceil(targets ×
/// percent / 100)`, for each cumulative percent.
fn reached(targets: usize, percents: &[u32]) -> Vec<usize> {
    percents
        .iter()
        .map(|p| (targets * *p as usize).div_ceil(100).min(targets))
        .collect()
}

/// The waves of `targets` (in order) for cumulative `percents`: each wave
/// the targets it adds, with the percent that ends it. A percent that adds
/// no target is skipped. `percents` must be checked first ([`check`]).
pub fn split<T: Clone>(targets: &[T], percents: &[u32]) -> Vec<(u32, Vec<T>)> {
    let mut waves = Vec::new();
    let mut from = 0;
    for (percent, to) in percents.iter().zip(reached(targets.len(), percents)) {
        if to > from {
            waves.push((*percent, targets[from..to].to_vec()));
            from = to;
        }
    }
    waves
}

/// What is wrong with a list of cumulative percentages, if anything: each
/// 1 to 100, increasing, the last 100, at most `max` of them.
pub fn check(percents: &[u32], max: usize) -> Result<(), String> {
    if percents.is_empty() {
        return Err("no wave given".into());
    }
    if percents.len() > max {
        return Err(format!("{} waves, at most {max}", percents.len()));
    }
    let mut last = 0;
    for p in percents {
        if *p == 0 || *p > 100 {
            return Err(format!("{p} must be 1 to 100"));
        }
        if *p <= last {
            return Err(format!(
                "{p} does not increase on the wave before ({last}); waves are cumulative percentages"
            ));
        }
        last = *p;
    }
    if last != 100 {
        return Err(format!(
            "the last wave is {last}%, so some targets would never be reached; end with 100"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sizes(targets: usize, percents: &[u32]) -> Vec<usize> {
        let all: Vec<usize> = (0..targets).collect();
        split(&all, percents).iter().map(|(_, w)| w.len()).collect()
    }

    #[test]
    fn default_waves_of_one_hundred_targets_are_1_4_20_25_50() {
        assert_eq!(sizes(100, &DEFAULT_WAVES), [1, 4, 20, 25, 50]);
    }

    #[test]
    fn three_targets_give_three_waves_of_one() {
        assert_eq!(sizes(3, &DEFAULT_WAVES), [1, 1, 1]);
        let all = ["a", "b", "c"];
        let waves = split(&all, &DEFAULT_WAVES);
        // The waves that add nobody are skipped: 5% and 25% round up to 1.
        let percents: Vec<u32> = waves.iter().map(|(p, _)| *p).collect();
        assert_eq!(percents, [1, 50, 100]);
        assert_eq!(waves[1].1, ["b"]);
    }

    #[test]
    fn one_target_is_one_wave() {
        assert_eq!(sizes(1, &DEFAULT_WAVES), [1]);
        assert_eq!(split(&["a"], &DEFAULT_WAVES)[0].0, 1);
    }

    #[test]
    fn seven_targets_round_up_each_cumulative_share() {
        // ceil(0.07)=1, ceil(0.35)=1, ceil(1.75)=2, ceil(3.5)=4, 7
        assert_eq!(sizes(7, &DEFAULT_WAVES), [1, 1, 2, 3]);
        assert_eq!(sizes(7, &[10, 50, 100]), [1, 3, 3]);
    }

    #[test]
    fn a_thousand_targets_follow_the_percentages_exactly() {
        assert_eq!(sizes(1000, &DEFAULT_WAVES), [10, 40, 200, 250, 500]);
        assert_eq!(sizes(1000, &[1, 100]), [10, 990]);
    }

    #[test]
    fn every_target_is_in_exactly_one_wave_in_order() {
        for n in [1, 2, 3, 7, 10, 99, 100, 101, 1000] {
            for percents in [&DEFAULT_WAVES[..], &[10, 50, 100], &[100], &[33, 66, 100]] {
                let all: Vec<usize> = (0..n).collect();
                let flat: Vec<usize> = split(&all, percents)
                    .into_iter()
                    .flat_map(|(_, w)| w)
                    .collect();
                assert_eq!(flat, all, "{n} targets, waves {percents:?}");
            }
        }
    }

    #[test]
    fn percentages_must_increase_to_100() {
        assert_eq!(check(&DEFAULT_WAVES, 20), Ok(()));
        assert_eq!(check(&[100], 20), Ok(()));
        assert!(check(&[], 20).is_err());
        assert!(check(&[0, 100], 20)
            .expect_err("rejected")
            .contains("1 to 100"));
        assert!(check(&[50, 50, 100], 20)
            .expect_err("rejected")
            .contains("increase"));
        assert!(check(&[10, 50], 20)
            .expect_err("rejected")
            .contains("end with 100"));
        assert!(check(&[10, 101], 20).is_err());
        let many: Vec<u32> = (80..=100).collect();
        assert_eq!(
            check(&many, 20).expect_err("rejected"),
            "21 waves, at most 20"
        );
    }
}
