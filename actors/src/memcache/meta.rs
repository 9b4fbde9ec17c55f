//! memcached's meta protocol (`mg`, `ms`, `md`, `ma`, `mn`, `me`), parsed:
//! a command line and its flags in, a request (or the error line memcached
//! would send) out. Pure, like `parse`: it never panics on any input.
//!
//! Kai adds flags memcached does not use: `r<n>` and `w<n>` set R for a
//! read and W for a write, for that request only; `a` asks `mg` for every
//! sibling of a key and `y` for how many there are.

use super::parse::{valid_key, Parsed};
use base64::Engine as _;
use bytes::Bytes;

pub const BAD_FORMAT: &str = "CLIENT_ERROR bad command line format";
pub const INVALID_FLAG: &str = "CLIENT_ERROR invalid flag";
pub const OPAQUE_TOO_LONG: &str = "CLIENT_ERROR opaque token too long";
pub const DUPLICATE_FLAG: &str = "CLIENT_ERROR duplicate flag";
/// `ma`'s word for a bad or repeated flag.
pub const BAD_ARITH_FLAG: &str = "CLIENT_ERROR invalid or duplicate flag";
/// memcached's limit on an opaque token.
pub const MAX_OPAQUE: usize = 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetaKind {
    Get,
    Set,
    Delete,
    Arith,
    Noop,
    Debug,
}

/// One flag: its letter and the token after it (empty for most).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flag {
    pub letter: u8,
    pub token: Bytes,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetaRequest {
    pub kind: MetaKind,
    /// The key as stored (base64-decoded under `b`).
    pub key: Bytes,
    /// The key as the client sent it: what `k` returns.
    pub sent_key: Bytes,
    /// Every flag, in the order sent: replies return theirs in that order.
    pub flags: Vec<Flag>,
    /// `ms`'s data block.
    pub value: Bytes,
}

impl MetaRequest {
    pub fn has(&self, letter: u8) -> bool {
        self.flags.iter().any(|f| f.letter == letter)
    }

    pub fn token(&self, letter: u8) -> Option<&[u8]> {
        self.flags.iter().find(|f| f.letter == letter).map(|f| &f.token[..])
    }

    /// A flag's token as a number; Err is memcached's reply when it is not.
    pub fn number<T: std::str::FromStr>(&self, letter: u8) -> crate::Result<Option<T>> {
        match self.token(letter) {
            None => Ok(None),
            Some(token) => std::str::from_utf8(token)
                .ok()
                .and_then(|t| t.parse().ok())
                .map(Some)
                .ok_or_else(|| client_error(if self.kind == MetaKind::Arith { BAD_ARITH_FLAG } else { BAD_FORMAT })),
        }
    }

    pub fn quiet(&self) -> bool {
        self.has(b'q')
    }
}

/// The flags each command takes, as memcached documents them, plus Kai's
/// own (`r`, `w`, `a`, `y`). Flags memcached has but Kai cannot honour are
/// listed apart, so the reply names them rather than calling them invalid.
fn known_flags(kind: MetaKind) -> &'static [u8] {
    match kind {
        MetaKind::Get => b"bcCfhklOqstuvENRTPLray",
        MetaKind::Set => b"bcCEFIkOqsTMNPLw",
        MetaKind::Delete => b"bCEIkOqTxPLw",
        MetaKind::Arith => b"bCENJDTMOqtcvkPLw",
        MetaKind::Noop => b"",
        MetaKind::Debug => b"br",
    }
}

/// A `CLIENT_ERROR` reply line as the error it stands for: the one place
/// errors become lines writes it back byte for byte.
pub fn client_error(line: &str) -> crate::Error {
    crate::Error::Client(line.strip_prefix("CLIENT_ERROR ").unwrap_or(line).to_string())
}

/// Why Kai refuses a flag memcached has, or None when Kai honours it.
pub fn unsupported(kind: MetaKind, letter: u8) -> Option<&'static str> {
    Some(match (kind, letter) {
        (MetaKind::Get, b'N') => "CLIENT_ERROR flag N (vivify on miss) is not supported by Kai",
        (MetaKind::Get, b'R') => "CLIENT_ERROR flag R (recache) is not supported by Kai",
        (_, b'E') => "CLIENT_ERROR flag E (explicit cas) is not supported: Kai derives cas tokens from versions",
        (_, b'I') => "CLIENT_ERROR flag I (invalidate) is not supported by Kai",
        (MetaKind::Delete, b'x') => "CLIENT_ERROR flag x (remove value, keep item) is not supported by Kai",
        (MetaKind::Delete, b'T') => "CLIENT_ERROR flag T on md works only with I, which Kai does not support",
        _ => return None,
    })
}

