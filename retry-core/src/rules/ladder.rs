//! The delay ladder: any delay with a fixed set of tier topics.
//!
//! With [`TopicStrategy::Ladder`](crate::policy::TopicStrategy::Ladder) a listener has one
//! retry topic per tier (e.g. 1 s, 5 s, 17 s, 59 s, 4 m, 17 m, 1 h). A record goes to the
//! largest tier not longer than its remaining delay and waits there until
//! `min(its due time, entry + tier)`; then it hops down to the tier that fits what is left,
//! or, once due, back to the handler. A record due in 1 min 34 s waits once on 59 s, twice
//! on 17 s and once on 1 s.
//!
//! Every record of a tier topic waits exactly that tier's delay from its entry (only on the
//! smallest tier can it wait less), so a tier topic is FIFO in due order and no record
//! waits behind a longer one by more than one tier delay. Delays beyond the top tier repeat
//! the top tier. Hops keep the attempt number; the path of tiers is kept in a bounded header.

use std::time::Duration;

use crate::error::ConfigError;

/// The default tiers: roughly ×3.5 apart, from a second to an hour.
pub const DEFAULT_TIERS: [Duration; 7] = [
    Duration::from_secs(1),
    Duration::from_secs(5),
    Duration::from_secs(17),
    Duration::from_secs(59),
    Duration::from_secs(4 * 60),
    Duration::from_secs(17 * 60),
    Duration::from_secs(60 * 60),
];

/// The most tiers a ladder may have (a tier's index travels in one byte of the path).
pub const MAX_TIERS: usize = 32;

/// The most hops the path header keeps (the latest ones).
pub const MAX_PATH: usize = 16;

