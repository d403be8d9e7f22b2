//! CDRs into PostgreSQL: a task follows the CDR files from a persisted cursor and inserts each
//! complete line, a batch per transaction; the cursor moves (and is saved) only after the commit.
//! Delivery is at least once and the inserts are idempotent on the call's key, so every call has
//! exactly one row. While the database is unreachable the files are the spool: the task retries
//! every few seconds, logging once when it goes and once when it is back, and then replays in order.

use std::time::Duration;

use hatrunk_core::cdr::Cdr;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use super::{Cursor, Layout, Shared};

const SCHEMA: &str = include_str!("schema.sql");
/// Serialises the migration of nodes starting together (any constant the cluster agrees on).
const MIGRATION_LOCK: i64 = 0x6861_7472_756e_6b31;
/// Lines per transaction at most.
const BATCH: usize = 500;
/// Bytes read from a file at once.
const READ: usize = 1 << 20;

const INSERT_CALL: &str = "INSERT INTO hatrunk_calls (call_key, call_id, trunk, direction, from_uri, to_uri, start_at, answer_at, \
     end_at, disposition, cause, final_code, failover, failover_ms, primary_skipped, record) VALUES ($1, $2, $3, $4, $5, $6, \
     to_timestamp($7::bigint / 1000.0), to_timestamp($8::bigint / 1000.0), to_timestamp($9::bigint / 1000.0), $10, $11, $12, $13, \
     $14, $15, ($16::text)::jsonb) ON CONFLICT (call_key) DO NOTHING";
const INSERT_ATTEMPT: &str = "INSERT INTO hatrunk_attempts (call_key, n, account, node, zone, region, target, code, error, \
     elapsed_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT (call_key, n) DO NOTHING";

/// A call's key in the database: its Call-ID and start time (ms), fixed once the line is written.
pub fn call_key(c: &Cdr) -> String {
    format!("{}@{}", c.call_id, c.start_ms)
}

/// The saved cursor, or the start of the oldest file (what is already there is shipped too).
pub fn load_cursor(l: &Layout) -> Cursor {
    let saved = std::fs::read_to_string(l.cursor_path()).ok().and_then(|t| {
        let mut lines = t.lines();
        let file = lines.next()?.to_string();
        let offset = lines.next()?.parse().ok()?;
        Some(Cursor { file, offset })
    });
    let files = l.in_order();
    match saved.filter(|c| files.contains(&c.file)) {
        Some(c) => c,
        None => Cursor { file: files[0].clone(), offset: 0 },
    }
}

/// Save the cursor (a new file renamed over the old one: never half written).
pub fn save_cursor(l: &Layout, c: &Cursor) {
    let tmp = l.cursor_path().with_extension("pg-cursor.tmp");
    let write = || -> std::io::Result<()> {
        use std::io::Write;
        let mut f = std::fs::File::create(&tmp)?;
        write!(f, "{}\n{}\n", c.file, c.offset)?;
        f.sync_data()?;
        std::fs::rename(&tmp, l.cursor_path())
    };
    if let Err(e) = write() {
        tracing::warn!(error = %e, "cannot save the CDR database cursor (records may be shipped again; they are inserted once)");
    }
}

/// Follow the CDR files into the database at `url`, for the node's life.
pub async fn ship(url: String, shared: std::sync::Arc<Shared>) {
    let mut down_since: Option<String> = None;
    loop {
        let result = async {
            let (mut client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await?;
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    tracing::debug!(error = %e, "CDR database connection ended");
                }
            });
            migrate(&mut client).await?;
            if let Some(why) = down_since.take() {
                tracing::info!(was = %why, "CDR database reachable again: replaying the spooled CDRs in order");
            } else {
                tracing::info!("CDR database connected; schema version 1");
            }
            follow(&mut client, &shared).await
        }
        .await;
        if let Err(e) = result {
            if down_since.is_none() {
                tracing::warn!(error = %e, "CDR database unreachable: CDRs spool to the JSON-lines file and are replayed when it is back");
                down_since = Some(e.to_string());
            }
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

async fn migrate(client: &mut tokio_postgres::Client) -> Result<(), tokio_postgres::Error> {
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK]).await?;
    tx.batch_execute(SCHEMA).await?;
    tx.commit().await
}