fn invalid(reply: &'static str, consumed: usize) -> Parsed {
    Parsed::Invalid { reply: Some(reply), consumed, close: false }
}

/// Parses a meta command whose line is `tokens` (name first), `line_len`
/// bytes of `buf` including its newline.
pub fn parse(buf: &[u8], tokens: &[&[u8]], line_len: usize, max_value_size: usize) -> Parsed {
    let kind = match tokens[0] {
        b"mg" => MetaKind::Get,
        b"ms" => MetaKind::Set,
        b"md" => MetaKind::Delete,
        b"ma" => MetaKind::Arith,
        b"mn" => MetaKind::Noop,
        b"me" => MetaKind::Debug,
        _ => return invalid(super::parse::ERROR, line_len),
    };
    let meta = |key: Bytes, sent_key: Bytes, flags: Vec<Flag>, value: Bytes| MetaRequest { kind, key, sent_key, flags, value };
    if kind == MetaKind::Noop {
        return Parsed::Command(
            super::parse::Command::Meta(meta(Bytes::new(), Bytes::new(), Vec::new(), Bytes::new())),
            line_len,
        );
    }
    // No key: memcached says ERROR, but a format error for `ms`.
    let Some(&sent_key) = tokens.get(1) else {
        return invalid(if kind == MetaKind::Set { BAD_FORMAT } else { super::parse::ERROR }, line_len);
    };
    let (datalen, rest) = if kind == MetaKind::Set {
        match tokens.get(2).and_then(|t| std::str::from_utf8(t).ok()?.parse::<usize>().ok()) {
            Some(n) => (Some(n), &tokens[3..]),
            None => return invalid(BAD_FORMAT, line_len),
        }
    } else {
        (None, &tokens[2..])
    };
    // Past a good data length, a bad line still has its data block, which
    // is dropped with it (as memcached does).
    let refuse = |reply: &'static str| match datalen {
        Some(n) => Parsed::Swallow { reply: Some(reply), consumed: line_len, skip: n.saturating_add(2) },
        None => invalid(reply, line_len),
    };
    let mut flags: Vec<Flag> = Vec::with_capacity(rest.len());
    for token in rest {
        let letter = token[0];
        if !letter.is_ascii_alphabetic() || !known_flags(kind).contains(&letter) {
            return refuse(if kind == MetaKind::Arith { BAD_ARITH_FLAG } else { INVALID_FLAG });
        }
        if flags.iter().any(|f| f.letter == letter) {
            return refuse(if kind == MetaKind::Arith { BAD_ARITH_FLAG } else { DUPLICATE_FLAG });
        }
        if letter == b'O' && token.len() - 1 > MAX_OPAQUE {
            return refuse(OPAQUE_TOO_LONG);
        }
        flags.push(Flag { letter, token: Bytes::copy_from_slice(&token[1..]) });
    }
    let base64 = flags.iter().any(|f| f.letter == b'b');
    let key = if base64 {
        match base64::engine::general_purpose::STANDARD.decode(sent_key) {
            Ok(key) if !key.is_empty() && key.len() <= super::parse::MAX_KEY_LENGTH => Bytes::from(key),
            _ => return refuse(BAD_FORMAT),
        }
    } else if valid_key(sent_key) {
        super::parse::owned_key(sent_key)
    } else {
        return refuse(BAD_FORMAT);
    };
    let sent_key = Bytes::copy_from_slice(sent_key);
    let Some(datalen) = datalen else {
        return Parsed::Command(super::parse::Command::Meta(meta(key, sent_key, flags, Bytes::new())), line_len);
    };
    match super::parse::data_block(buf, line_len, datalen, max_value_size, false) {
        Ok((value, end)) => Parsed::Command(super::parse::Command::Meta(meta(key, sent_key, flags, value)), end),
        Err(parsed) => parsed,
    }
}

