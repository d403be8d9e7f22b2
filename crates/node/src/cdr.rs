//! The CDR writer: one JSON object per line, appended to `[cdr] path`, off the SIP path (a channel
//! feeds a task that owns the file). Times are put on the wall clock as it is when written.

use std::path::PathBuf;

use hatrunk_core::cdr::Cdr;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

use crate::error::NodeError;

/// Open (create) the CDR file and return the sender that feeds it.
pub async fn start(path: PathBuf) -> Result<mpsc::Sender<Box<Cdr>>, NodeError> {
    if let Some(dir) = path.parent() {
        tokio::fs::create_dir_all(dir).await.map_err(|source| NodeError::Io { what: dir.display().to_string(), source })?;
    }
    let mut file = tokio::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .await
        .map_err(|source| NodeError::Io { what: path.display().to_string(), source })?;
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
                if let Ok(mut line) = serde_json::to_vec(&c) {
                    line.push(b'\n');
                    batch.extend_from_slice(&line);
                }
            };
            push(cdr);
            while let Ok(more) = rx.try_recv() {
                push(more);
            }
            if let Err(e) = file.write_all(&batch).await {
                tracing::error!(error = %e, path = %path.display(), "cannot write CDRs");
            }
            let _ = file.flush().await;
        }
    });
    Ok(tx)
}
