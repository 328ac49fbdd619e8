//! nf_tables over netlink: the few messages and expressions berth's rules
//! need, encoded by hand.
//!
//! Written here because the crates that do this either build against
//! libnftnl/libclang at compile time (rustables, nftnl) or exec the `nft`
//! binary (nftables), which is not on a default host and costs milliseconds
//! per change. The encoding follows `linux/netfilter/nf_tables.h`; all
//! integer attributes are big-endian, register contents as the packet
//! holds them.

use crate::netlink::{errno_error, Netlink};
use std::io;
use std::net::Ipv4Addr;

const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;
const NFPROTO_IPV4: u8 = 2;

const NFT_MSG_NEWTABLE: u16 = 0;
const NFT_MSG_DELTABLE: u16 = 2;
const NFT_MSG_NEWCHAIN: u16 = 3;
const NFT_MSG_NEWRULE: u16 = 6;

const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_APPEND: u16 = 0x800;
const NLM_F_CREATE: u16 = 0x400;
const NLA_F_NESTED: u16 = 0x8000;

const REG_VERDICT: u32 = 0;
const REG_1: u32 = 1;
const REG_2: u32 = 2;

/// A netfilter hook of the IPv4 family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    Prerouting = 0,
    Input = 1,
    Forward = 2,
    Output = 3,
    Postrouting = 4,
}

/// A base chain's kind and place.
#[derive(Debug, Clone, Copy)]
pub struct BaseChain {
    pub hook: Hook,
    pub priority: i32,
    /// `"nat"` or `"filter"`.
    pub kind: &'static str,
}

/// What a rule matches and does, in order. Every rule of berth's is a few
/// matches and one action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expr {
    /// `iifname NAME` (or `!=`).
    InputInterface {
        name: String,
        equal: bool,
    },
    /// `oifname NAME` (or `!=`).
    OutputInterface {
        name: String,
        equal: bool,
    },
    /// `ip saddr NET/LEN` (or `!=`).
    SourceNet {
        net: Ipv4Addr,
        prefix: u8,
        equal: bool,
    },
    /// `ip daddr NET/LEN` (or `!=`).
    DestinationNet {
        net: Ipv4Addr,
        prefix: u8,
        equal: bool,
    },
    /// `meta l4proto N`.
    Protocol(u8),
    /// `th dport N` (after [`Expr::Protocol`]).
    DestinationPort(u16),
    /// `th dport != N` (after [`Expr::Protocol`]).
    DestinationPortNot(u16),
    /// `fib daddr type local`.
    ToLocalAddress,
    /// `ct status dnat`.
    WasDestinationNatted,
    /// `ct state != established,related`: a packet that opens a connection
    /// (or belongs to none).
    NotAnAnswer,
    /// `dnat to ADDR:PORT`.
    Dnat {
        address: Ipv4Addr,
        port: u16,
    },
    Masquerade,
    Accept,
    Drop,
    /// `jump CHAIN`.
    Jump(String),
}

/// One change to the ruleset, sent with others in one transaction.
#[derive(Debug, Clone)]
pub enum Change {
    /// Makes the table if missing.
    AddTable,
    /// Removes the table and everything in it.
    DeleteTable,
    AddChain {
        name: String,
        base: Option<BaseChain>,
    },
    AddRule {
        chain: String,
        exprs: Vec<Expr>,
    },
}

/// Applies `changes` to `table` (family `ip`) as one transaction: all or
/// nothing.
pub fn apply(socket: &Netlink, table: &str, changes: &[Change]) -> io::Result<()> {
    let mut batch = Vec::new();
    let mut acked = Vec::new();
    let begin = socket.next_seq();
    batch_marker(&mut batch, NFNL_MSG_BATCH_BEGIN, begin);
    for change in changes {
        let seq = socket.next_seq();
        acked.push(seq);
        encode(&mut batch, table, change, seq);
    }
    let end = socket.next_seq();
    batch_marker(&mut batch, NFNL_MSG_BATCH_END, end);
    match socket.transact(&batch, &acked)? {
        Ok(()) => Ok(()),
        Err(refused) => Err(errno_error(
            refused.errno,
            &format!(
                "nf_tables refused {:?} in table {table}",
                changes.get(refused.index)
            ),
        )),
    }
}

/// A message under construction: header, nfgenmsg, attributes.
struct Message {
    buf: Vec<u8>,
    nests: Vec<usize>,
}

