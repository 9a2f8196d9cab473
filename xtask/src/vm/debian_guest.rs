//! A Debian guest: the bench's stock kernel booting the cached Debian root
//! image (`rootfs`) from a virtio disk, through a small busybox initramfs
//! that loads virtio and ext4 and switch_roots (`tests/vm/debian/init`),
//! with three scratch disks of the kinds users' servers have (virtio-blk,
//! virtio-scsi `scsi-hd`, NVMe) and a 9p share.
//!
//! The share (`.vm-cache/<name>/share`, mount tag "host", at `/host` in the
//! guest) carries the guest's scripts, detector and its config in `bench/`,
//! and everything the guest leaves in `out/`. No network: nothing enters or
//! leaves but the share.
//!
//! The initramfs takes `init=` from the kernel command line; the bench
//! starts `tests/vm/debian/guest-init` from the share, a guest booted with
//! no `init=` runs the image's systemd.

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, Result};

use crate::util::workspace_root;
use crate::vm::debian;
use crate::vm::initramfs::Initramfs;
use crate::vm::kernel::{Kernel, Modules};
use crate::vm::qemu::{self, Outcome};
use crate::vm::rootfs;

/// Modules the initramfs loads to reach the root and the share. ext4's
/// metadata checksums need crc32c, which the kernel would ask modprobe for.
const BOOT_MODULES: &[&str] = &[
    "crc32c_generic",
    "virtio_pci",
    "virtio_blk",
    "ext4",
    "9pnet_virtio",
    "9p",
];

/// Each scratch disk's size.
pub const SCRATCH_MB: u64 = 1024;

/// The guest's names for the scratch disks, in the order `disk_args`
/// attaches them: the root disk is the first virtio disk (vda).
const SCRATCH_VIRTIO: &str = "/dev/vdb";
const SCRATCH_SCSI: &str = "/dev/sda";
const SCRATCH_NVME: &str = "/dev/nvme0n1";

/// What every Debian guest boots: the kernel, the root image, the
/// initramfs.
pub struct Boot {
    pub kernel: Kernel,
    pub vmlinux: PathBuf,
    pub image: PathBuf,
    pub initrd: PathBuf,
}

/// Fetches and builds what is missing (kernel, root file system, image)
/// and packs the initramfs.
pub fn prepare(cache: &Path) -> Result<Boot> {
    let release = debian::kernel_release(cache)?;
    let kernel = Kernel {
        root: debian::unpacked(
            cache,
            &format!("linux-image-{release}"),
            &cache.join(format!("kernel-{release}")),
        )?,
        release,
    };
    let vmlinux = kernel.vmlinux()?;
    let image = rootfs::image(cache, &kernel)?;
    let initrd = cache.join("debian-initramfs.cpio");
    initramfs(&cache.join("debian-initramfs"), &kernel)?.pack(&initrd)?;
    Ok(Boot {
        kernel,
        vmlinux,
        image,
        initrd,
    })
}

fn initramfs(tree: &Path, kernel: &Kernel) -> Result<Initramfs> {
    let img = Initramfs::new(tree)?;
    img.file(
        &workspace_root().join("tests/vm/debian/init"),
        "/init",
        0o755,
    )?;
    img.file(Path::new("/bin/busybox"), "/bin/busybox", 0o755)?;
    let modules = Modules::scan(&kernel.modules_dir())?;
    let mut list = String::new();
    for ko in modules.load_order(BOOT_MODULES, &mut HashSet::new())? {
        let name = ko
            .file_name()
            .and_then(|n| n.to_str())
            .context("module name")?;
        img.file(&ko, &format!("/lib/modules/{name}"), 0o644)?;
        list.push_str(name);
        list.push('\n');
    }
    img.write("/lib/modules/load.list", &list, 0o644)?;
    Ok(img)
}

/// One guest's directory: `.vm-cache/<name>/`.
pub struct GuestDir {
    pub dir: PathBuf,
}

impl GuestDir {
    /// Emptied: a run never mixes with the last one's results.
    pub fn fresh(cache: &Path, name: &str) -> Result<Self> {
        let dir = cache.join(name);
        if dir.exists() {
            fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
        }
        fs::create_dir_all(dir.join("share/bench/bin"))?;
        fs::create_dir_all(dir.join("share/out"))?;
        Ok(Self { dir })
    }

    /// The last run's, for judging again.
    pub fn existing(cache: &Path, name: &str) -> Self {
        Self {
            dir: cache.join(name),
        }
    }

    pub fn share(&self) -> PathBuf {
        self.dir.join("share")
    }

    /// What the guest reads: scripts, detector, config.
    pub fn bench(&self) -> PathBuf {
        self.dir.join("share/bench")
    }

    /// What the guest wrote.
    pub fn out(&self) -> PathBuf {
        self.dir.join("share/out")
    }

    pub fn log(&self) -> PathBuf {
        self.dir.join("guest.log")
    }

    /// The guest said it finished (`out/status` is `done` or `failed`).
    pub fn finished(&self) -> bool {
        let status = fs::read_to_string(self.out().join("status")).unwrap_or_default();
        matches!(status.trim(), "done" | "failed")
    }

