//! The typed error of every IPC call: a Linux errno.
//!
//! Each IPC function returns `io::Result`; the error inside is built from an
//! [`Errno`], so `io::Error::raw_os_error()` gives the value Linux gives for
//! the same mistake. Code inside the crate works with `Result<T, Errno>` and
//! converts at the public boundary with `?`.

use std::fmt;
use std::io;

/// A Linux error number (`errno(3)`).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Errno(pub i32);

macro_rules! errnos {
    ($($name:ident),* $(,)?) => {
        impl Errno {
            $(
                #[doc = concat!("`", stringify!($name), "` (see errno(3)).")]
                pub const $name: Errno = Errno(libc::$name);
            )*
        }
    };
}

errnos!(
    EPERM,
    ENOENT,
    ESRCH,
    EINTR,
    ENXIO,
    E2BIG,
    EBADF,
    EAGAIN,
    ENOMEM,
    EACCES,
    EFAULT,
    EBUSY,
    EEXIST,
    ENOTDIR,
    EISDIR,
    EINVAL,
    ENFILE,
    EMFILE,
    EFBIG,
    ENOSPC,
    ESPIPE,
    EPIPE,
    ERANGE,
    EDEADLK,
    ENAMETOOLONG,
    ENOSYS,
    ENOMSG,
    EIDRM,
    ETIMEDOUT,
    EOVERFLOW,
    ECANCELED,
);

impl Errno {
    /// The raw errno value.
    pub fn raw(self) -> i32 {
        self.0
    }
}

impl fmt::Debug for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Errno({}: {})",
            self.0,
            io::Error::from_raw_os_error(self.0)
        )
    }
}

impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&io::Error::from_raw_os_error(self.0), f)
    }
}

impl std::error::Error for Errno {}

impl From<Errno> for io::Error {
    fn from(e: Errno) -> io::Error {
        io::Error::from_raw_os_error(e.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_to_io_error_with_the_same_errno() {
        let e: io::Error = Errno::EIDRM.into();
        assert_eq!(e.raw_os_error(), Some(libc::EIDRM));
        assert_eq!(Errno::EAGAIN.raw(), libc::EAGAIN);
    }
}
