//! A file system in memory that keeps what a power cut may keep, for the crash-state test and the
//! simulation's disk.
//!
//! Every file has the bytes its last sync made durable and the writes since (appends at an offset,
//! truncations); the directory has its durable entries and the creates, renames and removes since
//! its last sync. [`SimFs::power_cut`] keeps exactly the synced state. [`FsState::crash`] draws one
//! of the states POSIX allows after a crash, from a seeded random source: per file, none, all, a
//! prefix or any subset of the unsynced writes, the last one possibly torn (holes read as zeros);
//! per directory, any subset of the unsynced entry changes. With recording on, the state after
//! every operation is kept, tagged with the caller's mark, so a test can crash at every point.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use rand::rngs::SmallRng;
use rand::Rng;

use super::fs::{Fs, FsFile};

/// An append not yet synced (truncation syncs at once: see `OsFile::truncate`).
#[derive(Debug, Clone)]
struct Write {
    at: usize,
    data: Vec<u8>,
}

#[derive(Debug, Clone, Default)]
struct File {
    durable: Vec<u8>,
    live: Vec<u8>,
    pending: Vec<Write>,
}

#[derive(Debug, Clone)]
enum DirOp {
    Link(String, u64),
    Unlink(String),
    Rename { from: String, to: String, ino: u64 },
}

#[derive(Debug, Clone, Default)]
struct Dir {
    durable: BTreeMap<String, u64>,
    live: BTreeMap<String, u64>,
    pending: Vec<DirOp>,
}

/// Everything on the memory disk at one moment.
#[derive(Debug, Clone, Default)]
pub struct FsState {
    files: BTreeMap<u64, File>,
    dirs: BTreeMap<PathBuf, Dir>,
    next_ino: u64,
}

fn apply_dir(entries: &mut BTreeMap<String, u64>, op: &DirOp) {
    match op {
        DirOp::Link(n, ino) => {
            entries.insert(n.clone(), *ino);
        }
        DirOp::Unlink(n) => {
            entries.remove(n);
        }
        DirOp::Rename { from, to, ino } => {
            entries.remove(from);
            entries.insert(to.clone(), *ino);
        }
    }
}

fn apply_write(content: &mut Vec<u8>, w: &Write, torn: Option<usize>) {
    let data = &w.data[..torn.unwrap_or(w.data.len()).min(w.data.len())];
    if content.len() < w.at + data.len() {
        content.resize(w.at + data.len(), 0);
    }
    content[w.at..w.at + data.len()].copy_from_slice(data);
}

impl FsState {
    /// One state a crash at this moment may leave, drawn with `rng`; nothing in it is pending.
    pub fn crash(&self, rng: &mut SmallRng) -> FsState {
        let mut out = self.clone();
        for f in out.files.values_mut() {
            let mut content = f.durable.clone();
            let n = f.pending.len();
            if n > 0 {
                let (chosen, torn_last): (Vec<usize>, bool) = match rng.gen_range(0..4) {
                    0 => (Vec::new(), false),
                    1 => ((0..n).collect(), false),
                    2 => ((0..rng.gen_range(0..=n)).collect(), rng.gen_bool(0.5)),
                    _ => ((0..n).filter(|_| rng.gen_bool(0.5)).collect(), rng.gen_bool(0.5)),
                };
                for (k, &i) in chosen.iter().enumerate() {
                    let w = &f.pending[i];
                    let torn = (torn_last && k + 1 == chosen.len()).then(|| rng.gen_range(0..=w.data.len()));
                    apply_write(&mut content, w, torn);
                }
            }
            f.durable = content.clone();
            f.live = content;
            f.pending.clear();
        }
        for d in out.dirs.values_mut() {
            let mut entries = d.durable.clone();
            let all = rng.gen_bool(0.25);
            for op in &d.pending {
                if all || rng.gen_bool(0.5) {
                    apply_dir(&mut entries, op);
                }
            }
            d.durable = entries.clone();
            d.live = entries;
            d.pending.clear();
        }
        out
    }

    /// What a power cut keeps: exactly what was synced.
    pub fn synced(&self) -> FsState {
        let mut out = self.clone();
        for f in out.files.values_mut() {
            f.live = f.durable.clone();
            f.pending.clear();
        }
        for d in out.dirs.values_mut() {
            d.live = d.durable.clone();
            d.pending.clear();
        }
        out
    }
}

#[derive(Default)]
struct Shared {
    state: FsState,
    /// With recording on: (the caller's mark, the state) after every operation that changed it.
    history: Option<Vec<(u64, FsState)>>,
    mark: u64,
}

/// The memory file system; clones share one disk.
#[derive(Clone, Default)]
pub struct SimFs {
    shared: Arc<Mutex<Shared>>,
}

/// A file open on a [`SimFs`].
#[derive(Clone)]
pub struct SimFile {
    fs: SimFs,
    ino: u64,
}

fn split(path: &Path) -> io::Result<(PathBuf, String)> {
    let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let name = path.file_name().ok_or_else(|| io::Error::other("no file name"))?.to_string_lossy().into_owned();
    Ok((dir, name))
}

fn not_found(p: &Path) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, format!("{} not found", p.display()))
}