    /// Copies the guest scripts (`tests/vm/debian`) and detector into the
    /// share, and writes `bench/config`: the guest's mode, the scratch
    /// disks' names, then `settings` (shell assignments).
    pub fn stage(&self, detector: &Path, mode: &str, settings: &str) -> Result<()> {
        let src = workspace_root().join("tests/vm/debian");
        copy_tree(&src, &self.bench())?;
        fs::copy(detector, self.bench().join("bin/detector"))
            .with_context(|| format!("copying {}", detector.display()))?;
        let config = format!(
            "MODE={mode}\nSCRATCH_VIRTIO={SCRATCH_VIRTIO}\nSCRATCH_SCSI={SCRATCH_SCSI}\n\
             SCRATCH_NVME={SCRATCH_NVME}\nSCRATCH_MB={SCRATCH_MB}\nPATH=/host/bench/bin:$PATH\n\
             {settings}"
        );
        fs::write(self.bench().join("config"), config)?;
        Ok(())
    }

    /// Boots the guest into the bench's `guest-init` and waits for it to
    /// power off (or for `timeout`).
    pub fn boot(&self, boot: &Boot, label: &str, timeout: Duration) -> Result<Outcome> {
        self.boot_into(boot, label, timeout, "/host/bench/guest-init")
    }

    /// Boots with `init` as PID 1 after the switch_root: "/sbin/init" is
    /// the image's systemd.
    pub fn boot_into(
        &self,
        boot: &Boot,
        label: &str,
        timeout: Duration,
        init: &str,
    ) -> Result<Outcome> {
        let extra_args = self.disk_args(&boot.image)?;
        self.boot_with(boot, label, timeout, &format!("init={init}"), extra_args)
    }

    /// Boots the image's systemd as PID 1, as a server: systemd's
    /// run-generator starts the bench's `service-guest` once the system is
    /// up. The only network is qemu's user mode with `restrict=on`: nothing
    /// leaves the guest, and the one way in is `host_port` on the host's
    /// loopback, forwarded to `guest_port`.
    pub fn boot_server(
        &self,
        boot: &Boot,
        label: &str,
        timeout: Duration,
        host_port: u16,
        guest_port: u16,
    ) -> Result<Outcome> {
        let mut extra_args = self.disk_args(&boot.image)?;
        extra_args.extend([
            "-netdev".to_owned(),
            format!("user,id=net0,restrict=on,hostfwd=tcp:127.0.0.1:{host_port}-:{guest_port}"),
            "-device".to_owned(),
            "virtio-net-pci,netdev=net0".to_owned(),
        ]);
        let init = "init=/sbin/init systemd.run=/host/bench/service-guest";
        self.boot_with(boot, label, timeout, init, extra_args)
    }

    /// Boots the image from its root label with `init` (kernel command line
    /// words) and the given qemu arguments, this guest's share and log.
    fn boot_with(
        &self,
        boot: &Boot,
        label: &str,
        timeout: Duration,
        init: &str,
        extra_args: Vec<String>,
    ) -> Result<Outcome> {
        qemu::boot(&qemu::Boot {
            label: label.to_owned(),
            vmlinux: boot.vmlinux.clone(),
            initrd: boot.initrd.clone(),
            share: self.share(),
            log: self.log(),
            timeout,
            append: format!("root=LABEL={} {init}", rootfs::ROOT_LABEL),
            extra_args,
        })
    }

    /// The root image (read-only underneath: `snapshot=on` sends writes to
    /// a throwaway overlay) and fresh sparse scratch disks, each accepting
    /// discards.
    fn disk_args(&self, image: &Path) -> Result<Vec<String>> {
        let mut args = vec![
            "-drive".to_owned(),
            format!(
                "file={},format=raw,if=none,id=root,snapshot=on,cache=unsafe",
                image.display()
            ),
            "-device".to_owned(),
            "virtio-blk-pci,drive=root".to_owned(),
        ];
        let scratch = |id: &str| -> Result<String> {
            let path = self.dir.join(format!("scratch-{id}.img"));
            let file =
                fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
            file.set_len(SCRATCH_MB << 20)?;
            Ok(format!(
                "file={},format=raw,if=none,id={id},discard=unmap,cache=unsafe",
                path.display()
            ))
        };
        for (id, device) in [
            (
                "virtio",
                "virtio-blk-pci,drive=virtio,serial=scratch-virtio",
            ),
            ("scsi", "scsi-hd,drive=scsi,bus=scsi0.0,serial=scratch-scsi"),
            ("nvme", "nvme,drive=nvme,serial=scratchnvme"),
        ] {
            if id == "scsi" {
                args.extend(["-device".to_owned(), "virtio-scsi-pci,id=scsi0".to_owned()]);
            }
            args.extend([
                "-drive".to_owned(),
                scratch(id)?,
                "-device".to_owned(),
                device.to_owned(),
            ]);
        }
        Ok(args)
    }
}

/// `cp -a` of a directory's contents, in Rust: files and subdirectories,
/// modes kept.
fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    fs::create_dir_all(to)?;
    for entry in fs::read_dir(from).with_context(|| format!("reading {}", from.display()))? {
        let entry = entry?;
        let dest = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_tree(&entry.path(), &dest)?;
        } else {
            fs::copy(entry.path(), &dest)
                .with_context(|| format!("copying {}", entry.path().display()))?;
        }
    }
    Ok(())
}
