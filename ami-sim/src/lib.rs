//! Simulated Asterisk (work in progress).
