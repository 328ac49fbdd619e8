//! Overlay networks of projects, and their tasks' addresses.
//!
//! The store gives out both VNIs and addresses, in write transactions, so
//! that two servers (or a server and its restarted self) never give the
//! same one twice: VNIs grow and are never reused (a host may still hold
//! a dead network's forwarding entries), an address is held by its task
//! while the task is queued or runs, so a retry on another host keeps it.

use super::rows::corrupt;
use super::Store;
use crate::error::StoreError;
use crate::model::*;
use ipnet::Ipv4Net;
use sqlx::any::AnyRow;
use sqlx::Row;
use std::collections::HashSet;
use std::net::Ipv4Addr;

pub use berth_core::network::FIRST_FLEET_VNI;
/// The largest VNI VXLAN carries (24 bits).
pub const LAST_VNI: u32 = 0xff_ffff;
/// Where overlay subnets come from when none is given: /24s of
/// 10.128.0.0/11, clear of the pools a host's own networks use
/// (10.88.0.0/13 and 10.96.0.0/11).
pub const FLEET_OVERLAY_POOL: Ipv4Net = Ipv4Net::new_assert(Ipv4Addr::new(10, 128, 0, 0), 11);
const POOL_PREFIX: u8 = 24;

/// The statuses in which a task keeps its address.
const HOLDING: &str = "('queued', 'preparing', 'running')";

const OVERLAY_COLUMNS: &str = "project_id, name, vni, subnet, internal, created_at";

impl Store {
    // ----- overlay networks ----------------------------------------------------

