//! What a fleet test over loopback saw, per server, and the checks every adapter's fleet
//! must pass against the same simulated fronts (one floods, one restarts, one is
//! unreachable): so each adapter's test states the rules once, here.

use ami_proto::fleet::{FleetItem, ServerStatus};
use ami_proto::StreamItem;
use std::collections::HashMap;

/// Statuses, events and gaps seen per server name, and where policy routing sent work.
#[derive(Debug, Default, Clone)]
pub struct FleetLog {
    /// Every status label each server went through, in order.
    pub statuses: HashMap<String, Vec<&'static str>>,
    /// Events delivered per server.
    pub events: HashMap<String, u64>,
    /// Events lost per server, summed from its gap notices.
    pub gaps: HashMap<String, u64>,
    /// The server each policy-routed action went to.
    pub by_policy: Vec<String>,
}

impl FleetLog {
    /// Records a status change.
    pub fn status(&mut self, server: &str, status: &ServerStatus) {
        self.statuses
            .entry(server.to_string())
            .or_default()
            .push(status.label());
    }

    /// Records one item of the merged stream.
    pub fn item(&mut self, item: &FleetItem) {
        match &item.item {
            StreamItem::Event(_) => *self.events.entry(item.server.to_string()).or_default() += 1,
            StreamItem::Gap { dropped } => {
                *self.gaps.entry(item.server.to_string()).or_default() += dropped
            }
            _ => {}
        }
    }

    /// The rules: the flooder delivered more than `min_flood` events; only the flooder lost
    /// any; the restarted server went down then came back ready; the unreachable one was
    /// never ready and policy routing never picked it. `Err` says which rule broke.
    pub fn check(
        &self,
        flooder: &str,
        min_flood: u64,
        restarted: &str,
        unreachable: &str,
    ) -> Result<(), String> {
        let flood = self.events.get(flooder).copied().unwrap_or(0);
        if flood <= min_flood {
            return Err(format!("the flood delivered only {flood} events: {self:?}"));
        }
        if let Some(other) = self.gaps.keys().find(|k| *k != flooder) {
            return Err(format!(
                "{other} lost events; only the flooder may: {self:?}"
            ));
        }
        let none = Vec::new();
        let seen = self.statuses.get(restarted).unwrap_or(&none);
        let down = seen.iter().position(|s| *s == "backing_off");
        let back = seen.iter().rposition(|s| *s == "ready");
        if !matches!((down, back), (Some(d), Some(b)) if d < b) {
            return Err(format!(
                "{restarted} did not go down and come back: {seen:?}"
            ));
        }
        let seen = self.statuses.get(unreachable).unwrap_or(&none);
        if seen.contains(&"ready") {
            return Err(format!("{unreachable} was ready: {seen:?}"));
        }
        if self.by_policy.iter().any(|s| s == unreachable) {
            return Err(format!(
                "policy routing picked {unreachable}, never ready: {:?}",
                self.by_policy
            ));
        }
        Ok(())
    }
}
