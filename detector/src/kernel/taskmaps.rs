//! Keeping the programs' per-task maps from filling up.
//!
//! `FRAMES` and `ENTRY_ARGS` are plain hash maps keyed by thread id (see
//! detector-ebpf's maps.rs): a task removes its entry when the event it
//! waits for comes (syscall return, function exit, task exit). A task
//! whose removal was missed would leave its entry behind for good; here
//! entries of threads that no longer exist are dropped. A full map still
//! refuses inserts, and counts them (a loss for `ENTRY_ARGS`).

use std::path::Path;

use aya::maps::{HashMap, MapData};

pub struct TaskMaps {
    frames: Option<HashMap<MapData, u32, u64>>,
    entry_args: Option<HashMap<MapData, u64, u64>>,
    proc_dir: &'static Path,
    /// Entries dropped so far.
    pub pruned: u64,
}

/// Whether thread `tid` exists (`/proc/<tid>` also resolves threads that
/// are not listed there).
fn alive(proc_dir: &Path, tid: u64) -> bool {
    tid != 0 && proc_dir.join(tid.to_string()).exists()
}

impl TaskMaps {
    pub fn new(
        frames: Option<HashMap<MapData, u32, u64>>,
        entry_args: Option<HashMap<MapData, u64, u64>>,
    ) -> Self {
        Self {
            frames,
            entry_args,
            proc_dir: Path::new("/proc"),
            pruned: 0,
        }
    }

    /// Drops the entries of threads that no longer exist.
    pub fn prune(&mut self) {
        let proc_dir = self.proc_dir;
        let mut pruned = 0;
        if let Some(map) = &mut self.frames {
            let dead: Vec<u32> = map
                .keys()
                .filter_map(Result::ok)
                .filter(|&tid| !alive(proc_dir, tid.into()))
                .collect();
            pruned += dead.iter().filter(|k| map.remove(k).is_ok()).count();
        }
        if let Some(map) = &mut self.entry_args {
            // Keys are `tid << 8 | slot`.
            let dead: Vec<u64> = map
                .keys()
                .filter_map(Result::ok)
                .filter(|&key| !alive(proc_dir, key >> 8))
                .collect();
            pruned += dead.iter().filter(|k| map.remove(k).is_ok()).count();
        }
        self.pruned += pruned as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn liveness_by_proc() {
        let me = std::process::id() as u64;
        assert!(alive(Path::new("/proc"), me));
        assert!(!alive(Path::new("/proc"), 0));
        // Beyond the largest pid_max the kernel allows (2^22).
        assert!(!alive(Path::new("/proc"), (1 << 22) + 1));
    }
}
