//! A DNS server the test controls, for discovery tests: lb's
//! `discovery.resolver` points at it, and the test changes what each name
//! resolves to while lb runs.

use std::collections::HashMap;
use std::net::{Ipv4Addr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// Each name's A records, lower case, without the final dot.
type Records = Arc<Mutex<HashMap<String, Vec<Ipv4Addr>>>>;

/// A DNS server on 127.0.0.1 (UDP, a port the kernel picks): answers an A
/// query with the addresses set for its name, another query for a known
/// name with no record, and any query for an unknown name with NXDOMAIN;
/// or nothing at all while [`FakeDns::go_silent`] holds. Stops when dropped.
pub struct FakeDns {
    /// The port it answers on.
    pub port: u16,
    records: Records,
    silent: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl FakeDns {
    pub fn start() -> Self {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind the DNS socket");
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .expect("set the DNS socket's timeout");
        let port = socket.local_addr().expect("the DNS port").port();
        let records = Records::default();
        let stop = Arc::new(AtomicBool::new(false));
        let silent = Arc::new(AtomicBool::new(false));
        let thread = {
            let (records, stop) = (Arc::clone(&records), Arc::clone(&stop));
            let silent = Arc::clone(&silent);
            std::thread::spawn(move || {
                let mut buf = [0u8; 512];
                while !stop.load(Relaxed) {
                    let Ok((len, from)) = socket.recv_from(&mut buf) else {
                        continue;
                    };
                    if silent.load(Relaxed) {
                        continue;
                    }
                    let records = records.lock().expect("the records lock");
                    if let Some(reply) = dns_reply(&buf[..len], &records) {
                        let _ = socket.send_to(&reply, from);
                    }
                }
            })
        };
        FakeDns {
            port,
            records,
            silent,
            stop,
            thread: Some(thread),
        }
    }

    /// From the next query on, `name` resolves to `addrs`.
    pub fn set(&self, name: &str, addrs: &[Ipv4Addr]) {
        self.records
            .lock()
            .expect("the records lock")
            .insert(name.to_ascii_lowercase(), addrs.to_vec());
    }
}

impl FakeDns {
    /// From the next query on, `name` does not exist (NXDOMAIN).
    pub fn remove(&self, name: &str) {
        self.records
            .lock()
            .expect("the records lock")
            .remove(&name.to_ascii_lowercase());
    }

    /// While `silent`, no query gets an answer (as a resolver that times out).
    pub fn go_silent(&self, silent: bool) {
        self.silent.store(silent, Relaxed);
    }
}

impl Drop for FakeDns {
    fn drop(&mut self) {
        self.stop.store(true, Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Builds the answer to one DNS query.
fn dns_reply(query: &[u8], records: &HashMap<String, Vec<Ipv4Addr>>) -> Option<Vec<u8>> {
    if query.len() < 12 {
        return None;
    }
    // The question: labels up to a zero byte, then type and class.
    let mut labels = Vec::new();
    let mut end = 12;
    while *query.get(end)? != 0 {
        let len = query[end] as usize;
        labels
            .push(String::from_utf8_lossy(query.get(end + 1..end + 1 + len)?).to_ascii_lowercase());
        end += 1 + len;
    }
    let question_end = end + 5;
    let qtype = u16::from_be_bytes([*query.get(end + 1)?, *query.get(end + 2)?]);
    let name = labels.join(".");
    let (answers, rcode): (&[Ipv4Addr], u8) = match records.get(&name) {
        Some(addrs) if qtype == 1 => (addrs, 0),
        Some(_) => (&[], 0),
        None => (&[], 3), // NXDOMAIN
    };
    let mut reply = Vec::with_capacity(question_end + answers.len() * 16);
    reply.extend_from_slice(&query[..2]); // id
                                          // A response, recursion available, the rcode; one question.
    reply.extend_from_slice(&[0x81, 0x80 | rcode, 0, 1]);
    reply.extend_from_slice(&(answers.len() as u16).to_be_bytes());
    reply.extend_from_slice(&[0, 0, 0, 0]);
    reply.extend_from_slice(query.get(12..question_end)?);
    for ip in answers {
        reply.extend_from_slice(&[0xC0, 12, 0, 1, 0, 1, 0, 0, 0, 0, 0, 4]);
        reply.extend_from_slice(&ip.octets());
    }
    Some(reply)
}
