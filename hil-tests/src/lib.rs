//! Hardware-in-the-loop scenario harness (scenarios arrive with the controller).
