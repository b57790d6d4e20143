//! Errors from building or starting the DNS server.

use std::io;

/// What a valid name looks like; quoted by [`DnsError::InvalidName`].
pub(crate) const NAME_RULES: &str = "a name is dot-separated labels of 1 to 63 letters, digits, \
     '-' or '_' (a record name may start with a '*' label), at most 253 characters, \
     with an optional trailing dot";

/// Why a set of zones was rejected or the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    /// A zone origin, record name or name inside record data is not a valid DNS name.
    #[error("invalid DNS name {name:?} in {context}: {reason}; {rules}", rules = NAME_RULES)]
    InvalidName {
        /// The name as given.
        name: String,
        /// Where it appeared, e.g. `record "mx1.example.test A 192.0.2.10"`.
        context: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Two zones have the same origin.
    #[error("zone {origin:?} is defined more than once; each origin may appear in one zone only")]
    DuplicateZone {
        /// The repeated origin.
        origin: String,
    },
    /// A record's name is not at or below any zone's origin.
    #[error(
        "record \"{record}\" is outside every zone; its name must equal a zone origin or end \
         in \".<origin>\" for one of: {zones}"
    )]
    OutsideZones {
        /// The record, zone-file style.
        record: String,
        /// The configured origins, comma-separated.
        zones: String,
    },
    /// A CNAME shares its name with other records, or there are two CNAMEs at one name.
    #[error(
        "record \"{record}\" conflicts with other records at {name}: a CNAME must be the only \
         record at its name (RFC 1034 section 3.6.2); point the CNAME elsewhere or drop the others"
    )]
    CnameConflict {
        /// The offending record, zone-file style.
        record: String,
        /// The shared owner name.
        name: String,
    },
    /// A CNAME at a zone apex, where the generated SOA and NS records live.
    #[error(
        "record \"{record}\" puts a CNAME at the apex of zone {origin}, which holds the zone's \
         SOA and NS records; only A, AAAA, MX, PTR and TXT records are allowed at an apex"
    )]
    CnameAtApex {
        /// The offending record, zone-file style.
        record: String,
        /// The zone's origin.
        origin: String,
    },
    /// The DNS library refused a record that passed our own checks.
    #[error("record \"{record}\" could not be added to zone {origin}: {reason}")]
    Rejected {
        /// The record, zone-file style.
        record: String,
        /// The zone's origin.
        origin: String,
        /// The library's explanation.
        reason: String,
    },
    /// A fault's name is not at or below any zone's origin, so no query for it reaches the
    /// zones and the fault could never apply.
    #[error(
        "DNS fault \"{fault}\" is for {name}, which is outside every zone; its name must equal \
         a zone origin or end in \".<origin>\" for one of: {zones}"
    )]
    FaultOutsideZones {
        /// The fault, e.g. `servfail for mx1.other.test AAAA`.
        fault: String,
        /// The fault's name as given.
        name: String,
        /// The configured origins, comma-separated.
        zones: String,
    },
    /// A fault that could never apply: an empty window or `first` of zero.
    #[error("DNS fault \"{fault}\" can never apply: {reason}")]
    UselessFault {
        /// The fault, e.g. `servfail for mx1.example.test`.
        fault: String,
        /// Why it can never apply.
        reason: String,
    },
    /// [`DnsServer::serve`](super::DnsServer::serve) ran outside a tokio runtime.
    #[error("DnsServer::serve must be called from within a tokio runtime")]
    NoRuntime,
    /// [`DnsServer::serve`](super::DnsServer::serve) got neither UDP sockets nor TCP listeners.
    #[error("DnsServer::serve needs at least one UDP socket or TCP listener")]
    NoSockets,
    /// A socket handed to [`DnsServer::serve`](super::DnsServer::serve) could not be used.
    #[error("cannot serve DNS on {what}: {source}")]
    Socket {
        /// The socket, e.g. `UDP socket 127.0.0.1:5353`.
        what: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
}
