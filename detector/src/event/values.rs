//! Kernel addresses and device numbers, printed the way kernel people read
//! them: `0xffff888012345678`, `259:0`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer, de};

/// A kernel virtual address.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Addr(pub u64);

impl Addr {
    pub fn is_null(self) -> bool {
        self.0 == 0
    }
}

impl fmt::Debug for Addr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}

impl fmt::Display for Addr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}

impl Serialize for Addr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.collect_str(self)
        } else {
            s.serialize_u64(self.0)
        }
    }
}

impl<'de> Deserialize<'de> for Addr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl de::Visitor<'_> for Visitor {
            type Value = Addr;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an address: an integer or a \"0x...\" string")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Addr, E> {
                Ok(Addr(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Addr, E> {
                let hex = v.strip_prefix("0x").unwrap_or(v);
                u64::from_str_radix(hex, 16)
                    .map(Addr)
                    .map_err(|_| E::invalid_value(de::Unexpected::Str(v), &self))
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// A kernel `dev_t` (`major << 20 | minor`).
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Dev(pub u32);

impl Dev {
    pub const MINOR_BITS: u32 = 20;

    pub fn new(major: u32, minor: u32) -> Self {
        Self((major << Self::MINOR_BITS) | (minor & ((1 << Self::MINOR_BITS) - 1)))
    }

    pub fn major(self) -> u32 {
        self.0 >> Self::MINOR_BITS
    }

    pub fn minor(self) -> u32 {
        self.0 & ((1 << Self::MINOR_BITS) - 1)
    }

    /// The same device as `stat()` encodes it (`st_rdev`, glibc's makedev).
    pub fn from_user(rdev: u64) -> Self {
        let major = ((rdev >> 8) & 0xfff) | ((rdev >> 32) & !0xfff);
        let minor = (rdev & 0xff) | ((rdev >> 12) & !0xff);
        Self::new(major as u32, minor as u32)
    }
}

impl fmt::Debug for Dev {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for Dev {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.major(), self.minor())
    }
}

/// Why a `MAJ:MIN` string is not a device.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{input:?} is not a device number: expected MAJOR:MINOR, e.g. 259:0 or 8:16")]
pub struct ParseDevError {
    pub input: String,
}

impl FromStr for Dev {
    type Err = ParseDevError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseDevError {
            input: s.to_owned(),
        };
        let (major, minor) = s.trim().split_once(':').ok_or_else(err)?;
        let major: u32 = major.parse().map_err(|_| err())?;
        let minor: u32 = minor.parse().map_err(|_| err())?;
        if major >= 1 << 12 || minor >= 1 << Self::MINOR_BITS {
            return Err(err());
        }
        Ok(Self::new(major, minor))
    }
}

impl Serialize for Dev {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.collect_str(self)
        } else {
            s.serialize_u32(self.0)
        }
    }
}

impl<'de> Deserialize<'de> for Dev {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl de::Visitor<'_> for Visitor {
            type Value = Dev;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a device: an integer dev_t or a \"MAJ:MIN\" string")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Dev, E> {
                u32::try_from(v)
                    .map(Dev)
                    .map_err(|_| E::invalid_value(de::Unexpected::Unsigned(v), &self))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Dev, E> {
                v.parse()
                    .map_err(|_| E::invalid_value(de::Unexpected::Str(v), &self))
            }
        }
        d.deserialize_any(Visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dev_parses_and_prints() {
        let dev: Dev = "259:3".parse().unwrap();
        assert_eq!((dev.major(), dev.minor()), (259, 3));
        assert_eq!(dev.to_string(), "259:3");
        assert_eq!(dev.0, (259 << 20) | 3);
    }

    #[test]
    fn dev_rejects_garbage() {
        for bad in [
            "",
            "8",
            "8:",
            ":1",
            "a:b",
            "8:1:2",
            "99999:0",
            "8:9999999",
            "-1:0",
        ] {
            assert!(bad.parse::<Dev>().is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn dev_from_stat_encoding() {
        // makedev(259, 1) as glibc encodes it.
        let rdev = (259u64 & 0xfff) << 8 | (1 & 0xff);
        assert_eq!(Dev::from_user(rdev), Dev::new(259, 1));
    }

    #[test]
    fn json_uses_strings_binary_uses_integers() {
        let addr = Addr(0xffff_8880_1234_5678);
        assert_eq!(
            serde_json::to_string(&addr).unwrap(),
            "\"0xffff888012345678\""
        );
        let back: Addr = serde_json::from_str("\"0xffff888012345678\"").unwrap();
        assert_eq!(back, addr);
        let mut cbor = Vec::new();
        ciborium::into_writer(&addr, &mut cbor).unwrap();
        let back: Addr = ciborium::from_reader(cbor.as_slice()).unwrap();
        assert_eq!(back, addr);
        assert_eq!(serde_json::to_string(&Dev::new(8, 16)).unwrap(), "\"8:16\"");
    }
}
