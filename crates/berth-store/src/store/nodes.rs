//! The fleet's hosts and the operators' tokens.
//!
//! A host joins (a row, keyed by a stable id, with a unique name), then
//! heartbeats; the dispatcher marks the silent ones down. Everything about a
//! host is here, not in one server's memory, so that any server (and the
//! next leader) sees the same fleet.

use super::projects::{new_secret, secret_hash};
use super::rows::corrupt;
use super::{Dialect, Store};
use crate::error::StoreError;
use crate::ids::new_id;
use crate::model::{Millis, Node, NodeJoin, OperatorTokenInfo, PoolConfig};
use berth_core::time::now_millis;
use sqlx::any::AnyRow;
use sqlx::Row;
use std::collections::{BTreeMap, HashMap};

const NODE_COLUMNS: &str = "id, name, address, credential, drained, down, operator_labels, \
                            report, joined_at, last_heartbeat";

/// A heartbeat to record.
#[derive(Debug, Clone, Copy)]
pub struct HeartbeatWrite<'a> {
    pub node_id: &'a str,
    /// The host's heartbeat token, as presented.
    pub token: &'a str,
    /// The host's report (JSON).
    pub report: &'a str,
}

/// What a heartbeat found: the host as it stands now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeartbeatOutcome {
    pub node_id: String,
    pub name: String,
    pub drained: bool,
    /// The host had been marked down: it is back (and up now).
    pub was_down: bool,
}

