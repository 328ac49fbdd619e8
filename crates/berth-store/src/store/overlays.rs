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
use std::net::Ipv4Addr;

/// The first VNI the fleet gives: well above the small numbers people
/// pick by hand for `berth network create --driver overlay --vni`.
pub const FIRST_FLEET_VNI: u32 = 1 << 20;
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
    /// already has, or a subnet overlapping another overlay's (any
    /// project's), is a `Conflict`; nothing is stored.
    pub async fn create_overlay(
        &self,
        project_id: &str,
        new: &NewOverlay,
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
    /// running task holds an address on is a `Conflict`.
    pub async fn delete_overlay(&self, project_id: &str, name: &str) -> Result<bool, StoreError> {
        let mut conn = self.durable.acquire().await?;
        let mut tx = self.begin_write(&mut conn).await?;
        let holders: i64 = sqlx::query_scalar(&format!(
            "SELECT COUNT(*) FROM overlay_addresses a JOIN tasks t ON t.id = a.task_id
             WHERE a.project_id = $1 AND a.network = $2 AND t.status IN {HOLDING}"
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

    /// The task's address on the project's overlay network: the one it
    /// holds, else the lowest free one (after the gateway), claimed now.
    /// `None` when the project has no such network. Addresses of tasks
    /// that ended are taken back first.
    pub async fn claim_overlay_address(
        &self,
        project_id: &str,
        network: &str,
        task_id: &str,
    ) -> Result<Option<Ipv4Addr>, StoreError> {
        let mut conn = self.relaxed.acquire().await?;
        let mut tx = self.begin_write(&mut conn).await?;
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
            return address_of(&row).map(Some);
        }
        let Some(row) =
            sqlx::query("SELECT subnet FROM overlay_networks WHERE project_id = $1 AND name = $2")
                .bind(project_id)
                .bind(network)
                .fetch_optional(&mut *tx)
                .await?
        else {
            return Ok(None);
        };
        let subnet = subnet_of(&row)?;
        sqlx::query(&format!(
            "DELETE FROM overlay_addresses WHERE project_id = $1 AND network = $2
             AND task_id NOT IN (SELECT id FROM tasks WHERE status IN {HOLDING})"
        ))
        .bind(project_id)
        .bind(network)
        .execute(&mut *tx)
        .await?;
        let mut taken = Vec::new();
        for row in sqlx::query(
            "SELECT address FROM overlay_addresses WHERE project_id = $1 AND network = $2",
        )
        .bind(project_id)
        .bind(network)
        .fetch_all(&mut *tx)
        .await?
        {
            taken.push(address_of(&row)?);
        }
        let address = first_free_address(&subnet, &taken).ok_or_else(|| {
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
        tx.commit().await?;
        Ok(Some(address))
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
        Some(subnet) => match taken.iter().find(|t| overlaps(t, &subnet)) {
            Some(clash) => Err(StoreError::Conflict(format!(
                "subnet {subnet} overlaps {clash}, another overlay network's"
            ))),
            None => Ok(subnet),
        },
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

/// The lowest host address of `subnet` after its first (the gateway
/// every host's bridge has) that is not in `taken`.
fn first_free_address(subnet: &Ipv4Net, taken: &[Ipv4Addr]) -> Option<Ipv4Addr> {
    let first = u32::from(subnet.network()).checked_add(2)?;
    let last = u32::from(subnet.broadcast()).checked_sub(1)?;
    (first..=last)
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
        assert!(err.contains("overlaps 10.128.0.0/24"), "{err}");
        assert_eq!(
            choose_subnet(Some(net("192.168.7.0/24")), &taken).unwrap(),
            net("192.168.7.0/24")
        );
    }

    #[test]
    fn addresses_skip_the_network_the_gateway_and_the_broadcast() {
        let subnet = net("10.1.2.0/29");
        assert_eq!(
            first_free_address(&subnet, &[]),
            Some(Ipv4Addr::new(10, 1, 2, 2))
        );
        let taken: Vec<Ipv4Addr> = (2..=5).map(|i| Ipv4Addr::new(10, 1, 2, i)).collect();
        assert_eq!(
            first_free_address(&subnet, &taken),
            Some(Ipv4Addr::new(10, 1, 2, 6))
        );
        let full: Vec<Ipv4Addr> = (2..=6).map(|i| Ipv4Addr::new(10, 1, 2, i)).collect();
        assert_eq!(first_free_address(&subnet, &full), None);
    }
}
