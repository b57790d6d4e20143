//! The classic BPF program attached to the packet socket: only incoming TCP SYNs (without ACK)
//! to one port reach userspace.
//!
//! The socket is `SOCK_DGRAM`, so offset 0 is the network header; the IP version comes from the
//! ancillary `skb->protocol` load. IPv6 packets whose first next header is an extension header
//! (hop-by-hop, routing, fragment, destination options, authentication) are passed up for the
//! userspace parser to decide.

use libc::{
    sock_filter, BPF_ABS, BPF_ALU, BPF_AND, BPF_B, BPF_H, BPF_IND, BPF_JEQ, BPF_JMP, BPF_JSET,
    BPF_K, BPF_LD, BPF_LDX, BPF_MSH, BPF_RET, BPF_W,
};

use super::parse::{IPPROTO_TCP, TCP_ACK, TCP_SYN};

/// Bytes of each accepted packet copied to userspace: room for any IP header with a few
/// extension headers plus a TCP header with options.
pub(crate) const SNAP_LEN: u32 = 512;

const ETH_P_IP: u32 = 0x0800;
const ETH_P_IPV6: u32 = 0x86dd;
/// `SKF_AD_OFF + SKF_AD_x` as the unsigned `k` of a load.
const fn ancillary(field: i32) -> u32 {
    (libc::SKF_AD_OFF + field) as u32
}

