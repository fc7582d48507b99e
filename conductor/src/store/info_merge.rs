//! Group commit for `driver_internal_info` merges (every heartbeat makes one).
//!
//! One autocommit UPDATE per heartbeat, after a separate read of the node, made each
//! heartbeat two round trips to SQLite's connection threads plus its own transaction (a
//! WAL commit) on the single writer connection; at thousands of heartbeats a second the
//! thread hand-offs and per-transaction costs were the bottleneck. Instead, callers queue
//! their merge and await its outcome; one task takes everything queued so far and applies
//! it in one `BEGIN IMMEDIATE` transaction (one SELECT of all the rows, one UPDATE of all
//! of them), then answers each caller after the COMMIT. Under load, batches grow by
//! themselves while the previous one commits; idle, a merge commits alone at once.
//!
//! A merge may first look at the node (its state, reservation and current info) and
//! refuse: the heartbeat's token and callback checks run this way, so they see exactly
//! the row they change, in the same transaction.
//!
//! Durability is unchanged: a caller's `Ok` comes after the COMMIT of a transaction that
//! holds its merge, with the store's WAL + `synchronous=NORMAL` guarantee (kept across a
//! process crash, the last transactions may be lost on power loss).

use std::collections::HashMap;

use ferric_shared::states::ProvisionState;
use sqlx::sqlite::SqlitePool;
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use super::codec::{json_text, now, to_micros};
use super::nodes::{args_of, placeholders, Bind};
use super::{JsonMap, StoreError};

/// The most merges one transaction applies; bounds the statement's parameters (three per
/// node) and how long other writers wait behind one batch.
const MAX_BATCH: usize = 256;

/// Merges waiting for the writer; senders wait when it is full.
const QUEUE: usize = 4096;

/// What a merge sees of its node, as of the transaction that will write it.
#[derive(Debug)]
pub struct InfoView<'a> {
    pub uuid: Uuid,
    pub provision_state: ProvisionState,
    pub reservation: Option<&'a str>,
    pub driver_internal_info: &'a JsonMap,
}

/// The keys a merge sets and removes.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct InfoChange {
    pub set: JsonMap,
    pub remove: Vec<String>,
    /// Also set `provision_updated_at` to now: a heartbeat in a wait state shows the
    /// agent is alive, so the wait's timeout counts from it (Ironic's
    /// `touch_provisioning`).
    pub touch_provisioning: bool,
}

/// Decides a merge from the node: `None` refuses it (the caller keeps its own reason).
/// Runs inside the writer's open transaction, so it must be quick and must not block.
pub(super) type Decide = Box<dyn FnOnce(&InfoView<'_>) -> Option<InfoChange> + Send>;

/// How a merge ended, when the database did not fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Merged {
    /// Committed; the node's provision state at that moment.
    Applied(ProvisionState),
    /// The decision refused it; nothing was written for it.
    Refused,
}

/// One caller's merge and where its outcome goes.
pub(super) struct InfoMerge {
    pub uuid: Uuid,
    pub decide: Decide,
    pub done: oneshot::Sender<Result<Merged, StoreError>>,
}

/// Starts the batching writer on `write` and returns its queue. The task ends when every
/// sender is gone.
pub(super) fn spawn_writer(write: SqlitePool) -> mpsc::Sender<InfoMerge> {
    let (sender, receiver) = mpsc::channel(QUEUE);
    tokio::spawn(run(write, receiver));
    sender
}

