//! mxlab: a test harness for mail transfer agents in dual-stack network namespaces.
//!
//! The pipeline: a scenario file is loaded into a [`scenario::Scenario`], planned into a
//! [`plan::Plan`], brought to life by [`lab::Lab`] (namespaces, DNS, fake MX servers, the system
//! under test), observed through one [`events::EventLog`], judged by [`verdict`] and rendered by
//! [`report`].

pub mod dns;
pub mod events;
pub mod family;
pub mod mx;
pub mod sut;
