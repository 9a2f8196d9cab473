//! The one table `cargo xtask bench` prints: every figure with detector's
//! value, the bpftrace peer's where it has one, and the goal from issue 9.

use std::fmt::Write as _;

pub struct Row {
    pub figure: String,
    pub detector: String,
    pub peer: String,
    pub goal: String,
    /// The number checked for sanity (finite, in its range).
    pub value: f64,
    pub sane: std::ops::Range<f64>,
}

impl Row {
    pub fn new(figure: impl Into<String>, value: f64, detector: String) -> Self {
        Self {
            figure: figure.into(),
            detector,
            peer: String::new(),
            goal: String::new(),
            value,
            sane: f64::MIN_POSITIVE..f64::INFINITY,
        }
    }

    pub fn peer(mut self, peer: String) -> Self {
        self.peer = peer;
        self
    }

    pub fn goal(mut self, goal: &str) -> Self {
        self.goal = goal.to_owned();
        self
    }

    /// Values outside `range` mean the measurement went wrong.
    pub fn sane(mut self, range: std::ops::Range<f64>) -> Self {
        self.sane = range;
        self
    }

    pub fn is_sane(&self) -> bool {
        self.value.is_finite() && self.sane.contains(&self.value)
    }
}

/// Markdown, so that docs/performance.md can hold it as printed.
pub fn render(machine: &str, notes: &[String], rows: &[Row]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "Measured on {machine}.\n");
    let _ = writeln!(out, "| figure | detector | bpftrace peer | goal |");
    let _ = writeln!(out, "|---|---|---|---|");
    for r in rows {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} |",
            r.figure, r.detector, r.peer, r.goal
        );
    }
    for note in notes {
        let _ = writeln!(out, "\n{note}");
    }
    out
}

pub fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let mid = v.len() / 2;
    if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    }
}

/// `285k`, `1.2M`.
pub fn si(x: f64) -> String {
    if x >= 1e6 {
        format!("{:.2}M", x / 1e6)
    } else if x >= 1e3 {
        format!("{:.0}k", x / 1e3)
    } else {
        format!("{x:.0}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(vec![]).is_nan());
    }

    #[test]
    fn sanity_ranges() {
        let r = Row::new("ratio", 0.9, "0.90".into()).sane(0.0..2.0);
        assert!(r.is_sane());
        assert!(!Row::new("ratio", f64::NAN, String::new()).is_sane());
        assert!(!Row::new("ratio", 0.0, String::new()).is_sane());
        assert!(
            !Row::new("ratio", 2.5, String::new())
                .sane(0.0..2.0)
                .is_sane()
        );
    }

    #[test]
    fn table_is_markdown() {
        let rows = [Row::new("x", 1.0, "1".into()).peer("2".into()).goal("3")];
        let text = render("here", &[], &rows);
        assert!(text.contains("| x | 1 | 2 | 3 |"), "{text}");
    }
}