    /// Makes a project's overlay network: the next VNI, the given subnet
    /// or the first free /24 of [`FLEET_OVERLAY_POOL`]. A name the project
    /// already has, a project at its `limit` of networks, or a subnet
    /// overlapping another overlay's (any project's) is a `Conflict`;
    /// nothing is stored.
    pub async fn create_overlay(
        &self,
        project_id: &str,
        new: &NewOverlay,
        limit: usize,
        now: Millis,
    ) -> Result<OverlayNetwork, StoreError> {
        let mut conn = self.durable.acquire().await?;
        let mut tx = self.begin_write(&mut conn).await?;
        if self.dialect == super::Dialect::Postgres {
            // Serializes creates: the overlap check reads every subnet.
            sqlx::query("LOCK TABLE overlay_networks IN SHARE ROW EXCLUSIVE MODE")
                .execute(&mut *tx)
                .await?;
        }
        let exists =
            sqlx::query("SELECT 1 FROM overlay_networks WHERE project_id = $1 AND name = $2")
                .bind(project_id)
                .bind(&new.name)
                .fetch_optional(&mut *tx)
                .await?;
        if exists.is_some() {
            return Err(StoreError::Conflict(format!(
                "the project already has a network named {:?}",
                new.name
            )));
        }
        let owned: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM overlay_networks WHERE project_id = $1")
                .bind(project_id)
                .fetch_one(&mut *tx)
                .await?;
        if usize::try_from(owned).unwrap_or(usize::MAX) >= limit {
            return Err(StoreError::Conflict(format!(
                "the project has {owned} networks, its limit: remove one first"
            )));
        }
        let mut taken = Vec::new();
        for row in sqlx::query("SELECT subnet FROM overlay_networks")
            .fetch_all(&mut *tx)
            .await?
        {
            taken.push(subnet_of(&row)?);
        }
        let subnet = choose_subnet(new.subnet, &taken)?;
        let last: Option<i64> = sqlx::query_scalar("SELECT MAX(vni) FROM overlay_networks")
            .fetch_one(&mut *tx)
            .await?;
        let vni = match last {
            None => FIRST_FLEET_VNI,
            Some(last) => u32::try_from(last + 1)
                .ok()
                .filter(|vni| *vni <= LAST_VNI)
                .ok_or_else(|| {
                    StoreError::Conflict("the fleet has given out every VXLAN network id".into())
                })?
                .max(FIRST_FLEET_VNI),
        };
        let network = OverlayNetwork {
            project_id: project_id.to_owned(),
            name: new.name.clone(),
            vni,
            subnet,
            internal: new.internal,
            created_at: now,
        };
        sqlx::query(
            "INSERT INTO overlay_networks (project_id, name, vni, subnet, internal, created_at)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(project_id)
        .bind(&network.name)
        .bind(i64::from(vni))
        .bind(subnet.to_string())
        .bind(i64::from(network.internal))
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(network)
    }

    /// The project's overlay networks, by name.
    pub async fn overlays(&self, project_id: &str) -> Result<Vec<OverlayNetwork>, StoreError> {
        let sql = format!(
            "SELECT {OVERLAY_COLUMNS} FROM overlay_networks WHERE project_id = $1 ORDER BY name"
        );
        let rows = sqlx::query(&sql)
            .bind(project_id)
            .fetch_all(&self.read)
            .await?;
        rows.iter().map(overlay).collect()
    }

    pub async fn overlay(
        &self,
        project_id: &str,
        name: &str,
    ) -> Result<Option<OverlayNetwork>, StoreError> {
        let sql = format!(
            "SELECT {OVERLAY_COLUMNS} FROM overlay_networks WHERE project_id = $1 AND name = $2"
        );
        let row = sqlx::query(&sql)
            .bind(project_id)
            .bind(name)
            .fetch_optional(&self.read)
            .await?;
        row.as_ref().map(overlay).transpose()
    }

    /// Removes a project's overlay network and its address claims; `false`
    /// when the project has none of that name. A network a queued or
    /// running task is on, or will be (its code names it), is a
    /// `Conflict`.
    pub async fn delete_overlay(&self, project_id: &str, name: &str) -> Result<bool, StoreError> {
        let mut conn = self.durable.acquire().await?;
        let mut tx = self.begin_write(&mut conn).await?;
        if lock_network(&mut tx, self.dialect, project_id, name)
            .await?
            .is_none()
        {
            return Ok(false);
        }
        // Tasks whose code names it, and any holding an address on it (a
        // task keeps the revision it was queued with).
        let holders: i64 = sqlx::query_scalar(&format!(
            "SELECT COUNT(*) FROM tasks t
             WHERE t.project_id = $1 AND t.status IN {HOLDING}
               AND (EXISTS (SELECT 1 FROM code_revisions r
                            WHERE r.code_id = t.code_id AND r.rev = t.code_rev AND r.network = $2)
                    OR EXISTS (SELECT 1 FROM overlay_addresses a
                               WHERE a.task_id = t.id AND a.project_id = $1 AND a.network = $2))"
        ))
        .bind(project_id)
        .bind(name)
        .fetch_one(&mut *tx)
        .await?;
        if holders > 0 {
            return Err(StoreError::Conflict(format!(
                "network {name:?} has {holders} task(s) on it: cancel them or let them end first"
            )));
        }
        let deleted =
            sqlx::query("DELETE FROM overlay_networks WHERE project_id = $1 AND name = $2")
                .bind(project_id)
                .bind(name)
                .execute(&mut *tx)
                .await?
                .rows_affected();
        sqlx::query("DELETE FROM overlay_addresses WHERE project_id = $1 AND network = $2")
            .bind(project_id)
            .bind(name)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(deleted > 0)
    }

    /// The project's overlay network and the task's address on it: the one
    /// it holds, else the next free one (round the subnet, after the
    /// gateway), claimed now. `None` when the project has no such network.
    /// Addresses of tasks that ended are taken back first.
    pub async fn claim_overlay_address(
        &self,
        project_id: &str,
        network: &str,
        task_id: &str,
    ) -> Result<Option<(OverlayNetwork, Ipv4Addr)>, StoreError> {
        // Durable: a claim lost to a power cut would let the address be
        // given twice while its container runs.
        let mut conn = self.durable.acquire().await?;
        let mut tx = self.begin_write(&mut conn).await?;
        // The network's row, locked: claims on one network take turns
        // (SQLite's writers always do).
        let Some((overlay, last)) =
            lock_network(&mut tx, self.dialect, project_id, network).await?
        else {
            return Ok(None);
        };
        let subnet = overlay.subnet;
        let held = sqlx::query(
            "SELECT address FROM overlay_addresses
             WHERE task_id = $1 AND project_id = $2 AND network = $3",
        )
        .bind(task_id)
        .bind(project_id)
        .bind(network)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(row) = held {
            tx.commit().await?;
            return Ok(Some((overlay, address_of(&row)?)));
        }
        sqlx::query(&format!(
            "DELETE FROM overlay_addresses WHERE project_id = $1 AND network = $2
             AND task_id NOT IN (SELECT id FROM tasks WHERE status IN {HOLDING})"
        ))
        .bind(project_id)
        .bind(network)
        .execute(&mut *tx)
        .await?;
        let mut taken = HashSet::new();
        for row in sqlx::query(
            "SELECT address FROM overlay_addresses WHERE project_id = $1 AND network = $2",
        )
        .bind(project_id)
        .bind(network)
        .fetch_all(&mut *tx)
        .await?
        {
            taken.insert(address_of(&row)?);
        }
        let address = next_free_address(&subnet, last, &taken).ok_or_else(|| {
            StoreError::Conflict(format!(
                "network {network:?} ({subnet}) has no free address left"
            ))
        })?;
        // A task claimed under another network before (its code changed
        // network between retries) gives that claim up.
        sqlx::query("DELETE FROM overlay_addresses WHERE task_id = $1")
            .bind(task_id)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO overlay_addresses (task_id, project_id, network, address)
             VALUES ($1, $2, $3, $4)",
        )
        .bind(task_id)
        .bind(project_id)
        .bind(network)
        .bind(address.to_string())
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE overlay_networks SET last_address = $3 WHERE project_id = $1 AND name = $2",
        )
        .bind(project_id)
        .bind(network)
        .bind(address.to_string())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Some((overlay, address)))
    }

    /// Every task being prepared or running on an overlay network, with
    /// its host: what the hosts' peers and hosts files are made from.
    pub async fn overlay_members(&self) -> Result<Vec<OverlayMembership>, StoreError> {
        let rows = sqlx::query(
            "SELECT a.project_id, a.network, a.task_id, a.address, n.vni, n.subnet, n.internal,
                    t.attempt, t.agent
             FROM overlay_addresses a
             JOIN overlay_networks n ON n.project_id = a.project_id AND n.name = a.network
             JOIN tasks t ON t.id = a.task_id
             WHERE t.status IN ('preparing', 'running') AND t.agent IS NOT NULL
             ORDER BY n.vni, a.address",
        )
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(OverlayMembership {
                    project_id: row.try_get("project_id")?,
                    network: row.try_get("network")?,
                    vni: vni_of(row)?,
                    subnet: subnet_of(row)?,
                    internal: row.try_get::<i64, _>("internal")? != 0,
                    task_id: row.try_get("task_id")?,
                    attempt: row.try_get("attempt")?,
                    agent: row.try_get("agent")?,
                    address: address_of(row)?,
                })
            })
            .collect()
    }
}

