//! The memcached text protocol, parsed. Pure: bytes in, a command (or the
//! error line memcached would send) out. Never panics on any input, and
//! never asks to buffer a value larger than the limit.

use bytes::Bytes;

pub const MAX_KEY_LENGTH: usize = 250;

/// How long a line may grow with no newline: retrieval lines carry many
/// keys, every other line is short.
pub const MAX_LINE: usize = 2048;
pub const MAX_GET_LINE: usize = 64 * 1024;

/// Keys in one retrieval command: each becomes a quorum request.
pub const MAX_KEYS_PER_GET: usize = 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreKind {
    Set,
    Add,
    Replace,
    Append,
    Prepend,
    Cas,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `get`/`gets` (with_cas) and `gat`/`gats` (touch = Some(exptime)).
    Get {
        /// Mostly one: held inline.
        keys: smallvec::SmallVec<[Bytes; 1]>,
        with_cas: bool,
        touch: Option<i64>,
    },
    Store {
        kind: StoreKind,
        key: Bytes,
        flags: u32,
        exptime: i64,
        value: Bytes,
        cas: u64,
        noreply: bool,
    },
    Delete {
        key: Bytes,
        noreply: bool,
    },
    Arith {
        key: Bytes,
        delta: u64,
        incr: bool,
        noreply: bool,
    },
    Touch {
        key: Bytes,
        exptime: i64,
        noreply: bool,
    },
    FlushAll {
        delay: i64,
        noreply: bool,
    },
    Stats {
        args: Vec<String>,
    },
    /// A meta command (`mg`, `ms`, `md`, `ma`, `mn`, `me`).
    Meta(super::meta::MetaRequest),
    Version,
    Verbosity {
        noreply: bool,
    },
    Quit,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// Not a whole command yet.
    Incomplete,
    /// A command and how many bytes of the buffer it took.
    Command(Command, usize),
    /// Bad input: the error line to send (none under noreply), the bytes
    /// to drop, and whether the connection must close.
    Invalid { reply: Option<&'static str>, consumed: usize, close: bool },
    /// A value over the size limit: reply, drop the line, then discard the
    /// next `skip` bytes as they arrive without buffering them.
    Swallow { reply: Option<&'static str>, consumed: usize, skip: usize },
}

pub const ERROR: &str = "ERROR";
pub const BAD_FORMAT: &str = "CLIENT_ERROR bad command line format";
pub const BAD_CHUNK: &str = "CLIENT_ERROR bad data chunk";
pub const TOO_LARGE: &str = "SERVER_ERROR object too large for cache";
pub const LINE_TOO_LONG: &str = "CLIENT_ERROR line too long";
pub const BAD_DELTA: &str = "CLIENT_ERROR invalid numeric delta argument";
pub const BAD_EXPTIME: &str = "CLIENT_ERROR invalid exptime argument";
pub const TOO_MANY_KEYS: &str = "CLIENT_ERROR too many keys in one command (at most 1024)";
pub const BAD_DELETE: &str = "CLIENT_ERROR bad command line format.  Usage: delete <key> [noreply]";

fn invalid(reply: &'static str, consumed: usize) -> Parsed {
    Parsed::Invalid { reply: Some(reply), consumed, close: false }
}

/// Whether a key is one memcached takes: 1..=250 bytes, no control
/// characters or spaces.
pub fn valid_key(key: &[u8]) -> bool {
    !key.is_empty() && key.len() <= MAX_KEY_LENGTH && key.iter().all(|&b| b > b' ' && b != 0x7f)
}

fn num<T: std::str::FromStr>(token: &[u8]) -> Option<T> {
    // Rust's parsers accept a leading '+'; memcached's strtoul does too,
    // but nothing else (no spaces, no trailing junk).
    std::str::from_utf8(token).ok()?.parse().ok()
}

/// Parses one command from the front of `buf`.
pub fn parse(buf: &[u8], max_value_size: usize) -> Parsed {
    let Some(newline) = buf.iter().position(|&b| b == b'\n') else {
        let limit = if is_retrieval(buf) { MAX_GET_LINE } else { MAX_LINE };
        return if buf.len() > limit {
            Parsed::Invalid { reply: Some(LINE_TOO_LONG), consumed: buf.len(), close: true }
        } else {
            Parsed::Incomplete
        };
    };
    let line_len = newline + 1;
    let mut line = &buf[..newline];
    if line.last() == Some(&b'\r') {
        line = &line[..line.len() - 1];
    }
    // Inline: a command line has a few words (a multi-get's many keys spill).
    let tokens: smallvec::SmallVec<[&[u8]; 8]> = line.split(|&b| b == b' ').filter(|t| !t.is_empty()).collect();
    let Some((&name, args)) = tokens.split_first() else {
        return invalid(ERROR, line_len);
    };
    let noreply = args.last() == Some(&&b"noreply"[..]);
    let key = |i: usize| args.get(i).filter(|k| valid_key(k)).map(|k| owned_key(k));

    let command = match name {
        b"get" | b"gets" | b"gat" | b"gats" => match retrieval(name, args) {
            Ok(command) => command,
            Err(reply) => return invalid(reply, line_len),
        },
        b"set" | b"add" | b"replace" | b"append" | b"prepend" | b"cas" => {
            return storage(buf, name, args, line_len, max_value_size);
        }
        b"delete" => match deletion(args, noreply) {
            Ok(command) => command,
            Err(reply) => return invalid(reply, line_len),
        },
        b"incr" | b"decr" => {
            if args.len() != 2 && !(args.len() == 3 && noreply) {
                return invalid(ERROR, line_len);
            }
            let Some(key) = key(0) else { return invalid(BAD_FORMAT, line_len) };
            match num::<u64>(args[1]) {
                Some(delta) => Command::Arith { key, delta, incr: name == b"incr", noreply },
                None => return invalid(BAD_DELTA, line_len),
            }
        }
        b"touch" => {
            if args.len() != 2 && !(args.len() == 3 && noreply) {
                return invalid(ERROR, line_len);
            }
            let Some(key) = key(0) else { return invalid(BAD_FORMAT, line_len) };
            match num::<i64>(args[1]) {
                Some(exptime) => Command::Touch { key, exptime, noreply },
                None => return invalid(BAD_EXPTIME, line_len),
            }
        }
        b"flush_all" => {
            let rest = &args[..args.len() - usize::from(noreply)];
            match rest {
                [] => Command::FlushAll { delay: 0, noreply },
                [delay] => match num::<i64>(delay) {
                    Some(delay) => Command::FlushAll { delay, noreply },
                    None => return invalid(BAD_FORMAT, line_len),
                },
                _ => return invalid(ERROR, line_len),
            }
        }
        b"stats" => Command::Stats { args: args.iter().map(|a| String::from_utf8_lossy(a).into_owned()).collect() },
        // memcached 1.6 ignores whatever follows `version`.
        b"mg" | b"ms" | b"md" | b"ma" | b"mn" | b"me" => return super::meta::parse(buf, &tokens, line_len, max_value_size),
        b"version" => Command::Version,
        b"verbosity" if !args.is_empty() && args.len() <= 2 => Command::Verbosity { noreply },
        b"quit" => Command::Quit,
        _ => return invalid(ERROR, line_len),
    };
    Parsed::Command(command, line_len)
}

/// `delete <key> [0] [noreply]`: memcached still takes a legacy time of 0.
fn deletion(args: &[&[u8]], noreply: bool) -> Result<Command, &'static str> {
    if args.is_empty() || args.len() > 3 {
        return Err(ERROR);
    }
    let extra = args.len() - 1 - usize::from(noreply);
    if extra > 1 || (extra == 1 && args[1] != b"0") {
        return Err(BAD_DELETE);
    }
    match valid_key(args[0]) {
        true => Ok(Command::Delete { key: owned_key(args[0]), noreply }),
        false => Err(BAD_FORMAT),
    }
}

/// `get`, `gets`, `gat` and `gats`: the command, or the error line.
fn retrieval(name: &[u8], args: &[&[u8]]) -> Result<Command, &'static str> {
    let with_cas = name == b"gets" || name == b"gats";
    let (touch, keys) = if name.starts_with(b"gat") {
        let Some(exptime) = args.first() else { return Err(ERROR) };
        (Some(num::<i64>(exptime).ok_or(BAD_EXPTIME)?), &args[1..])
    } else {
        (None, args)
    };
    if keys.is_empty() {
        return Err(ERROR);
    }
    if keys.len() > MAX_KEYS_PER_GET {
        return Err(TOO_MANY_KEYS);
    }
    if !keys.iter().all(|k| valid_key(k)) {
        return Err(BAD_FORMAT);
    }
    Ok(Command::Get { keys: keys.iter().map(|k| owned_key(k)).collect(), with_cas, touch })
}

