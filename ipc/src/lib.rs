//! greenos IPC: the kernel's inter-process communication objects for green
//! processes (pipes, System V message queues, shared memory, semaphores,
//! L4-style endpoints and migrating-thread RPC).
//!
//! Every object blocks through the runtime's one wait-queue mechanism
//! (`greenos_runtime::wait`); every error is an [`Errno`] inside an
//! `io::Error`, with the value Linux gives for the same mistake.
//!
//! # Modules
//!
//! - [`errno`]: the typed error.
//! - [`sysv`]: keys, flags, `ipc_perm`, credentials and the id registry that
//!   message queues, semaphore sets and shared memory share.
//! - [`mod@pipe`], [`fifo`]: pipes and named pipes (pipe(7), fifo(7)).
//! - [`msg`], [`sem`]: System V message queues and semaphore sets.
//! - [`mod@poll`]: waiting on several pipe ends, FIFOs and queues at once.

pub mod errno;
pub mod sysv;

pub use errno::Errno;
pub use sysv::{Cred, IpcFlags, IpcPerm, Key};

mod block;
pub mod fifo;
pub mod msg;
pub mod pipe;
pub mod poll;
pub mod sem;

pub use fifo::{mkfifo, unlink, Fifo};
pub use msg::{
    msgctl, msgctl_stat, msgget, msgrcv, msgrcv_timeout, msgsnd, msgsnd_timeout, MsgCtl, MsgFlags,
    MsqId, MsqSet, MsqidDs,
};
pub use pipe::{pipe, pipe_nonblocking, pipe_with_capacity, PipeReader, PipeWriter, PIPE_BUF};
pub use poll::{poll, PollEvents, PollFd, PollSource};
pub use sem::{
    semctl, semget, semop, semtimedop, SemCtl, SemCtlOut, SemFlags, SemId, SemSetPerm, Sembuf,
    SemidDs,
};
