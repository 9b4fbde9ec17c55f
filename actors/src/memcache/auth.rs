//! memcached's client authentication: SASL PLAIN on the binary protocol
//! (memcached's `-S`) and the text protocol's token, sent as a `set`
//! (memcached's `-Y`). Both read `user:password` lines. Until a client
//! proves one, it gets memcached's own refusals and nothing else runs.

use super::binary::{self, op, status};
use arc_swap::ArcSwap;
use bytes::BytesMut;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Users and their passwords, as a password file lists them.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Passwords(HashMap<Vec<u8>, Vec<u8>>);

impl Passwords {
    /// `user:password` lines; blank lines are skipped.
    pub fn parse(text: &str) -> Result<Passwords, String> {
        let mut users = HashMap::new();
        for (number, line) in text.lines().enumerate() {
            let line = line.trim_end_matches('\r');
            if line.is_empty() {
                continue;
            }
            match line.split_once(':') {
                Some((user, password)) if !user.is_empty() => {
                    users.insert(user.as_bytes().to_vec(), password.as_bytes().to_vec());
                }
                _ => return Err(format!("line {} is not user:password", number + 1)),
            }
        }
        if users.is_empty() {
            return Err("lists no user".into());
        }
        Ok(Passwords(users))
    }

    pub fn load(path: &Path) -> Result<Passwords, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        Passwords::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Whether `user` has `password`; the comparison takes as long
    /// whichever byte differs.
    pub fn check(&self, user: &[u8], password: &[u8]) -> bool {
        let Some(known) = self.0.get(user) else { return false };
        known.len() == password.len() && known.iter().zip(password).fold(0u8, |diff, (a, b)| diff | (a ^ b)) == 0
    }
}

/// A password file and what it held when last read.
pub struct PasswordFile {
    path: PathBuf,
    held: ArcSwap<Passwords>,
}

impl PasswordFile {
    pub fn open(path: &Path) -> Result<PasswordFile, String> {
        Ok(PasswordFile { path: path.to_path_buf(), held: ArcSwap::from_pointee(Passwords::load(path)?) })
    }

    /// Reads the file again; on failure the old list stays.
    pub fn reload(&self) -> Result<(), String> {
        self.held.store(Arc::new(Passwords::load(&self.path)?));
        Ok(())
    }

    pub fn check(&self, user: &[u8], password: &[u8]) -> bool {
        self.held.load().check(user, password)
    }
}

/// Which protocols must authenticate, and against what. With neither
/// file, every client is trusted, as memcached without `-S` or `-Y`.
#[derive(Default)]
pub struct ClientAuth {
    pub sasl: Option<PasswordFile>,
    pub ascii: Option<PasswordFile>,
}

impl ClientAuth {
    pub fn required(&self) -> bool {
        self.sasl.is_some() || self.ascii.is_some()
    }

    pub fn reload(&self) -> Result<(), String> {
        self.sasl.iter().chain(&self.ascii).try_for_each(PasswordFile::reload)
    }
}

/// What a step of authentication came to.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// More bytes are needed.
    Wait,
    /// A reply for the client; `proved` says whether it is now trusted.
    Reply { reply: Vec<u8>, proved: Option<bool> },
    /// The connection is closed without a word (memcached's junk rule).
    Close,
}

/// Longest token memcached takes.
const MAX_TOKEN: usize = 16384;
/// A first line this long without a newline is junk.
const MAX_LINE: usize = 2048;

fn text(reply: &str, proved: Option<bool>) -> Outcome {
    Outcome::Reply { reply: format!("{reply}\r\n").into_bytes(), proved }
}

