//! `TCP_NODELAY` on every PostgreSQL socket, whatever the driver does.
//!
//! sqlx 0.9.0 stopped setting `TCP_NODELAY` on its connections (sqlx issue #4335; fixed
//! upstream, not yet released). Without it a TLS connection's small records wait on Nagle's
//! algorithm and the server's delayed ACK: over TLS Herald sent at 40 % of its plaintext
//! speed. sqlx gives no hook on its socket, so after each connection opens we look at this
//! process's own sockets: each open descriptor is duplicated with `pidfd_getfd` (Linux 5.6+,
//! allowed on one's own process without privileges), and every TCP socket whose peer is the
//! database's port gets the option. Duplicating shares the socket, so the option lands on
//! the driver's connection; the duplicate is closed at once and the driver's descriptor is
//! untouched. Once sqlx sets the option itself, this finds it already on: the build's
//! patched sqlx-core (vendor/README.md) does, from before the handshake, and this stays as
//! the backstop whatever a later driver does.
//!
//! docs/ARCHITECTURE.md "Database sockets" tells the story; tests: this file's unit tests
//! (the mechanism, on a loopback socket) and tests/it/database_sockets.rs:
//! `every_postgres_socket_has_tcp_nodelay` (the pool's real connections) and
//! `the_socket_has_tcp_nodelay_before_the_handshake` (the patch). Linux only:
//! elsewhere `postgres.rs` reports the option as not set.

use std::io;
use std::net::SocketAddr;

/// What [`set_on_database_sockets`] found among the process's sockets to the database.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NodelayCount {
    /// Sockets that had `TCP_NODELAY` off and now have it on.
    pub set: usize,
    /// Sockets that already had it on.
    pub already: usize,
}

/// One TCP socket of this process, connected to `peer`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DatabaseSocket {
    pub peer: SocketAddr,
    pub nodelay: bool,
}

/// Turns `TCP_NODELAY` on for every connected TCP socket of this process whose peer port is
/// `port`.
pub fn set_on_database_sockets(port: u16) -> io::Result<NodelayCount> {
    let mut count = NodelayCount::default();
    each_socket_to(port, |fd, nodelay| {
        if nodelay {
            count.already += 1;
        } else {
            rustix::net::sockopt::set_tcp_nodelay(fd, true)?;
            count.set += 1;
        }
        Ok(())
    })?;
    Ok(count)
}

/// Every connected TCP socket of this process whose peer port is `port`, with its
/// `TCP_NODELAY` setting (for tests and `herald doctor`).
pub fn database_sockets(port: u16) -> io::Result<Vec<DatabaseSocket>> {
    let mut found = Vec::new();
    each_socket_to(port, |fd, nodelay| {
        if let Some(peer) = peer_of(fd) {
            found.push(DatabaseSocket { peer, nodelay });
        }
        Ok(())
    })?;
    Ok(found)
}

fn peer_of(fd: std::os::fd::BorrowedFd<'_>) -> Option<SocketAddr> {
    let peer = rustix::net::getpeername(fd).ok()??;
    SocketAddr::try_from(peer).ok()
}

/// Calls `visit` with a duplicate of each of this process's TCP sockets connected to `port`
/// and its current `TCP_NODELAY`.
fn each_socket_to(
    port: u16,
    mut visit: impl FnMut(std::os::fd::BorrowedFd<'_>, bool) -> io::Result<()>,
) -> io::Result<()> {
    use std::os::fd::AsFd;
    let pidfd = rustix::process::pidfd_open(
        rustix::process::getpid(),
        rustix::process::PidfdFlags::empty(),
    )?;
    for entry in std::fs::read_dir("/proc/self/fd")? {
        let entry = entry?;
        let Some(number) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        // Only sockets: the link reads `socket:[inode]`. A descriptor closed since the
        // listing has no link any more and is skipped.
        let is_socket = std::fs::read_link(entry.path())
            .is_ok_and(|target| target.to_string_lossy().starts_with("socket:"));
        if !is_socket {
            continue;
        }
        let dup = match rustix::process::pidfd_getfd(
            &pidfd,
            number,
            rustix::process::PidfdGetfdFlags::empty(),
        ) {
            Ok(dup) => dup,
            // Closed (or reused for something else) between the listing and now.
            Err(rustix::io::Errno::BADF) => continue,
            Err(e) => return Err(e.into()),
        };
        if peer_of(dup.as_fd()).is_none_or(|peer| peer.port() != port) {
            continue;
        }
        // Not a TCP socket (a UDP socket may have a peer too): the option does not apply.
        let Ok(nodelay) = rustix::net::sockopt::tcp_nodelay(&dup) else {
            continue;
        };
        visit(dup.as_fd(), nodelay)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream};

    #[test]
    fn sets_the_option_on_a_socket_to_the_port_and_only_there() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let client = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        let (server_side, _) = listener.accept().expect("accept");
        let other = TcpListener::bind("127.0.0.1:0").expect("bind");
        let bystander =
            TcpStream::connect(other.local_addr().expect("addr")).expect("connect bystander");
        // Linux leaves Nagle on for a new socket: this is what the driver's sockets look like.
        assert!(!client.nodelay().expect("nodelay"));
        assert!(!bystander.nodelay().expect("nodelay"));

        let seen = database_sockets(port).expect("list");
        assert_eq!(
            seen,
            vec![DatabaseSocket {
                peer: SocketAddr::from(([127, 0, 0, 1], port)),
                nodelay: false
            }],
            "only the client's socket has the port as its peer"
        );
        let count = set_on_database_sockets(port).expect("set");
        assert_eq!(count, NodelayCount { set: 1, already: 0 });
        assert!(
            client.nodelay().expect("nodelay"),
            "set on the original descriptor"
        );
        assert!(
            !bystander.nodelay().expect("nodelay"),
            "other peers untouched"
        );
        assert!(
            !server_side.nodelay().expect("nodelay"),
            "the listening side untouched"
        );
        assert_eq!(
            set_on_database_sockets(port).expect("again"),
            NodelayCount { set: 0, already: 1 }
        );
    }
}