/// One statement for heartbeats of distinct hosts (PostgreSQL): the hosts
/// found, by id. The second reference to `nodes` is read before the update,
/// so it tells which host was down.
async fn heartbeat_round(
    conn: &mut sqlx::AnyConnection,
    beats: &[HeartbeatWrite<'_>],
    round: &[usize],
    now: Millis,
) -> Result<HashMap<String, HeartbeatOutcome>, StoreError> {
    let values: Vec<String> = (0..round.len())
        .map(|k| format!("(${}, ${}, ${})", 3 * k + 2, 3 * k + 3, 3 * k + 4))
        .collect();
    // VALUES rows name their columns column1…
    let sql = format!(
        "UPDATE nodes AS n SET report = v.column3, last_heartbeat = $1, down = 0
         FROM nodes AS o, (VALUES {}) AS v
         WHERE o.id = n.id AND n.id = v.column1 AND n.heartbeat_sha256 = v.column2
         RETURNING n.id, n.name, n.drained, o.down",
        values.join(", ")
    );
    let mut query = sqlx::query(&sql).bind(now);
    for &i in round {
        query = query
            .bind(beats[i].node_id)
            .bind(secret_hash(beats[i].token))
            .bind(beats[i].report);
    }
    let mut found = HashMap::with_capacity(round.len());
    for row in query.fetch_all(&mut *conn).await? {
        let outcome = heartbeat_outcome(&row, row.try_get::<i64, _>("down")? != 0)?;
        found.insert(outcome.node_id.clone(), outcome);
    }
    Ok(found)
}

/// A heartbeat's outcome from a row of `id, name, drained`.
fn heartbeat_outcome(row: &AnyRow, was_down: bool) -> Result<HeartbeatOutcome, StoreError> {
    Ok(HeartbeatOutcome {
        node_id: row.try_get("id")?,
        name: row.try_get("name")?,
        drained: row.try_get::<i64, _>("drained")? != 0,
        was_down,
    })
}

/// One heartbeat (SQLite): one statement when the host was up, a second
/// only for a host coming back from down.
async fn heartbeat_one(
    conn: &mut sqlx::AnyConnection,
    beat: &HeartbeatWrite<'_>,
    now: Millis,
) -> Result<Option<HeartbeatOutcome>, StoreError> {
    let hash = secret_hash(beat.token);
    for was_down in [false, true] {
        let rows = sqlx::query(
            "UPDATE nodes SET report = $2, last_heartbeat = $3, down = 0
             WHERE id = $1 AND heartbeat_sha256 = $4 AND down = $5
             RETURNING id, name, drained",
        )
        .bind(beat.node_id)
        .bind(beat.report)
        .bind(now)
        .bind(&hash)
        .bind(i64::from(was_down))
        // Every row: SQLite reports a failed commit only at the end.
        .fetch_all(&mut *conn)
        .await?;
        if let Some(row) = rows.first() {
            return heartbeat_outcome(row, was_down).map(Some);
        }
    }
    Ok(None)
}

impl Store {
    /// Registers a host, or re-registers one that presents the identity an
    /// earlier join gave it (it keeps that id, and its drain and operator
    /// labels). Returns the host and its new heartbeat token (shown once;
    /// the store keeps its hash). A name another host holds is a
    /// `Conflict`: two machines never share a name.
    pub async fn join_node(&self, join: &NodeJoin) -> Result<(Node, String), StoreError> {
        let heartbeat = new_secret()?;
        let now = now_millis();
        let mut conn = self.durable.acquire().await?;
        let mut tx = self.begin_write(&mut conn).await?;
        let holder: Option<(String, String)> =
            sqlx::query_as("SELECT id, credential FROM nodes WHERE name = $1")
                .bind(&join.name)
                .fetch_optional(&mut *tx)
                .await?;
        let known = match &join.node_id {
            Some(id) => {
                sqlx::query_scalar::<_, String>("SELECT id FROM nodes WHERE id = $1")
                    .bind(id)
                    .fetch_optional(&mut *tx)
                    .await?
            }
            // A join whose answer was lost (it timed out at the host after
            // the server had recorded it) is asked again without an id:
            // the host proves it is the one by its credential, which only
            // it and the server know.
            None => holder
                .as_ref()
                // Compared as digests: no timing tells how much matched.
                .filter(|(_, credential)| {
                    !credential.is_empty()
                        && secret_hash(credential) == secret_hash(&join.credential)
                })
                .map(|(id, _)| id.clone()),
        };
        let holder = holder.map(|(id, _)| id);
        if let Some(holder) = &holder {
            if known.as_ref() != Some(holder) {
                return Err(StoreError::Conflict(format!(
                    "a host named {:?} is in the fleet already (id {holder}): remove it with \
                     `berth node rm {}` or give this host another name",
                    join.name, join.name
                )));
            }
        }
        let id = match known {
            Some(id) => {
                sqlx::query(
                    "UPDATE nodes SET name = $2, address = $3, credential = $4,
                         heartbeat_sha256 = $5, report = $6, down = 0, last_heartbeat = $7
                     WHERE id = $1",
                )
                .bind(&id)
                .bind(&join.name)
                .bind(&join.address)
                .bind(&join.credential)
                .bind(secret_hash(&heartbeat))
                .bind(&join.report)
                .bind(now)
                .execute(&mut *tx)
                .await?;
                id
            }
            None => {
                let id = new_id();
                sqlx::query(
                    "INSERT INTO nodes (id, name, address, credential, heartbeat_sha256, report,
                         joined_at, last_heartbeat)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $7)",
                )
                .bind(&id)
                .bind(&join.name)
                .bind(&join.address)
                .bind(&join.credential)
                .bind(secret_hash(&heartbeat))
                .bind(&join.report)
                .bind(now)
                .execute(&mut *tx)
                .await?;
                id
            }
        };
        let row = sqlx::query(&format!("SELECT {NODE_COLUMNS} FROM nodes WHERE id = $1"))
            .bind(&id)
            .fetch_one(&mut *tx)
            .await?;
        let node = node(&row)?;
        tx.commit().await?;
        Ok((node, heartbeat))
    }

    /// Records one heartbeat; see [`Store::heartbeats`].
    pub async fn heartbeat(
        &self,
        node_id: &str,
        token: &str,
        report: &str,
    ) -> Result<Option<HeartbeatOutcome>, StoreError> {
        let beat = HeartbeatWrite {
            node_id,
            token,
            report,
        };
        let mut outcomes = self.heartbeats(&[beat]).await?;
        Ok(outcomes.pop().flatten())
    }

    /// Records heartbeats: each host's new report, and that it is alive (a
    /// host marked down is up again). One outcome per beat, in order:
    /// `None` when no host has that id and heartbeat token (removed, or a
    /// token of another host).
    ///
    /// The hottest write of a large fleet (every host every few seconds),
    /// so a server writes the beats that arrived together in one statement
    /// on PostgreSQL, on the relaxed connection (a heartbeat lost to a
    /// database crash is repeated seconds later). SQLite, whose writes are
    /// serialized anyway and whose fleets are small, takes them one by one.
    pub async fn heartbeats(
        &self,
        beats: &[HeartbeatWrite<'_>],
    ) -> Result<Vec<Option<HeartbeatOutcome>>, StoreError> {
        let now = now_millis();
        let mut outcomes = vec![None; beats.len()];
        let mut conn = self.relaxed.acquire().await?;
        // A host may beat twice in one batch (after a rejoin, with two
        // tokens): each statement updates a host once, so those go in
        // rounds of distinct hosts.
        let mut left: Vec<usize> = (0..beats.len()).collect();
        while !left.is_empty() {
            let mut seen = std::collections::HashSet::new();
            let (round, later): (Vec<usize>, Vec<usize>) = left
                .into_iter()
                .partition(|&i| seen.insert(beats[i].node_id));
            left = later;
            match self.dialect {
                Dialect::Postgres => {
                    let found = heartbeat_round(&mut conn, beats, &round, now).await?;
                    for i in round {
                        outcomes[i] = found.get(beats[i].node_id).cloned();
                    }
                }
                Dialect::Sqlite => {
                    for i in round {
                        outcomes[i] = heartbeat_one(&mut conn, &beats[i], now).await?;
                    }
                }
            }
        }
        Ok(outcomes)
    }

    /// Marks down every host whose last heartbeat is older than `cutoff`
    /// and returns them. Each host is returned by exactly one call, however
    /// many servers call it at once (the update is conditional on `down =
    /// 0`).
    pub async fn mark_silent_nodes_down(&self, cutoff: Millis) -> Result<Vec<Node>, StoreError> {
        let mut conn = self.durable.acquire().await?;
        let mut tx = self.begin_write(&mut conn).await?;
        self.check_fence(&mut tx).await?;
        let rows = sqlx::query(&format!(
            "UPDATE nodes SET down = 1 WHERE down = 0 AND last_heartbeat < $1
             RETURNING {NODE_COLUMNS}"
        ))
        .bind(cutoff)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        rows.iter().map(node).collect()
    }

    /// Every host, by name.
    pub async fn nodes(&self) -> Result<Vec<Node>, StoreError> {
        let rows = sqlx::query(&format!("SELECT {NODE_COLUMNS} FROM nodes ORDER BY name"))
            .fetch_all(&self.read)
            .await?;
        rows.iter().map(node).collect()
    }

    pub async fn node_by_name(&self, name: &str) -> Result<Option<Node>, StoreError> {
        self.node_where(NodeKey::Name, name).await
    }

    pub async fn node(&self, id: &str) -> Result<Option<Node>, StoreError> {
        self.node_where(NodeKey::Id, id).await
    }

    async fn node_where(&self, key: NodeKey, value: &str) -> Result<Option<Node>, StoreError> {
        let column = match key {
            NodeKey::Id => "id",
            NodeKey::Name => "name",
        };
        let row = sqlx::query(&format!(
            "SELECT {NODE_COLUMNS} FROM nodes WHERE {column} = $1"
        ))
        .bind(value)
        .fetch_optional(&self.read)
        .await?;
        row.as_ref().map(node).transpose()
    }

    /// Drains (no new work) or undrains a host; `None` if there is no such host.
    pub async fn set_node_drained(
        &self,
        name: &str,
        drained: bool,
    ) -> Result<Option<Node>, StoreError> {
        let done = sqlx::query("UPDATE nodes SET drained = $2 WHERE name = $1")
            .bind(name)
            .bind(i64::from(drained))
            .execute(&mut *self.durable.acquire().await?)
            .await?;
        if done.rows_affected() == 0 {
            return Ok(None);
        }
        self.node_by_name(name).await
    }

    /// Sets and removes operator labels of a host; `None` if there is no
    /// such host.
    pub async fn change_node_labels(
        &self,
        name: &str,
        set: &BTreeMap<String, String>,
        remove: &[String],
    ) -> Result<Option<Node>, StoreError> {
        let mut conn = self.durable.acquire().await?;
        let mut tx = self.begin_write(&mut conn).await?;
        let labels: Option<String> =
            sqlx::query_scalar("SELECT operator_labels FROM nodes WHERE name = $1")
                .bind(name)
                .fetch_optional(&mut *tx)
                .await?;
        let Some(labels) = labels else {
            return Ok(None);
        };
        let mut labels = parse_labels(&labels)?;
        for key in remove {
            labels.remove(key);
        }
        labels.extend(set.iter().map(|(k, v)| (k.clone(), v.clone())));
        let labels = serde_json::to_string(&labels).map_err(|e| corrupt("nodes", e.to_string()))?;
        sqlx::query("UPDATE nodes SET operator_labels = $2 WHERE name = $1")
            .bind(name)
            .bind(labels)
            .execute(&mut *tx)
            .await?;
        let row = sqlx::query(&format!("SELECT {NODE_COLUMNS} FROM nodes WHERE name = $1"))
            .bind(name)
            .fetch_one(&mut *tx)
            .await?;
        let node = node(&row)?;
        tx.commit().await?;
        Ok(Some(node))
    }

    /// Removes a host from the fleet; false if there is no such host. Its
    /// heartbeats are refused from then on; it may join again as a new host.
    pub async fn remove_node(&self, name: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM nodes WHERE name = $1")
            .bind(name)
            .execute(&mut *self.durable.acquire().await?)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    // ----- fair-share pools -------------------------------------------------

    /// Creates or replaces a pool's configuration.
    pub async fn set_pool(&self, pool: &PoolConfig) -> Result<(), StoreError> {
        let min = serde_json::to_string(&pool.min).map_err(|e| corrupt("pools", e.to_string()))?;
        let max = pool
            .max
            .map(|max| serde_json::to_string(&max))
            .transpose()
            .map_err(|e| corrupt("pools", e.to_string()))?;
        sqlx::query(
            "INSERT INTO pools (name, weight, min_resources, max_resources, updated_at)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (name) DO UPDATE
             SET weight = excluded.weight, min_resources = excluded.min_resources,
                 max_resources = excluded.max_resources, updated_at = excluded.updated_at",
        )
        .bind(&pool.name)
        .bind(i64::from(pool.weight))
        .bind(min)
        .bind(max)
        .bind(now_millis())
        .execute(&mut *self.durable.acquire().await?)
        .await?;
        Ok(())
    }

    /// Every configured pool, by name.
    pub async fn pools(&self) -> Result<Vec<PoolConfig>, StoreError> {
        let rows = sqlx::query(
            "SELECT name, weight, min_resources, max_resources FROM pools ORDER BY name",
        )
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|row| {
                let weight: i64 = row.try_get("weight")?;
                let min: String = row.try_get("min_resources")?;
                let max: Option<String> = row.try_get("max_resources")?;
                Ok(PoolConfig {
                    name: row.try_get("name")?,
                    weight: u32::try_from(weight)
                        .map_err(|_| corrupt("pools", format!("weight {weight}")))?,
                    min: serde_json::from_str(&min)
                        .map_err(|e| corrupt("pools", format!("min_resources: {e}")))?,
                    max: max
                        .map(|max| serde_json::from_str(&max))
                        .transpose()
                        .map_err(|e| corrupt("pools", format!("max_resources: {e}")))?,
                })
            })
            .collect()
    }

    /// Removes a pool's configuration (it is back to the defaults); false
    /// if it had none.
    pub async fn remove_pool(&self, name: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM pools WHERE name = $1")
            .bind(name)
            .execute(&mut *self.durable.acquire().await?)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    // ----- operator tokens --------------------------------------------------

    /// Creates an operator token and returns it with its secret (shown only
    /// now; the store keeps its SHA-256).
    pub async fn create_operator_token(
        &self,
        name: &str,
    ) -> Result<(OperatorTokenInfo, String), StoreError> {
        let secret = new_secret()?;
        let token = OperatorTokenInfo {
            id: new_id(),
            name: name.to_string(),
            created_at: now_millis(),
            revoked_at: None,
        };
        sqlx::query(
            "INSERT INTO operator_tokens (id, name, secret_sha256, created_at)
             VALUES ($1, $2, $3, $4)",
        )
        .bind(&token.id)
        .bind(&token.name)
        .bind(secret_hash(&secret))
        .bind(token.created_at)
        .execute(&mut *self.durable.acquire().await?)
        .await?;
        Ok((token, secret))
    }

    /// Whether a secret is a live (unrevoked) operator token.
    pub async fn authenticate_operator(&self, secret: &str) -> Result<bool, StoreError> {
        let found: Option<String> = sqlx::query_scalar(
            "SELECT id FROM operator_tokens WHERE secret_sha256 = $1 AND revoked_at IS NULL",
        )
        .bind(secret_hash(secret))
        .fetch_optional(&self.read)
        .await?;
        Ok(found.is_some())
    }

    pub async fn operator_tokens(&self) -> Result<Vec<OperatorTokenInfo>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, name, created_at, revoked_at FROM operator_tokens ORDER BY created_at, id",
        )
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(OperatorTokenInfo {
                    id: row.try_get("id")?,
                    name: row.try_get("name")?,
                    created_at: row.try_get("created_at")?,
                    revoked_at: row.try_get("revoked_at")?,
                })
            })
            .collect()
    }

    /// Revokes an operator token by id; false if no such (unrevoked) token.
    pub async fn revoke_operator_token(&self, id: &str) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE operator_tokens SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL",
        )
        .bind(id)
        .bind(now_millis())
        .execute(&mut *self.durable.acquire().await?)
        .await?;
        Ok(done.rows_affected() > 0)
    }
}

fn parse_labels(json: &str) -> Result<BTreeMap<String, String>, StoreError> {
    serde_json::from_str(json).map_err(|e| corrupt("nodes", format!("operator_labels: {e}")))
}

fn node(row: &AnyRow) -> Result<Node, StoreError> {
    let labels: String = row.try_get("operator_labels")?;
    Ok(Node {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        address: row.try_get("address")?,
        credential: row.try_get("credential")?,
        drained: row.try_get::<i64, _>("drained")? != 0,
        down: row.try_get::<i64, _>("down")? != 0,
        operator_labels: parse_labels(&labels)?,
        report: row.try_get("report")?,
        joined_at: row.try_get("joined_at")?,
        last_heartbeat: row.try_get("last_heartbeat")?,
    })
}

/// The unique columns a host is looked up by (a closed set, so that no
/// caller's string reaches the SQL text).
enum NodeKey {
    Id,
    Name,
}
