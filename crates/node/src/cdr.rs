//! CDRs: one JSON object per line, appended to `[cdr] path` off the SIP path (a channel feeds a
//! task that owns the file), rotated by size and by UTC day with `keep_files` rotations kept, and
//! with `[cdr] postgres` shipped from those files into PostgreSQL (`cdr/postgres.rs`). The files
//! are the spool: a CDR is on disk before the database sees it, so a database outage loses
//! nothing and the call path never waits for it. Times are put on the wall clock as it is when
//! written.

use std::sync::{Arc, Mutex};

use hatrunk_core::cdr::Cdr;
use tokio::io::AsyncWriteExt;
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

/// Open (create) the CDR file, start shipping to PostgreSQL if configured, and return the sender
/// that feeds the file (and `recent`, the status page's view of the last CDRs).
pub async fn start(
    path: std::path::PathBuf,
    cfg: &CdrSection,
    recent: Arc<crate::recent::Recent>,
) -> Result<mpsc::Sender<Box<Cdr>>, NodeError> {
    let layout = Layout::of(&path);
    tokio::fs::create_dir_all(&layout.dir).await.map_err(io(&layout.dir))?;
    let open =
        |p: std::path::PathBuf| async move { tokio::fs::OpenOptions::new().create(true).append(true).open(&p).await.map_err(io(&p)) };
    let mut file = open(path.clone()).await?;
    let shared = Arc::new(Shared { layout: layout.clone(), cursor: Mutex::new(None), written: Notify::new() });
    if let Some(url) = &cfg.postgres {
        *shared.cursor() = Some(postgres::load_cursor(&layout));
        tokio::spawn(postgres::ship(url.clone(), shared.clone()));
    }
    let (rotate_bytes, rotate_daily, keep) = (cfg.rotate_bytes, cfg.rotate_daily, cfg.keep_files);
    let mut size = file.metadata().await.map(|m| m.len()).unwrap_or(0);
    let mut opened_day = files::day(crate::runtime::wall_ms() / 1000);
    let (tx, mut rx) = mpsc::channel::<Box<Cdr>>(65_536);
    tokio::spawn(async move {
        while let Some(cdr) = rx.recv().await {
            let mut batch = Vec::new();
            // the node's clock does not follow steps of the system clock; the record does
            let shift = crate::runtime::wall_ms() as i64 - crate::runtime::node_ms() as i64;
            let mut push = |mut c: Box<Cdr>| {
                if shift.abs() > 1 {
                    c.shift(shift);
                }
                recent.saw(&c);
                if let Ok(mut line) = serde_json::to_vec(&c) {
                    line.push(b'\n');
                    batch.extend_from_slice(&line);
                }
            };
            push(cdr);
            while let Ok(more) = rx.try_recv() {
                push(more);
            }
            let now_s = crate::runtime::wall_ms() / 1000;
            let due = (rotate_bytes > 0 && size > 0 && size + batch.len() as u64 > rotate_bytes)
                || (rotate_daily && size > 0 && files::day(now_s) != opened_day);
            if due {
                match rotate(&shared, now_s, keep).await {
                    Ok(()) => match open(path.clone()).await {
                        Ok(f) => {
                            file = f;
                            size = 0;
                            opened_day = files::day(now_s);
                        }
                        Err(e) => tracing::error!(error = %e, "cannot open a new CDR file after rotating; writing on to the rotated one"),
                    },
                    Err(e) => tracing::error!(error = %e, path = %path.display(), "cannot rotate the CDR file"),
                }
            }
            match file.write_all(&batch).await {
                Ok(()) => size += batch.len() as u64,
                Err(e) => tracing::error!(error = %e, path = %path.display(), "cannot write CDRs"),
            }
            let _ = file.flush().await;
            shared.written.notify_one();
        }
    });
    Ok(tx)
}

/// Rename the current file to its rotated name (the shipper's cursor follows it), then delete the
/// oldest rotations beyond `keep` that the database already has.
async fn rotate(shared: &Shared, now_s: u64, keep: usize) -> std::io::Result<()> {
    let l = &shared.layout;
    let mut name = l.rotated_name(now_s);
    let mut n = 1;
    while tokio::fs::try_exists(l.path(&name)).await.unwrap_or(false) {
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
        if let Err(e) = tokio::fs::remove_file(l.path(&old)).await {
            tracing::warn!(file = %old, error = %e, "cannot delete an old CDR file");
        }
    }
    tracing::info!(file = %name, "CDR file rotated");
    Ok(())
}
