//! Communalia drivers (work in progress).
