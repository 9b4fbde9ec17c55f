//! The one error type of a node. It becomes a memcache reply in exactly
//! one place (`memcache::reply`: `error_line`, `binary_status`).

use serde::{Deserialize, Serialize};
use std::fmt;

/// Crosses the internal API whole (`Response::Failed`), so a node that
/// forwarded a request knows from its kind whether the request may have
/// run there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Error {
    /// The client sent something the node will not take.
    Client(String),
    /// A value larger than `max_value_size`.
    TooLarge,
    /// The memory engine's budget (`max_memory_bytes`) is spent.
    OutOfMemory,
    /// Fewer replicas answered in time than the quorum needs.
    Quorum { op: String, needed: usize, got: usize, reason: String },
    /// The node is saturated and sheds this request.
    Busy(String),
    /// The storage engine failed.
    Store(String),
    /// The store takes no writes for now (a full disk, or an engine that
    /// failed a write); reads go on, and writes resume by themselves.
    ReadOnly(String),
    /// A peer or one of this node's actors could not be reached: the
    /// request was not handed over, so it did not run.
    Unavailable(String),
    /// The request was handed over but no answer came in time: it may or
    /// may not have run.
    Indeterminate(String),
    /// The request reached its node after its deadline, so it never ran:
    /// whoever sent it has given up on it and may have sent it elsewhere.
    Late(String),
    /// A peer spoke something this node does not understand.
    Protocol(String),
    /// The node will not serve this caller or this request: a wrong
    /// secret, a protocol too far from its own, a setting that forbids it.
    Refused(String),
    /// The node does not know this command (an admin tool newer than it).
    Unsupported(String),
    /// Another process holds the data directory.
    InUse(String),
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// Whether the request may have had an effect where this error arose.
    /// A write that may have run somewhere must not be run again elsewhere
    /// unless running it twice does no harm.
    pub fn may_have_run(&self) -> bool {
        match self {
            Error::Quorum { .. } | Error::Indeterminate(_) | Error::Store(_) | Error::Protocol(_) => true,
            Error::Client(_)
            | Error::TooLarge
            | Error::OutOfMemory
            | Error::Busy(_)
            | Error::ReadOnly(_)
            | Error::Unavailable(_)
            | Error::Late(_)
            | Error::Refused(_)
            | Error::Unsupported(_)
            | Error::InUse(_) => false,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Client(m) => write!(f, "{m}"),
            Error::TooLarge => write!(f, "object too large for cache"),
            Error::OutOfMemory => write!(f, "out of memory storing object"),
            Error::Quorum { op, needed, got, reason } => {
                write!(f, "{op} quorum not met: {got} of {needed} replicas answered ({reason})")?;
                // As in Dynamo: the replicas that stored it keep it, and it
                // spreads from them.
                match op.as_str() {
                    "write" => write!(f, "; the write may still be applied"),
                    _ => Ok(()),
                }
            }
            Error::Busy(m) => write!(f, "busy: {m}"),
            Error::Store(m) => write!(f, "store error: {m}"),
            Error::ReadOnly(m) => write!(f, "store read-only: {m}; reads go on, writes resume once the disk takes them"),
            Error::Unavailable(m) => write!(f, "unavailable: {m}"),
            Error::Indeterminate(m) => write!(f, "no answer in time, so it may or may not have been applied: {m}"),
            Error::Late(m) => write!(f, "not run: {m}"),
            Error::Protocol(m) => write!(f, "protocol error: {m}"),
            Error::Refused(m) => write!(f, "refused: {m}"),
            Error::Unsupported(m) => write!(f, "{m}"),
            Error::InUse(m) => write!(f, "in use: {m}"),
        }
    }
}

impl std::error::Error for Error {}

impl From<fjall::Error> for Error {
    fn from(e: fjall::Error) -> Self {
        match e {
            fjall::Error::Locked => Error::InUse("another process holds the data directory".into()),
            e => Error::Store(e.to_string()),
        }
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::Unavailable(e.to_string())
    }
}

impl From<actix::MailboxError> for Error {
    fn from(e: actix::MailboxError) -> Self {
        Error::Unavailable(format!("actor mailbox: {e}"))
    }
}

impl From<rmp_serde::decode::Error> for Error {
    fn from(e: rmp_serde::decode::Error) -> Self {
        Error::Protocol(e.to_string())
    }
}

impl From<rmp_serde::encode::Error> for Error {
    fn from(e: rmp_serde::encode::Error) -> Self {
        Error::Protocol(e.to_string())
    }
}
