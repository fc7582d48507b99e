//! The hardware inventory JSON (`poll.get_hardware_info`, inspection `inventory`).
//! (Being written.)

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Inventory {}
