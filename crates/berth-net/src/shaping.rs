//! Bandwidth limits on the host end of a container's link, as the CNI
//! bandwidth plugin sets them: what the container receives is shaped by a
//! token bucket (TBF) on the host end's egress; what it sends arrives on
//! the host end's ingress, which cannot queue, so it is redirected (u32
//! match-all filter, mirred action) to an IFB device whose egress is
//! shaped. The container cannot touch either: both live on the host.

use crate::links::{self, errno_is_unsupported};
use crate::netlink::Netlink;
use berth_core::network::Rate;
use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::link::{InfoKind, LinkAttribute, LinkInfo, LinkMessage};
use netlink_packet_route::tc::{
    TcAction, TcActionAttribute, TcActionGeneric, TcActionMirrorOption, TcActionOption,
    TcActionType, TcAttribute, TcFilterU32Option, TcHandle, TcMessage, TcMirror,
    TcMirrorActionType, TcOption, TcU32Key, TcU32Selector, TcU32SelectorFlag,
};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_utils::nla::DefaultNla;
use std::io;

/// Why a limit could not be set.
pub enum ShapeError {
    /// The kernel lacks what it needs (IFB, TBF, u32, mirred).
    Unsupported(String),
    Io(io::Error),
}

/// How much a bucket may hold beyond the rate: 10 ms of traffic, at least
/// 16 KiB (a few full-size packets; smaller starves TSO-sized sends).
fn burst_bytes(rate: Rate) -> u32 {
    u32::try_from((rate.bytes_per_second() / 100).max(16 * 1024)).unwrap_or(u32::MAX)
}

/// The queue a bucket keeps before dropping: 50 ms of traffic plus a
/// burst (as the CNI plugin's default latency, doubled for steadier
/// measurements at low rates).
fn limit_bytes(rate: Rate) -> u32 {
    let queued = rate.bytes_per_second() / 20 + u64::from(burst_bytes(rate));
    u32::try_from(queued).unwrap_or(u32::MAX)
}

/// `struct tc_tbf_qopt` (36 bytes) with the rate, queue limit and no peak
/// rate; the bucket size goes in `TCA_TBF_BURST`.
fn tbf_parameters(rate: Rate) -> Vec<u8> {
    const TC_LINKLAYER_ETHERNET: u8 = 1;
    let mut bytes = Vec::with_capacity(36);
    // rate: cell_log, linklayer, overhead, cell_align, mpu, rate
    bytes.push(0);
    bytes.push(TC_LINKLAYER_ETHERNET);
    bytes.extend(0u16.to_ne_bytes());
    bytes.extend(0i16.to_ne_bytes());
    bytes.extend(0u16.to_ne_bytes());
    bytes.extend(
        u32::try_from(rate.bytes_per_second())
            .unwrap_or(u32::MAX)
            .to_ne_bytes(),
    );
    bytes.extend([0u8; 12]); // peakrate: none
    bytes.extend(limit_bytes(rate).to_ne_bytes());
    bytes.extend(0u32.to_ne_bytes()); // buffer: from TCA_TBF_BURST
    bytes.extend(0u32.to_ne_bytes()); // mtu: no peak rate
    bytes
}

fn tbf_request(index: u32, rate: Rate) -> RouteNetlinkMessage {
    const TCA_TBF_PARMS: u16 = 1;
    const TCA_TBF_BURST: u16 = 6;
    let mut message = TcMessage::with_index(index as i32);
    message.header.handle = TcHandle { major: 1, minor: 0 };
    message.header.parent = TcHandle::ROOT;
    message.attributes.push(TcAttribute::Kind("tbf".into()));
    // No TCA_TBF_RATE64: `Rate` stops below 2^32 bytes/s.
    let options = vec![
        TcOption::Other(DefaultNla::new(TCA_TBF_PARMS, tbf_parameters(rate))),
        TcOption::Other(DefaultNla::new(
            TCA_TBF_BURST,
            burst_bytes(rate).to_ne_bytes().to_vec(),
        )),
    ];
    message.attributes.push(TcAttribute::Options(options));
    RouteNetlinkMessage::NewQueueDiscipline(message)
}

fn refused(what: &str) -> impl Fn(io::Error) -> ShapeError + '_ {
    move |e| {
        if errno_is_unsupported(&e) {
            ShapeError::Unsupported(format!("{what}: this kernel lacks it ({e})"))
        } else {
            ShapeError::Io(e)
        }
    }
}

