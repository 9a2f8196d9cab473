//! Reading kernel memory through the offsets userspace found in BTF.

use aya_ebpf::helpers::{bpf_get_current_task, bpf_probe_read_kernel};
use detector_common::{
    ProbeConfig,
    config::{BIO_REGION_BYTES, NO_OFFSET, SMALL_REGION_BYTES},
    counter,
};

use crate::maps::{CONFIG, COUNTERS, REGIONS};

/// The running kernel's offsets; `None` until userspace wrote them.
#[inline(always)]
pub fn config() -> Option<&'static ProbeConfig> {
    CONFIG.get(0)
}

#[inline(always)]
pub fn bump(index: u32) {
    if let Some(slot) = COUNTERS.get_ptr_mut(index) {
        // Per-CPU slot: no other CPU writes it, and programs do not nest on
        // one CPU for the same counter often enough to matter for a count.
        unsafe { *slot += 1 };
    }
}

/// Reads a `T` at `base + offset`. A field this kernel lacks, or a null
/// base, reads as zero; a failed read also counts in `READ_ERRORS`.
#[inline(always)]
pub fn read<T: Copy + Default>(base: u64, offset: u32) -> T {
    if base == 0 || offset == NO_OFFSET {
        return T::default();
    }
    match unsafe { bpf_probe_read_kernel((base + offset as u64) as *const T) } {
        Ok(value) => value,
        Err(_) => {
            bump(counter::READ_ERRORS);
            T::default()
        }
    }
}

/// Reads a `T` at `base + offset` without a branch: the helper zero-fills
/// its destination when the read fails, and a missing field (`NO_OFFSET`)
/// or a null base make an address it rejects. For hot paths with many
/// reads, where every branch multiplies the states the verifier walks
/// (bio_endio's chain loop); failures are not counted.
#[inline(always)]
pub fn peek<T: Copy>(base: u64, offset: u32) -> T {
    let mut value = core::mem::MaybeUninit::<T>::zeroed();
    unsafe {
        aya_ebpf::helpers::generated::bpf_probe_read_kernel(
            value.as_mut_ptr().cast(),
            core::mem::size_of::<T>() as u32,
            base.wrapping_add(offset as u64) as *const core::ffi::c_void,
        );
        value.assume_init()
    }
}

/// The leading bytes of a struct, fetched in one read (see
/// `ProbeConfig::set_region_spans`); fields are then taken from the copy.
/// Without a span, without room, or when the read fails, each field is
/// read on its own.
pub struct Region<const WORDS: usize> {
    /// Room in `REGIONS`; only the first `span` bytes are written, and only
    /// they are read.
    copy: *const [u64; WORDS],
    base: u64,
    copied: bool,
}

/// A bio's leading bytes.
pub type BioRegion = Region<{ BIO_REGION_BYTES as usize / 8 }>;
/// A `block_device`'s or a `request`'s leading bytes.
pub type SmallRegion = Region<{ SMALL_REGION_BYTES as usize / 8 }>;

/// A hook's room in `REGIONS`: one bio and two smaller structs.
pub struct Scratch {
    pub bio: *mut [u64; BIO_REGION_BYTES as usize / 8],
    pub first: *mut [u64; SMALL_REGION_BYTES as usize / 8],
    pub second: *mut [u64; SMALL_REGION_BYTES as usize / 8],
}

impl Scratch {
    /// This CPU's room for the hook `slot` (`maps::scratch`).
    #[inline(always)]
    pub fn of(slot: u32) -> Option<Self> {
        let words = REGIONS.get_ptr_mut(slot)?.cast::<u64>();
        Some(unsafe {
            Scratch {
                bio: words.cast(),
                first: words.add(16).cast(),
                second: words.add(24).cast(),
            }
        })
    }
}

impl<const WORDS: usize> Region<WORDS> {
    const BYTES: u32 = WORDS as u32 * 8;

