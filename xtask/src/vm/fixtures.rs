//! The scenarios' recordings as replay fixtures for the engine's tests:
//! `detector/tests/fixtures/vm/<scenario>.rec.gz` and a README saying what
//! each holds and must give.
//!
//! Gzipped: a recording of a few seconds of an idle guest is 0.3-2 MB (every
//! sched_switch of every task, each record self-describing CBOR), about 20
//! times less compressed; `gzip -n` keeps the bytes reproducible.

use std::fmt::Write as _;
use std::fs;
use std::path::Path;
use std::process::Command;

use anyhow::{Context as _, Result, bail};

use crate::vm::events::Trace;
use crate::vm::guests::Guest;
use crate::vm::scenarios::{DETECTOR_FLAGS, Scenario};

/// One saved recording, and what replaying it gave with this build.
struct Saved {
    scenario: &'static Scenario,
    gave: Option<Vec<String>>,
}

pub fn save(guests: &[Guest], dest: &Path, release: &str, detector: &Path) -> Result<()> {
    if let Some(guest) = guests.iter().find(|g| !g.finished()) {
        bail!("no fixtures saved: guest {} did not finish", guest.number);
    }
    fs::create_dir_all(dest)?;
    let mut total = 0;
    let mut saved = Vec::new();
    let ran = guests
        .iter()
        .flat_map(|g| g.scenarios.iter().map(move |s| (g.share(), *s)));
    for (share, s) in ran {
        let dir = share.join("scenarios").join(s.name);
        if fs::read_to_string(dir.join("verdict"))
            .unwrap_or_default()
            .trim()
            != "ok"
        {
            eprintln!(
                "vm: no fixture for {}: the race did not happen as scripted",
                s.name
            );
            continue;
        }
        let record = dir.join("trace.rec");
        let out = Command::new("gzip")
            .args(["-9", "-n", "-c"])
            .arg(&record)
            .output()
            .context("cannot start gzip")?;
        if !out.status.success() {
            bail!("gzip {}: {}", s.name, String::from_utf8_lossy(&out.stderr));
        }
        fs::write(dest.join(format!("{}.rec.gz", s.name)), &out.stdout)?;
        total += out.stdout.len();
        let gave = Trace::replay(detector, &record, DETECTOR_FLAGS)
            .ok()
            .map(|t| t.finding_kinds());
        saved.push(Saved { scenario: s, gave });
    }
    fs::write(dest.join("README.md"), readme(&saved, release))?;
    fs::write(dest.join("expected.json"), expected(&saved)?)?;
    eprintln!("vm: fixtures in {} ({} KiB)", dest.display(), total / 1024);
    Ok(())
}

fn kinds(kinds: &[&str]) -> String {
    if kinds.is_empty() {
        return "none".to_owned();
    }
    kinds
        .iter()
        .map(|k| format!("`{k}`"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// What each recording must give, for the engine's tests to check:
/// `{"flags": ..., "scenarios": {name: {"must": [...], "may": [...],
/// "indeterminate": [rules]}}}`.
fn expected(saved: &[Saved]) -> Result<String> {
    let scenarios: serde_json::Map<String, serde_json::Value> = saved
        .iter()
        .map(|Saved { scenario: sc, .. }| {
            (
                sc.name.to_owned(),
                serde_json::json!({
                    "must": sc.findings,
                    "may": sc.also,
                    "indeterminate": sc.indeterminate,
                }),
            )
        })
        .collect();
    let doc = serde_json::json!({"flags": DETECTOR_FLAGS, "scenarios": scenarios});
    Ok(serde_json::to_string_pretty(&doc)? + "\n")
}

fn readme(saved: &[Saved], release: &str) -> String {
    let mut s = String::new();
    let _ = write!(
        s,
        "# VM bench recordings\n\n\
         Written by `cargo xtask vm-test --save-fixtures`: one `detector trace \
         --record` session per scenario of the VM bench, on Debian's stock \
         {release} kernel under qemu, gzipped (`gunzip -c` or any gzip reader \
         gives the record file `detector replay` reads). Each session ran \
         with `{DETECTOR_FLAGS}`; replay them with the same thresholds. The \
         races come from `tests/kmod` (the racebench module); the guest \
         steps from `tests/vm`.\n\n\
         The last column is what `detector replay` of the build that recorded \
         them gave; where it differs from the column before, that build was \
         wrong.\n\n\
         | recording | what happens | findings it must give | replay gave |\n\
         |---|---|---|---|\n"
    );
    for Saved { scenario: sc, gave } in saved {
        let mut must = kinds(sc.findings);
        if !sc.also.is_empty() {
            must.push_str(&format!(" (may add {})", kinds(sc.also)));
        }
        if !sc.indeterminate.is_empty() {
            must.push_str(&format!(", indeterminate: {}", kinds(sc.indeterminate)));
        }
        let gave = match gave {
            Some(found) => kinds(&found.iter().map(String::as_str).collect::<Vec<_>>()),
            None => "(replay failed)".to_owned(),
        };
        let _ = writeln!(
            s,
            "| `{}.rec.gz` | {} | {must} | {gave} |",
            sc.name, sc.about
        );
    }
    s
}
