//! The cluster's resolver: every node's dockerd (and so every container's embedded DNS)
//! asks it, on the host side of the nodes' bridge, and it answers NXDOMAIN to everything.
//! A name the overlay does not know must not be asked of a public resolver: that would be
//! traffic to an outside address.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::net::UdpSocket;
use tokio::task::JoinHandle;

/// Answers NXDOMAIN on `ip:53` (UDP) until dropped; counts the questions.
pub struct Resolver {
    pub questions: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl Resolver {
    pub async fn start(ip: IpAddr) -> std::io::Result<Resolver> {
        let socket = UdpSocket::bind(SocketAddr::new(ip, 53)).await?;
        let questions = Arc::new(AtomicUsize::new(0));
        let counted = questions.clone();
        let task = tokio::spawn(async move {
            let mut buf = [0u8; 1500];
            while let Ok((n, from)) = socket.recv_from(&mut buf).await {
                if let Some(answer) = nxdomain(&buf[..n]) {
                    counted.fetch_add(1, Ordering::Relaxed);
                    let _ = socket.send_to(&answer, from).await;
                }
            }
        });
        Ok(Resolver { questions, task })
    }

    pub fn questions(&self) -> usize {
        self.questions.load(Ordering::Relaxed)
    }
}

impl Drop for Resolver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The query sent back as a response with RCODE 3 (name error), question kept, no records.
fn nxdomain(query: &[u8]) -> Option<Vec<u8>> {
    if query.len() < 12 || query[2] & 0x80 != 0 {
        return None;
    }
    let mut answer = query.to_vec();
    // QR=1, opcode and RD kept; RA=1, RCODE=3. No answer, authority or extra records.
    answer[2] = 0x80 | (query[2] & 0x79);
    answer[3] = 0x80 | 0x03;
    answer[6..12].fill(0);
    // Drop an EDNS record (additional section) with the counts: keep header + question.
    let question_end = question_end(query)?;
    answer.truncate(question_end);
    Some(answer)
}

/// Where the first question ends: its name's labels, then type and class.
fn question_end(query: &[u8]) -> Option<usize> {
    let mut at = 12;
    loop {
        let len = *query.get(at)? as usize;
        at += 1;
        if len == 0 {
            break;
        }
        at += len;
    }
    let end = at + 4;
    (end <= query.len()).then_some(end)
}

#[test]
fn a_query_gets_nxdomain_with_its_question() {
    // id 0x1234, RD, one question: example.com A IN, plus an EDNS OPT record.
    let mut query = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 1];
    query.extend_from_slice(b"\x07example\x03com\x00\x00\x01\x00\x01");
    query.extend_from_slice(&[0, 0, 41, 4, 0, 0, 0, 0, 0, 0, 0]);
    let answer = nxdomain(&query).expect("an answer");
    assert_eq!(&answer[..2], &[0x12, 0x34]);
    assert_eq!(answer[2] & 0x80, 0x80, "a response");
    assert_eq!(answer[3] & 0x0f, 3, "NXDOMAIN");
    assert_eq!(&answer[4..6], &[0, 1], "the question kept");
    assert_eq!(&answer[6..12], &[0; 6]);
    assert_eq!(answer.len(), 12 + 13 + 4);
    assert!(nxdomain(&answer).is_none(), "a response is not answered");
}
