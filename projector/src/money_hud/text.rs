//! Number formatting for operator-facing sentences. Fixed formats only (no locale), so texts are
//! as stable as the numbers.

/// `$1.23` for amounts of a dollar or more, `$0.012346` below, `-$…` for negatives.
pub fn usd(x: f64) -> String {
    let sign = if x < 0.0 { "-" } else { "" };
    let a = x.abs();
    if a >= 1.0 {
        format!("{sign}${a:.2}")
    } else {
        format!("{sign}${a:.6}")
    }
}

/// `5.0%`: a rate as a percentage with one decimal.
pub fn pct(rate: f64) -> String {
    format!("{:.1}%", rate * 100.0)
}

/// `0.700`: a score with three decimals.
pub fn score(value: f64) -> String {
    format!("{value:.3}")
}

/// A value and the limit it is compared with, as percentages with enough decimals that the two
/// differ on the page ("5.03% is above the 5.00% limit", not "5.0% … 5.0%").
pub fn pct_pair(value: f64, limit: f64) -> (String, String) {
    distinct_pair(value * 100.0, limit * 100.0, 1, "%")
}

/// A score and its floor with enough decimals to differ (three at least).
pub fn score_pair(value: f64, floor: f64) -> (String, String) {
    distinct_pair(value, floor, 3, "")
}

fn distinct_pair(value: f64, limit: f64, min_decimals: usize, suffix: &str) -> (String, String) {
    const MAX_DECIMALS: usize = 6;
    let mut decimals = min_decimals;
    loop {
        let v = format!("{value:.decimals$}{suffix}");
        let l = format!("{limit:.decimals$}{suffix}");
        if v != l || decimals >= MAX_DECIMALS {
            return (v, l);
        }
        decimals += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usd_keeps_cents_for_dollars_and_micro_dollars_below() {
        assert_eq!(usd(12.3456), "$12.35");
        assert_eq!(usd(0.0123456), "$0.012346");
        assert_eq!(usd(-0.5), "-$0.500000");
    }

    #[test]
    fn a_value_just_over_its_limit_shows_enough_decimals_to_differ() {
        assert_eq!(
            pct_pair(0.0503, 0.05),
            ("5.03%".to_string(), "5.00%".to_string())
        );
        assert_eq!(
            pct_pair(0.31, 0.05),
            ("31.0%".to_string(), "5.0%".to_string())
        );
        assert_eq!(
            score_pair(0.6999, 0.7),
            ("0.6999".to_string(), "0.7000".to_string())
        );
    }
}
