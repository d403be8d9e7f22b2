//! The production Raft store: a [`Backend`] kept in one append-only file per generation
//! (`store-<gen>.log` in the node's `raft/` directory), every key also held in memory.
//!
//! Why this shape (docs/decisions.md, "Raft storage"): an acknowledgement must follow a real
//! `fdatasync` of what it acknowledges, and a crash test must be able to see every write and sync.
//! - A write ([`Backend::insert`], [`Backend::remove`]) appends one frame to the current file and is
//!   visible at once; it is durable only after [`Backend::flush`], which `fdatasync`s the file.
//!   Group commit: a flush that finds its writes already covered by a sync that ran while it waited
//!   returns without syncing again, so one sync acknowledges everything queued behind it.
//! - Compaction writes the live state into `store-<gen+1>.tmp`, syncs it, renames it to `.log` and
//!   syncs the directory; only then is the old file removed. Opening takes the highest `.log`.
//! - Opening replays the frames up to the first one a crash tore or left out and cuts the rest, so
//!   the store always comes back as the writes of a prefix of its batches (frame.rs).
//! - A failed write or sync leaves the store refusing every later call: after a failed `fsync` the
//!   kernel may have dropped the dirty pages, and a retry that "succeeds" would acknowledge data
//!   that is gone. The node must be restarted; it then reads back what really is on disk.

pub mod crash;
mod frame;
pub mod fs;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::backend::{last_of, range_of, Backend, KeyValue, Maps, Space};
use crate::error::ConsensusError;
use frame::Op;
pub use fs::{Fs, FsFile, OsFs};

/// How the store behaves; [`Default`] is production.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Compact when the file is larger than this and more than twice the live data.
    pub compact_at_bytes: u64,
    /// Acknowledge a flush without syncing. Only for proving that the crash test catches a store
    /// that acknowledges before its data is durable; never set it anywhere else.
    pub ack_before_sync: bool,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions { compact_at_bytes: 16 * 1024 * 1024, ack_before_sync: false }
    }
}

/// What an operator does with a store that cannot be read.
pub const UNREADABLE_HINT: &str = "the node will not start from it. Move the node's data directory aside and add the node again \
with `hatrunk cluster remove` + `hatrunk cluster join`: it then copies the state from the cluster";

struct Inner<F: Fs> {
    maps: Maps,
    file: F::File,
    gen: u64,
    /// The sequence number of the last frame written.
    seq: u64,
    /// Bytes in the current file, and the bytes the live keys and values take.
    size: u64,
    live: u64,
    /// Set by the first failed write or sync; every later call fails with it.
    failed: Option<String>,
}

/// The store; cheap to clone (a shared handle).
pub struct DiskBackend<F: Fs = OsFs> {
    fs: F,
    dir: PathBuf,
    opts: StoreOptions,
    inner: Arc<Mutex<Inner<F>>>,
    /// The sequence number up to which the file is synced; held while a sync runs (group commit).
    synced: Arc<tokio::sync::Mutex<u64>>,
}

impl<F: Fs> Clone for DiskBackend<F> {
    fn clone(&self) -> Self {
        DiskBackend {
            fs: self.fs.clone(),
            dir: self.dir.clone(),
            opts: self.opts.clone(),
            inner: self.inner.clone(),
            synced: self.synced.clone(),
        }
    }
}

fn space_byte(s: Space) -> u8 {
    match s {
        Space::Log => 0,
        Space::Meta => 1,
        Space::Snapshot => 2,
        Space::Node => 3,
    }
}

fn space_of(b: u8) -> Option<Space> {
    Some(match b {
        0 => Space::Log,
        1 => Space::Meta,
        2 => Space::Snapshot,
        3 => Space::Node,
        _ => return None,
    })
}

fn log_name(gen: u64) -> String {
    format!("store-{gen:08}.log")
}

fn gen_of(name: &str, ext: &str) -> Option<u64> {
    name.strip_prefix("store-")?.strip_suffix(ext)?.parse().ok()
}

fn apply(maps: &mut Maps, live: &mut u64, op: Op) -> Result<(), String> {
    let space = space_of(op.space).ok_or_else(|| format!("unknown key space {}", op.space))?;
    let m = maps.entry(space).or_default();
    let klen = op.key.len() as u64;
    let old = match op.value {
        Some(v) => {
            *live += klen + v.len() as u64;
            m.insert(op.key, v)
        }
        None => m.remove(&op.key),
    };
    if let Some(old) = old {
        *live = live.saturating_sub(klen + old.len() as u64);
    }
    Ok(())
}

/// Run `f` where a sync may wait on a device: a blocking thread for real files, in place for the
/// simulation's memory disk.
async fn run_blocking<F: Fs, T: Send + 'static>(f: impl FnOnce() -> Result<T, String> + Send + 'static) -> Result<T, String> {
    if F::BLOCKING {
        tokio::task::spawn_blocking(f).await.map_err(|e| format!("storage task failed: {e}"))?
    } else {
        f()
    }
}

