//! Attaching a container through a CNI configuration (`--network
//! cni:NAME`): the record first (so that `gc` can run DEL after a crash),
//! then the namespace, then ADD through the plugin list.

use crate::attach::Attached;
use crate::cni::{self, NetworkList};
use crate::error::{NetError, Result};
use crate::files;
use crate::model::Attachment;
use crate::namespace::Namespace;
use crate::networks::Networks;
use berth_core::network::NetworkRequest;
use serde_json::{json, Value};
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::path::PathBuf;

/// What an attachment through CNI keeps for its DEL.
pub(crate) fn record(list: &NetworkList, result: Option<&Value>) -> Value {
    json!({"list": list.to_json(), "result": result})
}

impl Networks {
    pub(crate) fn attach_cni(
        &self,
        container: &str,
        names: &[String],
        name: &str,
        request: &NetworkRequest,
    ) -> Result<Attached> {
        if request.ip.is_some()
            || !request.ports.is_empty()
            || request.egress_rate.is_some()
            || request.ingress_rate.is_some()
            || request.isolated
        {
            return Err(NetError::Invalid(format!(
                "cni:{name} takes its addresses, ports, limits and isolation from its CNI configuration, not from --ip, -p, the rate flags or network_isolated"
            )));
        }
        let list = self.config.cni.load(name)?;
        let _lock = self.state.lock(false)?;
        if let Some(existing) = self.state.attachment(container)? {
            return Err(NetError::Conflict(format!(
                "container {container} is already on network {}",
                existing.network
            )));
        }
        let mut attachment = Attachment {
            container: container.to_owned(),
            network: format!("cni:{name}"),
            host_link: String::new(),
            address: Ipv4Addr::UNSPECIFIED,
            names: names.to_vec(),
            ports: Vec::new(),
            egress_rate: None,
            ingress_rate: None,
            holder_pid: std::process::id(),
            cni: Some(record(&list, None)),
        };
        self.state.save_attachment(&attachment)?;
        let added = (|| {
            let namespace =
                Namespace::new().map_err(|e| NetError::io("making a network namespace", e))?;
            // The plugins are other processes: they find the namespace
            // through this one's descriptor.
            let path = PathBuf::from(format!(
                "/proc/{}/fd/{}",
                std::process::id(),
                namespace.handle.as_raw_fd()
            ));
            let result = self.config.cni.add(&list, container, &path)?;
            Ok::<_, NetError>((namespace, result))
        })();
        let (namespace, result) = match added {
            Ok(added) => added,
            Err(e) => {
                let _ = self.state.remove_attachment(container);
                return Err(e);
            }
        };
        attachment.address = cni::address_in(&result).unwrap_or(Ipv4Addr::UNSPECIFIED);
        attachment.cni = Some(record(&list, Some(&result)));
        let written = self.state.save_attachment(&attachment).and_then(|()| {
            let dir = self.state.files_dir(container);
            files::write_new(
                &dir,
                &files::hosts(&attachment, &[], &[]),
                &resolv_conf(&result),
            )
        });
        if let Err(e) = written {
            let _ = self.config.cni.del(&list, container, None, Some(&result));
            let _ = self.state.remove_attachment(container);
            return Err(e);
        }
        let dir = self.state.files_dir(container);
        Ok(Attached {
            namespace: namespace.handle,
            attachment,
            mounts: files::mounts(&dir),
        })
    }

    /// DEL through the list recorded at ADD (the namespace may be gone:
    /// plugins clean their host side without it).
    pub(crate) fn detach_cni(&self, attachment: &Attachment) -> Result<()> {
        let Some(record) = &attachment.cni else {
            return Ok(());
        };
        let list = NetworkList::from_json(&record["list"])?;
        let result = record.get("result").filter(|r| !r.is_null());
        self.config
            .cni
            .del(&list, &attachment.container, None, result)
    }
}

/// The container's resolv.conf: the result's DNS if it names servers,
/// else the host's reachable ones.
fn resolv_conf(result: &Value) -> String {
    let servers: Vec<&str> = result
        .get("dns")
        .and_then(|d| d.get("nameservers"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    if servers.is_empty() {
        return files::from_host();
    }
    servers
        .iter()
        .map(|s| format!("nameserver {s}\n"))
        .collect()
}
