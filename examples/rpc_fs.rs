//! A small in-memory file server reached by migrating-thread RPC.
//!
//! - The server process registers a dispatcher and publishes it in the
//!   name service as `"fs"`.
//! - Each client looks `"fs"` up, binds a connection, and calls
//!   `open` / `write` / `read` / `close`. The dispatcher runs on the
//!   client's own task and stack, as the server (its pid, its capability
//!   table), and asks `ipc_client_pid()` who called.
//! - File data does not travel in the connection's argument buffer: the
//!   client creates a shared buffer object and passes a capability to it
//!   (by copy, with read and write rights) in each `read` / `write` call,
//!   as ChCore passes a memory capability. (greenos's System V shm
//!   segments will take the buffer object's place once they can travel as
//!   capabilities; `cap::Object::ShmSegment` already names one by id.)
//!
//! ```text
//! cargo run --release --example rpc_fs
//! ```

use std::collections::HashMap;
use std::sync::Arc;

use greenos::ipc::cap::{self, Cap, Rights, Transfer};
use greenos::ipc::rpc::{self, IpcMsg};
use greenos::ipc::{names, Errno};
use greenos::sync::mpsc;
use parking_lot::Mutex;

const OPEN: u64 = 1;
const READ: u64 = 2;
const WRITE: u64 = 3;
const CLOSE: u64 = 4;

/// Negative errno in the u64 return, as a system call returns it.
fn err(e: Errno) -> u64 {
    (-(e.raw() as i64)) as u64
}

fn result(r: u64) -> Result<u64, Errno> {
    let v = r as i64;
    if v < 0 {
        Err(Errno(-v as i32))
    } else {
        Ok(r)
    }
}

/// The server's state: files by name, open descriptors by (client, fd).
#[derive(Default)]
struct Fs {
    files: HashMap<String, Vec<u8>>,
    open: HashMap<(u64, u64), (String, usize)>,
    next_fd: u64,
}

/// Argument layout in the connection buffer: [fd u64][len u64][name...].
fn args<'m>(m: &'m IpcMsg<'_>) -> (u64, usize, &'m [u8]) {
    let d = m.data();
    let word = |i: usize| u64::from_le_bytes(d[i * 8..i * 8 + 8].try_into().unwrap());
    (word(0), word(1) as usize, &d[16..])
}

fn dispatch(fs: &Mutex<Fs>, m: &mut IpcMsg<'_>) -> u64 {
    if m.len() < 16 {
        return err(Errno::EINVAL);
    }
    let client = rpc::ipc_client_pid().expect("inside a call").0;
    let (fd, len, name) = args(m);
    match m.label() {
        OPEN => {
            let Ok(name) = std::str::from_utf8(name) else {
                return err(Errno::EINVAL);
            };
            let mut fs = fs.lock();
            fs.files.entry(name.to_owned()).or_default();
            fs.next_fd += 1;
            let fd = fs.next_fd;
            fs.open.insert((client, fd), (name.to_owned(), 0));
            fd
        }
        READ | WRITE => {
            // The data buffer arrived as a capability in slot 0, now an
            // index in the *server's* table.
            let Some(buf) = m.cap(0) else {
                return err(Errno::EINVAL);
            };
            let mut fs = fs.lock();
            let Some((name, pos)) = fs.open.get(&(client, fd)).cloned() else {
                return err(Errno::EBADF);
            };
            let done = if m.label() == WRITE {
                let mut data = vec![0u8; len];
                if let Err(e) = cap::buffer_read(buf, 0, &mut data) {
                    return err(Errno(e.raw_os_error().unwrap_or(libc::EIO)));
                }
                let file = fs.files.get_mut(&name).expect("open file exists");
                if file.len() < pos + len {
                    file.resize(pos + len, 0);
                }
                file[pos..pos + len].copy_from_slice(&data);
                len
            } else {
                let file = &fs.files[&name];
                let n = len.min(file.len().saturating_sub(pos));
                if let Err(e) = cap::buffer_write(buf, 0, &file[pos..pos + n]) {
                    return err(Errno(e.raw_os_error().unwrap_or(libc::EIO)));
                }
                n
            };
            fs.open.insert((client, fd), (name, pos + done));
            // The buffer capability is not kept: delete the server's copy.
            let _ = cap::delete(buf);
            done as u64
        }
        CLOSE => match fs.lock().open.remove(&(client, fd)) {
            Some(_) => 0,
            None => err(Errno::EBADF),
        },
        _ => err(Errno::ENOSYS),
    }
}

