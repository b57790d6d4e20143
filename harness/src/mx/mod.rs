//! mx