/// Ship from the cursor on, waiting for new lines at the end; returns only on a database error.
async fn follow(client: &mut tokio_postgres::Client, shared: &Shared) -> Result<(), tokio_postgres::Error> {
    let l = &shared.layout;
    loop {
        let Some(at) = shared.cursor().clone() else {
            return Ok(());
        };
        let (lines, read) = read_lines(l, &at).await;
        if lines.is_empty() {
            if !advance(shared, &at).await {
                // at the end of the current file: wait for the writer (or a rotation)
                let _ = tokio::time::timeout(Duration::from_millis(500), shared.written.notified()).await;
            }
            continue;
        }
        insert(client, &lines).await?;
        let mut cursor = shared.cursor();
        if let Some(c) = cursor.as_mut() {
            // the file may have been renamed by a rotation meanwhile: same bytes, same offset
            c.offset = at.offset + read;
            save_cursor(l, c);
        }
    }
}

/// Complete lines after the cursor, and how many bytes they take.
async fn read_lines(l: &Layout, at: &Cursor) -> (Vec<String>, u64) {
    let Ok(mut f) = tokio::fs::File::open(l.path(&at.file)).await else {
        return (Vec::new(), 0); // renamed under us: the cursor names the new name next time
    };
    if f.seek(std::io::SeekFrom::Start(at.offset)).await.is_err() {
        return (Vec::new(), 0);
    }
    let mut buf = vec![0u8; READ];
    let n = f.read(&mut buf).await.unwrap_or(0);
    buf.truncate(n);
    let mut lines = Vec::new();
    let mut used = 0;
    for line in buf.split_inclusive(|b| *b == b'\n') {
        if !line.ends_with(b"\n") || lines.len() >= BATCH {
            break;
        }
        used += line.len();
        lines.push(String::from_utf8_lossy(&line[..line.len() - 1]).into_owned());
    }
    (lines, used as u64)
}

/// At the end of a file that is no longer written: move to the next one. False at the end of
/// the current file.
async fn advance(shared: &Shared, at: &Cursor) -> bool {
    let l = &shared.layout;
    if at.file == l.current {
        return false;
    }
    let len = tokio::fs::metadata(l.path(&at.file)).await.map(|m| m.len()).unwrap_or(0);
    if at.offset < len {
        return false; // a partial last line a crash left: wait, then it is skipped below
    }
    let files = l.in_order();
    let next = files.iter().position(|f| *f == at.file).and_then(|i| files.get(i + 1)).cloned().unwrap_or_else(|| l.current.clone());
    let mut cursor = shared.cursor();
    if cursor.as_ref() == Some(at) {
        let c = Cursor { file: next, offset: 0 };
        save_cursor(l, &c);
        *cursor = Some(c);
    }
    true
}

async fn insert(client: &mut tokio_postgres::Client, lines: &[String]) -> Result<(), tokio_postgres::Error> {
    let tx = client.transaction().await?;
    let call = tx.prepare(INSERT_CALL).await?;
    let attempt = tx.prepare(INSERT_ATTEMPT).await?;
    for line in lines {
        let c: Cdr = match serde_json::from_str(line) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, line = %line.chars().take(120).collect::<String>(), "a CDR line that does not parse is not shipped");
                continue;
            }
        };
        let key = call_key(&c);
        let text = |v: serde_json::Result<serde_json::Value>| v.ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default();
        let (direction, disposition, cause) =
            (text(serde_json::to_value(c.direction)), text(serde_json::to_value(c.disposition)), text(serde_json::to_value(c.cause)));
        let ms = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        tx.execute(
            &call,
            &[
                &key,
                &c.call_id,
                &c.trunk,
                &direction,
                &c.from,
                &c.to,
                &ms(c.start_ms),
                &c.answer_ms.map(ms),
                &ms(c.end_ms),
                &disposition,
                &cause,
                &c.final_code.map(i32::from),
                &c.failover,
                &c.failover_ms.map(ms),
                &c.primary_skipped,
                line,
            ],
        )
        .await?;
        for (n, a) in c.attempts.iter().enumerate() {
            let account = a.account.map(|r| text(serde_json::to_value(r)));
            tx.execute(
                &attempt,
                &[
                    &key,
                    &(n as i32),
                    &account,
                    &a.node.as_ref(),
                    &a.zone.as_ref(),
                    &a.region.as_ref(),
                    &a.target,
                    &a.code.map(i32::from),
                    &a.error,
                    &ms(a.elapsed_ms),
                ],
            )
            .await?;
        }
    }
    tx.commit().await
}
