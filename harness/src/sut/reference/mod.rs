//! The built-in reference sender: a small, correct RFC 5321 §5 delivery client that runs
//! in-process as a system under test, with switches that plant known bugs.
//!
//! `mxlab run --sut reference` needs nothing installed but the harness. `reference:BUG` (see
//! [`Bug`]) makes it wrong in one known way, which proves that the scenarios catch that bug.
//!
//! How it works: [`Reference::start`] starts one OS thread *inside the SUT's network
//! namespace* running a single-threaded tokio runtime ([`netns::RuntimeThread`]). Every task of the sender
//! (delivery, DNS, retries, bounces) runs on that runtime, so every socket it makes lands in
//! the SUT namespace; `netio::NetIo` also asks the kernel for each socket's namespace before
//! using it and refuses any other. Stopping the sender shuts that runtime down, which cancels
//! every task and closes every socket, and joins the thread.
//!
//! Behaviour: [`inject`](RunningReference::inject) queues the message (`250 2.0.0 queued as
//! N`) and starts delivering it at once. Per recipient domain: MX lookup (preference order,
//! equal preferences shuffled; no MX → the domain's own addresses; null MX → bounce), then for
//! each MX host its AAAA and A addresses, the preferred family first (setting
//! `address_preference`, default IPv6). Per address: connect (timeout `connect_timeout`,
//! default 3 s), then greeting, EHLO (HELO after a 5xx), MAIL, RCPT, DATA, QUIT, each reply
//! within `reply_timeout` (default 10 s). A connection failure, a timeout, a 4xx or 5xx
//! greeting, or a 4xx to EHLO or MAIL moves on to the next address; a 4xx to RCPT or DATA
//! defers; a 5xx to MAIL, RCPT or DATA bounces. When every address failed, the recipients are
//! deferred and retried after 1 s, 2 s, then every 4 s, or at once when
//! [`kick`](RunningReference::kick)ed. A bounce is an RFC 3464 report from MAILER-DAEMON with
//! the null sender to the original sender, delivered the same way (to `sender.test`'s MX).
//! Every step is logged as a `reference: …` [`EventKind::SutLog`] line.

mod delivery;
mod dns;
mod dsn;
mod netio;
mod route;
mod session;
mod settings;

use std::collections::BTreeMap;
use std::fmt::Display;
use std::hash::{BuildHasher, Hasher};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use tokio::sync::watch;

use crate::events::{EventKind, EventLog, QueueEntry};
use crate::sut::{OutgoingMessage, RunningSut, SutContext, SutError};

pub use crate::bugs::{bug_names, Bug, Bugs, UnknownBug};
pub use netio::NetnsId;
pub use settings::Settings;

use delivery::{Deliverer, Outcome};
use dsn::Failed;
use netio::NetIo;
use session::Envelope;

/// The name used in messages.
pub(crate) const SUT: &str = "reference";

/// Starts the reference sender; see [`Reference::start`].
pub struct Reference;

impl Reference {
    /// Reads the settings and the lab's `resolv.conf`, starts the sender's thread inside the
    /// SUT namespace and returns once it is ready for mail (a few milliseconds).
    pub async fn start(ctx: SutContext<'_>, bugs: Bugs) -> Result<RunningReference, SutError> {
        let world_settings =
            Settings::with_defaults(Settings::defaults(ctx.timing.timeouts), ctx.settings)?;
        // Every timer of the sender counts world time: on an accelerated clock it waits the
        // world time divided by the rate, as an MTA under libfaketime does.
        let clock = ctx.timing.clock;
        let settings = world_settings.on_clock(clock);
        let resolv_conf =
            std::fs::read_to_string(ctx.resolv_conf).map_err(|source| SutError::Io {
                sut: SUT,
                action: format!("read {}", ctx.resolv_conf.display()),
                source,
            })?;
        let namespace_error = |action: &str, detail: String| SutError::Namespace {
            sut: SUT,
            action: action.to_string(),
            detail,
        };
        let netns = NetnsId::of_namespace_fd(ctx.namespace.fd())
            .map_err(|e| namespace_error("identify the SUT namespace", e.to_string()))?;
        let net = NetIo::new(netns);
        let runtime =
            netns::RuntimeThread::start(&format!("mxlab-{SUT}"), Some(ctx.namespace.fd()))
                .map_err(|e| namespace_error("start the sender's thread", e.to_string()))?;
        let log = ctx.log;
        let logger = Logger::new(log.clone(), String::new());
        logger.line(format!(
            "started{} in the SUT namespace as {}; {} first, connect timeout {}, reply \
             timeout {}",
            if bugs.is_empty() {
                String::new()
            } else {
                format!(
                    " with bugs {}",
                    bugs.iter().map(Bug::name).collect::<Vec<_>>().join("+")
                )
            },
            ctx.hostname,
            world_settings.address_preference,
            netio::seconds(world_settings.connect_timeout),
            netio::seconds(world_settings.reply_timeout),
        ));
        let engine = Arc::new(Engine {
            deliverer: Deliverer {
                resolver: dns::Resolver::new(
                    dns::ResolvConf::parse(&resolv_conf).on_clock(clock),
                    net,
                ),
                net,
                settings,
                bugs,
                hostname: ctx.hostname.to_string(),
                route: ctx.route.clone(),
                tls: match ctx.ca_file {
                    Some(path) => {
                        Some(session::tls_config(path).map_err(|detail| SutError::Io {
                            sut: SUT,
                            action: format!("read the CA file {}", path.display()),
                            source: std::io::Error::other(detail),
                        })?)
                    }
                    None => None,
                },
            },
            log: log.clone(),
            queue: Mutex::new(Queue::default()),
            kicks: watch::Sender::new(0),
        });
        Ok(RunningReference {
            engine,
            runtime,
            log,
        })
    }
}