/// Write `maps` as generation `gen` (a header and one frame numbered `seq`): into a temporary
/// file, synced, renamed into place, directory synced. Returns the new file and its size.
fn write_generation<F: Fs>(fs: &F, dir: &Path, gen: u64, seq: u64, maps: &Maps) -> Result<(F::File, u64), String> {
    let ops: Vec<Op> = maps
        .iter()
        .flat_map(|(s, m)| m.iter().map(|(k, v)| Op { space: space_byte(*s), key: k.clone(), value: Some(v.clone()) }))
        .collect();
    let mut bytes = frame::header();
    bytes.extend(frame::encode(seq, &ops)?);
    let tmp = dir.join(format!("store-{gen:08}.tmp"));
    let path = dir.join(log_name(gen));
    let at = |what: &str, p: &Path, e: std::io::Error| format!("{what} {}: {e}", p.display());
    let file = fs.create(&tmp).map_err(|e| at("cannot create", &tmp, e))?;
    file.append(&bytes).map_err(|e| at("cannot write", &tmp, e))?;
    file.sync_data().map_err(|e| at("cannot sync", &tmp, e))?;
    fs.rename(&tmp, &path).map_err(|e| at("cannot rename", &tmp, e))?;
    fs.sync_dir(dir).map_err(|e| at("cannot sync directory", dir, e))?;
    Ok((file, bytes.len() as u64))
}

impl<F: Fs> DiskBackend<F> {
    /// Open the store in `dir` (created if missing), reading back what a crash left.
    pub fn open(fs: F, dir: &Path, opts: StoreOptions) -> Result<DiskBackend<F>, ConsensusError> {
        let err = |m: String| ConsensusError::Storage(m);
        fs.create_dir_all(dir).map_err(|e| err(format!("cannot create {}: {e}", dir.display())))?;
        let names = fs.list(dir).map_err(|e| err(format!("cannot list {}: {e}", dir.display())))?;
        let newest = names.iter().filter_map(|n| gen_of(n, ".log")).max();
        // older generations and unfinished compactions are leftovers of a crash
        let mut removed = false;
        for n in &names {
            let stale = gen_of(n, ".log").is_some_and(|g| Some(g) < newest) || gen_of(n, ".tmp").is_some();
            if stale {
                fs.remove(&dir.join(n)).map_err(|e| err(format!("cannot remove {n} in {}: {e}", dir.display())))?;
                removed = true;
            }
        }
        if removed {
            fs.sync_dir(dir).map_err(|e| err(format!("cannot sync {}: {e}", dir.display())))?;
        }
        let (inner, cut) = match newest {
            None => {
                let (file, size) = write_generation(&fs, dir, 1, 0, &Maps::new()).map_err(err)?;
                (Inner { maps: Maps::new(), file, gen: 1, seq: 0, size, live: 0, failed: None }, None)
            }
            Some(gen) => Self::replay(&fs, dir, gen)?,
        };
        if let Some((valid, len)) = cut {
            tracing::warn!(file = %dir.join(log_name(inner.gen)).display(), kept = valid, dropped = len - valid, "Raft store: discarded the unacknowledged tail an interrupted write left");
        }
        let seq = inner.seq;
        Ok(DiskBackend {
            fs,
            dir: dir.to_path_buf(),
            opts,
            inner: Arc::new(Mutex::new(inner)),
            synced: Arc::new(tokio::sync::Mutex::new(seq)),
        })
    }

    /// Read generation `gen` back; cut a torn tail. Returns the state and, if cut, (kept, was) bytes.
    #[allow(clippy::type_complexity)]
    fn replay(fs: &F, dir: &Path, gen: u64) -> Result<(Inner<F>, Option<(u64, u64)>), ConsensusError> {
        let path = dir.join(log_name(gen));
        let refuse = |why: String| ConsensusError::Storage(format!("Raft store {}: {why}; {UNREADABLE_HINT}", path.display()));
        let bytes = fs.read(&path).map_err(|e| refuse(format!("cannot be read ({e})")))?;
        frame::check_header(&bytes).map_err(refuse)?;
        let mut maps = Maps::new();
        let mut live = 0;
        let mut at = frame::HEADER_LEN;
        let mut seq = None::<u64>;
        while let Some(d) = frame::decode(&bytes, at) {
            if seq.is_some_and(|s| d.seq != s + 1) {
                break; // a frame of another life of this file, not the next one
            }
            for op in d.ops {
                apply(&mut maps, &mut live, op).map_err(refuse)?;
            }
            seq = Some(d.seq);
            at = d.end;
        }
        // the first frame is the generation's full state, synced before the file got its name
        let seq = seq.ok_or_else(|| refuse("its first frame (the state it was compacted from) is damaged".into()))?;
        let file = fs.open_append(&path).map_err(|e| refuse(format!("cannot be opened ({e})")))?;
        let cut = if at < bytes.len() {
            file.truncate(at as u64).map_err(|e| refuse(format!("cannot cut its torn tail ({e})")))?;
            Some((at as u64, bytes.len() as u64))
        } else {
            None
        };
        Ok((Inner { maps, file, gen, seq, size: at as u64, live, failed: None }, cut))
    }

