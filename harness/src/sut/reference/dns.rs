//! A small stub resolver over hickory-proto messages: MX, A and AAAA lookups against the
//! name servers of the lab's `resolv.conf`, the way glibc's stub resolver asks them.
//!
//! Why not hickory-resolver: its sockets would have to be made inside the SUT namespace
//! through a custom runtime provider, and its retry, caching and server-selection rules differ
//! from what an MTA on glibc does. Scenarios such as a 3 s late AAAA answer against
//! `options timeout:2 attempts:1` depend on those rules, so this client follows glibc:
//! each server in turn, `attempts` rounds, a fresh UDP socket per try (a late answer to an
//! earlier try is never taken), TCP when the answer is truncated, the next server on
//! SERVFAIL/REFUSED, CNAME chains followed (at most 8 links).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::netio::{seconds, NetIo};
use crate::family::Family;

/// The name servers and options of a `resolv.conf`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvConf {
    /// At most three servers, port 53, in file order.
    pub servers: Vec<SocketAddr>,
    /// How long to wait for one answer (`options timeout:N`, default 5 s as in glibc).
    pub timeout: Duration,
    /// Rounds over all servers (`options attempts:N`, default 2 as in glibc).
    pub attempts: u32,
}

impl ResolvConf {
    /// This configuration with its timeout (world time) turned into wall time at `clock`.
    pub fn on_clock(self, clock: crate::clock::ClockRate) -> Self {
        Self {
            timeout: clock.to_wall(self.timeout),
            ..self
        }
    }

    /// Parses `nameserver` and `options timeout:N attempts:N` lines; ignores the rest.
    pub fn parse(text: &str) -> ResolvConf {
        let mut conf = ResolvConf {
            servers: Vec::new(),
            timeout: Duration::from_secs(5),
            attempts: 2,
        };
        for line in text.lines() {
            let mut words = line.split_whitespace();
            match words.next() {
                Some("nameserver") => {
                    let address = words.next().and_then(|a| a.parse::<IpAddr>().ok());
                    if let (Some(address), true) = (address, conf.servers.len() < 3) {
                        conf.servers.push(SocketAddr::new(address, 53));
                    }
                }
                Some("options") => {
                    for option in words {
                        if let Some(n) = option.strip_prefix("timeout:") {
                            if let Ok(n) = n.parse::<u64>() {
                                conf.timeout = Duration::from_secs(n.clamp(1, 30));
                            }
                        } else if let Some(n) = option.strip_prefix("attempts:") {
                            if let Ok(n) = n.parse::<u32>() {
                                conf.attempts = n.clamp(1, 5);
                            }
                        }
                    }
                }
                _ => {}
            }
        }
        conf
    }
}

/// The result of one lookup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup<T> {
    /// Records of the type asked for (after following CNAMEs).
    Found(Vec<T>),
    /// The name exists but has no records of that type.
    NoData,
    /// The name does not exist.
    NxDomain,
    /// No usable answer: timeouts, SERVFAIL, REFUSED, malformed answers. Worth a retry later.
    Failed(String),
}

/// One MX record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MxRecord {
    /// Lower is preferred.
    pub preference: u16,
    /// The exchange, without the trailing dot, lower case; empty for a null MX (`.`).
    pub exchange: String,
}

/// What a response says about `name`/`record_type`, CNAMEs followed.
#[derive(Debug, Clone, PartialEq)]
pub enum Extracted {
    /// The records, from the end of the CNAME chain.
    Records(Vec<RData>),
    /// The chain ends at this name, which the response has no answer for: ask again for it.
    Alias(Name),
    /// No records of the type.
    NoData,
    /// The name (or the end of its chain) does not exist.
    NxDomain,
    /// A response code that says nothing about the name (SERVFAIL, REFUSED, ...).
    ServerError(ResponseCode),
}

/// Longest CNAME chain followed.
const MAX_CNAMES: usize = 8;
/// Largest DNS message over UDP accepted (no EDNS is sent, but be lenient).
const MAX_UDP: usize = 4096;

