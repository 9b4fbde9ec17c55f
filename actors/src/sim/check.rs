//! What clients were told, and the checks of what the cluster holds
//! against it once every fault has healed and the cluster has been quiet.

use super::{live_values, Cluster, Outcome};
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::time::Duration;

/// One client request.
#[derive(Debug, Clone)]
pub enum Op {
    /// A set, and the dot it was stamped with (when it was stored).
    Set {
        key: String,
        value: String,
        stamped: String,
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

impl Default for History {
    fn default() -> Self {
        History { started: tokio::time::Instant::now(), records: RefCell::default() }
    }
}

impl History {
    pub fn now(&self) -> Duration {
        self.started.elapsed()
    }

    pub fn record<T>(&self, client: usize, op: Op, invoked: Duration, result: &crate::Result<T>) {
        let error = result.as_ref().err().map(|e| e.to_string());
        self.records.borrow_mut().push(Record { client, op, invoked, completed: self.now(), error });
    }

    pub fn records(&self) -> Vec<Record> {
        self.records.borrow().clone()
    }
}

/// Runs every check; the outcome carries the trace, its digest, and any
/// violations.
pub fn check(cluster: &Cluster, history: &History) -> Outcome {
    let records = history.records();
    let mut trace: Vec<String> = records.iter().map(trace_line).collect();
    let mut violations = Vec::new();
    let keys: BTreeSet<&str> = records.iter().map(|r| r.op.key()).collect();
    for key in &keys {
        let held = cluster.held(key);
        for (node, versions) in held.iter().enumerate() {
            let dots: Vec<String> = versions.iter().map(|v| format!("{:?}={:?}", v.dot, v.value)).collect();
            trace.push(format!("held {key} n{node} {}", dots.join(" ")));
        }
        let of_key: Vec<&Record> = records.iter().filter(|r| r.op.key() == *key).collect();
        let finals = final_values(&held);
        match key.starts_with("counter") {
            true => check_counter(key, &of_key, &finals, &mut violations),
            false => check_register(key, &of_key, &finals, &mut violations),
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
    if let Some(e) = &r.error {
        let _ = write!(line, " ! {e}");
    }
    line
}

/// The values the cluster holds for a key, every replica's merged: what a
/// read of all of them would answer (tombstones left out).
fn final_values(held: &[Vec<crate::version::Version>]) -> Vec<String> {
    let siblings = crate::version::reconcile(held).siblings;
    live_values(&crate::store::live_versions(&siblings, crate::store::now_secs()))
}

/// A key written with set and delete: nothing is read that was never
/// written, and no acknowledged write is lost. An acknowledged write is
/// lost when everything the key holds at the end was answered before that
/// write was sent (an older value came back over it), or the key is gone
/// and no delete could have followed it.
pub fn check_register(key: &str, records: &[&Record], finals: &[String], violations: &mut Vec<String>) {
    let writer = |value: &str| records.iter().find(|r| matches!(&r.op, Op::Set { value: v, .. } if v == value)).copied();
    let written: BTreeSet<&str> =
        records.iter().filter_map(|r| if let Op::Set { value, .. } = &r.op { Some(value.as_str()) } else { None }).collect();
    for r in records {
        if let Op::Get { values: Some(values), .. } = &r.op {
            for v in values.iter().filter(|v| !written.contains(v.as_str())) {
                violations.push(format!("never written: a read of {key} answered {v:?}"));
            }
        }
    }
    for v in finals.iter().filter(|v| !written.contains(v.as_str())) {
        violations.push(format!("never written: {key} holds {v:?}"));
    }
    for w in records.iter().filter(|r| r.error.is_none()) {
        let Op::Set { value, .. } = &w.op else { continue };
        if finals.contains(value) {
            continue;
        }
        let all_older = finals.iter().all(|f| writer(f).is_some_and(|x| x.precedes(w)));
        let deleted_after = records.iter().any(|d| matches!(d.op, Op::Delete { .. }) && !d.precedes(w));
        if all_older && (!finals.is_empty() || !deleted_after) {
            let now = if finals.is_empty() { "nothing".to_string() } else { format!("{finals:?}") };
            violations.push(format!(
                "lost write: {key}={value:?} acknowledged at {:?} to client {}, but {key} holds {now}",
                w.completed, w.client
            ));
        }
    }
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
fn check_placement(cluster: &Cluster, key: &str, held: &[Vec<crate::version::Version>], violations: &mut Vec<String>) {
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
