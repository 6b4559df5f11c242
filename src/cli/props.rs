//! Property tests of the duration flags (issue 13): any text is a duration or a usage error
//! with examples, never a panic; `<n><unit>` means n units; and a duration flag's value is
//! accepted at start-up only within its bounds, where no deadline arithmetic can overflow.

use std::time::{Duration, Instant, SystemTime};

use clap::Parser;
use proptest::prelude::*;

use super::args::Cli;
use super::config::{check_durations, CENTURY, DAY, HOUR};
use super::values::parse_duration;
use crate::model::props::any_text;

/// Units and their length, as `--help` names them (`500ms`, `15s`, `30d`) and more.
const UNITS: [(&str, u64); 9] = [
    ("ms", 1),
    ("s", 1000),
    ("sec", 1000),
    ("m", 60_000),
    ("min", 60_000),
    ("h", 3_600_000),
    ("hours", 3_600_000),
    ("d", 86_400_000),
    ("w", 604_800_000),
];

/// `n` units, or `None` when that many seconds overflow.
fn expected(n: u64, unit_ms: u64) -> Option<Duration> {
    if unit_ms == 1 {
        return Some(Duration::from_millis(n));
    }
    n.checked_mul(unit_ms / 1000).map(Duration::from_secs)
}

/// The duration flags of `herald serve`, with the most each may be.
const FLAGS: [(&str, Duration); 8] = [
    ("--heartbeat", HOUR),
    ("--upstream-timeout", HOUR),
    ("--upstream-idle-timeout", DAY),
    ("--send-timeout", HOUR),
    ("--body-timeout", HOUR),
    ("--drain-timeout", HOUR),
    ("--retention", CENTURY),
    ("--jwt-leeway", DAY),
];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Any text: a duration, or a usage error that shows examples; never a panic.
    #[test]
    fn any_text_is_a_duration_or_a_usage_error(s in prop_oneof![
        any_text(),
        "[ \t]?[0-9]{1,25}[ ]?(ms|s|m|h|d|w|y|M|us|ns|x|)[ \t]?",
        "([0-9]{1,3}(h|m|s|ms) ?){1,4}",
        "-?[0-9.]{1,6}(s|d)",
    ]) {
        if let Err(message) = parse_duration(&s) {
            prop_assert!(message.ends_with("(examples: 500ms, 15s, 30d)"), "{}", message);
        }
    }

    /// `<n><unit>` (with or without a space, whitespace around) is exactly n units, never
    /// a wrapped or rounded value; up to a century (the largest bound of any flag) it always
    /// parses, and beyond what the parser represents it is an error.
    #[test]
    fn n_units_is_n_times_the_unit(
        n in prop_oneof![0u64..100_000, any::<u64>(), 0u64..CENTURY.as_secs() * 1000],
        (unit, unit_ms) in prop::sample::select(UNITS.to_vec()),
        space in "( ?)",
        pad in "[ \t]{0,2}",
    ) {
        let text = format!("{pad}{n}{space}{unit}{pad}");
        let exact = expected(n, unit_ms);
        match parse_duration(&text) {
            Ok(d) => prop_assert_eq!(Some(d), exact, "{}", text),
            Err(e) => prop_assert!(exact.is_none_or(|d| d > CENTURY), "{}: {}", text, e),
        }
    }

    /// A duration flag is accepted at start-up only within its bounds, so every deadline
    /// built from it (`now + d`) exists; outside them, the one-line error names the flag.
    #[test]
    fn duration_flags_stay_within_bounds(
        (flag, max) in prop::sample::select(FLAGS.to_vec()),
        value in prop_oneof![
            (0u64..5_000_000, prop::sample::select(UNITS.to_vec()))
                .prop_map(|(n, (unit, _))| format!("{n}{unit}")),
            "[0-9]{1,20}(ms|s|m|h|d|w|y)",
            any_text(),
        ],
    ) {
        let Ok(cli) = Cli::try_parse_from(["herald", flag, value.as_str()]) else {
            prop_assert!(parse_duration(&value).is_err(), "{} {:?} refused", flag, value);
            return Ok(());
        };
        let d = parse_duration(&value).expect("clap took it");
        match check_durations(&cli.serve) {
            Ok(()) => {
                prop_assert!(d <= max, "{} {:?} accepted", flag, value);
                prop_assert!(Instant::now().checked_add(d).is_some());
                prop_assert!(SystemTime::now().checked_add(d).is_some());
            }
            Err(e) => {
                prop_assert!(e.0.starts_with(&format!("{flag} must be between")), "{}", e.0);
                prop_assert!(d > max || d < Duration::from_secs(1), "{} {:?} refused", flag, value);
            }
        }
    }
}
