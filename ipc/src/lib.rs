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
//! - [`shm`]: System V shared memory segments (memfd-backed, one mapping
//!   per attach).
//! - [`ring`]: [`ShmRing`], typed SPSC / MPMC rings inside a segment that
//!   block through wait queues (or futexes across OS processes).
//! - [`mod@pipe`], [`fifo`]: pipes and named pipes (pipe(7), fifo(7)).
//! - [`msg`], [`sem`]: System V message queues and semaphore sets.
//! - [`mod@poll`]: waiting on several pipe ends, FIFOs and queues at once.

pub mod errno;
pub mod sysv;

pub use errno::Errno;
pub use sysv::{Cred, IpcFlags, IpcPerm, Key};
pub mod cap;
pub mod endpoint;
pub mod names;
pub mod rpc;

pub use cap::{Cap, Rights, Transfer};
pub use endpoint::{Endpoint, Msg, MsgTag, Reply};
pub use rpc::{
    ipc_client_badge, ipc_client_pid, ipc_register_client, ipc_register_server, Connection, IpcMsg,
    ServerCap,
};

pub mod shm;
pub use shm::{
    shm_fd, shmat, shmctl, shmdt, shmget, ShmCtl, ShmFlags, ShmId, ShmMap, ShmSet, ShmidDs,
};
pub mod ring;
pub use ring::{ReadChunk, RingKind, ShmRing, WriteChunk};

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

/// Signals between green processes (`kill`, `sigaction`, masks, SIGSTOP /
/// SIGCONT, SIGCHLD). They live in the runtime, which delivers them at
/// scheduling points; an IPC call interrupted by a handler fails with EINTR.
pub use greenos_runtime::signal;