/// Appends the return flags a reply carries for the flags asked, in the
/// order asked: `O` and `k` always (`k` followed by `b` for a base64
/// key, as memcached sends it), the rest through
/// `value_of`, which gives a flag's returned token or None when that flag
/// returns nothing here.
pub fn return_flags(out: &mut Vec<u8>, request: &MetaRequest, mut value_of: impl FnMut(u8) -> Option<String>) {
    for flag in &request.flags {
        match flag.letter {
            b'O' => {
                out.extend_from_slice(b" O");
                out.extend_from_slice(&flag.token);
            }
            b'k' => {
                out.extend_from_slice(b" k");
                out.extend_from_slice(&request.sent_key);
                if request.has(b'b') {
                    out.extend_from_slice(b" b");
                }
            }
            b'b' => {}
            letter => {
                if let Some(token) = value_of(letter) {
                    out.push(b' ');
                    out.push(letter);
                    out.extend_from_slice(token.as_bytes());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::parse::{parse as parse_any, Command, BAD_CHUNK, TOO_LARGE};
    use super::*;

    fn request(input: &str) -> MetaRequest {
        match parse_any(input.as_bytes(), 1024) {
            Parsed::Command(Command::Meta(m), used) => {
                assert_eq!(used, input.len(), "{input:?} should be consumed whole");
                m
            }
            other => panic!("{input:?} gave {other:?}"),
        }
    }

    fn reply(input: &str) -> Option<&'static str> {
        match parse_any(input.as_bytes(), 1024) {
            Parsed::Invalid { reply, .. } | Parsed::Swallow { reply, .. } => reply,
            other => panic!("{input:?} gave {other:?}"),
        }
    }

    #[test]
    fn flags_keep_their_order_and_tokens() {
        let m = request("mg foo v t Oab12 k\r\n");
        assert_eq!(m.kind, MetaKind::Get);
        assert_eq!(m.key, Bytes::from("foo"));
        let letters: Vec<u8> = m.flags.iter().map(|f| f.letter).collect();
        assert_eq!(letters, b"vtOk");
        assert_eq!(m.token(b'O'), Some(&b"ab12"[..]));
        let mut out = Vec::new();
        return_flags(&mut out, &m, |l| (l == b't').then(|| "-1".to_string()));
        assert_eq!(out, b" t-1 Oab12 kfoo");
    }

    #[test]
    fn set_takes_its_data_block() {
        let m = request("ms foo 3 T10 F5 MA\r\nbar\r\n");
        assert_eq!((m.kind, &m.value[..]), (MetaKind::Set, &b"bar"[..]));
        assert_eq!(m.number::<u32>(b'F'), Ok(Some(5)));
        assert_eq!(m.token(b'M'), Some(&b"A"[..]));
        assert_eq!(parse_any(b"ms foo 3\r\nba", 1024), Parsed::Incomplete);
        assert_eq!(reply("ms foo 3\r\nbarX\r\n"), Some(BAD_CHUNK));
        assert_eq!(reply("ms foo 2000\r\n"), Some(TOO_LARGE));
        assert_eq!(reply("ms foo 18446744073709551615\r\n"), Some(TOO_LARGE), "no overflow");
        assert_eq!(reply("ms foo\r\n"), Some(BAD_FORMAT));
        assert!(request("ms foo 1 Fx\r\na\r\n").number::<u32>(b'F').is_err());
    }

    #[test]
    fn base64_keys_are_decoded_and_sent_back_as_sent() {
        let m = request("mg Zm9v b k v\r\n");
        assert_eq!(m.key, Bytes::from("foo"));
        let mut out = Vec::new();
        return_flags(&mut out, &m, |_| None);
        assert_eq!(out, b" kZm9v b");
        assert_eq!(reply("mg !!! b\r\n"), Some(BAD_FORMAT));
    }

    #[test]
    fn bad_lines_get_memcacheds_errors() {
        assert_eq!(reply("mg\r\n"), Some(super::super::parse::ERROR), "as memcached: a meta command with no key");
        assert_eq!(reply("ms\r\n"), Some(BAD_FORMAT));
        assert_eq!(reply("mg foo !\r\n"), Some(INVALID_FLAG));
        assert_eq!(reply("mg foo F5\r\n"), Some(INVALID_FLAG), "F is ms's, not mg's");
        assert_eq!(reply("mg foo v v\r\n"), Some(DUPLICATE_FLAG));
        assert_eq!(reply("ma foo D1 D2\r\n"), Some(BAD_ARITH_FLAG));
        assert_eq!(
            parse_any(b"ms foo 1 S5\r\nx\r\n", 1024),
            Parsed::Swallow { reply: Some(INVALID_FLAG), consumed: 13, skip: 3 },
            "a refused ms drops its data block too"
        );
        assert_eq!(reply(&format!("mg foo O{}\r\n", "x".repeat(33))), Some(OPAQUE_TOO_LONG));
        assert_eq!(reply(&format!("mg {}\r\n", "k".repeat(251))), Some(BAD_FORMAT));
        assert_eq!(request("mn\r\n").kind, MetaKind::Noop);
    }

    #[test]
    fn flags_kai_cannot_honour_are_named() {
        assert!(unsupported(MetaKind::Get, b'N').unwrap().contains("flag N"));
        assert_eq!(unsupported(MetaKind::Get, b'h'), None, "hit before: honoured");
        assert!(unsupported(MetaKind::Set, b'E').is_some());
        assert_eq!(unsupported(MetaKind::Get, b'v'), None);
        assert_eq!(unsupported(MetaKind::Get, b'r'), None, "Kai's own read quorum flag");
    }
}
