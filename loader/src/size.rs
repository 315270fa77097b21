//! Byte sizes as people write them: `4096`, `64K`, `512MiB`, `1.5G`, `2 TiB`.
//!
//! One parser for every place a size is typed (the service's flags, its config file and, on
//! Android, its system properties; the client's offsets and lengths), so "4G" means the same
//! everywhere. Units are binary, as parse-size's `with_binary()` read them before: `K`, `KB`
//! and `KiB` are all 1024 (a dma-buf is counted in pages, never in powers of ten). The
//! crates.io size parsers (parse-size, bytesize) are not in AOSP's tree.

use std::fmt;

/// Why a string is not a size.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SizeError {
    /// Nothing but whitespace.
    Empty,
    /// A leading `-`: sizes are never negative.
    Negative,
    /// No digits where the number should be, or characters that are neither number nor unit.
    NotANumber,
    /// A unit other than B, K, M, G, T (each optionally followed by `B` or `iB`).
    UnknownUnit(String),
    /// A fraction that does not come out as a whole number of bytes (`0.1K` = 102.4 bytes).
    NotWholeBytes,
    /// More than `u64::MAX` bytes.
    Overflow,
}

impl fmt::Display for SizeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SizeError::Empty => write!(f, "empty size"),
            SizeError::Negative => write!(f, "a size cannot be negative"),
            SizeError::NotANumber => write!(f, "not a number followed by a unit"),
            SizeError::UnknownUnit(u) => write!(f, "unknown unit {u:?} (use B, K, M, G or T)"),
            SizeError::NotWholeBytes => write!(f, "not a whole number of bytes"),
            SizeError::Overflow => write!(f, "larger than {} bytes", u64::MAX),
        }
    }
}

impl std::error::Error for SizeError {}

const UNITS: [(&str, u32); 5] = [("B", 0), ("K", 10), ("M", 20), ("G", 30), ("T", 40)];

/// Parses `"4096"`, `"64K"`, `"64 KiB"`, `"1.5G"`, `"2tb"`... into bytes. Case-insensitive;
/// spaces around the number and the unit are ignored.
pub fn parse(s: &str) -> Result<u64, SizeError> {
    let s = s.trim();
    if s.is_empty() {
        return Err(SizeError::Empty);
    }
    if s.starts_with('-') {
        return Err(SizeError::Negative);
    }
    let end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, unit) = (&s[..end], s[end..].trim());
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() && fraction.is_empty() || fraction.contains('.') {
        return Err(SizeError::NotANumber);
    }
    let shift = unit_shift(unit)?;
    // Exact integer arithmetic: whole * 2^shift + fraction * 2^shift / 10^digits.
    let digits = |t: &str| -> Result<u128, SizeError> {
        t.bytes().try_fold(0u128, |n, d| {
            n.checked_mul(10)
                .and_then(|n| n.checked_add(u128::from(d - b'0')))
                .ok_or(SizeError::Overflow)
        })
    };
    let mut bytes = digits(whole)?
        .checked_mul(1 << shift)
        .ok_or(SizeError::Overflow)?;
    if !fraction.is_empty() {
        let scale = 10u128
            .checked_pow(fraction.len() as u32)
            .ok_or(SizeError::NotWholeBytes)?;
        let part = digits(fraction)?
            .checked_mul(1 << shift)
            .ok_or(SizeError::Overflow)?;
        if part % scale != 0 {
            return Err(SizeError::NotWholeBytes);
        }
        bytes += part / scale;
    }
    u64::try_from(bytes).map_err(|_| SizeError::Overflow)
}

fn unit_shift(unit: &str) -> Result<u32, SizeError> {
    if unit.is_empty() {
        return Ok(0);
    }
    let upper = unit.to_ascii_uppercase();
    for (name, shift) in UNITS {
        let long = [name.to_string(), format!("{name}B"), format!("{name}IB")];
        if shift == 0 && upper == "B" || shift > 0 && long.contains(&upper) {
            return Ok(shift);
        }
    }
    if unit.chars().next().is_some_and(|c| c.is_ascii_alphabetic()) {
        Err(SizeError::UnknownUnit(unit.to_string()))
    } else {
        Err(SizeError::NotANumber)
    }
}