/// A client's view: a connection and its data buffer.
struct FsClient {
    conn: rpc::Connection,
    buf: Cap,
}

impl FsClient {
    fn connect() -> FsClient {
        let srv = names::lookup("fs").expect("lookup fs");
        FsClient {
            conn: rpc::ipc_register_client(srv).expect("bind"),
            buf: cap::create_buffer(4096).expect("buffer"),
        }
    }

    fn call(
        &self,
        op: u64,
        fd: u64,
        len: usize,
        name: &[u8],
        pass_buf: bool,
    ) -> Result<u64, Errno> {
        let mut m = self.conn.msg();
        m.set_label(op);
        let b = m.buffer_mut();
        b[..8].copy_from_slice(&fd.to_le_bytes());
        b[8..16].copy_from_slice(&(len as u64).to_le_bytes());
        b[16..16 + name.len()].copy_from_slice(name);
        m.set_len(16 + name.len()).expect("fits");
        if pass_buf {
            m.set_cap(0, self.buf, Transfer::Copy(Rights::READ | Rights::WRITE))
                .expect("slot 0");
        }
        result(
            self.conn
                .ipc_call(&mut m)
                .map_err(|e| Errno(e.raw_os_error().unwrap_or(libc::EIO)))?,
        )
    }

    fn open(&self, name: &str) -> Result<u64, Errno> {
        self.call(OPEN, 0, 0, name.as_bytes(), false)
    }

    fn write(&self, fd: u64, data: &[u8]) -> Result<u64, Errno> {
        cap::buffer_write(self.buf, 0, data).expect("fill buffer");
        self.call(WRITE, fd, data.len(), &[], true)
    }

    fn read(&self, fd: u64, len: usize) -> Result<Vec<u8>, Errno> {
        let n = self.call(READ, fd, len, &[], true)? as usize;
        let mut out = vec![0u8; n];
        cap::buffer_read(self.buf, 0, &mut out).expect("read buffer");
        Ok(out)
    }

    fn close(&self, fd: u64) -> Result<u64, Errno> {
        self.call(CLOSE, fd, 0, &[], false)
    }
}

fn main() {
    let rt = greenos::Runtime::builder()
        .workers(2)
        .build()
        .expect("runtime");
    rt.block_on(|| {
        let (ready_tx, ready_rx) = mpsc::channel::<()>();
        let (stop_tx, stop_rx) = mpsc::channel::<()>();
        let server = greenos::task::Builder::new()
            .name("fs-server")
            .spawn(move || {
                let fs = Arc::new(Mutex::new(Fs::default()));
                let cap = rpc::ipc_register_server(move |m| dispatch(&fs, m)).expect("register");
                names::register("fs", cap).expect("publish");
                println!("fs server: pid {}", greenos::getpid());
                ready_tx.send(()).unwrap();
                let _ = stop_rx.recv();
            })
            .expect("spawn server");
        ready_rx.recv().unwrap();
        let clients: Vec<_> = (0..3)
            .map(|i| {
                greenos::task::Builder::new()
                    .name(format!("client-{i}"))
                    .spawn(move || {
                        let fs = FsClient::connect();
                        let name = format!("/notes-{i}.txt");
                        let fd = fs.open(&name).expect("open");
                        let text = format!("hello from client {i} (pid {})", greenos::getpid());
                        assert_eq!(
                            fs.write(fd, text.as_bytes()).expect("write"),
                            text.len() as u64
                        );
                        fs.close(fd).expect("close");
                        let fd = fs.open(&name).expect("reopen");
                        let back = fs.read(fd, 4096).expect("read");
                        assert_eq!(back, text.as_bytes());
                        // Another client's descriptor numbers mean nothing here.
                        assert_eq!(fs.read(fd + 1000, 1), Err(Errno::EBADF));
                        fs.close(fd).expect("close");
                        String::from_utf8(back).expect("utf-8")
                    })
                    .expect("spawn client")
            })
            .collect();
        for c in clients {
            println!("read back: {}", c.join().expect("client"));
        }
        stop_tx.send(()).unwrap();
        server.join().unwrap();
        names::unregister("fs").expect("unregister");
    });
}
