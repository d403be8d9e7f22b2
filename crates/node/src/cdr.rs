//! CDRs: one JSON object per line, appended to `[cdr] path` off the SIP path (a channel feeds a
//! thread that owns the file), rotated by size and by UTC day with `keep_files` rotations kept, and
//! with `[cdr] postgres` shipped from those files into PostgreSQL (`cdr/postgres.rs`). The files
//! are the spool: a CDR is on disk before the database sees it, so a database outage loses
//! nothing and the call path never waits for it. Times are put on the wall clock as it is when
//! written.

use std::io::Write;
use std::sync::{Arc, Mutex};

use hatrunk_core::cdr::Cdr;
use tokio::sync::{mpsc, Notify};

use crate::config::CdrSection;
use crate::error::NodeError;

mod files;
mod postgres;

pub use files::Layout;

/// Where the database's copy has got to: a file of [`Layout::in_order`] and a byte offset in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    pub file: String,
    pub offset: u64,
}

/// What the writer and the shipper share: the cursor (renamed with its file on rotation) and a
/// wake-up for new lines.
pub struct Shared {
    pub layout: Layout,
    pub cursor: Mutex<Option<Cursor>>,
    pub written: Notify,
}

impl Shared {
    fn cursor(&self) -> std::sync::MutexGuard<'_, Option<Cursor>> {
        self.cursor.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn io(what: &std::path::Path) -> impl FnOnce(std::io::Error) -> NodeError + '_ {
    move |source| NodeError::Io { what: what.display().to_string(), source }
}

/// How long a busy node gathers records before writing them: one write per batch, not per call,
/// and a record reaches the file within this long of its call's end.
const GATHER: std::time::Duration = std::time::Duration::from_millis(10);

/// The CDR writer's channel and, once every sender is gone and the last record written, its end.
pub struct CdrSink {
    pub tx: mpsc::Sender<Box<Cdr>>,
    pub done: tokio::sync::oneshot::Receiver<()>,
}

/// Open (create) the CDR file, start shipping to PostgreSQL if configured, and start the writer,
/// which also feeds `recent` (the status page's view of the last CDRs). The writer is a thread of its own
/// that blocks on the file: a write per batch costs no hop through the runtime's blocking pool,
/// and a slow disk holds up no runtime worker.
pub async fn start(path: std::path::PathBuf, cfg: &CdrSection, recent: Arc<crate::recent::Recent>) -> Result<CdrSink, NodeError> {
    let layout = Layout::of(&path);
    std::fs::create_dir_all(&layout.dir).map_err(io(&layout.dir))?;
    let file = open(&path)?;
    let shared = Arc::new(Shared { layout: layout.clone(), cursor: Mutex::new(None), written: Notify::new() });
    if let Some(url) = &cfg.postgres {
        *shared.cursor() = Some(postgres::load_cursor(&layout));
        tokio::spawn(postgres::ship(url.clone(), shared.clone()));
    }
    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
    let w = Writer {
        path,
        file,
        size,
        opened_day: files::day(crate::runtime::wall_ms() / 1000),
        rotate_bytes: cfg.rotate_bytes,
        rotate_daily: cfg.rotate_daily,
        keep: cfg.keep_files,
        shared,
        recent,
    };
    let (tx, rx) = mpsc::channel::<Box<Cdr>>(65_536);
    let (done_tx, done) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("hatrunk-cdr".into())
        .spawn(move || {
            w.run(rx);
            let _ = done_tx.send(());
        })
        .map_err(|source| NodeError::Io { what: "the CDR writer thread".into(), source })?;
    Ok(CdrSink { tx, done })
}

fn open(p: &std::path::Path) -> Result<std::fs::File, NodeError> {
    std::fs::OpenOptions::new().create(true).append(true).open(p).map_err(io(p))
}

/// The writer thread's state: the open file and when it is due to rotate.
struct Writer {
    path: std::path::PathBuf,
    file: std::fs::File,
    size: u64,
    opened_day: u64,
    rotate_bytes: u64,
    rotate_daily: bool,
    keep: usize,
    shared: Arc<Shared>,
    recent: Arc<crate::recent::Recent>,
}

impl Writer {
    fn run(mut self, mut rx: mpsc::Receiver<Box<Cdr>>) {
        while let Some(cdr) = rx.blocking_recv() {
            std::thread::sleep(GATHER);
            let mut batch = Vec::new();
            // the node's clock does not follow steps of the system clock; the record does
            let shift = crate::runtime::wall_ms() as i64 - crate::runtime::node_ms() as i64;
            let mut push = |mut c: Box<Cdr>| {
                if shift.abs() > 1 {
                    c.shift(shift);
                }
                let start = batch.len();
                match serde_json::to_writer(&mut batch, &c) {
                    Ok(()) => batch.push(b'\n'),
                    // half a record would run into the next line
                    Err(_) => batch.truncate(start),
                }
                self.recent.saw(Arc::from(c));
            };
            push(cdr);
            while let Ok(more) = rx.try_recv() {
                push(more);
            }
            self.write(&batch);
        }
    }

    fn write(&mut self, batch: &[u8]) {
        let now_s = crate::runtime::wall_ms() / 1000;
        let due = (self.rotate_bytes > 0 && self.size > 0 && self.size + batch.len() as u64 > self.rotate_bytes)
            || (self.rotate_daily && self.size > 0 && files::day(now_s) != self.opened_day);
        if due {
            match rotate(&self.shared, now_s, self.keep) {
                Ok(()) => match open(&self.path) {
                    Ok(f) => {
                        self.file = f;
                        self.size = 0;
                        self.opened_day = files::day(now_s);
                    }
                    Err(e) => tracing::error!(error = %e, "cannot open a new CDR file after rotating; writing on to the rotated one"),
                },
                Err(e) => tracing::error!(error = %e, path = %self.path.display(), "cannot rotate the CDR file"),
            }
        }
        match self.file.write_all(batch) {
            Ok(()) => self.size += batch.len() as u64,
            Err(e) => tracing::error!(error = %e, path = %self.path.display(), "cannot write CDRs"),
        }
        self.shared.written.notify_one();
    }
}

/// Rename the current file to its rotated name (the shipper's cursor follows it), then delete the
/// oldest rotations beyond `keep` that the database already has.
fn rotate(shared: &Shared, now_s: u64, keep: usize) -> std::io::Result<()> {
    let l = &shared.layout;
    let mut name = l.rotated_name(now_s);
    let mut n = 1;
    while l.path(&name).try_exists().unwrap_or(false) {
        name = format!("{}-{n}.jsonl", l.rotated_name(now_s).trim_end_matches(".jsonl"));
        n += 1;
    }
    {
        let mut cursor = shared.cursor();
        std::fs::rename(l.path(&l.current), l.path(&name))?;
        if let Some(c) = cursor.as_mut().filter(|c| c.file == l.current) {
            c.file = name.clone();
            postgres::save_cursor(l, c);
        }
    }
    let unshipped = shared.cursor().as_ref().map(|c| c.file.clone());
    for old in files::to_delete(&l.rotated(), keep, unshipped.as_deref()) {
        if let Err(e) = std::fs::remove_file(l.path(&old)) {
            tracing::warn!(file = %old, error = %e, "cannot delete an old CDR file");
        }
    }
    tracing::info!(file = %name, "CDR file rotated");
    Ok(())
}
