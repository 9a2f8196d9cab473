use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use super::*;

fn keys(table: &toml::Table, prefix: &str, out: &mut BTreeSet<String>) {
    for (k, v) in table {
        let key = format!("{prefix}{k}");
        match v {
            toml::Value::Table(t) => keys(t, &format!("{key}."), out),
            _ => {
                out.insert(key);
            }
        }
    }
}

#[test]
fn the_default_file_is_the_defaults_and_names_every_key() {
    let text = default_file();
    let parsed = parse(Path::new("default.toml"), &text).unwrap();
    assert_eq!(parsed, Config::default());
    let mut documented = BTreeSet::new();
    keys(&toml::from_str(&text).unwrap(), "", &mut documented);
    let mut all = BTreeSet::new();
    keys(
        &toml::Table::try_from(Config::default()).unwrap(),
        "",
        &mut all,
    );
    assert_eq!(documented, all);
    // Every line of a key has a comment somewhere above it in its table.
    assert!(text.lines().filter(|l| l.starts_with('#')).count() > 30);
}

#[test]
fn an_empty_file_is_the_defaults() {
    assert_eq!(parse(Path::new("x"), "").unwrap(), Config::default());
    // A [rules] table naming one rule leaves the others on.
    let c = parse(Path::new("x"), "[rules]\nlost-wakeup = false\n").unwrap();
    assert!(!c.enabled(Rule::LostWakeup));
    assert!(
        Rule::ALL
            .into_iter()
            .filter(|r| *r != Rule::LostWakeup)
            .all(|r| c.enabled(r))
    );
}

#[test]
fn values_are_read() {
    let text = r#"
[rules]
lost-io-completion = false

[thresholds]
lost-wakeup-after = "3s"
stuck-handler-after = 1.5

[filter]
exclude-devices = ["7:0", "7:1"]

[metrics]
address = "[::1]:9999"

[findings]
path = "/tmp/f.jsonl"
rotate-size = "1M"
keep = 2
"#;
    let c = parse(Path::new("x"), text).unwrap();
    assert!(!c.enabled(Rule::LostIoCompletion));
    assert!(c.enabled(Rule::LostWakeup));
    assert_eq!(c.thresholds.lost_wakeup_after.0, Duration::from_secs(3));
    assert_eq!(
        c.thresholds.stuck_handler_after.0,
        Duration::from_millis(1500)
    );
    assert_eq!(c.filter.exclude_devices, [Dev::new(7, 0), Dev::new(7, 1)]);
    assert_eq!(c.metrics.address.get_ref().0.to_string(), "[::1]:9999");
    assert_eq!(c.findings.rotate_size.0, 1 << 20);
    assert_eq!(c.engine_args().disabled_rules, ["lost-io-completion"]);
}

/// Each bad file gives one message with the file, the line and the key.
#[test]
fn bad_files_name_file_line_and_key() {
    let cases: &[(&str, usize, &str, &str)] = &[
        // (file, line, key, words of the message)
        (
            "[thresholds]\nlost-wakeup-after = \"5s\n",
            2,
            "thresholds.lost-wakeup-after",
            "",
        ),
        (
            "[kernel]\nstack-budget = \"lots\"\n",
            2,
            "kernel.stack-budget",
            "u32",
        ),
        (
            "[metrics]\nadress = \"127.0.0.1:1\"\n",
            2,
            "metrics.adress",
            "unknown field",
        ),
        (
            "[metric]\naddress = \"127.0.0.1:1\"\n",
            1,
            "metric",
            "unknown field",
        ),
        (
            "[metrics]\naddress = \"localhost\"\n",
            2,
            "metrics.address",
            "IP:PORT",
        ),
        (
            "[metrics]\naddress = \"127.0.0.1:99999\"\n",
            2,
            "metrics.address",
            "not an address",
        ),
        (
            "\n[thresholds]\nlost-io-after = \"soon\"\n",
            3,
            "thresholds.lost-io-after",
            "not a duration",
        ),
        (
            "[rules]\nlost-wakeups = false\n",
            2,
            "rules.lost-wakeups",
            "lost-wakeup",
        ),
        ("[rules]\nlost-wakeup = 1\n", 2, "rules.lost-wakeup", "bool"),
        (
            "[kernel]\nring-buffer-size = \"3M\"\n",
            2,
            "kernel.ring-buffer-size",
            "power of two",
        ),
        (
            "[findings]\nrotate-size = \"1K\"\n",
            2,
            "findings.rotate-size",
            "64K",
        ),
        ("[findings]\nkeep = 0\n", 2, "findings.keep", "at least 1"),
        ("[log]\nlevel = \"loud\"\n", 2, "log.level", "log level"),
        (
            "[log]\nformat = \"xml\"\n",
            2,
            "log.format",
            "unknown variant",
        ),
        (
            "[filter]\ndevices = [\"sda\"]\n",
            2,
            "filter.devices",
            "MAJ:MIN",
        ),
    ];
    for (text, line, key, words) in cases {
        let err = parse(Path::new("/etc/d.toml"), text).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains(&format!("/etc/d.toml line {line}, key {key}:")),
            "{text:?}: {msg}"
        );
        assert!(msg.contains(words), "{text:?}: {msg}");
        assert!(!msg.contains('\n'), "one line: {msg}");
    }
}

#[test]
fn a_missing_default_file_means_defaults_but_a_named_one_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("none.toml");
    let loaded = Loaded::read(&missing, false).unwrap();
    assert_eq!(loaded.config, Config::default());
    assert!(loaded.path.is_none());
    let err = Loaded::read(&missing, true).unwrap_err().to_string();
    assert!(err.contains("none.toml"), "{err}");
}

#[test]
fn restart_only_changes_are_listed_and_kept() {
    let old = Config::default();
    let text = "[kernel]\nring-buffer-size = \"64M\"\n[thresholds]\nlost-io-after = \"9s\"\n";
    let new = parse(Path::new("x"), text).unwrap();
    let changes = old.restart_only_changes(&new);
    assert_eq!(changes, ["kernel.ring-buffer-size: 16777216 -> 67108864"]);
    let live = old.live_part_of(&new);
    assert_eq!(live.kernel, old.kernel);
    assert_eq!(live.thresholds.lost_io_after.0, Duration::from_secs(9));
}
