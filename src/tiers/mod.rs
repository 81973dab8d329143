//! The two storage tiers: Redis (shared, primary) and memory (process-local,
//! bounded; serves whenever Redis is off or failing).

pub mod cluster;
pub mod memory;
pub mod redis;
