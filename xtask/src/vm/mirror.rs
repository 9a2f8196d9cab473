//! Which Debian mirror the guest's root file system comes from: the one this
//! host's apt already uses for the guest's suite (deb822 `.sources` files
//! or one-line `.list` entries), so a machine behind a local mirror or
//! proxy builds the guest from the same place it installs packages from.

use std::fs;
use std::path::PathBuf;

use anyhow::{Result, bail};

/// The first mirror of `suite` with the `main` component in apt's sources
/// (`/etc/apt/sources.list`, then `/etc/apt/sources.list.d/*`).
pub fn for_suite(suite: &str) -> Result<String> {
    let mut files = vec![PathBuf::from("/etc/apt/sources.list")];
    let mut extra: Vec<PathBuf> = fs::read_dir("/etc/apt/sources.list.d")
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).collect())
        .unwrap_or_default();
    extra.sort();
    files.extend(extra);
    for file in &files {
        let Ok(text) = fs::read_to_string(file) else {
            continue;
        };
        let found = match file.extension().and_then(|e| e.to_str()) {
            Some("sources") => from_deb822(&text, suite),
            _ => from_one_line(&text, suite),
        };
        if let Some(uri) = found {
            return Ok(uri);
        }
    }
    bail!(
        "no apt source for Debian {suite} (main) in {}",
        files
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// `deb URI SUITE COMPONENT...` lines (options in brackets allowed).
fn from_one_line(text: &str, suite: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let line = line.split('#').next().unwrap_or_default();
        let mut words = line.split_whitespace().peekable();
        if words.next() != Some("deb") {
            return None;
        }
        if words.peek().is_some_and(|w| w.starts_with('[')) {
            // skip "[arch=amd64 signed-by=...]"
            for w in words.by_ref() {
                if w.ends_with(']') {
                    break;
                }
            }
        }
        let uri = words.next()?;
        let s = words.next()?;
        (s == suite && words.any(|c| c == "main")).then(|| uri.to_owned())
    })
}

/// deb822 stanzas: `Types: deb`, `URIs:`, `Suites:`, `Components:`.
fn from_deb822(text: &str, suite: &str) -> Option<String> {
    text.split("\n\n").find_map(|stanza| {
        let field = |name: &str| -> Vec<&str> {
            stanza
                .lines()
                .filter(|l| !l.trim_start().starts_with('#'))
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.trim().eq_ignore_ascii_case(name).then_some(v)
                })
                .map(|v| v.split_whitespace().collect())
                .unwrap_or_default()
        };
        let is_deb = field("Types").contains(&"deb");
        let ok =
            is_deb && field("Suites").contains(&suite) && field("Components").contains(&"main");
        ok.then(|| field("URIs").first().map(|u| (*u).to_owned()))
            .flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deb822_picks_the_suite_not_security_or_updates_only() {
        let text = "Types: deb\n# http://snapshot.example/archive\nURIs: http://mirror.example/debian\n\
                    Suites: bookworm bookworm-updates\nComponents: main\n\n\
                    Types: deb\nURIs: http://mirror.example/debian-security\n\
                    Suites: bookworm-security\nComponents: main\n";
        assert_eq!(
            from_deb822(text, "bookworm").as_deref(),
            Some("http://mirror.example/debian")
        );
        assert_eq!(from_deb822(text, "trixie"), None);
        let src_only =
            "Types: deb-src\nURIs: http://x/debian\nSuites: bookworm\nComponents: main\n";
        assert_eq!(from_deb822(src_only, "bookworm"), None);
    }

    #[test]
    fn one_line_entries_with_options_and_comments() {
        let text = "# deb http://old/debian bookworm main\n\
                    deb https://packages.example/apt cloud-sdk-bookworm main\n\
                    deb [arch=amd64 signed-by=/k.gpg] http://mirror.example/debian bookworm contrib main\n";
        assert_eq!(
            from_one_line(text, "bookworm").as_deref(),
            Some("http://mirror.example/debian")
        );
        assert_eq!(
            from_one_line("deb http://x/debian bookworm contrib\n", "bookworm"),
            None
        );
    }
}