/// The network and the address given last on it, its row locked for the
/// transaction (PostgreSQL; SQLite's write transactions hold the whole
/// database); `None` when the project has no such network.
async fn lock_network(
    tx: &mut super::Tx<'_>,
    dialect: super::Dialect,
    project_id: &str,
    name: &str,
) -> Result<Option<(OverlayNetwork, Option<Ipv4Addr>)>, StoreError> {
    let sql = format!(
        "SELECT {OVERLAY_COLUMNS}, last_address FROM overlay_networks
         WHERE project_id = $1 AND name = $2 {}",
        dialect.pg("FOR UPDATE")
    );
    let Some(row) = sqlx::query(&sql)
        .bind(project_id)
        .bind(name)
        .fetch_optional(&mut **tx)
        .await?
    else {
        return Ok(None);
    };
    let last = match row.try_get::<Option<String>, _>("last_address")? {
        Some(text) => Some(
            text.parse()
                .map_err(|e| corrupt("overlay_networks", format!("last_address {text:?}: {e}")))?,
        ),
        None => None,
    };
    Ok(Some((overlay(&row)?, last)))
}

fn overlay(row: &AnyRow) -> Result<OverlayNetwork, StoreError> {
    Ok(OverlayNetwork {
        project_id: row.try_get("project_id")?,
        name: row.try_get("name")?,
        vni: vni_of(row)?,
        subnet: subnet_of(row)?,
        internal: row.try_get::<i64, _>("internal")? != 0,
        created_at: row.try_get("created_at")?,
    })
}

fn vni_of(row: &AnyRow) -> Result<u32, StoreError> {
    let vni: i64 = row.try_get("vni")?;
    u32::try_from(vni).map_err(|_| corrupt("overlay_networks", format!("vni {vni}")))
}

fn subnet_of(row: &AnyRow) -> Result<Ipv4Net, StoreError> {
    let text: String = row.try_get("subnet")?;
    text.parse()
        .map_err(|e| corrupt("overlay_networks", format!("subnet {text:?}: {e}")))
}

