//! The text of a query's event: the question, e.g. `mx1.example.test` and `AAAA`, and what was
//! answered, e.g. `NOERROR 192.0.2.10, 2001:db8::10`, or done instead, e.g.
//! `SERVFAIL (fault servfail)`.

use std::fmt;

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use hickory_server::server::Request;

/// The question of a query as its event writes it: the name in lower case without the trailing
/// dot, and the type's mnemonic; both empty if the query has not exactly one question.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Asked {
    /// `mx1.example.test`.
    pub name: String,
    /// `AAAA`.
    pub record_type: String,
}

impl Asked {
    /// The question of `request`.
    pub fn of(request: &Request) -> Self {
        match request.request_info() {
            Ok(info) => Self {
                name: display_name(&Name::from(info.query.name())),
                record_type: info.query.query_type().to_string(),
            },
            // Not exactly one question: the catalog answers FORMERR.
            Err(_) => Self {
                name: String::new(),
                record_type: String::new(),
            },
        }
    }
}

/// What was done about a query: `NOERROR 192.0.2.10` followed by notes in parentheses, such as
/// `NOERROR (no records, fault nodata)` or `NOERROR (truncated, fault truncate)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    text: String,
    notes: Vec<String>,
}

impl Summary {
    /// A summary without notes.
    pub fn new(text: impl Into<String>) -> Self {
        Self {
            text: text.into(),
            notes: Vec::new(),
        }
    }

    /// Adds a note after those already there.
    pub fn note(mut self, note: impl Into<String>) -> Self {
        self.notes.push(note.into());
        self
    }

    /// Adds a note before those already there.
    pub fn note_first(mut self, note: impl Into<String>) -> Self {
        self.notes.insert(0, note.into());
        self
    }

    /// `NOERROR 192.0.2.10, 2001:db8::10`, `NOERROR (no records)`, `NXDOMAIN`, `REFUSED`.
    ///
    /// Answers of another type than asked for (a CNAME leading to the answer) are prefixed with
    /// their type: `NOERROR CNAME mx1.example.test, 192.0.2.10`.
    pub fn of_response(message: &Message, asked: Option<RecordType>) -> Self {
        let rcode = rcode_name(message.metadata.response_code);
        if message.answers.is_empty() {
            return match message.metadata.response_code {
                ResponseCode::NoError => Self::new(rcode).note("no records"),
                _ => Self::new(rcode),
            };
        }
        let answers: Vec<String> = message
            .answers
            .iter()
            .map(|record| {
                let data = display_rdata(&record.data);
                if Some(record.record_type()) == asked {
                    data
                } else {
                    format!("{} {data}", record.record_type())
                }
            })
            .collect();
        Self::new(format!("{rcode} {}", answers.join(", ")))
    }

    /// The text, notes included.
    pub fn into_text(self) -> String {
        if self.notes.is_empty() {
            self.text
        } else {
            self.to_string()
        }
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)?;
        if !self.notes.is_empty() {
            write!(f, " ({})", self.notes.join(", "))?;
        }
        Ok(())
    }
}

/// The conventional upper-case mnemonic (`NOERROR`, `NXDOMAIN`, ...).
pub fn rcode_name(code: ResponseCode) -> String {
    match code {
        ResponseCode::NoError => "NOERROR".to_string(),
        ResponseCode::FormErr => "FORMERR".to_string(),
        ResponseCode::ServFail => "SERVFAIL".to_string(),
        ResponseCode::NXDomain => "NXDOMAIN".to_string(),
        ResponseCode::NotImp => "NOTIMP".to_string(),
        ResponseCode::Refused => "REFUSED".to_string(),
        ResponseCode::NotAuth => "NOTAUTH".to_string(),
        ResponseCode::NotZone => "NOTZONE".to_string(),
        other => format!("RCODE{}", u16::from(other)),
    }
}

/// Record data as in a zone file, with names written without their trailing dot.
fn display_rdata(data: &RData) -> String {
    match data {
        RData::A(addr) => addr.to_string(),
        RData::AAAA(addr) => addr.to_string(),
        RData::MX(mx) => format!("{} {}", mx.preference, display_name(&mx.exchange)),
        RData::CNAME(target) => display_name(&target.0),
        RData::PTR(target) => display_name(&target.0),
        RData::NS(target) => display_name(&target.0),
        RData::TXT(txt) => txt
            .txt_data
            .iter()
            .map(|part| format!("{:?}", String::from_utf8_lossy(part)))
            .collect::<Vec<_>>()
            .join(" "),
        other => other.to_string(),
    }
}

/// `mx1.example.test` (no trailing dot); the root stays `.`.
fn display_name(name: &Name) -> String {
    let text = name.to_ascii();
    match text.strip_suffix('.') {
        Some(bare) if !bare.is_empty() => bare.to_string(),
        _ => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::OpCode;
    use hickory_proto::rr::rdata::{A, CNAME, MX, TXT};
    use hickory_proto::rr::Record;

    fn record(name: &str, data: RData) -> Record {
        Record::from_rdata(name.parse().unwrap(), 60, data)
    }

    fn summary(message: &Message, asked: RecordType) -> String {
        Summary::of_response(message, Some(asked)).into_text()
    }

    #[test]
    fn summaries_list_answers_without_trailing_dots() {
        let mut message = Message::response(1, OpCode::Query);
        assert_eq!(summary(&message, RecordType::A), "NOERROR (no records)");
        message.add_answer(record(
            "www.example.test.",
            RData::CNAME(CNAME("mx1.example.test.".parse().unwrap())),
        ));
        message.add_answer(record(
            "mx1.example.test.",
            RData::A(A("192.0.2.10".parse().unwrap())),
        ));
        assert_eq!(
            summary(&message, RecordType::A),
            "NOERROR CNAME mx1.example.test, 192.0.2.10"
        );

        let mut message = Message::response(1, OpCode::Query);
        message.add_answer(record(
            "example.test.",
            RData::MX(MX::new(10, "mx1.example.test.".parse().unwrap())),
        ));
        message.add_answer(record(
            "example.test.",
            RData::TXT(TXT::new(vec!["v=spf1 -all".into()])),
        ));
        assert_eq!(
            summary(&message, RecordType::MX),
            "NOERROR 10 mx1.example.test, TXT \"v=spf1 -all\""
        );

        message.answers.clear();
        message.metadata.response_code = ResponseCode::NXDomain;
        assert_eq!(summary(&message, RecordType::MX), "NXDOMAIN");
    }

    #[test]
    fn notes_follow_in_parentheses() {
        let summary = Summary::new("NOERROR")
            .note("no records")
            .note("fault nodata")
            .note_first("truncated");
        assert_eq!(
            summary.into_text(),
            "NOERROR (truncated, no records, fault nodata)"
        );
        assert_eq!(display_name(&Name::root()), ".");
    }
}
