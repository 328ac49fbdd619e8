//! Container networks on one host: bridges, veth pairs, addresses and
//! routes (routing netlink), NAT and published ports (nf_tables), address
//! allocation, and the records that let every piece be found and removed.
//!
//! Owns: links and rules it names itself (bridges `berth0`/`br-…`, veths
//! `bv…`, one nf_tables table), and its state dir. Must not touch:
//! container processes, cgroups, images, the task store, or any link or
//! rule it did not make. Everything is done in process over netlink; no
//! `ip`, `iptables`, `tc` or `nft` is run.

mod attach_cni;
pub mod cni;
pub mod links;
pub mod namespace;
pub mod netlink;
pub mod nft;
pub mod probe;
pub mod rules;
mod shaping;

mod attach;
mod error;
pub mod files;
pub mod host;
mod model;
mod networks;
mod state;

pub use attach::{host_link_name, ifb_name, Attached, Claimed, Collected};
pub use error::{NetError, Result};
pub use model::{Attachment, Driver, Member, Network, DEFAULT_NETWORK};
pub use networks::{CreateNetwork, NetConfig, NetworkView, Networks};
