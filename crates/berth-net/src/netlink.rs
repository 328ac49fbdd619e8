//! A blocking netlink socket: send a batch of requests, collect their acks
//! or a dump's answers.
//!
//! Blocking, not rtnetlink's async connection: every request berth makes is
//! short, and the socket of a container's namespace is opened on a thread
//! that has just entered it (a netlink socket stays bound to the namespace
//! it was opened in), which is simplest with a plain socket the caller owns.

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST,
};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{protocols, Socket, SocketAddr};
use std::cell::Cell;
use std::io;

const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const HEADER_LEN: usize = 16;

/// One netlink socket of one protocol, bound to the namespace it was
/// opened in.
pub struct Netlink {
    socket: Socket,
    seq: Cell<u32>,
}

/// A request the kernel refused: the errno and which request it was.
#[derive(Debug)]
pub struct Refused {
    pub errno: i32,
    /// The index of the refused message in the batch.
    pub index: usize,
}

impl Netlink {
    /// The routing socket (links, addresses, routes, qdiscs).
    pub fn route() -> io::Result<Netlink> {
        Netlink::open(protocols::NETLINK_ROUTE)
    }

    /// The netfilter socket (nf_tables).
    pub fn netfilter() -> io::Result<Netlink> {
        Netlink::open(protocols::NETLINK_NETFILTER)
    }

    fn open(protocol: isize) -> io::Result<Netlink> {
        let mut socket = Socket::new(protocol)?;
        socket.bind_auto()?;
        socket.connect(&SocketAddr::new(0, 0))?;
        // Extended acks carry the kernel's reason ("File exists", …) in
        // some cases; errors are reported by errno either way.
        let _ = socket.set_ext_ack(true);
        // Acks carry only the header of what they answer, and a whole
        // ruleset (a rule per published port) fits in one send: root may
        // raise the buffers past the default caps.
        let _ = socket.set_cap_ack(true);
        let _ = rustix::net::sockopt::set_socket_send_buffer_size_force(&socket, 8 << 20);
        let _ = rustix::net::sockopt::set_socket_recv_buffer_size_force(&socket, 8 << 20);
        // Every request is answered at once; the timeout only keeps a lost
        // answer from hanging the caller.
        let timeout = rustix::net::sockopt::set_socket_timeout(
            &socket,
            rustix::net::sockopt::Timeout::Recv,
            Some(std::time::Duration::from_secs(5)),
        );
        timeout.map_err(io::Error::from)?;
        Ok(Netlink {
            socket,
            seq: Cell::new(1),
        })
    }

    /// The next sequence number (requests are told apart by it).
    pub fn next_seq(&self) -> u32 {
        let seq = self.seq.get();
        self.seq.set(seq.wrapping_add(1).max(1));
        seq
    }

    /// Sends `batch` (messages numbered with [`Netlink::next_seq`], the
    /// ones in `acked` asking for an ack) and waits for every ack. A
    /// refusal of any message of the batch (`acked` or not: nf_tables
    /// refuses a whole batch on its begin marker) ends the wait at once and
    /// is returned, with its position in `acked` (0 for an unacked one).
    /// Answers to earlier batches are told apart by their numbers.
    pub fn transact(&self, batch: &[u8], acked: &[u32]) -> io::Result<Result<(), Refused>> {
        let (Some(first), Some(last)) = (acked.iter().min(), acked.iter().max()) else {
            return Ok(Ok(()));
        };
        // The batch's own numbers: from just before the first acked message
        // (a begin marker) to just after the last (an end marker).
        let ours = first.saturating_sub(1)..=last.saturating_add(1);
        self.socket.send(batch, 0)?;
        let mut waiting: Vec<u32> = acked.to_vec();
        while !waiting.is_empty() {
            let (buf, _) = self.socket.recv_from_full()?;
            for (kind, seq, payload) in messages(&buf)? {
                if kind != NLMSG_ERROR || !ours.contains(&seq) {
                    continue;
                }
                let errno = error_code(payload)?;
                if errno != 0 {
                    let index = acked.iter().position(|s| *s == seq).unwrap_or(0);
                    return Ok(Err(Refused { errno, index }));
                }
                waiting.retain(|s| *s != seq);
            }
        }
        Ok(Ok(()))
    }

