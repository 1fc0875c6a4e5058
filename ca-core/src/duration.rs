//! Human durations as written in policies, config and flags: `90s`, `15m`, `24h`, `397d`, `10y`.

use std::fmt;
use std::str::FromStr;

/// A span of time in whole seconds. A year is 365 days.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Duration(u64);

impl Duration {
    /// From seconds.
    pub const fn from_secs(secs: u64) -> Self {
        Duration(secs)
    }

    /// Whole seconds.
    pub fn as_secs(self) -> u64 {
        self.0
    }

    /// As a `time` duration.
    pub fn to_time(self) -> time::Duration {
        time::Duration::seconds(self.0 as i64)
    }
}

/// What a duration must look like, for error messages.
pub const DURATION_FORMAT: &str =
    "a number followed by s, m, h, d or y (e.g. 90s, 15m, 24h, 397d, 10y)";

impl FromStr for Duration {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let bad = || {
            format!(
                "invalid duration \"{}\": expected {DURATION_FORMAT}",
                text.escape_debug()
            )
        };
        let split = text.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        let (number, unit) = text.split_at(split);
        let number: u64 = number.parse().map_err(|_| bad())?;
        let unit_secs = match unit {
            "s" => 1,
            "m" => 60,
            "h" => 3600,
            "d" => 86_400,
            "y" => 365 * 86_400,
            _ => return Err(bad()),
        };
        // Nothing we handle is longer than a century; beyond that is a typo.
        let secs = number
            .checked_mul(unit_secs)
            .filter(|s| *s > 0 && *s <= 100 * 365 * 86_400);
        secs.map(Duration).ok_or_else(|| {
            format!(
                "invalid duration \"{}\": must be more than 0 and at most 100y",
                text.escape_debug()
            )
        })
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.0;
        for (unit, size) in [("y", 365 * 86_400), ("d", 86_400), ("h", 3600), ("m", 60)] {
            if s.is_multiple_of(size) {
                return write!(f, "{}{unit}", s / size);
            }
        }
        write!(f, "{s}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        assert_eq!("397d".parse::<Duration>().unwrap().as_secs(), 397 * 86_400);
        assert_eq!("24h".parse::<Duration>().unwrap().to_string(), "1d");
        assert_eq!("90s".parse::<Duration>().unwrap().to_string(), "90s");
        for bad in ["", "d", "10", "10w", "-1d", "0d", "1000y", "1.5d"] {
            assert!(bad.parse::<Duration>().is_err(), "{bad}");
        }
    }
}
