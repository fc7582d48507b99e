//! The only place that talks to the database.
//!
//! SQLite through sqlx, in WAL mode. Writes go through one dedicated connection (a pool of
//! one): SQLite admits a single writer anyway, and queueing writers in-process in FIFO
//! order gives far steadier latency than letting several connections spin on the busy
//! handler. Reads use a separate pool and never wait for writers (WAL). Two tasks take
//! work off that connection's hot path: `info_merge` commits concurrent
//! `driver_internal_info` merges (heartbeats) together in one transaction, and
//! `checkpoint` copies the WAL into the database file from a connection of its own, ahead
//! of the writer's own checkpoints.
//!
//! The SQL is kept portable (plain types, JSON as TEXT, timestamps as BIGINT microseconds,
//! `INSERT … ON CONFLICT`, no JSON functions: JSON merges happen in Rust) so that a
//! PostgreSQL backend can sit behind the same API. What a PostgreSQL backend would change:
//! `$n` instead of `?` placeholders, `BEGIN IMMEDIATE` (here: take the write lock at once)
//! becomes a plain `BEGIN` with row locks, `id INTEGER PRIMARY KEY` becomes `BIGSERIAL`,
//! the connection PRAGMAs go, and unique violations name constraints instead of columns.
//!
//! Domain types ([`Node`], [`Port`]) are deliberately not `Serialize`: the API layer owns
//! the wire representation.

mod checkpoint;
mod codec;
mod info_merge;
mod inspection;
mod nodes;
mod ports;

use std::path::{Path, PathBuf};
use std::time::Duration;

use ferric_shared::states::{Event, ProvisionState};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

pub use codec::normalize_mac;
pub use info_merge::{InfoChange, InfoView};
pub use inspection::{AppliedInspection, StoredInspection};
pub use nodes::{
    InvalidSortKey, LastError, Node, NodeListItem, NodeQuery, NodeSortKey, TakenOver, Transition,
    TransitionOutcome, UpdateError,
};
pub use ports::{Port, PortQuery, PortSortKey};

/// A JSON object as stored in the node's and port's dictionary fields.
pub type JsonMap = serde_json::Map<String, serde_json::Value>;

/// How long a connection waits for another process's write lock before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// WAL pages after which the writer checkpoints by itself, in the COMMIT that crosses
/// the mark (SQLite's default, stated so the pairing with `checkpoint` is visible).
const WRITER_AUTOCHECKPOINT_PAGES: &str = "1000";

/// Read connections; SQLite readers in WAL mode run in parallel.
const READ_CONNECTIONS: u32 = 4;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the database {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: sqlx::Error,
    },
    #[error("cannot bring the database schema up to date")]
    Migrate(#[source] sqlx::migrate::MigrateError),
    #[error("database operation failed")]
    Database(#[from] sqlx::Error),
    #[error("node {0} could not be found")]
    NodeNotFound(String),
    #[error("port {0} could not be found")]
    PortNotFound(String),
    #[error("marker {0} does not name an existing entry")]
    MarkerNotFound(String),
    /// A unique field already holds this value.
    #[error("a {kind} with {field} {value} already exists")]
    Conflict { kind: &'static str, field: &'static str, value: String },
    /// Optimistic concurrency: the entry changed since it was read.
    #[error("{kind} {uuid} was modified concurrently; re-read it and try again")]
    Stale { kind: &'static str, uuid: uuid::Uuid },
    #[error("node {uuid} is locked by {holder}")]
    Locked { uuid: uuid::Uuid, holder: String },
    #[error("node {uuid} is in provision state {current}, where {event} is not allowed")]
    InvalidState { uuid: uuid::Uuid, current: ProvisionState, event: Event },
    #[error("{target} is not a possible target for node {uuid} in provision state {current}")]
    InvalidTarget { uuid: uuid::Uuid, current: ProvisionState, target: ProvisionState },
    #[error("{0:?} is not a valid MAC address (six hexadecimal pairs separated by ':')")]
    InvalidMac(String),
    /// A stored value could not be decoded (written by something other than this module).
    #[error("stored {column} of {uuid} is invalid: {reason}")]
    Corrupt { uuid: String, column: &'static str, reason: String },
    /// The task that commits `driver_internal_info` merges is gone (the runtime that
    /// opened the store is shutting down).
    #[error("the store's merge writer has stopped")]
    WriterStopped,
    /// The transaction of a batch of `driver_internal_info` merges failed; the text is the
    /// database error (shared by every merge of the batch, so not kept as a source).
    #[error("committing driver_internal_info merges failed: {0}")]
    MergeBatch(String),
}

/// The database handle. Cheap to clone: the pools are shared.
#[derive(Debug, Clone)]
pub struct Store {
    write: SqlitePool,
    read: SqlitePool,
    /// The queue of the task that group-commits `driver_internal_info` merges.
    info_merges: tokio::sync::mpsc::Sender<info_merge::InfoMerge>,
}

impl Store {
    /// Opens (creating if missing) the SQLite database at `path` and runs the migrations.
    pub async fn open(path: &Path) -> Result<Store, StoreError> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|err| StoreError::Open {
                path: path.to_owned(),
                source: sqlx::Error::Io(err),
            })?;
        }
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // WAL + NORMAL keeps every committed transaction across a process crash; only
            // a power loss can drop the last few, which a conductor restart tolerates.
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(BUSY_TIMEOUT);
        let open_err = |source| StoreError::Open { path: path.to_owned(), source };
        // An automatic checkpoint runs inside the COMMIT that crosses the WAL threshold
        // (copying the WAL into the database file and syncing it) and holds up every
        // queued write behind it; under heartbeat load that made the slowest heartbeats
        // several times slower than the rest. `checkpoint::spawn` does that copying from a
        // connection of its own, so the writer's own checkpoint, which is still needed to
        // let the WAL start over from its beginning (and so stay bounded), finds little
        // left to copy.
        let write_options =
            options.clone().pragma("wal_autocheckpoint", WRITER_AUTOCHECKPOINT_PAGES);
        let write = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(write_options)
            .await
            .map_err(open_err)?;
        sqlx::migrate!("./migrations").run(&write).await.map_err(StoreError::Migrate)?;
        let read = SqlitePoolOptions::new()
            .max_connections(READ_CONNECTIONS)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(options.clone())
            .await
            .map_err(open_err)?;
        let info_merges = info_merge::spawn_writer(write.clone());
        checkpoint::spawn(options, write.clone(), info_merges.downgrade());
        Ok(Store { write, read, info_merges })
    }

    /// Runs SQLite's own consistency check; `Ok(true)` when it reports `ok`.
    pub async fn integrity_check(&self) -> Result<bool, StoreError> {
        let rows: Vec<(String,)> =
            sqlx::query_as("PRAGMA integrity_check").fetch_all(&self.read).await?;
        Ok(rows.len() == 1 && rows.first().is_some_and(|(text,)| text == "ok"))
    }

    /// Starts a write transaction that takes SQLite's write lock at once: a transaction
    /// that reads before it writes would otherwise fail with "database is locked" (not wait)
    /// when another connection wrote in between.
    async fn write_tx(&self) -> Result<sqlx::Transaction<'static, sqlx::Sqlite>, StoreError> {
        Ok(self.write.begin_with("BEGIN IMMEDIATE").await?)
    }

    /// Closes both pools, waiting for connections to be returned.
    pub async fn close(&self) {
        self.read.close().await;
        self.write.close().await;
    }
}
