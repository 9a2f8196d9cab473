//! The guest kernel: the ELF vmlinux inside Debian's vmlinuz, and the
//! modules the guest loads, with their dependencies.

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context as _, Result, bail};

/// An unpacked `linux-image-<release>` package.
pub struct Kernel {
    pub release: String,
    pub root: PathBuf,
}

impl Kernel {
    pub fn vmlinuz(&self) -> PathBuf {
        self.root.join(format!("boot/vmlinuz-{}", self.release))
    }

    pub fn modules_dir(&self) -> PathBuf {
        self.root.join(format!("lib/modules/{}", self.release))
    }

    /// The uncompressed ELF kernel (qemu boots it directly; it also carries
    /// the kernel's BTF), unpacked once next to the package.
    pub fn vmlinux(&self) -> Result<PathBuf> {
        let path = self.root.join("vmlinux");
        if !path.exists() {
            let image = fs::read(self.vmlinuz())
                .with_context(|| format!("reading {}", self.vmlinuz().display()))?;
            let elf = extract_vmlinux(&image).context("unpacking vmlinuz")?;
            let tmp = path.with_extension("tmp");
            fs::write(&tmp, elf)?;
            fs::rename(&tmp, &path)?;
        }
        Ok(path)
    }
}

const XZ_MAGIC: &[u8] = b"\xfd7zXZ\x00";
const ELF_MAGIC: &[u8] = b"\x7fELF";

/// A bzImage carries the kernel as a compressed payload after its setup
/// code; Debian's is XZ. Tries each XZ header until one unpacks to an ELF
/// (what scripts/extract-vmlinux does).
fn extract_vmlinux(image: &[u8]) -> Result<Vec<u8>> {
    let mut from = 0;
    while let Some(pos) = find(&image[from..], XZ_MAGIC).map(|p| p + from) {
        from = pos + 1;
        let mut child = Command::new("xz")
            .args(["-dc", "--single-stream"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot start xz (package xz-utils)")?;
        let mut stdin = child.stdin.take().expect("piped");
        let payload = image[pos..].to_vec();
        let writer = std::thread::spawn(move || {
            // xz stops reading after the stream: a broken pipe is expected.
            let _ = stdin.write_all(&payload);
        });
        let out = child.wait_with_output()?;
        let _ = writer.join();
        if out.status.success() && out.stdout.starts_with(ELF_MAGIC) {
            return Ok(out.stdout);
        }
    }
    bail!("no XZ payload that unpacks to an ELF kernel")
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The kernel's loadable modules by name (`md-mod.ko` is `md_mod`).
pub struct Modules {
    by_name: BTreeMap<String, PathBuf>,
}

impl Modules {
    pub fn scan(dir: &Path) -> Result<Self> {
        let mut by_name = BTreeMap::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            for entry in fs::read_dir(&d).with_context(|| format!("reading {}", d.display()))? {
                let path = entry?.path();
                if path.is_dir() {
                    stack.push(path);
                } else if let Some(name) = path.file_name().and_then(|n| n.to_str()) {
                    // Debian 6.1 ships plain .ko; compressed ones would need
                    // unpacking first.
                    if let Some(stem) = name.strip_suffix(".ko") {
                        by_name.insert(stem.replace('-', "_"), path);
                    }
                }
            }
        }
        Ok(Self { by_name })
    }

    /// `wanted` and everything they depend on, dependencies first, leaving
    /// out what `loaded` already has (and adding the result to it).
    pub fn load_order(
        &self,
        wanted: &[&str],
        loaded: &mut HashSet<String>,
    ) -> Result<Vec<PathBuf>> {
        let mut order = Vec::new();
        for name in wanted {
            self.visit(&name.replace('-', "_"), loaded, &mut order, &mut Vec::new())?;
        }
        Ok(order)
    }

    fn visit(
        &self,
        name: &str,
        loaded: &mut HashSet<String>,
        order: &mut Vec<PathBuf>,
        path: &mut Vec<String>,
    ) -> Result<()> {
        if loaded.contains(name) {
            return Ok(());
        }
        if path.iter().any(|p| p == name) {
            bail!("module dependency cycle: {} -> {name}", path.join(" -> "));
        }
        let file = self
            .by_name
            .get(name)
            .with_context(|| format!("module {name} is not in the kernel package"))?;
        path.push(name.to_owned());
        for dep in depends(file)? {
            self.visit(&dep, loaded, order, path)?;
        }
        path.pop();
        loaded.insert(name.to_owned());
        order.push(file.clone());
        Ok(())
    }
}

/// The `depends=` entry of a module's `.modinfo` (what depmod reads).
fn depends(ko: &Path) -> Result<Vec<String>> {
    let bytes = fs::read(ko).with_context(|| format!("reading {}", ko.display()))?;
    let Some(start) = find(&bytes, b"\0depends=").map(|p| p + b"\0depends=".len()) else {
        return Ok(Vec::new());
    };
    let end = bytes[start..]
        .iter()
        .position(|&b| b == 0)
        .map_or(bytes.len(), |p| start + p);
    Ok(String::from_utf8_lossy(&bytes[start..end])
        .split(',')
        .filter(|d| !d.is_empty())
        .map(|d| d.replace('-', "_"))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_modinfo_depends() {
        let dir = std::env::temp_dir().join(format!("vm-kernel-test-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let ko = dir.join("raid1.ko");
        fs::write(
            &ko,
            b"\x7fELF junk\0license=GPL\0depends=md-mod,libcrc\0vermagic=6.1\0",
        )
        .unwrap();
        assert_eq!(depends(&ko).unwrap(), ["md_mod", "libcrc"]);
        fs::write(&ko, b"\0depends=\0name=raid1\0").unwrap();
        assert!(depends(&ko).unwrap().is_empty());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn no_payload_no_kernel() {
        assert!(extract_vmlinux(b"MZ not a kernel").is_err());
    }
}