impl Message {
    fn new(kind: u16, flags: u16, seq: u32, res_id: u16) -> Message {
        let mut buf = Vec::with_capacity(256);
        buf.extend(0u32.to_ne_bytes()); // length, set by `finish`
        buf.extend(kind.to_ne_bytes());
        buf.extend(flags.to_ne_bytes());
        buf.extend(seq.to_ne_bytes());
        buf.extend(0u32.to_ne_bytes()); // port id: the kernel's
        buf.push(NFPROTO_IPV4);
        buf.push(0); // NFNETLINK_V0
        buf.extend(res_id.to_be_bytes());
        Message {
            buf,
            nests: Vec::new(),
        }
    }

    fn attr(&mut self, kind: u16, value: &[u8]) -> &mut Self {
        let len = 4 + value.len();
        self.buf.extend((len as u16).to_ne_bytes());
        self.buf.extend(kind.to_ne_bytes());
        self.buf.extend(value);
        self.pad();
        self
    }

    fn string(&mut self, kind: u16, value: &str) -> &mut Self {
        let mut bytes = value.as_bytes().to_vec();
        bytes.push(0);
        self.attr(kind, &bytes)
    }

    fn be32(&mut self, kind: u16, value: u32) -> &mut Self {
        self.attr(kind, &value.to_be_bytes())
    }

    fn begin(&mut self, kind: u16) -> &mut Self {
        self.nests.push(self.buf.len());
        self.buf.extend(0u16.to_ne_bytes());
        self.buf.extend((kind | NLA_F_NESTED).to_ne_bytes());
        self
    }

    fn end(&mut self) -> &mut Self {
        if let Some(at) = self.nests.pop() {
            let len = (self.buf.len() - at) as u16;
            self.buf[at..at + 2].copy_from_slice(&len.to_ne_bytes());
        }
        self
    }

    fn pad(&mut self) {
        while !self.buf.len().is_multiple_of(4) {
            self.buf.push(0);
        }
    }

    fn finish(mut self, out: &mut Vec<u8>) {
        let len = self.buf.len() as u32;
        self.buf[0..4].copy_from_slice(&len.to_ne_bytes());
        out.extend(self.buf);
    }
}

fn batch_marker(out: &mut Vec<u8>, kind: u16, seq: u32) {
    let mut m = Message::new(kind, NLM_F_REQUEST, seq, NFNL_SUBSYS_NFTABLES);
    // The batch markers carry family 0 (unspecified).
    m.buf[16] = 0;
    m.finish(out);
}

fn nft_type(msg: u16) -> u16 {
    (NFNL_SUBSYS_NFTABLES << 8) | msg
}

fn encode(out: &mut Vec<u8>, table: &str, change: &Change, seq: u32) {
    const TABLE_NAME: u16 = 1;
    const CHAIN_TABLE: u16 = 1;
    const CHAIN_NAME: u16 = 3;
    const CHAIN_HOOK: u16 = 4;
    const CHAIN_POLICY: u16 = 5;
    const CHAIN_TYPE: u16 = 7;
    const HOOK_NUM: u16 = 1;
    const HOOK_PRIORITY: u16 = 2;
    const RULE_TABLE: u16 = 1;
    const RULE_CHAIN: u16 = 2;
    const RULE_EXPRESSIONS: u16 = 4;
    const LIST_ELEM: u16 = 1;
    let ack = NLM_F_REQUEST | NLM_F_ACK;
    match change {
        Change::AddTable => {
            let mut m = Message::new(nft_type(NFT_MSG_NEWTABLE), ack | NLM_F_CREATE, seq, 0);
            m.string(TABLE_NAME, table);
            m.finish(out);
        }
        Change::DeleteTable => {
            let mut m = Message::new(nft_type(NFT_MSG_DELTABLE), ack, seq, 0);
            m.string(TABLE_NAME, table);
            m.finish(out);
        }
        Change::AddChain { name, base } => {
            let mut m = Message::new(nft_type(NFT_MSG_NEWCHAIN), ack | NLM_F_CREATE, seq, 0);
            m.string(CHAIN_TABLE, table).string(CHAIN_NAME, name);
            if let Some(base) = base {
                m.begin(CHAIN_HOOK)
                    .be32(HOOK_NUM, base.hook as u32)
                    .be32(HOOK_PRIORITY, base.priority as u32)
                    .end();
                m.be32(CHAIN_POLICY, 1); // accept: berth's chains only add
                m.string(CHAIN_TYPE, base.kind);
            }
            m.finish(out);
        }
        Change::AddRule { chain, exprs } => {
            let mut m = Message::new(
                nft_type(NFT_MSG_NEWRULE),
                ack | NLM_F_CREATE | NLM_F_APPEND,
                seq,
                0,
            );
            m.string(RULE_TABLE, table).string(RULE_CHAIN, chain);
            m.begin(RULE_EXPRESSIONS);
            for expr in exprs {
                for (name, data) in lower(expr) {
                    m.begin(LIST_ELEM);
                    m.string(1, name); // NFTA_EXPR_NAME
                    m.begin(2); // NFTA_EXPR_DATA
                    for attr in data {
                        attr.write(&mut m);
                    }
                    m.end().end();
                }
            }
            m.end();
            m.finish(out);
        }
    }
}

