//! The operator plane, beside the delivery path: what a person or a supervisor uses
//! to watch and steer a running service. It reads through handles (the ledger, the
//! monitor, the reload channel) and never drives a mailbox itself; the service wires
//! it up.

pub mod api;
pub mod http;
pub mod manage;
pub mod monitor;
pub mod parked;
pub mod receive;
pub mod reload;
pub mod shard;
pub mod status;
