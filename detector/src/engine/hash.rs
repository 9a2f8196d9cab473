//! A fast, fixed-seed hasher for the engine's tables.
//!
//! Keys are kernel addresses, tids and device numbers: not attacker-chosen
//! strings, so SipHash's flooding resistance buys nothing and costs per
//! event. The fixed seed also makes iteration order a function of the
//! insertion history alone, though no output depends on it: whatever is
//! reported from a table is sorted first.
//!
//! The keys are mostly aligned addresses (slab objects, stacks): a plain
//! multiplicative hash leaves their zero low bits zero, and hashbrown picks
//! buckets with the low bits, so every bio landed in one bucket of 256 and
//! lookups walked long probe chains. rustc-hash's FxHasher rotates its
//! well-mixed high bits down when it finishes.

pub type FastMap<K, V> = rustc_hash::FxHashMap<K, V>;
pub type FastSet<K> = rustc_hash::FxHashSet<K>;
