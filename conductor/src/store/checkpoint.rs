//! WAL checkpoints off the write path.
//!
//! The writer connection has automatic checkpoints turned off (see `Store::open`), so
//! this task copies the WAL back into the database file every [`INTERVAL`] from a
//! connection of its own. A `PASSIVE` checkpoint waits for no reader or writer; whatever
//! it could not copy is copied on a later round. Between rounds the WAL grows by at most
//! one interval's writes.

use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqlitePool};
use sqlx::{ConnectOptions, Connection};
use tokio::sync::mpsc::WeakSender;

use super::info_merge::InfoMerge;

/// How often the WAL is checkpointed.
const INTERVAL: Duration = Duration::from_millis(500);

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
