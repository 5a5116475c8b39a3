//! greenos IPC: the kernel's inter-process communication objects for green
//! processes (pipes, System V message queues, shared memory, semaphores,
//! L4-style endpoints and migrating-thread RPC).
//!
//! This crate is filled in by the IPC issues; every object in it blocks
//! through the runtime's one wait-queue mechanism (`greenos_runtime::wait`).
