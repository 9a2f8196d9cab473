//! Argument types shared by the subcommands.

use std::time::Duration;

/// Parses `30s`, `500ms`, `2m`, `1h30m`, or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if let Ok(secs) = s.parse::<f64>() {
        if secs.is_finite() && (0.0..1e12).contains(&secs) {
            return Ok(Duration::from_secs_f64(secs));
        }
        return Err(format!("{s:?} is not a usable number of seconds"));
    }
    humantime::parse_duration(s).map_err(|e| {
        format!("{s:?} is not a duration ({e}); use e.g. 30s, 500ms, 2m or a number of seconds")
    })
}

/// Parses a size: `16M`, `64MiB`, `1G`, `4096`, as a power of two of at
/// least a page (what a BPF ring buffer accepts).
pub fn parse_ring_size(s: &str) -> Result<u32, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size; use e.g. 16M or 64M"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        other => return Err(format!("unknown size unit {other:?}; use K, M or G")),
    };
    let bytes = n
        .checked_mul(mult)
        .filter(|b| *b <= 1 << 31)
        .ok_or_else(|| format!("{s:?} is too large (at most 2G)"))?;
    if bytes < 4096 || !bytes.is_power_of_two() {
        return Err(format!(
            "{s:?} is not a power of two of at least 4K (the kernel requires one)"
        ));
    }
    Ok(bytes as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        for bad in ["", "abc", "-3", "10 parsecs", "NaN", "inf"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn ring_sizes() {
        assert_eq!(parse_ring_size("16M"), Ok(16 << 20));
        assert_eq!(parse_ring_size("4096"), Ok(4096));
        assert_eq!(parse_ring_size("1G"), Ok(1 << 30));
        for bad in ["3M", "100", "1T", "x", "16Q", "4G"] {
            assert!(parse_ring_size(bad).is_err(), "{bad:?}");
        }
    }
}
