//! The lexical rules of HTTP/1.1 framing (RFC 9110 §5.5-§5.6, RFC 9112
//! §2.2, §6-§7) as pure functions over bytes, each with its bound: a
//! Content-Length, a chunk-size line and its extensions, a trailer field,
//! a line and its CRLF. Byte by byte and ASCII only: nothing here is
//! Unicode-aware, so a no-break space is never taken for whitespace.

/// Longest chunk-size or trailer line, without its CRLF.
pub const MAX_LINE: usize = 4 * 1024;
/// Most hex digits in a chunk size (a `u64`; leading zeros count).
pub const MAX_CHUNK_SIZE_DIGITS: usize = 16;
/// Most extensions on one chunk-size line.
pub const MAX_CHUNK_EXTENSIONS: usize = 16;
/// Most decimal digits in a Content-Length (below `u64::MAX`).
pub const MAX_LENGTH_DIGITS: usize = 18;

/// The line at the start of `input`, without its CRLF, and the bytes it
/// takes with the CRLF; `None` while it is incomplete. Every line ends
/// with CRLF (RFC 9112 §2.2): a bare LF, or a CR not followed by LF, is an
/// error as soon as it is seen, never a wait for more bytes.
pub fn line(input: &[u8]) -> Result<Option<(&[u8], usize)>, &'static str> {
    let end = input.iter().position(|&b| b == b'\n' || b == b'\r');
    let Some(at) = end else {
        return if input.len() > MAX_LINE {
            Err("line too long")
        } else {
            Ok(None)
        };
    };
    if at > MAX_LINE {
        return Err("line too long");
    }
    match &input[at..] {
        [b'\n', ..] => Err("bare LF"),
        [b'\r'] => Ok(None),
        [b'\r', b'\n', ..] => Ok(Some((&input[..at], at + 2))),
        _ => Err("bare CR"),
    }
}

/// A chunk-size line's size and the bytes of its extensions (RFC 9112
/// §7.1.1): `1*HEXDIG *( BWS ";" BWS token [ BWS "=" BWS ( token /
/// quoted-string ) ] )`. No sign, no `0x`, no whitespace but the BWS
/// around extensions, at most [`MAX_CHUNK_SIZE_DIGITS`] digits and
/// [`MAX_CHUNK_EXTENSIONS`] extensions.
pub fn chunk_size_line(line: &[u8]) -> Result<(u64, usize), &'static str> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 {
        return Err("bad chunk size");
    }
    if digits > MAX_CHUNK_SIZE_DIGITS {
        return Err("chunk size too large");
    }
    let size = line[..digits].iter().fold(0u64, |size, &b| {
        // At most 16 hex digits: no overflow.
        let digit = match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            _ => b - b'A' + 10,
        };
        (size << 4) | u64::from(digit)
    });
    let mut rest = &line[digits..];
    let mut count = 0;
    while !rest.is_empty() {
        rest = skip_whitespace(rest)
            .strip_prefix(b";")
            .ok_or("bad chunk extension")?;
        count += 1;
        if count > MAX_CHUNK_EXTENSIONS {
            return Err("too many chunk extensions");
        }
        rest = skip_whitespace(rest);
        let name = token_len(rest);
        if name == 0 {
            return Err("bad chunk extension");
        }
        rest = &rest[name..];
        if let Some(value) = skip_whitespace(rest).strip_prefix(b"=") {
            let value = skip_whitespace(value);
            let len = if value.first() == Some(&b'"') {
                quoted_string_len(value).ok_or("bad chunk extension")?
            } else {
                token_len(value)
            };
            if len == 0 {
                return Err("bad chunk extension");
            }
            rest = &value[len..];
        }
    }
    Ok((size, line.len() - digits))
}

/// A trailer field line (RFC 9112 §5, §7.1.2): `token ":" OWS value OWS`,
/// the value without control characters; no obs-fold.
pub fn trailer_line(line: &[u8]) -> Result<(), &'static str> {
    let name = token_len(line);
    match line.get(name) {
        Some(b':') if name > 0 => {}
        _ => return Err("bad trailer field"),
    }
    if line[name + 1..].iter().all(|&b| field_value_byte(b)) {
        Ok(())
    } else {
        Err("bad trailer field")
    }
}

/// `input` without its leading spaces and tabs (BWS, OWS).
fn skip_whitespace(input: &[u8]) -> &[u8] {
    let n = input
        .iter()
        .take_while(|&&b| b == b' ' || b == b'\t')
        .count();
    &input[n..]
}

