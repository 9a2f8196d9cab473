//! The bio table: every bio seen submitted, from submission to completion,
//! and per-disk in-flight counts. Shared by the bio rules, lost-io and
//! lost-wakeup.
//!
//! A life starts at the first `BioQueue` of an address (or the first after
//! it completed or was re-initialised). Stacked drivers and bio splitting
//! resubmit a bio that is still in flight: that refreshes it. Completion is
//! seen in one of four ways, from the most to the least precise:
//! `bio_endio` (final call), a request completion naming the bio,
//! `block_bio_complete`, or a request completion whose bio walk was cut
//! short, which completes every in-flight bio ending inside its sector
//! range.
//!
//! Lives also start unseen. `bio_init` is inlined into `bio_alloc_bioset`
//! in distribution kernels, and clones, splits and passthrough bios reach
//! `bio_endio` without any submission we can see (dm-thin ends its clones
//! of unprovisioned blocks from its worker; a split front half is handed
//! straight to the driver). A completed bio's address can therefore be
//! reused by a new bio that completes without anything in between. Each
//! final `bio_endio` records what it saw ([`EndioCall`]), and a second one
//! is only taken for the same bio completing again when nothing says
//! otherwise (see [`Bios::complete`]).
//!
//! Memory: a busy host keeps thousands of bios in flight, so the in-flight
//! table holds only what a rule reads (derived fields are computed), and
//! completed bios, kept only to recognise a second completion, live in a
//! table of their own, bounded. One queue in submission order serves both
//! eviction and the lost-I/O deadlines: submissions come in time order.

use super::finding::{Object, ObjectKind};
use std::collections::{BTreeSet, VecDeque};

use super::actor::{Actor, Mark};
use super::hash::{FastMap, FastSet};
use super::loss::Seen;
use crate::event::{Addr, Dev};

/// How a completion was observed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Via {
    /// The final `bio_endio` call.
    Endio,
    /// `block_rq_complete` named it.
    Request,
    /// `block_bio_complete`.
    BioComplete,
    /// A request completed its sector range; the bio was not named.
    Range,
}

impl Via {
    pub fn describe(self) -> &'static str {
        match self {
            Self::Endio => "bio_endio",
            Self::Request => "request completion",
            Self::BioComplete => "block_bio_complete",
            Self::Range => "request completion (by sector range)",
        }
    }
}

/// What one `bio_endio` call saw of the bio: enough to tell the same bio
/// completing again from a new bio at the same address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Identity {
    pub end_io: Addr,
    pub private: Addr,
    pub dev: Dev,
    pub sector: u64,
    pub size: u32,
}

/// A final `bio_endio` call.
#[derive(Clone, Copy, Debug)]
pub struct EndioCall {
    /// The handler call (`handlers::Call::id`).
    pub id: u64,
    pub identity: Identity,
    /// `bi_blkg` was set. The final completion's `bio_uninit()` clears it,
    /// so a later call with it set is on a bio set up anew.
    pub has_blkg: bool,
    /// `REQ_INTEGRITY` was set.
    pub integrity: bool,
    /// A read that succeeded: with `integrity`, the kernel defers `bi_end_io`
    /// to integrity verification (kintegrityd), which calls `bio_endio`
    /// again once the integrity payload is freed.
    pub read_ok: bool,
}

#[derive(Clone, Copy, Debug)]
pub struct Completion {
    pub actor: Actor,
    pub via: Via,
    /// Errno or `blk_status_t`, as the event gave it (0: success).
    pub status: i32,
    /// `bi_end_io` as `bio_endio` saw it (null for tracepoints).
    pub end_io: Addr,
    /// The `bio_endio` call, when that is how it was seen.
    pub call: Option<EndioCall>,
    /// It ran inside the submitter's own submission call: the submission
    /// failed (the disk is going away, say) and the bio never reached the
    /// device.
    pub in_submission: bool,
}

/// A chained bio's latest `bio_endio`: the `__bi_remaining` it read and
/// its call (`handlers::Call::id`, never 0; 0: none yet).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct ChainRead {
    remaining: i32,
    call: u64,
}

/// Flags of a [`Bio`].
mod flag {
    /// The life started with a submission we saw.
    pub const SUBMITTED: u8 = 1;
    /// Some `bio_endio` ran for it, final or not: the device answered.
    pub const ENDIO_ACTIVITY: u8 = 2;
    pub const LOST_REPORTED: u8 = 4;
    /// The submission's sector is disk-relative: range completions apply.
    pub const DISK_RELATIVE: u8 = 8;
}

