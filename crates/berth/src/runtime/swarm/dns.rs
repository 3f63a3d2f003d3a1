//! Where a service's task is: the overlay network's DNS answers `tasks.<service>` with the
//! address of each live task. Asked at every connection, so that a task rescheduled to
//! another node is found at its new address.
//!
//! The question is written here, for A records only, instead of going through the C
//! library's resolver: `getaddrinfo` also asks for AAAA records, and on Docker's embedded
//! DNS those sometimes stalled 2.5 s for a name that had just appeared.
//!
//! An answer too long for a UDP message (512 bytes: about 29 tasks) comes back
//! truncated, and the question is then asked again over TCP, as resolvers do.

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

/// The embedded DNS server of every container on a user-defined network.
pub const EMBEDDED_DNS: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::new(127, 0, 0, 11)), 53);

/// The A records of `name` from `server`, asked twice with a 1 s timeout each (over TCP
/// once more when the answer is truncated). An unknown name is an empty list, not an
/// error.
pub async fn lookup_a(server: SocketAddr, name: &str) -> io::Result<Vec<Ipv4Addr>> {
    let query = question(name)?;
    let bind: SocketAddr = if server.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    }
    .parse()
    .map_err(|_| io::Error::other("bind address"))?;
    let socket = UdpSocket::bind(bind).await?;
    socket.connect(server).await?;
    let mut buf = [0u8; 1500];
    for _ in 0..2 {
        socket.send(&query).await?;
        match tokio::time::timeout(Duration::from_secs(1), socket.recv(&mut buf)).await {
            Ok(Ok(n)) => {
                if truncated(&buf[..n], &query[..2]) {
                    return over_tcp(server, name, &query).await;
                }
                if let Some(addresses) = answers(&buf[..n], &query[..2]) {
                    return Ok(addresses);
                }
            }
            Ok(Err(e)) => return Err(e),
            Err(_) => continue,
        }
    }
    Err(io::Error::new(
        io::ErrorKind::TimedOut,
        format!("{server} did not answer for {name}"),
    ))
}

/// How long the question over TCP may take, connection included.
const TCP_LIMIT: Duration = Duration::from_secs(2);

/// `query` asked over TCP (each message after its length, in two bytes).
async fn over_tcp(server: SocketAddr, name: &str, query: &[u8]) -> io::Result<Vec<Ipv4Addr>> {
    let asked = async {
        let mut stream = TcpStream::connect(server).await?;
        let length = u16::try_from(query.len()).map_err(io::Error::other)?;
        let mut framed = length.to_be_bytes().to_vec();
        framed.extend_from_slice(query);
        stream.write_all(&framed).await?;
        let mut length = [0u8; 2];
        stream.read_exact(&mut length).await?;
        let mut response = vec![0u8; u16::from_be_bytes(length).into()];
        stream.read_exact(&mut response).await?;
        answers(&response, &query[..2]).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{server} gave no answer to the question for {name} over TCP"),
            )
        })
    };
    tokio::time::timeout(TCP_LIMIT, asked)
        .await
        .unwrap_or_else(|_| {
            Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("{server} did not answer for {name} over TCP within {TCP_LIMIT:?}"),
            ))
        })
}

/// Whether a response to the query with id `id` says it was cut short (the TC flag).
fn truncated(response: &[u8], id: &[u8]) -> bool {
    response.len() >= 12 && &response[..2] == id && response[2] & 0x82 == 0x82
}

/// A query for the A records of `name`, recursion desired, with a random id.
fn question(name: &str) -> io::Result<Vec<u8>> {
    let mut id = [0u8; 2];
    getrandom::fill(&mut id).map_err(|e| io::Error::other(e.to_string()))?;
    let mut query = vec![id[0], id[1], 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in name.trim_end_matches('.').split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{name:?} is not a DNS name"),
            ));
        }
        query.push(label.len() as u8);
        query.extend_from_slice(label.as_bytes());
    }
    query.extend_from_slice(&[0, 0, 1, 0, 1]);
    Ok(query)
}

/// The A records of a response to the query with id `id`; `None` for another message.
fn answers(response: &[u8], id: &[u8]) -> Option<Vec<Ipv4Addr>> {
    if response.len() < 12 || &response[..2] != id || response[2] & 0x80 == 0 {
        return None;
    }
    if response[3] & 0x0f == 3 {
        return Some(Vec::new());
    }
    let questions = u16::from_be_bytes([response[4], response[5]]);
    let records = u16::from_be_bytes([response[6], response[7]]);
    let mut at = 12;
    for _ in 0..questions {
        at = skip_name(response, at)? + 4;
    }
    let mut found = Vec::new();
    for _ in 0..records {
        at = skip_name(response, at)?;
        let fixed = response.get(at..at + 10)?;
        let kind = u16::from_be_bytes([fixed[0], fixed[1]]);
        let length = u16::from_be_bytes([fixed[8], fixed[9]]) as usize;
        let data = response.get(at + 10..at + 10 + length)?;
        if kind == 1 && length == 4 {
            found.push(Ipv4Addr::new(data[0], data[1], data[2], data[3]));
        }
        at += 10 + length;
    }
    Some(found)
}

