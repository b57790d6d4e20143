//! Checking [`Zone`]s and turning them into hickory's in-memory zone handlers in a [`Catalog`].

use std::collections::HashMap;
use std::sync::Arc;

use hickory_proto::rr::rdata::{A, AAAA, CNAME, MX, NS, PTR, SOA, TXT};
use hickory_proto::rr::{LowerName, Name, RData, Record as HickoryRecord};
use hickory_server::store::in_memory::InMemoryZoneHandler;
use hickory_server::zone_handler::{AxfrPolicy, Catalog, ZoneHandler, ZoneType};

use super::error::DnsError;
use super::records::{Record, RecordData, Zone};

/// TTL of every served record. Short, so that a system under test does not cache across runs.
pub const RECORD_TTL: u32 = 60;
/// The SOA minimum, which bounds how long resolvers cache negative answers (RFC 2308).
pub const NEGATIVE_TTL: u32 = 30;
/// The zones' SOA serial.
const SERIAL: u32 = 1;
/// Longest TXT character-string (RFC 1035 §3.3).
const MAX_CHARACTER_STRING: usize = 255;

/// Checks `zones` and builds one authoritative in-memory zone handler per origin.
///
/// Each record goes to the most specific zone whose origin is at or above its name, whichever
/// zone lists it; a record under no origin is an error naming it.
pub fn build_catalog(zones: &[Zone]) -> Result<Catalog, DnsError> {
    let mut origins: Vec<(Name, String)> = Vec::with_capacity(zones.len());
    for zone in zones {
        let origin = parse_name(&zone.origin, false, || "zone origin".to_string())?;
        if origins.iter().any(|(known, _)| *known == origin) {
            return Err(DnsError::DuplicateZone {
                origin: zone.origin.clone(),
            });
        }
        origins.push((origin, zone.origin.clone()));
    }

    // Records grouped by the index of their zone.
    let mut placed: Vec<Vec<(&Record, HickoryRecord)>> = vec![Vec::new(); origins.len()];
    for record in zones.iter().flat_map(|zone| &zone.records) {
        let converted = convert(record)?;
        let zone = origins
            .iter()
            .enumerate()
            .filter(|(_, (origin, _))| origin.zone_of(&converted.name))
            .max_by_key(|(_, (origin, _))| origin.num_labels())
            .map(|(index, _)| index)
            .ok_or_else(|| DnsError::OutsideZones {
                record: record.to_string(),
                zones: origins
                    .iter()
                    .map(|(_, text)| text.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            })?;
        placed[zone].push((record, converted));
    }

    let mut catalog = Catalog::new();
    for ((origin, origin_text), records) in origins.into_iter().zip(placed) {
        check_cnames(&origin, &origin_text, &records)?;
        let handler = build_zone(origin.clone(), &origin_text, records)?;
        let handler: Arc<dyn ZoneHandler> = Arc::new(handler);
        catalog.upsert(LowerName::new(&origin), vec![handler]);
    }
    Ok(catalog)
}

/// Rejects CNAMEs at an apex and CNAMEs sharing their name with any other record.
fn check_cnames(
    origin: &Name,
    origin_text: &str,
    records: &[(&Record, HickoryRecord)],
) -> Result<(), DnsError> {
    let mut by_name: HashMap<&Name, Vec<&Record>> = HashMap::new();
    for (record, converted) in records {
        if matches!(record.data, RecordData::Cname(_)) && converted.name == *origin {
            return Err(DnsError::CnameAtApex {
                record: record.to_string(),
                origin: origin_text.to_string(),
            });
        }
        by_name.entry(&converted.name).or_default().push(record);
    }
    for (record, converted) in records {
        let at_name = &by_name[&converted.name];
        if at_name.len() > 1 && matches!(record.data, RecordData::Cname(_)) {
            return Err(DnsError::CnameConflict {
                record: record.to_string(),
                name: record.name.clone(),
            });
        }
    }
    Ok(())
}

/// An authoritative zone with generated SOA and NS records plus `records`.
fn build_zone(
    origin: Name,
    origin_text: &str,
    records: Vec<(&Record, HickoryRecord)>,
) -> Result<InMemoryZoneHandler, DnsError> {
    let mut handler =
        InMemoryZoneHandler::empty(origin.clone(), ZoneType::Primary, AxfrPolicy::Deny);
    let server = prefixed(&origin, "ns", origin_text)?;
    let generated = [
        soa_record(&origin, origin_text, RECORD_TTL)?,
        HickoryRecord::from_rdata(origin, RECORD_TTL, RData::NS(NS(server))),
    ];
    for record in generated {
        let description = format!("{} {}", record.name, record.record_type());
        if !handler.upsert_mut(record, SERIAL) {
            return Err(DnsError::Rejected {
                record: description,
                origin: origin_text.to_string(),
                reason: "generated record refused".to_string(),
            });
        }
    }
    for (record, converted) in records {
        if !handler.upsert_mut(converted, SERIAL) {
            return Err(DnsError::Rejected {
                record: record.to_string(),
                origin: origin_text.to_string(),
                reason: "the in-memory zone refused it".to_string(),
            });
        }
    }
    Ok(handler)
}

/// The generated SOA record of the zone at `origin`, with the given TTL.
///
/// Negative answers carry it with a TTL of [`NEGATIVE_TTL`] (RFC 2308 section 3).
pub fn soa_record(origin: &Name, origin_text: &str, ttl: u32) -> Result<HickoryRecord, DnsError> {
    let soa = SOA::new(
        prefixed(origin, "ns", origin_text)?,
        prefixed(origin, "hostmaster", origin_text)?,
        SERIAL,
        3600,
        600,
        86400,
        NEGATIVE_TTL,
    );
    Ok(HickoryRecord::from_rdata(
        origin.clone(),
        ttl,
        RData::SOA(soa),
    ))
}

/// `label.origin`, for the generated SOA and NS names.
fn prefixed(origin: &Name, label: &str, origin_text: &str) -> Result<Name, DnsError> {
    origin
        .prepend_label(label)
        .map_err(|error| DnsError::InvalidName {
            name: format!("{label}.{origin_text}"),
            context: format!("the generated SOA/NS records of zone {origin_text}"),
            reason: error.to_string(),
        })
}

/// Converts one scenario record into a hickory record, checking every name in it.
fn convert(record: &Record) -> Result<HickoryRecord, DnsError> {
    let context = || format!("record \"{record}\"");
    let name = parse_name(&record.name, true, context)?;
    let data = match &record.data {
        RecordData::A(addr) => RData::A(A(*addr)),
        RecordData::Aaaa(addr) => RData::AAAA(AAAA(*addr)),
        RecordData::Mx {
            preference,
            exchange,
        } => RData::MX(MX::new(*preference, parse_name(exchange, false, context)?)),
        RecordData::Cname(target) => RData::CNAME(CNAME(parse_name(target, false, context)?)),
        RecordData::Ptr(target) => RData::PTR(PTR(parse_name(target, false, context)?)),
        RecordData::Txt(text) => RData::TXT(TXT::new(split_character_strings(text))),
    };
    Ok(HickoryRecord::from_rdata(name, RECORD_TTL, data))
}

/// Splits `text` into character-strings of at most 255 bytes, at character boundaries.
fn split_character_strings(text: &str) -> Vec<String> {
    let mut parts = Vec::new();
    let mut rest = text;
    while rest.len() > MAX_CHARACTER_STRING {
        let mut cut = MAX_CHARACTER_STRING;
        while !rest.is_char_boundary(cut) {
            cut -= 1;
        }
        let (head, tail) = rest.split_at(cut);
        parts.push(head.to_string());
        rest = tail;
    }
    parts.push(rest.to_string());
    parts
}

/// Parses an absolute name given with or without its trailing dot; `.` is the root.
///
/// `context` says where the name appeared, for the error message.
pub fn parse_name(
    text: &str,
    allow_wildcard: bool,
    context: impl FnOnce() -> String,
) -> Result<Name, DnsError> {
    let invalid = |reason: String, context: String| DnsError::InvalidName {
        name: text.to_string(),
        context,
        reason,
    };
    if let Err(reason) = check_name(text, allow_wildcard) {
        return Err(invalid(reason, context()));
    }
    if text == "." {
        return Ok(Name::root());
    }
    let absolute = if text.ends_with('.') {
        text.to_string()
    } else {
        format!("{text}.")
    };
    Name::from_ascii(&absolute).map_err(|error| invalid(error.to_string(), context()))
}

/// Our stricter-than-DNS syntax check, so that typos in scenarios are caught early.
fn check_name(text: &str, allow_wildcard: bool) -> Result<(), String> {
    if text == "." {
        return Ok(());
    }
    let bare = text.strip_suffix('.').unwrap_or(text);
    if bare.is_empty() {
        return Err("the name is empty (write \".\" for the root)".to_string());
    }
    if bare.len() > 253 {
        return Err(format!("the name is {} characters long", bare.len()));
    }
    for (index, label) in bare.split('.').enumerate() {
        if label.is_empty() {
            return Err("it has an empty label (two dots in a row or a leading dot)".to_string());
        }
        if label == "*" {
            if allow_wildcard && index == 0 {
                continue;
            }
            return Err("'*' is only allowed as the first label of a record name".to_string());
        }
        if label.len() > 63 {
            return Err(format!(
                "label {label:?} is {} characters long",
                label.len()
            ));
        }
        if let Some(bad) = label
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
        {
            return Err(format!("label {label:?} contains {bad:?}"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::records::reverse_name;

    fn a(name: &str, addr: &str) -> Record {
        Record::new(name, RecordData::A(addr.parse().unwrap()))
    }

    #[test]
    fn names_need_not_end_in_a_dot_and_may_be_wildcards() {
        let plain = parse_name("mx1.example.test", false, String::new).unwrap();
        let dotted = parse_name("MX1.example.test.", false, String::new).unwrap();
        assert_eq!(plain, dotted);
        assert!(plain.is_fqdn());
        assert!(parse_name("*.example.test", true, String::new).is_ok());
        assert!(parse_name(".", false, String::new).unwrap().is_root());
    }

    #[test]
    fn bad_names_are_rejected_with_the_rules() {
        for bad in ["", "a..test", "bad name.test", "x.*.test", &"a".repeat(64)] {
            let error = parse_name(bad, true, || "zone origin".to_string()).unwrap_err();
            let message = error.to_string();
            assert!(message.contains("zone origin"), "{message}");
            assert!(message.contains("1 to 63 letters"), "{message}");
        }
    }

    #[test]
    fn a_record_outside_every_zone_is_named() {
        let zones = [Zone::new(
            "example.test",
            vec![
                a("mx1.example.test", "192.0.2.10"),
                a("mx1.other.test", "192.0.2.11"),
            ],
        )];
        let message = build_catalog(&zones).err().unwrap().to_string();
        assert!(message.contains("mx1.other.test A 192.0.2.11"), "{message}");
        assert!(message.contains("example.test"), "{message}");
    }

    #[test]
    fn records_go_to_whichever_zone_covers_them() {
        let zones = [
            Zone::new("example.test", vec![]),
            Zone::new(
                "in-addr.arpa",
                vec![
                    a("mx1.example.test", "192.0.2.10"),
                    Record::new(
                        reverse_name("192.0.2.10".parse().unwrap()),
                        RecordData::Ptr("mx1.example.test".into()),
                    ),
                ],
            ),
        ];
        assert!(build_catalog(&zones).is_ok());
    }

    #[test]
    fn duplicate_origins_are_rejected() {
        let zones = [
            Zone::new("example.test", vec![]),
            Zone::new("Example.Test.", vec![]),
        ];
        let error = build_catalog(&zones).err().unwrap();
        assert!(matches!(error, DnsError::DuplicateZone { .. }), "{error}");
    }

    #[test]
    fn a_cname_must_stand_alone_and_not_at_the_apex() {
        let alias = Record::new(
            "www.example.test",
            RecordData::Cname("mx1.example.test".into()),
        );
        let zones = [Zone::new(
            "example.test",
            vec![alias.clone(), a("www.example.test", "192.0.2.10")],
        )];
        let message = build_catalog(&zones).err().unwrap().to_string();
        assert!(
            message.contains("www.example.test CNAME mx1.example.test"),
            "{message}"
        );
        assert!(message.contains("only record"), "{message}");

        let apex = Record::new("example.test", RecordData::Cname("other.test".into()));
        let zones = [Zone::new("example.test", vec![apex])];
        let error = build_catalog(&zones).err().unwrap();
        assert!(matches!(error, DnsError::CnameAtApex { .. }), "{error}");
    }

    #[test]
    fn long_txt_strings_are_split_at_255_bytes() {
        let text = "é".repeat(200); // 400 bytes
        let parts = split_character_strings(&text);
        assert_eq!(parts.concat(), text);
        assert!(parts.iter().all(|part| part.len() <= 255));
        assert_eq!(parts.len(), 2);
    }

    #[test]
    fn bad_names_inside_record_data_are_named() {
        let zones = [Zone::new(
            "example.test",
            vec![Record::new(
                "example.test",
                RecordData::Mx {
                    preference: 10,
                    exchange: "mx 1.example.test".into(),
                },
            )],
        )];
        let message = build_catalog(&zones).err().unwrap().to_string();
        assert!(
            message.contains("example.test MX 10 mx 1.example.test"),
            "{message}"
        );
    }
}
