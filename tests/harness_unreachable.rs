//! The harness fails loudly, with the way out in the message, when a server of the stack is not
//! reachable. These tests point it at a closed port on purpose; they need no stack.

use std::any::Any;
use std::future::Future;
use std::net::TcpListener;

use posture_tests::{fresh_database_at, fresh_topic_at, STACK_HINT};

/// A loopback port that nothing listens on (bound, then released).
fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("local addr").port()
}

/// Run `fut` on its own task and return its panic message; fail if it does not panic.
async fn panic_message<F>(fut: F) -> String
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let err = tokio::spawn(fut).await.err().expect("the harness should have panicked");
    assert!(err.is_panic(), "task was cancelled, not panicked");
    let payload: Box<dyn Any + Send> = err.into_panic();
    if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else {
        panic!("panic payload is not a string")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clickhouse_unreachable_says_how_to_start_the_stack() {
    let url = format!("http://127.0.0.1:{}", closed_port());
    let msg = panic_message({
        let url = url.clone();
        async move { fresh_database_at(&url, "unreachable").await }
    })
    .await;
    assert!(
        msg.contains("start the test stack with: scripts/stack up"),
        "message: {msg}"
    );
    assert!(msg.contains(STACK_HINT), "message: {msg}");
    assert!(
        msg.contains(&format!("ClickHouse at {url}")),
        "message names what was unreachable: {msg}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_unreachable_says_how_to_start_the_stack() {
    let brokers = format!("127.0.0.1:{}", closed_port());
    let msg = panic_message({
        let brokers = brokers.clone();
        async move { fresh_topic_at(&brokers, "unreachable", 1).await }
    })
    .await;
    assert!(
        msg.contains("start the test stack with: scripts/stack up"),
        "message: {msg}"
    );
    assert!(
        msg.contains(&format!("Kafka at {brokers}")),
        "message names what was unreachable: {msg}"
    );
}