/// Checks a ladder's tiers: at least one, at most [`MAX_TIERS`], each at least 1 ms and a
/// whole number of milliseconds, strictly increasing. Errors name the setting
/// `ladder_tiers`, with the index of the tier at fault.
pub fn check(tiers: &[Duration]) -> Result<(), Vec<ConfigError>> {
    let mut errors = Vec::new();
    if tiers.is_empty() {
        errors.push(ConfigError::new("ladder_tiers", "a ladder needs at least one tier"));
    }
    if tiers.len() > MAX_TIERS {
        errors.push(ConfigError::new("ladder_tiers", format!("at most {MAX_TIERS} tiers, got {}", tiers.len())));
    }
    for (i, tier) in tiers.iter().enumerate() {
        if *tier < Duration::from_millis(1) || tier.subsec_nanos() % 1_000_000 != 0 {
            errors.push(
                ConfigError::new("ladder_tiers", format!("each tier must be a whole number of milliseconds ≥ 1 ms, got {tier:?}")).at(i),
            );
        } else if i > 0 && *tier <= tiers[i - 1] {
            errors.push(
                ConfigError::new("ladder_tiers", format!("tiers must grow strictly: {} follows {}", label(*tier), label(tiers[i - 1])))
                    .at(i),
            );
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

/// A tier's name in its topic: the largest unit that divides it (`500ms`, `5s`, `4m`, `1h`).
pub fn label(tier: Duration) -> String {
    let ms = tier.as_millis();
    match ms {
        0 => "0ms".to_owned(),
        ms if ms % 3_600_000 == 0 => format!("{}h", ms / 3_600_000),
        ms if ms % 60_000 == 0 => format!("{}m", ms / 60_000),
        ms if ms % 1_000 == 0 => format!("{}s", ms / 1_000),
        ms => format!("{ms}ms"),
    }
}

/// The tier for a record with `remaining_ms` to wait: the largest not longer than it, or
/// the smallest when even that one is longer (the record then waits only until it is due).
pub fn tier_for(tiers: &[Duration], remaining_ms: i64) -> usize {
    tiers.iter().rposition(|t| millis(*t) <= remaining_ms).unwrap_or(0)
}

/// Where a record due at `due_at_ms` goes at `now_ms`: its tier and when it leaves that
/// tier, `min(due, now + tier)`.
pub fn enter(tiers: &[Duration], now_ms: i64, due_at_ms: i64) -> (usize, i64) {
    let level = tier_for(tiers, due_at_ms.saturating_sub(now_ms));
    let leave = now_ms.saturating_add(tiers.get(level).map_or(0, |t| millis(*t)));
    (level, leave.min(due_at_ms))
}

/// The path after a hop onto `level`: the latest [`MAX_PATH`] tiers.
pub fn extend_path(path: &[u8], level: usize) -> Vec<u8> {
    let keep = path.len().saturating_sub(MAX_PATH - 1);
    let mut next = path[keep..].to_vec();
    next.push(u8::try_from(level).unwrap_or(u8::MAX));
    next
}

/// A path for people: `17s > 5s > 1s` (an index the ladder does not have reads `?`).
pub fn describe_path(tiers: &[Duration], path: &[u8]) -> String {
    path.iter().map(|&i| tiers.get(usize::from(i)).map_or_else(|| "?".to_owned(), |t| label(*t))).collect::<Vec<_>>().join(" > ")
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const S: i64 = 1_000;

    #[test]
    fn labels_use_the_largest_whole_unit() {
        let labels: Vec<String> = DEFAULT_TIERS.iter().map(|t| label(*t)).collect();
        assert_eq!(labels, ["1s", "5s", "17s", "59s", "4m", "17m", "1h"]);
        assert_eq!(label(Duration::from_millis(1_500)), "1500ms");
        assert_eq!(label(Duration::from_secs(90)), "90s");
    }

    #[test]
    fn the_issue_example_waits_59s_then_17s_twice_then_1s() {
        let mut now = 0;
        let due = 94 * S; // 1 min 34 s
        let mut path = Vec::new();
        while now < due {
            let (level, leave) = enter(&DEFAULT_TIERS, now, due);
            path = extend_path(&path, level);
            now = leave;
        }
        assert_eq!(now, due);
        assert_eq!(describe_path(&DEFAULT_TIERS, &path), "59s > 17s > 17s > 1s");
    }

    #[test]
    fn short_and_past_delays_take_the_smallest_tier_and_leave_when_due() {
        assert_eq!(enter(&DEFAULT_TIERS, 10 * S, 10 * S + 300), (0, 10 * S + 300));
        assert_eq!(enter(&DEFAULT_TIERS, 10 * S, 0), (0, 0));
        assert_eq!(enter(&DEFAULT_TIERS, 0, i64::MAX), (6, 3_600 * S), "beyond the top tier: the top tier repeats");
    }

    #[test]
    fn tiers_are_checked() {
        let s = Duration::from_secs;
        assert!(check(&DEFAULT_TIERS).is_ok());
        assert_eq!(check(&[]).unwrap_err()[0].setting, "ladder_tiers");
        let e = check(&[s(1), s(1), s(5), Duration::ZERO]).unwrap_err();
        assert_eq!(e.iter().map(|e| e.item).collect::<Vec<_>>(), [Some(1), Some(3)]);
        assert!(check(&[Duration::from_micros(1_500)]).is_err());
        assert!(check(&vec![s(1); 40]).is_err());
    }

    #[test]
    fn the_path_keeps_the_latest_hops() {
        let mut path = Vec::new();
        for i in 0..40 {
            path = extend_path(&path, i % 7);
        }
        assert_eq!(path.len(), MAX_PATH);
        assert_eq!(*path.last().unwrap(), (39 % 7) as u8);
    }

    proptest! {
        /// Hopping from tier to tier is never early, ends exactly at the due time, visits
        /// only the ladder's topics and waits at most one tier delay on any topic.
        #[test]
        fn hops_are_never_early_and_always_arrive(start in 0i64..1_000_000, delay in 0i64..20_000_000) {
            let due = start + delay;
            let mut now = start;
            let mut hops = 0;
            loop {
                let (level, leave) = enter(&DEFAULT_TIERS, now, due);
                prop_assert!(level < DEFAULT_TIERS.len());
                prop_assert!(leave <= due, "never beyond the due time");
                prop_assert!(leave - now <= millis(DEFAULT_TIERS[level]));
                prop_assert!(leave >= now);
                hops += 1;
                now = leave;
                if now >= due { break; }
                prop_assert!(hops < 100, "bounded hops");
            }
            prop_assert_eq!(now, due);
        }

        /// On one tier topic, records entering in order leave in order (FIFO in due
        /// order), apart from the smallest tier, where a record may leave earlier than
        /// one ahead of it by less than that tier's delay.
        #[test]
        fn a_tier_topic_is_fifo_in_due_order(entries in proptest::collection::vec((0i64..1_000, 0i64..10_000_000), 2..50)) {
            let mut t = 0;
            let mut leaving: Vec<Vec<i64>> = vec![Vec::new(); DEFAULT_TIERS.len()];
            for (gap, delay) in entries {
                t += gap;
                let (level, leave) = enter(&DEFAULT_TIERS, t, t + delay);
                leaving[level].push(leave);
            }
            for (level, leaves) in leaving.iter().enumerate() {
                for pair in leaves.windows(2) {
                    let slack = if level == 0 { millis(DEFAULT_TIERS[0]) } else { 0 };
                    prop_assert!(pair[1] + slack >= pair[0], "tier {level}: {pair:?}");
                }
            }
        }
    }
}
