//! The scenario's authoritative DNS server.
//!
//! A scenario describes [`Zone`]s of [`Record`]s; [`DnsServer::new`] checks them and builds
//! hickory in-memory zones (with generated SOA and NS records), and [`DnsServer::serve`] answers
//! on sockets the lab bound inside a network namespace. Answers are authoritative (AA set):
//! NXDOMAIN for unknown names inside a zone, NOERROR without records for existing names
//! without the asked type, REFUSED for names outside every zone, and CNAMEs chased within the
//! zones as hickory does.
//!
//! The catalog's answer to each distinct query message is kept, so a repeated query is
//! answered without looking it up again; over UDP it is sent as first encoded, with the new ID.
//!
//! Every query is recorded as one [`EventKind::DnsQuery`](crate::events::EventKind) with the
//! client's address, the transport, the question and a summary of the answer such as
//! `NOERROR 192.0.2.10, 2001:db8::10`.
//!
//! [`DnsServer::with_faults`] adds per-query [`DnsFault`]s: for a name (and optionally a record
//! type), during a window on the scenario clock, for the first N queries, answer SERVFAIL,
//! REFUSED, NXDOMAIN or NODATA instead, answer late, truncate over UDP, or not answer at all.
//! The event then names the fault: `SERVFAIL (fault servfail)`.

mod cache;
mod error;
mod faults;
mod handler;
mod records;
mod respond;
mod server;
mod summary;
mod udp;
mod zones;

#[cfg(test)]
mod tests;

pub use error::DnsError;
pub use faults::{DnsFault, DnsFaultAction};
pub use records::{reverse_name, Record, RecordData, Zone};
pub use server::{DnsServer, RunningDns};
pub use zones::{NEGATIVE_TTL, RECORD_TTL};
