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

use crate::vm::scenarios::{DETECTOR_FLAGS, Scenario};

pub fn save(
    share: &Path,
    dest: &Path,
    scenarios: &[&'static Scenario],
    release: &str,
) -> Result<()> {
    let status = fs::read_to_string(share.join("status")).unwrap_or_default();
    if status.trim() == "running" || status.trim().is_empty() {
        bail!("no fixtures saved: the guest did not finish");
    }
    fs::create_dir_all(dest)?;
    let mut total = 0;
    for s in scenarios {
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
        let to = dest.join(format!("{}.rec.gz", s.name));
        let out = Command::new("gzip")
            .args(["-9", "-n", "-c"])
            .arg(dir.join("trace.rec"))
            .output()
            .context("cannot start gzip")?;
        if !out.status.success() {
            bail!("gzip {}: {}", s.name, String::from_utf8_lossy(&out.stderr));
        }
        fs::write(&to, &out.stdout)?;
        total += out.stdout.len();
    }
    fs::write(dest.join("README.md"), readme(scenarios, release))?;
    eprintln!("vm: fixtures in {} ({} KiB)", dest.display(), total / 1024);
    Ok(())
}

fn readme(scenarios: &[&'static Scenario], release: &str) -> String {
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
         | recording | what happens | findings it must give |\n|---|---|---|\n"
    );
    for sc in scenarios {
        let mut findings: Vec<String> = sc.findings.iter().map(|f| format!("`{f}`")).collect();
        if findings.is_empty() {
            findings.push("none".to_owned());
        }
        if !sc.also.is_empty() {
            let also: Vec<String> = sc.also.iter().map(|f| format!("`{f}`")).collect();
            findings.push(format!("(may add {})", also.join(", ")));
        }
        let _ = writeln!(
            s,
            "| `{}.rec.gz` | {} | {} |",
            sc.name,
            sc.about,
            findings.join(" ")
        );
    }
    s
}
