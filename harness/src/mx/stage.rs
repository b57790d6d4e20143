//! The points of an SMTP conversation at which scripted rules and policies act.

use std::fmt;

/// A point in the SMTP conversation at which a [`StageRule`](super::StageRule) or a
/// [`Policy`](super::Policy) can act.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SmtpStage {
    /// The greeting, right after the connection is accepted.
    Greeting,
    /// The reply to EHLO.
    Ehlo,
    /// The reply to HELO.
    Helo,
    /// The reply to STARTTLS (only when STARTTLS is offered).
    StartTls,
    /// The reply to MAIL FROM.
    Mail,
    /// The reply to RCPT TO.
    Rcpt,
    /// The reply to DATA (normally `354`).
    Data,
    /// The message content after `354`: the rule acts once this many bytes of content (as
    /// sent, before dot-unstuffing) have arrived, in the middle of the DATA phase. Only
    /// [`Reset`](super::StageAction::Reset), [`Disconnect`](super::StageAction::Disconnect) and
    /// [`Stall`](super::StageAction::Stall) act here;
    /// nothing is stored.
    Content {
        /// Content bytes let through before the rule acts.
        after_bytes: usize,
    },
    /// The reply after the end-of-data line (normally `250 ... queued as ...`).
    EndOfData,
    /// The reply to QUIT.
    Quit,
}

impl fmt::Display for SmtpStage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SmtpStage::Greeting => "greeting",
            SmtpStage::Ehlo => "EHLO",
            SmtpStage::Helo => "HELO",
            SmtpStage::StartTls => "STARTTLS",
            SmtpStage::Mail => "MAIL",
            SmtpStage::Rcpt => "RCPT",
            SmtpStage::Data => "DATA",
            SmtpStage::Content { after_bytes } => {
                return write!(f, "DATA content after {after_bytes} bytes")
            }
            SmtpStage::EndOfData => "end of data",
            SmtpStage::Quit => "QUIT",
        })
    }
}
