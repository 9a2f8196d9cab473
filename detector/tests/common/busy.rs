//! A busy synthetic host, for the engine's load test and its benchmark.

use super::build::*;
use detector::event::{Dev, Event, WaitVariant};

/// Bio addresses are reused after this many I/Os, as the kernel's bio
/// slabs reuse freed bios.
const BIO_SLOTS: u64 = 4096;

/// 64 threads doing synchronous I/O on 4 disks: each I/O a bio with its
/// completion, an on-stack completion waited for, a sleep and a wakeup,
/// with context switches in between: 12 events per I/O, as a real trace.
pub fn busy_host(ios: u64) -> Vec<Event> {
    let tasks: Vec<Who> = (0..64).map(|i| task(2000 + i, "fio", i % 8)).collect();
    let irqs: Vec<Who> = (0..8).map(irq).collect();
    let mut events = Vec::with_capacity(ios as usize * 12);
    let mut ts = 100 * S;
    for n in 0..ios {
        let t = &tasks[(n % 64) as usize];
        let i = &irqs[(n % 8) as usize];
        let disk = Dev::new(8, (n % 4) as u32 * 16);
        let b = n % BIO_SLOTS;
        let x = t.at(0x3a00);
        let mut at = || {
            ts += 250;
            ts
        };
        events.push(queue(t, at(), b, disk));
        events.push(wait_enter(t, at(), x, WaitVariant::Io));
        events.push(sleep(t, at(), true));
        events.push(endio(i, at(), b, disk, 1, 0));
        events.push(complete(i, at(), x));
        events.push(waking(i, at(), t));
        events.push(endio_exit(i, at(), b));
        events.push(switch_in(t, at()));
        events.push(wait_exit(t, at(), x, WaitVariant::Io, 0));
        events.push(sleep(t, at(), false));
        events.push(switch_in(t, at()));
        events.push(sys_exit(t, at()));
    }
    events
}
