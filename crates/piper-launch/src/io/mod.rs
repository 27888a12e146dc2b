//! What the event loop (`ring.rs`) serves besides its nodes: the control
//! socket ([`control`]), and the background nodes' rotated logs ([`logs`]).

pub mod control;
pub mod logs;
