//! Versions in MessagePack, written and read by hand, byte for byte as
//! rmp_serde writes them (the tests hold the two equal). Every client
//! request sends a key's versions to or from a replica, and serde's generic
//! path (a visitor a field, every integer read through `deserialize_any`)
//! was most of what a peer frame cost. The reader accepts only the exact
//! shapes the writer makes and answers None to anything else, which the
//! caller then hands to serde: so the two can never disagree on what a byte
//! string means, only on how fast it is read.

use super::clock::{ClockEntries, ClockEntry, Dot, NodeName, VClock, Version};
use bytes::Bytes;

/// A length past the short forms: 16 bits after `m16`, else 32 after `m32`.
fn put_wide_len(out: &mut Vec<u8>, len: usize, m16: u8, m32: u8) {
    if len <= 0xffff {
        out.push(m16);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(m32);
        out.extend_from_slice(&(len as u32).to_be_bytes());
    }
}

pub fn put_array_len(out: &mut Vec<u8>, len: usize) {
    match len {
        0..=15 => out.push(0x90 | len as u8),
        _ => put_wide_len(out, len, 0xdc, 0xdd),
    }
}

pub fn put_map_len(out: &mut Vec<u8>, len: usize) {
    match len {
        0..=15 => out.push(0x80 | len as u8),
        _ => put_wide_len(out, len, 0xde, 0xdf),
    }
}

pub fn put_str(out: &mut Vec<u8>, s: &str) {
    match s.len() {
        len @ 0..=31 => out.push(0xa0 | len as u8),
        len @ 32..=0xff => out.extend_from_slice(&[0xd9, len as u8]),
        len => put_wide_len(out, len, 0xda, 0xdb),
    }
    out.extend_from_slice(s.as_bytes());
}

pub fn put_bin(out: &mut Vec<u8>, b: &[u8]) {
    match b.len() {
        len @ 0..=0xff => out.extend_from_slice(&[0xc4, len as u8]),
        len => put_wide_len(out, len, 0xc5, 0xc6),
    }
    out.extend_from_slice(b);
}

/// An unsigned integer in its shortest form, as rmp writes every one.
pub fn put_uint(out: &mut Vec<u8>, v: u64) {
    match v {
        0..=0x7f => out.push(v as u8),
        0x80..=0xff => out.extend_from_slice(&[0xcc, v as u8]),
        0x100..=0xffff => {
            out.push(0xcd);
            out.extend_from_slice(&(v as u16).to_be_bytes());
        }
        0x1_0000..=0xffff_ffff => {
            out.push(0xce);
            out.extend_from_slice(&(v as u32).to_be_bytes());
        }
        _ => {
            out.push(0xcf);
            out.extend_from_slice(&v.to_be_bytes());
        }
    }
}

pub fn put_bool(out: &mut Vec<u8>, b: bool) {
    out.push(if b { 0xc3 } else { 0xc2 });
}

pub fn put_nil(out: &mut Vec<u8>) {
    out.push(0xc0);
}

/// A whole message that is a list of versions (a disk record), if it is
/// one in the shape `put_versions` writes.
pub fn read_versions(bytes: &[u8]) -> Option<Vec<Version>> {
    let mut reader = Reader::new(bytes);
    reader.versions().filter(|_| reader.is_done())
}

/// A list of versions, as `rmp_serde` writes a `Vec<Version>`: structs as
/// arrays of their fields, in declaration order.
pub fn put_versions(out: &mut Vec<u8>, versions: &[Version]) {
    put_array_len(out, versions.len());
    for v in versions {
        put_array_len(out, 7);
        put_array_len(out, 2);
        put_str(out, &v.dot.node);
        put_uint(out, v.dot.counter);
        put_array_len(out, 1);
        put_array_len(out, v.clock.entries().len());
        for e in v.clock.entries() {
            put_array_len(out, 3);
            put_str(out, &e.node);
            put_uint(out, e.counter);
            put_uint(out, e.timestamp);
        }
        put_uint(out, v.timestamp);
        put_uint(out, u64::from(v.flags));
        put_uint(out, v.expires_at);
        put_bool(out, v.deleted);
        put_bin(out, &v.value);
    }
}