/// Caps what the container receives: a TBF on the host end `link`.
pub fn limit_ingress(route: &Netlink, link: u32, rate: Rate) -> Result<(), ShapeError> {
    route
        .route_request(
            tbf_request(link, rate),
            NLM_F_CREATE | NLM_F_EXCL,
            "a tbf qdisc",
        )
        .map_err(refused("shaping what the container receives"))
}

/// Caps what the container sends: an IFB named `ifb` (made here, up), the
/// host end's ingress redirected to it, a TBF on it.
pub fn limit_egress(route: &Netlink, link: u32, ifb: &str, rate: Rate) -> Result<(), ShapeError> {
    let what = "shaping what the container sends";
    let mut message = LinkMessage::default();
    message.header.flags = vec![netlink_packet_route::link::LinkFlag::Up];
    message.header.change_mask = vec![netlink_packet_route::link::LinkFlag::Up];
    message
        .attributes
        .push(LinkAttribute::IfName(ifb.to_owned()));
    message
        .attributes
        .push(LinkAttribute::LinkInfo(vec![LinkInfo::Kind(InfoKind::Ifb)]));
    route
        .route_request(
            RouteNetlinkMessage::NewLink(message),
            NLM_F_CREATE | NLM_F_EXCL,
            "an ifb link",
        )
        .map_err(refused(what))?;
    let ifb_index = links::index_of(route, ifb)
        .map_err(ShapeError::Io)?
        .ok_or_else(|| ShapeError::Io(io::ErrorKind::NotFound.into()))?;

    let mut ingress = TcMessage::with_index(link as i32);
    ingress.header.handle = TcHandle {
        major: 0xffff,
        minor: 0,
    };
    ingress.header.parent = TcHandle {
        major: 0xffff,
        minor: 0xfff1,
    }; // TC_H_INGRESS
    ingress.attributes.push(TcAttribute::Kind("ingress".into()));
    route
        .route_request(
            RouteNetlinkMessage::NewQueueDiscipline(ingress),
            NLM_F_CREATE | NLM_F_EXCL,
            "an ingress qdisc",
        )
        .map_err(refused(what))?;

    // u32 with one key that matches every packet (mask 0): the machine's
    // kernel has no matchall classifier.
    const ETH_P_ALL: u16 = 0x0003;
    let mut filter = TcMessage::with_index(link as i32);
    filter.header.parent = TcHandle {
        major: 0xffff,
        minor: 0,
    };
    filter.header.info = (1 << 16) | u32::from(ETH_P_ALL.to_be());
    filter.attributes.push(TcAttribute::Kind("u32".into()));
    let mut redirect = TcAction::default();
    redirect
        .attributes
        .push(TcActionAttribute::Kind("mirred".into()));
    let mut generic = TcActionGeneric::default();
    generic.action = TcActionType::Stolen;
    let mut mirror = TcMirror::default();
    mirror.generic = generic;
    mirror.eaction = TcMirrorActionType::EgressRedir;
    mirror.ifindex = ifb_index;
    redirect
        .attributes
        .push(TcActionAttribute::Options(vec![TcActionOption::Mirror(
            TcActionMirrorOption::Parms(mirror),
        )]));
    let mut selector = TcU32Selector::default();
    selector.flags = vec![TcU32SelectorFlag::Terminal];
    selector.nkeys = 1;
    selector.keys = vec![TcU32Key::default()];
    filter.attributes.push(TcAttribute::Options(vec![
        TcOption::U32(TcFilterU32Option::Selector(selector)),
        TcOption::U32(TcFilterU32Option::Action(vec![redirect])),
    ]));
    route
        .route_request(
            RouteNetlinkMessage::NewTrafficFilter(filter),
            NLM_F_CREATE | NLM_F_EXCL,
            "a u32 filter redirecting to the ifb",
        )
        .map_err(refused(what))?;

    route
        .route_request(
            tbf_request(ifb_index, rate),
            NLM_F_CREATE | NLM_F_EXCL,
            "a tbf qdisc on the ifb",
        )
        .map_err(refused(what))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bucket_fits_the_rate() {
        let ten_mbit: Rate = "10mbit".parse().unwrap();
        assert_eq!(burst_bytes(ten_mbit), 16 * 1024);
        assert_eq!(limit_bytes(ten_mbit), 62_500 + 16 * 1024);
        let params = tbf_parameters(ten_mbit);
        assert_eq!(params.len(), 36);
        assert_eq!(
            u32::from_ne_bytes(params[8..12].try_into().unwrap()),
            1_250_000
        );
        let gig: Rate = "1gbit".parse().unwrap();
        assert_eq!(burst_bytes(gig), 1_250_000);
    }
}
