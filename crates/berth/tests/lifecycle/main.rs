//! The object lifecycle on the in-memory fake runtime, with Tokio's paused time: the
//! races and failures that are hard to bring about against a real engine, each made to
//! happen at an exact moment. They take milliseconds and need no Docker. The tests against
//! the real Docker Engine (`objects.rs`, `reliability.rs`) remain the proof that berth
//! works; these prove the logic in between.

mod alarms;
mod fixture;
mod metrics;
mod pause;
mod recovery;
mod rollout;
mod sleep;
mod standby;
mod starts;
mod stops;
