//! An embedded broker: librdkafka's in-process mock cluster, for examples and tests that
//! must run with zero setup.
//!
//! The mock cluster has no Admin API, so topics are made with
//! [`EmbeddedKafka::create_topic`]; it keeps at most ~100k messages per partition.
//! Use [`EmbeddedKafka::client_config`] for clients: it shortens session timeouts so group
//! joins take a fraction of a second instead of ~9 s.

use std::sync::mpsc;
use std::thread::JoinHandle;

use rdkafka::mocking::MockCluster;
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};

use crate::error::{Error, Result};

enum Command {
    CreateTopic { name: String, partitions: i32, reply: mpsc::Sender<Result<()>> },
    TopicError { name: String, fail: bool, reply: mpsc::Sender<Result<()>> },
    BrokerUp { up: bool, reply: mpsc::Sender<Result<()>> },
    RefuseCommits { times: usize, reply: mpsc::Sender<Result<()>> },
    Stop,
}

/// A running in-process broker; stopped on drop.
///
/// The mock cluster is owned by a thread of its own, so this handle is `Send + Sync`.
pub struct EmbeddedKafka {
    bootstrap: String,
    commands: mpsc::Sender<Command>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for EmbeddedKafka {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedKafka").field("bootstrap", &self.bootstrap).finish()
    }
}

impl EmbeddedKafka {
    /// Starts a one-broker mock cluster.
    pub fn start() -> Result<Self> {
        let (commands, inbox) = mpsc::channel::<Command>();
        let (ready_tx, ready) = mpsc::channel::<Result<String>>();
        let thread = std::thread::Builder::new()
            .name("embedded-kafka".into())
            .spawn(move || {
                let cluster = match MockCluster::new(1) {
                    Ok(c) => c,
                    Err(e) => {
                        let _ = ready_tx.send(Err(Error::Embedded(e.to_string())));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok(cluster.bootstrap_servers()));
                while let Ok(cmd) = inbox.recv() {
                    match cmd {
                        Command::CreateTopic { name, partitions, reply } => {
                            let r = cluster
                                .create_topic(&name, partitions, 1)
                                .map_err(|e| Error::Embedded(format!("create topic `{name}`: {e}")));
                            let _ = reply.send(r);
                        }
                        Command::TopicError { name, fail, reply } => {
                            let code = if fail {
                                RDKafkaRespErr::RD_KAFKA_RESP_ERR_LEADER_NOT_AVAILABLE
                            } else {
                                RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR
                            };
                            let r = cluster.topic_error(&name, code).map_err(|e| Error::Embedded(e.to_string()));
                            let _ = reply.send(r);
                        }
                        Command::BrokerUp { up, reply } => {
                            let r = if up { cluster.broker_up(1) } else { cluster.broker_down(1) };
                            let _ = reply.send(r.map_err(|e| Error::Embedded(e.to_string())));
                        }
                        Command::RefuseCommits { times, reply } => {
                            let refused = vec![RDKafkaRespErr::RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED; times];
                            cluster.request_errors(RDKafkaApiKey::OffsetCommit, &refused);
                            let _ = reply.send(Ok(()));
                        }
                        Command::Stop => break,
                    }
                }
            })
            .map_err(|e| Error::Embedded(e.to_string()))?;
        let bootstrap = ready.recv().map_err(|_| Error::Embedded("broker thread died".into()))??;
        Ok(EmbeddedKafka { bootstrap, commands, thread: Some(thread) })
    }

    /// Where clients connect.
    pub fn bootstrap_servers(&self) -> &str {
        &self.bootstrap
    }

    /// Creates a topic (the mock cluster has no Admin API).
    pub fn create_topic(&self, name: &str, partitions: i32) -> Result<()> {
        crate::topics::validate_topic_name(name)?;
        self.call(|reply| Command::CreateTopic { name: name.to_owned(), partitions, reply })
    }

    fn call(&self, command: impl FnOnce(mpsc::Sender<Result<()>>) -> Command) -> Result<()> {
        let (reply, answer) = mpsc::channel();
        self.commands.send(command(reply)).map_err(|_| Error::Embedded("broker stopped".into()))?;
        answer.recv().map_err(|_| Error::Embedded("broker stopped".into()))?
    }

    /// Makes `topic` unavailable (`LEADER_NOT_AVAILABLE` in metadata answers, a transient
    /// error: producers wait and time out) while `fail` is true, to test how a program
    /// copes with a topic it cannot write for a while.
    pub fn fail_topic(&self, topic: &str, fail: bool) -> Result<()> {
        self.call(|reply| Command::TopicError { name: topic.to_owned(), fail, reply })
    }

    /// Takes the broker down (connections refused and closed, data kept) or up again, to
    /// test how a program rides out a broker restart.
    pub fn set_broker_up(&self, up: bool) -> Result<()> {
        self.call(|reply| Command::BrokerUp { up, reply })
    }

    /// Answers the next `times` offset commits with `TOPIC_AUTHORIZATION_FAILED` (an error
    /// that no retry cures), to test how a program copes with commits the broker refuses.
    pub fn refuse_commits(&self, times: usize) -> Result<()> {
        self.call(|reply| Command::RefuseCommits { times, reply })
    }

    /// Consumer settings that suit the mock cluster: fast group joins, and short fetch
    /// waits. The mock answers a waiting fetch only when `fetch.wait.max.ms` expires, not
    /// when data arrives, so a record written meanwhile is read up to that wait later: 5 ms
    /// here (the runtime's default is 50), or a retry due 10 ms after its failure is
    /// handled up to 50 ms late. An idle consumer then asks 200 times a second, which
    /// costs little in-process.
    pub fn client_config() -> [(&'static str, &'static str); 3] {
        [("session.timeout.ms", "3000"), ("heartbeat.interval.ms", "300"), ("fetch.wait.max.ms", "5")]
    }
}

impl Drop for EmbeddedKafka {
    fn drop(&mut self) {
        let _ = self.commands.send(Command::Stop);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
