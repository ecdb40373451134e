//! The kernel's number parsers as a sysfs parameter write sees them:
//! `kstrtouint`, `kstrtoint` and `kstrtobool` (lib/kstrtox.c), applied
//! to the bytes of one `write()`.
//!
//! What a `set` callback receives: sysfs calls it with the written bytes
//! and a NUL after them, so the text ends at the first NUL byte; a write
//! of zero bytes never reaches it (sysfs returns 0 first).
//!
//! The integer rules, all of them:
//! * base 0: `0x`/`0X` followed by a hex digit means hex (the prefix is
//!   skipped), another leading `0` means octal, anything else decimal;
//! * `kstrtouint` allows one leading `+`; `kstrtoint` also a leading `-`
//!   (`-+1`, `+-1`, `--1` are EINVAL);
//! * at least one digit of the base, then optionally one `\n`, then
//!   the end; anything else (spaces, a second newline, a digit not of the
//!   base such as `8` in octal) is EINVAL;
//! * a value that does not fit 64 bits is ERANGE even when garbage
//!   follows it (the overflow is checked first); one that fits 64 bits but
//!   not the target type is ERANGE too.

use crate::Errno;

/// The text a `set` callback sees for the bytes of one write: up to the
/// first NUL. `None` for an empty write (sysfs returns 0 without calling
/// the parameter's `set`).
pub fn set_text(bytes: &[u8]) -> Option<&[u8]> {
    if bytes.is_empty() {
        return None;
    }
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    Some(&bytes[..end])
}

fn lower(c: u8) -> u8 {
    c | 0x20
}

fn digit(c: u8) -> Option<u32> {
    match c {
        b'0'..=b'9' => Some(u32::from(c - b'0')),
        _ => {
            let lc = lower(c);
            (b'a'..=b'f')
                .contains(&lc)
                .then(|| u32::from(lc - b'a') + 10)
        }
    }
}

/// `_kstrtoull(s, 0)`: no sign handling.
fn kstrtoull_unsigned(s: &[u8]) -> Result<u64, Errno> {
    let at = |i: usize| s.get(i).copied().unwrap_or(0);
    let (base, mut i) = if at(0) == b'0' {
        if lower(at(1)) == b'x' && digit(at(2)).is_some() {
            (16u32, 2usize)
        } else {
            (8, 0)
        }
    } else {
        (10, 0)
    };
    let mut value: u64 = 0;
    let mut overflow = false;
    let start = i;
    while let Some(d) = digit(at(i)).filter(|&d| d < base) {
        match value
            .checked_mul(u64::from(base))
            .and_then(|v| v.checked_add(u64::from(d)))
        {
            Some(v) => value = v,
            None => {
                value = u64::MAX;
                overflow = true;
            }
        }
        i += 1;
    }
    if overflow {
        return Err(Errno::ERANGE);
    }
    if i == start {
        return Err(Errno::EINVAL);
    }
    if at(i) == b'\n' {
        i += 1;
    }
    if i < s.len() {
        return Err(Errno::EINVAL);
    }
    Ok(value)
}

/// `kstrtoull(s, 0, &v)`.
pub fn kstrtoull(s: &[u8]) -> Result<u64, Errno> {
    kstrtoull_unsigned(s.strip_prefix(b"+").unwrap_or(s))
}

/// `kstrtoll(s, 0, &v)`.
pub fn kstrtoll(s: &[u8]) -> Result<i64, Errno> {
    if let Some(rest) = s.strip_prefix(b"-") {
        let v = kstrtoull_unsigned(rest)?;
        // (long long)-tmp > 0 is ERANGE: magnitudes above 2^63.
        if v > 1u64 << 63 {
            return Err(Errno::ERANGE);
        }
        Ok(0i64.wrapping_sub_unsigned(v))
    } else {
        let v = kstrtoull(s)?;
        i64::try_from(v).map_err(|_| Errno::ERANGE)
    }
}

/// `kstrtouint(s, 0, &v)`.
pub fn kstrtouint(s: &[u8]) -> Result<u32, Errno> {
    u32::try_from(kstrtoull(s)?).map_err(|_| Errno::ERANGE)
}

/// `kstrtoint(s, 0, &v)`.
pub fn kstrtoint(s: &[u8]) -> Result<i32, Errno> {
    i32::try_from(kstrtoll(s)?).map_err(|_| Errno::ERANGE)
}

