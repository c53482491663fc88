//! Every PostgreSQL socket a `Store` opens has `TCP_NODELAY` on (issue 15 point 1): without
//! it a TLS connection's small records wait on Nagle's algorithm (store/nodelay.rs).
//!
//! The store connects through a forwarder on a port of its own, so the sockets this test
//! inspects are exactly the ones this store opened: the other tests in this process (and
//! their admin pools, which do not go through `Store`) talk to the database's own port.

use crate::support::{Backend, TestDb};
use herald::store::Store;
use herald::store::nodelay::database_sockets;
use sqlx::postgres::PgConnectOptions;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};

/// Forwards every connection on a fresh loopback port to `target`; returns the port.
async fn forwarder(target: (String, u16)) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind forwarder");
    let port = listener.local_addr().expect("forwarder address").port();
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            let target = target.clone();
            tokio::spawn(async move {
                if let Ok(mut outbound) = TcpStream::connect(target).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_postgres_socket_has_tcp_nodelay() {
    let db = TestDb::new(Backend::Postgres).await;
    let options: PgConnectOptions = db.url.parse().expect("the test database URL parses");
    let (host, port) = (options.get_host().to_string(), options.get_port());
    let proxy = forwarder((host.clone(), port)).await;
    let authority = format!("{host}:{port}");
    assert!(
        db.url.contains(&authority),
        "the test database URL {} must name its port explicitly (host:port) for this test",
        db.url
    );
    let url = db
        .url
        .replacen(&authority, &format!("127.0.0.1:{proxy}"), 1);
    let store = Store::connect(&url)
        .await
        .expect("connect through the forwarder");

    // Queries at once (the pool may open more connections for them), and the work
    // listener, which opens a connection of its own.
    let listener = {
        let store = store.clone();
        tokio::spawn(async move { store.listen_for_work().await })
    };
    let busy: Vec<_> = (0..8)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move { store.default_org().await })
        })
        .collect();
    for task in busy {
        task.await
            .expect("task")
            .expect("query through the forwarder");
    }
    // The listener connects in the background; wait for its socket (bounded).
    let mut sockets = Vec::new();
    for _ in 0..250 {
        sockets = database_sockets(proxy).expect("list this process's sockets");
        if sockets.len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    listener.abort();
    // At least the pool's first connection and the listener's.
    assert!(
        sockets.len() >= 2,
        "expected the pool's connections and the listener's, found {sockets:?}"
    );
    let without: Vec<_> = sockets.iter().filter(|s| !s.nodelay).collect();
    assert!(
        without.is_empty(),
        "database sockets without TCP_NODELAY: {without:?} (of {sockets:?})"
    );
}

/// The option is on before the first byte of the connection's handshake, not only once the
/// connection is open: otherwise the TLS handshake and the startup messages wait on Nagle's
/// algorithm, and every new connection to a server offering TLS took 70-100 ms instead of
/// about 10 (vendor/README.md). A listener that never answers holds the connection inside
/// its handshake while the client's socket is inspected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_socket_has_tcp_nodelay_before_the_handshake() {
    use tokio::io::AsyncReadExt;
    let silent = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a silent server");
    let port = silent.local_addr().expect("its address").port();
    let connecting = tokio::spawn(async move {
        Store::connect(&format!(
            "postgres://herald@127.0.0.1:{port}/herald?sslmode=prefer"
        ))
        .await
    });
    let (mut server_side, _) = tokio::time::timeout(Duration::from_secs(30), silent.accept())
        .await
        .expect("the store connects within 30 s")
        .expect("accept");
    // The client's first message (the TLS request) has arrived and is left unanswered.
    let mut first = [0u8; 8];
    tokio::time::timeout(Duration::from_secs(30), server_side.read_exact(&mut first))
        .await
        .expect("the client speaks first within 30 s")
        .expect("read its first message");
    let sockets = database_sockets(port).expect("list this process's sockets");
    connecting.abort();
    assert_eq!(
        sockets.len(),
        1,
        "one client socket to the silent server: {sockets:?}"
    );
    assert!(
        sockets[0].nodelay,
        "the socket lacks TCP_NODELAY during the handshake: {sockets:?}"
    );
}