/// Where the name at `at` ends: its labels up to the root, or a compression pointer.
fn skip_name(message: &[u8], mut at: usize) -> Option<usize> {
    loop {
        let length = *message.get(at)?;
        if length & 0xc0 == 0xc0 {
            return Some(at + 2);
        }
        at += 1 + length as usize;
        if length == 0 {
            return Some(at);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_question_asks_for_a_records_of_each_label() {
        let query = question("tasks.berth-ab12").expect("a name");
        assert_eq!(&query[2..6], &[1, 0, 0, 1]);
        assert_eq!(&query[12..], b"\x05tasks\x0aberth-ab12\x00\x00\x01\x00\x01");
        assert!(question("a..b").is_err());
        assert!(question(&"x".repeat(64)).is_err());
    }

    #[test]
    fn answers_are_read_through_compressed_names() {
        let query = question("tasks.s").expect("a name");
        let mut response = query.clone();
        response[2] = 0x81;
        response[3] = 0x80;
        response[7] = 2;
        for ip in [[10, 0, 0, 5], [10, 0, 0, 6]] {
            // Name: a pointer to the question's name; type A, class IN, TTL 600.
            response.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 2, 88, 0, 4]);
            response.extend_from_slice(&ip);
        }
        assert_eq!(
            answers(&response, &query[..2]),
            Some(vec![Ipv4Addr::new(10, 0, 0, 5), Ipv4Addr::new(10, 0, 0, 6)])
        );
        assert_eq!(answers(&response, &[0, 0]), None, "another id");
        response[3] = 0x83;
        assert_eq!(answers(&response, &query[..2]), Some(vec![]), "NXDOMAIN");
        assert_eq!(answers(&response[..20], &query[..2]), Some(vec![]));
        response[3] = 0x80;
        assert_eq!(answers(&response[..40], &query[..2]), None, "cut short");
    }

    /// A response to `query` with an A record for each of `ips`.
    fn response(query: &[u8], ips: &[Ipv4Addr], truncated: bool) -> Vec<u8> {
        let mut response = query.to_vec();
        response[2] = if truncated { 0x83 } else { 0x81 };
        response[3] = 0x80;
        response[6..8].copy_from_slice(&(ips.len() as u16).to_be_bytes());
        for ip in ips {
            response.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 2, 88, 0, 4]);
            response.extend_from_slice(&ip.octets());
        }
        response
    }

    #[tokio::test]
    async fn a_truncated_answer_is_asked_again_over_tcp() {
        // A server on this machine: over UDP it gives the first record and the TC flag,
        // over TCP all 40, as a DNS server does with more than fits in 512 bytes.
        let udp = UdpSocket::bind("127.0.0.1:0").await.expect("a UDP port");
        let server = udp.local_addr().expect("its address");
        let tcp = tokio::net::TcpListener::bind(server)
            .await
            .expect("the same port over TCP");
        let all: Vec<Ipv4Addr> = (1..=40).map(|n| Ipv4Addr::new(10, 0, 1, n)).collect();
        let first = all[..1].to_vec();
        let answering = tokio::spawn({
            let all = all.clone();
            async move {
                let mut buf = [0u8; 512];
                let (n, client) = udp.recv_from(&mut buf).await.expect("the question");
                let cut = response(&buf[..n], &first, true);
                udp.send_to(&cut, client).await.expect("the cut answer");
                let (mut stream, _) = tcp.accept().await.expect("the TCP question");
                let mut length = [0u8; 2];
                stream.read_exact(&mut length).await.expect("its length");
                let mut query = vec![0u8; u16::from_be_bytes(length).into()];
                stream.read_exact(&mut query).await.expect("the question");
                let whole = response(&query, &all, false);
                let mut framed = (whole.len() as u16).to_be_bytes().to_vec();
                framed.extend_from_slice(&whole);
                stream.write_all(&framed).await.expect("the whole answer");
            }
        });
        let found = lookup_a(server, "tasks.routers").await.expect("an answer");
        assert_eq!(found, all);
        answering.await.expect("the server");
    }
}
