//! Kiln's paged KV block manager and continuous-batching scheduler: pure, synchronous state machines.
