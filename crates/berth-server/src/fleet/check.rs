//! What a host may tell the server: a name, an address and figures that
//! can be true. A report that cannot be (more offered than the machine
//! has, a machine with no CPU) is refused whole; nothing of it is stored.

use super::error::FleetError;
use berth_api::fleet::{HostReport, JoinRequest};

/// Longest host name (a DNS label).
const MAX_NAME: usize = 63;
/// Most labels a host or an operator may set, and their longest key and value.
const MAX_LABELS: usize = 64;
const MAX_LABEL_KEY: usize = 63;
const MAX_LABEL_VALUE: usize = 255;
/// Most image references a report may carry.
const MAX_IMAGES: usize = 10_000;

pub fn join(join: &JoinRequest) -> Result<(), FleetError> {
    name(&join.name)?;
    address(&join.address)?;
    if join.credential.len() < 16 || join.credential.len() > 256 {
        return Err(FleetError::invalid(
            "credential: between 16 and 256 characters (the agent makes a random one)",
        ));
    }
    if join.credential.chars().any(|c| !c.is_ascii_graphic()) {
        return Err(FleetError::invalid(
            "credential: printable ASCII without spaces",
        ));
    }
    report(&join.report)
}

/// A host name: 1–63 of `a-z 0-9 -`, starting and ending with a letter or
/// digit (so it is a DNS label, and safe in URLs and container names).
pub fn name(name: &str) -> Result<(), FleetError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(FleetError::invalid(format!(
            "host name {name:?}: 1 to {MAX_NAME} of a-z, 0-9 and '-', not starting or ending with '-'"
        )))
    }
}

/// `http://HOST:PORT`, the agent's API as the server reaches it.
fn address(address: &str) -> Result<(), FleetError> {
    let endpoint = berth_api::Endpoint::parse(address)
        .map_err(|e| FleetError::invalid(format!("address {address:?}: {e}")))?;
    if !address.starts_with("http://") {
        return Err(FleetError::invalid(format!(
            "address {address:?}: a host is reached over TCP, http://HOST:PORT ({endpoint})"
        )));
    }
    Ok(())
}

pub fn labels<'a>(
    labels: impl IntoIterator<Item = (&'a String, &'a String)>,
) -> Result<(), FleetError> {
    let mut count = 0;
    for (key, value) in labels {
        count += 1;
        let key_ok = !key.is_empty()
            && key.len() <= MAX_LABEL_KEY
            && key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_./".contains(&b));
        if key == berth_sched::NODE_KEY {
            return Err(FleetError::invalid(format!(
                "label key {key:?} is reserved: constraints reach host names through it"
            )));
        }
        if !key_ok {
            return Err(FleetError::invalid(format!(
                "label key {key:?}: 1 to {MAX_LABEL_KEY} of letters, digits and - _ . /"
            )));
        }
        if value.len() > MAX_LABEL_VALUE || value.chars().any(char::is_control) {
            return Err(FleetError::invalid(format!(
                "label {key}: a value of at most {MAX_LABEL_VALUE} bytes without control characters"
            )));
        }
    }
    if count > MAX_LABELS {
        return Err(FleetError::invalid(format!(
            "{count} labels: at most {MAX_LABELS}"
        )));
    }
    Ok(())
}

/// The figures of a report must be possible on the machine it describes.
pub fn report(report: &HostReport) -> Result<(), FleetError> {
    let capacity = &report.capacity;
    if capacity.cpus == 0 || capacity.memory_bytes == 0 {
        return Err(FleetError::invalid(
            "capacity: a host has at least one CPU and some memory",
        ));
    }
    let cpu_millis = u64::from(capacity.cpus) * 1000;
    let checks = [
        (
            "allocatable cpu_millis",
            report.allocatable.cpu_millis,
            cpu_millis,
        ),
        (
            "allocatable memory_bytes",
            report.allocatable.memory_bytes,
            capacity.memory_bytes,
        ),
        (
            "allocatable disk_bytes",
            report.allocatable.disk_bytes,
            capacity.disk_bytes,
        ),
        ("allocatable pids", report.allocatable.pids, capacity.pids),
    ];
    for (what, value, machine) in checks {
        if value > machine {
            return Err(FleetError::invalid(format!(
                "{what} {value} is more than the machine has ({machine})"
            )));
        }
    }
    if capacity.disk_free_bytes > capacity.disk_bytes {
        return Err(FleetError::invalid(format!(
            "capacity: disk_free_bytes {} is more than disk_bytes {}",
            capacity.disk_free_bytes, capacity.disk_bytes
        )));
    }
    if !(0.0..=1.0).contains(&capacity.memory_pressure) {
        return Err(FleetError::invalid(
            "capacity: memory_pressure is a fraction between 0 and 1",
        ));
    }
    if let Some(used) = report.used.metrics.memory_usage_bytes {
        if used > capacity.memory_bytes {
            return Err(FleetError::invalid(format!(
                "used memory {used} is more than the machine has ({})",
                capacity.memory_bytes
            )));
        }
    }
    if report.images.len() > MAX_IMAGES {
        return Err(FleetError::invalid(format!(
            "{} images: a report carries at most {MAX_IMAGES}",
            report.images.len()
        )));
    }
    if report.version.is_empty() || report.version.len() > 64 {
        return Err(FleetError::invalid("version: 1 to 64 characters"));
    }
    labels(&report.labels)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names_are_dns_labels() {
        for good in ["h1", "host-3", "a", &"x".repeat(63)] {
            assert!(name(good).is_ok(), "{good}");
        }
        for bad in ["", "-a", "a-", "Host", "a_b", "a.b", "a b", &"x".repeat(64)] {
            assert!(name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn label_keys_and_values_are_checked() {
        let ok = [("zone".to_owned(), "a".to_owned())];
        assert!(labels(ok.iter().map(|(k, v)| (k, v))).is_ok());
        let bad_key = [("zo ne".to_owned(), "a".to_owned())];
        assert!(labels(bad_key.iter().map(|(k, v)| (k, v))).is_err());
        let bad_value = [("zone".to_owned(), "a\nb".to_owned())];
        assert!(labels(bad_value.iter().map(|(k, v)| (k, v))).is_err());
    }
}
