//! The ring's shape, recorded in `data_dir` at a node's first start. Keys
//! are stored by bucket, so data written with one `number_of_buckets` reads
//! as missing under another: a start that would do that is refused.

use std::path::{Path, PathBuf};

const FILE: &str = "ring_shape.toml";

#[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq, Eq)]
struct Shape {
    number_of_buckets: u32,
}

fn path(data_dir: &Path) -> PathBuf {
    data_dir.join(FILE)
}

/// Records the shape on first start; afterwards refuses any other, naming
/// the key, the recorded value and the one given.
pub fn check_or_record(data_dir: &Path, number_of_buckets: u32) -> Result<(), String> {
    let file = path(data_dir);
    match std::fs::read_to_string(&file) {
        Ok(text) => {
            let recorded: Shape = toml::from_str(&text).map_err(|e| format!("{} is damaged: {e}", file.display()))?;
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
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let text = toml::to_string(&Shape { number_of_buckets }).expect("a shape serializes");
            let note = "# Written at this data dir's first start; a node refuses to start on it with another shape.\n";
            std::fs::create_dir_all(data_dir)
                .and_then(|_| std::fs::write(&file, format!("{note}{text}")))
                .map_err(|e| format!("cannot record the ring's shape in {}: {e}", file.display()))
        }
        Err(e) => Err(format!("cannot read {}: {e}", file.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_start_records_and_a_later_one_must_match() {
        let dir = tempfile::tempdir().unwrap();
        check_or_record(dir.path(), 1024).unwrap();
        check_or_record(dir.path(), 1024).unwrap();
        let refused = check_or_record(dir.path(), 512).unwrap_err();
        assert!(
            refused.contains("`number_of_buckets`") && refused.contains("= 1024") && refused.contains("gives 512"),
            "{refused}"
        );
    }

    #[test]
    fn a_damaged_record_is_an_error_not_a_fresh_start() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(path(dir.path()), "number_of_buckets = \"many\"").unwrap();
        assert!(check_or_record(dir.path(), 1024).unwrap_err().contains("damaged"));
    }
}
