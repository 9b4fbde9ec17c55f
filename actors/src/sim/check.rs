//! What clients were told, and the checks of what the cluster holds
//! against it once every fault has healed and the cluster has been quiet.

use super::{live_values, Cluster, Outcome};
use crate::store::WriteOutcome;
use crate::version::Version;
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::time::Duration;

/// One client request.
#[derive(Debug, Clone)]
pub enum Op {
    Set {
        key: String,
        value: String,
    },
    Delete {
        key: String,
    },
    /// An increment by one, and the value it answered.
    Incr {
        key: String,
        result: Option<String>,
    },
    Get {
        key: String,
        values: Option<Vec<String>>,
    },
}

impl Op {
    fn key(&self) -> &str {
        match self {
            Op::Set { key, .. } | Op::Delete { key } | Op::Incr { key, .. } | Op::Get { key, .. } => key,
        }
    }
}

/// A request as its client saw it: when it was sent and answered
/// (simulated time since the history began), and whether it succeeded.
#[derive(Debug, Clone)]
pub struct Record {
    pub client: usize,
    pub op: Op,
    pub invoked: Duration,
    pub completed: Duration,
    /// None: succeeded; else the error the client got (it may have run).
    pub error: Option<String>,
    /// The version a write stored, as the client was told.
    pub stored: Option<Version>,
    /// The versions a read answered.
    pub read: Vec<Version>,
}

impl Record {
    /// Whether this request was answered before `other` was sent: only
    /// then is it older, whatever the clocks say.
    pub fn precedes(&self, other: &Record) -> bool {
        self.completed < other.invoked
    }
}

/// Every client request of a run, in the order they were answered.
pub struct History {
    started: tokio::time::Instant,
    records: RefCell<Vec<Record>>,
}

impl History {
    /// A history whose times count from `started` (the cluster's start,
    /// as its fault events do).
    pub fn new(started: tokio::time::Instant) -> Self {
        History { started, records: RefCell::default() }
    }

    pub fn now(&self) -> Duration {
        self.started.elapsed()
    }

    /// A read's record, with the versions it answered.
    pub fn record_read(&self, client: usize, key: String, invoked: Duration, result: &crate::Result<Vec<Version>>) {
        let values = result.as_ref().map(|v| live_values(v)).ok();
        let read = result.as_ref().cloned().unwrap_or_default();
        self.push(client, Op::Get { key, values }, invoked, result, None, read);
    }

    /// A write's record, with the version it stored.
    pub fn record_write(&self, client: usize, op: Op, invoked: Duration, result: &crate::Result<WriteOutcome>) {
        let stored = match result {
            Ok(WriteOutcome::Stored { new, .. }) => Some(new.clone()),
            _ => None,
        };
        self.push(client, op, invoked, result, stored, Vec::new());
    }

    fn push<T>(
        &self,
        client: usize,
        op: Op,
        invoked: Duration,
        result: &crate::Result<T>,
        stored: Option<Version>,
        read: Vec<Version>,
    ) {
        let error = result.as_ref().err().map(|e| e.to_string());
        self.records.borrow_mut().push(Record { client, op, invoked, completed: self.now(), error, stored, read });
    }

    pub fn records(&self) -> Vec<Record> {
        self.records.borrow().clone()
    }

    /// Every key a request named.
    pub fn keys(&self) -> Vec<String> {
        let keys: BTreeSet<String> = self.records.borrow().iter().map(|r| r.op.key().to_string()).collect();
        keys.into_iter().collect()
    }
}