/// Reads the shapes `put_*` write, from a whole message. Every method
/// answers None at anything else, moving on only past what it read.
#[derive(Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    /// Whether every byte was read.
    pub fn is_done(&self) -> bool {
        self.pos == self.buf.len()
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let bytes = self.buf.get(self.pos..self.pos.checked_add(n)?)?;
        self.pos += n;
        Some(bytes)
    }

    fn byte(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    fn peek(&self) -> Option<u8> {
        self.buf.get(self.pos).copied()
    }

    fn be(&mut self, n: usize) -> Option<u64> {
        Some(self.take(n)?.iter().fold(0u64, |acc, &b| acc << 8 | u64::from(b)))
    }

    /// A length after a fixed-size marker, or in the marker's low bits.
    fn len(&mut self, fix: u8, fix_mask: u8, wide: [u8; 2]) -> Option<usize> {
        let marker = self.byte()?;
        let len = match marker {
            m if m & !fix_mask == fix => u64::from(m & fix_mask),
            m if m == wide[0] => self.be(2)?,
            m if m == wide[1] => self.be(4)?,
            _ => return None,
        };
        usize::try_from(len).ok()
    }

    pub fn array_len(&mut self) -> Option<usize> {
        self.len(0x90, 0x0f, [0xdc, 0xdd])
    }

    pub fn map_len(&mut self) -> Option<usize> {
        self.len(0x80, 0x0f, [0xde, 0xdf])
    }

    pub fn str(&mut self) -> Option<&'a str> {
        let len = match self.byte()? {
            m @ 0xa0..=0xbf => usize::from(m & 0x1f),
            0xd9 => self.be(1)? as usize,
            0xda => self.be(2)? as usize,
            0xdb => self.be(4)? as usize,
            _ => return None,
        };
        std::str::from_utf8(self.take(len)?).ok()
    }

    pub fn bin(&mut self) -> Option<&'a [u8]> {
        let len = match self.byte()? {
            0xc4 => self.be(1)?,
            0xc5 => self.be(2)?,
            0xc6 => self.be(4)?,
            _ => return None,
        };
        self.take(usize::try_from(len).ok()?)
    }

    pub fn uint(&mut self) -> Option<u64> {
        match self.byte()? {
            m @ 0x00..=0x7f => Some(u64::from(m)),
            0xcc => self.be(1),
            0xcd => self.be(2),
            0xce => self.be(4),
            0xcf => self.be(8),
            _ => None,
        }
    }

    pub fn bool(&mut self) -> Option<bool> {
        match self.byte()? {
            0xc2 => Some(false),
            0xc3 => Some(true),
            _ => None,
        }
    }

    /// Reads a nil, if that is what comes next.
    pub fn nil(&mut self) -> bool {
        let nil = self.peek() == Some(0xc0);
        if nil {
            self.pos += 1;
        }
        nil
    }

    /// An array of exactly `len` elements.
    pub fn array_of(&mut self, len: usize) -> Option<()> {
        (self.array_len()? == len).then_some(())
    }

    /// An enum's variant as serde writes one with fields: a map of its
    /// name to them. Answers the name.
    pub fn variant(&mut self) -> Option<&'a str> {
        (self.map_len()? == 1).then_some(())?;
        self.str()
    }

    fn name(&mut self) -> Option<NodeName> {
        NodeName::try_new(self.str()?)
    }

    /// A list of versions as `put_versions` writes it.
    pub fn versions(&mut self) -> Option<Vec<Version>> {
        let count = self.array_len()?;
        // Never trust a count for an allocation: each version takes bytes.
        let mut versions = Vec::with_capacity(count.min(self.buf.len() - self.pos));
        for _ in 0..count {
            self.array_of(7)?;
            self.array_of(2)?;
            let dot = Dot { node: self.name()?, counter: self.uint()? };
            self.array_of(1)?;
            let entries = self.array_len()?;
            let mut clock = ClockEntries::with_capacity(entries.min(self.buf.len() - self.pos));
            for _ in 0..entries {
                self.array_of(3)?;
                clock.push(ClockEntry { node: self.name()?, counter: self.uint()?, timestamp: self.uint()? });
            }
            let timestamp = self.uint()?;
            let flags = u32::try_from(self.uint()?).ok()?;
            let expires_at = self.uint()?;
            let deleted = self.bool()?;
            let value = Bytes::copy_from_slice(self.bin()?);
            let clock = VClock::from_entries(clock);
            versions.push(Version { dot, clock, timestamp, flags, expires_at, deleted, value });
        }
        Some(versions)
    }
}