/// One life of a bio.
#[derive(Clone, Copy, Debug)]
pub struct Bio {
    pub addr: Addr,
    pub life: u32,
    pub resubmits: u16,
    flags: u8,
    /// The submission that started this life (the completion, for lives
    /// first seen completing): see [`Bio::queued`].
    queued: Mark,
    /// The latest (re)submission.
    pub last_queued: u64,
    pub dev: Dev,
    pub disk: Dev,
    pub sector: u64,
    pub size: u32,
    /// The task's episode number the submission belongs to (lost-wakeup).
    pub episode: u32,
    pub end_io: Addr,
    pub seen: Seen,
}

impl Bio {
    /// The bio as a finding's object: its device, its disk when that
    /// differs, and the completion handler `end_io` (when known).
    pub fn object(&self, end_io: Addr) -> Object {
        let mut object = Object::new(ObjectKind::Bio, self.addr);
        object.dev = Some(self.dev);
        object.disk = (self.disk != self.dev).then_some(self.disk);
        object.end_io = (!end_io.is_null()).then_some(end_io);
        object
    }

    /// "bio 0x... submitted to 8:0 by dd/1234", for interleavings.
    pub fn submitted_by(&self) -> String {
        format!(
            "bio {} submitted to {} by {}",
            self.addr,
            self.dev,
            self.queued().who()
        )
    }

    /// The submission that started this life (the completion, for lives
    /// first seen completing).
    pub fn queued(&self) -> Actor {
        self.queued.actor()
    }

    /// The life started with a submission we saw (else it was first seen
    /// completing).
    pub fn submitted(&self) -> bool {
        self.flags & flag::SUBMITTED != 0
    }

    /// Task the submission is charged to (0: interrupt context).
    pub fn submitter(&self) -> u32 {
        let queued = self.queued();
        if self.submitted() && !queued.irq {
            queued.tid
        } else {
            0
        }
    }

    pub fn endio_activity(&self) -> bool {
        self.flags & flag::ENDIO_ACTIVITY != 0
    }

    pub fn lost_reported(&self) -> bool {
        self.flags & flag::LOST_REPORTED != 0
    }

    /// Disk-relative end sector, when the submission's sector is known to
    /// be disk-relative: the key of range completions.
    fn end_sector(&self) -> Option<u64> {
        (self.flags & flag::DISK_RELATIVE != 0)
            .then(|| self.sector + (self.size as u64).div_ceil(512))
    }
}

/// A completed life kept to recognise a second completion.
#[derive(Clone, Copy, Debug)]
pub struct Done {
    pub bio: Bio,
    /// Its latest final completion.
    pub done: Completion,
}

/// Per-disk facts.
#[derive(Clone, Copy, Debug, Default)]
pub struct Disk {
    pub inflight: u32,
    /// When `inflight` last dropped to zero.
    pub idle_since: u64,
    /// A completion was seen for a bio submitted to this disk, so its
    /// completions are observable with the hooks this kernel has.
    pub completions_seen: bool,
}

/// What a submission did to the table, and the bio as it is now.
pub enum Queued {
    /// A new life.
    New(Bio),
    /// The bio was in flight: a resubmission (stacking, splitting).
    Refresh(Bio),
}

/// Where the previous final `bio_endio` call of a bio stands when another
/// one starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PrevCall {
    /// It returned (or its return is unknowable: no exit hook).
    Returned,
    /// It is still running, and the new call is nested inside it, in the
    /// same context: its `bi_end_io` called `bio_endio` again.
    Enclosing,
    /// It is still running in another context.
    Concurrent,
}

/// What a completion did to the table.
pub enum Completed {
    /// The bio's first completion in this life (the bio as it was).
    First(Bio),
    /// A second final completion of one life, after `Done::done`.
    Again(Done),
    /// The same completion seen again, or the kernel's own second call:
    /// integrity verification finishing a read, or a stacking driver
    /// that hooked `bi_end_io` restoring it and completing again.
    Continued,
    /// A new bio at a completed bio's address, first seen completing.
    NewLife,
    /// Never seen (or forgotten), and not a final `bio_endio`.
    Unknown,
}

pub struct Submission<'a> {
    pub actor: &'a Actor,
    pub addr: Addr,
    pub dev: Dev,
    pub disk: Dev,
    pub sector: u64,
    pub size: u32,
    pub end_io: Addr,
    pub disk_relative: bool,
    pub episode: u32,
    pub seen: Seen,
}

