//! Functional tests of the IPC objects: one binary, one module per object
//! (pipe(7), fifo(7), msgop(2), semop(2), poll(2) rules; ipc.md §1–§3.5).
//!
//! No test depends on wall-clock speed: timeouts are either the behaviour
//! under test (a `_timeout` form must time out when nothing can happen) or
//! generous watchdogs.

mod objects {
    pub mod common;
    mod fifo;
    mod msg;
    mod pipe;
    mod poll;
    mod sem;
}
