//! mxlab: a test harness for mail transfer agents in dual-stack network namespaces.
//!
//! The pipeline: a scenario file is loaded into a [`scenario::Scenario`], planned into a
//! [`plan::Plan`], brought to life by [`lab`] (namespaces, DNS, fake MX servers, the system
//! under test), observed through one [`events::EventLog`], judged by [`verdict`] and rendered by
//! [`report`].
//!
//! `docs/architecture.md` says what each module owns and where to add a fault, an assertion,
//! a system under test or a reporter.
//!
//! # Embedding mxlab
//!
//! What an MTA project needs: a scenario (a file through [`scenario::load`], or the
//! [`scenario::ScenarioBuilder`]), a system under test ([`sut::SutKind`]: a built-in MTA or a
//! driver file, both parsed from a name or a path: `"postfix".parse()`, `"drivers/sendmail.toml".parse()`), [`lab::run`], and the [`lab::RunReport`] with its
//! [`verdict::Verdict`], rendered by [`report`]. [`testing`] turns a scenario directory into one
//! `cargo test` test per scenario × SUT.
//!
//! ```no_run
//! use std::time::Duration;
//!
//! use mxlab::family::Family;
//! use mxlab::scenario::{NetFault, Outcome, ScenarioBuilder};
//! use mxlab::sut::SutKind;
//! use mxlab::verdict::Status;
//!
//! fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     // First, before any thread starts: as root nothing happens, as an ordinary user mxlab
//!     // enters a user namespace of its own (see the README's rootless set-up).
//!     mxlab::rootless::enter()?;
//!     let scenario = ScenarioBuilder::new("example/v6-reset", "IPv6 to mx1 is reset")
//!         .mx("mx1", "example.test", 10)
//!         .net_fault("mx1", Some(Family::Ipv6), NetFault::Reset)
//!         .message("alice@sender.test", &["bob@example.test"])
//!         .outcome(Outcome::Delivered)
//!         .via(Family::Ipv4)
//!         .within(Duration::from_secs(600))
//!         .build()?;
//!     let runtime = tokio::runtime::Runtime::new()?;
//!     let sut: SutKind = "reference".parse()?;
//!     let report = runtime.block_on(mxlab::lab::run(&scenario, &sut))?;
//!     println!("{}", mxlab::report::console::render(&report, false));
//!     assert_eq!(report.verdict.status, Status::Pass);
//!     Ok(())
//! }
//! ```
//!
//! (`no_run`: it needs network namespaces. `tests/builder.rs` runs the same code against
//! Postfix.)

pub mod activation;
pub(crate) mod bugs;
pub(crate) mod capture;
pub(crate) mod chaos;
pub mod cli;
pub mod clock;
pub mod dns;
pub mod events;
pub mod excerpt;
pub mod family;
pub mod faults;
pub(crate) mod gc;
pub mod lab;
pub mod mx;
pub(crate) mod observe;
pub mod plan;
pub mod report;
pub mod rootless;
pub mod scenario;
pub mod sut;
pub mod testing;
pub mod verdict;

#[cfg(test)]
mod test_support;
