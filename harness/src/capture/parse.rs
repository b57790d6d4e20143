//! Parsing of captured network-layer packets (no link header) into TCP SYNs.
//!
//! Everything here works on untrusted bytes: a malformed or truncated packet yields `None`,
//! never a panic.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6};

/// IP protocol number / IPv6 next header of TCP.
pub(crate) const IPPROTO_TCP: u8 = 6;
/// TCP flag bits.
pub(crate) const TCP_SYN: u8 = 0x02;
/// TCP flag bits.
pub(crate) const TCP_ACK: u8 = 0x10;
/// How many IPv6 extension headers are skipped before giving up.
const MAX_IPV6_EXTENSION_HEADERS: usize = 8;

/// A TCP SYN without ACK, as parsed from one packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ParsedSyn {
    /// Source address and port.
    pub client: SocketAddr,
    /// Destination address and port.
    pub server: SocketAddr,
    /// The SYN's sequence number (the client's initial sequence number): a retransmitted SYN
    /// repeats it, a new connection attempt on the same 4-tuple does not.
    pub sequence: u32,
}

/// Parses an IPv4 or IPv6 packet (starting at the IP header) carrying a TCP segment with SYN
/// set and ACK clear. Anything else (other protocols, non-initial fragments, SYN+ACK, truncated
/// or inconsistent headers) gives `None`.
pub(crate) fn parse_syn(packet: &[u8]) -> Option<ParsedSyn> {
    match packet.first()? >> 4 {
        4 => parse_ipv4(packet),
        6 => parse_ipv6(packet),
        _ => None,
    }
}

fn be16(bytes: &[u8], at: usize) -> Option<u16> {
    let b = bytes.get(at..at.checked_add(2)?)?;
    Some(u16::from_be_bytes([b[0], b[1]]))
}

