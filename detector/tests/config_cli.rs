//! `detector config` and the daemon's refusal of bad configurations: one
//! clear message naming the file, line and key, a non-zero exit, and
//! nothing attached (the daemon stops before loading any program). Needs
//! no privileges.

use std::net::TcpListener;
use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

#[path = "common/cli.rs"]
mod cli_support;
use cli_support::{detector, stderr};

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_owned()
}

/// A configuration that would work, with findings and metrics in `dir`.
fn usable(dir: &Path, port: u16) -> String {
    format!(
        "[metrics]\naddress = \"127.0.0.1:{port}\"\n\n[findings]\npath = \"{}\"\n\n[log]\nformat = \"plain\"\n",
        dir.join("findings.jsonl").display()
    )
}

#[test]
fn the_default_configuration_checks_and_documents_itself() {
    let out = detector(&["config", "default"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8(out.stdout).unwrap();
    for key in [
        "[rules]",
        "lost-wakeup-after",
        "ring-buffer-size",
        "address = \"127.0.0.1:19975\"",
        "path = \"/var/lib/detector/findings.jsonl\"",
        "rotate-size",
        "format = \"auto\"",
    ] {
        assert!(text.contains(key), "default config lacks {key}:\n{text}");
    }
    let dir = tempfile::tempdir().unwrap();
    // The default file with a findings path this test may write.
    let text = text.replace(
        "/var/lib/detector/findings.jsonl",
        dir.path().join("f.jsonl").to_str().unwrap(),
    );
    let file = write(dir.path(), "detector.toml", &text);
    let out = detector(&["config", "check", &file]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("valid"));
}

/// Runs `detector run` with `config` and returns its output; it must fail
/// at once.
fn refused(config: &str) -> Output {
    let start = Instant::now();
    let out = detector(&["run", "--config", config]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(start.elapsed() < Duration::from_secs(20));
    let err = stderr(&out);
    assert!(!err.contains("panicked"), "{err}");
    assert!(
        !err.contains("attached") && !err.contains("ready:"),
        "nothing may be attached before the configuration is accepted: {err}"
    );
    out
}

#[test]
fn bad_configurations_are_refused_with_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "syntax",
            "[thresholds]\nlost-io-after = \"30s\n",
            2,
            "thresholds.lost-io-after",
            "",
        ),
        (
            "type",
            "[kernel]\nstack-budget = \"many\"\n",
            2,
            "kernel.stack-budget",
            "u32",
        ),
        (
            "unknown key",
            "[findings]\nrotate = \"1M\"\n",
            2,
            "findings.rotate",
            "unknown field",
        ),
        (
            "bad address",
            "[metrics]\naddress = \"localhost:80\"\n",
            2,
            "metrics.address",
            "IP:PORT",
        ),
        (
            "bad duration",
            "[thresholds]\n\nlost-wakeup-after = \"-1s\"\n",
            3,
            "thresholds.lost-wakeup-after",
            "duration",
        ),
    ];
    for (what, text, line, key, words) in cases {
        let file = write(dir.path(), "bad.toml", text);
        for args in [
            vec!["config", "check", &file],
            vec!["run", "--config", &file],
        ] {
            let out = if args[0] == "run" {
                refused(&file)
            } else {
                detector(&args)
            };
            assert_eq!(out.status.code(), Some(1), "{what}");
            let err = stderr(&out);
            assert!(
                err.contains(&format!("{file} line {line}, key {key}:")),
                "{what}: {err}"
            );
            assert!(err.contains(words), "{what}: {err}");
            assert_eq!(err.trim_end().lines().count(), 1, "one message: {err}");
        }
    }
}

#[test]
fn a_missing_named_configuration_is_an_error() {
    let out = refused("/nonexistent/detector.toml");
    assert!(
        stderr(&out).contains("cannot read the configuration /nonexistent/detector.toml"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_taken_port_is_refused_before_anything_is_attached() {
    let dir = tempfile::tempdir().unwrap();
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let file = write(dir.path(), "d.toml", &usable(dir.path(), port));
    let out = refused(&file);
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "{file} line 2, key metrics.address: cannot listen on 127.0.0.1:{port}"
        )),
        "{err}"
    );
    assert!(err.contains("in use"), "{err}");
}

#[test]
fn an_unwritable_findings_path_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    // A regular file where the findings directory should be: even root
    // cannot create a directory there.
    let blocker = dir.path().join("blocker");
    std::fs::write(&blocker, "").unwrap();
    let text = format!(
        "[log]\nformat = \"plain\"\n\n[findings]\npath = \"{}\"\n",
        blocker.join("sub/findings.jsonl").display()
    );
    let file = write(dir.path(), "d.toml", &text);
    let out = detector(&["config", "check", &file]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains(&format!("{file} line 5, key findings.path:")),
        "{err}"
    );
    assert!(err.contains("not a directory"), "{err}");
    let out = refused(&file);
    let err = stderr(&out);
    assert!(
        err.contains(&format!("{file} line 5, key findings.path:")),
        "{err}"
    );
    assert!(err.contains("findings directory"), "{err}");
}

#[test]
fn findings_of_a_missing_store_and_bad_flags_are_explained() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("none.jsonl");
    let out = detector(&["findings", missing.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("none.jsonl"), "{}", stderr(&out));
    let out = detector(&[
        "findings",
        "--since",
        "yesterday-ish",
        missing.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("--since"), "{}", stderr(&out));
    let out = detector(&["findings", "--rule", "nope", missing.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("lost-wakeup"), "{}", stderr(&out));
}