async fn run(write: SqlitePool, mut queue: mpsc::Receiver<InfoMerge>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while queue.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let merges = std::mem::take(&mut batch);
        let uuids: Vec<Uuid> = merges.iter().map(|m| m.uuid).collect();
        let (decides, dones): (Vec<Decide>, Vec<_>) =
            merges.into_iter().map(|m| (m.decide, m.done)).unzip();
        match apply_batch(&write, &uuids, decides).await {
            Ok(outcomes) => {
                for (done, outcome) in dones.into_iter().zip(outcomes) {
                    // A caller that went away no longer wants its answer; the merge stays.
                    let _ = done.send(outcome);
                }
            }
            Err(err) => {
                // The database failed the batch as a whole (a decision cannot: it only
                // refuses its own merge), and nothing of it was committed. The decisions
                // were consumed, so every caller gets the failure; none of them was told
                // its merge happened.
                tracing::warn!(error = %crate::error_chain(&err), merges = dones.len(),
                    "driver_internal_info merges failed");
                let message = crate::error_chain(&err);
                for done in dones {
                    let _ = done.send(Err(StoreError::MergeBatch(message.clone())));
                }
            }
        }
    }
}

/// A node's row as the batch has it so far.
struct Pending {
    provision_state: ProvisionState,
    reservation: Option<String>,
    info: JsonMap,
    /// Merges applied to it in this batch; the node's `version` grows by as many, as if
    /// each had been written alone.
    writes: i64,
    /// Whether one of them touches `provision_updated_at`.
    touch: bool,
}

