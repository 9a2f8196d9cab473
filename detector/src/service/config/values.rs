//! The configuration's value types that TOML has no type for: durations,
//! sizes, socket addresses and log levels. Each parses while the file is
//! read, so a bad value is reported with its line and key like any other
//! type error.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

use crate::cli::args::{parse_duration, parse_ring_size};

/// A duration: `"500ms"`, `"5s"`, `"2m"`, or a number of seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Seconds(pub Duration);

impl<'de> Deserialize<'de> for Seconds {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Seconds;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(
                    "a duration such as \"5s\", \"500ms\" or \"2m\", or a number of seconds",
                )
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Seconds, E> {
                parse_duration(v).map(Seconds).map_err(E::custom)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Seconds, E> {
                self.visit_str(&v.to_string())
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Seconds, E> {
                self.visit_str(&v.to_string())
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Seconds, E> {
                self.visit_str(&v.to_string())
            }
        }
        d.deserialize_any(V)
    }
}

impl Serialize for Seconds {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_duration(self.0))
    }
}

/// A byte size: `"16M"`, `"64MiB"`, `"1G"`, `"4096"` or a number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bytes(pub u64);

/// Parses a size with an optional K/M/G suffix (powers of 1024).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size; use e.g. 64M or 1G"))?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        other => return Err(format!("unknown size unit {other:?}; use K, M or G")),
    };
    n.checked_mul(1 << shift)
        .ok_or_else(|| format!("{s:?} is too large"))
}

fn format_size(bytes: u64) -> String {
    for (shift, unit) in [(30, "G"), (20, "M"), (10, "K")] {
        if bytes >= 1 << shift && bytes.is_multiple_of(1 << shift) {
            return format!("{}{unit}", bytes >> shift);
        }
    }
    bytes.to_string()
}

/// Deserializes a size from a string or an integer, then checks it.
fn size_from<'de, D: Deserializer<'de>>(
    d: D,
    check: fn(&str) -> Result<u64, String>,
) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Text(String),
        Number(u64),
    }
    let text = match Raw::deserialize(d).map_err(|_| {
        de::Error::custom("expected a size such as \"16M\" or \"1G\", or a number of bytes")
    })? {
        Raw::Text(t) => t,
        Raw::Number(n) => n.to_string(),
    };
    check(&text).map_err(de::Error::custom)
}

impl<'de> Deserialize<'de> for Bytes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        size_from(d, parse_size).map(Bytes)
    }
}

impl Serialize for Bytes {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_size(self.0))
    }
}

/// A ring-buffer size: a power of two of at least a page, at most 2G.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RingSize(pub u32);

impl<'de> Deserialize<'de> for RingSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let bytes = size_from(d, |s| parse_ring_size(s).map(u64::from))?;
        u32::try_from(bytes)
            .map(RingSize)
            .map_err(|_| de::Error::custom("at most 2G"))
    }
}

impl Serialize for RingSize {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_size(self.0.into()))
    }
}

/// Entries of a per-task map: at least 1 (the kernel refuses an empty map).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct TaskMapEntries(pub u32);

impl<'de> Deserialize<'de> for TaskMapEntries {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match u32::deserialize(d)? {
            0 => Err(de::Error::custom("0 entries: a map needs at least 1")),
            n => Ok(TaskMapEntries(n)),
        }
    }
}

/// Where the metrics endpoint listens: `IP:PORT`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ListenAddr(pub SocketAddr);

impl<'de> Deserialize<'de> for ListenAddr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        SocketAddr::from_str(text.trim())
            .map(ListenAddr)
            .map_err(|_| {
                de::Error::custom(format!(
                    "{text:?} is not an address to listen on: expected IP:PORT, \
                 e.g. \"127.0.0.1:19975\" or \"[::1]:19975\" (host names are not resolved)"
                ))
            })
    }
}

impl Serialize for ListenAddr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.0)
    }
}

/// A log level or `tracing` filter directives (`"info"`,
/// `"warn,detector::service=debug"`), checked when read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogLevel(pub String);

impl<'de> Deserialize<'de> for LogLevel {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        let bad = |why: String| {
            de::Error::custom(format!(
                "{text:?} is not a log level ({why}); use error, warn, info, debug or trace, \
                 or directives such as \"info,detector::service=debug\""
            ))
        };
        // A bare word would be read as a module name: only levels may stand
        // alone.
        for directive in text.split(',').map(str::trim) {
            if !directive.contains('=')
                && tracing_subscriber::filter::LevelFilter::from_str(directive).is_err()
            {
                return Err(bad(format!("{directive:?} is not a level")));
            }
        }
        tracing_subscriber::EnvFilter::try_new(&text).map_err(|e| bad(e.to_string()))?;
        Ok(LogLevel(text))
    }
}

impl Serialize for LogLevel {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("64M"), Ok(64 << 20));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        for bad in ["", "M", "3X", "99999999999999999999G"] {
            assert!(parse_size(bad).is_err(), "{bad:?}");
        }
        assert_eq!(format_size(64 << 20), "64M");
        assert_eq!(format_size(1536), "1536");
    }
}
