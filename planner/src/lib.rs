//! Communalia planner (work in progress).