/// Builds a standard recursive query.
pub fn query_bytes(id: u16, name: &Name, record_type: RecordType) -> Vec<u8> {
    let mut message = Message::query();
    message.metadata.id = id;
    message.metadata.recursion_desired = true;
    message.add_query(Query::query(name.clone(), record_type));
    message
        .to_vec()
        .expect("a query with one question always encodes")
}

/// Parses `bytes` as the response to query `id` for `name`/`record_type`; `None` for anything
/// else (wrong id, not a response, other question, undecodable), which a client ignores.
pub fn parse_response(
    bytes: &[u8],
    id: u16,
    name: &Name,
    record_type: RecordType,
) -> Option<Message> {
    let message = Message::from_vec(bytes).ok()?;
    let matches = message.metadata.id == id
        && message.metadata.message_type == MessageType::Response
        && message.queries.len() == 1
        && message.queries[0].name() == name
        && message.queries[0].query_type() == record_type;
    matches.then_some(message)
}

/// Reads the records of `record_type` for `name` off a response, following CNAMEs.
pub fn extract(message: &Message, name: &Name, record_type: RecordType) -> Extracted {
    match message.metadata.response_code {
        ResponseCode::NoError | ResponseCode::NXDomain => {}
        other => return Extracted::ServerError(other),
    }
    let mut current = name.clone();
    for _ in 0..=MAX_CNAMES {
        let records: Vec<RData> = message
            .answers
            .iter()
            .filter(|r| r.name == current && r.record_type() == record_type)
            .map(|r| r.data.clone())
            .collect();
        if !records.is_empty() {
            return Extracted::Records(records);
        }
        let alias = message.answers.iter().find_map(|r| match &r.data {
            RData::CNAME(target) if r.name == current && record_type != RecordType::CNAME => {
                Some(target.0.clone())
            }
            _ => None,
        });
        match alias {
            Some(target) => current = target,
            None => break,
        }
    }
    if message.metadata.response_code == ResponseCode::NXDomain {
        Extracted::NxDomain
    } else if &current != name {
        Extracted::Alias(current)
    } else {
        Extracted::NoData
    }
}

/// `mail.example.test.` → `mail.example.test`, lower case.
pub fn plain(name: &Name) -> String {
    name.to_ascii().trim_end_matches('.').to_ascii_lowercase()
}

/// A fully qualified name from `host` (with or without the trailing dot).
pub fn fqdn(host: &str) -> Result<Name, String> {
    let mut name = Name::from_ascii(host).map_err(|e| format!("bad domain name {host:?}: {e}"))?;
    name.set_fqdn(true);
    Ok(name)
}

/// The stub resolver.
#[derive(Debug, Clone)]
pub struct Resolver {
    conf: ResolvConf,
    net: NetIo,
}

impl Resolver {
    /// A resolver asking `conf`'s servers from sockets made by `net`.
    pub fn new(conf: ResolvConf, net: NetIo) -> Resolver {
        Resolver { conf, net }
    }

    /// The MX records of `domain`, unsorted.
    pub async fn mx(&self, domain: &str) -> Lookup<MxRecord> {
        match self.lookup(domain, RecordType::MX).await {
            Lookup::Found(records) => Lookup::Found(
                records
                    .into_iter()
                    .filter_map(|data| match data {
                        RData::MX(mx) => Some(MxRecord {
                            preference: mx.preference,
                            exchange: plain(&mx.exchange),
                        }),
                        _ => None,
                    })
                    .collect(),
            ),
            Lookup::NoData => Lookup::NoData,
            Lookup::NxDomain => Lookup::NxDomain,
            Lookup::Failed(why) => Lookup::Failed(why),
        }
    }