    /// One route request that must be acked; the kernel's refusal becomes
    /// an `io::Error` naming `what`.
    pub fn route_request(
        &self,
        message: RouteNetlinkMessage,
        flags: u16,
        what: &str,
    ) -> io::Result<()> {
        let seq = self.next_seq();
        let bytes = route_bytes(message, flags | NLM_F_REQUEST | NLM_F_ACK, seq);
        match self.transact(&bytes, &[seq])? {
            Ok(()) => Ok(()),
            Err(refused) => Err(errno_error(refused.errno, what)),
        }
    }

    /// Several route requests in one send, each acked; the first refusal
    /// is returned with the name of its request.
    pub fn route_batch(&self, requests: Vec<(RouteNetlinkMessage, u16, String)>) -> io::Result<()> {
        let mut bytes = Vec::new();
        let mut seqs = Vec::new();
        let mut names = Vec::new();
        for (message, flags, what) in requests {
            let seq = self.next_seq();
            bytes.extend(route_bytes(message, flags | NLM_F_REQUEST | NLM_F_ACK, seq));
            seqs.push(seq);
            names.push(what);
        }
        match self.transact(&bytes, &seqs)? {
            Ok(()) => Ok(()),
            Err(refused) => Err(errno_error(refused.errno, &names[refused.index])),
        }
    }

    /// A get request and the payload of its one answer, unparsed (`Err`
    /// with the kernel's errno if it refused, ENODEV for a link that does
    /// not exist). Unparsed: the callers read a fixed header field, and the
    /// crate warns about every attribute newer than itself.
    pub fn route_get(&self, message: RouteNetlinkMessage) -> io::Result<Vec<u8>> {
        let seq = self.next_seq();
        self.socket
            .send(&route_bytes(message, NLM_F_REQUEST, seq), 0)?;
        loop {
            let (buf, _) = self.socket.recv_from_full()?;
            for (kind, got, payload) in messages(&buf)? {
                if got != seq {
                    continue;
                }
                if kind == NLMSG_ERROR {
                    let errno = error_code(payload)?;
                    return Err(io::Error::from_raw_os_error(errno));
                }
                return Ok(payload.to_vec());
            }
        }
    }

    /// A dump request and every answer, parsed.
    pub fn route_dump(&self, message: RouteNetlinkMessage) -> io::Result<Vec<RouteNetlinkMessage>> {
        let seq = self.next_seq();
        let bytes = route_bytes(message, NLM_F_REQUEST | NLM_F_DUMP, seq);
        self.socket.send(&bytes, 0)?;
        let mut answers = Vec::new();
        loop {
            let (buf, _) = self.socket.recv_from_full()?;
            for (kind, got, payload) in messages(&buf)? {
                if got != seq {
                    continue;
                }
                match kind {
                    NLMSG_DONE => return Ok(answers),
                    NLMSG_ERROR => {
                        let errno = error_code(payload)?;
                        return Err(errno_error(errno, "reading the kernel's tables"));
                    }
                    _ => {}
                }
            }
            let mut at = 0;
            while at + HEADER_LEN <= buf.len() {
                let len =
                    u32::from_ne_bytes(buf[at..at + 4].try_into().unwrap_or_default()) as usize;
                if len < HEADER_LEN || at + len > buf.len() {
                    break;
                }
                if let Ok(message) =
                    NetlinkMessage::<RouteNetlinkMessage>::deserialize(&buf[at..at + len])
                {
                    if message.header.sequence_number == seq {
                        if let NetlinkPayload::InnerMessage(inner) = message.payload {
                            answers.push(inner);
                        }
                    }
                }
                at += align(len);
            }
        }
    }
}