fn address_of(row: &AnyRow) -> Result<Ipv4Addr, StoreError> {
    let text: String = row.try_get("address")?;
    text.parse()
        .map_err(|e| corrupt("overlay_addresses", format!("address {text:?}: {e}")))
}

/// The subnet a new overlay gets: `wanted` if it overlaps none of
/// `taken`, else (none wanted) the first /24 of the pool that does not.
fn choose_subnet(wanted: Option<Ipv4Net>, taken: &[Ipv4Net]) -> Result<Ipv4Net, StoreError> {
    let overlaps = |a: &Ipv4Net, b: &Ipv4Net| a.contains(&b.network()) || b.contains(&a.network());
    match wanted {
        // Which network it overlaps is not said: it may be another
        // project's.
        Some(subnet) if taken.iter().any(|t| overlaps(t, &subnet)) => {
            Err(StoreError::Conflict(format!(
                "subnet {subnet} overlaps another overlay network's: choose another, or give none"
            )))
        }
        Some(subnet) => Ok(subnet),
        None => FLEET_OVERLAY_POOL
            .subnets(POOL_PREFIX)
            .map_err(|e| StoreError::Conflict(e.to_string()))?
            .find(|candidate| !taken.iter().any(|t| overlaps(t, candidate)))
            .ok_or_else(|| {
                StoreError::Conflict(format!(
                    "every /{POOL_PREFIX} of {FLEET_OVERLAY_POOL} is taken: give --subnet"
                ))
            }),
    }
}

/// The first host address of `subnet` after `last` (round the subnet,
/// skipping its first, the gateway every host's bridge has) that is not in
/// `taken`.
fn next_free_address(
    subnet: &Ipv4Net,
    last: Option<Ipv4Addr>,
    taken: &HashSet<Ipv4Addr>,
) -> Option<Ipv4Addr> {
    let first = u32::from(subnet.network()).checked_add(2)?;
    let end = u32::from(subnet.broadcast()).checked_sub(1)?;
    if first > end {
        return None;
    }
    let start = last
        .map(u32::from)
        .filter(|l| (first..end).contains(l))
        .map_or(first, |l| l + 1);
    (start..=end)
        .chain(first..start)
        .map(Ipv4Addr::from)
        .find(|address| !taken.contains(address))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(text: &str) -> Ipv4Net {
        text.parse().unwrap()
    }

    #[test]
    fn subnets_come_from_the_pool_and_never_overlap() {
        assert_eq!(choose_subnet(None, &[]).unwrap(), net("10.128.0.0/24"));
        let taken = [net("10.128.0.0/24"), net("10.128.1.0/25")];
        assert_eq!(choose_subnet(None, &taken).unwrap(), net("10.128.2.0/24"));
        let err = choose_subnet(Some(net("10.128.0.0/16")), &taken)
            .unwrap_err()
            .to_string();
        assert!(err.contains("overlaps another"), "{err}");
        assert_eq!(
            choose_subnet(Some(net("192.168.7.0/24")), &taken).unwrap(),
            net("192.168.7.0/24")
        );
    }

    #[test]
    fn addresses_go_round_the_subnet_past_the_gateway() {
        let subnet = net("10.1.2.0/29");
        let a = |i| Ipv4Addr::new(10, 1, 2, i);
        let none = HashSet::new();
        assert_eq!(next_free_address(&subnet, None, &none), Some(a(2)));
        // After the last given, even when lower ones are free again.
        assert_eq!(next_free_address(&subnet, Some(a(3)), &none), Some(a(4)));
        // Round to the start after the broadcast's neighbour.
        assert_eq!(next_free_address(&subnet, Some(a(6)), &none), Some(a(2)));
        let taken: HashSet<Ipv4Addr> = [a(5), a(6), a(2)].into();
        assert_eq!(next_free_address(&subnet, Some(a(4)), &taken), Some(a(3)));
        let full: HashSet<Ipv4Addr> = (2..=6).map(a).collect();
        assert_eq!(next_free_address(&subnet, Some(a(4)), &full), None);
        // A last address outside the subnet starts from the beginning.
        assert_eq!(
            next_free_address(&subnet, Some(Ipv4Addr::new(9, 9, 9, 9)), &none),
            Some(a(2))
        );
    }
}
