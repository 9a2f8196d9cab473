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

use super::finding::{Object, ObjectKind};
use std::collections::{BTreeMap, BTreeSet, VecDeque};

use super::actor::Actor;
use super::hash::FastMap;
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

#[derive(Clone, Copy, Debug)]
pub struct Bio {
    pub addr: Addr,
    pub life: u32,
    /// The life started with a submission we saw (`queued`); otherwise it
    /// started unseen and was first seen completing.
    pub submitted: bool,
    /// The submission that started this life (the completion, for lives
    /// first seen completing).
    pub queued: Actor,
    /// The latest (re)submission.
    pub last_queued: u64,
    pub resubmits: u32,
    pub dev: Dev,
    pub disk: Dev,
    pub sector: u64,
    pub size: u32,
    pub end_io: Addr,
    /// Disk-relative end sector, when the submission's sector is known to
    /// be disk-relative: the key of range completions.
    pub end_sector: Option<u64>,
    /// Task the submission is charged to (0: interrupt context).
    pub submitter: u32,
    pub episode: u32,
    /// Its latest final completion, if it completed.
    pub done: Option<Completion>,
    /// Some `bio_endio` ran for it, final or not: the device answered.
    pub endio_activity: bool,
    /// A chained bio's latest `bio_endio`: the `__bi_remaining` it read
    /// and its call (`handlers::Call::id`).
    pub chain_read: Option<(i32, u64)>,
    pub lost_reported: bool,
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
            self.queued.who()
        )
    }

    pub fn in_flight(&self) -> bool {
        self.done.is_none()
    }
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

/// What a submission did to the table.
pub enum Queued {
    /// A new life.
    New,
    /// The bio was in flight: a resubmission (stacking, splitting).
    Refresh,
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
    /// A second final completion of one life (`done` says the first).
    Again(Bio),
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
    pub submitter: u32,
    pub episode: u32,
    pub seen: Seen,
}

