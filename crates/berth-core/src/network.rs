//! What a container asks of the network: its mode (`--network`), a fixed
//! address (`--ip`), published ports (`-p`) and bandwidth limits.
//!
//! Plain data, parsed and checked here without looking at the host; the
//! host side (bridges, addresses, rules) is berth-net's.

use crate::spec::SpecError;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

/// The first VXLAN network id the fleet gives its overlays (`fleet-<vni>`
/// on hosts): well above the small numbers people pick by hand for
/// `berth network create --driver overlay --vni`.
pub const FIRST_FLEET_VNI: u32 = 1 << 20;

/// `--network`: where a container's network namespace comes from and what
/// is in it. Written as Docker writes it: `none`, `host`, `bridge`, a user
/// network's name, `container:ID`, plus berth's `macvlan:PARENT` and
/// `cni:NAME`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub enum NetworkMode {
    /// A private namespace with only a loopback.
    #[default]
    None,
    /// The host's namespace (no isolation).
    Host,
    /// The host's default berth bridge, with NAT to the outside.
    Bridge,
    /// A user-defined network (`berth network create NAME`).
    Named(NetworkName),
    /// The namespace of another running container.
    Container(String),
    /// A macvlan link on this parent interface of the host.
    Macvlan(String),
    /// A CNI configuration of this name.
    Cni(String),
}

impl NetworkMode {
    /// The modes that give the container an address of its own on a
    /// network berth manages (so `--ip`, `-p` and rate limits apply).
    pub fn has_own_address(&self) -> bool {
        matches!(
            self,
            NetworkMode::Bridge | NetworkMode::Named(_) | NetworkMode::Macvlan(_)
        )
    }
}

impl fmt::Display for NetworkMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NetworkMode::None => f.write_str("none"),
            NetworkMode::Host => f.write_str("host"),
            NetworkMode::Bridge => f.write_str("bridge"),
            NetworkMode::Named(name) => f.write_str(name.as_str()),
            NetworkMode::Container(id) => write!(f, "container:{id}"),
            NetworkMode::Macvlan(parent) => write!(f, "macvlan:{parent}"),
            NetworkMode::Cni(name) => write!(f, "cni:{name}"),
        }
    }
}

impl FromStr for NetworkMode {
    type Err = SpecError;

    fn from_str(text: &str) -> Result<Self, SpecError> {
        let bad = |why: String| SpecError::Invalid(format!("network {text:?}: {why}"));
        let non_empty = |what: &str, value: &str| {
            if value.is_empty() {
                Err(bad(format!("{what} is empty")))
            } else {
                Ok(value.to_owned())
            }
        };
        Ok(match text {
            "none" | "" => NetworkMode::None,
            "host" => NetworkMode::Host,
            "bridge" | "default" => NetworkMode::Bridge,
            _ => match text.split_once(':') {
                Some(("container", id)) => {
                    let id = non_empty("the container", id)?;
                    crate::ContainerId::new(id.clone()).map_err(|e| bad(e.to_string()))?;
                    NetworkMode::Container(id)
                }
                Some(("macvlan", parent)) => {
                    let parent = non_empty("the parent interface", parent)?;
                    check_interface_name(&parent).map_err(bad)?;
                    NetworkMode::Macvlan(parent)
                }
                Some(("cni", name)) => {
                    let name = non_empty("the CNI network", name)?;
                    NetworkName::check(&name).map_err(bad)?;
                    NetworkMode::Cni(name)
                }
                Some((kind, _)) => {
                    return Err(bad(format!(
                    "unknown kind {kind:?} (container:ID, macvlan:PARENT and cni:NAME are known)"
                )))
                }
                None => NetworkMode::Named(NetworkName::new(text).map_err(|e| bad(e.to_string()))?),
            },
        })
    }
}

impl Serialize for NetworkMode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for NetworkMode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for NetworkMode {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        String::schema()
    }
}

#[cfg(feature = "openapi")]
impl utoipa::ToSchema for NetworkMode {}

/// A user network's name: 1–64 of `A-Za-z0-9_.-`, starting with a letter
/// or digit, and not one of the mode words (`none`, `host`, `bridge`,
/// `default`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(value_type = String))]
pub struct NetworkName(String);

impl NetworkName {
    pub fn new(name: impl Into<String>) -> Result<Self, SpecError> {
        let name = name.into();
        Self::check(&name)
            .map_err(|why| SpecError::Invalid(format!("network name {name:?}: {why}")))?;
        if matches!(name.as_str(), "none" | "host" | "bridge" | "default") {
            return Err(SpecError::Invalid(format!(
                "network name {name:?} is reserved for the mode of that name"
            )));
        }
        Ok(NetworkName(name))
    }