/// Runs every check; the outcome carries the trace, its digest, and any
/// violations.
pub fn check(cluster: &Cluster, history: &History) -> Outcome {
    let records = history.records();
    let mut trace: Vec<String> = records.iter().map(trace_line).collect();
    trace.extend(cluster.events().into_iter().map(|e| format!("fault {e}")));
    let mut violations = Vec::new();
    let keys: BTreeSet<&str> = records.iter().map(|r| r.op.key()).collect();
    for key in &keys {
        let held = cluster.held(key);
        for (node, versions) in held.iter().enumerate() {
            let dots: Vec<String> = versions.iter().map(|v| format!("{:?}={:?}", v.dot, v.value)).collect();
            trace.push(format!("held {key} n{node} {}", dots.join(" ")));
        }
        let of_key: Vec<&Record> = records.iter().filter(|r| r.op.key() == *key).collect();
        let siblings = crate::version::reconcile(&held).siblings;
        match key.starts_with("counter") {
            true => check_counter(key, &of_key, &shown_values(&siblings), &mut violations),
            false => check_register(key, &of_key, &siblings, &mut violations),
        }
        check_placement(cluster, key, &held, &mut violations);
    }
    for ((from, to), bytes) in cluster.world.delivered() {
        trace.push(format!("link {from}>{to} {bytes}"));
    }
    let acked = records.iter().filter(|r| r.error.is_none() && !matches!(r.op, Op::Get { .. })).count();
    Outcome { digest: digest(&trace), trace, violations, ops: records.len(), acked, ..Outcome::default() }
}

fn trace_line(r: &Record) -> String {
    let mut line = format!("{:?}..{:?} c{} {:?}", r.invoked, r.completed, r.client, r.op);
    if let Some(v) = &r.stored {
        let _ = write!(line, " stamped {}:{} at {}", v.dot.node, v.dot.counter, v.timestamp);
    }
    if let Some(e) = &r.error {
        let _ = write!(line, " ! {e}");
    }
    line
}

/// The values a read of these siblings answers (tombstones left out).
pub fn shown_values(siblings: &[Version]) -> Vec<String> {
    live_values(&crate::store::live_versions(siblings, crate::store::now_secs()))
}

/// A key written with set and delete, against the versions its replicas
/// hold together at the end (`siblings`, tombstones included):
/// - nothing is read that was never written;
/// - no acknowledged write is lost: its value is still read, or a later
///   write superseded it: a version whose clock covers it, stamped by a
///   request that was not answered before this write was sent (an older
///   write claiming to supersede a newer one is a lost overwrite);
/// - no acknowledged delete comes back: nothing is read that the delete
///   had seen (its tombstone's clock covers it). A value the delete did
///   not see is a concurrent sibling, as Dynamo keeps it: a stand-in that
///   coordinated the delete during a partition cannot have seen it.
pub fn check_register(key: &str, records: &[&Record], siblings: &[Version], violations: &mut Vec<String>) {
    let shown = shown_values(siblings);
    // What may have been written: not a write answered as not stored (an
    // add over a value, a cas over a changed one).
    let may_have_run = |r: &&&Record| r.error.is_some() || r.stored.is_some();
    let written: BTreeSet<&str> = records
        .iter()
        .filter(may_have_run)
        .filter_map(|r| if let Op::Set { value, .. } = &r.op { Some(value.as_str()) } else { None })
        .collect();
    for r in records {
        if let Op::Get { values: Some(values), .. } = &r.op {
            for v in values.iter().filter(|v| !written.contains(v.as_str())) {
                violations.push(format!("never written: a read of {key} answered {v:?}"));
            }
        }
    }
    for v in shown.iter().filter(|v| !written.contains(v.as_str())) {
        violations.push(format!("never written: {key} holds {v:?}"));
    }
    let known = Known::new(records, siblings);
    for w in records.iter().filter(|r| r.error.is_none()) {
        let (Op::Set { value, .. }, Some(stored)) = (&w.op, &w.stored) else { continue };
        if shown.contains(value) {
            continue;
        }
        // A later write superseded it, and is itself held, or superseded
        // in turn.
        let later = |v: &Version| written_after(records, v, w);
        let superseded = known.versions.iter().any(|v| v.supersedes(stored) && later(v) && known.accounted(v));
        if !superseded {
            let now = if shown.is_empty() { "nothing".to_string() } else { format!("{shown:?}") };
            violations.push(format!(
                "lost write: {key}={value:?} acknowledged at {:?} to client {}, but {key} reads {now}",
                w.completed, w.client
            ));
        }
    }
    let shown_versions = crate::store::live_versions(siblings, crate::store::now_secs());
    for d in records.iter().filter(|r| r.error.is_none() && matches!(r.op, Op::Delete { .. })) {
        let Some(tombstone) = &d.stored else { continue };
        for v in shown_versions.iter().filter(|v| tombstone.supersedes(v)) {
            violations.push(format!(
                "delete undone: {key} reads {:?}, which the delete acknowledged at {:?} to client {} had seen",
                String::from_utf8_lossy(&v.value),
                d.completed,
                d.client
            ));
        }
    }
}