pub struct Bios {
    max_inflight: usize,
    max_disks: usize,
    max_completed: usize,
    /// Keep completed bios (to recognise a second completion): only worth
    /// it when `bio_endio` is hooked, the only source that can show one.
    pub keep_completed: bool,
    bios: FastMap<Addr, Bio>,
    /// Submission order of in-flight bios, and completion order of kept
    /// completed ones (stale entries are skipped).
    fifo: VecDeque<(Addr, u32)>,
    fifo_done: VecDeque<(Addr, u32)>,
    completed: usize,
    next_life: u32,
    /// In-flight bios by disk and disk-relative end sector.
    by_end: BTreeSet<(Dev, u64, Addr)>,
    /// In-flight bios with no completion activity, by latest submission.
    pub quiet: BTreeMap<(u64, u32), Addr>,
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
            max_completed,
            keep_completed: false,
            bios: FastMap::default(),
            fifo: VecDeque::new(),
            fifo_done: VecDeque::new(),
            completed: 0,
            next_life: 0,
            by_end: BTreeSet::new(),
            quiet: BTreeMap::new(),
            disks: FastMap::default(),
            inflight: 0,
            idle_since: 0,
            evicted_inflight: 0,
            evicted_completed: 0,
            evicted_disks: 0,
        }
    }

    pub fn get(&self, addr: Addr) -> Option<&Bio> {
        self.bios.get(&addr)
    }

    pub fn len(&self) -> usize {
        self.bios.len()
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
        if let Some(bio) = self.bios.get_mut(&sub.addr)
            && bio.in_flight()
        {
            bio.resubmits += 1;
            let key = (bio.last_queued, bio.life);
            bio.last_queued = sub.actor.ts;
            if self.quiet.remove(&key).is_some() {
                self.quiet.insert((sub.actor.ts, bio.life), sub.addr);
            }
            return Queued::Refresh;
        }
        // A completed bio submitted again starts over.
        self.forget(sub.addr, sub.actor.ts);
        while self.inflight as usize >= self.max_inflight {
            let Some((victim, life)) = self.fifo.pop_front() else {
                break;
            };
            if self
                .bios
                .get(&victim)
                .is_some_and(|b| b.life == life && b.in_flight())
                && let Some(bio) = self.forget(victim, sub.actor.ts)
            {
                self.evicted_inflight += 1;
                evicted.push(bio);
            }
        }
        let life = self.next_life();
        let end_sector = sub
            .disk_relative
            .then(|| sub.sector + (sub.size as u64).div_ceil(512));
        let bio = Bio {
            addr: sub.addr,
            life,
            submitted: true,
            queued: *sub.actor,
            last_queued: sub.actor.ts,
            resubmits: 0,
            dev: sub.dev,
            disk: sub.disk,
            sector: sub.sector,
            size: sub.size,
            end_io: sub.end_io,
            end_sector,
            submitter: sub.submitter,
            episode: sub.episode,
            done: None,
            endio_activity: false,
            chain_read: None,
            lost_reported: false,
            seen: sub.seen,
        };
        self.bios.insert(sub.addr, bio);
        self.fifo.push_back((sub.addr, life));
        if self.fifo.len() > 2 * self.inflight as usize + 1024 {
            let bios = &self.bios;
            self.fifo.retain(|(addr, life)| {
                bios.get(addr)
                    .is_some_and(|b| b.life == *life && b.in_flight())
            });
        }
        if let Some(end) = end_sector {
            self.by_end.insert((sub.disk, end, sub.addr));
        }
        self.quiet.insert((sub.actor.ts, life), sub.addr);
        self.inflight += 1;
        if !self.disks.contains_key(&sub.disk) && self.disks.len() >= self.max_disks {
            // Idle disks only lose their history (whether completions were
            // seen there); busy ones are still counted.
            let before = self.disks.len();
            self.disks.retain(|_, d| d.inflight > 0);
            self.evicted_disks += (before - self.disks.len()) as u64;
        }
        self.disks.entry(sub.disk).or_default().inflight += 1;
        Queued::New
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
        let Some(bio) = self.bios.get_mut(&addr) else {
            if let Some(call) = done.call {
                self.start_completed(addr, &done, call, seen);
            }
            return Completed::Unknown;
        };
        let Some(first) = bio.done else {
            let before = *bio;
            bio.done = Some(done);
            self.leave_flight(&before, done.actor.ts);
            let disk = self.disks.entry(before.disk).or_default();
            disk.completions_seen = true;
            if self.keep_completed && self.max_completed > 0 {
                self.keep(addr, before.life);
            } else {
                self.bios.remove(&addr);
            }
            return Completed::First(before);
        };
        let (Some(p), Some(c)) = (first.call, done.call) else {
            // A tracepoint is not a per-call fact (a flush sequence reports
            // its bios twice); bio_endio seeing the same completion after a
            // tracepoint did is the one that counts.
            if first.call.is_none() && done.call.is_some() {
                bio.done = Some(done);
            }
            return Completed::Continued;
        };
        match repeat(bio, &p, &c, prev(p.id)) {
            Repeat::Continued => {
                bio.done = Some(done);
                Completed::Continued
            }
            Repeat::Again => Completed::Again(*bio),
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
        if !self.keep_completed || self.max_completed == 0 {
            return;
        }
        let life = self.next_life();
        let id = call.identity;
        self.bios.insert(
            addr,
            Bio {
                addr,
                life,
                submitted: false,
                queued: done.actor,
                last_queued: done.actor.ts,
                resubmits: 0,
                dev: id.dev,
                disk: id.dev,
                sector: id.sector,
                size: id.size,
                end_io: id.end_io,
                end_sector: None,
                submitter: 0,
                episode: 0,
                done: Some(*done),
                endio_activity: true,
                chain_read: None,
                lost_reported: false,
                seen,
            },
        );
        self.keep(addr, life);
    }

    fn keep(&mut self, addr: Addr, life: u32) {
        self.completed += 1;
        self.fifo_done.push_back((addr, life));
        while self.completed > self.max_completed {
            let Some((victim, life)) = self.fifo_done.pop_front() else {
                break;
            };
            if self
                .bios
                .get(&victim)
                .is_some_and(|b| b.life == life && !b.in_flight())
            {
                self.forget(victim, 0);
                self.evicted_completed += 1;
            }
        }
        if self.fifo_done.len() > 2 * self.completed + 1024 {
            let bios = &self.bios;
            self.fifo_done.retain(|(addr, life)| {
                bios.get(addr)
                    .is_some_and(|b| b.life == *life && !b.in_flight())
            });
        }
    }

    /// A non-final `bio_endio` ran for `addr` (a chained bio's count drop,
    /// or integrity verification deferred).
    pub fn endio_activity(&mut self, addr: Addr) {
        if let Some(bio) = self.bios.get_mut(&addr) {
            bio.endio_activity = true;
            self.quiet.remove(&(bio.last_queued, bio.life));
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
        let Some(bio) = self.bios.get_mut(&addr).filter(|b| b.in_flight()) else {
            return remaining <= 1;
        };
        let concurrent = bio
            .chain_read
            .is_some_and(|(read, other)| read == remaining && other != call && open(other));
        bio.chain_read = Some((remaining, call));
        remaining <= 1 || (remaining == 2 && concurrent)
    }

    /// In-flight bios on `disk` whose last sector lies in `[from, to)`.
    pub fn ending_in(&self, disk: Dev, from: u64, to: u64, out: &mut Vec<Addr>) {
        if to <= from {
            return;
        }
        out.extend(
            self.by_end
                .range((disk, from + 1, Addr(0))..=(disk, to, Addr(u64::MAX)))
                .map(|(_, _, addr)| *addr),
        );
    }

    /// Drops whatever is known about `addr` (it was re-initialised, or is
    /// submitted anew); returns the bio if it was tracked.
    pub fn forget(&mut self, addr: Addr, now: u64) -> Option<Bio> {
        let bio = self.bios.remove(&addr)?;
        if bio.in_flight() {
            self.leave_flight(&bio, now);
        } else {
            self.completed -= 1;
        }
        Some(bio)
    }

    pub fn mark_lost_reported(&mut self, addr: Addr) {
        if let Some(bio) = self.bios.get_mut(&addr) {
            bio.lost_reported = true;
        }
    }

    fn leave_flight(&mut self, bio: &Bio, ts: u64) {
        if let Some(end) = bio.end_sector {
            self.by_end.remove(&(bio.disk, end, bio.addr));
        }
        self.quiet.remove(&(bio.last_queued, bio.life));
        self.inflight = self.inflight.saturating_sub(1);
        if self.inflight == 0 {
            self.idle_since = ts;
        }
        let disk = self.disks.entry(bio.disk).or_default();
        disk.inflight = disk.inflight.saturating_sub(1);
        if disk.inflight == 0 {
            disk.idle_since = ts;
        }
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
    if !bio.submitted && !p.has_blkg {
        // Nothing of this life was seen but its completions, and nothing
        // tells a reinitialised bio from this one: no verdict.
        return Repeat::NewLife;
    }
    Repeat::Again
}