/// An entry of the submission queue: a life and its latest submission.
#[derive(Clone, Copy)]
struct Queue {
    ts: u64,
    addr: Addr,
    life: u32,
}

pub struct Bios {
    max_inflight: usize,
    max_disks: usize,
    /// The disk table's size that makes room in it (`evict_idle_disks`).
    disk_room: usize,
    max_completed: usize,
    /// Keep completed bios (to recognise a second completion): only worth
    /// it when `bio_endio` is hooked, the only source that can show one.
    pub keep_completed: bool,
    /// Keep the by-sector index (range completions come from request
    /// tracepoints only; with `bio_endio` hooked it is not needed).
    pub index_sectors: bool,
    inflight_bios: FastMap<Addr, Bio>,
    done_bios: FastMap<Addr, Done>,
    /// In-flight lives by (latest) submission: the oldest first, for
    /// eviction and lost-I/O deadlines. A resubmission queues the life
    /// again; entries whose life is over or was resubmitted are skipped.
    queue: VecDeque<Queue>,
    /// Completed lives in completion order, for eviction.
    done_order: VecDeque<(Addr, u32)>,
    next_life: u32,
    /// In-flight bios by disk and disk-relative end sector, for the disks
    /// in `indexed`.
    by_end: BTreeSet<(Dev, u64, Addr)>,
    /// Disks whose in-flight bios `by_end` holds. A disk joins at its
    /// first range completion (a request whose bio walk was cut short),
    /// and its bios in flight then are indexed at once: keeping every bio
    /// of every disk in the index was some 8 % of the live path under
    /// fio's small requests, which never need it.
    indexed: FastSet<Dev>,
    /// In-flight chained bios' latest count reads (few bios are chained:
    /// kept apart from the bio table).
    chains: FastMap<Addr, ChainRead>,
    pub disks: FastMap<Dev, Disk>,
    pub inflight: u64,
    /// When `inflight` last dropped to zero.
    pub idle_since: u64,
    /// Live bios dropped for room (in flight / completed).
    pub evicted_inflight: u64,
    pub evicted_completed: u64,
    pub evicted_disks: u64,
}

impl Bios {
    pub fn new(max_inflight: usize, max_completed: usize, max_disks: usize) -> Self {
        Self {
            max_inflight: max_inflight.max(1),
            max_disks: max_disks.max(1),
            disk_room: max_disks.max(1),
            max_completed,
            keep_completed: false,
            index_sectors: true,
            inflight_bios: FastMap::default(),
            done_bios: FastMap::default(),
            queue: VecDeque::new(),
            done_order: VecDeque::new(),
            next_life: 0,
            by_end: BTreeSet::new(),
            indexed: FastSet::default(),
            chains: FastMap::default(),
            disks: FastMap::default(),
            inflight: 0,
            idle_since: 0,
            evicted_inflight: 0,
            evicted_completed: 0,
            evicted_disks: 0,
        }
    }

    /// `bio_endio` is hooked from now on: completed bios are worth keeping
    /// and range completions will not come.
    pub fn endio_hooked(&mut self) {
        self.keep_completed = true;
        if self.index_sectors {
            self.index_sectors = false;
            self.by_end.clear();
            self.indexed.clear();
        }
    }

    /// The in-flight life at `addr`.
    pub fn in_flight(&self, addr: Addr) -> Option<&Bio> {
        self.inflight_bios.get(&addr)
    }

    /// The completed life kept at `addr`.
    pub fn completed(&self, addr: Addr) -> Option<&Done> {
        self.done_bios.get(&addr)
    }

    /// The life at `addr`, in flight or completed.
    pub fn get(&self, addr: Addr) -> Option<&Bio> {
        self.in_flight(addr)
            .or_else(|| self.completed(addr).map(|d| &d.bio))
    }

    pub fn len(&self) -> usize {
        self.inflight_bios.len() + self.done_bios.len()
    }

    pub fn disk(&self, dev: Dev) -> Disk {
        self.disks.get(&dev).copied().unwrap_or_default()
    }

    fn next_life(&mut self) -> u32 {
        let life = self.next_life;
        self.next_life = self.next_life.wrapping_add(1);
        life
    }

