//! What the event loop (`ring.rs`) serves besides its nodes: the control
//! socket ([`control`]).

pub mod control;
