//! DNS record types as scenarios name them: a `dns` fault's `type` and the entries of
//! `expect.queried`. Parsed once, here; the DNS server and the verdict get typed values.

use std::fmt;
use std::str::FromStr;

use hickory_proto::rr::RecordType;
use serde::Deserialize;

/// A record type a scenario may name: `A`, `AAAA`, `MX`, `PTR`, `TXT`, `CNAME`, `SOA`, `NS` or
/// `ANY`, in any case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(try_from = "String")]
pub struct QueryType(RecordType);

impl QueryType {
    /// Every type a scenario may name, as it is written.
    pub const ALLOWED: &'static str = "A, AAAA, MX, PTR, TXT, CNAME, SOA, NS, ANY";

    /// The type on the wire.
    pub fn record_type(self) -> RecordType {
        self.0
    }
}

impl FromStr for QueryType {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let record_type = match text.to_ascii_uppercase().as_str() {
            "A" => RecordType::A,
            "AAAA" => RecordType::AAAA,
            "MX" => RecordType::MX,
            "PTR" => RecordType::PTR,
            "TXT" => RecordType::TXT,
            "CNAME" => RecordType::CNAME,
            "SOA" => RecordType::SOA,
            "NS" => RecordType::NS,
            "ANY" => RecordType::ANY,
            _ => {
                return Err(format!(
                    "unknown record type {text:?}; allowed: {}",
                    Self::ALLOWED
                ))
            }
        };
        Ok(QueryType(record_type))
    }
}

impl TryFrom<String> for QueryType {
    type Error = String;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        text.parse()
    }
}

/// The mnemonic, e.g. `AAAA`.
impl fmt::Display for QueryType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// One entry of `expect.queried`, written `"NAME TYPE"`, e.g. `"mx1.example.test AAAA"`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct ExpectedQuery {
    /// The name in lower case, without a trailing dot.
    pub name: String,
    /// The record type.
    pub query_type: QueryType,
}

impl ExpectedQuery {
    /// Whether a query for `name` of type `record_type` (as the DNS server logs them) is this
    /// one: names compare case-insensitively, with or without the trailing dot.
    pub fn matches(&self, name: &str, record_type: &str) -> bool {
        name.trim_end_matches('.').eq_ignore_ascii_case(&self.name)
            && record_type.eq_ignore_ascii_case(&self.query_type.to_string())
    }
}

impl TryFrom<String> for ExpectedQuery {
    type Error = String;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        let malformed = || {
            format!(
                "expect.queried entries are \"NAME TYPE\" with TYPE one of {}; got {text:?}",
                QueryType::ALLOWED
            )
        };
        let (name, kind) = text.split_once(' ').ok_or_else(malformed)?;
        let name = name.trim_end_matches('.');
        if name.is_empty() {
            return Err(malformed());
        }
        let query_type = kind.trim().parse().map_err(|_| malformed())?;
        Ok(ExpectedQuery {
            name: name.to_ascii_lowercase(),
            query_type,
        })
    }
}

/// `mx1.example.test AAAA`.
impl fmt::Display for ExpectedQuery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.name, self.query_type)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_parse_in_any_case_and_print_as_mnemonics() {
        for text in QueryType::ALLOWED.split(", ") {
            let parsed: QueryType = text.to_ascii_lowercase().parse().unwrap();
            assert_eq!(parsed.to_string(), text);
        }
        let error = "AAA".parse::<QueryType>().unwrap_err();
        assert!(
            error.contains("unknown record type \"AAA\"; allowed: A, AAAA"),
            "{error}"
        );
    }

    #[test]
    fn expected_queries_normalise_the_name_and_match_logged_queries() {
        let query = ExpectedQuery::try_from("Example.Test. mx".to_string()).unwrap();
        assert_eq!(query.to_string(), "example.test MX");
        assert!(query.matches("example.test", "MX"));
        assert!(query.matches("EXAMPLE.test.", "MX"));
        assert!(!query.matches("example.test", "A"));
        assert!(!query.matches("mx.example.test", "MX"));
        for bad in ["example.test", " MX", "example.test AAA", ". A"] {
            let error = ExpectedQuery::try_from(bad.to_string()).unwrap_err();
            assert!(error.contains("\"NAME TYPE\""), "{bad}: {error}");
        }
    }
}
