//! The agent's side of the Ironic control plane: talking to the conductor's API
//! ([`client`]), finding this machine's node ([`lookup`]), telling the conductor the
//! agent is alive and where it listens ([`heartbeat`], [`advertise`]).

pub mod advertise;
pub mod client;
pub mod heartbeat;
pub mod lookup;

pub use advertise::{advertise_address, callback_url, AddressRetry, AdvertiseError};
pub use client::{ConductorClient, ConductorClientError, ConductorReply, ConductorRequestError};
pub use heartbeat::{HeartbeatError, HeartbeatTiming, Heartbeater};
pub use lookup::{lookup_node, LookupBackoff, LookupError, LookupOutcome, LookupQuery};