/// `set`, `add`, `replace`, `append`, `prepend` and `cas`, with their data
/// block.
fn storage(buf: &[u8], name: &[u8], args: &[&[u8]], line_len: usize, max_value_size: usize) -> Parsed {
    let noreply = args.last() == Some(&&b"noreply"[..]);
    let bad = Parsed::Invalid { reply: if noreply { None } else { Some(BAD_FORMAT) }, consumed: line_len, close: false };
    let kind = match name {
        b"set" => StoreKind::Set,
        b"add" => StoreKind::Add,
        b"replace" => StoreKind::Replace,
        b"append" => StoreKind::Append,
        b"prepend" => StoreKind::Prepend,
        _ => StoreKind::Cas,
    };
    let base = if kind == StoreKind::Cas { 5 } else { 4 };
    if args.len() != base && !(args.len() == base + 1 && noreply) {
        return invalid(ERROR, line_len);
    }
    let Some(key) = args.first().filter(|k| valid_key(k)).map(|k| owned_key(k)) else { return bad };
    let (Some(flags), Some(exptime), Some(bytes)) = (num::<u32>(args[1]), num::<i64>(args[2]), num::<i64>(args[3])) else {
        return bad;
    };
    let cas = match kind {
        StoreKind::Cas => match num::<u64>(args[4]) {
            Some(c) => c,
            None => return bad,
        },
        _ => 0,
    };
    if bytes < 0 || bytes > i32::MAX as i64 - 2 {
        return bad;
    }
    match data_block(buf, line_len, bytes as usize, max_value_size, noreply) {
        Ok((value, end)) => Parsed::Command(Command::Store { kind, key, flags, exptime, value, cas, noreply }, end),
        Err(parsed) => parsed,
    }
}

