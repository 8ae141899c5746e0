//! Placeholder until the HTTP server lands: what the cycle publishes.

use crate::state::{AssemblyView, PlanView, StateView};

pub struct Published {
    pub state: StateView,
    pub plan: PlanView,
    pub assembly: AssemblyView,
    pub metrics: String,
}
