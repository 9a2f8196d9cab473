//! The guest's root file system: a newc cpio archive the kernel unpacks
//! into its rootfs, holding busybox, mdadm, detector, the kernel modules,
//! the test module and the guest scripts.

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context as _, Result, bail};

use crate::util::output;

/// Builds a tree under `root` (emptied first), then packs it.
pub struct Initramfs {
    root: PathBuf,
}

impl Initramfs {
    pub fn new(root: &Path) -> Result<Self> {
        if root.exists() {
            fs::remove_dir_all(root).with_context(|| format!("removing {}", root.display()))?;
        }
        fs::create_dir_all(root)?;
        for dir in [
            "bin",
            "sbin",
            "usr/bin",
            "proc",
            "sys",
            "dev",
            "tmp",
            "run",
            "lib/modules",
        ] {
            fs::create_dir_all(root.join(dir))?;
        }
        Ok(Self {
            root: root.to_path_buf(),
        })
    }

    /// Copies `src` to `dest` (absolute path inside the guest).
    pub fn file(&self, src: &Path, dest: &str, mode: u32) -> Result<()> {
        let to = self.path(dest);
        if let Some(parent) = to.parent() {
            fs::create_dir_all(parent)?;
        }
        // fs::copy follows symlinks: a library's soname link becomes the file.
        fs::copy(src, &to).with_context(|| format!("copying {} to {}", src.display(), dest))?;
        fs::set_permissions(&to, fs::Permissions::from_mode(mode))?;
        Ok(())
    }

    pub fn write(&self, dest: &str, contents: &str, mode: u32) -> Result<()> {
        let to = self.path(dest);
        if let Some(parent) = to.parent() {
            fs::create_dir_all(parent)?;
        }
        fs::write(&to, contents)?;
        fs::set_permissions(&to, fs::Permissions::from_mode(mode))?;
        Ok(())
    }

    /// A dynamically linked host binary and the libraries `ldd` names, at
    /// the same paths (the guest's loader looks where the host's does).
    pub fn binary(&self, src: &Path, dest: &str) -> Result<()> {
        self.file(src, dest, 0o755)?;
        for lib in shared_libraries(src)? {
            let dest = lib.to_str().context("non-UTF-8 library path")?.to_owned();
            if !self.path(&dest).exists() {
                self.file(&lib, &dest, 0o755)?;
            }
        }
        Ok(())
    }

    fn path(&self, dest: &str) -> PathBuf {
        self.root.join(dest.trim_start_matches('/'))
    }

    /// Packs the tree as newc cpio into `archive`.
    pub fn pack(&self, archive: &Path) -> Result<()> {
        let mut entries = Vec::new();
        walk(&self.root, Path::new(""), &mut entries)?;
        let list: String = entries
            .iter()
            .map(|e| format!("{}\n", e.display()))
            .collect();
        let out =
            fs::File::create(archive).with_context(|| format!("creating {}", archive.display()))?;
        let mut child = Command::new("cpio")
            .current_dir(&self.root)
            .args(["--quiet", "-o", "-H", "newc", "--owner", "0:0"])
            .stdin(Stdio::piped())
            .stdout(out)
            .spawn()
            .context("cannot start cpio")?;
        child
            .stdin
            .take()
            .expect("piped")
            .write_all(list.as_bytes())?;
        let status = child.wait()?;
        if !status.success() {
            bail!("cpio failed: {status}");
        }
        Ok(())
    }
}

/// Relative paths under `base`, each directory before its contents.
fn walk(base: &Path, rel: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let mut names: Vec<_> = fs::read_dir(base.join(rel))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name())
        .collect();
    names.sort();
    for name in names {
        let path = rel.join(name);
        out.push(path.clone());
        if base.join(&path).is_dir() {
            walk(base, &path, out)?;
        }
    }
    Ok(())
}

/// What `ldd` says `bin` loads: absolute paths, the vDSO left out.
fn shared_libraries(bin: &Path) -> Result<Vec<PathBuf>> {
    let out =
        output(Command::new("ldd").arg(bin)).with_context(|| format!("ldd {}", bin.display()))?;
    let mut libs = Vec::new();
    for line in out.lines() {
        let line = line.trim();
        if line.contains("not found") {
            bail!("{}: library {line}", bin.display());
        }
        // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or
        // "/lib64/ld-linux-x86-64.so.2 (0x...)"
        let path = match line.split_once("=>") {
            Some((_, rest)) => rest.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        if let Some(p) = path.filter(|p| p.starts_with('/')) {
            libs.push(PathBuf::from(p));
        }
    }
    Ok(libs)
}