/// A jump target: the next instruction or a label.
#[derive(Clone, Copy)]
enum To {
    Next,
    Label(&'static str),
}

enum Op {
    Stmt(u32, u32),
    Jump(u32, u32, To, To),
    Label(&'static str),
}

/// The filter program for SYNs to `port`.
pub(crate) fn syn_filter(port: u16) -> Vec<sock_filter> {
    use Op::{Jump, Label, Stmt};
    use To::{Label as L, Next};
    let jeq = |k: u32, t: To, f: To| Jump(BPF_JMP | BPF_JEQ | BPF_K, k, t, f);
    let syn_mask = u32::from(TCP_SYN | TCP_ACK);
    let syn = u32::from(TCP_SYN);
    let tcp = u32::from(IPPROTO_TCP);
    let port = u32::from(port);
    let program = [
        // Received packets only: to this host or (promiscuous) to another one.
        Stmt(BPF_LD | BPF_W | BPF_ABS, ancillary(libc::SKF_AD_PKTTYPE)),
        jeq(u32::from(libc::PACKET_HOST), L("incoming"), Next),
        jeq(u32::from(libc::PACKET_OTHERHOST), Next, L("drop")),
        Label("incoming"),
        Stmt(BPF_LD | BPF_W | BPF_ABS, ancillary(libc::SKF_AD_PROTOCOL)),
        jeq(ETH_P_IP, Next, L("ipv6")),
        // IPv4: protocol TCP, first fragment, then the TCP header after IHL * 4 bytes.
        Stmt(BPF_LD | BPF_B | BPF_ABS, 9),
        jeq(tcp, Next, L("drop")),
        Stmt(BPF_LD | BPF_H | BPF_ABS, 6),
        Jump(BPF_JMP | BPF_JSET | BPF_K, 0x1fff, L("drop"), Next),
        Stmt(BPF_LDX | BPF_B | BPF_MSH, 0),
        Stmt(BPF_LD | BPF_H | BPF_IND, 2),
        jeq(port, Next, L("drop")),
        Stmt(BPF_LD | BPF_B | BPF_IND, 13),
        Stmt(BPF_ALU | BPF_AND | BPF_K, syn_mask),
        jeq(syn, L("accept"), L("drop")),
        Label("ipv6"),
        jeq(ETH_P_IPV6, Next, L("drop")),
        Stmt(BPF_LD | BPF_B | BPF_ABS, 6),
        jeq(tcp, Next, L("ipv6-extension")),
        Stmt(BPF_LD | BPF_H | BPF_ABS, 40 + 2),
        jeq(port, Next, L("drop")),
        Stmt(BPF_LD | BPF_B | BPF_ABS, 40 + 13),
        Stmt(BPF_ALU | BPF_AND | BPF_K, syn_mask),
        jeq(syn, L("accept"), L("drop")),
        Label("ipv6-extension"),
        jeq(0, L("accept"), Next),
        jeq(43, L("accept"), Next),
        jeq(44, L("accept"), Next),
        jeq(51, L("accept"), Next),
        jeq(60, L("accept"), L("drop")),
        Label("accept"),
        Stmt(BPF_RET | BPF_K, SNAP_LEN),
        Label("drop"),
        Stmt(BPF_RET | BPF_K, 0),
    ];
    assemble(&program)
}

/// Resolves labels into relative jump offsets.
fn assemble(program: &[Op]) -> Vec<sock_filter> {
    let mut labels = std::collections::HashMap::new();
    let mut index = 0usize;
    for op in program {
        match op {
            Op::Label(name) => {
                labels.insert(*name, index);
            }
            _ => index += 1,
        }
    }
    let mut out = Vec::with_capacity(index);
    for op in program {
        let here = out.len();
        let offset = |to: To| -> u8 {
            match to {
                To::Next => 0,
                To::Label(name) => {
                    let target = labels[name];
                    assert!(target > here, "BPF jumps go forward only ({name})");
                    u8::try_from(target - here - 1).expect("BPF jump within 255 instructions")
                }
            }
        };
        match *op {
            Op::Stmt(code, k) => out.push(sock_filter {
                code: code as u16,
                jt: 0,
                jf: 0,
                k,
            }),
            Op::Jump(code, k, jt, jf) => out.push(sock_filter {
                code: code as u16,
                jt: offset(jt),
                jf: offset(jf),
                k,
            }),
            Op::Label(_) => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::parse::tests::{ipv4, ipv6, tcp};
    use super::*;

    /// A classic BPF interpreter for the instructions `syn_filter` uses, following the
    /// kernel's semantics (an out-of-bounds load rejects the packet).
    fn run(program: &[sock_filter], packet: &[u8], pkttype: u8, protocol: u16) -> u32 {
        let load = |at: u32, size: u32| -> Option<u32> {
            if at == ancillary(libc::SKF_AD_PKTTYPE) {
                return Some(u32::from(pkttype));
            }
            if at == ancillary(libc::SKF_AD_PROTOCOL) {
                return Some(u32::from(protocol));
            }
            let at = at as usize;
            let bytes = packet.get(at..at + size as usize)?;
            Some(bytes.iter().fold(0, |acc, b| (acc << 8) | u32::from(*b)))
        };
        let (mut a, mut x, mut pc) = (0u32, 0u32, 0usize);
        loop {
            let insn = program[pc];
            let code = u32::from(insn.code);
            pc += 1;
            let size = |code: u32| match code & 0x18 {
                c if c == BPF_W => 4,
                c if c == BPF_H => 2,
                _ => 1,
            };
            match code & 0x07 {
                c if c == BPF_LD => {
                    let at = if code & 0xe0 == BPF_IND {
                        x.wrapping_add(insn.k)
                    } else {
                        insn.k
                    };
                    match load(at, size(code)) {
                        Some(v) => a = v,
                        None => return 0,
                    }
                }
                c if c == BPF_LDX => {
                    assert_eq!(code, BPF_LDX | BPF_B | BPF_MSH);
                    match packet.get(insn.k as usize) {
                        Some(b) => x = u32::from(b & 0x0f) * 4,
                        None => return 0,
                    }
                }
                c if c == BPF_ALU => {
                    assert_eq!(code, BPF_ALU | BPF_AND | BPF_K);
                    a &= insn.k;
                }
                c if c == BPF_JMP => {
                    let taken = match code & 0xf0 {
                        c if c == BPF_JEQ => a == insn.k,
                        c if c == BPF_JSET => a & insn.k != 0,
                        other => panic!("unexpected jump {other:#x}"),
                    };
                    pc += usize::from(if taken { insn.jt } else { insn.jf });
                }
                c if c == BPF_RET => return insn.k,
                other => panic!("unexpected class {other:#x}"),
            }
        }
    }

    const HOST: u8 = libc::PACKET_HOST;
    const OUTGOING: u8 = libc::PACKET_OUTGOING;

    fn v6(s: &str) -> std::net::Ipv6Addr {
        s.parse().unwrap()
    }

    #[test]
    fn program_is_well_formed() {
        let program = syn_filter(25);
        assert!(program.len() < 64);
        for (i, insn) in program.iter().enumerate() {
            if u32::from(insn.code) & 0x07 != BPF_JMP {
                assert_eq!((insn.jt, insn.jf), (0, 0));
                continue;
            }
            let end = i + 1 + usize::from(insn.jt.max(insn.jf));
            assert!(end < program.len(), "jump at {i} leaves the program");
        }
        let last = program.last().unwrap();
        assert_eq!(u32::from(last.code), BPF_RET | BPF_K);
    }

    #[test]
    fn accepts_incoming_syns_to_the_port() {
        let f = syn_filter(25);
        let p4 = ipv4(
            [192, 0, 2, 2],
            [192, 0, 2, 26],
            6,
            20,
            &tcp(40000, 25, TCP_SYN, 1, 20),
        );
        assert_eq!(run(&f, &p4, HOST, 0x0800), SNAP_LEN);
        assert_eq!(run(&f, &p4, libc::PACKET_OTHERHOST, 0x0800), SNAP_LEN);
        // IP options move the TCP header.
        let p4o = ipv4(
            [192, 0, 2, 2],
            [192, 0, 2, 26],
            6,
            28,
            &tcp(40000, 25, TCP_SYN, 1, 0),
        );
        assert_eq!(run(&f, &p4o, HOST, 0x0800), SNAP_LEN);
        let p6 = ipv6(
            v6("2001:db8::2"),
            v6("2001:db8:0:3::2"),
            6,
            &[],
            &tcp(40000, 25, TCP_SYN, 1, 20),
        );
        assert_eq!(run(&f, &p6, HOST, 0x86dd), SNAP_LEN);
        // Extension headers are left to userspace.
        let p6e = ipv6(
            v6("2001:db8::2"),
            v6("2001:db8:0:3::2"),
            0,
            &[6, 0, 1, 4, 0, 0, 0, 0],
            &tcp(40000, 25, TCP_SYN, 1, 0),
        );
        assert_eq!(run(&f, &p6e, HOST, 0x86dd), SNAP_LEN);
    }

    #[test]
    fn drops_everything_else() {
        let f = syn_filter(25);
        let (a, b) = ([192, 0, 2, 2], [192, 0, 2, 26]);
        let syn4 = ipv4(a, b, 6, 20, &tcp(40000, 25, TCP_SYN, 1, 0));
        assert_eq!(run(&f, &syn4, OUTGOING, 0x0800), 0, "outgoing");
        assert_eq!(run(&f, &syn4, libc::PACKET_BROADCAST, 0x0800), 0);
        assert_eq!(run(&f, &syn4, HOST, 0x0806), 0, "ARP protocol");
        assert_eq!(
            run(
                &f,
                &ipv4(a, b, 6, 20, &tcp(40000, 26, TCP_SYN, 1, 0)),
                HOST,
                0x0800
            ),
            0
        );
        assert_eq!(
            run(
                &f,
                &ipv4(b, a, 6, 20, &tcp(25, 40000, TCP_SYN | TCP_ACK, 1, 0)),
                HOST,
                0x0800
            ),
            0
        );
        assert_eq!(
            run(
                &f,
                &ipv4(a, b, 6, 20, &tcp(40000, 25, TCP_SYN | TCP_ACK, 1, 0)),
                HOST,
                0x0800
            ),
            0
        );
        assert_eq!(
            run(
                &f,
                &ipv4(a, b, 6, 20, &tcp(40000, 25, TCP_ACK, 1, 0)),
                HOST,
                0x0800
            ),
            0
        );
        assert_eq!(
            run(
                &f,
                &ipv4(a, b, 17, 20, &tcp(40000, 25, TCP_SYN, 1, 0)),
                HOST,
                0x0800
            ),
            0
        );
        let mut fragment = syn4.clone();
        fragment[7] = 0x10;
        assert_eq!(run(&f, &fragment, HOST, 0x0800), 0);
        assert_eq!(run(&f, &syn4[..30], HOST, 0x0800), 0, "truncated");

        let (c, d) = (v6("2001:db8::2"), v6("2001:db8:0:3::2"));
        assert_eq!(
            run(
                &f,
                &ipv6(c, d, 6, &[], &tcp(40000, 26, TCP_SYN, 1, 0)),
                HOST,
                0x86dd
            ),
            0
        );
        assert_eq!(
            run(
                &f,
                &ipv6(c, d, 6, &[], &tcp(40000, 25, 0x12, 1, 0)),
                HOST,
                0x86dd
            ),
            0
        );
        assert_eq!(
            run(
                &f,
                &ipv6(c, d, 17, &[], &tcp(40000, 25, TCP_SYN, 1, 0)),
                HOST,
                0x86dd
            ),
            0
        );
        assert_eq!(
            run(&f, &ipv6(c, d, 58, &[], &[128, 0, 0, 0]), HOST, 0x86dd),
            0,
            "ICMPv6"
        );
        let syn6 = ipv6(c, d, 6, &[], &tcp(40000, 25, TCP_SYN, 1, 0));
        assert_eq!(run(&f, &syn6, OUTGOING, 0x86dd), 0);
    }
}