    /// Copies the first `span` bytes at `base` into `room`.
    #[inline(always)]
    pub fn read(room: Option<*mut [u64; WORDS]>, base: u64, span: u32) -> Self {
        let len = span.min(Self::BYTES);
        let Some(room) = room.filter(|_| base != 0 && len != 0) else {
            return Region {
                copy: core::ptr::null(),
                base,
                copied: false,
            };
        };
        let copied = unsafe {
            aya_ebpf::helpers::generated::bpf_probe_read_kernel(
                room.cast(),
                len,
                base as *const core::ffi::c_void,
            )
        } == 0;
        Region {
            copy: room,
            base,
            copied,
        }
    }

    /// The `T` at `offset`, as [`read`] would return it.
    #[inline(always)]
    pub fn get<T: Copy + Default>(&self, offset: u32) -> T {
        if !self.copied {
            return read(self.base, offset);
        }
        if offset == NO_OFFSET {
            return T::default();
        }
        // Userspace accepted the span only with every field naturally
        // aligned inside it, so the mask changes nothing; it shows the
        // verifier an access within the copy.
        let at = offset & (Self::BYTES - core::mem::size_of::<T>() as u32);
        unsafe { *self.copy.cast::<u8>().add(at as usize).cast::<T>() }
    }
}

#[inline(always)]
pub fn current_task() -> u64 {
    unsafe { bpf_get_current_task() }
}

/// `dev_t` of a `struct gendisk` (`major << 20 | first_minor`).
#[inline(always)]
pub fn disk_dev(cfg: &ProbeConfig, disk: u64) -> u32 {
    let [major, minor] = if minor_follows_major(cfg) {
        read::<[i32; 2]>(disk, cfg.block.disk_major)
    } else {
        [
            read(disk, cfg.block.disk_major),
            read(disk, cfg.block.disk_first_minor),
        ]
    };
    dev_of(major, minor)
}

/// Whether `gendisk.first_minor` directly follows `gendisk.major` (as in
/// every kernel so far): then one read fetches both.
#[inline(always)]
fn minor_follows_major(cfg: &ProbeConfig) -> bool {
    cfg.block.disk_major != NO_OFFSET
        && cfg.block.disk_first_minor == cfg.block.disk_major.wrapping_add(4)
}

#[inline(always)]
fn dev_of(major: i32, minor: i32) -> u32 {
    ((major as u32) << 20) | (minor as u32 & 0xfffff)
}

/// (`bio->bi_bdev->bd_dev`, the whole disk's `dev_t`) of a bio's copy.
#[inline(always)]
pub fn bio_devs(
    cfg: &ProbeConfig,
    bio: &BioRegion,
    room: Option<*mut [u64; SMALL_REGION_BYTES as usize / 8]>,
) -> (u32, u32) {
    let bdev = SmallRegion::read(room, bio.get(cfg.bio.bdev), cfg.block.bdev_span);
    let dev: u32 = bdev.get(cfg.block.bdev_dev);
    let disk: u64 = bdev.get(cfg.block.bdev_disk);
    (dev, disk_dev(cfg, disk))
}

/// [`bio_devs`] with [`peek`]s.
#[inline(always)]
pub fn bio_devs_peek(cfg: &ProbeConfig, bio: u64) -> (u32, u32) {
    let bdev: u64 = peek(bio, cfg.bio.bdev);
    let dev: u32 = peek(bdev, cfg.block.bdev_dev);
    let disk: u64 = peek(bdev, cfg.block.bdev_disk);
    // Two reads, no branch: bio_endio's chain loop multiplies branches.
    let major: i32 = peek(disk, cfg.block.disk_major);
    let minor: i32 = peek(disk, cfg.block.disk_first_minor);
    (dev, dev_of(major, minor))
}

/// Whether `addr` lies in the kernel stack that starts at `stack_base`.
#[inline(always)]
pub fn on_stack(cfg: &ProbeConfig, stack_base: u64, addr: u64) -> bool {
    stack_base != 0 && addr >= stack_base && addr < stack_base + cfg.thread_size as u64
}
