//! What a data dir was made for, recorded at a node's first start: the
//! ring's shape and the address the node served as. Keys are stored by
//! bucket, so data written with one `number_of_buckets` reads as missing
//! under another; and a node's address is its identity on the ring, so the
//! same data served under another address would leave its old address on
//! the ring as a ghost. A start that would do either is refused.

use std::net::SocketAddrV4;
use std::path::{Path, PathBuf};

const FILE: &str = "ring_shape.toml";

#[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq, Eq)]
struct Shape {
    number_of_buckets: u32,
    /// The node's address at its first start (absent in a data dir made
    /// before addresses were recorded: the next start records it).
    #[serde(default)]
    node: Option<String>,
}

fn path(data_dir: &Path) -> PathBuf {
    data_dir.join(FILE)
}

/// Records the shape and address on first start; afterwards refuses any
/// other, naming the key, the recorded value and the one given. A node
/// that `replaces` the recorded address takes its data over.
pub fn check_or_record(
    data_dir: &Path,
    number_of_buckets: u32,
    me: SocketAddrV4,
    replaces: Option<SocketAddrV4>,
) -> Result<(), String> {
    let file = path(data_dir);
    let recorded = match std::fs::read_to_string(&file) {
        Ok(text) => toml::from_str::<Shape>(&text).map_err(|e| format!("{} is damaged: {e}", file.display()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return record(data_dir, number_of_buckets, me),
        Err(e) => return Err(format!("cannot read {}: {e}", file.display())),
    };
    if recorded.number_of_buckets != number_of_buckets {
        return Err(format!(
            "config key `number_of_buckets`: {} holds data placed with number_of_buckets = {}, and this start gives {}; \
             a node's bucket count cannot change under its data: start with number_of_buckets = {} (or move the \
             data dir away to start afresh)",
            data_dir.display(),
            recorded.number_of_buckets,
            number_of_buckets,
            recorded.number_of_buckets
        ));
    }
    match recorded.node {
        None => record(data_dir, number_of_buckets, me),
        Some(node) if node == me.to_string() => Ok(()),
        Some(node) if replaces.is_some_and(|old| old.to_string() == node) => record(data_dir, number_of_buckets, me),
        Some(node) => Err(moved(data_dir, &node, me)),
    }
}

/// Why a data dir is not served under another address, and the way to
/// move a node.
fn moved(data_dir: &Path, recorded: &str, me: SocketAddrV4) -> String {
    format!(
        "config keys `hostname` and `port`: {} holds the data of node {recorded}, and this start is node {me}; a node's \
         address is its identity on the ring, so serving this data as {me} would leave {recorded} on the ring as a \
         ghost. Start it as {recorded} again; or, to move the node to {me}, start it with `replaces = \"{recorded}\"` and \
         `seeds` naming a member: it takes {recorded}'s place on the ring, over this data or an empty data_dir",
        data_dir.display()
    )
}

fn record(data_dir: &Path, number_of_buckets: u32, me: SocketAddrV4) -> Result<(), String> {
    let file = path(data_dir);
    let text = toml::to_string(&Shape { number_of_buckets, node: Some(me.to_string()) }).expect("a shape serializes");
    let note = "# Written at this data dir's first start; a node refuses to start on it with another shape or address.\n";
    std::fs::create_dir_all(data_dir)
        .and_then(|_| std::fs::write(&file, format!("{note}{text}")))
        .map_err(|e| format!("cannot record the ring's shape in {}: {e}", file.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(port: u16) -> SocketAddrV4 {
        SocketAddrV4::new(std::net::Ipv4Addr::LOCALHOST, port)
    }

    #[test]
    fn the_first_start_records_and_a_later_one_must_match() {
        let dir = tempfile::tempdir().unwrap();
        check_or_record(dir.path(), 1024, at(1), None).unwrap();
        check_or_record(dir.path(), 1024, at(1), None).unwrap();
        let refused = check_or_record(dir.path(), 512, at(1), None).unwrap_err();
        assert!(
            refused.contains("`number_of_buckets`") && refused.contains("= 1024") && refused.contains("gives 512"),
            "{refused}"
        );
        let refused = check_or_record(dir.path(), 1024, at(2), None).unwrap_err();
        assert!(refused.contains("127.0.0.1:1") && refused.contains("127.0.0.1:2") && refused.contains("replaces"), "{refused}");
        check_or_record(dir.path(), 1024, at(2), Some(at(1))).expect("a replacement takes the data over");
        check_or_record(dir.path(), 1024, at(2), None).expect("now recorded as its own");
    }

    #[test]
    fn a_record_without_an_address_takes_the_next_one() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(path(dir.path()), "number_of_buckets = 1024\n").unwrap();
        check_or_record(dir.path(), 1024, at(7), None).unwrap();
        assert!(check_or_record(dir.path(), 1024, at(8), None).is_err(), "recorded now");
    }

    #[test]
    fn a_damaged_record_is_an_error_not_a_fresh_start() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(path(dir.path()), "number_of_buckets = \"many\"").unwrap();
        assert!(check_or_record(dir.path(), 1024, at(1), None).unwrap_err().contains("damaged"));
    }
}
