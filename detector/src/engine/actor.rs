//! Who did something, where and when: the part of an event a finding quotes.
//!
//! Kept `Copy` and allocation-free so that every tracked object can hold the
//! events it may later have to quote.

use std::fmt;

use crate::event::{Event, StackId};

/// A task's `comm`, inline (the kernel's is 16 bytes, NUL included).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Comm {
    bytes: [u8; 16],
    len: u8,
}

impl Comm {
    pub fn new(s: &str) -> Self {
        let mut bytes = [0u8; 16];
        // Cut at a character boundary so that as_str() stays valid UTF-8.
        let mut len = s.len().min(16);
        while !s.is_char_boundary(len) {
            len -= 1;
        }
        bytes[..len].copy_from_slice(&s.as_bytes()[..len]);
        Self {
            bytes,
            len: len as u8,
        }
    }

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.bytes[..self.len as usize]).unwrap_or("?")
    }
}

impl fmt::Debug for Comm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

/// The quotable part of an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Actor {
    pub ts: u64,
    pub cpu: u32,
    pub pid: u32,
    pub tid: u32,
    pub comm: Comm,
    pub stack: Option<StackId>,
    /// Where the stack pointer was (0: unknown).
    pub sp: u64,
    /// Ran in interrupt context (or as the idle task): the current task's
    /// own frames are not where this ran.
    pub irq: bool,
}

impl Actor {
    pub fn of(ev: &Event, thread_size: u64) -> Self {
        Self {
            ts: ev.ts,
            cpu: ev.cpu,
            pid: ev.pid,
            tid: ev.tid,
            comm: Comm::new(&ev.comm),
            stack: ev.stack,
            sp: ev.sp.0,
            irq: in_interrupt(ev, thread_size),
        }
    }

    /// A placeholder for a party nothing is known about.
    pub fn unknown() -> Self {
        Self {
            ts: 0,
            cpu: 0,
            pid: 0,
            tid: 0,
            comm: Comm::new("?"),
            stack: None,
            sp: 0,
            irq: false,
        }
    }

    /// `comm/tid`, or which CPU's interrupt.
    pub fn who(&self) -> String {
        if self.irq && self.tid == 0 {
            format!("an interrupt on cpu {} (idle)", self.cpu)
        } else if self.irq {
            format!(
                "an interrupt on cpu {} (over {})",
                self.cpu,
                self.comm.as_str()
            )
        } else {
            format!("{}/{}", self.comm.as_str(), self.tid)
        }
    }
}

/// An [`Actor`] in 48 bytes, for tables that keep one per tracked object
/// (thousands of bios in flight on a busy host): the name without its
/// length (NUL-padded), the stack id with a sentinel, the CPU and the
/// interrupt flag in one word.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mark {
    ts: u64,
    sp: u64,
    pid: u32,
    tid: u32,
    /// `StackId`, or `NO_STACK`.
    stack: u32,
    /// The CPU, with the top bit set in interrupt context.
    cpu_irq: u32,
    comm: [u8; 16],
}

const NO_STACK: u32 = u32::MAX;
const IRQ_BIT: u32 = 1 << 31;

impl Mark {
    pub fn of(actor: &Actor) -> Self {
        Self {
            ts: actor.ts,
            sp: actor.sp,
            pid: actor.pid,
            tid: actor.tid,
            stack: actor.stack.map_or(NO_STACK, |s| s.0),
            cpu_irq: (actor.cpu & !IRQ_BIT) | if actor.irq { IRQ_BIT } else { 0 },
            comm: actor.comm.bytes,
        }
    }

    pub fn actor(&self) -> Actor {
        let len = self.comm.iter().position(|&b| b == 0).unwrap_or(16);
        Actor {
            ts: self.ts,
            cpu: self.cpu_irq & !IRQ_BIT,
            pid: self.pid,
            tid: self.tid,
            comm: Comm {
                bytes: self.comm,
                len: len as u8,
            },
            stack: (self.stack != NO_STACK).then_some(StackId(self.stack)),
            sp: self.sp,
            irq: self.cpu_irq & IRQ_BIT != 0,
        }
    }
}

/// An execution context: code in it runs in program order. Interrupts are
/// keyed by CPU (they do not migrate, and tid 0 is shared by every idle
/// CPU), task context by tid (a task may resume on another CPU).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Exec {
    Task(u32),
    Cpu(u32),
}

impl Exec {
    pub fn of(actor: &Actor) -> Self {
        if actor.irq {
            Self::Cpu(actor.cpu)
        } else {
            Self::Task(actor.tid)
        }
    }
}

/// Whether `ev` ran outside its task's own frames: tid 0 is the idle task
/// or an interrupt on an idle CPU, and a stack pointer outside the task's
/// stack is an IRQ stack. An unknown stack pointer counts as task context:
/// the cautious reading, since task context is what most rules need to see
/// before they judge.
pub fn in_interrupt(ev: &Event, thread_size: u64) -> bool {
    ev.tid == 0 || (ev.sp.0 != 0 && !ev.on_current_stack(ev.sp, thread_size))
}

/// The stack pointer of `ev` when it is an observation of the current
/// task's own frames (task context with a known stack pointer).
pub fn own_sp(ev: &Event, thread_size: u64) -> Option<u64> {
    (ev.tid != 0 && ev.sp.0 != 0 && ev.on_current_stack(ev.sp, thread_size)).then_some(ev.sp.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mark_keeps_everything_an_actor_says() {
        let actor = Actor {
            ts: 7,
            cpu: 3,
            pid: 10,
            tid: 11,
            comm: Comm::new("kworker/u8:2"),
            stack: Some(StackId(0)),
            sp: 0xffff_c900_0000_3f00,
            irq: true,
        };
        assert_eq!(Mark::of(&actor).actor(), actor);
        let full = Actor {
            comm: Comm::new("0123456789abcdef"),
            stack: None,
            irq: false,
            ..actor
        };
        assert_eq!(Mark::of(&full).actor(), full);
        assert_eq!(std::mem::size_of::<Mark>(), 48);
    }

    #[test]
    fn comm_truncates_on_char_boundary() {
        assert_eq!(Comm::new("kworker/u8:2").as_str(), "kworker/u8:2");
        assert_eq!(
            Comm::new("0123456789abcdefXYZ").as_str(),
            "0123456789abcdef"
        );
        // 15 ASCII bytes then a 2-byte character: cut before it.
        assert_eq!(Comm::new("0123456789abcdeé").as_str(), "0123456789abcde");
    }
}