    /// Records a submission; evicted in-flight bios are pushed to `evicted`.
    pub fn queue(&mut self, sub: Submission<'_>, evicted: &mut Vec<Bio>) -> Queued {
        if let Some(bio) = self.inflight_bios.get_mut(&sub.addr) {
            // In flight: a resubmission.
            bio.resubmits = bio.resubmits.saturating_add(1);
            bio.last_queued = sub.actor.ts;
            let entry = Queue {
                ts: sub.actor.ts,
                addr: sub.addr,
                life: bio.life,
            };
            let bio = *bio;
            self.queue.push_back(entry);
            return Queued::Refresh(bio);
        }
        // A completed bio submitted again starts over.
        if !self.done_bios.is_empty() {
            self.done_bios.remove(&sub.addr);
        }
        while self.inflight as usize >= self.max_inflight {
            let Some(oldest) = self.queue.pop_front() else {
                break;
            };
            if self.is_current(&oldest)
                && let Some(bio) = self.forget(oldest.addr, sub.actor.ts)
            {
                self.evicted_inflight += 1;
                evicted.push(bio);
            }
        }
        let life = self.next_life();
        let mut flags = flag::SUBMITTED;
        if sub.disk_relative {
            flags |= flag::DISK_RELATIVE;
        }
        let bio = Bio {
            addr: sub.addr,
            life,
            resubmits: 0,
            flags,
            queued: Mark::of(sub.actor),
            last_queued: sub.actor.ts,
            dev: sub.dev,
            disk: sub.disk,
            sector: sub.sector,
            size: sub.size,
            episode: sub.episode,
            end_io: sub.end_io,
            seen: sub.seen,
        };
        if self.is_indexed(sub.disk)
            && let Some(end) = bio.end_sector()
        {
            self.by_end.insert((sub.disk, end, sub.addr));
        }
        self.inflight_bios.insert(sub.addr, bio);
        self.queue.push_back(Queue {
            ts: sub.actor.ts,
            addr: sub.addr,
            life,
        });
        self.compact_queue();
        self.inflight += 1;
        if self.disks.len() >= self.disk_room && !self.disks.contains_key(&sub.disk) {
            self.evict_idle_disks();
        }
        self.disks.entry(sub.disk).or_default().inflight += 1;
        Queued::New(bio)
    }

    /// Makes room in the disk table: idle disks go, busy ones are still
    /// counted. An idle disk that showed a completion stays while the
    /// table is within twice its bound (so at most four times, with the
    /// room made after): with bios paired in the kernel, a disk's
    /// completion is shipped only until one reached the reader (the kernel
    /// marks the disk), so a disk forgotten here would never show one
    /// again and lost-io would stop judging it. Past that, those go too
    /// (counted as evicted disks).
    fn evict_idle_disks(&mut self) {
        let before = self.disks.len();
        self.disks
            .retain(|_, d| d.inflight > 0 || d.completions_seen);
        if self.disks.len() >= 2 * self.max_disks {
            self.disks.retain(|_, d| d.inflight > 0);
        }
        self.evicted_disks += (before - self.disks.len()) as u64;
        // As much room again as is kept: a table full of disks that
        // showed completions is not looked through at every new disk.
        self.disk_room = (2 * self.disks.len()).max(self.max_disks);
    }

    /// Whether a queue entry still stands for its life's latest submission.
    fn is_current(&self, q: &Queue) -> bool {
        self.inflight_bios
            .get(&q.addr)
            .is_some_and(|b| b.life == q.life && b.last_queued == q.ts)
    }

    /// Drops stale queue entries once they outnumber the live ones.
    fn compact_queue(&mut self) {
        if self.queue.len() > 2 * self.inflight_bios.len() + 1024 {
            let bios = &self.inflight_bios;
            self.queue.retain(|q| {
                bios.get(&q.addr)
                    .is_some_and(|b| b.life == q.life && b.last_queued == q.ts)
            });
        }
    }

    /// When the submission at the queue's front was made: the oldest
    /// in-flight one, or a life already over (not yet dropped).
    pub fn front_submission(&self) -> Option<u64> {
        self.queue.front().map(|q| q.ts)
    }

    /// The oldest in-flight bio, if it was (re)submitted at or before
    /// `ts`: taken off the queue (each life is judged once per submission).
    pub fn pop_submitted_by(&mut self, ts: u64) -> Option<Bio> {
        loop {
            let front = *self.queue.front()?;
            let current = self.is_current(&front);
            if current && front.ts > ts {
                return None;
            }
            self.queue.pop_front();
            if current {
                return self.inflight_bios.get(&front.addr).copied();
            }
        }
    }