/// A running reference sender. Dropping it stops the sender (prefer
/// [`RunningReference::stop`], which also logs what was left in the queue).
pub struct RunningReference {
    engine: Arc<Engine>,
    /// The thread in the SUT namespace every task of the sender runs on.
    runtime: netns::RuntimeThread,
    log: EventLog,
}

impl RunningReference {
    /// The namespace every socket of this sender belongs to.
    pub fn netns(&self) -> NetnsId {
        self.engine.deliverer.net.netns()
    }

    /// Queues `message`, starts delivering it and returns `250 2.0.0 queued as N`. Records
    /// [`EventKind::MessageInjected`].
    pub fn inject(&self, message: &OutgoingMessage) -> String {
        let (id, reply) = self.engine.enqueue(message.clone());
        self.log.record(EventKind::MessageInjected {
            from: message.from.clone(),
            to: message.to.clone(),
            reply: reply.clone(),
        });
        self.runtime.handle().spawn(self.engine.clone().run(id));
        reply
    }

    /// Retries every deferred message now.
    pub fn kick(&self) {
        Logger::new(self.log.clone(), String::new()).line("kicked: retrying deferred mail now");
        self.engine.kicks.send_modify(|generation| *generation += 1);
    }

    /// The messages still queued, with their pending recipients and last error. Records
    /// [`EventKind::SutQueue`].
    pub fn queue(&self) -> Vec<QueueEntry> {
        let entries = self.engine.queue_entries();
        self.log.record(EventKind::SutQueue {
            entries: entries.clone(),
        });
        entries
    }

    /// Stops every task, closes every socket and ends the sender's thread.
    pub async fn stop(self) {
        let left = self.engine.queue_entries().len();
        self.runtime.stop().await;
        Logger::new(self.log.clone(), String::new()).line(format!(
            "stopped with {left} message{} in the queue",
            if left == 1 { "" } else { "s" }
        ));
    }
}

#[async_trait::async_trait]
impl RunningSut for RunningReference {
    async fn inject(&self, message: &OutgoingMessage) -> Result<String, SutError> {
        Ok(RunningReference::inject(self, message))
    }

    async fn kick(&self) -> Result<(), SutError> {
        RunningReference::kick(self);
        Ok(())
    }

    async fn queue(&self) -> Result<Vec<QueueEntry>, SutError> {
        Ok(RunningReference::queue(self))
    }

    async fn stop(self: Box<Self>) -> Result<(), SutError> {
        RunningReference::stop(*self).await;
        Ok(())
    }
}

/// Writes `reference: …` lines into the event log.
#[derive(Clone)]
pub(crate) struct Logger {
    log: EventLog,
    prefix: String,
}

impl Logger {
    fn new(log: EventLog, prefix: String) -> Logger {
        Logger { log, prefix }
    }

    /// Records one line.
    pub(crate) fn line(&self, text: impl Display) {
        self.log.record(EventKind::SutLog {
            line: format!("{SUT}: {}{text}", self.prefix),
        });
    }
}

/// A queued message.
struct Entry {
    message: Arc<OutgoingMessage>,
    /// Recipients not yet delivered or bounced.
    pending: Vec<String>,
    /// Why the last attempt did not deliver them.
    last_error: Option<String>,
    arrival: SystemTime,
}

#[derive(Default)]
struct Queue {
    last_id: u64,
    entries: BTreeMap<u64, Entry>,
}

/// The sender's shared state.
struct Engine {
    deliverer: Deliverer,
    log: EventLog,
    queue: Mutex<Queue>,
    /// Bumped by every kick; deferred messages wait for a change or their retry delay.
    kicks: watch::Sender<u64>,
}