/// One node's row, or the column that could not be decoded and why.
type Row = Result<Pending, (&'static str, String)>;

/// Decodes one selected row.
fn pending(state: &str, reservation: Option<String>, info: &str) -> Row {
    let corrupt = |column, reason: String| (column, reason);
    let provision_state =
        state.parse().map_err(|e: ferric_shared::states::UnknownProvisionState| {
            corrupt("provision_state", e.to_string())
        })?;
    let info =
        serde_json::from_str(info).map_err(|e| corrupt("driver_internal_info", e.to_string()))?;
    Ok(Pending { provision_state, reservation, info, writes: 0, touch: false })
}

/// Applies the merges in order in one transaction. The outer error means nothing was
/// written; otherwise each merge's own outcome (a missing node or an undecodable stored
/// row fails the merges of that node only).
async fn apply_batch(
    write: &SqlitePool,
    uuids: &[Uuid],
    decides: Vec<Decide>,
) -> Result<Vec<Result<Merged, StoreError>>, StoreError> {
    let ids: Vec<String> = uuids.iter().map(Uuid::to_string).collect();
    let mut distinct: Vec<&str> = ids.iter().map(String::as_str).collect();
    distinct.sort_unstable();
    distinct.dedup();

    let mut tx = write.begin_with("BEGIN IMMEDIATE").await?;
    let select = format!(
        "SELECT uuid, provision_state, reservation, driver_internal_info FROM nodes \
         WHERE uuid IN ({})",
        placeholders(distinct.len())
    );
    let mut query = sqlx::query_as::<_, (String, String, Option<String>, String)>(&select);
    for id in &distinct {
        query = query.bind(*id);
    }
    let mut rows: HashMap<String, Row> = query
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .map(|(id, state, reservation, info)| {
            let row = pending(&state, reservation, &info);
            (id, row)
        })
        .collect();

    let mut outcomes = Vec::with_capacity(ids.len());
    for ((uuid, id), decide) in uuids.iter().zip(&ids).zip(decides) {
        let node = match rows.get_mut(id.as_str()) {
            None => {
                outcomes.push(Err(StoreError::NodeNotFound(id.clone())));
                continue;
            }
            Some(Err((column, reason))) => {
                outcomes.push(Err(StoreError::Corrupt {
                    uuid: id.clone(),
                    column,
                    reason: reason.clone(),
                }));
                continue;
            }
            Some(Ok(node)) => node,
        };
        let view = InfoView {
            uuid: *uuid,
            provision_state: node.provision_state,
            reservation: node.reservation.as_deref(),
            driver_internal_info: &node.info,
        };
        // A panicking decision must not take the writer (and every later merge) down.
        let decided = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| decide(&view)));
        match decided {
            Err(_) => {
                outcomes.push(Err(StoreError::MergeBatch("the merge's decision panicked".into())))
            }
            Ok(Some(change)) => {
                for key in &change.remove {
                    node.info.remove(key);
                }
                node.info.extend(change.set);
                node.writes += 1;
                node.touch |= change.touch_provisioning;
                outcomes.push(Ok(Merged::Applied(node.provision_state)));
            }
            Ok(None) => outcomes.push(Ok(Merged::Refused)),
        }
    }

    let changed: Vec<(String, Pending)> = rows
        .into_iter()
        .filter_map(|(id, row)| row.ok().filter(|node| node.writes > 0).map(|node| (id, node)))
        .collect();
    if !changed.is_empty() {
        // One statement for the whole batch; the CTE form is also PostgreSQL's.
        let values = vec!["(?, ?, ?, ?)"; changed.len()].join(", ");
        let sql = format!(
            "WITH merged(uuid, info, writes, touch) AS (VALUES {values}) \
             UPDATE nodes SET driver_internal_info = merged.info, updated_at = ?, \
             provision_updated_at = CASE WHEN merged.touch = 1 THEN ? \
             ELSE nodes.provision_updated_at END, \
             version = version + merged.writes FROM merged WHERE nodes.uuid = merged.uuid"
        );
        let mut binds = Vec::with_capacity(changed.len() * 4 + 2);
        for (id, node) in changed {
            binds.extend([
                Bind::Text(id),
                Bind::Text(json_text(&node.info)),
                Bind::Int(node.writes),
                Bind::Int(i64::from(node.touch)),
            ]);
        }
        let at = to_micros(now());
        binds.push(Bind::Int(at));
        binds.push(Bind::Int(at));
        sqlx::query_with(&sql, args_of(binds)?).execute(&mut *tx).await?;
    }
    tx.commit().await?;
    Ok(outcomes)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::store::{Node, Store, UpdateError};

    fn change(value: serde_json::Value, remove: &[&str]) -> InfoChange {
        let serde_json::Value::Object(set) = value else { panic!("not an object") };
        InfoChange {
            set,
            remove: remove.iter().map(|k| (*k).to_owned()).collect(),
            touch_provisioning: false,
        }
    }

    async fn node_with(store: &Store, info: serde_json::Value, reservation: Option<&str>) -> Node {
        let mut node = Node::new("fake-hardware");
        node.provision_state = ProvisionState::CleanWait;
        let serde_json::Value::Object(info) = info else { panic!("not an object") };
        node.driver_internal_info = info;
        node.reservation = reservation.map(str::to_owned);
        store.create_node(&node).await.unwrap()
    }

    #[tokio::test]
    async fn one_batch_applies_in_order_refuses_alone_and_counts_each_write() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("f.db")).await.unwrap();
        let a = node_with(&store, json!({"keep": 1, "drop": 2}), None).await;
        let b = node_with(&store, json!({"token": "t"}), Some("c1")).await;
        let missing = Uuid::new_v4();
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen_b = seen.clone();
        let decides: Vec<Decide> = vec![
            Box::new(|_| Some(change(json!({"n": 1}), &["drop"]))),
            // The second merge of `a` sees the first one's result.
            Box::new(|view| {
                assert_eq!(view.driver_internal_info.get("n"), Some(&json!(1)));
                assert!(!view.driver_internal_info.contains_key("drop"));
                Some(change(json!({"n": 2}), &[]))
            }),
            Box::new(move |view| {
                seen_b.lock().unwrap().push((view.uuid, view.reservation.map(str::to_owned)));
                None
            }),
            Box::new(|_| Some(change(json!({"never": true}), &[]))),
        ];
        let outcomes =
            apply_batch(&store.write, &[a.uuid, a.uuid, b.uuid, missing], decides).await.unwrap();
        assert_eq!(outcomes.len(), 4);
        let expected = [Merged::Applied(ProvisionState::CleanWait); 2];
        assert_eq!(outcomes[0].as_ref().unwrap(), &expected[0]);
        assert_eq!(outcomes[1].as_ref().unwrap(), &expected[1]);
        assert_eq!(outcomes[2].as_ref().unwrap(), &Merged::Refused);
        assert!(
            matches!(&outcomes[3], Err(StoreError::NodeNotFound(id)) if *id == missing.to_string())
        );
        assert_eq!(*seen.lock().unwrap(), vec![(b.uuid, Some("c1".to_owned()))]);

        let a_now = store.get_node(&a.uuid.to_string()).await.unwrap();
        assert_eq!(
            serde_json::Value::Object(a_now.driver_internal_info),
            json!({"keep": 1, "n": 2})
        );
        assert_eq!(a_now.version, a.version + 2);
        let b_now = store.get_node(&b.uuid.to_string()).await.unwrap();
        assert_eq!(b_now.version, b.version);
        assert_eq!(b_now.driver_internal_info, b.driver_internal_info);
    }

    #[tokio::test]
    async fn an_undecodable_row_fails_its_own_merges_only() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("f.db")).await.unwrap();
        let bad = node_with(&store, json!({}), None).await;
        let good = node_with(&store, json!({}), None).await;
        sqlx::query("UPDATE nodes SET driver_internal_info = 'not json' WHERE uuid = ?")
            .bind(bad.uuid.to_string())
            .execute(&store.write)
            .await
            .unwrap();
        let decides: Vec<Decide> = vec![
            Box::new(|_| Some(change(json!({"x": 1}), &[]))),
            Box::new(|_| Some(change(json!({"x": 2}), &[]))),
            Box::new(|_| panic!("a decision that panics")),
        ];
        let outcomes =
            apply_batch(&store.write, &[bad.uuid, good.uuid, good.uuid], decides).await.unwrap();
        assert!(matches!(
            &outcomes[0],
            Err(StoreError::Corrupt { column: "driver_internal_info", .. })
        ));
        assert_eq!(outcomes[1].as_ref().unwrap(), &Merged::Applied(ProvisionState::CleanWait));
        assert!(matches!(&outcomes[2], Err(StoreError::MergeBatch(_))));
        let good_now = store.get_node(&good.uuid.to_string()).await.unwrap();
        assert_eq!(good_now.driver_internal_info.get("x"), Some(&json!(2)));
        assert_eq!(good_now.version, good.version + 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn typed_refusals_come_back_and_concurrent_merges_all_land() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("f.db")).await.unwrap();
        let node = node_with(&store, json!({"agent_secret_token": "right"}), None).await;
        let refused = store
            .update_driver_internal_info_with(node.uuid, |view| {
                match view.driver_internal_info.get("agent_secret_token") {
                    Some(t) if t == "wrong" => Ok(InfoChange::default()),
                    _ => Err(format!("token mismatch on {}", view.uuid)),
                }
            })
            .await;
        assert!(
            matches!(&refused, Err(UpdateError::Rejected(msg)) if *msg == format!("token mismatch on {}", node.uuid))
        );
        assert_eq!(store.get_node(&node.uuid.to_string()).await.unwrap().version, node.version);

        // Many callers at once: each lands exactly once, whatever batches they shared.
        let tasks: Vec<_> = (0..200)
            .map(|i| {
                let store = store.clone();
                tokio::spawn(async move {
                    store
                        .update_driver_internal_info_with(node.uuid, move |view| {
                            assert_eq!(view.provision_state, ProvisionState::CleanWait);
                            Ok::<_, String>(change(json!({format!("k{i}"): i}), &[]))
                        })
                        .await
                })
            })
            .collect();
        for task in tasks {
            assert_eq!(task.await.unwrap().unwrap(), ProvisionState::CleanWait);
        }
        let after = store.get_node(&node.uuid.to_string()).await.unwrap();
        assert_eq!(after.version, node.version + 200);
        assert_eq!(after.driver_internal_info.len(), 201);
        assert_eq!(after.driver_internal_info.get("k199"), Some(&json!(199)));
    }
}