/// An attribute of an expression's data.
enum Attr {
    U32(u16, u32),
    /// Nested `NFTA_DATA_VALUE`.
    Value(u16, Vec<u8>),
    /// Nested `NFTA_DATA_VERDICT` with a code and maybe a chain.
    Verdict(u16, i32, Option<String>),
}

impl Attr {
    fn write(&self, m: &mut Message) {
        match self {
            Attr::U32(kind, v) => {
                m.be32(*kind, *v);
            }
            Attr::Value(kind, bytes) => {
                m.begin(*kind).attr(1, bytes).end();
            }
            Attr::Verdict(kind, code, chain) => {
                m.begin(*kind).begin(2).be32(1, *code as u32);
                if let Some(chain) = chain {
                    m.string(2, chain);
                }
                m.end().end();
            }
        }
    }
}

const CMP_EQ: u32 = 0;
const CMP_NEQ: u32 = 1;

fn meta(key: u32) -> (&'static str, Vec<Attr>) {
    ("meta", vec![Attr::U32(2, key), Attr::U32(1, REG_1)])
}

fn cmp(op: u32, value: Vec<u8>) -> (&'static str, Vec<Attr>) {
    (
        "cmp",
        vec![Attr::U32(1, REG_1), Attr::U32(2, op), Attr::Value(3, value)],
    )
}

fn payload(base: u32, offset: u32, len: u32) -> (&'static str, Vec<Attr>) {
    (
        "payload",
        vec![
            Attr::U32(1, REG_1),
            Attr::U32(2, base),
            Attr::U32(3, offset),
            Attr::U32(4, len),
        ],
    )
}

fn bitwise(mask: Vec<u8>) -> (&'static str, Vec<Attr>) {
    let len = mask.len();
    (
        "bitwise",
        vec![
            Attr::U32(1, REG_1),
            Attr::U32(2, REG_1),
            Attr::U32(3, len as u32),
            Attr::Value(4, mask),
            Attr::Value(5, vec![0; len]),
        ],
    )
}

fn interface_name(name: &str) -> Vec<u8> {
    let mut bytes = name.as_bytes().to_vec();
    bytes.resize(16, 0);
    bytes
}

fn net_match(
    offset: u32,
    net: Ipv4Addr,
    prefix: u8,
    equal: bool,
) -> Vec<(&'static str, Vec<Attr>)> {
    let op = if equal { CMP_EQ } else { CMP_NEQ };
    let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
    let mut out = vec![payload(1, offset, 4)];
    if prefix < 32 {
        out.push(bitwise(mask.to_be_bytes().to_vec()));
    }
    out.push(cmp(op, (u32::from(net) & mask).to_be_bytes().to_vec()));
    out
}

