//! Reporters: render finished runs. All of them read the same [`RunReport`](crate::lab::RunReport).

pub mod console;
