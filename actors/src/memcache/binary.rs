//! memcached's binary protocol, parsed and encoded. Some clients speak
//! only this one (Node's memjs, libmemcached in binary mode). Pure: bytes
//! in, requests out; responses to bytes. A connection whose first byte is
//! the request magic (0x80) speaks it from then on.

use bytes::Bytes;

pub const REQUEST_MAGIC: u8 = 0x80;
const RESPONSE_MAGIC: u8 = 0x81;
const HEADER: usize = 24;

/// Opcodes Kai serves.
pub mod op {
    pub const GET: u8 = 0x00;
    pub const SET: u8 = 0x01;
    pub const ADD: u8 = 0x02;
    pub const REPLACE: u8 = 0x03;
    pub const DELETE: u8 = 0x04;
    pub const INCREMENT: u8 = 0x05;
    pub const DECREMENT: u8 = 0x06;
    pub const QUIT: u8 = 0x07;
    pub const FLUSH: u8 = 0x08;
    pub const GETQ: u8 = 0x09;
    pub const NOOP: u8 = 0x0a;
    pub const VERSION: u8 = 0x0b;
    pub const GETK: u8 = 0x0c;
    pub const GETKQ: u8 = 0x0d;
    pub const APPEND: u8 = 0x0e;
    pub const PREPEND: u8 = 0x0f;
    pub const STAT: u8 = 0x10;
    pub const SETQ: u8 = 0x11;
    pub const ADDQ: u8 = 0x12;
    pub const REPLACEQ: u8 = 0x13;
    pub const DELETEQ: u8 = 0x14;
    pub const INCREMENTQ: u8 = 0x15;
    pub const DECREMENTQ: u8 = 0x16;
    pub const QUITQ: u8 = 0x17;
    pub const FLUSHQ: u8 = 0x18;
    pub const APPENDQ: u8 = 0x19;
    pub const PREPENDQ: u8 = 0x1a;
    pub const TOUCH: u8 = 0x1c;
    pub const GAT: u8 = 0x1d;
    pub const GATQ: u8 = 0x1e;
    pub const GATK: u8 = 0x23;
    pub const GATKQ: u8 = 0x24;
}

/// Response statuses.
pub mod status {
    pub const OK: u16 = 0x0000;
    pub const NOT_FOUND: u16 = 0x0001;
    pub const EXISTS: u16 = 0x0002;
    pub const TOO_LARGE: u16 = 0x0003;
    pub const INVALID: u16 = 0x0004;
    pub const NOT_STORED: u16 = 0x0005;
    pub const NON_NUMERIC: u16 = 0x0006;
    pub const UNKNOWN_COMMAND: u16 = 0x0081;
    pub const TEMPORARY_FAILURE: u16 = 0x0086;
}

/// One request, header fields and body split.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub opcode: u8,
    pub opaque: u32,
    pub cas: u64,
    pub key: Bytes,
    pub extras: Bytes,
    pub value: Bytes,
}

impl Request {
    /// Quiet variants answer only what the client must hear.
    pub fn quiet(&self) -> bool {
        matches!(
            self.opcode,
            op::GETQ
                | op::GETKQ
                | op::SETQ
                | op::ADDQ
                | op::REPLACEQ
                | op::DELETEQ
                | op::INCREMENTQ
                | op::DECREMENTQ
                | op::QUITQ
                | op::FLUSHQ
                | op::APPENDQ
                | op::PREPENDQ
                | op::GATQ
                | op::GATKQ
        )
    }