#[cfg(test)]
pub mod tests {
    use super::*;
    use proptest::prelude::*;

    pub fn arb_version() -> impl Strategy<Value = Version> {
        let name = prop::sample::select(vec![
            "127.0.0.1:7001",
            "127.0.0.1:7002",
            "10.0.0.3:11011",
            "a-long-host-name.example.internal:11011",
        ]);
        let big = prop_oneof![0u64..200, 0u64..70_000, any::<u64>()];
        let entry = (name.clone(), big.clone(), big.clone());
        (
            name,
            big.clone(),
            prop::collection::vec(entry, 0..4),
            big.clone(),
            any::<u32>(),
            big,
            any::<bool>(),
            prop_oneof![prop::collection::vec(any::<u8>(), 0..40), prop::collection::vec(any::<u8>(), 250..70_000)],
        )
            .prop_map(|(node, counter, entries, timestamp, flags, expires_at, deleted, value)| {
                let mut clock = VClock::new();
                for (n, c, t) in entries {
                    clock.advance(n, c, t);
                }
                Version {
                    dot: Dot { node: NodeName::new(node), counter },
                    clock,
                    timestamp,
                    flags,
                    expires_at,
                    deleted,
                    value: Bytes::from(value),
                }
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn versions_are_written_and_read_as_rmp_serde_does(versions in prop::collection::vec(arb_version(), 0..4)) {
            let mut out = Vec::new();
            put_versions(&mut out, &versions);
            prop_assert_eq!(&out, &rmp_serde::to_vec(&versions).unwrap());
            let mut reader = Reader::new(&out);
            prop_assert_eq!(reader.versions(), Some(versions));
            prop_assert!(reader.is_done());
        }

        #[test]
        fn scalars_are_written_as_rmp_serde_does(n in prop_oneof![0u64..300, 0u64..70_000, any::<u64>()], len in prop_oneof![0usize..40, 0usize..300, 60_000usize..70_000]) {
            let mut out = Vec::new();
            put_uint(&mut out, n);
            prop_assert_eq!(&out, &rmp_serde::to_vec(&n).unwrap());
            prop_assert_eq!(Reader::new(&out).uint(), Some(n));
            let s = "x".repeat(len);
            out.clear();
            put_str(&mut out, &s);
            prop_assert_eq!(&out, &rmp_serde::to_vec(&s).unwrap());
            prop_assert_eq!(Reader::new(&out).str(), Some(s.as_str()));
            let b = Bytes::from(vec![7u8; len]);
            out.clear();
            put_bin(&mut out, &b);
            prop_assert_eq!(&out, &rmp_serde::to_vec(&b).unwrap());
            out.clear();
            put_array_len(&mut out, len);
            put_map_len(&mut out, len);
            let mut reader = Reader::new(&out);
            prop_assert_eq!((reader.array_len(), reader.map_len()), (Some(len), Some(len)));
        }

        #[test]
        fn a_cut_or_altered_list_is_never_read_as_something_else(versions in prop::collection::vec(arb_version(), 1..3), cut in any::<prop::sample::Index>(), flip in any::<(prop::sample::Index, u8)>()) {
            let mut out = Vec::new();
            put_versions(&mut out, &versions);
            let short = &out[..cut.index(out.len())];
            prop_assert_eq!(Reader::new(short).versions(), None, "a cut list is not whole");
            let (at, byte) = flip;
            let at = at.index(out.len());
            out[at] ^= byte | 1;
            if let Some(read) = Reader::new(&out).versions() {
                // Whatever the hand reader takes, serde takes the same way.
                let serde: Vec<Version> = rmp_serde::from_slice(&out).unwrap();
                prop_assert_eq!(read, serde);
            }
        }
    }
}
