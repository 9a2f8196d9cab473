//! The build script's filter on the nested eBPF build's output, on real
//! captured output: a clean first build (what a new user's first command
//! printed as 47 cargo warnings), a build with a rustc warning, and a
//! failed one.

#[path = "../build/nested_output.rs"]
mod nested_output;

use nested_output::filter;

fn fixture(name: &str) -> String {
    let path = format!("{}/tests/fixtures/build/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn warnings<'a>(lines: &[&'a str]) -> Vec<&'a str> {
    lines
        .iter()
        .filter_map(|l| l.strip_prefix("cargo:warning="))
        .collect()
}

#[test]
fn a_clean_build_prints_no_warning_lines() {
    let captured = fixture("clean-ebpf-build.txt");
    assert!(warnings(&captured.lines().collect::<Vec<_>>()).len() > 40);
    let shown = filter(&captured, false);
    assert_eq!(warnings(&shown), Vec::<&str>::new());
    // cargo's instructions from aya-build still reach cargo
    assert!(shown.contains(&"cargo:rerun-if-env-changed=AYA_BUILD_SKIP"));
    assert_eq!(shown.len(), 2);
}

#[test]
fn a_rustc_warning_stays_visible_with_its_excerpt() {
    let captured = fixture("warning-ebpf-build.txt");
    let shown = warnings(&filter(&captured, false));
    assert!(shown[0].starts_with("warning: function `unused_helper` is never used"));
    assert!(shown.contains(&"2 | fn unused_helper() {}"));
    assert!(
        !shown
            .iter()
            .any(|l| l.contains("Compiling") || l.contains("Finished"))
    );
}

#[test]
fn a_failed_build_shows_everything() {
    let captured = fixture("failed-ebpf-build.txt");
    let shown = filter(&captured, true);
    assert_eq!(shown, captured.lines().collect::<Vec<_>>());
    let errors = warnings(&filter(&captured, false));
    assert!(errors.contains(&"error[E0425]: cannot find value `bio_flags` in this scope"));
    assert!(
        errors
            .iter()
            .any(|l| l.starts_with("error: could not compile `detector-ebpf`"))
    );
}

#[test]
fn only_right_aligned_cargo_verbs_are_progress() {
    use nested_output::is_progress;
    assert!(is_progress("   Compiling core v0.0.0 (/x)"));
    assert!(is_progress(
        "    Finished `release` profile [optimized] target(s) in 1m 41s"
    ));
    assert!(!is_progress(
        "Compiling is mentioned at the start of a note"
    ));
    assert!(!is_progress("  | Compiling"));
    assert!(!is_progress("warning: unused variable"));
}