    /// Whether `name` is made of a network name's characters (reserved
    /// words included: the host's default network is recorded as
    /// `bridge`).
    pub fn check(name: &str) -> Result<(), String> {
        let first_ok = name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric());
        if name.is_empty() || name.len() > 64 {
            return Err("must be 1 to 64 characters".into());
        }
        if !first_ok
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
        {
            return Err(
                "must be letters, digits, '_', '.' or '-', starting with a letter or digit".into(),
            );
        }
        Ok(())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for NetworkName {
    type Error = SpecError;
    fn try_from(value: String) -> Result<Self, SpecError> {
        NetworkName::new(value)
    }
}

impl From<NetworkName> for String {
    fn from(name: NetworkName) -> String {
        name.0
    }
}

impl fmt::Display for NetworkName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A Linux interface name: 1–15 bytes, no `/`, `:` or white space.
pub fn check_interface_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 15 {
        return Err(format!("interface name {name:?} must be 1 to 15 bytes"));
    }
    if name
        .chars()
        .any(|c| c == '/' || c == ':' || c.is_whitespace())
        || name == "."
        || name == ".."
    {
        return Err(format!("interface name {name:?} is not valid"));
    }
    Ok(())
}

/// The transport of a published port.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Protocol {
    #[default]
    Tcp,
    Udp,
}

impl Protocol {
    /// The IP protocol number.
    pub fn number(self) -> u8 {
        match self {
            Protocol::Tcp => 6,
            Protocol::Udp => 17,
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        })
    }
}

/// One host port forwarded to one container port (`-p` expands ranges
/// into several).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PublishedPort {
    /// Only traffic to this host address is forwarded (default: any).
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub host_ip: Option<Ipv4Addr>,
    pub host_port: u16,
    pub container_port: u16,
    #[serde(default)]
    pub protocol: Protocol,
}

impl PublishedPort {
    /// Parses Docker's `[HOSTIP:]HOSTPORT:PORT[/tcp|udp]`, where both
    /// ports may be ranges of the same length (`8000-8009:80-89`).
    pub fn parse(text: &str) -> Result<Vec<PublishedPort>, SpecError> {
        let bad = |why: &str| SpecError::Invalid(format!("published port {text:?}: {why}"));
        let (ports, protocol) = match text.rsplit_once('/') {
            Some((ports, "tcp")) => (ports, Protocol::Tcp),
            Some((ports, "udp")) => (ports, Protocol::Udp),
            Some(_) => return Err(bad("the protocol must be tcp or udp")),
            None => (text, Protocol::Tcp),
        };
        let parts: Vec<&str> = ports.split(':').collect();
        let (host_ip, host, container) = match parts.as_slice() {
            [host, container] => (None, *host, *container),
            [ip, host, container] => {
                let ip: Ipv4Addr = ip
                    .parse()
                    .map_err(|_| bad("the host address is not an IPv4 address"))?;
                (Some(ip), *host, *container)
            }
            _ => return Err(bad("expected [HOSTIP:]HOSTPORT:PORT[/tcp|udp]")),
        };
        let host = parse_port_range(host).map_err(|why| bad(&format!("host port: {why}")))?;
        let container =
            parse_port_range(container).map_err(|why| bad(&format!("container port: {why}")))?;
        if host.1 - host.0 != container.1 - container.0 {
            return Err(bad("the host and container ranges differ in length"));
        }
        Ok((0..=host.1 - host.0)
            .map(|i| PublishedPort {
                host_ip,
                host_port: host.0 + i,
                container_port: container.0 + i,
                protocol,
            })
            .collect())
    }

    /// Whether both forward the same traffic (a port cannot be published
    /// twice for overlapping addresses).
    pub fn clashes_with(&self, other: &PublishedPort) -> bool {
        self.protocol == other.protocol
            && self.host_port == other.host_port
            && (self.host_ip.is_none() || other.host_ip.is_none() || self.host_ip == other.host_ip)
    }
}

impl fmt::Display for PublishedPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(ip) = self.host_ip {
            write!(f, "{ip}:")?;
        }
        write!(
            f,
            "{}:{}/{}",
            self.host_port, self.container_port, self.protocol
        )
    }
}

fn parse_port_range(text: &str) -> Result<(u16, u16), String> {
    let port = |p: &str| match p.parse::<u16>() {
        Ok(0) | Err(_) => Err(format!("{p:?} is not a port (1-65535)")),
        Ok(n) => Ok(n),
    };
    match text.split_once('-') {
        Some((low, high)) => {
            let (low, high) = (port(low)?, port(high)?);
            if low > high {
                return Err(format!("range {text:?} runs backwards"));
            }
            Ok((low, high))
        }
        None => port(text).map(|p| (p, p)),
    }
}