/// Whether `b` may be part of a token (RFC 9110 §5.6.2: `tchar`).
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Length of the token at the start of `input`.
fn token_len(input: &[u8]) -> usize {
    input.iter().take_while(|&&b| is_tchar(b)).count()
}

/// Whether `b` may appear in a field value (RFC 9110 §5.5: VCHAR,
/// obs-text, SP, HTAB).
fn field_value_byte(b: u8) -> bool {
    b == b'\t' || b == b' ' || (0x21..=0x7e).contains(&b) || b >= 0x80
}

/// Length of the quoted-string at the start of `input` (RFC 9110 §5.6.4),
/// quotes included; `None` when it is not one.
fn quoted_string_len(input: &[u8]) -> Option<usize> {
    let mut at = 1;
    loop {
        match *input.get(at)? {
            b'"' => return Some(at + 1),
            b'\\' if input.get(at + 1).is_some_and(|&b| field_value_byte(b)) => at += 2,
            b if field_value_byte(b) && b != b'\\' => at += 1,
            _ => return None,
        }
    }
}

/// A Content-Length value (RFC 9110 §8.6: `1*DIGIT`): ASCII digits only,
/// byte by byte (no sign, no Unicode space, no list), within the spaces
/// and tabs of OWS, at most [`MAX_LENGTH_DIGITS`] of them.
pub fn content_length(value: &[u8]) -> Option<u64> {
    let digits = trim_ows(value);
    if digits.is_empty()
        || digits.len() > MAX_LENGTH_DIGITS
        || !digits.iter().all(u8::is_ascii_digit)
    {
        return None;
    }
    Some(
        digits
            .iter()
            .fold(0u64, |n, &d| n * 10 + u64::from(d - b'0')),
    )
}

/// `value` without the spaces and tabs around it (OWS), and nothing else:
/// not [`str::trim`], which also takes Unicode spaces such as U+00A0.
pub fn trim_ows(value: &[u8]) -> &[u8] {
    let ows = |b: &u8| *b == b' ' || *b == b'\t';
    let start = value.iter().position(|b| !ows(b)).unwrap_or(value.len());
    let end = value.iter().rposition(|b| !ows(b)).map_or(start, |i| i + 1);
    &value[start..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_sizes_are_hex_digits_only() {
        for (line, why) in [
            (&b"+5"[..], "bad chunk size"),
            (b"-5", "bad chunk size"),
            (b" 5", "bad chunk size"),
            (b"5 ", "bad chunk extension"),
            (b"0x5", "bad chunk extension"),
            (b"", "bad chunk size"),
            (b"5;", "bad chunk extension"),
            (b"5;=x", "bad chunk extension"),
            (b"5;a=", "bad chunk extension"),
            (b"5;a=\"open", "bad chunk extension"),
            (b"5;a\x01", "bad chunk extension"),
            (b"5;a=b c", "bad chunk extension"),
            (b"11111111111111111", "chunk size too large"),
        ] {
            assert_eq!(
                chunk_size_line(line),
                Err(why),
                "{}",
                String::from_utf8_lossy(line)
            );
        }
        assert_eq!(chunk_size_line(b"ffffffffffffffff"), Ok((u64::MAX, 0)));
        assert_eq!(chunk_size_line(b"5;a=b"), Ok((5, 4)));
        let many = format!("5{}", ";a".repeat(MAX_CHUNK_EXTENSIONS + 1));
        assert_eq!(
            chunk_size_line(many.as_bytes()),
            Err("too many chunk extensions")
        );
        let (size, _) = chunk_size_line(&many.as_bytes()[..many.len() - 2]).expect("at the bound");
        assert_eq!(size, 5);
    }

    #[test]
    fn content_lengths_are_ascii_digits_within_ows() {
        assert_eq!(content_length(b"0"), Some(0));
        assert_eq!(content_length(b" \t42\t "), Some(42));
        for bad in [
            &b"\xc2\xa05"[..],
            b"4 2",
            b"+4",
            b"",
            b" ",
            b"0123456789012345678",
        ] {
            assert_eq!(
                content_length(bad),
                None,
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        assert_eq!(trim_ows(b"\xc2\xa0 x \xc2\xa0"), b"\xc2\xa0 x \xc2\xa0");
    }
}
