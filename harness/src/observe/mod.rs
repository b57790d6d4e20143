//! The one reading of the event log ([`crate::events`]): typed SMTP replies, each message's
//! fate, the connection attempts per address and family, and the DSNs the sender got back.
//!
//! The lab's stop condition, the verdict, the reporters and the chaos oracle all read runs
//! through this module; what counts as delivered, bounced or deferred is decided in [`fate`]
//! only. A new assertion reads what it needs from here and adds its check to the verdict.

mod attempts;
mod dsn;
mod fate;
mod reply;

pub use attempts::{attempts, fallback, Attempt, Fallback};
pub use dsn::{received as dsn_reports, reports as read_dsn};
pub use fate::{
    fate, first_delivery, landing, repeated_digests, Acceptance, MessageFate, COLLECTOR,
};
pub use reply::SmtpReply;