/// The kernel expressions one [`Expr`] is made of.
fn lower(expr: &Expr) -> Vec<(&'static str, Vec<Attr>)> {
    const META_IIFNAME: u32 = 6;
    const META_OIFNAME: u32 = 7;
    const META_L4PROTO: u32 = 16;
    match expr {
        Expr::InputInterface { name, equal } => vec![
            meta(META_IIFNAME),
            cmp(if *equal { CMP_EQ } else { CMP_NEQ }, interface_name(name)),
        ],
        Expr::OutputInterface { name, equal } => vec![
            meta(META_OIFNAME),
            cmp(if *equal { CMP_EQ } else { CMP_NEQ }, interface_name(name)),
        ],
        Expr::SourceNet { net, prefix, equal } => net_match(12, *net, *prefix, *equal),
        Expr::DestinationNet { net, prefix, equal } => net_match(16, *net, *prefix, *equal),
        Expr::Protocol(number) => vec![meta(META_L4PROTO), cmp(CMP_EQ, vec![*number])],
        Expr::DestinationPort(port) => {
            vec![payload(2, 2, 2), cmp(CMP_EQ, port.to_be_bytes().to_vec())]
        }
        Expr::DestinationPortNot(port) => {
            vec![payload(2, 2, 2), cmp(CMP_NEQ, port.to_be_bytes().to_vec())]
        }
        Expr::ToLocalAddress => {
            const RTN_LOCAL: u32 = 2;
            vec![
                (
                    "fib",
                    vec![
                        Attr::U32(1, REG_1),
                        Attr::U32(2, 3),      // NFT_FIB_RESULT_ADDRTYPE
                        Attr::U32(3, 1 << 1), // NFTA_FIB_F_DADDR
                    ],
                ),
                cmp(CMP_EQ, RTN_LOCAL.to_ne_bytes().to_vec()),
            ]
        }
        Expr::WasDestinationNatted => {
            const IPS_DST_NAT: u32 = 1 << 5;
            vec![
                ("ct", vec![Attr::U32(1, REG_1), Attr::U32(2, 2)]), // NFT_CT_STATUS
                bitwise(IPS_DST_NAT.to_ne_bytes().to_vec()),
                cmp(CMP_NEQ, vec![0; 4]),
            ]
        }
        Expr::NotAnAnswer => {
            const ESTABLISHED: u32 = 1 << 1;
            const RELATED: u32 = 1 << 2;
            vec![
                ("ct", vec![Attr::U32(1, REG_1), Attr::U32(2, 0)]), // NFT_CT_STATE
                bitwise((ESTABLISHED | RELATED).to_ne_bytes().to_vec()),
                cmp(CMP_EQ, vec![0; 4]),
            ]
        }
        Expr::Dnat { address, port } => vec![
            (
                "immediate",
                vec![
                    Attr::U32(1, REG_1),
                    Attr::Value(2, address.octets().to_vec()),
                ],
            ),
            (
                "immediate",
                vec![
                    Attr::U32(1, REG_2),
                    Attr::Value(2, port.to_be_bytes().to_vec()),
                ],
            ),
            (
                "nat",
                vec![
                    Attr::U32(1, 1), // NFT_NAT_DNAT
                    Attr::U32(2, u32::from(NFPROTO_IPV4)),
                    Attr::U32(3, REG_1),
                    Attr::U32(5, REG_2),
                ],
            ),
        ],
        Expr::Masquerade => vec![("masq", Vec::new())],
        Expr::Accept => vec![(
            "immediate",
            vec![Attr::U32(1, REG_VERDICT), Attr::Verdict(2, 1, None)],
        )],
        Expr::Drop => vec![(
            "immediate",
            vec![Attr::U32(1, REG_VERDICT), Attr::Verdict(2, 0, None)],
        )],
        Expr::Jump(chain) => vec![(
            "immediate",
            vec![
                Attr::U32(1, REG_VERDICT),
                Attr::Verdict(2, -3, Some(chain.clone())),
            ],
        )],
    }
}

/// Whether nf_tables answers on this host (a kernel without it refuses the
/// socket's first transaction).
pub fn available(socket: &Netlink, probe_table: &str) -> io::Result<()> {
    apply(
        socket,
        probe_table,
        &[Change::AddTable, Change::DeleteTable],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_attributes_carry_their_length_and_flag() {
        let mut m = Message::new(nft_type(NFT_MSG_NEWCHAIN), NLM_F_REQUEST, 9, 0);
        m.begin(4).be32(1, 2).end();
        let mut out = Vec::new();
        m.finish(&mut out);
        // header 16 + nfgenmsg 4 + nest header 4 + u32 attribute 8
        assert_eq!(out.len(), 32);
        assert_eq!(u32::from_ne_bytes(out[0..4].try_into().unwrap()), 32);
        assert_eq!(u16::from_ne_bytes(out[20..22].try_into().unwrap()), 12);
        assert_eq!(
            u16::from_ne_bytes(out[22..24].try_into().unwrap()),
            4 | NLA_F_NESTED
        );
        assert_eq!(&out[28..32], &2u32.to_be_bytes());
    }

    #[test]
    fn a_network_match_masks_the_address() {
        let exprs = lower(&Expr::SourceNet {
            net: Ipv4Addr::new(10, 88, 3, 4),
            prefix: 16,
            equal: true,
        });
        let names: Vec<_> = exprs.iter().map(|(n, _)| *n).collect();
        assert_eq!(names, ["payload", "bitwise", "cmp"]);
        let Attr::Value(_, value) = &exprs[2].1[2] else {
            panic!("no value")
        };
        assert_eq!(value, &[10, 88, 0, 0]);
        let host = lower(&Expr::DestinationNet {
            net: Ipv4Addr::new(10, 0, 0, 1),
            prefix: 32,
            equal: false,
        });
        assert_eq!(host.len(), 2, "a /32 needs no mask");
    }
}