    /// The addresses of `host` of `family` (AAAA or A), in the order of the answer.
    pub async fn addresses(&self, host: &str, family: Family) -> Lookup<IpAddr> {
        let record_type = match family {
            Family::Ipv4 => RecordType::A,
            Family::Ipv6 => RecordType::AAAA,
        };
        match self.lookup(host, record_type).await {
            Lookup::Found(records) => Lookup::Found(
                records
                    .into_iter()
                    .filter_map(|data| match data {
                        RData::A(a) => Some(IpAddr::V4(a.0)),
                        RData::AAAA(aaaa) => Some(IpAddr::V6(aaaa.0)),
                        _ => None,
                    })
                    .collect(),
            ),
            Lookup::NoData => Lookup::NoData,
            Lookup::NxDomain => Lookup::NxDomain,
            Lookup::Failed(why) => Lookup::Failed(why),
        }
    }

    /// Looks up `host`/`record_type`, asking again for the end of a CNAME chain the server
    /// did not resolve.
    pub async fn lookup(&self, host: &str, record_type: RecordType) -> Lookup<RData> {
        let mut name = match fqdn(host) {
            Ok(name) => name,
            Err(why) => return Lookup::Failed(why),
        };
        for _ in 0..=MAX_CNAMES {
            let message = match self.exchange(&name, record_type).await {
                Ok(message) => message,
                Err(why) => return Lookup::Failed(why),
            };
            match extract(&message, &name, record_type) {
                Extracted::Records(records) => return Lookup::Found(records),
                Extracted::Alias(target) => name = target,
                Extracted::NoData => return Lookup::NoData,
                Extracted::NxDomain => return Lookup::NxDomain,
                Extracted::ServerError(code) => {
                    return Lookup::Failed(format!("{} {record_type}: {code}", plain(&name)))
                }
            }
        }
        Lookup::Failed(format!(
            "{host} {record_type}: CNAME chain longer than {MAX_CNAMES}"
        ))
    }

    /// Asks the servers in turn, `attempts` rounds, until one gives an answer that is not a
    /// server error. A server error is returned only when every try got one or failed.
    async fn exchange(&self, name: &Name, record_type: RecordType) -> Result<Message, String> {
        if self.conf.servers.is_empty() {
            return Err("no name server in resolv.conf".into());
        }
        let mut last_error = String::new();
        let mut server_error = None;
        for _ in 0..self.conf.attempts {
            for &server in &self.conf.servers {
                let id = super::random_u64() as u16;
                let result = match self.udp(server, id, name, record_type).await {
                    Ok(message) if message.metadata.truncation => {
                        self.tcp(server, id, name, record_type).await
                    }
                    other => other,
                };
                match result {
                    Ok(message) => match message.metadata.response_code {
                        ResponseCode::NoError | ResponseCode::NXDomain => return Ok(message),
                        code => {
                            last_error = format!("{server} answered {code}");
                            server_error = Some(message);
                        }
                    },
                    Err(why) => last_error = format!("{server}: {why}"),
                }
            }
        }
        match server_error {
            Some(message) => Ok(message),
            None => Err(format!("{} {record_type}: {last_error}", plain(name))),
        }
    }

    /// One try over UDP from a fresh socket connected to `server`.
    async fn udp(
        &self,
        server: SocketAddr,
        id: u16,
        name: &Name,
        record_type: RecordType,
    ) -> Result<Message, String> {
        let socket = self
            .net
            .udp_socket(Family::of(server.ip()))
            .map_err(|e| format!("cannot make a UDP socket: {e}"))?;
        socket
            .connect(server)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        socket
            .send(&query_bytes(id, name, record_type))
            .await
            .map_err(|e| format!("send: {e}"))?;
        let receive = async {
            let mut buffer = vec![0u8; MAX_UDP];
            loop {
                let n = socket.recv(&mut buffer).await?;
                if let Some(message) = parse_response(&buffer[..n], id, name, record_type) {
                    return Ok::<_, std::io::Error>(message);
                }
            }
        };
        match tokio::time::timeout(self.conf.timeout, receive).await {
            Ok(Ok(message)) => Ok(message),
            Ok(Err(e)) => Err(format!("receive: {e}")),
            Err(_) => Err(format!("no answer within {}", seconds(self.conf.timeout))),
        }
    }

