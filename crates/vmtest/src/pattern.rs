//! Line patterns with holes, for matching log and listener lines whose
//! numbers vary: `<n>` one or more decimal digits, `<hex>` one or more hex
//! digits, `<word>` one or more non-space characters, `<any>` any text.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Hole {
    Num,
    Hex,
    Word,
    Any,
}

impl Hole {
    fn accepts(self, c: char) -> bool {
        match self {
            Hole::Num => c.is_ascii_digit(),
            Hole::Hex => c.is_ascii_hexdigit(),
            Hole::Word => !c.is_whitespace(),
            Hole::Any => true,
        }
    }

    fn min_len(self) -> usize {
        match self {
            Hole::Any => 0,
            _ => 1,
        }
    }
}

#[derive(Debug)]
enum Token<'a> {
    Lit(&'a str),
    Hole(Hole),
}

fn tokenize(pattern: &str) -> Vec<Token<'_>> {
    let mut tokens = Vec::new();
    let mut rest = pattern;
    'outer: while !rest.is_empty() {
        let mut search_from = 0;
        while let Some(pos) = rest[search_from..].find('<').map(|p| p + search_from) {
            for (name, hole) in [
                ("<n>", Hole::Num),
                ("<hex>", Hole::Hex),
                ("<word>", Hole::Word),
                ("<any>", Hole::Any),
            ] {
                if rest[pos..].starts_with(name) {
                    if pos > 0 {
                        tokens.push(Token::Lit(&rest[..pos]));
                    }
                    tokens.push(Token::Hole(hole));
                    rest = &rest[pos + name.len()..];
                    continue 'outer;
                }
            }
            search_from = pos + 1;
        }
        tokens.push(Token::Lit(rest));
        break;
    }
    tokens
}

fn go(tokens: &[Token<'_>], line: &str, caps: &mut Vec<String>) -> bool {
    match tokens.split_first() {
        None => line.is_empty(),
        Some((Token::Lit(lit), rest)) => line.strip_prefix(lit).is_some_and(|l| go(rest, l, caps)),
        Some((Token::Hole(hole), rest)) => {
            // Longest run of accepted characters first, then shorter ones.
            let run: usize = line
                .char_indices()
                .find(|&(_, c)| !hole.accepts(c))
                .map_or(line.len(), |(i, _)| i);
            let mut ends: Vec<usize> = line[..run]
                .char_indices()
                .map(|(i, _)| i)
                .chain([run])
                .filter(|&i| i >= hole.min_len())
                .collect();
            ends.reverse();
            for end in ends {
                caps.push(line[..end].to_owned());
                if go(rest, &line[end..], caps) {
                    return true;
                }
                caps.pop();
            }
            false
        }
    }
}

/// The texts of the holes if `line` matches `pattern`.
pub fn capture(pattern: &str, line: &str) -> Option<Vec<String>> {
    let tokens = tokenize(pattern);
    let mut caps = Vec::new();
    go(&tokens, line, &mut caps).then_some(caps)
}

/// Whether `line` matches `pattern`.
pub fn matches(pattern: &str, line: &str) -> bool {
    capture(pattern, line).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literal_lines_match_exactly() {
        assert!(matches("Buffer filled", "Buffer filled"));
        assert!(!matches("Buffer filled", "Buffer filled "));
        assert!(!matches("Buffer filled", "Buffer fille"));
        assert!(matches("a < b", "a < b"));
    }

    #[test]
    fn holes_capture() {
        assert_eq!(
            capture("Time to copy = <n>", "Time to copy = 82233"),
            Some(vec!["82233".to_owned()])
        );
        assert_eq!(capture("Time to copy = <n>", "Time to copy = x"), None);
        assert_eq!(
            capture(
                "Memory from char dev = <n> mmaped to 0x<hex>",
                "Memory from char dev = 5 mmaped to 0x7f75cedb4000"
            ),
            Some(vec!["5".to_owned(), "7f75cedb4000".to_owned()])
        );
        assert_eq!(
            capture(
                "file struct: <word> and struct2 : <word>",
                "file struct: 00000000a1b2c3d4 and struct2 : (null)"
            ),
            Some(vec!["00000000a1b2c3d4".to_owned(), "(null)".to_owned()])
        );
        assert_eq!(
            capture(
                "command <n> (<word>) refused: <any>",
                "command 2 (MMAP) refused: no FIND yet"
            ),
            Some(vec![
                "2".to_owned(),
                "MMAP".to_owned(),
                "no FIND yet".to_owned()
            ])
        );
        assert!(matches("x<any>", "x"));
    }
}