    /// Records a completion of `addr`. `prev` tells where the bio's
    /// previous final `bio_endio` call stands (asked only when there was
    /// one).
    pub fn complete(
        &mut self,
        addr: Addr,
        done: Completion,
        seen: Seen,
        prev: impl FnOnce(u64) -> PrevCall,
    ) -> Completed {
        if let Some(before) = self.inflight_bios.remove(&addr) {
            let disk = self.leave_flight(&before, done.actor.ts);
            disk.completions_seen = true;
            self.keep(Done { bio: before, done });
            return Completed::First(before);
        }
        let Some(kept) = self.done_bios.get_mut(&addr) else {
            if let Some(call) = done.call {
                self.start_completed(addr, &done, call, seen);
            }
            return Completed::Unknown;
        };
        let first = kept.done;
        let (Some(p), Some(c)) = (first.call, done.call) else {
            // A tracepoint is not a per-call fact (a flush sequence reports
            // its bios twice); bio_endio seeing the same completion after a
            // tracepoint did is the one that counts.
            if first.call.is_none() && done.call.is_some() {
                kept.done = done;
            }
            return Completed::Continued;
        };
        match repeat(&kept.bio, &p, &c, prev(p.id)) {
            Repeat::Continued => {
                kept.done = done;
                Completed::Continued
            }
            Repeat::Again => Completed::Again(*kept),
            Repeat::NewLife => {
                self.forget(addr, done.actor.ts);
                self.start_completed(addr, &done, c, seen);
                Completed::NewLife
            }
        }
    }

    /// A life first seen at its final completion: kept so that a second
    /// completion of it can be recognised.
    fn start_completed(&mut self, addr: Addr, done: &Completion, call: EndioCall, seen: Seen) {
        let id = call.identity;
        let bio = Bio {
            addr,
            life: self.next_life(),
            resubmits: 0,
            flags: flag::ENDIO_ACTIVITY,
            queued: Mark::of(&done.actor),
            last_queued: done.actor.ts,
            dev: id.dev,
            disk: id.dev,
            sector: id.sector,
            size: id.size,
            episode: 0,
            end_io: id.end_io,
            seen,
        };
        self.keep(Done { bio, done: *done });
    }

    fn keep(&mut self, done: Done) {
        if !self.keep_completed || self.max_completed == 0 {
            return;
        }
        let (addr, life) = (done.bio.addr, done.bio.life);
        self.done_bios.insert(addr, done);
        self.done_order.push_back((addr, life));
        while self.done_bios.len() > self.max_completed {
            let Some((victim, life)) = self.done_order.pop_front() else {
                break;
            };
            if self
                .done_bios
                .get(&victim)
                .is_some_and(|d| d.bio.life == life)
            {
                self.done_bios.remove(&victim);
                self.evicted_completed += 1;
            }
        }
        if self.done_order.len() > 2 * self.done_bios.len() + 1024 {
            let kept = &self.done_bios;
            self.done_order
                .retain(|(addr, life)| kept.get(addr).is_some_and(|d| d.bio.life == *life));
        }
    }

    /// A non-final `bio_endio` ran for `addr` (a chained bio's count drop,
    /// or integrity verification deferred).
    pub fn endio_activity(&mut self, addr: Addr) {
        if let Some(bio) = self.inflight_bios.get_mut(&addr) {
            bio.flags |= flag::ENDIO_ACTIVITY;
        }
    }

    /// A `bio_endio` of a chained bio, in call `call`, read
    /// `__bi_remaining == remaining` before its decrement. Returns whether
    /// it is the bio's final completion all the same: two children ending
    /// at once on two CPUs may both read 2, and then one of them completes
    /// the parent. Only overlapping calls say so: the count also goes up
    /// (`bio_inc_remaining`: dm resubmitting the rest of a split bio, a new
    /// child chained), so two reads of 2 one after the other mean nothing.
    pub fn chain_drop(
        &mut self,
        addr: Addr,
        remaining: i32,
        call: u64,
        open: impl Fn(u64) -> bool,
    ) -> bool {
        if !self.inflight_bios.contains_key(&addr) {
            return remaining <= 1;
        }
        let read = ChainRead { remaining, call };
        let prev = self.chains.insert(addr, read).unwrap_or_default();
        let concurrent =
            prev.call != 0 && prev.remaining == remaining && prev.call != call && open(prev.call);
        remaining <= 1 || (remaining == 2 && concurrent)
    }

