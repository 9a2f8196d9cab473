//! The command line's behaviour on bad input: clear messages, non-zero exit
//! codes, never a panic. Needs no privileges.

use std::process::Output;

#[path = "common/cli.rs"]
mod cli_support;
use cli_support::{detector, stderr};

fn assert_no_panic(out: &Output) {
    let err = stderr(out);
    assert!(!err.contains("panicked"), "panic: {err}");
    assert!(!err.contains("RUST_BACKTRACE"), "panic: {err}");
}

#[test]
fn help_teaches_the_commands() {
    let out = detector(&["--help"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for word in ["check", "trace", "replay", "Examples:", "jq"] {
        assert!(text.contains(word), "--help lacks {word}:\n{text}");
    }
    let out = detector(&["trace", "--help"]);
    let text = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--duration",
        "--json",
        "--dev",
        "--pid",
        "--record",
        "--lost-wakeup-after",
    ] {
        assert!(text.contains(flag), "trace --help lacks {flag}");
    }
}

#[test]
fn bad_flag_values_are_explained() {
    for (args, needle) in [
        (&["trace", "--duration", "abc"][..], "not a duration"),
        (&["trace", "--dev", "8"][..], "MAJOR:MINOR"),
        (&["trace", "--dev", "8:x"][..], "MAJOR:MINOR"),
        (&["trace", "--buffer-size", "3M"][..], "power of two"),
        (&["trace", "--pid", "-4"][..], "error"),
        (&["replay"][..], "FILE"),
        (&["frobnicate"][..], "unrecognized subcommand"),
    ] {
        let out = detector(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(needle), "{args:?}: {}", stderr(&out));
        assert_no_panic(&out);
    }
}

#[test]
fn unreadable_and_corrupted_record_files_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.rec");
    let out = detector(&["replay", missing.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("cannot open"), "{}", stderr(&out));
    assert_no_panic(&out);

    let garbage = dir.path().join("garbage.rec");
    std::fs::write(&garbage, b"\x00\x01\x02 this is not a trace").unwrap();
    let out = detector(&["replay", garbage.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("not a record file"),
        "{}",
        stderr(&out)
    );
    assert_no_panic(&out);

    // A real record file, cut short and with a flipped byte.
    let good = detector::record::tests_support::sample_file(50);
    let cut = dir.path().join("cut.rec");
    std::fs::write(&cut, &good[..good.len() - 30]).unwrap();
    let out = detector(&["replay", cut.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("byte"), "{}", stderr(&out));
    assert_no_panic(&out);

    let mut flipped = good.clone();
    let at = flipped.len() / 2;
    flipped[at] ^= 0xff;
    let bad = dir.path().join("flipped.rec");
    std::fs::write(&bad, &flipped).unwrap();
    let out = detector(&["replay", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("corrupted"), "{}", stderr(&out));
    assert_no_panic(&out);
}

#[test]
fn replay_of_a_good_file_counts_its_events() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("good.rec");
    std::fs::write(&path, detector::record::tests_support::sample_file(50)).unwrap();
    let out = detector(&["replay", path.to_str().unwrap(), "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 50);
    assert!(lines.iter().all(|l| l["event"] == "bio_queue"));
    assert!(stderr(&out).contains("50 events"), "{}", stderr(&out));

    // The JSON output replays as JSON lines, to the same events.
    let jsonl = dir.path().join("events.jsonl");
    std::fs::write(&jsonl, &out.stdout).unwrap();
    let again = detector(&["replay", jsonl.to_str().unwrap(), "--json"]);
    assert!(again.status.success(), "{}", stderr(&again));
    assert_eq!(again.stdout, out.stdout);
}

fn fixture(name: &str) -> String {
    format!(
        "{}/tests/fixtures/engine/{name}.jsonl",
        env!("CARGO_MANIFEST_DIR")
    )
}

#[test]
fn replay_prints_findings_with_the_interleaving() {
    let out = detector(&["replay", &fixture("onstack_seed000_complete_after_return")]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("complete-after-return"), "{text}");
    assert!(text.contains("owner: zeroout/101"), "{text}");
    assert!(text.contains("| completer:"), "two columns: {text}");
    assert!(stderr(&out).contains("findings: 1"), "{}", stderr(&out));

    let out = detector(&[
        "replay",
        "--json",
        &fixture("onstack_seed000_complete_after_return"),
    ]);
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let findings: Vec<_> = lines
        .iter()
        .filter(|l| l.get("finding").is_some())
        .collect();
    assert_eq!(findings.len(), 1);
    assert_eq!(findings[0]["finding"], "complete-after-return");
    assert!(findings[0].get("event").is_none());
    assert!(
        lines
            .iter()
            .filter(|l| l.get("event").is_some())
            .all(|l| l.get("finding").is_none())
    );
}

#[test]
fn benign_fixture_replays_silently_and_rules_can_be_disabled() {
    let out = detector(&["replay", &fixture("onstack_fixed_wait_then_complete")]);
    assert!(out.status.success());
    assert!(
        out.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(stderr(&out).contains("findings: 0"));

    let seed = fixture("lost_wakeup_seed004");
    let out = detector(&["replay", &seed, "--disable-rule", "lost-wakeup"]);
    assert!(out.status.success());
    assert!(stderr(&out).contains("findings: 0"), "{}", stderr(&out));
    let out = detector(&["replay", &seed, "--disable-rule", "no-such-rule"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("lost-wakeup"),
        "lists valid rules: {}",
        stderr(&out)
    );
    assert_no_panic(&out);
}
