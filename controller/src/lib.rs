//! The `communalia` controller: the only crate that wires IO (files, sockets, the clock, signals)
//! to the pure libraries. `main.rs` is a thin shell over `cli`.

pub mod broker;
pub mod cli;
pub mod config_files;
pub mod control;
pub mod demo;
pub mod forecast;
pub mod http;
pub mod ledger_http;
pub mod records;
pub mod simulate;
pub mod state;
