//! Files sent over the guest's console: the benchmark writes its JSON and
//! SVG to stdout between markers, the host (`cargo xtask bench`) extracts
//! them from the console log.
//!
//! ```text
//! K2U-FILE-BEGIN <name> <bytes>
//! K2U-FILE-DATA <up to 76 base64 characters>
//! ...
//! K2U-FILE-END <name>
//! ```
//!
//! Base64 keeps every line printable and short; each data line carries its
//! own prefix so that kernel messages interleaved on the console are
//! skipped, and the byte count catches anything lost.

use std::io::{self, Write};

/// First line of a file.
pub const BEGIN: &str = "K2U-FILE-BEGIN";
/// Prefix of each data line.
pub const DATA: &str = "K2U-FILE-DATA";
/// Last line of a file.
pub const END: &str = "K2U-FILE-END";

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding.
pub fn base64_encode(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Decode standard base64 (padding optional, no whitespace); `None` on
/// anything else.
pub fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let text = text.trim_end_matches('=');
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let mut acc: u32 = 0;
    let mut bits = 0;
    for c in text.bytes() {
        let v = ALPHABET.iter().position(|&a| a == c)? as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

/// Write `data` as file `name` (no blanks in it) between the markers.
pub fn write_file(out: &mut impl Write, name: &str, data: &[u8]) -> io::Result<()> {
    writeln!(out, "{BEGIN} {name} {}", data.len())?;
    for chunk in data.chunks(57) {
        writeln!(out, "{DATA} {}", base64_encode(chunk))?;
    }
    writeln!(out, "{END} {name}")?;
    out.flush()
}

/// The last complete file `name` in `lines` (console lines, possibly with
/// other text before the markers on a line). Errors say what is wrong.
pub fn extract<S: AsRef<str>>(lines: &[S], name: &str) -> Result<Vec<u8>, String> {
    let field = |line: &str, marker: &str| -> Option<String> {
        let at = line.find(marker)?;
        Some(line[at + marker.len()..].trim().to_owned())
    };
    let begin = lines
        .iter()
        .rposition(|l| {
            field(l.as_ref(), BEGIN)
                .is_some_and(|rest| rest.split_whitespace().next() == Some(name))
        })
        .ok_or_else(|| format!("no `{BEGIN} {name}` line on the console"))?;
    let header = field(lines[begin].as_ref(), BEGIN).unwrap_or_default();
    let len: usize = header
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| format!("`{BEGIN} {name}` has no byte count"))?;
    let mut data = Vec::with_capacity(len);
    for line in &lines[begin + 1..] {
        let line = line.as_ref();
        if field(line, END).is_some_and(|rest| rest == name) {
            if data.len() != len {
                return Err(format!(
                    "file {name}: {} bytes arrived, {len} were sent",
                    data.len()
                ));
            }
            return Ok(data);
        }
        if let Some(b64) = field(line, DATA) {
            let chunk = base64_decode(&b64)
                .ok_or_else(|| format!("file {name}: a data line is not base64: {b64:?}"))?;
            data.extend(chunk);
        }
    }
    Err(format!(
        "file {name}: no `{END} {name}` line (output cut short?)"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_the_rfc_vectors() {
        for (plain, enc) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64_encode(plain.as_bytes()), enc);
            assert_eq!(base64_decode(enc).as_deref(), Some(plain.as_bytes()));
        }
        assert_eq!(base64_decode("Zm9v!"), None);
    }

    #[test]
    fn round_trips_through_a_noisy_console() -> anyhow::Result<()> {
        let data: Vec<u8> = (0..1000u32).map(|i| (i * 7 % 256) as u8).collect();
        let mut out = Vec::new();
        write_file(&mut out, "bench.svg", &data)?;
        write_file(&mut out, "bench.json", b"{\"runs\":[]}\n")?;
        let text = String::from_utf8(out)?;
        let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
        assert!(lines.iter().all(|l| l.len() <= 100));
        // A kernel message between two data lines, a prefix on another.
        lines.insert(3, "[   12.345678] kern2usr: something".to_owned());
        lines[5] = format!("[  1.0] x {}", lines[5]);
        assert_eq!(extract(&lines, "bench.svg").as_deref(), Ok(&data[..]));
        assert_eq!(
            extract(&lines, "bench.json").as_deref(),
            Ok(&b"{\"runs\":[]}\n"[..])
        );
        assert!(extract(&lines, "other").is_err());
        Ok(())
    }

    #[test]
    fn a_lost_line_or_missing_end_is_an_error() -> anyhow::Result<()> {
        let mut out = Vec::new();
        write_file(&mut out, "f", &[1u8; 200])?;
        let text = String::from_utf8(out)?;
        let lines: Vec<&str> = text.lines().collect();
        let mut lost = lines.clone();
        lost.remove(2);
        let e = extract(&lost, "f").err().unwrap_or_default();
        assert!(e.contains("were sent"), "{e}");
        let cut = &lines[..lines.len() - 1];
        let e = extract(cut, "f").err().unwrap_or_default();
        assert!(e.contains("no `K2U-FILE-END f`"), "{e}");
        Ok(())
    }
}