/// A route message as bytes.
fn route_bytes(message: RouteNetlinkMessage, flags: u16, seq: u32) -> Vec<u8> {
    let mut header = NetlinkHeader::default();
    header.flags = flags;
    header.sequence_number = seq;
    let mut packet = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(message));
    packet.finalize();
    let mut bytes = vec![0; packet.buffer_len()];
    packet.serialize(&mut bytes);
    bytes
}

/// The kernel refused a request: what it was, and the errno.
#[derive(Debug)]
struct KernelRefusal {
    what: String,
    errno: i32,
}

impl std::fmt::Display for KernelRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: {}",
            self.what,
            io::Error::from_raw_os_error(self.errno)
        )
    }
}

impl std::error::Error for KernelRefusal {}

/// `errno` as an error saying what was refused ([`errno_of`] reads it back).
pub fn errno_error(errno: i32, what: &str) -> io::Error {
    let kind = io::Error::from_raw_os_error(errno).kind();
    io::Error::new(
        kind,
        KernelRefusal {
            what: what.to_owned(),
            errno,
        },
    )
}

/// The errno of an error from this module or the OS.
pub fn errno_of(e: &io::Error) -> Option<i32> {
    e.raw_os_error().or_else(|| {
        e.get_ref()
            .and_then(|inner| inner.downcast_ref::<KernelRefusal>())
            .map(|r| r.errno)
    })
}

fn align(len: usize) -> usize {
    (len + 3) & !3
}

/// The messages of one datagram: (type, sequence number, payload).
fn messages(buf: &[u8]) -> io::Result<Vec<(u16, u32, &[u8])>> {
    let mut out = Vec::new();
    let mut at = 0;
    while at + HEADER_LEN <= buf.len() {
        let field = |from: usize, to: usize| &buf[at + from..at + to];
        let len = u32::from_ne_bytes(field(0, 4).try_into().map_err(io::Error::other)?) as usize;
        if len < HEADER_LEN || at + len > buf.len() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "a netlink message runs past its datagram",
            ));
        }
        let kind = u16::from_ne_bytes(field(4, 6).try_into().map_err(io::Error::other)?);
        let seq = u32::from_ne_bytes(field(8, 12).try_into().map_err(io::Error::other)?);
        out.push((kind, seq, &buf[at + HEADER_LEN..at + len]));
        at += align(len);
    }
    Ok(out)
}

/// The (positive) errno of an `NLMSG_ERROR`; 0 for an ack.
fn error_code(payload: &[u8]) -> io::Result<i32> {
    let code = payload
        .get(..4)
        .and_then(|b| b.try_into().ok())
        .map(i32::from_ne_bytes)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "a short netlink error"))?;
    Ok(-code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datagrams_split_into_aligned_messages() {
        let mut buf = Vec::new();
        for (kind, seq, payload) in [(2u16, 7u32, vec![0u8; 4]), (3, 8, vec![1, 2, 3])] {
            let len = (HEADER_LEN + payload.len()) as u32;
            buf.extend(len.to_ne_bytes());
            buf.extend(kind.to_ne_bytes());
            buf.extend(0u16.to_ne_bytes());
            buf.extend(seq.to_ne_bytes());
            buf.extend(0u32.to_ne_bytes());
            buf.extend(&payload);
            buf.resize(align(buf.len()), 0);
        }
        let parsed = messages(&buf).unwrap();
        assert_eq!(parsed.len(), 2);
        assert_eq!(
            (parsed[0].0, parsed[0].1, error_code(parsed[0].2).unwrap()),
            (2, 7, 0)
        );
        assert_eq!(
            (parsed[1].0, parsed[1].1, parsed[1].2),
            (3, 8, &[1u8, 2, 3][..])
        );
        assert!(messages(&buf[..36]).is_err());
    }
}