impl Engine {
    fn queue(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Stores `message`; returns its id and the reply to the end of DATA.
    fn enqueue(&self, message: OutgoingMessage) -> (u64, String) {
        let mut queue = self.queue();
        queue.last_id += 1;
        let id = queue.last_id;
        let pending = message.to.clone();
        queue.entries.insert(
            id,
            Entry {
                message: Arc::new(message),
                pending,
                last_error: None,
                arrival: SystemTime::now(),
            },
        );
        (id, format!("250 2.0.0 queued as {id}"))
    }

    fn queue_entries(&self) -> Vec<QueueEntry> {
        self.queue()
            .entries
            .iter()
            .map(|(id, entry)| QueueEntry {
                id: id.to_string(),
                recipients: entry.pending.clone(),
                reason: Some(
                    entry
                        .last_error
                        .clone()
                        .unwrap_or_else(|| "delivery in progress".into()),
                ),
            })
            .collect()
    }

    /// Delivers message `id` until every recipient is delivered or bounced, retrying deferred
    /// recipients on the retry schedule or when kicked. Runs on the sender's runtime.
    async fn run(self: Arc<Self>, id: u64) {
        let log = Logger::new(self.log.clone(), format!("{id}: "));
        let mut kicks = self.kicks.subscribe();
        let Some((message, arrival)) = self
            .queue()
            .entries
            .get(&id)
            .map(|entry| (entry.message.clone(), entry.arrival))
        else {
            return;
        };
        log.line(format!(
            "queued <{}> -> {} ({} bytes)",
            message.from,
            message
                .to
                .iter()
                .map(|rcpt| format!("<{rcpt}>"))
                .collect::<Vec<_>>()
                .join(", "),
            message.content.len()
        ));
        for attempt in 0usize.. {
            kicks.borrow_and_update();
            let pending = match self.queue().entries.get(&id) {
                Some(entry) => entry.pending.clone(),
                None => return,
            };
            let results = self.attempt(&message, &pending, &log).await;
            let mut bounced: Vec<Failed> = Vec::new();
            let mut deferred: Vec<(String, String)> = Vec::new();
            for (rcpt, outcome) in results {
                match outcome {
                    Outcome::Delivered(_) => {}
                    Outcome::Bounced(failed) => bounced.push(failed),
                    Outcome::Deferred(why) => deferred.push((rcpt, why)),
                }
            }
            let reasons: Vec<String> = deferred
                .iter()
                .map(|(rcpt, why)| format!("<{rcpt}>: {why}"))
                .collect();
            let done = {
                let mut queue = self.queue();
                let Some(entry) = queue.entries.get_mut(&id) else {
                    return;
                };
                entry
                    .pending
                    .retain(|rcpt| deferred.iter().any(|(r, _)| r == rcpt));
                if !reasons.is_empty() {
                    entry.last_error = Some(reasons.join("; "));
                }
                let done = entry.pending.is_empty();
                if done {
                    queue.entries.remove(&id);
                }
                done
            };
            if !bounced.is_empty() {
                self.bounce(&message, arrival, &bounced, &log);
            }
            if done {
                log.line("removed from the queue");
                return;
            }
            let delays = &self.deliverer.settings.retry_delays;
            let delay = delays[attempt.min(delays.len() - 1)];
            for why in &reasons {
                log.line(format!("deferred {why}"));
            }
            if kicks.has_changed().unwrap_or(false) {
                log.line("kicked during the attempt: retrying now");
                continue;
            }
            log.line(format!("next attempt in {}", netio::seconds(delay)));
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                _ = kicks.changed() => log.line("kicked: retrying now"),
            }
        }
    }

    /// One delivery attempt for `pending`, domain by domain.
    async fn attempt(
        &self,
        message: &OutgoingMessage,
        pending: &[String],
        log: &Logger,
    ) -> Vec<(String, Outcome)> {
        let mut by_domain: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut results = Vec::new();
        for rcpt in pending {
            match rcpt.rsplit_once('@') {
                Some((_, domain)) if !domain.is_empty() => by_domain
                    .entry(domain.to_ascii_lowercase())
                    .or_default()
                    .push(rcpt.clone()),
                _ => results.push((
                    rcpt.clone(),
                    Outcome::Bounced(Failed::local(
                        rcpt,
                        "5.1.3",
                        "the recipient address has no domain",
                    )),
                )),
            }
        }
        for (domain, recipients) in by_domain {
            let envelope = Envelope {
                from: &message.from,
                recipients: &recipients,
                content: &message.content,
            };
            results.extend(self.deliverer.deliver_domain(&domain, envelope, log).await);
        }
        results
    }

    /// Queues a DSN for `failed` to the sender of `message` (none for a bounce).
    fn bounce(
        self: &Arc<Self>,
        message: &OutgoingMessage,
        arrival: SystemTime,
        failed: &[Failed],
        log: &Logger,
    ) {
        let recipients = failed
            .iter()
            .map(|f| format!("<{}>", f.recipient))
            .collect::<Vec<_>>()
            .join(", ");
        if message.from.is_empty() {
            log.line(format!(
                "discarding this undeliverable bounce (to {recipients}): a bounce is never bounced"
            ));
            return;
        }
        let dsn = dsn::bounce(
            message,
            failed,
            &self.deliverer.hostname,
            arrival,
            SystemTime::now(),
            random_u64(),
        );
        let (dsn_id, _) = self.enqueue(dsn);
        log.line(format!(
            "bounced {recipients}; the DSN to <{}> is queued as {dsn_id}",
            message.from
        ));
        tokio::spawn(self.clone().run(dsn_id));
    }
}

/// 64 random bits (from the standard library's randomly keyed hasher).
pub(crate) fn random_u64() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_numbers_differ() {
        let draws: std::collections::BTreeSet<u64> = (0..100).map(|_| random_u64()).collect();
        assert_eq!(draws.len(), 100);
    }
}