    /// The big-endian number in the extras at `at`, if there.
    pub fn extra_u32(&self, at: usize) -> Option<u32> {
        self.extras.get(at..at + 4).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub fn extra_u64(&self, at: usize) -> Option<u64> {
        self.extras.get(at..at + 8).map(|b| u64::from_be_bytes(b.try_into().expect("8 bytes")))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    Incomplete,
    Request(Request, usize),
    /// A frame that cannot be served: answer `status` for `opcode`/`opaque`,
    /// drop `consumed` bytes now and `skip` more as they arrive (a value
    /// too large is never buffered); close if the stream is not binary.
    Refused {
        opcode: u8,
        opaque: u32,
        status: u16,
        consumed: usize,
        skip: usize,
        close: bool,
    },
}

/// Parses one request from the front of `buf`.
pub fn parse(buf: &[u8], max_value_size: usize) -> Parsed {
    if buf.len() < HEADER {
        return Parsed::Incomplete;
    }
    let opcode = buf[1];
    let key_len = u16::from_be_bytes([buf[2], buf[3]]) as usize;
    let extras_len = buf[4] as usize;
    let body_len = u32::from_be_bytes([buf[8], buf[9], buf[10], buf[11]]) as usize;
    let opaque = u32::from_be_bytes([buf[12], buf[13], buf[14], buf[15]]);
    let cas = u64::from_be_bytes(buf[16..24].try_into().expect("8 bytes"));
    if buf[0] != REQUEST_MAGIC || key_len + extras_len > body_len || key_len > super::parse::MAX_KEY_LENGTH {
        let close = buf[0] != REQUEST_MAGIC;
        let skip = if close { 0 } else { body_len };
        return Parsed::Refused { opcode, opaque, status: status::INVALID, consumed: HEADER, skip, close };
    }
    if body_len - key_len - extras_len > max_value_size {
        return Parsed::Refused { opcode, opaque, status: status::TOO_LARGE, consumed: HEADER, skip: body_len, close: false };
    }
    if buf.len() < HEADER + body_len {
        return Parsed::Incomplete;
    }
    let body = &buf[HEADER..HEADER + body_len];
    let request = Request {
        opcode,
        opaque,
        cas,
        extras: Bytes::copy_from_slice(&body[..extras_len]),
        key: super::parse::owned_key(&body[extras_len..extras_len + key_len]),
        value: Bytes::copy_from_slice(&body[extras_len + key_len..]),
    };
    Parsed::Request(request, HEADER + body_len)
}

/// One response frame.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Response<'a> {
    pub opcode: u8,
    pub opaque: u32,
    pub status: u16,
    pub cas: u64,
    pub extras: &'a [u8],
    pub key: &'a [u8],
    pub value: &'a [u8],
}

pub fn encode(out: &mut Vec<u8>, r: &Response) {
    let body = r.extras.len() + r.key.len() + r.value.len();
    out.push(RESPONSE_MAGIC);
    out.push(r.opcode);
    out.extend_from_slice(&(r.key.len() as u16).to_be_bytes());
    out.push(r.extras.len() as u8);
    out.push(0);
    out.extend_from_slice(&r.status.to_be_bytes());
    out.extend_from_slice(&(body as u32).to_be_bytes());
    out.extend_from_slice(&r.opaque.to_be_bytes());
    out.extend_from_slice(&r.cas.to_be_bytes());
    out.extend_from_slice(r.extras);
    out.extend_from_slice(r.key);
    out.extend_from_slice(r.value);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(opcode: u8, extras: &[u8], key: &[u8], value: &[u8], cas: u64) -> Vec<u8> {
        let mut out = vec![REQUEST_MAGIC, opcode];
        out.extend_from_slice(&(key.len() as u16).to_be_bytes());
        out.push(extras.len() as u8);
        out.extend_from_slice(&[0, 0, 0]);
        out.extend_from_slice(&((extras.len() + key.len() + value.len()) as u32).to_be_bytes());
        out.extend_from_slice(&7u32.to_be_bytes());
        out.extend_from_slice(&cas.to_be_bytes());
        out.extend_from_slice(extras);
        out.extend_from_slice(key);
        out.extend_from_slice(value);
        out
    }

    #[test]
    fn a_set_parses_into_its_parts() {
        let wire = request(op::SET, &[0, 0, 0, 5, 0, 0, 0, 0], b"k", b"abc", 9);
        let Parsed::Request(r, used) = parse(&wire, 1024) else { panic!() };
        assert_eq!(used, wire.len());
        assert_eq!((r.opcode, r.opaque, r.cas), (op::SET, 7, 9));
        assert_eq!((&r.key[..], &r.value[..], r.extra_u32(0), r.extra_u32(4)), (&b"k"[..], &b"abc"[..], Some(5), Some(0)));
        assert!(!r.quiet());
        for split in 0..wire.len() {
            assert_eq!(parse(&wire[..split], 1024), Parsed::Incomplete);
        }
    }

    #[test]
    fn oversized_and_malformed_frames_are_refused() {
        let big = request(op::SET, &[0; 8], b"k", &[0; 2000], 0);
        assert_eq!(
            parse(&big[..HEADER], 1024),
            Parsed::Refused { opcode: op::SET, opaque: 7, status: status::TOO_LARGE, consumed: HEADER, skip: 2009, close: false }
        );
        let mut bad = request(op::GET, &[], b"key", &[], 0);
        bad[4] = 200; // extras longer than the body
        assert!(matches!(parse(&bad, 1024), Parsed::Refused { status: status::INVALID, close: false, .. }));
    }

    #[test]
    fn responses_encode_the_header() {
        let mut out = Vec::new();
        encode(
            &mut out,
            &Response { opcode: op::GET, opaque: 3, status: 0, cas: 1, extras: &[0, 0, 0, 5], key: b"", value: b"hi" },
        );
        assert_eq!(out.len(), 24 + 6);
        assert_eq!(&out[..2], &[RESPONSE_MAGIC, op::GET]);
        assert_eq!(&out[8..12], &6u32.to_be_bytes());
        assert_eq!(&out[24..], &[0, 0, 0, 5, b'h', b'i']);
    }
}
