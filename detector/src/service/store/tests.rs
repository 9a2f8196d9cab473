use serde_json::json;

use super::*;

fn finding(id: &str) -> Value {
    json!({"finding": "lost-wakeup", "id": id, "explanation": "x".repeat(40)})
}

fn lines(path: &Path) -> Vec<String> {
    let mut ids = Vec::new();
    let problems = read_lines(path, |_, _, v| ids.push(id_of(&v).unwrap().to_owned())).unwrap();
    assert!(problems.is_empty(), "{problems:?}");
    ids
}

#[test]
fn appends_survive_a_reopen_and_are_not_doubled() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sub/findings.jsonl");
    let (mut store, repairs) = Store::open(&path, 1 << 20, 3).unwrap();
    assert!(repairs.is_empty());
    assert_eq!(store.append(&finding("a")).unwrap(), Appended::Stored);
    assert_eq!(store.append(&finding("b")).unwrap(), Appended::Stored);
    assert_eq!(store.append(&finding("a")).unwrap(), Appended::Duplicate);
    drop(store);
    let (mut store, repairs) = Store::open(&path, 1 << 20, 3).unwrap();
    assert!(repairs.is_empty());
    assert_eq!(store.len(), 2);
    assert_eq!(store.append(&finding("b")).unwrap(), Appended::Duplicate);
    assert_eq!(store.append(&finding("c")).unwrap(), Appended::Stored);
    assert_eq!(lines(&path), ["a", "b", "c"]);
}

#[test]
fn a_torn_last_line_is_set_aside_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("findings.jsonl");
    let whole = format!("{}\n", finding("a"));
    let torn = r#"{"finding":"lost-wakeup","id":"b","expl"#;
    fs::write(&path, format!("{whole}{torn}")).unwrap();
    // Readers report it, and read the rest.
    let mut seen = Vec::new();
    let problems = read_lines(&path, |n, _, _| seen.push(n)).unwrap();
    assert_eq!(seen, [1]);
    assert_eq!(problems.len(), 1);
    assert!(problems[0].torn && problems[0].line == 2, "{problems:?}");

    let (mut store, repairs) = Store::open(&path, 1 << 20, 3).unwrap();
    let aside = dir.path().join("findings.jsonl.torn-1");
    assert_eq!(
        repairs,
        [Repair::TornTail {
            bytes: torn.len() as u64,
            offset: whole.len() as u64,
            aside: aside.clone()
        }]
    );
    assert_eq!(fs::read_to_string(&aside).unwrap(), torn);
    assert_eq!(fs::read_to_string(&path).unwrap(), whole);
    // The torn finding was never stored: it may come again.
    assert_eq!(store.append(&finding("b")).unwrap(), Appended::Stored);
    assert_eq!(lines(&path), ["a", "b"]);
    // A second tear goes to a second file.
    drop(store);
    let mut f = OpenOptions::new().append(true).open(&path).unwrap();
    f.write_all(b"{\"fin").unwrap();
    let (_, repairs) = Store::open(&path, 1 << 20, 3).unwrap();
    assert!(
        matches!(&repairs[..], [Repair::TornTail { aside, .. }] if aside.ends_with("findings.jsonl.torn-2")),
        "{repairs:?}"
    );
}

#[test]
fn garbage_lines_are_reported_not_read() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("findings.jsonl");
    fs::write(&path, format!("{}\nnot json\n{{\"x\":1}}\n", finding("a"))).unwrap();
    let (_, repairs) = Store::open(&path, 1 << 20, 3).unwrap();
    assert_eq!(repairs.len(), 2, "{repairs:?}");
    assert!(matches!(repairs[0], Repair::BadLine { line: 2, .. }));
    assert!(matches!(repairs[1], Repair::BadLine { line: 3, .. }));
    let mut ids = Vec::new();
    let problems = read_lines(&path, |_, _, v| ids.push(v["id"].clone())).unwrap();
    assert_eq!(ids, [json!("a")]);
    assert_eq!(problems.iter().map(|p| p.line).collect::<Vec<_>>(), [2, 3]);
}

#[test]
fn rotation_keeps_n_files_and_every_kept_finding() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("findings.jsonl");
    let line_len = finding("a00").to_string().len() as u64 + 1;
    // Three findings per file; two rotated files kept.
    let (mut store, _) = Store::open(&path, line_len * 3, 2).unwrap();
    let ids: Vec<String> = (0..14).map(|i| format!("a{i:02}")).collect();
    for id in &ids {
        assert_eq!(store.append(&finding(id)).unwrap(), Appended::Stored);
    }
    assert_eq!(
        rotated_files(&path),
        [
            path.with_extension("jsonl.2"),
            path.with_extension("jsonl.1")
        ]
    );
    assert!(!path.with_extension("jsonl.3").exists());
    let mut kept = Vec::new();
    for file in rotated_files(&path).iter().chain([&path]) {
        kept.extend(lines(file));
    }
    // 14 findings: the first 6 rotated out of the kept 3 files of 3, 3, 2.
    assert_eq!(kept, ids[6..]);
    assert_eq!(store.len(), 8);
}

#[test]
fn writability_is_checked_without_creating_anything() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(
        check_writable(&dir.path().join("a/b/findings.jsonl")),
        Ok(())
    );
    assert!(!dir.path().join("a").exists());
    let file = dir.path().join("plain");
    fs::write(&file, "").unwrap();
    let err = check_writable(&file.join("findings.jsonl")).unwrap_err();
    assert!(err.contains("is not a directory"), "{err}");
    let err = check_writable(dir.path()).unwrap_err();
    assert!(err.contains("is a directory"), "{err}");
}
