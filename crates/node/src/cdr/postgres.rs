//! CDRs into PostgreSQL: a task follows the CDR files from a persisted cursor and inserts the
//! complete lines, up to 500 per transaction, as rows keyed by the call's Call-ID and start time
//! (`call_id@start_ms`); the cursor moves (and is saved) only after the commit.
//! Delivery is at least once and the inserts are idempotent on the call's key, so every call has
//! exactly one row. While the database is unreachable the files are the spool: the task retries
//! every few seconds, logging once when it goes and once when it is back, and then replays in order.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncSeekExt};

use super::{Cursor, Layout, Shared};

const SCHEMA: &str = include_str!("schema.sql");
/// Serialises the migration of nodes starting together (any constant the cluster agrees on).
const MIGRATION_LOCK: i64 = 0x6861_7472_756e_6b31;
/// Lines per transaction at most.
const BATCH: usize = 500;
/// Bytes read from a file at once.
const READ: usize = 1 << 20;

/// The lines of a batch, newline-separated, as one parameter: the database parses them, so a CDR
/// costs the node no more than its bytes (a statement per CDR cost 0.8x a call's own CPU time).
const LINES: &str = "WITH r AS (SELECT l::jsonb AS j FROM unnest(string_to_array($1::text, E'\\n')) AS l WHERE l <> '')";
const INSERT_CALLS: &str = "INSERT INTO hatrunk_calls (call_key, call_id, trunk, direction, from_uri, to_uri, start_at, \
     answer_at, end_at, disposition, cause, final_code, failover, failover_ms, primary_skipped, record) \
     SELECT (j->>'call_id') || '@' || (j->>'start_ms'), j->>'call_id', j->>'trunk', j->>'direction', j->>'from', j->>'to', \
     to_timestamp((j->>'start_ms')::bigint / 1000.0), to_timestamp((j->>'answer_ms')::bigint / 1000.0), \
     to_timestamp((j->>'end_ms')::bigint / 1000.0), j->>'disposition', j->>'cause', (j->>'final_code')::integer, \
     (j->>'failover')::boolean, (j->>'failover_ms')::bigint, coalesce((j->>'primary_skipped')::boolean, false), j FROM r \
     ON CONFLICT (call_key) DO NOTHING";
const INSERT_ATTEMPTS: &str = "INSERT INTO hatrunk_attempts (call_key, n, account, node, zone, region, target, code, error, \
     elapsed_ms) SELECT (j->>'call_id') || '@' || (j->>'start_ms'), (a.n - 1)::integer, a.v->>'account', a.v->>'node', \
     a.v->>'zone', a.v->>'region', a.v->>'target', (a.v->>'code')::integer, a.v->>'error', (a.v->>'elapsed_ms')::bigint \
     FROM r, jsonb_array_elements(j->'attempts') WITH ORDINALITY AS a(v, n) ON CONFLICT (call_key, n) DO NOTHING";
/// While less than a full batch waits, gather more for this long (the database is not the call path).
const GATHER: Duration = Duration::from_millis(250);

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
        let full = lines.len() >= BATCH;
        insert(client, &lines).await?;
        {
            let mut cursor = shared.cursor();
            if let Some(c) = cursor.as_mut() {
                // the file may have been renamed by a rotation meanwhile: same bytes, same offset
                c.offset = at.offset + read;
                save_cursor(l, c);
            }
        }
        if !full {
            tokio::time::sleep(GATHER).await;
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
        // no complete line left in a file no longer written: a crash cut its last line short
        tracing::warn!(file = %at.file, bytes = len - at.offset, "a CDR file ends in a partial line; it is not shipped");
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
    // a line that is not JSON would fail the whole batch in the database, and then every retry
    let mut text = String::with_capacity(lines.iter().map(|l| l.len() + 1).sum());
    for line in lines {
        if serde_json::from_str::<serde::de::IgnoredAny>(line).is_err() {
            tracing::warn!(line = %line.chars().take(120).collect::<String>(), "a CDR line that does not parse is not shipped");
            continue;
        }
        text.push_str(line);
        text.push('\n');
    }
    let tx = client.transaction().await?;
    tx.execute(&format!("{LINES} {INSERT_CALLS}"), &[&text]).await?;
    tx.execute(&format!("{LINES} {INSERT_ATTEMPTS}"), &[&text]).await?;
    tx.commit().await
}