    /// One try over TCP (after a truncated UDP answer).
    async fn tcp(
        &self,
        server: SocketAddr,
        id: u16,
        name: &Name,
        record_type: RecordType,
    ) -> Result<Message, String> {
        let exchange = async {
            let mut stream = self
                .net
                .connect(server, None, self.conf.timeout)
                .await
                .map_err(|e| format!("TCP connect: {e}"))?;
            let query = query_bytes(id, name, record_type);
            let mut framed = (query.len() as u16).to_be_bytes().to_vec();
            framed.extend(query);
            stream
                .write_all(&framed)
                .await
                .map_err(|e| format!("TCP send: {e}"))?;
            loop {
                let len = stream
                    .read_u16()
                    .await
                    .map_err(|e| format!("TCP receive: {e}"))?;
                let mut buffer = vec![0u8; usize::from(len)];
                stream
                    .read_exact(&mut buffer)
                    .await
                    .map_err(|e| format!("TCP receive: {e}"))?;
                if let Some(message) = parse_response(&buffer, id, name, record_type) {
                    return Ok(message);
                }
            }
        };
        tokio::time::timeout(self.conf.timeout, exchange)
            .await
            .unwrap_or_else(|_| {
                Err(format!(
                    "no TCP answer within {}",
                    seconds(self.conf.timeout)
                ))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::OpCode;
    use hickory_proto::rr::rdata::{A, AAAA, CNAME, MX};
    use hickory_proto::rr::Record;

    fn name(text: &str) -> Name {
        fqdn(text).unwrap()
    }

    fn response(id: u16, qname: &str, record_type: RecordType, answers: Vec<Record>) -> Message {
        let mut message = Message::response(id, OpCode::Query);
        message.add_query(Query::query(name(qname), record_type));
        for answer in answers {
            message.add_answer(answer);
        }
        message
    }

    fn record(owner: &str, data: RData) -> Record {
        Record::from_rdata(name(owner), 300, data)
    }

    #[test]
    fn resolv_conf_servers_and_options() {
        let conf = ResolvConf::parse(
            "# lab\nnameserver 192.0.2.10\nnameserver 2001:db8:0:1::2\nnameserver bogus\n\
             options attempts:1 timeout:2\nsearch example.test\n",
        );
        assert_eq!(
            conf.servers,
            [
                "192.0.2.10:53".parse::<SocketAddr>().unwrap(),
                "[2001:db8:0:1::2]:53".parse().unwrap()
            ]
        );
        assert_eq!(conf.timeout, Duration::from_secs(2));
        assert_eq!(conf.attempts, 1);
        let defaults = ResolvConf::parse("");
        assert_eq!((defaults.timeout.as_secs(), defaults.attempts), (5, 2));
    }

    #[test]
    fn queries_round_trip_and_only_matching_responses_count() {
        let bytes = query_bytes(4711, &name("example.test"), RecordType::MX);
        let query = Message::from_vec(&bytes).unwrap();
        assert_eq!(query.metadata.id, 4711);
        assert!(query.metadata.recursion_desired);
        assert_eq!(query.queries[0].query_type(), RecordType::MX);

        let answer = response(4711, "example.test", RecordType::MX, vec![]);
        let bytes = answer.to_vec().unwrap();
        let q = name("Example.TEST");
        assert!(parse_response(&bytes, 4711, &q, RecordType::MX).is_some());
        assert!(parse_response(&bytes, 4712, &q, RecordType::MX).is_none());
        assert!(parse_response(&bytes, 4711, &q, RecordType::A).is_none());
        assert!(parse_response(&bytes, 4711, &name("other.test"), RecordType::MX).is_none());
        assert!(parse_response(b"\x12", 4711, &q, RecordType::MX).is_none());
        // A query is not a response.
        let query = query_bytes(4711, &q, RecordType::MX);
        assert!(parse_response(&query, 4711, &q, RecordType::MX).is_none());
    }

    #[test]
    fn records_nodata_nxdomain_and_server_errors() {
        let qname = name("mx1.example.test");
        let found = response(
            1,
            "mx1.example.test",
            RecordType::AAAA,
            vec![
                record(
                    "mx1.example.test",
                    RData::AAAA(AAAA("2001:db8:0:3::2".parse().unwrap())),
                ),
                record(
                    "mx1.example.test",
                    RData::AAAA(AAAA("fd00:db8::25".parse().unwrap())),
                ),
            ],
        );
        match extract(&found, &qname, RecordType::AAAA) {
            Extracted::Records(records) => assert_eq!(records.len(), 2),
            other => panic!("{other:?}"),
        }
        let empty = response(1, "mx1.example.test", RecordType::AAAA, vec![]);
        assert_eq!(extract(&empty, &qname, RecordType::AAAA), Extracted::NoData);
        let mut missing = empty.clone();
        missing.metadata.response_code = ResponseCode::NXDomain;
        assert_eq!(
            extract(&missing, &qname, RecordType::AAAA),
            Extracted::NxDomain
        );
        let mut failed = empty;
        failed.metadata.response_code = ResponseCode::ServFail;
        assert_eq!(
            extract(&failed, &qname, RecordType::AAAA),
            Extracted::ServerError(ResponseCode::ServFail)
        );
    }

    #[test]
    fn cname_chains_are_followed_in_the_answer_or_asked_again() {
        let qname = name("mail-mx1.example.test");
        let chained = response(
            1,
            "mail-mx1.example.test",
            RecordType::A,
            vec![
                record(
                    "mail-mx1.example.test",
                    RData::CNAME(CNAME(name("mx1.example.test"))),
                ),
                record(
                    "mx1.example.test",
                    RData::A(A("192.0.2.26".parse().unwrap())),
                ),
            ],
        );
        assert_eq!(
            extract(&chained, &qname, RecordType::A),
            Extracted::Records(vec![RData::A(A("192.0.2.26".parse().unwrap()))])
        );
        let alias_only = response(
            1,
            "mail-mx1.example.test",
            RecordType::A,
            vec![record(
                "mail-mx1.example.test",
                RData::CNAME(CNAME(name("mx1.example.test"))),
            )],
        );
        assert_eq!(
            extract(&alias_only, &qname, RecordType::A),
            Extracted::Alias(name("mx1.example.test"))
        );
        // A loop ends after MAX_CNAMES links.
        let looped = response(
            1,
            "a.test",
            RecordType::A,
            vec![
                record("a.test", RData::CNAME(CNAME(name("b.test")))),
                record("b.test", RData::CNAME(CNAME(name("a.test")))),
            ],
        );
        assert!(matches!(
            extract(&looped, &name("a.test"), RecordType::A),
            Extracted::Alias(_) | Extracted::NoData
        ));
    }

    #[test]
    fn mx_records_keep_preference_and_exchange() {
        let message = response(
            1,
            "example.test",
            RecordType::MX,
            vec![
                record(
                    "example.test",
                    RData::MX(MX::new(20, name("MX2.example.test"))),
                ),
                record(
                    "example.test",
                    RData::MX(MX::new(10, name("mx1.example.test"))),
                ),
            ],
        );
        let Extracted::Records(records) = extract(&message, &name("example.test"), RecordType::MX)
        else {
            panic!("no records");
        };
        let exchanges: Vec<(u16, String)> = records
            .iter()
            .map(|r| match r {
                RData::MX(mx) => (mx.preference, plain(&mx.exchange)),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            exchanges,
            [
                (20, "mx2.example.test".into()),
                (10, "mx1.example.test".into())
            ]
        );
        assert_eq!(plain(&Name::root()), "");
    }
}