    fn lock(&self) -> MutexGuard<'_, Inner<F>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Append one batch; visible at once, durable after the next flush.
    fn write(&self, ops: Vec<Op>) -> Result<(), String> {
        let mut i = self.lock();
        if let Some(e) = &i.failed {
            return Err(e.clone());
        }
        let seq = i.seq + 1;
        let bytes = frame::encode(seq, &ops)?;
        if let Err(e) = i.file.append(&bytes) {
            let msg = format!("write to the Raft store in {} failed ({e}); restart the node", self.dir.display());
            i.failed = Some(msg.clone());
            return Err(msg);
        }
        i.seq = seq;
        i.size += bytes.len() as u64;
        let Inner { maps, live, .. } = &mut *i;
        for op in ops {
            apply(maps, live, op)?;
        }
        Ok(())
    }

    /// Bytes in the current file, and bytes of live data (for the store-size figures).
    pub fn sizes(&self) -> (u64, u64) {
        let i = self.lock();
        (i.size, i.live)
    }

    fn fail(&self, msg: String) -> String {
        let mut i = self.lock();
        i.failed.get_or_insert(msg).clone()
    }

    /// Rewrite the live state as the next generation (under the sync lock, so no sync interleaves).
    async fn compact(&self) -> Result<(), String> {
        let (fs, dir, inner) = (self.fs.clone(), self.dir.clone(), self.inner.clone());
        run_blocking::<F, ()>(move || {
            // writers wait while this runs: compaction is rare (the file outgrew its live data)
            let mut i = inner.lock().unwrap_or_else(|p| p.into_inner());
            let (old, gen) = (i.gen, i.gen + 1);
            let (file, size) = write_generation(&fs, &dir, gen, i.seq, &i.maps)?;
            i.file = file;
            i.gen = gen;
            i.size = size;
            // a left-over old generation is harmless (the newest is read) and removed at next open
            let _ = fs.remove(&dir.join(log_name(old)));
            Ok(())
        })
        .await
    }
}

impl<F: Fs> Backend for DiskBackend<F> {
    fn get(&self, space: Space, key: &[u8]) -> Result<Option<Vec<u8>>, String> {
        Ok(self.lock().maps.get(&space).and_then(|m| m.get(key)).cloned())
    }

    fn insert(&self, space: Space, pairs: Vec<KeyValue>) -> Result<(), String> {
        let s = space_byte(space);
        self.write(pairs.into_iter().map(|(key, v)| Op { space: s, key, value: Some(v) }).collect())
    }

    fn remove(&self, space: Space, keys: Vec<Vec<u8>>) -> Result<(), String> {
        let s = space_byte(space);
        self.write(keys.into_iter().map(|key| Op { space: s, key, value: None }).collect())
    }

    fn range(&self, space: Space, from: &[u8], to: &[u8]) -> Result<Vec<KeyValue>, String> {
        Ok(range_of(&self.lock().maps, space, from, to))
    }

    fn last(&self, space: Space) -> Result<Option<KeyValue>, String> {
        Ok(last_of(&self.lock().maps, space))
    }

    async fn flush(&self) -> Result<(), String> {
        let target = {
            let i = self.lock();
            if let Some(e) = &i.failed {
                return Err(e.clone());
            }
            i.seq
        };
        let mut synced = self.synced.lock().await;
        if *synced >= target {
            return Ok(()); // a sync that ran while this one waited covered it
        }
        let (file, upto, compact) = {
            let i = self.lock();
            (i.file.clone(), i.seq, i.size > self.opts.compact_at_bytes && i.size > 2 * i.live)
        };
        if !self.opts.ack_before_sync {
            let dir = self.dir.clone();
            let r = run_blocking::<F, ()>(move || {
                file.sync_data().map_err(|e| format!("fdatasync of the Raft store in {} failed ({e}); restart the node", dir.display()))
            })
            .await;
            if let Err(e) = r {
                return Err(self.fail(e));
            }
        }
        *synced = upto;
        if compact {
            if let Err(e) = self.compact().await {
                return Err(self.fail(format!("compacting the Raft store failed ({e}); restart the node")));
            }
            *synced = self.lock().seq;
        }
        Ok(())
    }
}