/// A storage command's data block of `bytes` after its `line_len`-byte
/// line: the value and where the command ends, or what to do instead (wait
/// for more, swallow an oversized value, refuse a bad chunk).
pub fn data_block(
    buf: &[u8],
    line_len: usize,
    bytes: usize,
    max_value_size: usize,
    noreply: bool,
) -> std::result::Result<(Bytes, usize), Parsed> {
    let quiet = |reply: &'static str| if noreply { None } else { Some(reply) };
    if bytes > max_value_size {
        return Err(Parsed::Swallow { reply: quiet(TOO_LARGE), consumed: line_len, skip: bytes.saturating_add(2) });
    }
    let end = line_len + bytes + 2;
    if buf.len() < end {
        return Err(Parsed::Incomplete);
    }
    if &buf[end - 2..end] != b"\r\n" {
        return Err(Parsed::Invalid { reply: quiet(BAD_CHUNK), consumed: end, close: false });
    }
    Ok((Bytes::copy_from_slice(&buf[line_len..end - 2]), end))
}

/// A key as a request carries it: one allocation holding the key inline,
/// which every clone along the request's path shares. (A copied `Bytes`
/// allocates again when first cloned, to share its buffer.)
pub fn owned_key(key: &[u8]) -> Bytes {
    Bytes::from_owner(KeyBuffer::from_slice(key))
}

/// What a request's key lives in: room for a short one (memcache keys
/// mostly are) in the allocation itself. (Not the store's `InlineKey`,
/// sized for a table slot.)
type KeyBuffer = smallvec::SmallVec<[u8; 32]>;

