//! Findings for people: a header, the explanation, the interleaving as one
//! column per side in time order (the way kernel bug reports draw races),
//! then each side's kernel stack.
//!
//! ```text
//! lost-wakeup [error] at 1234.500000000
//!   bio 0xffff888004a1c000 on 8:0
//!   oracle/21356 sleeps in iowait although ...
//!
//!   waiter: oracle/21356 cpu 10            | completer: interrupt on cpu 4
//!   ---------------------------------------+---------------------------------------
//!   +0.000000 submits bio 0xffff888004a... |
//!                                          | +0.000120 bio 0xffff888004a1c000
//!                                          |   completes (request completion)
//!   +0.000150 sleeps uninterruptibly in    |
//!     io_schedule() (D, iowait)            |
//! ```

use std::fmt::Write as _;

use super::frames;
use crate::engine::{Context, Finding, Side, secs};
use crate::event::StackTable;

/// Width of the whole diagram.
const WIDTH: usize = 100;
/// Frames shown per stack.
const MAX_FRAMES: usize = 24;

/// The text of `finding`, ending with a newline.
pub fn render(finding: &Finding, stacks: &StackTable) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} [{}] at {}",
        finding.kind,
        finding.severity.name(),
        secs(finding.ts)
    );
    let _ = writeln!(out, "  {}", object_line(finding, stacks));
    for line in wrap(&finding.explanation, WIDTH - 2) {
        let _ = writeln!(out, "  {line}");
    }
    out.push('\n');
    diagram(&mut out, finding);
    for side in &finding.sides {
        let Some(id) = side.stack else {
            continue;
        };
        let _ = writeln!(
            out,
            "\n  {} stack ({}, at {}):",
            side.role,
            who(side),
            secs(side.ts)
        );
        match frames(stacks, id) {
            Some(frames) if !frames.is_empty() => {
                for frame in frames.iter().take(MAX_FRAMES) {
                    let _ = writeln!(out, "      {frame}");
                }
                if frames.len() > MAX_FRAMES {
                    let _ = writeln!(out, "      ... {} more", frames.len() - MAX_FRAMES);
                }
            }
            _ => {
                let _ = writeln!(out, "      (stack {} not available)", id.0);
            }
        }
    }
    out
}

fn object_line(finding: &Finding, stacks: &StackTable) -> String {
    let o = &finding.object;
    let mut line = format!("{} {}", o.kind.name(), o.addr);
    if let Some(dev) = o.dev {
        let _ = write!(line, " on {dev}");
    }
    if let Some(disk) = o.disk {
        let _ = write!(line, " (disk {disk})");
    }
    if let Some(end_io) = o.end_io {
        let _ = write!(line, ", end_io {}", stacks.describe(end_io));
    }
    if let Some(tid) = o.owner_tid {
        let owner = finding
            .sides
            .iter()
            .find(|s| s.tid == tid && s.context == Context::Task)
            .map_or_else(|| format!("tid {tid}"), |s| format!("{}/{}", s.comm, s.tid));
        let _ = write!(line, ", in the kernel stack of {owner}");
    }
    line
}

fn who(side: &Side) -> String {
    match side.context {
        Context::Task => format!(
            "{}/{} pid {} cpu {}",
            side.comm, side.tid, side.pid, side.cpu
        ),
        Context::Interrupt if side.tid == 0 => format!("interrupt on cpu {} (idle)", side.cpu),
        Context::Interrupt => format!("interrupt on cpu {} (over {})", side.cpu, side.comm),
    }
}

/// The interleaving, one column per side.
fn diagram(out: &mut String, finding: &Finding) {
    let n = finding.sides.len().max(1);
    let col = (WIDTH - 2 - 3 * (n - 1)) / n;
    let heads: Vec<Vec<String>> = finding
        .sides
        .iter()
        .map(|s| wrap(&format!("{}: {}", s.role, who(s)), col))
        .collect();
    rows(out, &heads, col);
    let rule: Vec<String> = (0..n).map(|_| "-".repeat(col)).collect();
    let _ = writeln!(out, "  {}", rule.join("-+-"));
    let origin = finding.interleaving.first().map_or(finding.ts, |s| s.ts);
    for step in &finding.interleaving {
        let rel = step.ts.saturating_sub(origin);
        let text = format!(
            "+{}.{:06} {}",
            rel / 1_000_000_000,
            rel % 1_000_000_000 / 1000,
            step.text
        );
        let mut lines = wrap(&text, col);
        for line in lines.iter_mut().skip(1) {
            line.insert_str(0, "  ");
        }
        let mut cells: Vec<Vec<String>> = vec![Vec::new(); n];
        cells[step.side.min(n - 1)] = lines;
        rows(out, &cells, col);
    }
}

/// Prints cells side by side, padding each column to `col`.
fn rows(out: &mut String, cells: &[Vec<String>], col: usize) {
    let height = cells.iter().map(Vec::len).max().unwrap_or(0);
    for i in 0..height {
        let line: Vec<String> = cells
            .iter()
            .map(|c| {
                let text = c.get(i).map_or("", String::as_str);
                format!("{text:<col$}")
            })
            .collect();
        let _ = writeln!(out, "  {}", line.join(" | ").trim_end());
    }
}

/// Greedy word wrap; words longer than `width` are cut. Continuation lines
/// leave room for a two-space indent.
fn wrap(text: &str, width: usize) -> Vec<String> {
    let width = width.max(8);
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        let limit = if lines.is_empty() { width } else { width - 2 };
        let mut word = word;
        while word.chars().count() > limit {
            if !line.is_empty() {
                lines.push(std::mem::take(&mut line));
            }
            let cut = word
                .char_indices()
                .nth(limit)
                .map_or(word.len(), |(i, _)| i);
            lines.push(word[..cut].to_owned());
            word = &word[cut..];
        }
        let needed = if line.is_empty() {
            word.chars().count()
        } else {
            line.chars().count() + 1 + word.chars().count()
        };
        if needed > limit && !line.is_empty() {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() || lines.is_empty() {
        lines.push(line);
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrap_respects_width() {
        let lines = wrap("one two three four five six seven eight nine ten", 14);
        assert!(lines.iter().all(|l| l.chars().count() <= 14), "{lines:?}");
        assert_eq!(
            lines.join(" "),
            "one two three four five six seven eight nine ten"
        );
        let long = wrap("0xffff888004a1c000ffff", 10);
        assert!(long.iter().all(|l| l.chars().count() <= 10), "{long:?}");
        assert_eq!(long.concat(), "0xffff888004a1c000ffff");
        assert_eq!(wrap("", 10), [""]);
    }
}
