//! Communalia ledger (work in progress).
