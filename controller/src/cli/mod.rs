//! Subcommands of the `communalia` binary, one module each.

pub mod bench;
pub mod check;
pub mod ledger;
pub mod plan;
pub mod probe;