impl SimFs {
    /// A disk holding `state` (a crash state, say).
    pub fn from_state(state: FsState) -> SimFs {
        SimFs { shared: Arc::new(Mutex::new(Shared { state, history: None, mark: 0 })) }
    }

    fn lock(&self) -> MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Keep the state after every operation from now on.
    pub fn record(&self) {
        self.lock().history = Some(Vec::new());
    }

    /// Tag the states recorded from now on.
    pub fn set_mark(&self, mark: u64) {
        self.lock().mark = mark;
    }

    pub fn take_history(&self) -> Vec<(u64, FsState)> {
        self.lock().history.take().unwrap_or_default()
    }

    /// An empty disk, as an operator's fresh `data_dir` (a removed node joining again).
    pub fn wipe(&self) {
        self.lock().state = FsState::default();
    }

    /// Lose every write not synced, as when the power goes.
    pub fn power_cut(&self) {
        let mut s = self.lock();
        s.state = s.state.synced();
    }

    fn change<T>(&self, f: impl FnOnce(&mut FsState) -> io::Result<T>) -> io::Result<T> {
        let mut s = self.lock();
        let r = f(&mut s.state)?;
        let mark = s.mark;
        let snapshot = s.history.is_some().then(|| s.state.clone());
        if let (Some(h), Some(st)) = (s.history.as_mut(), snapshot) {
            h.push((mark, st));
        }
        Ok(r)
    }

    fn lookup(&self, path: &Path) -> io::Result<u64> {
        let (dir, name) = split(path)?;
        self.lock().state.dirs.get(&dir).and_then(|d| d.live.get(&name)).copied().ok_or_else(|| not_found(path))
    }
}

impl FsFile for SimFile {
    fn append(&self, data: &[u8]) -> io::Result<()> {
        self.fs.change(|s| {
            let f = s.files.get_mut(&self.ino).ok_or_else(|| io::Error::other("file gone"))?;
            let at = f.live.len();
            f.live.extend_from_slice(data);
            f.pending.push(Write { at, data: data.to_vec() });
            Ok(())
        })
    }

    fn truncate(&self, len: u64) -> io::Result<()> {
        self.fs.change(|s| {
            let f = s.files.get_mut(&self.ino).ok_or_else(|| io::Error::other("file gone"))?;
            f.live.resize(len as usize, 0);
            // OsFile::truncate syncs the file (size and data) before returning
            f.durable = f.live.clone();
            f.pending.clear();
            Ok(())
        })
    }

    fn sync_data(&self) -> io::Result<()> {
        self.fs.change(|s| {
            let f = s.files.get_mut(&self.ino).ok_or_else(|| io::Error::other("file gone"))?;
            f.durable = f.live.clone();
            f.pending.clear();
            Ok(())
        })
    }
}

impl Fs for SimFs {
    type File = SimFile;
    const BLOCKING: bool = false;

    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        // directories themselves are durable at once (OsFs syncs the parent after creating one)
        self.change(|s| {
            s.dirs.entry(dir.to_path_buf()).or_default();
            Ok(())
        })
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let s = self.lock();
        let d = s.state.dirs.get(dir).ok_or_else(|| not_found(dir))?;
        Ok(d.live.keys().cloned().collect())
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        let ino = self.lookup(path)?;
        Ok(self.lock().state.files.get(&ino).map(|f| f.live.clone()).unwrap_or_default())
    }

    fn create(&self, path: &Path) -> io::Result<SimFile> {
        let (dir, name) = split(path)?;
        let ino = self.change(|s| {
            let d = s.dirs.get_mut(&dir).ok_or_else(|| not_found(&dir))?;
            s.next_ino += 1;
            let ino = s.next_ino;
            d.live.insert(name.clone(), ino);
            d.pending.push(DirOp::Link(name, ino));
            s.files.insert(ino, File::default());
            Ok(ino)
        })?;
        Ok(SimFile { fs: self.clone(), ino })
    }

    fn open_append(&self, path: &Path) -> io::Result<SimFile> {
        Ok(SimFile { fs: self.clone(), ino: self.lookup(path)? })
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let ((dir, f), (dir2, t)) = (split(from)?, split(to)?);
        if dir != dir2 {
            return Err(io::Error::other("rename across directories is not modelled"));
        }
        self.change(|s| {
            let d = s.dirs.get_mut(&dir).ok_or_else(|| not_found(&dir))?;
            let ino = d.live.remove(&f).ok_or_else(|| not_found(from))?;
            d.live.insert(t.clone(), ino);
            d.pending.push(DirOp::Rename { from: f, to: t, ino });
            Ok(())
        })
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        let (dir, name) = split(path)?;
        self.change(|s| {
            let d = s.dirs.get_mut(&dir).ok_or_else(|| not_found(&dir))?;
            d.live.remove(&name).ok_or_else(|| not_found(path))?;
            d.pending.push(DirOp::Unlink(name));
            Ok(())
        })
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.change(|s| {
            let d = s.dirs.get_mut(dir).ok_or_else(|| not_found(dir))?;
            d.durable = d.live.clone();
            d.pending.clear();
            Ok(())
        })
    }
}
