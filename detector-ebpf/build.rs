use which::which;

/// Rebuild the programs when bpf-linker changes: a linker rebuilt against a
/// new nightly's LLVM can change the emitted object.
fn main() {
    if let Ok(linker) = which("bpf-linker") {
        println!("cargo:rerun-if-changed={}", linker.display());
    }
}
