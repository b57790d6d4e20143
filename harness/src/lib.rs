//! mxlab: a test harness for mail transfer agents in dual-stack network namespaces.
//!
//! The pipeline: a scenario file is loaded into a [`scenario::Scenario`], planned into a
//! [`plan::Plan`], brought to life by [`lab`] (namespaces, DNS, fake MX servers, the system
//! under test), observed through one [`events::EventLog`], judged by [`verdict`] and rendered by
//! [`report`].

pub mod activation;
pub mod capture;
pub mod chaos;
pub mod cli;
pub mod clock;
pub mod dns;
pub mod events;
pub mod family;
pub mod faults;
pub mod gc;
pub mod lab;
pub mod mx;
pub mod observe;
pub mod plan;
pub mod report;
pub mod rootless;
pub mod scenario;
pub mod sut;
pub mod testing;
pub mod verdict;

#[cfg(test)]
mod test_support;
