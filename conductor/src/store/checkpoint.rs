//! WAL checkpoints ahead of the write path.
//!
//! SQLite's automatic checkpoint runs in the writer's COMMIT once the WAL passes its
//! threshold, and every write queued behind it waits while it copies the WAL into the
//! database file. This task copies it every [`INTERVAL`] from a connection of its own, so
//! that the writer's checkpoint, still needed to let the WAL start over from its beginning
//! and stay bounded, finds little left to do. A `PASSIVE` checkpoint waits for no reader
//! or writer; whatever it could not copy is copied on a later round.

use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqlitePool};
use sqlx::{ConnectOptions, Connection};
use tokio::sync::mpsc::WeakSender;

use super::info_merge::InfoMerge;

/// How often the WAL is checkpointed.
const INTERVAL: Duration = Duration::from_millis(100);

/// Starts checkpointing the database of `options`. The task ends once the store is
/// closed (`write` is closed) or every handle to it is gone (`alive` has no sender left).
pub(super) fn spawn(
    options: SqliteConnectOptions,
    write: SqlitePool,
    alive: WeakSender<InfoMerge>,
) {
    tokio::spawn(async move {
        let mut conn = match options.connect().await {
            Ok(conn) => conn,
            Err(err) => {
                tracing::warn!(error = %crate::error_chain(&err),
                    "cannot open the checkpoint connection; the WAL will not be checkpointed");
                return;
            }
        };
        loop {
            tokio::time::sleep(INTERVAL).await;
            if write.is_closed() || alive.upgrade().is_none() {
                break;
            }
            if let Err(err) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)").execute(&mut conn).await
            {
                tracing::debug!(error = %crate::error_chain(&err), "WAL checkpoint failed; retrying later");
            }
        }
        let _ = conn.close().await;
    });
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use sqlx::sqlite::SqliteConnectOptions;
    use sqlx::{ConnectOptions, Connection};

    use crate::store::{Node, Store};

    /// Whether the database file alone (without its WAL) holds a node named `name` (not
    /// even the table is there before the first checkpoint).
    async fn main_file_has(db: &std::path::Path, name: &str) -> bool {
        let dir = tempfile::tempdir().unwrap();
        let copy = dir.path().join("copy.db");
        std::fs::copy(db, &copy).unwrap();
        let mut conn = SqliteConnectOptions::new().filename(&copy).connect().await.unwrap();
        let found: Option<(i64,)> = sqlx::query_as("SELECT id FROM nodes WHERE name = ?")
            .bind(name)
            .fetch_optional(&mut conn)
            .await
            .ok()
            .flatten();
        conn.close().await.unwrap();
        found.is_some()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn committed_writes_reach_the_database_file_before_the_writer_checkpoints() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("f.db");
        let store = Store::open(&db).await.unwrap();
        let mut node = Node::new("fake-hardware");
        node.name = Some("checkpointed".into());
        store.create_node(&node).await.unwrap();
        // One small write does not reach the writer's own checkpoint threshold: right
        // after the commit the row is only in the WAL.
        assert!(!main_file_has(&db, "checkpointed").await);
        let deadline = Instant::now() + super::INTERVAL * 20;
        while !main_file_has(&db, "checkpointed").await {
            assert!(Instant::now() < deadline, "no checkpoint within {:?}", super::INTERVAL * 20);
            tokio::time::sleep(super::INTERVAL / 4).await;
        }
        store.close().await;
    }
}
