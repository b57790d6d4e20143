//! [`InstalledFault`]: what installing a fault changed, and healing it again.

use netns::{Firewall, Route, Routes, Rule, Shaper, ShaperStats};

use super::FaultError;

/// A fault in force. Healing removes exactly what install added.
///
/// Dropping it without [`heal`](InstalledFault::heal) leaves the fault in place (until the
/// topology itself is dropped); it holds handles on the namespaces it changed, which keep them
/// alive while it lives.
#[derive(Debug)]
pub struct InstalledFault {
    pub(super) description: String,
    /// The nft table and the firewall of the namespace that holds it.
    pub(super) table: Option<(Firewall, String)>,
    /// The netlink socket in the namespace whose routes changed (router or SUT).
    pub(super) routes: Option<Routes>,
    /// Added by install: deleted by heal.
    pub(super) added_routes: Vec<Route>,
    pub(super) added_rules: Vec<Rule>,
    /// Removed by install: re-added by heal.
    pub(super) removed_routes: Vec<Route>,
    /// The path shaper of a shape fault.
    pub(super) shaper: Option<Shaper>,
}

impl InstalledFault {
    /// Nothing installed yet for the fault described as `description`.
    pub(super) fn new(description: &str) -> Self {
        Self {
            description: description.to_owned(),
            table: None,
            routes: None,
            added_routes: Vec::new(),
            added_rules: Vec::new(),
            removed_routes: Vec::new(),
            shaper: None,
        }
    }

    /// The fault's description, e.g. `blackhole on mx1 ipv6`.
    pub fn description(&self) -> &str {
        &self.description
    }

    /// What the path shaper of a shape fault has done so far.
    pub fn shaper_stats(&self) -> Option<ShaperStats> {
        self.shaper.as_ref().map(Shaper::stats)
    }

    /// Removes the fault: deletes its nft table, its rules and routes, restores removed routes
    /// and stops its path shaper. Every step is attempted; the first failure is returned.
    pub async fn heal(mut self) -> Result<(), FaultError> {
        let mut first_error = None;
        let mut note = |result: Result<(), netns::Error>, action: String| {
            if let Err(source) = result {
                tracing::warn!(fault = %self.description, %action, error = %source, "healing step failed");
                first_error.get_or_insert(FaultError::System {
                    fault: self.description.clone(),
                    action,
                    source: Box::new(source),
                });
            }
        };
        if let Some(routes) = &self.routes {
            for rule in self.added_rules.iter().rev() {
                note(
                    routes.delete_rule(rule).await,
                    format!("heal: delete rule {}", rule.describe()),
                );
            }
            for route in self.added_routes.iter().rev() {
                note(
                    routes.delete_route(route).await,
                    format!("heal: delete route {}", route.describe()),
                );
            }
            for route in &self.removed_routes {
                note(
                    routes.add_route(route).await,
                    format!("heal: restore route {}", route.describe()),
                );
            }
        }
        if let Some(shaper) = self.shaper.take() {
            note(shaper.remove().await, "heal: remove the path shaper".into());
        }
        if let Some((firewall, table)) = self.table.take() {
            note(
                firewall.apply(
                    &format!("delete table inet {table}"),
                    &format!("delete table inet {table}\n"),
                ),
                format!("heal: delete nft table inet {table}"),
            );
        }
        tracing::debug!(fault = %self.description, ok = first_error.is_none(), "fault healed");
        match first_error {
            None => Ok(()),
            Some(e) => Err(e),
        }
    }
}
