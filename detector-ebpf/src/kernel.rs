//! Reading kernel memory through the offsets userspace found in BTF.

use aya_ebpf::helpers::{bpf_get_current_task, bpf_get_current_task_btf, bpf_probe_read_kernel};
use core::intrinsics::{AtomicOrdering, atomic_cxchg, atomic_xadd, atomic_xchg};
use detector_common::{
    ProbeConfig,
    config::{BIO_REGION_BYTES, NO_OFFSET, SMALL_REGION_BYTES},
    counter,
};

use crate::maps::{CONFIG, COUNTERS, REGIONS};

/// `task_struct.pid`'s offset (`NO_OFFSET`: unknown), written by userspace
/// into the programs' read-only data before they are loaded. The verifier
/// reads it as a constant, which lets a program load a BTF-typed task
/// pointer's pid directly (`Hooked::task_tid`) instead of calling
/// `bpf_probe_read_kernel`: it allows only constant offsets on such
/// pointers, and `CONFIG` is writable, so its offsets are not constants.
#[unsafe(no_mangle)]
static TASK_PID_OFFSET: u32 = NO_OFFSET;

#[inline(always)]
pub fn task_pid_offset() -> u32 {
    loaded(&TASK_PID_OFFSET)
}

/// A read-only global as the loader set it. Volatile: the compiler would
/// otherwise use the initializer.
#[inline(always)]
fn loaded(global: &'static u32) -> u32 {
    unsafe { core::ptr::read_volatile(global) }
}

/// The bytes of a `block_device` from its start that hold `bd_dev` and
/// `bd_disk` (0: more than a small region, as on 6.1, where `bd_disk`
/// follows the embedded `struct device`; they are then read one by one).
/// Read-only like [`TASK_PID_OFFSET`], so that the verifier follows only
/// the way this kernel takes: a choice made from `CONFIG` would double
/// the paths it walks through every bio hook.
#[unsafe(no_mangle)]
static BDEV_SPAN: u32 = 0;

/// 1 when `gendisk.first_minor` directly follows `gendisk.major` (every
/// kernel so far): one read takes both. Read-only, as [`BDEV_SPAN`].
#[unsafe(no_mangle)]
static DISK_DEV_PAIR: u32 = 0;

/// `task_struct.stack`'s offset, as [`TASK_PID_OFFSET`]: every record's
/// header loads current's stack base straight from the task.
#[unsafe(no_mangle)]
static TASK_STACK_OFFSET: u32 = NO_OFFSET;

/// `current->stack`: the lowest address of current's kernel stack. A
/// plain load from the typed pointer `bpf_get_current_task_btf` gives,
/// at an offset the verifier knows as a constant, instead of a helper
/// copy (the kernel handles a fault in such a load: it reads 0).
#[inline(always)]
pub fn current_stack(cfg: &ProbeConfig) -> u64 {
    let offset = loaded(&TASK_STACK_OFFSET);
    if offset == NO_OFFSET {
        return read(current_task(), cfg.task.stack);
    }
    let task = unsafe { bpf_get_current_task_btf() }.cast::<u8>();
    unsafe { core::ptr::read_volatile(task.add(offset as usize).cast::<u64>()) }
}

/// The running kernel's offsets; `None` until userspace wrote them.
#[inline(always)]
pub fn config() -> Option<&'static ProbeConfig> {
    CONFIG.get(0)
}

/// Counts one lost or skipped event in this CPU's slot. The add is atomic:
/// a program that reserves in a full ring from process context can be
/// interrupted by one that fails the same way from an interrupt, on the
/// same CPU, and a plain load-add-store would then keep only one of the
/// two. Loss is data, so every count of it must be whole.
#[inline(always)]
pub fn bump(index: u32) {
    if let Some(slot) = counter_slot(index) {
        atomic_add(slot);
    }
}

/// Adds 1 to `*slot` atomically. The BPF target has no atomic
/// read-modify-write in `core`, hence the intrinsic; its result is
/// unused, so it compiles to BPF's plain `lock xadd` (no BPF_FETCH),
/// which every kernel runs. `slot` must point into a map value.
#[inline(always)]
pub fn atomic_add(slot: *mut u64) {
    unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(slot, 1) };
}

/// Sets `*slot` to `new` if it holds `old`, atomically; returns what it
/// held. BPF's `cmpxchg` (5.12+, a full barrier): only on a path that
/// [`held_table_usable`] guards, so that older kernels never see it.
#[inline(always)]
pub fn compare_exchange(slot: *mut u64, old: u64, new: u64) -> u64 {
    unsafe {
        atomic_cxchg::<u64, { AtomicOrdering::SeqCst }, { AtomicOrdering::SeqCst }>(slot, old, new)
            .0
    }
}

/// Stores `new` in `*slot` atomically (BPF's `xchg`, 5.12+, a full
/// barrier: what was written before is seen before it); returns what it
/// held. Guarded as [`compare_exchange`] is.
#[inline(always)]
pub fn exchange(slot: *mut u64, new: u64) -> u64 {
    unsafe { atomic_xchg::<u64, { AtomicOrdering::SeqCst }>(slot, new) }
}

