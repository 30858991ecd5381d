//! `retryable-topic topics plan|create`: the retry and DLT topics a listener needs, and
//! the creation of the missing ones through the runtime's own code.

use std::time::Duration;

use clap::Subcommand;
use comfy_table::Table;

use retry_core::admin::{self, TopicPlan};
use retry_core::{handler, HandlerError, KafkaConfig, Listener, Record, TopicSpec};

use super::PolicyArgs;

#[derive(Debug, Subcommand)]
pub(super) enum TopicsCommand {
    /// The retry and DLT topics a listener with this policy needs, whether each exists,
    /// and partition counts.
    Plan {
        #[command(flatten)]
        policy: PolicyArgs,
    },
    /// Creates the missing retry and DLT topics (never alters an existing topic).
    Create {
        #[command(flatten)]
        policy: PolicyArgs,
        /// Partitions of created topics (default: the source's).
        #[arg(long)]
        partitions: Option<i32>,
        /// Replication of created topics (default: the broker's).
        #[arg(long)]
        replication: Option<i32>,
    },
}

/// A listener with the policy of `args` (its handler is never called).
fn listener(args: &PolicyArgs) -> retry_core::Result<Listener> {
    Listener::builder(format!("{} (planned)", args.group))
        .topics(args.topics.iter().cloned())
        .group(&args.group)
        .policy(args.policy()?)
        .handler(handler::record(|_: Record| async { Ok::<(), HandlerError>(()) }))
        .build()
}

fn table(plan: &[TopicPlan]) -> Table {
    let mut t = Table::new();
    t.load_preset(comfy_table::presets::UTF8_FULL_CONDENSED);
    t.set_header(["topic", "role", "source", "exists", "partitions"]);
    for p in plan {
        let partitions = match (p.partitions, p.create) {
            (Some(n), _) => n.to_string(),
            (None, Some((n, _))) => format!("{n} (to create)"),
            (None, None) => "?".into(),
        };
        t.add_row([p.topic.as_str(), &p.role, &p.source, if p.exists() { "yes" } else { "no" }, &partitions]);
    }
    t
}

pub(super) async fn run(command: &TopicsCommand, config: &KafkaConfig, timeout: Duration) -> retry_core::Result<()> {
    match command {
        TopicsCommand::Plan { policy } => {
            let plan = admin::plan(config, &listener(policy)?, TopicSpec::default(), timeout)?;
            println!("{}", table(&plan));
            let missing = plan.iter().filter(|p| !p.exists()).count();
            println!("{missing} of {} topics missing", plan.len());
        }
        TopicsCommand::Create { policy, partitions, replication } => {
            let spec = TopicSpec { partitions: *partitions, replication: *replication };
            retry_core::RetryPolicy::builder().auto_create_topics(spec).build()?;
            let plan = admin::plan(config, &listener(policy)?, spec, timeout)?;
            let created = admin::create_missing(config, &plan, timeout).await?;
            for t in &created {
                println!("created {t}");
            }
            println!("{} created, {} already there", created.len(), plan.len() - created.len());
        }
    }
    Ok(())
}