fn is_retrieval(buf: &[u8]) -> bool {
    buf.starts_with(b"get") || buf.starts_with(b"gat")
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: usize = 1024;

    fn cmd(input: &str) -> Command {
        match parse(input.as_bytes(), MAX) {
            Parsed::Command(c, used) => {
                assert_eq!(used, input.len(), "{input:?} should be consumed whole");
                c
            }
            other => panic!("{input:?} gave {other:?}"),
        }
    }

    fn reply(input: &[u8]) -> Option<&'static str> {
        match parse(input, MAX) {
            Parsed::Invalid { reply, .. } | Parsed::Swallow { reply, .. } => reply,
            other => panic!("{input:?} gave {other:?}"),
        }
    }

    #[test]
    fn retrieval_commands() {
        assert_eq!(
            cmd("get a b\r\n"),
            Command::Get { keys: smallvec::smallvec![Bytes::from("a"), Bytes::from("b")], with_cas: false, touch: None }
        );
        assert_eq!(cmd("gets a\n"), Command::Get { keys: smallvec::smallvec![Bytes::from("a")], with_cas: true, touch: None });
        assert_eq!(
            cmd("gats 10 a\r\n"),
            Command::Get { keys: smallvec::smallvec![Bytes::from("a")], with_cas: true, touch: Some(10) }
        );
        assert_eq!(reply(b"get\r\n"), Some(ERROR));
        assert_eq!(reply(b"gat x a\r\n"), Some(BAD_EXPTIME));
        let long = format!("get {}\r\n", "k".repeat(251));
        assert_eq!(reply(long.as_bytes()), Some(BAD_FORMAT));
        assert_eq!(reply(b"get a\x01b\r\n"), Some(BAD_FORMAT));
    }

    #[test]
    fn keys_of_any_length_are_held_as_sent() {
        for len in [1, 31, 32, 33, MAX_KEY_LENGTH] {
            let key = vec![b'k'; len];
            let line = [&b"get "[..], &key, b"\r\n"].concat();
            let Parsed::Command(Command::Get { keys, .. }, _) = parse(&line, MAX) else { panic!("{len}") };
            assert_eq!(keys.as_slice(), [Bytes::from(key.clone())], "{len}");
            assert_eq!(keys[0].clone().as_ptr(), keys[0].as_ptr(), "a clone shares the key");
        }
    }

    #[test]
    fn storage_commands() {
        assert_eq!(
            cmd("set k 5 0 3\r\nabc\r\n"),
            Command::Store {
                kind: StoreKind::Set,
                key: Bytes::from("k"),
                flags: 5,
                exptime: 0,
                value: Bytes::from("abc"),
                cas: 0,
                noreply: false
            }
        );
        assert_eq!(
            cmd("cas k 0 -1 0 77 noreply\r\n\r\n"),
            Command::Store {
                kind: StoreKind::Cas,
                key: Bytes::from("k"),
                flags: 0,
                exptime: -1,
                value: Bytes::new(),
                cas: 77,
                noreply: true
            }
        );
        assert_eq!(parse(b"set k 0 0 3\r\nab", MAX), Parsed::Incomplete);
        assert_eq!(parse(b"set k 0 0 3\r\nabcXY", MAX), Parsed::Invalid { reply: Some(BAD_CHUNK), consumed: 18, close: false });
        assert_eq!(reply(b"set k 0 0 -1\r\n"), Some(BAD_FORMAT));
        assert_eq!(reply(b"set k 0 0 99999999999999999999\r\n"), Some(BAD_FORMAT));
        assert_eq!(reply(b"set k -1 0 1\r\n"), Some(BAD_FORMAT));
        assert_eq!(reply(b"set k 0 0\r\n"), Some(ERROR));
        assert_eq!(reply(b"cas k 0 0 1\r\n"), Some(ERROR));
        assert_eq!(reply(b"cas k 0 0 1 x\r\n"), Some(BAD_FORMAT));
    }

    #[test]
    fn a_value_over_the_limit_is_swallowed_not_buffered() {
        assert_eq!(parse(b"set k 0 0 5000\r\n", MAX), Parsed::Swallow { reply: Some(TOO_LARGE), consumed: 16, skip: 5002 });
        assert_eq!(parse(b"set k 0 0 5000 noreply\r\n", MAX), Parsed::Swallow { reply: None, consumed: 24, skip: 5002 });
    }

    #[test]
    fn other_commands() {
        assert_eq!(cmd("delete k\r\n"), Command::Delete { key: Bytes::from("k"), noreply: false });
        assert_eq!(cmd("delete k 0 noreply\r\n"), Command::Delete { key: Bytes::from("k"), noreply: true });
        assert_eq!(reply(b"delete k 5\r\n"), Some(BAD_DELETE));
        assert_eq!(reply(b"delete k 0 0\r\n"), Some(BAD_DELETE));
        assert_eq!(reply(b"delete\r\n"), Some(ERROR));
        assert_eq!(cmd("incr k 5\r\n"), Command::Arith { key: Bytes::from("k"), delta: 5, incr: true, noreply: false });
        assert_eq!(reply(b"decr k -5\r\n"), Some(BAD_DELTA));
        assert_eq!(cmd("touch k 10 noreply\r\n"), Command::Touch { key: Bytes::from("k"), exptime: 10, noreply: true });
        assert_eq!(cmd("flush_all\r\n"), Command::FlushAll { delay: 0, noreply: false });
        assert_eq!(cmd("flush_all 10 noreply\r\n"), Command::FlushAll { delay: 10, noreply: true });
        assert_eq!(cmd("stats\r\n"), Command::Stats { args: vec![] });
        assert_eq!(cmd("version\r\n"), Command::Version);
        assert_eq!(cmd("verbosity 1\r\n"), Command::Verbosity { noreply: false });
        assert_eq!(cmd("quit\r\n"), Command::Quit);
        assert_eq!(reply(b"bogus\r\n"), Some(ERROR));
        assert_eq!(reply(b"\r\n"), Some(ERROR));
    }

    #[test]
    fn long_lines_are_refused_and_close() {
        let junk = vec![b'x'; MAX_LINE + 1];
        assert_eq!(parse(&junk, MAX), Parsed::Invalid { reply: Some(LINE_TOO_LONG), consumed: junk.len(), close: true });
        assert_eq!(parse(&junk[..MAX_LINE], MAX), Parsed::Incomplete);
        let mut get = b"get ".to_vec();
        get.extend(vec![b'k'; MAX_LINE * 2]);
        assert_eq!(parse(&get, MAX), Parsed::Incomplete);
    }

    #[test]
    fn a_get_of_too_many_keys_is_refused() {
        let keys: Vec<String> = (0..=MAX_KEYS_PER_GET).map(|i| format!("k{i}")).collect();
        assert_eq!(reply(format!("get {}\r\n", keys.join(" ")).as_bytes()), Some(TOO_MANY_KEYS));
        let ok = format!("get {}\r\n", keys[..MAX_KEYS_PER_GET].join(" "));
        assert!(matches!(parse(ok.as_bytes(), MAX), Parsed::Command(..)));
    }

    proptest::proptest! {
        /// Any bytes at all: a command, an error, or a wait for more; never
        /// a panic, never more consumed than given.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600)) {
            match parse(&bytes, MAX) {
                Parsed::Command(_, used) | Parsed::Invalid { consumed: used, .. } | Parsed::Swallow { consumed: used, .. } => {
                    proptest::prop_assert!(used <= bytes.len() && used > 0);
                }
                Parsed::Incomplete => {}
            }
        }

        /// Well-formed storage lines with arbitrary numbers in their fields.
        #[test]
        fn arbitrary_numbers_never_panic(flags in ".{0,24}", exptime in ".{0,24}", len in ".{0,24}") {
            let line = format!("set k {flags} {exptime} {len}\r\nabc\r\n");
            let _ = parse(line.as_bytes(), MAX);
        }
    }

    #[test]
    fn no_input_makes_it_panic() {
        // A cheap deterministic fuzz: every prefix and byte flip of valid
        // commands must parse to something without panicking.
        let samples: &[&[u8]] =
            &[b"set k 1 2 3 noreply\r\nabc\r\n", b"gats 5 a b c\r\n", b"cas k 0 0 1 9\r\nx\r\n", b"delete k 0\n"];
        for s in samples {
            for i in 0..=s.len() {
                let _ = parse(&s[..i], MAX);
                for flip in [0u8, b' ', b'\n', b'\r', 0xff, b'-', b'9'] {
                    let mut m = s.to_vec();
                    if i < m.len() {
                        m[i] = flip;
                    }
                    let _ = parse(&m, MAX);
                }
            }
        }
    }
}
