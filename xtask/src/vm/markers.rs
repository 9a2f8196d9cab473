//! Which step or test was running when: the guest's `markers.tsv` (lines
//! `start NAME NS` and `end NAME NS STATUS`, CLOCK_MONOTONIC nanoseconds,
//! the clock detector stamps events with).

use std::fs;
use std::path::Path;

use anyhow::{Context as _, Result, bail};

/// One marked span. `end` is `None` when the guest never marked its end
/// (it stopped, or wedged, inside).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Span {
    pub name: String,
    pub start: u64,
    pub end: Option<u64>,
    /// The exit status at the end mark, when one was given.
    pub status: Option<i32>,
}

impl Span {
    pub fn contains(&self, ts: u64) -> bool {
        ts >= self.start && self.end.is_none_or(|end| ts <= end)
    }
}

#[derive(Debug, Default)]
pub struct Markers {
    /// In start order; spans may nest (a workload holds its steps).
    pub spans: Vec<Span>,
}

impl Markers {
    pub fn load(path: &Path) -> Result<Self> {
        let text =
            fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("in {}", path.display()))
    }

    pub fn parse(text: &str) -> Result<Self> {
        let mut spans: Vec<Span> = Vec::new();
        for (n, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let fields: Vec<&str> = line.split('\t').collect();
            let (kind, name, ns) = match fields[..] {
                [kind, name, ns, ..] => (kind, name, ns),
                _ => bail!("line {}: expected KIND NAME NS: {line:?}", n + 1),
            };
            let ns: u64 = ns
                .parse()
                .with_context(|| format!("line {}: bad time {ns:?}", n + 1))?;
            match kind {
                "start" => spans.push(Span {
                    name: name.to_owned(),
                    start: ns,
                    end: None,
                    status: None,
                }),
                "end" => {
                    let open = spans
                        .iter_mut()
                        .rev()
                        .find(|s| s.name == name && s.end.is_none())
                        .with_context(|| {
                            format!("line {}: end of {name} without a start", n + 1)
                        })?;
                    open.end = Some(ns);
                    open.status = fields.get(3).and_then(|s| s.parse().ok());
                }
                other => bail!("line {}: unknown marker {other:?}", n + 1),
            }
        }
        Ok(Self { spans })
    }

    /// The innermost span running at `ts` (the latest started of those
    /// containing it), if any.
    pub fn at(&self, ts: u64) -> Option<&Span> {
        self.spans.iter().rev().find(|s| s.contains(ts))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TSV: &str = "start\tmd_raid1\t100\nstart\tcreate\t110\nend\tcreate\t150\t0\n\
                       start\tcheck\t200\nend\tcheck\t300\t1\nstart\tstop\t310\n";

    #[test]
    fn nested_spans_and_the_innermost_wins() {
        let m = Markers::parse(TSV).unwrap();
        assert_eq!(m.spans.len(), 4);
        assert_eq!(m.at(120).unwrap().name, "create");
        assert_eq!(m.at(160).unwrap().name, "md_raid1");
        assert_eq!(m.at(250).unwrap().status, Some(1));
        // never ended: open to the end of the session
        assert_eq!(m.at(10_000).unwrap().name, "stop");
        assert!(m.at(50).is_none());
    }

    #[test]
    fn bad_lines_name_their_line() {
        let e = Markers::parse("start\tx\t1\nend\ty\t2\n").unwrap_err();
        assert!(format!("{e:#}").contains("line 2"), "{e:#}");
        let e = Markers::parse("start\tx\tsoon\n").unwrap_err();
        assert!(format!("{e:#}").contains("line 1"), "{e:#}");
        assert!(Markers::parse("begin\tx\t1\n").is_err());
    }
}