fn be32(bytes: &[u8], at: usize) -> Option<u32> {
    let b = bytes.get(at..at.checked_add(4)?)?;
    Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

fn parse_ipv4(packet: &[u8]) -> Option<ParsedSyn> {
    let header_len = usize::from(packet.first()? & 0x0f) * 4;
    if header_len < 20 || packet.len() < header_len {
        return None;
    }
    let total_len = usize::from(be16(packet, 2)?);
    if total_len < header_len {
        return None;
    }
    // Link-layer padding beyond the IP total length is not part of the packet.
    let packet = &packet[..total_len.min(packet.len())];
    let fragment_offset = be16(packet, 6)? & 0x1fff;
    if fragment_offset != 0 || packet[9] != IPPROTO_TCP {
        return None;
    }
    let src = Ipv4Addr::from(be32(packet, 12)?);
    let dst = Ipv4Addr::from(be32(packet, 16)?);
    let tcp = parse_tcp(&packet[header_len..])?;
    Some(ParsedSyn {
        client: SocketAddr::new(src.into(), tcp.source_port),
        server: SocketAddr::new(dst.into(), tcp.destination_port),
        sequence: tcp.sequence,
    })
}

fn parse_ipv6(packet: &[u8]) -> Option<ParsedSyn> {
    if packet.len() < 40 {
        return None;
    }
    let payload_len = usize::from(be16(packet, 4)?);
    let packet = &packet[..(40 + payload_len).min(packet.len())];
    let src = Ipv6Addr::from(<[u8; 16]>::try_from(&packet[8..24]).ok()?);
    let dst = Ipv6Addr::from(<[u8; 16]>::try_from(&packet[24..40]).ok()?);

    let mut next_header = packet[6];
    let mut offset = 40usize;
    let mut skipped = 0;
    while next_header != IPPROTO_TCP {
        if skipped == MAX_IPV6_EXTENSION_HEADERS {
            return None;
        }
        skipped += 1;
        let header = packet.get(offset..offset.checked_add(8)?)?;
        let len = match next_header {
            // Hop-by-hop options, routing, destination options: (length + 1) * 8 bytes.
            0 | 43 | 60 => (usize::from(header[1]) + 1) * 8,
            // Fragment: 8 bytes; only the first fragment carries the TCP header.
            44 => {
                if u16::from_be_bytes([header[2], header[3]]) >> 3 != 0 {
                    return None;
                }
                8
            }
            // Authentication header: (length + 2) * 4 bytes.
            51 => (usize::from(header[1]) + 2) * 4,
            _ => return None,
        };
        next_header = header[0];
        offset = offset.checked_add(len)?;
    }
    let tcp = parse_tcp(packet.get(offset..)?)?;
    Some(ParsedSyn {
        client: SocketAddr::V6(SocketAddrV6::new(src, tcp.source_port, 0, 0)),
        server: SocketAddr::V6(SocketAddrV6::new(dst, tcp.destination_port, 0, 0)),
        sequence: tcp.sequence,
    })
}

struct TcpSyn {
    source_port: u16,
    destination_port: u16,
    sequence: u32,
}

/// The SYN fields of a TCP header, if it is complete (options included) and has SYN without
/// ACK.
fn parse_tcp(segment: &[u8]) -> Option<TcpSyn> {
    let data_offset = usize::from(segment.get(12)? >> 4) * 4;
    if data_offset < 20 || segment.len() < data_offset {
        return None;
    }
    let flags = segment[13];
    if flags & (TCP_SYN | TCP_ACK) != TCP_SYN {
        return None;
    }
    Some(TcpSyn {
        source_port: be16(segment, 0)?,
        destination_port: be16(segment, 2)?,
        sequence: be32(segment, 4)?,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A 20-byte TCP header (plus `options` bytes of NOPs, a multiple of 4).
    pub(crate) fn tcp(sport: u16, dport: u16, flags: u8, seq: u32, options: usize) -> Vec<u8> {
        let mut t = vec![0u8; 20 + options];
        t[0..2].copy_from_slice(&sport.to_be_bytes());
        t[2..4].copy_from_slice(&dport.to_be_bytes());
        t[4..8].copy_from_slice(&seq.to_be_bytes());
        t[12] = (((20 + options) / 4) as u8) << 4;
        t[13] = flags;
        t[14..16].copy_from_slice(&64240u16.to_be_bytes());
        for b in &mut t[20..] {
            *b = 1;
        }
        t
    }

    /// An IPv4 packet with a `header_len`-byte header around `payload`.
    pub(crate) fn ipv4(
        src: [u8; 4],
        dst: [u8; 4],
        proto: u8,
        header_len: usize,
        payload: &[u8],
    ) -> Vec<u8> {
        let mut p = vec![0u8; header_len];
        p[0] = 0x40 | (header_len / 4) as u8;
        let total = (header_len + payload.len()) as u16;
        p[2..4].copy_from_slice(&total.to_be_bytes());
        p[6] = 0x40; // DF
        p[8] = 64;
        p[9] = proto;
        p[12..16].copy_from_slice(&src);
        p[16..20].copy_from_slice(&dst);
        p.extend_from_slice(payload);
        p
    }

    /// An IPv6 packet: fixed header, then `extensions` (already chained), then `payload`.
    pub(crate) fn ipv6(
        src: Ipv6Addr,
        dst: Ipv6Addr,
        next: u8,
        extensions: &[u8],
        payload: &[u8],
    ) -> Vec<u8> {
        let mut p = vec![0u8; 40];
        p[0] = 0x60;
        let len = (extensions.len() + payload.len()) as u16;
        p[4..6].copy_from_slice(&len.to_be_bytes());
        p[6] = next;
        p[7] = 64;
        p[8..24].copy_from_slice(&src.octets());
        p[24..40].copy_from_slice(&dst.octets());
        p.extend_from_slice(extensions);
        p.extend_from_slice(payload);
        p
    }

    const SUT4: [u8; 4] = [192, 0, 2, 2];
    const MX4: [u8; 4] = [192, 0, 2, 26];

    fn sut6() -> Ipv6Addr {
        "2001:db8::2".parse().unwrap()
    }
    fn mx6() -> Ipv6Addr {
        "2001:db8:0:3::2".parse().unwrap()
    }

    #[test]
    fn ipv4_syn() {
        let p = ipv4(SUT4, MX4, 6, 20, &tcp(40000, 25, TCP_SYN, 7, 20));
        assert_eq!(
            parse_syn(&p),
            Some(ParsedSyn {
                client: "192.0.2.2:40000".parse().unwrap(),
                server: "192.0.2.26:25".parse().unwrap(),
                sequence: 7,
            })
        );
        // IP options (IHL 6), and link-layer padding after the packet.
        let mut p = ipv4(SUT4, MX4, 6, 24, &tcp(40000, 25, TCP_SYN, 7, 0));
        p.extend_from_slice(&[0xff; 6]);
        assert_eq!(
            parse_syn(&p).unwrap().server,
            "192.0.2.26:25".parse().unwrap()
        );
    }

    #[test]
    fn ipv6_syn_direct_and_behind_extension_headers() {
        let expected = ParsedSyn {
            client: "[2001:db8::2]:40000".parse().unwrap(),
            server: "[2001:db8:0:3::2]:25".parse().unwrap(),
            sequence: 0xdead_beef,
        };
        let segment = tcp(40000, 25, TCP_SYN, 0xdead_beef, 20);
        assert_eq!(
            parse_syn(&ipv6(sut6(), mx6(), 6, &[], &segment)),
            Some(expected)
        );

        // Hop-by-hop (8 bytes) -> destination options (16 bytes) -> fragment (offset 0) -> TCP.
        let mut ext = vec![60, 0, 1, 4, 0, 0, 0, 0];
        ext.extend_from_slice(&[44, 1, 1, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        ext.extend_from_slice(&[6, 0, 0, 0, 0, 0, 0, 1]);
        assert_eq!(
            parse_syn(&ipv6(sut6(), mx6(), 0, &ext, &segment)),
            Some(expected)
        );

        // A non-initial fragment carries no TCP header.
        let frag = [6, 0, 0x00, 0x08, 0, 0, 0, 1];
        assert_eq!(parse_syn(&ipv6(sut6(), mx6(), 44, &frag, &segment)), None);
        // No next header / unknown extension.
        assert_eq!(parse_syn(&ipv6(sut6(), mx6(), 59, &[], &segment)), None);
        assert_eq!(
            parse_syn(&ipv6(
                sut6(),
                mx6(),
                135,
                &[6, 0, 0, 0, 0, 0, 0, 0],
                &segment
            )),
            None
        );
        // A loop of extension headers gives up.
        let many: Vec<u8> = (0..12).flat_map(|_| [60u8, 0, 1, 4, 0, 0, 0, 0]).collect();
        assert_eq!(parse_syn(&ipv6(sut6(), mx6(), 60, &many, &segment)), None);
    }

    #[test]
    fn only_syn_without_ack() {
        for flags in [TCP_SYN | TCP_ACK, TCP_ACK, 0x01, 0x04, 0x18] {
            let p = ipv4(SUT4, MX4, 6, 20, &tcp(40000, 25, flags, 1, 0));
            assert_eq!(parse_syn(&p), None, "flags {flags:#x}");
            let p = ipv6(sut6(), mx6(), 6, &[], &tcp(40000, 25, flags, 1, 0));
            assert_eq!(parse_syn(&p), None, "flags {flags:#x}");
        }
        // SYN with ECN bits (ECE, CWR) still counts.
        let p = ipv4(SUT4, MX4, 6, 20, &tcp(40000, 25, TCP_SYN | 0xc0, 1, 0));
        assert!(parse_syn(&p).is_some());
    }

    #[test]
    fn wrong_protocol_or_version() {
        let segment = tcp(40000, 25, TCP_SYN, 1, 0);
        assert_eq!(parse_syn(&ipv4(SUT4, MX4, 17, 20, &segment)), None);
        assert_eq!(parse_syn(&ipv6(sut6(), mx6(), 17, &[], &segment)), None);
        let mut p = ipv4(SUT4, MX4, 6, 20, &segment);
        p[0] = 0x55;
        assert_eq!(parse_syn(&p), None);
        // A non-initial IPv4 fragment.
        let mut p = ipv4(SUT4, MX4, 6, 20, &segment);
        p[6] = 0x00;
        p[7] = 0x10;
        assert_eq!(parse_syn(&p), None);
    }

    #[test]
    fn truncated_and_malformed_never_panic() {
        let packets = [
            ipv4(SUT4, MX4, 6, 20, &tcp(40000, 25, TCP_SYN, 1, 20)),
            ipv4(SUT4, MX4, 6, 60, &tcp(40000, 25, TCP_SYN, 1, 40)),
            ipv6(sut6(), mx6(), 6, &[], &tcp(40000, 25, TCP_SYN, 1, 20)),
            ipv6(
                sut6(),
                mx6(),
                0,
                &[6, 0, 1, 4, 0, 0, 0, 0],
                &tcp(40000, 25, TCP_SYN, 1, 0),
            ),
        ];
        for full in &packets {
            assert!(parse_syn(full).is_some());
            // Every truncation (TCP options included) is rejected.
            for len in 0..full.len() {
                assert_eq!(parse_syn(&full[..len]), None, "truncated to {len}");
            }
            // Any single corrupted byte and garbage: no panic.
            for i in 0..full.len() {
                for value in [0x00, 0x0f, 0x45, 0x60, 0xff] {
                    let mut p = full.clone();
                    p[i] = value;
                    let _ = parse_syn(&p);
                }
            }
        }
        assert_eq!(parse_syn(&[]), None);
        assert_eq!(parse_syn(&[0x4f; 3]), None);
        // IHL below 5, total length below the header, TCP data offset below 5.
        let mut p = ipv4(SUT4, MX4, 6, 20, &tcp(40000, 25, TCP_SYN, 1, 0));
        p[0] = 0x44;
        assert_eq!(parse_syn(&p), None);
        let mut p = ipv4(SUT4, MX4, 6, 20, &tcp(40000, 25, TCP_SYN, 1, 0));
        p[2..4].copy_from_slice(&10u16.to_be_bytes());
        assert_eq!(parse_syn(&p), None);
        let mut p = ipv4(SUT4, MX4, 6, 20, &tcp(40000, 25, TCP_SYN, 1, 0));
        p[20 + 12] = 0x40;
        assert_eq!(parse_syn(&p), None);
        // IPv4 total length shorter than the TCP header: truncated by the IP header's own word.
        let mut p = ipv4(SUT4, MX4, 6, 20, &tcp(40000, 25, TCP_SYN, 1, 0));
        p[2..4].copy_from_slice(&30u16.to_be_bytes());
        assert_eq!(parse_syn(&p), None);
        // IPv6 payload length shorter than the TCP header.
        let mut p = ipv6(sut6(), mx6(), 6, &[], &tcp(40000, 25, TCP_SYN, 1, 0));
        p[4..6].copy_from_slice(&8u16.to_be_bytes());
        assert_eq!(parse_syn(&p), None);
        // Extension header length running past the end.
        let p = ipv6(
            sut6(),
            mx6(),
            60,
            &[6, 200, 0, 0, 0, 0, 0, 0],
            &tcp(40000, 25, TCP_SYN, 1, 0),
        );
        assert_eq!(parse_syn(&p), None);
    }
}