/// The text protocol's token, memcached's way: `set <any> <any> <any>
/// <bytes>\r\n` then `user password\r\n`. `owed` holds the token's
/// length (with its `\r\n`) once the line has been read.
pub fn ascii_step(buf: &mut BytesMut, owed: &mut Option<usize>, passwords: &PasswordFile) -> Outcome {
    if owed.is_none() {
        let Some(end) = buf.iter().position(|b| *b == b'\n') else {
            return if buf.len() > MAX_LINE { Outcome::Close } else { Outcome::Wait };
        };
        let line = buf.split_to(end + 1);
        let words: Vec<&[u8]> = line[..end].split(|b| *b == b' ').filter(|w| !w.is_empty()).collect();
        let size =
            words.get(4).and_then(|w| std::str::from_utf8(w).ok()).and_then(|w| w.trim_end_matches('\r').parse::<u32>().ok());
        let Some(size) = size.filter(|_| line.starts_with(b"set")) else {
            return text("CLIENT_ERROR unauthenticated", None);
        };
        if size as usize > MAX_TOKEN {
            return text("CLIENT_ERROR auth token too long", None);
        }
        *owed = Some(size as usize + 2);
    }
    let want = owed.expect("set above");
    if buf.len() < want {
        return Outcome::Wait;
    }
    *owed = None;
    let token = buf.split_to(want);
    if !token.ends_with(b"\r\n") {
        return text("CLIENT_ERROR bad command line termination", None);
    }
    let token = &token[..want - 2];
    let Some(space) = token.iter().position(|b| *b == b' ') else {
        return text("CLIENT_ERROR bad authentication token format", None);
    };
    if passwords.check(&token[..space], &token[space + 1..]) {
        text("STORED", Some(true))
    } else {
        text("CLIENT_ERROR authentication failure", Some(false))
    }
}

/// SASL's opcodes, answered before a client is trusted.
pub const SASL_LIST_MECHS: u8 = 0x20;
pub const SASL_AUTH: u8 = 0x21;
pub const SASL_STEP: u8 = 0x22;
/// memcached's status for every SASL refusal.
pub const AUTH_ERROR: u16 = 0x0020;

pub fn is_sasl(opcode: u8) -> bool {
    matches!(opcode, SASL_LIST_MECHS | SASL_AUTH | SASL_STEP)
}

fn frame(req: &binary::Request, status: u16, value: &str) -> Vec<u8> {
    let mut out = Vec::new();
    binary::encode(
        &mut out,
        &binary::Response { opcode: req.opcode, opaque: req.opaque, status, value: value.as_bytes(), ..Default::default() },
    );
    out
}

/// memcached's refusal of an unauthenticated binary request.
pub fn refusal(req: &binary::Request) -> Vec<u8> {
    frame(req, AUTH_ERROR, "Auth failure.")
}

/// A SASL request, answered on the spot: PLAIN is the one mechanism.
/// Answers the reply and whether the client proved who it is (None: it
/// did not try).
pub fn sasl_step(req: &binary::Request, passwords: &PasswordFile) -> (Vec<u8>, Option<bool>) {
    let refused = || (refusal(req), Some(false));
    match req.opcode {
        SASL_LIST_MECHS => (frame(req, status::OK, "PLAIN"), None),
        // PLAIN is done in one message, so a step has nothing to go on.
        SASL_STEP => refused(),
        _ if &req.key[..] != b"PLAIN" => refused(),
        _ => {
            // authzid NUL authcid NUL password
            let mut parts = req.value.split(|b| *b == 0);
            let (Some(_), Some(user), Some(password), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
                return refused();
            };
            if passwords.check(user, password) {
                (frame(req, status::OK, "Authenticated"), Some(true))
            } else {
                refused()
            }
        }
    }
}

