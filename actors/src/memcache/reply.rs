//! Reply lines and value blocks, byte for byte as memcached writes them,
//! and the one place a node error becomes a memcache reply (a text line,
//! or a binary status).

use crate::error::Error;

/// The reply line for an error.
pub fn error_line(error: &Error) -> String {
    match error {
        Error::Client(m) => format!("CLIENT_ERROR {m}"),
        Error::TooLarge => crate::memcache::parse::TOO_LARGE.to_string(),
        other => format!("SERVER_ERROR {}", single_line(&other.to_string())),
    }
}

/// The binary protocol's status for an error; its message is the error's
/// text.
pub fn binary_status(error: &Error) -> u16 {
    use crate::memcache::binary::status;
    match error {
        Error::TooLarge => status::TOO_LARGE,
        Error::Client(_) => status::INVALID,
        _ => status::TEMPORARY_FAILURE,
    }
}

/// A reply must stay one line whatever an error message holds.
fn single_line(text: &str) -> String {
    text.replace(['\r', '\n'], " ")
}

pub fn line(out: &mut Vec<u8>, text: &str) {
    out.extend_from_slice(text.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// `VALUE <key> <flags> <bytes> [<cas>]` and the data.
pub fn value_block(out: &mut Vec<u8>, key: &[u8], flags: u32, value: &[u8], cas: Option<u64>) {
    use std::io::Write;
    out.reserve(key.len() + value.len() + 48);
    out.extend_from_slice(b"VALUE ");
    out.extend_from_slice(key);
    // Written straight into the reply: no header string of its own.
    let _ = match cas {
        Some(cas) => write!(out, " {flags} {} {cas}\r\n", value.len()),
        None => write!(out, " {flags} {}\r\n", value.len()),
    };
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn value_blocks_match_memcached() {
        let mut out = Vec::new();
        value_block(&mut out, b"k", 5, b"abc", None);
        value_block(&mut out, b"k", 0, b"", Some(9));
        assert_eq!(out, b"VALUE k 5 3\r\nabc\r\nVALUE k 0 0 9\r\n\r\n");
    }

    #[test]
    fn errors_map_to_one_line() {
        assert_eq!(error_line(&Error::Client("bad".into())), "CLIENT_ERROR bad");
        assert_eq!(error_line(&Error::TooLarge), "SERVER_ERROR object too large for cache");
        let quorum = Error::Quorum { op: "write".into(), needed: 2, got: 1, reason: "a\r\nb".into() };
        let said = "SERVER_ERROR write quorum not met: 1 of 2 replicas answered (a  b); the write may still be applied";
        assert_eq!(error_line(&quorum), said);
        let read = Error::Quorum { op: "read".into(), needed: 2, got: 1, reason: "timed out".into() };
        assert_eq!(error_line(&read), "SERVER_ERROR read quorum not met: 1 of 2 replicas answered (timed out)");
        assert_eq!(error_line(&Error::Busy("shedding".into())), "SERVER_ERROR busy: shedding");
        assert_eq!(error_line(&Error::Refused("removed".into())), "SERVER_ERROR refused: removed");
        let unknown = Error::Unsupported("this node does not know `x`".into());
        assert_eq!(error_line(&unknown), "SERVER_ERROR this node does not know `x`");
    }

    #[test]
    fn an_error_crosses_the_wire_with_its_kind() {
        let errors = [
            Error::Quorum { op: "write".into(), needed: 2, got: 1, reason: "timed out".into() },
            Error::Busy("b".into()),
            Error::Unavailable("u".into()),
            Error::Refused("r".into()),
            Error::Client("c".into()),
            Error::Late("l".into()),
        ];
        for error in errors {
            let bytes = rmp_serde::to_vec(&error).unwrap();
            let back: Error = rmp_serde::from_slice(&bytes).unwrap();
            assert_eq!(back.may_have_run(), error.may_have_run());
            assert_eq!(back, error);
        }
    }
}
