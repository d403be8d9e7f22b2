//! The CDR files on disk: the current JSON-lines file, its rotated predecessors, and the shipper's
//! cursor. Rotated files are named `<stem>.<UTC YYYYMMDD-HHMMSS>.jsonl`, so their names sort in the
//! order they were written, before the current file.

use std::path::{Path, PathBuf};

/// The current file and the directory and name stem its rotations share.
#[derive(Debug, Clone)]
pub struct Layout {
    pub dir: PathBuf,
    /// The current file's name (`cdr.jsonl`).
    pub current: String,
    stem: String,
}

impl Layout {
    pub fn of(path: &Path) -> Layout {
        let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).map_or_else(|| PathBuf::from("."), Path::to_path_buf);
        let current = path.file_name().map_or_else(|| "cdr.jsonl".into(), |n| n.to_string_lossy().into_owned());
        let stem = current.strip_suffix(".jsonl").unwrap_or(&current).to_string();
        Layout { dir, current, stem }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// The name a rotation at `unix_s` gives the current file.
    pub fn rotated_name(&self, unix_s: u64) -> String {
        format!("{}.{}.jsonl", self.stem, stamp(unix_s))
    }

    /// Rotated files, oldest first.
    pub fn rotated(&self) -> Vec<String> {
        let prefix = format!("{}.", self.stem);
        let mut out: Vec<String> = std::fs::read_dir(&self.dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| *n != self.current && n.starts_with(&prefix) && n.ends_with(".jsonl"))
            .filter(|n| n[prefix.len()..n.len() - ".jsonl".len()].bytes().all(|b| b.is_ascii_digit() || b == b'-'))
            .collect();
        out.sort();
        out
    }

    /// Every file in the order written: rotated ones, then the current one.
    pub fn in_order(&self) -> Vec<String> {
        let mut all = self.rotated();
        all.push(self.current.clone());
        all
    }

    pub fn cursor_path(&self) -> PathBuf {
        self.dir.join(format!("{}.pg-cursor", self.stem))
    }
}

/// The rotated files to delete so that `keep` remain, never one at or after `unshipped` (the
/// first file the database has not had all of), so nothing is lost while it is away.
pub fn to_delete(rotated: &[String], keep: usize, unshipped: Option<&str>) -> Vec<String> {
    let excess = rotated.len().saturating_sub(keep);
    rotated.iter().take(excess).filter(|n| unshipped.is_none_or(|u| n.as_str() < u)).cloned().collect()
}

/// `YYYYMMDD-HHMMSS` in UTC.
pub fn stamp(unix_s: u64) -> String {
    let (y, m, d) = civil(unix_s / 86_400);
    let s = unix_s % 86_400;
    format!("{y:04}{m:02}{d:02}-{:02}{:02}{:02}", s / 3600, s / 60 % 60, s % 60)
}

/// The UTC day number of `unix_s` (rotation by day compares these).
pub fn day(unix_s: u64) -> u64 {
    unix_s / 86_400
}

/// Days since 1970-01-01 as a proleptic Gregorian date (Howard Hinnant's `civil_from_days`).
fn civil(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + u64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_sort_as_time_and_name_utc_dates() {
        assert_eq!(stamp(0), "19700101-000000");
        assert_eq!(stamp(1_796_062_457), "20261130-181417"); // date -u -d @1796062457
        assert_eq!(stamp(951_782_400), "20000229-000000", "a leap day");
        assert!(stamp(1_796_062_457) < stamp(1_796_062_458));
    }

    #[test]
    fn old_files_go_but_never_one_the_database_still_needs() {
        let rotated: Vec<String> = ["cdr.1.jsonl", "cdr.2.jsonl", "cdr.3.jsonl", "cdr.4.jsonl"].map(String::from).to_vec();
        assert_eq!(to_delete(&rotated, 2, None), vec!["cdr.1.jsonl", "cdr.2.jsonl"]);
        assert_eq!(to_delete(&rotated, 2, Some("cdr.2.jsonl")), vec!["cdr.1.jsonl"]);
        assert_eq!(to_delete(&rotated, 2, Some("cdr.1.jsonl")), Vec::<String>::new());
        assert_eq!(to_delete(&rotated, 9, None), Vec::<String>::new());
    }

    #[test]
    fn only_its_own_rotations_are_listed() {
        let dir = tempfile::tempdir().expect("tmp");
        for n in [
            "cdr.jsonl",
            "cdr.20261130-000000.jsonl",
            "cdr.20261129-000000.jsonl",
            "cdr.pg-cursor",
            "cdr.old.jsonl",
            "x.20261130-000000.jsonl",
        ] {
            std::fs::write(dir.path().join(n), "").expect("write");
        }
        let l = Layout::of(&dir.path().join("cdr.jsonl"));
        assert_eq!(l.in_order(), vec!["cdr.20261129-000000.jsonl", "cdr.20261130-000000.jsonl", "cdr.jsonl"]);
    }
}
