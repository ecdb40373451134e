//! Files sent over the guest's console: the benchmark writes its JSON to
//! stdout between markers, the host (`cargo xtask bench`) extracts it from
//! the console log (and draws the plot from it).
//!
//! ```text
//! K2U-FILE-BEGIN <name> <bytes>
//! K2U-FILE-DATA "<a piece of the file, as a JSON string>"
//! ...
//! K2U-FILE-END <name>
//! ```
//!
//! Each data line is a JSON string literal in ASCII (quotes, backslashes,
//! control and non-ASCII characters escaped by serde_json and
//! [`ascii_only`]), so every line is printable and short and blanks at a
//! chunk's ends survive the console; each carries its own prefix so that
//! kernel messages interleaved on the console are skipped, and the byte
//! count catches anything lost.

use std::fmt::Write as _;
use std::io::{self, Write};

/// First line of a file.
pub const BEGIN: &str = "K2U-FILE-BEGIN";
/// Prefix of each data line.
pub const DATA: &str = "K2U-FILE-DATA";
/// Last line of a file.
pub const END: &str = "K2U-FILE-END";

/// Most characters of escaped text per data line (plus the prefix and
/// the quotes: at most 81 characters a line).
const CHUNK_WIDTH: usize = 64;

/// Most characters `c` takes once escaped (a bound, not exact).
fn escaped_width(c: char) -> usize {
    match c {
        '"' | '\\' => 2,
        ' '..='~' => 1,
        c if c.is_ascii() => 6,
        c if c.len_utf16() == 2 => 12,
        _ => 6,
    }
}

/// `text` cut into pieces of at most [`CHUNK_WIDTH`] escaped characters.
fn chunks(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut start, mut width) = (0, 0);
    for (i, c) in text.char_indices() {
        let w = escaped_width(c);
        if width + w > CHUNK_WIDTH {
            out.push(&text[start..i]);
            (start, width) = (i, 0);
        }
        width += w;
    }
    if start < text.len() {
        out.push(&text[start..]);
    }
    out
}

/// `json` (a JSON text) with every non-ASCII character written as a
/// `\uXXXX` escape (UTF-16, so a surrogate pair above the BMP). Only valid
/// where such characters are inside strings, as in a JSON string literal.
pub fn ascii_only(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    for c in json.chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            let mut units = [0u16; 2];
            for u in c.encode_utf16(&mut units) {
                let _ = write!(out, "\\u{u:04x}");
            }
        }
    }
    out
}

/// Write `text` as file `name` (no blanks in it) between the markers.
pub fn write_file(out: &mut impl Write, name: &str, text: &str) -> io::Result<()> {
    writeln!(out, "{BEGIN} {name} {}", text.len())?;
    for chunk in chunks(text) {
        let literal = serde_json::to_string(chunk).map_err(io::Error::other)?;
        writeln!(out, "{DATA} {}", ascii_only(&literal))?;
    }
    writeln!(out, "{END} {name}")?;
    out.flush()
}

/// The last complete file `name` in `lines` (console lines, possibly with
/// other text before the markers on a line). Errors say what is wrong.
pub fn extract<S: AsRef<str>>(lines: &[S], name: &str) -> Result<String, String> {
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
    let mut data = String::with_capacity(len);
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
        if let Some(literal) = field(line, DATA) {
            let chunk: String = serde_json::from_str(&literal).map_err(|e| {
                format!("file {name}: a data line is not a JSON string ({e}): {literal:?}")
            })?;
            data.push_str(&chunk);
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
    fn data_lines_are_ascii_json_strings() -> anyhow::Result<()> {
        assert_eq!(ascii_only("\"µs 🦀\""), "\"\\u00b5s \\ud83e\\udd80\"");
        let mut out = Vec::new();
        write_file(&mut out, "f", "say \"hi\"\n\tµ\\ ")?;
        let text = String::from_utf8(out)?;
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "K2U-FILE-BEGIN f 14");
        assert_eq!(lines[1], r#"K2U-FILE-DATA "say \"hi\"\n\t\u00b5\\ ""#);
        assert!(text.is_ascii());
        assert_eq!(extract(&lines, "f").as_deref(), Ok("say \"hi\"\n\tµ\\ "));
        Ok(())
    }

    #[test]
    fn round_trips_through_a_noisy_console() -> anyhow::Result<()> {
        let data: String = (0..1000u32)
            .map(|i| char::from_u32(32 + i * 7 % 300).unwrap_or('?'))
            .collect();
        let mut out = Vec::new();
        write_file(&mut out, "bench.json", &data)?;
        write_file(&mut out, "other.json", "{\"runs\":[]}\n")?;
        let text = String::from_utf8(out)?;
        let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
        assert!(lines.iter().all(|l| l.len() <= 100 && l.is_ascii()));
        // A kernel message between two data lines, a prefix on another.
        lines.insert(3, "[   12.345678] kern2usr: something".to_owned());
        lines[5] = format!("[  1.0] x {}", lines[5]);
        assert_eq!(extract(&lines, "bench.json").as_deref(), Ok(data.as_str()));
        assert_eq!(
            extract(&lines, "other.json").as_deref(),
            Ok("{\"runs\":[]}\n")
        );
        assert!(extract(&lines, "missing").is_err());
        Ok(())
    }

    #[test]
    fn a_lost_or_broken_line_or_missing_end_is_an_error() -> anyhow::Result<()> {
        let mut out = Vec::new();
        write_file(&mut out, "f", &"x".repeat(200))?;
        let text = String::from_utf8(out)?;
        let lines: Vec<&str> = text.lines().collect();
        let mut lost = lines.clone();
        lost.remove(2);
        let e = extract(&lost, "f").err().unwrap_or_default();
        assert!(e.contains("were sent"), "{e}");
        let cut = &lines[..lines.len() - 1];
        let e = extract(cut, "f").err().unwrap_or_default();
        assert!(e.contains("no `K2U-FILE-END f`"), "{e}");
        let mut broken = lines.clone();
        broken[1] = "K2U-FILE-DATA \"xx";
        let e = extract(&broken, "f").err().unwrap_or_default();
        assert!(e.contains("not a JSON string"), "{e}");
        Ok(())
    }
}