    /// In-flight bios on `disk` whose last sector lies in `[from, to)`.
    pub fn ending_in(&mut self, disk: Dev, from: u64, to: u64, out: &mut Vec<Addr>) {
        if to <= from || !self.index_sectors {
            return;
        }
        if !self.indexed.contains(&disk) {
            self.index(disk);
        }
        out.extend(
            self.by_end
                .range((disk, from + 1, Addr(0))..=(disk, to, Addr(u64::MAX)))
                .map(|(_, _, addr)| *addr),
        );
    }

    fn is_indexed(&self, disk: Dev) -> bool {
        !self.indexed.is_empty() && self.indexed.contains(&disk)
    }

    /// Indexes `disk`'s bios in flight by end sector, and its later ones.
    /// Within the bound on disks: past it, every disk starts over.
    fn index(&mut self, disk: Dev) {
        if self.indexed.len() >= self.max_disks {
            self.indexed.clear();
            self.by_end.clear();
        }
        self.indexed.insert(disk);
        let on_disk = self.inflight_bios.values().filter(|bio| bio.disk == disk);
        for bio in on_disk {
            if let Some(end) = bio.end_sector() {
                self.by_end.insert((disk, end, bio.addr));
            }
        }
    }

    /// Drops whatever is known about `addr` (it was re-initialised, or is
    /// submitted anew); returns the in-flight bio if there was one.
    pub fn forget(&mut self, addr: Addr, now: u64) -> Option<Bio> {
        self.done_bios.remove(&addr);
        let bio = self.inflight_bios.remove(&addr)?;
        self.leave_flight(&bio, now);
        Some(bio)
    }

    pub fn mark_lost_reported(&mut self, addr: Addr) {
        if let Some(bio) = self.inflight_bios.get_mut(&addr) {
            bio.flags |= flag::LOST_REPORTED;
        }
    }

    /// Counts `bio` out of flight; returns its disk.
    fn leave_flight(&mut self, bio: &Bio, ts: u64) -> &mut Disk {
        if !self.chains.is_empty() {
            self.chains.remove(&bio.addr);
        }
        if self.is_indexed(bio.disk)
            && let Some(end) = bio.end_sector()
        {
            self.by_end.remove(&(bio.disk, end, bio.addr));
        }
        self.inflight = self.inflight.saturating_sub(1);
        if self.inflight == 0 {
            self.idle_since = ts;
        }
        let disk = self.disks.entry(bio.disk).or_default();
        disk.inflight = disk.inflight.saturating_sub(1);
        if disk.inflight == 0 {
            disk.idle_since = ts;
        }
        disk
    }
}

enum Repeat {
    Continued,
    Again,
    NewLife,
}

/// A final `bio_endio` call `c` on a bio whose last final call was `p`.
fn repeat(bio: &Bio, p: &EndioCall, c: &EndioCall, prev: PrevCall) -> Repeat {
    match prev {
        // bio_endio -> hook end_io, which restores bi_end_io (and
        // bi_private) and calls bio_endio again: the same life going on.
        PrevCall::Enclosing if c.identity.end_io != p.identity.end_io => return Repeat::Continued,
        // Two final completions running at once.
        PrevCall::Enclosing | PrevCall::Concurrent => return Repeat::Again,
        PrevCall::Returned => {}
    }
    if p.integrity && p.read_ok && !c.integrity {
        // __bio_integrity_endio() queued verification instead of ending
        // the bio; bio_integrity_verify_fn() freed the payload (clearing
        // REQ_INTEGRITY) and called bio_endio again.
        return Repeat::Continued;
    }
    if c.identity != p.identity || c.has_blkg {
        // Another end_io, private, device or position, or a blkg set up
        // since bio_uninit() cleared it: a new bio at this address.
        return Repeat::NewLife;
    }
    if !bio.submitted() && !p.has_blkg {
        // Nothing of this life was seen but its completions, and nothing
        // tells a reinitialised bio from this one: no verdict.
        return Repeat::NewLife;
    }
    Repeat::Again
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The in-flight table's entry: with the hash table's slack and the
    /// submission queue, a bio in flight costs under the 200-byte budget
    /// (`cargo xtask bench` measures it; this keeps the entry from growing
    /// unnoticed).
    #[test]
    fn a_bio_in_flight_stays_small() {
        assert!(
            std::mem::size_of::<Bio>() <= 112,
            "{}",
            std::mem::size_of::<Bio>()
        );
    }
}
