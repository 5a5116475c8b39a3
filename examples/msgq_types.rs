//! Typed receive on a System V message queue (msgrcv(2)'s three type
//! rules).
//!
//! Three producers send into one queue: type 1 "urgent", type 2 "normal",
//! type 3 "log". The consumer then shows each selection rule:
//!
//! - `msgtyp > 0`: only that type (`2`: the normal messages, in order);
//! - `msgtyp > 0` with `EXCEPT`: the first message of any *other* type;
//! - `msgtyp < 0`: the lowest type ≤ |msgtyp| first — a priority queue
//!   (`-3`: all urgent, then normal, then log);
//! - `msgtyp == 0`: plain FIFO;
//! - `NOWAIT` on an empty queue: ENOMSG.
//!
//! ```text
//! cargo run --release --example msgq_types
//! ```

use greenos::ipc::{self, IpcFlags, Key, MsgCtl, MsgFlags};

fn main() -> std::io::Result<()> {
    let rt = greenos::Runtime::builder().workers(2).build()?;
    rt.block_on(|| -> std::io::Result<()> {
        let q = ipc::msgget(Key::PRIVATE, IpcFlags::mode(0o600))?;
        let producers: Vec<_> = [(1i64, "urgent"), (2, "normal"), (3, "log")]
            .into_iter()
            .map(|(mtype, what)| {
                greenos::spawn(move || {
                    for i in 0..3 {
                        let text = format!("{what} #{i}");
                        ipc::msgsnd(q, mtype, text.as_bytes(), MsgFlags::NONE).unwrap();
                    }
                })
            })
            .collect();
        for p in producers {
            p.join().expect("producer");
        }
        let st = ipc::msgctl_stat(q)?;
        println!("queued: {} messages, {} bytes", st.qnum, st.cbytes);

        let mut buf = [0u8; 64];
        let mut take = |label: &str, msgtyp: i64, flags: MsgFlags| -> std::io::Result<bool> {
            match ipc::msgrcv(q, &mut buf, msgtyp, flags | MsgFlags::NOWAIT) {
                Ok((t, n)) => {
                    let text = String::from_utf8_lossy(&buf[..n]);
                    println!("{label:<22} -> type {t}: {text}");
                    Ok(true)
                }
                Err(e) if e.raw_os_error() == Some(ipc::Errno::ENOMSG.raw()) => {
                    println!("{label:<22} -> ENOMSG (nothing matches)");
                    Ok(false)
                }
                Err(e) => Err(e),
            }
        };
        take("msgtyp 2", 2, MsgFlags::NONE)?;
        take("msgtyp 2", 2, MsgFlags::NONE)?;
        take("msgtyp 1 | EXCEPT", 1, MsgFlags::EXCEPT)?;
        while take("msgtyp -3 (priority)", -3, MsgFlags::NONE)? {}

        // Blocking receive: a late producer wakes a waiting consumer.
        let late = greenos::spawn(move || {
            greenos::sleep(std::time::Duration::from_millis(10));
            ipc::msgsnd(q, 7, b"late but typed", MsgFlags::NONE).unwrap();
        });
        let (t, n) = ipc::msgrcv(q, &mut buf, 7, MsgFlags::NONE)?;
        println!(
            "{:<22} -> type {t}: {}",
            "msgtyp 7 (blocking)",
            String::from_utf8_lossy(&buf[..n])
        );
        late.join().expect("late producer");
        ipc::msgctl(q, MsgCtl::Remove)?;
        Ok(())
    })
}