/// Whether bios may be paired in this session at all: the kernel runs
/// BPF's atomic exchanges, which the held-submission table needs (5.12+;
/// arm64's JIT 5.18+), and nothing known at load rules pairing out
/// (userspace's `may_pair`). Read-only, set by the loader: the verifier
/// reads it as a constant and, where it is 0, never walks (nor rejects)
/// the paths that use them.
#[unsafe(no_mangle)]
static HELD_TABLE_USABLE: u32 = 0;

#[inline(always)]
pub fn held_table_usable() -> bool {
    loaded(&HELD_TABLE_USABLE) != 0
}

/// Counts a healthy event (a bio paired in the kernel) with a plain add:
/// it runs for every I/O, and a count collapsed by a nested program on the
/// same CPU changes no verdict.
#[inline(always)]
pub fn tally(index: u32) {
    if let Some(slot) = counter_slot(index) {
        unsafe { *slot += 1 };
    }
}

#[inline(always)]
fn counter_slot(index: u32) -> Option<*mut u64> {
    let slots = COUNTERS.get_ptr_mut(0)?;
    if index >= counter::COUNT {
        return None;
    }
    Some(unsafe { (*slots).as_mut_ptr().add(index as usize) })
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

/// A struct's fields, taken without a branch per field: every branch
/// multiplies the paths the verifier walks through a hook, and a bio
/// hook takes a dozen fields. Callers choose between [`Copied`] and
/// [`Peeked`] once per struct.
pub trait Fields {
    fn get<T: Copy>(&self, offset: u32) -> T;
}

/// Each field [`peek`]ed on its own (a struct without a span: a kernel
/// unlike every one so far). A failed read gives zero, uncounted.
pub struct Peeked(pub u64);

impl Fields for Peeked {
    #[inline(always)]
    fn get<T: Copy>(&self, offset: u32) -> T {
        peek(self.0, offset)
    }
}

/// A struct's leading bytes, fetched in one read (see
/// `ProbeConfig::set_region_spans`), which hold every field taken.
pub struct Copied<const WORDS: usize> {
    copy: *const [u64; WORDS],
}

/// Words of room for a bio's leading bytes.
pub const BIO_WORDS: usize = BIO_REGION_BYTES as usize / 8;
/// Words of room for a `request`'s leading bytes, or for the two fields a
/// request's walk reads of each bio.
pub const SMALL_WORDS: usize = SMALL_REGION_BYTES as usize / 8;

/// A bio's leading bytes.
pub type CopiedBio = Copied<BIO_WORDS>;
/// A `request`'s leading bytes, or a bio's up to `bi_iter.bi_size`.
pub type CopiedSmall = Copied<SMALL_WORDS>;

impl<const WORDS: usize> Copied<WORDS> {
    const BYTES: u32 = WORDS as u32 * 8;

    /// Copies the first `span` bytes at `base` into `room` (a span of 0 is
    /// refused by [`room_for`]). A failed copy reads as zeros, as a failed
    /// peek does (the helper zero-fills), and counts.
    #[inline(always)]
    pub fn read(room: *mut [u64; WORDS], base: u64, span: u32) -> Self {
        if !Self::copy(room, base, span) {
            bump(counter::READ_ERRORS);
        }
        Copied { copy: room }
    }

    /// [`Copied::read`] without counting a failure, for what was peeked
    /// before (a bio's `bi_bdev` may be NULL by the time it ends).
    #[inline(always)]
    pub fn read_quiet(room: *mut [u64; WORDS], base: u64, span: u32) -> Self {
        Self::copy(room, base, span);
        Copied { copy: room }
    }

    /// Whether the copy succeeded (on failure the helper zero-fills).
    #[inline(always)]
    fn copy(room: *mut [u64; WORDS], base: u64, span: u32) -> bool {
        // Userspace gives at most `BYTES`; the mask bounds the size for the
        // verifier wherever the compiler put the value, and each room has
        // `ROOM_BYTES` behind it (`REGIONS`).
        let len = span & (ROOM_BYTES - 1);
        unsafe {
            aya_ebpf::helpers::generated::bpf_probe_read_kernel(
                room.cast(),
                len,
                base as *const core::ffi::c_void,
            ) == 0
        }
    }
}

/// `room` when the struct has a span; `None`: read it field by field.
#[inline(always)]
pub fn room_for<R>(room: Option<R>, span: u32) -> Option<R> {
    room.filter(|_| span != 0)
}

impl<const WORDS: usize> Fields for Copied<WORDS> {
    #[inline(always)]
    fn get<T: Copy>(&self, offset: u32) -> T {
        // Userspace gave a span only with every field known and naturally
        // aligned inside it, so the mask changes nothing; it shows the
        // verifier an access within the copy.
        let at = offset & (Self::BYTES - core::mem::size_of::<T>() as u32);
        unsafe { *self.copy.cast::<u8>().add(at as usize).cast::<T>() }
    }
}

/// Bytes from the start of each room to the end of its `REGIONS` entry at
/// least: what a masked copy size may reach.
const ROOM_BYTES: u32 = 256;

/// A hook's room in `REGIONS`: one bio and two smaller structs, each
/// [`ROOM_BYTES`] from the entry's end or more.
pub struct Scratch {
    pub bio: *mut [u64; BIO_WORDS],
    pub first: *mut [u64; SMALL_WORDS],
    pub second: *mut [u64; SMALL_WORDS],
}

impl Scratch {
    /// This CPU's room for the hook `slot` (`maps::scratch`).
    #[inline(always)]
    pub fn of(slot: u32) -> Option<Self> {
        let words = REGIONS.get_ptr_mut(slot)?.cast::<u64>();
        Some(unsafe {
            Scratch {
                bio: words.cast(),
                first: words.add(32).cast(),
                second: words.add(64).cast(),
            }
        })
    }
}

#[inline(always)]
pub fn current_task() -> u64 {
    unsafe { bpf_get_current_task() }
}

/// `dev_t` of a `struct gendisk` (`major << 20 | first_minor`).
#[inline(always)]
pub fn disk_dev(cfg: &ProbeConfig, disk: u64) -> u32 {
    let [major, minor] = if loaded(&DISK_DEV_PAIR) != 0 {
        read::<[i32; 2]>(disk, cfg.block.disk_major)
    } else {
        [
            read(disk, cfg.block.disk_major),
            read(disk, cfg.block.disk_first_minor),
        ]
    };
    dev_of(major, minor)
}

#[inline(always)]
fn dev_of(major: i32, minor: i32) -> u32 {
    ((major as u32) << 20) | (minor as u32 & 0xfffff)
}

/// A bio's fields, and the numbers of its device and whole disk.
pub trait BioFields: Fields {
    /// (`bio->bi_bdev->bd_dev`, the whole disk's `dev_t`).
    fn devs(&self, cfg: &ProbeConfig) -> (u32, u32);
}

impl BioFields for Peeked {
    #[inline(always)]
    fn devs(&self, cfg: &ProbeConfig) -> (u32, u32) {
        bdev_devs_peek(cfg, self.get(cfg.bio.bdev))
    }
}

/// A bio's leading bytes, copied, and room to copy its block device's
/// (the hook's `Scratch::first`).
pub struct CopiedBioAndBdev {
    bio: CopiedBio,
    bdev_room: *mut [u64; SMALL_WORDS],
}

impl CopiedBioAndBdev {
    #[inline(always)]
    pub fn read(room: &Scratch, bio: u64, span: u32) -> Self {
        CopiedBioAndBdev {
            bio: CopiedBio::read(room.bio, bio, span),
            bdev_room: room.first,
        }
    }
}

impl Fields for CopiedBioAndBdev {
    #[inline(always)]
    fn get<T: Copy>(&self, offset: u32) -> T {
        self.bio.get(offset)
    }
}

impl BioFields for CopiedBioAndBdev {
    /// The block device's two fields in one read where they lie close
    /// together ([`BDEV_SPAN`]).
    #[inline(always)]
    fn devs(&self, cfg: &ProbeConfig) -> (u32, u32) {
        let bdev: u64 = self.get(cfg.bio.bdev);
        let span = loaded(&BDEV_SPAN);
        if span == 0 {
            return bdev_devs_peek(cfg, bdev);
        }
        let copy = CopiedSmall::read_quiet(self.bdev_room, bdev, span);
        let disk: u64 = copy.get(cfg.block.bdev_disk);
        (copy.get(cfg.block.bdev_dev), disk_dev_peek(cfg, disk))
    }
}

/// The device and whole disk of a `block_device`, peeked.
#[inline(always)]
fn bdev_devs_peek(cfg: &ProbeConfig, bdev: u64) -> (u32, u32) {
    let dev: u32 = peek(bdev, cfg.block.bdev_dev);
    let disk: u64 = peek(bdev, cfg.block.bdev_disk);
    (dev, disk_dev_peek(cfg, disk))
}

/// A disk's `dev_t`, peeked: one read where the minor follows the major
/// ([`DISK_DEV_PAIR`]), else two; no branch the verifier walks twice.
#[inline(always)]
fn disk_dev_peek(cfg: &ProbeConfig, disk: u64) -> u32 {
    let [major, minor] = if loaded(&DISK_DEV_PAIR) != 0 {
        peek::<[i32; 2]>(disk, cfg.block.disk_major)
    } else {
        [
            peek(disk, cfg.block.disk_major),
            peek(disk, cfg.block.disk_first_minor),
        ]
    };
    dev_of(major, minor)
}

/// Whether `addr` lies in the kernel stack that starts at `stack_base`.
#[inline(always)]
pub fn on_stack(cfg: &ProbeConfig, stack_base: u64, addr: u64) -> bool {
    stack_base != 0 && addr >= stack_base && addr < stack_base + cfg.thread_size as u64
}