/// `bytes` for a log line or a report: `"4 GiB"`, `"1.5 MiB"`, `"4095 B"`. Exact when the
/// value is a whole number of the unit, else rounded to two decimals.
pub fn format(bytes: u64) -> String {
    let (name, shift) = UNITS
        .iter()
        .rev()
        .find(|(_, shift)| bytes >> shift > 0)
        .copied()
        .unwrap_or(("B", 0));
    if shift == 0 {
        return format!("{bytes} B");
    }
    let unit = 1u64 << shift;
    if bytes % unit == 0 {
        return format!("{} {name}iB", bytes >> shift);
    }
    let text = format!("{:.2}", bytes as f64 / unit as f64);
    format!(
        "{} {name}iB",
        text.trim_end_matches('0').trim_end_matches('.')
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_bytes_and_every_unit() {
        assert_eq!(parse("0"), Ok(0));
        assert_eq!(parse("4096"), Ok(4096));
        assert_eq!(parse("4096B"), Ok(4096));
        for (text, want) in [
            ("1k", 1 << 10),
            ("1K", 1 << 10),
            ("1KB", 1 << 10),
            ("1KiB", 1 << 10),
            ("1kib", 1 << 10),
            ("64M", 64 << 20),
            ("64 MiB", 64 << 20),
            ("2G", 2 << 30),
            ("2gb", 2 << 30),
            ("3T", 3 << 40),
            ("3 TiB", 3 << 40),
        ] {
            assert_eq!(parse(text), Ok(want), "{text}");
        }
        assert_eq!(parse("  512 M  "), Ok(512 << 20));
    }

    #[test]
    fn exact_fractions() {
        assert_eq!(parse("1.5G"), Ok(3 << 29));
        assert_eq!(parse("0.5K"), Ok(512));
        assert_eq!(parse(".25M"), Ok(256 << 10));
        assert_eq!(parse("2."), Ok(2));
        assert_eq!(parse("0.1K"), Err(SizeError::NotWholeBytes));
        assert_eq!(parse("1.5"), Err(SizeError::NotWholeBytes));
    }

    #[test]
    fn limits() {
        assert_eq!(parse("18446744073709551615"), Ok(u64::MAX));
        assert_eq!(parse("18446744073709551616"), Err(SizeError::Overflow));
        assert_eq!(parse("16777216T"), Err(SizeError::Overflow));
        assert_eq!(parse("16777215T"), Ok(16_777_215 << 40));
        assert_eq!(parse(&"9".repeat(60)), Err(SizeError::Overflow));
    }

    #[test]
    fn bad_input_says_what_is_wrong() {
        assert_eq!(parse(""), Err(SizeError::Empty));
        assert_eq!(parse("   "), Err(SizeError::Empty));
        assert_eq!(parse("-1"), Err(SizeError::Negative));
        assert_eq!(parse("-4K"), Err(SizeError::Negative));
        assert_eq!(parse("lots"), Err(SizeError::NotANumber));
        assert_eq!(parse("K"), Err(SizeError::NotANumber));
        assert_eq!(parse("."), Err(SizeError::NotANumber));
        assert_eq!(parse("1.2.3"), Err(SizeError::NotANumber));
        assert_eq!(parse("4X"), Err(SizeError::UnknownUnit("X".into())));
        assert_eq!(parse("4 PB"), Err(SizeError::UnknownUnit("PB".into())));
        assert_eq!(parse("4KiBs"), Err(SizeError::UnknownUnit("KiBs".into())));
        assert_eq!(parse("4 4"), Err(SizeError::NotANumber));
        assert_eq!(parse("0x10"), Err(SizeError::UnknownUnit("x10".into())));
        assert!(parse("4X").unwrap_err().to_string().contains("\"X\""));
    }

    #[test]
    fn format_is_readable_and_exact_values_round_trip() {
        assert_eq!(format(0), "0 B");
        assert_eq!(format(1023), "1023 B");
        assert_eq!(format(1024), "1 KiB");
        assert_eq!(format(3 << 29), "1.5 GiB");
        assert_eq!(format(4 << 30), "4 GiB");
        assert_eq!(format((1 << 20) + 1), "1 MiB");
        assert_eq!(format(1_000_000), "976.56 KiB");
        assert_eq!(format(u64::MAX), "16777216 TiB");
        for n in [0, 1, 4096, 64 << 20, 3 << 29, 5 << 40] {
            assert_eq!(parse(&format(n)), Ok(n), "{}", format(n));
        }
    }
}
