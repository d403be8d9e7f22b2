//! The file layer the Raft store writes through: the few POSIX operations it needs, so that a test
//! can record every write and sync and build the states a power cut may leave (see [`super::crash`]).
//!
//! [`OsFs`] is the real one. Its syncs are `fdatasync` for file data (the store only appends, and
//! `fdatasync` persists the size an append grew) and `fsync` on the directory after every create,
//! rename or remove, because on Linux a new or renamed file's name is durable only then.

use std::io;
use std::path::Path;
use std::sync::Arc;

/// An open file the store appends to.
pub trait FsFile: Clone + Send + Sync + 'static {
    /// Write `data` at the end of the file (not durable until [`FsFile::sync_data`]).
    fn append(&self, data: &[u8]) -> io::Result<()>;
    /// Cut the file to `len` bytes.
    fn truncate(&self, len: u64) -> io::Result<()>;
    /// Make the file's data and size durable (`fdatasync`).
    fn sync_data(&self) -> io::Result<()>;
}

/// The directory operations and file opening the store needs.
pub trait Fs: Clone + Send + Sync + 'static {
    type File: FsFile;
    /// Whether a sync waits on a real device: the store then runs it on a blocking thread, off the
    /// async runtime's workers. The simulation's memory disk answers at once, on the caller's task,
    /// so a seed replays exactly.
    const BLOCKING: bool;
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// The names of the files in `dir`.
    fn list(&self, dir: &Path) -> io::Result<Vec<String>>;
    fn read(&self, path: &Path) -> io::Result<Vec<u8>>;
    /// Create `path` empty (replacing any file there) and open it for appending.
    fn create(&self, path: &Path) -> io::Result<Self::File>;
    /// Open an existing file for appending.
    fn open_append(&self, path: &Path) -> io::Result<Self::File>;
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    fn remove(&self, path: &Path) -> io::Result<()>;
    /// Make `dir`'s entries (files created, renamed or removed in it) durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
}

/// The operating system's files.
#[derive(Clone, Copy, Debug, Default)]
pub struct OsFs;

/// A file of [`OsFs`], shared so a sync can run on a blocking thread while the store goes on.
#[derive(Clone, Debug)]
pub struct OsFile(Arc<std::fs::File>);

impl FsFile for OsFile {
    fn append(&self, data: &[u8]) -> io::Result<()> {
        use std::io::Write;
        // opened with O_APPEND: every write lands at the current end
        (&*self.0).write_all(data)
    }

    fn truncate(&self, len: u64) -> io::Result<()> {
        self.0.set_len(len)?;
        // a shrink changes the size only: fsync, since fdatasync may skip a size that did not grow
        self.0.sync_all()
    }

    fn sync_data(&self) -> io::Result<()> {
        self.0.sync_data()
    }
}

impl Fs for OsFs {
    type File = OsFile;
    const BLOCKING: bool = true;

    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        if dir.is_dir() {
            return Ok(());
        }
        std::fs::create_dir_all(dir)?;
        // the new directory's own name lives in its parent
        match dir.parent() {
            Some(p) if !p.as_os_str().is_empty() => self.sync_dir(p),
            _ => Ok(()),
        }
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for e in std::fs::read_dir(dir)? {
            names.push(e?.file_name().to_string_lossy().into_owned());
        }
        names.sort();
        Ok(names)
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        std::fs::read(path)
    }

    fn create(&self, path: &Path) -> io::Result<OsFile> {
        let f = std::fs::OpenOptions::new().create(true).truncate(true).write(true).open(path)?;
        drop(f);
        self.open_append(path)
    }

    fn open_append(&self, path: &Path) -> io::Result<OsFile> {
        Ok(OsFile(Arc::new(std::fs::OpenOptions::new().append(true).open(path)?)))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        std::fs::File::open(dir)?.sync_all()
    }
}