/// What an unauthenticated binary client gets for anything but SASL and
/// `version`: memcached's refusal, after which the connection closes.
pub fn binary_refusal(req: &binary::Request) -> Option<Vec<u8>> {
    (!is_sasl(req.opcode) && req.opcode != op::VERSION).then(|| refusal(req))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn file(text: &str) -> PasswordFile {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pw");
        std::fs::write(&path, text).unwrap();
        PasswordFile::open(&path).unwrap()
    }

    fn step(input: &[u8], passwords: &PasswordFile) -> (Outcome, BytesMut) {
        let (mut buf, mut owed) = (BytesMut::from(input), None);
        let outcome = ascii_step(&mut buf, &mut owed, passwords);
        (outcome, buf)
    }

    fn reply(outcome: &Outcome) -> String {
        match outcome {
            Outcome::Reply { reply, .. } => String::from_utf8_lossy(reply).into_owned(),
            other => format!("{other:?}"),
        }
    }

    #[test]
    fn password_files_are_user_colon_password_lines() {
        let passwords = Passwords::parse("alice:s3cret:with:colons\n\nbob:\n").unwrap();
        assert!(passwords.check(b"alice", b"s3cret:with:colons"));
        assert!(passwords.check(b"bob", b""));
        assert!(!passwords.check(b"alice", b"s3cret"));
        assert!(!passwords.check(b"carol", b""));
        assert_eq!(Passwords::parse("alice\n").unwrap_err(), "line 1 is not user:password");
        assert_eq!(Passwords::parse(":x\n").unwrap_err(), "line 1 is not user:password");
        assert_eq!(Passwords::parse("\n").unwrap_err(), "lists no user");
    }

    #[test]
    fn the_text_token_is_proved_or_refused_as_memcached_words_it() {
        let pw = file("alice:s3cret\n");
        assert_eq!(reply(&step(b"set x 0 0 12\r\nalice s3cret\r\n", &pw).0), "STORED\r\n");
        assert!(matches!(step(b"set x 0 0 12\r\nalice s3cret\r\n", &pw).0, Outcome::Reply { proved: Some(true), .. }));
        assert_eq!(reply(&step(b"set x 0 0 11\r\nalice wrong\r\n", &pw).0), "CLIENT_ERROR authentication failure\r\n");
        assert_eq!(reply(&step(b"get foo bar\r\n", &pw).0), "CLIENT_ERROR unauthenticated\r\n");
        assert_eq!(reply(&step(b"set x 0 0 99999\r\n", &pw).0), "CLIENT_ERROR auth token too long\r\n");
        assert_eq!(reply(&step(b"set x 0 0 5\r\nalice\r\n", &pw).0), "CLIENT_ERROR bad authentication token format\r\n");
        assert_eq!(reply(&step(b"set x 0 0 3\r\nabcde\r\n", &pw).0), "CLIENT_ERROR bad command line termination\r\n");
        assert_eq!(reply(&step(b"quit\r\n", &pw).0), "CLIENT_ERROR unauthenticated\r\n");
        // A long line with no end is junk: closed.
        assert_eq!(step(&[b'a'; 3000], &pw).0, Outcome::Close);
    }

    #[test]
    fn the_text_token_may_arrive_in_pieces_and_leaves_what_follows() {
        let pw = file("alice:s3cret\n");
        let (mut buf, mut owed) = (BytesMut::from(&b"set x 0 0 12\r\nali"[..]), None);
        assert_eq!(ascii_step(&mut buf, &mut owed, &pw), Outcome::Wait);
        buf.extend_from_slice(b"ce s3cret\r\nget k\r\n");
        assert_eq!(reply(&ascii_step(&mut buf, &mut owed, &pw)), "STORED\r\n");
        assert_eq!(&buf[..], b"get k\r\n");
    }

    fn request(opcode: u8, key: &[u8], value: &[u8]) -> binary::Request {
        binary::Request {
            opcode,
            opaque: 7,
            cas: 0,
            key: Bytes::copy_from_slice(key),
            extras: Bytes::new(),
            value: Bytes::copy_from_slice(value),
        }
    }

    #[test]
    fn sasl_plain_proves_a_user_and_refuses_the_rest() {
        let pw = file("alice:s3cret\n");
        let proved = |(_, proved): (Vec<u8>, Option<bool>)| proved;
        assert_eq!(proved(sasl_step(&request(SASL_AUTH, b"PLAIN", b"\0alice\0s3cret"), &pw)), Some(true));
        assert_eq!(proved(sasl_step(&request(SASL_AUTH, b"PLAIN", b"\0alice\0wrong"), &pw)), Some(false));
        assert_eq!(proved(sasl_step(&request(SASL_AUTH, b"CRAM-MD5", b"x"), &pw)), Some(false));
        assert_eq!(proved(sasl_step(&request(SASL_STEP, b"PLAIN", b"\0alice\0s3cret"), &pw)), Some(false));
        assert_eq!(proved(sasl_step(&request(SASL_LIST_MECHS, b"", b""), &pw)), None);
        let refusal = binary_refusal(&request(op::GET, b"k", b"")).unwrap();
        assert_eq!(u16::from_be_bytes([refusal[6], refusal[7]]), AUTH_ERROR);
        assert_eq!(&refusal[24..], b"Auth failure.");
        assert!(binary_refusal(&request(op::VERSION, b"", b"")).is_none());
    }
}
