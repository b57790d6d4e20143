//! Scenario files: the format users write, loading and validation.
//!
//! A scenario describes one small world (MX hosts, faults, messages to send) and what a correct
//! MTA does in it (`[expect]`). See the README for the format; [`load`] turns a file into a
//! validated [`Scenario`] or a [`ScenarioError`] that names file, line and column.

mod builder;
mod duration;
mod error;
mod load;
mod model;
mod query;
mod shape;
mod validate;

#[cfg(test)]
mod fuzz;

pub use builder::ScenarioBuilder;
pub use duration::HumanDuration;
pub use error::ScenarioError;
pub use load::{find_scenarios, load, parse};
pub use model::{
    AuthExpect, AuthResult, ClientKey, Copies, DnsAnswer, DnsFaultSpec, DsnExpect, Expect,
    Expectation, Extension, Fault, MessageSpec, Mutant, MutantSut, MxSpec, NetFault, Outcome,
    PolicySpec, PtrFault, RouteSpec, Scenario, SmtpAction, SmtpFault, SmtpStage, StartTls, Window,
    Xfail,
};
pub use query::{ExpectedQuery, QueryType};
pub use shape::{NetShape, Rate, ShapeDirection};
pub use validate::{zone_origins, MAX_MX_HOSTS, SENDER_DOMAIN};