/// `kstrtobool(s, &v)`: only the first one or two characters count.
/// `enable_disable`: the kernel also takes `e`/`E` (true) and `d`/`D`
/// (false), as 7.3's does; older kernels do not (the fuzzer never writes
/// those letters, so the model does not need to know which kernel it is).
pub fn kstrtobool(s: &[u8], enable_disable: bool) -> Result<bool, Errno> {
    let at = |i: usize| s.get(i).copied().unwrap_or(0);
    match at(0) {
        b'y' | b'Y' | b't' | b'T' | b'1' => Ok(true),
        b'n' | b'N' | b'f' | b'F' | b'0' => Ok(false),
        b'e' | b'E' if enable_disable => Ok(true),
        b'd' | b'D' if enable_disable => Ok(false),
        b'o' | b'O' => match at(1) {
            b'n' | b'N' => Ok(true),
            b'f' | b'F' => Ok(false),
            _ => Err(Errno::EINVAL),
        },
        _ => Err(Errno::EINVAL),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Errno::{EINVAL, ERANGE};

    fn u(s: &str) -> Result<u32, Errno> {
        kstrtouint(s.as_bytes())
    }
    fn i(s: &str) -> Result<i32, Errno> {
        kstrtoint(s.as_bytes())
    }

    #[test]
    fn decimal_octal_hex() {
        assert_eq!(u("0"), Ok(0));
        assert_eq!(u("42"), Ok(42));
        assert_eq!(u("42\n"), Ok(42));
        assert_eq!(u("010"), Ok(8));
        assert_eq!(u("0x1f"), Ok(31));
        assert_eq!(u("0X1F\n"), Ok(31));
        assert_eq!(u("0xA"), Ok(10));
        assert_eq!(u("00"), Ok(0));
        assert_eq!(u("0\n"), Ok(0));
    }

    #[test]
    fn prefixes_without_digits() {
        // "0x" with no hex digit after it is octal 0 followed by garbage.
        assert_eq!(u("0x"), Err(EINVAL));
        assert_eq!(u("0x\n"), Err(EINVAL));
        assert_eq!(u("0xg"), Err(EINVAL));
        // 8 and 9 are not octal digits.
        assert_eq!(u("08"), Err(EINVAL));
        assert_eq!(u("019"), Err(EINVAL));
        // Hex letters are not decimal digits.
        assert_eq!(u("1a"), Err(EINVAL));
    }

    #[test]
    fn signs() {
        assert_eq!(u("+5"), Ok(5));
        assert_eq!(u("-5"), Err(EINVAL));
        assert_eq!(u("+"), Err(EINVAL));
        assert_eq!(u("++5"), Err(EINVAL));
        assert_eq!(i("-5"), Ok(-5));
        assert_eq!(i("+5"), Ok(5));
        assert_eq!(i("-0"), Ok(0));
        assert_eq!(i("-0x10"), Ok(-16));
        assert_eq!(i("-+5"), Err(EINVAL));
        assert_eq!(i("+-5"), Err(EINVAL));
        assert_eq!(i("--5"), Err(EINVAL));
        assert_eq!(i("-"), Err(EINVAL));
    }

    #[test]
    fn whitespace_and_garbage() {
        assert_eq!(u(""), Err(EINVAL));
        assert_eq!(u("\n"), Err(EINVAL));
        assert_eq!(u(" 5"), Err(EINVAL));
        assert_eq!(u("5 "), Err(EINVAL));
        assert_eq!(u("5\n\n"), Err(EINVAL));
        assert_eq!(u("5\r\n"), Err(EINVAL));
        assert_eq!(u("5abc"), Err(EINVAL));
        assert_eq!(u("\t5"), Err(EINVAL));
    }

    #[test]
    fn ranges() {
        assert_eq!(u("4294967295"), Ok(u32::MAX));
        assert_eq!(u("4294967296"), Err(ERANGE));
        assert_eq!(u("0xffffffff"), Ok(u32::MAX));
        assert_eq!(u("0x100000000"), Err(ERANGE));
        assert_eq!(i("2147483647"), Ok(i32::MAX));
        assert_eq!(i("2147483648"), Err(ERANGE));
        assert_eq!(i("-2147483648"), Ok(i32::MIN));
        assert_eq!(i("-2147483649"), Err(ERANGE));
        assert_eq!(kstrtoull(b"18446744073709551615"), Ok(u64::MAX));
        assert_eq!(kstrtoull(b"18446744073709551616"), Err(ERANGE));
        assert_eq!(kstrtoll(b"-9223372036854775808"), Ok(i64::MIN));
        assert_eq!(kstrtoll(b"-9223372036854775809"), Err(ERANGE));
        assert_eq!(kstrtoll(b"9223372036854775808"), Err(ERANGE));
        // 64-bit overflow wins over trailing garbage.
        assert_eq!(u("99999999999999999999999abc"), Err(ERANGE));
        assert_eq!(u("99999999999999999999999 "), Err(ERANGE));
        // Fits 64 bits, then garbage: EINVAL.
        assert_eq!(u("99999999999x"), Err(EINVAL));
    }

    #[test]
    fn nul_ends_the_text() {
        assert_eq!(set_text(b""), None);
        assert_eq!(set_text(b"5\0junk"), Some(&b"5"[..]));
        assert_eq!(set_text(b"\0"), Some(&b""[..]));
        assert_eq!(kstrtouint(set_text(b"7\0x").unwrap_or_default()), Ok(7));
    }

    #[test]
    fn booleans() {
        for t in [
            "1", "y", "Y", "yes", "t", "true", "T", "on", "ON", "oN", "1x",
        ] {
            assert_eq!(kstrtobool(t.as_bytes(), false), Ok(true), "{t}");
        }
        for f in ["0", "n", "N", "no", "f", "false", "F", "off", "OFF", "0x5"] {
            assert_eq!(kstrtobool(f.as_bytes(), false), Ok(false), "{f}");
        }
        for bad in ["", " 1", "2", "o", "ox", "\n", "x", "-1", "+1"] {
            assert_eq!(kstrtobool(bad.as_bytes(), false), Err(EINVAL), "{bad}");
        }
        assert_eq!(kstrtobool(b"enable", false), Err(EINVAL));
        assert_eq!(kstrtobool(b"enable", true), Ok(true));
        assert_eq!(kstrtobool(b"Disable", true), Ok(false));
    }
}