/// A bandwidth in bits per second, written as tc writes it: `10mbit`,
/// `500kbit`, `1gbit`, `8000bit`; or in bytes: `1mbps` = 8 Mbit/s.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Rate(u64);

impl Rate {
    /// The slowest rate berth shapes to: below it a single full-size packet
    /// takes longer than a second.
    pub const MIN: Rate = Rate(8_000);

    pub fn bits_per_second(self) -> u64 {
        self.0
    }

    pub fn bytes_per_second(self) -> u64 {
        self.0 / 8
    }

    pub fn from_bits_per_second(bits: u64) -> Result<Rate, SpecError> {
        if bits < Rate::MIN.0 {
            return Err(SpecError::Invalid(format!(
                "rate {bits} bit/s is below the lowest shaped rate, 8kbit"
            )));
        }
        if bits / 8 > u64::from(u32::MAX) {
            return Err(SpecError::Invalid(format!(
                "rate {bits} bit/s is above the highest the kernel's shaper takes (34gbit)"
            )));
        }
        Ok(Rate(bits))
    }
}

impl FromStr for Rate {
    type Err = SpecError;

    fn from_str(text: &str) -> Result<Self, SpecError> {
        let bad = || {
            SpecError::Invalid(format!(
                "rate {text:?}: expected a number and a unit: bit, kbit, mbit, gbit (bits/s) or bps, kbps, mbps, gbps (bytes/s)"
            ))
        };
        let lower = text.trim().to_ascii_lowercase();
        let split = lower.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        let (number, unit) = lower.split_at(split);
        let number: u64 = number.parse().map_err(|_| bad())?;
        let factor: u64 = match unit {
            "bit" => 1,
            "kbit" => 1_000,
            "mbit" => 1_000_000,
            "gbit" => 1_000_000_000,
            "bps" => 8,
            "kbps" => 8_000,
            "mbps" => 8_000_000,
            "gbps" => 8_000_000_000,
            _ => return Err(bad()),
        };
        Rate::from_bits_per_second(number.checked_mul(factor).ok_or_else(bad)?)
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let bits = self.0;
        for (factor, unit) in [
            (1_000_000_000, "gbit"),
            (1_000_000, "mbit"),
            (1_000, "kbit"),
        ] {
            if bits.is_multiple_of(factor) {
                return write!(f, "{}{unit}", bits / factor);
            }
        }
        write!(f, "{bits}bit")
    }
}

impl Serialize for Rate {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Rate {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for Rate {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        String::schema()
    }
}

#[cfg(feature = "openapi")]
impl utoipa::ToSchema for Rate {}

/// The most host ports one container may publish (`-p 1-65535:…` would
/// otherwise write 65,535 rules).
pub const MAX_PUBLISHED_PORTS: usize = 1024;

/// Everything a container asks of the network, checked as a whole.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NetworkRequest {
    #[serde(default)]
    pub mode: NetworkMode,
    /// A fixed address on a user network (`--ip`).
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub ip: Option<Ipv4Addr>,
    #[serde(default)]
    pub ports: Vec<PublishedPort>,
    /// Cap on what the container sends.
    #[serde(default)]
    pub egress_rate: Option<Rate>,
    /// Cap on what the container receives.
    #[serde(default)]
    pub ingress_rate: Option<Rate>,
    /// Cut off from the other containers of its bridge at layer 2 (they
    /// still reach it through published ports): what tasks get, so that no
    /// project's task reaches another's.
    #[serde(default)]
    pub isolated: bool,
}