/// Every version of a key the run saw (stored by a write, answered by a
/// read, or held at the end), and which of them the end accounts for: held
/// at the end, or superseded by one it accounts for.
struct Known {
    versions: Vec<Version>,
    accounted: BTreeSet<crate::version::Dot>,
}

impl Known {
    fn new(records: &[&Record], siblings: &[Version]) -> Known {
        let mut versions: Vec<Version> = siblings.to_vec();
        for r in records {
            for v in r.stored.iter().chain(&r.read) {
                if !versions.iter().any(|x| x.dot == v.dot) {
                    versions.push(v.clone());
                }
            }
        }
        let mut accounted: BTreeSet<_> = siblings.iter().map(|v| v.dot.clone()).collect();
        // To a fixpoint: each pass accounts for what an accounted version
        // supersedes (at most one pass a version).
        for _ in 0..versions.len() {
            let more: Vec<_> = versions
                .iter()
                .filter(|v| !accounted.contains(&v.dot))
                .filter(|v| versions.iter().any(|u| accounted.contains(&u.dot) && u.supersedes(v)))
                .map(|v| v.dot.clone())
                .collect();
            if more.is_empty() {
                break;
            }
            accounted.extend(more);
        }
        Known { versions, accounted }
    }

    fn accounted(&self, v: &Version) -> bool {
        self.accounted.contains(&v.dot)
    }
}

/// Whether version `v` was written by a request not answered before `w`
/// was sent: the request that stored it, told by its dot, or by its value
/// (a copy of the request run again, or one whose client never learned
/// the dot). A tombstone of unknown origin is later if any delete whose
/// outcome is unknown was.
fn written_after(records: &[&Record], v: &Version, w: &Record) -> bool {
    if let Some(by) = records.iter().find(|r| r.stored.as_ref().is_some_and(|s| s.dot == v.dot)) {
        return !by.precedes(w);
    }
    let value = String::from_utf8_lossy(&v.value);
    // Every set writes a value of its own, whichever copy of it ran.
    if let Some(by) = records.iter().find(|r| !v.deleted && matches!(&r.op, Op::Set { value: x, .. } if *x == value)) {
        return !by.precedes(w);
    }
    let unknown_delete = |r: &&&Record| r.stored.is_none() && matches!(r.op, Op::Delete { .. });
    v.deleted && records.iter().filter(unknown_delete).any(|r| !r.precedes(w))
}

/// A counter moves by no more than the increments that may have run.
pub fn check_counter(key: &str, records: &[&Record], finals: &[String], violations: &mut Vec<String>) {
    let tried = records.iter().filter(|r| matches!(r.op, Op::Incr { .. })).count() as u64;
    for value in finals {
        match value.trim().parse::<u64>() {
            Ok(n) if n <= tried => {}
            Ok(n) => violations.push(format!("counter {key} reads {n} after only {tried} increments were sent")),
            Err(_) => violations.push(format!("never written: counter {key} holds {value:?}")),
        }
    }
}

/// Once quiet, a key's versions sit on its N home replicas alone, the
/// same on each.
pub fn check_placement(cluster: &Cluster, key: &str, held: &[Vec<crate::version::Version>], violations: &mut Vec<String>) {
    let homes = cluster.homes(key);
    let dots = |versions: &Vec<crate::version::Version>| versions.iter().map(|v| v.dot.clone()).collect::<BTreeSet<_>>();
    let by_home: BTreeMap<usize, _> = homes.iter().map(|h| (*h, dots(&held[*h]))).collect();
    if by_home.values().collect::<BTreeSet<_>>().len() > 1 {
        violations.push(format!("replicas disagree: {key} on its homes {homes:?}: {by_home:?}"));
    }
    for (node, versions) in held.iter().enumerate() {
        if !homes.contains(&node) && !versions.is_empty() {
            violations.push(format!("stray copy: n{node} holds {key}, whose homes are {homes:?}"));
        }
    }
}

/// FNV-1a over the trace: stable across runs and builds.
pub fn digest(trace: &[String]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for line in trace {
        for byte in line.bytes().chain(std::iter::once(b'\n')) {
            hash ^= byte as u64;
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    }
    hash
}