impl NetworkRequest {
    /// Checks the settings against the mode and each other.
    pub fn validate(&self) -> Result<(), SpecError> {
        let own = self.mode.has_own_address();
        let needs_own = |what: &str| {
            SpecError::Invalid(format!(
                "{what} needs a network the container has its own address on (bridge, a user network or macvlan), not {}",
                self.mode
            ))
        };
        if self.ip.is_some()
            && !matches!(self.mode, NetworkMode::Named(_) | NetworkMode::Macvlan(_))
        {
            return Err(SpecError::Invalid(format!(
                "--ip needs a user network (berth network create) or macvlan, not {}",
                self.mode
            )));
        }
        if !self.ports.is_empty()
            && !matches!(self.mode, NetworkMode::Bridge | NetworkMode::Named(_))
        {
            return Err(needs_own("publishing ports"));
        }
        if (self.egress_rate.is_some() || self.ingress_rate.is_some()) && !own {
            return Err(needs_own("a bandwidth limit"));
        }
        if self.ports.len() > MAX_PUBLISHED_PORTS {
            return Err(SpecError::Invalid(format!(
                "{} ports published; at most {MAX_PUBLISHED_PORTS} per container",
                self.ports.len()
            )));
        }
        if let Some(zero) = self
            .ports
            .iter()
            .find(|p| p.host_port == 0 || p.container_port == 0)
        {
            return Err(SpecError::Invalid(format!(
                "published port {zero}: ports are 1-65535"
            )));
        }
        for (i, port) in self.ports.iter().enumerate() {
            if let Some(other) = self.ports[..i].iter().find(|p| p.clashes_with(port)) {
                return Err(SpecError::Invalid(format!(
                    "port {port} is published twice (also as {other})"
                )));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_round_trip_through_their_text() {
        for text in [
            "none",
            "host",
            "bridge",
            "backend",
            "container:abc",
            "macvlan:eth1",
            "cni:mynet",
        ] {
            let mode: NetworkMode = text.parse().unwrap();
            assert_eq!(mode.to_string(), text);
            let json = serde_json::to_string(&mode).unwrap();
            assert_eq!(serde_json::from_str::<NetworkMode>(&json).unwrap(), mode);
        }
        assert_eq!(
            "default".parse::<NetworkMode>().unwrap(),
            NetworkMode::Bridge
        );
    }

    #[test]
    fn bad_modes_say_why() {
        for (text, says) in [
            ("container:", "empty"),
            ("macvlan:", "empty"),
            ("macvlan:a/b", "not valid"),
            ("macvlan:waytoolonginterfacename", "15 bytes"),
            ("vlan:eth0", "unknown kind"),
            ("-net", "starting with"),
            ("a b", "letters"),
        ] {
            let e = text.parse::<NetworkMode>().unwrap_err().to_string();
            assert!(e.contains(says), "{text}: {e}");
        }
        assert!(NetworkName::new("host")
            .unwrap_err()
            .to_string()
            .contains("reserved"));
    }

    #[test]
    fn published_ports_parse_like_docker() {
        let p = PublishedPort::parse("8080:80").unwrap();
        assert_eq!(
            p,
            [PublishedPort {
                host_ip: None,
                host_port: 8080,
                container_port: 80,
                protocol: Protocol::Tcp
            }]
        );
        let p = PublishedPort::parse("127.0.0.1:5000-5002:6000-6002/udp").unwrap();
        assert_eq!(p.len(), 3);
        assert_eq!(p[2].host_port, 5002);
        assert_eq!(p[2].container_port, 6002);
        assert_eq!(p[2].protocol, Protocol::Udp);
        assert_eq!(p[0].host_ip, Some(Ipv4Addr::LOCALHOST));
        assert_eq!(p[0].to_string(), "127.0.0.1:5000:6000/udp");
        for (text, says) in [
            ("80", "expected"),
            ("0:80", "not a port"),
            ("70000:80", "not a port"),
            ("8000-8001:80", "differ in length"),
            ("9-8:9-8", "backwards"),
            ("80:80/sctp", "tcp or udp"),
            ("host:80:80", "IPv4"),
        ] {
            let e = PublishedPort::parse(text).unwrap_err().to_string();
            assert!(e.contains(says), "{text}: {e}");
        }
    }

    #[test]
    fn rates_parse_in_tc_units() {
        assert_eq!(
            "10mbit".parse::<Rate>().unwrap().bits_per_second(),
            10_000_000
        );
        assert_eq!(
            "1mbps".parse::<Rate>().unwrap().bits_per_second(),
            8_000_000
        );
        assert_eq!("500KBIT".parse::<Rate>().unwrap().to_string(), "500kbit");
        for bad in ["10", "mbit", "10 furlongs", "1bit", "99gbit", "-1mbit"] {
            assert!(bad.parse::<Rate>().is_err(), "{bad}");
        }
    }

    #[test]
    fn a_request_is_checked_as_a_whole() {
        let ports = PublishedPort::parse("80:80").unwrap();
        let mut r = NetworkRequest {
            ports: ports.clone(),
            ..Default::default()
        };
        assert!(r
            .validate()
            .unwrap_err()
            .to_string()
            .contains("publishing ports"));
        r.mode = NetworkMode::Bridge;
        r.validate().unwrap();
        r.ports
            .extend(PublishedPort::parse("127.0.0.1:80:81").unwrap());
        assert!(r
            .validate()
            .unwrap_err()
            .to_string()
            .contains("published twice"));
        r.ports = ports;
        r.ip = Some(Ipv4Addr::new(10, 0, 0, 5));
        assert!(r
            .validate()
            .unwrap_err()
            .to_string()
            .contains("user network"));
        r.mode = NetworkMode::Named(NetworkName::new("backend").unwrap());
        r.validate().unwrap();
        let limited = NetworkRequest {
            egress_rate: Some("1mbit".parse().unwrap()),
            ..Default::default()
        };
        assert!(limited.validate().is_err());
    }
}
