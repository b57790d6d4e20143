//! Starting and driving an MTA described by a driver file.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;

use super::template::{self, Vars};
use super::{queue, DriverFile, Inject, Ready};
use crate::events::{EventKind, QueueEntry};
use crate::sut::common;
use crate::sut::lifecycle::{Instance, InstanceSpec};
use crate::sut::{faketime, OutgoingMessage, RunningSut, SutContext, SutError, SutRoute};

/// The file in the work directory that gets `start`'s standard output and error.
pub(super) const START_OUTPUT: &str = "mxlab-start.out";
/// Pause between readiness probes, and between checks whether `start` exited after `stop`.
const PROBE_INTERVAL: Duration = Duration::from_millis(50);
/// How long one step command may take.
const TOOL_TIMEOUT: Duration = Duration::from_secs(30);
/// How long `start` gets to exit after the `stop` step, and after SIGTERM before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// A running MTA described by a driver file. Dropping it kills every process of the instance
/// (prefer [`RunningDriver::stop`], which also records the last log lines).
pub struct RunningDriver {
    steps: Steps,
    instance: Instance,
}

/// What the driver file's steps run with.
struct Steps {
    driver: Arc<DriverFile>,
    vars: Vars,
    /// The rendered `[env]`.
    env: Vec<(String, String)>,
    /// libfaketime's environment on an accelerated clock: the steps share the MTA's clock.
    clock_env: Vec<(&'static str, String)>,
    work_dir: PathBuf,
}

impl RunningDriver {
    /// Checks the `check` paths, renders the `[[config]]` files into the work directory, runs
    /// `start` in the SUT namespace (own PID namespace, the lab's resolv.conf) with its output
    /// going to `mxlab-start.out` in the work directory, and waits for `ready`.
    pub async fn start(
        driver: Arc<DriverFile>,
        ctx: SutContext<'_>,
    ) -> Result<RunningDriver, SutError> {
        let begun = Instant::now();
        let sut = driver.label;
        driver.check_installed()?;
        common::make_traversable(sut, ctx.work_dir)?;
        if *ctx.route != SutRoute::default() && !driver.uses_route() {
            ctx.log.record(EventKind::Harness {
                message: format!(
                    "{sut} uses no {{{{route.…}}}} placeholder: it runs without the scenario's \
                     [route] (relay, family restriction, source addresses)"
                ),
            });
        }
        let listen = common::listen_address_for(driver.listen_family);
        let vars = Vars {
            hostname: ctx.hostname.to_string(),
            work_dir: ctx.work_dir.display().to_string(),
            listen: listen.to_string(),
            listen_address: listen.ip().to_string(),
            listen_port: listen.port().to_string(),
            resolv_conf: ctx.resolv_conf.display().to_string(),
            ca_file: ctx
                .ca_file
                .map(|path| path.display().to_string())
                .unwrap_or_default(),
            route: template::RouteVars::of(ctx.route),
            settings: ctx.settings.clone(),
            message: None,
        };
        let env = render_env(sut, &driver.env, &vars)?;
        for file in &driver.config {
            let target = ctx.work_dir.join(&file.path);
            let mut text = template::render(&file.template, &vars).map_err(|reason| {
                SutError::bad_setting(sut, format!("config {:?}", file.path), reason)
            })?;
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent).map_err(|e| {
                    common::io_error(sut, &format!("create {}", parent.display()), e)
                })?;
            }
            if let Some(filter) = &file.filter {
                let argv = render_argv(
                    sut,
                    &format!("config {:?} filter", file.path),
                    filter,
                    &vars,
                )?;
                text = run_filter(sut, &argv, text, ctx.work_dir, &env).await?;
            }
            std::fs::write(&target, text)
                .map_err(|e| common::io_error(sut, &format!("write {}", target.display()), e))?;
        }
        let argv = render_argv(sut, "start", &driver.start, &vars)?;
        let output = ctx.work_dir.join(START_OUTPUT);
        let mut command = std::process::Command::new(&argv[0]);
        command
            .args(&argv[1..])
            .current_dir(ctx.work_dir)
            .envs(env.iter().map(|(k, v)| (k, v)));
        let mut logs = vec![output.clone()];
        if let Some(log) = &driver.log {
            logs.push(ctx.work_dir.join(log));
        }
        let spec = InstanceSpec {
            sut,
            command,
            command_line: argv.join(" "),
            output,
            output_label: "start",
            logs,
            quoted: Vec::new(),
            listen,
            bind_mounts: Vec::new(),
            ready_timeout: driver.ready_timeout,
            stop_grace: STOP_GRACE,
            begun,
        };
        let instance = Instance::spawn(&ctx, spec)?;
        let mut running = RunningDriver {
            steps: Steps {
                driver,
                vars,
                env,
                clock_env: faketime::environment(ctx.timing.clock),
                work_dir: ctx.work_dir.to_path_buf(),
            },
            instance,
        };
        if let Err(e) = running.wait_ready().await {
            let _ = Box::new(running).stop().await;
            return Err(e);
        }
        Ok(running)
    }

    /// Waits until `ready` succeeds, `start` exits, or `ready_timeout` has passed.
    async fn wait_ready(&mut self) -> Result<(), SutError> {
        let RunningDriver { steps, instance } = self;
        let sut = steps.driver.label;
        match &steps.driver.ready {
            Ready::Smtp(template) => {
                let text = template::render(template, &steps.vars)
                    .map_err(|reason| SutError::bad_setting(sut, "ready", reason))?;
                let address: SocketAddr = text.parse().map_err(|_| {
                    SutError::bad_setting(
                        sut,
                        "ready",
                        format!("{text:?} is not an address like \"127.0.0.1:2525\""),
                    )
                })?;
                instance
                    .wait_ready(&text, PROBE_INTERVAL, async |instance: &Instance| {
                        common::probe_greeting(instance.ns().net(), address).await
                    })
                    .await
            }
            Ready::Command(argv) => {
                let what = render_argv(sut, "ready", argv, &steps.vars)?.join(" ");
                instance
                    .wait_ready(&what, PROBE_INTERVAL, async |instance: &Instance| {
                        steps
                            .run_step(instance.ns(), "ready", argv)
                            .await
                            .map(drop)
                            .map_err(|e| e.to_string())
                    })
                    .await
            }
        }
    }

    /// Renders and runs a step in the instance's namespaces; returns its standard output.
    async fn run_step(&self, step: &str, argv: &[String]) -> Result<String, SutError> {
        self.steps.run_step(self.instance.ns(), step, argv).await
    }
}

impl Steps {
    /// A step's command, ready to run inside the instance's network, mount and UTS
    /// namespaces `ns`, on the MTA's clock, with the driver's `[env]`; what it starts lands in
    /// the instance's PID namespace, so stopping the instance ends it (a backgrounded queue run
    /// included).
    fn command(&self, ns: &netns::ProcessNamespaces, argv: &[String]) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(&argv[0]);
        command
            .args(&argv[1..])
            .current_dir(&self.work_dir)
            .envs(self.clock_env.iter().cloned())
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        ns.enter_before_exec(command.as_std_mut(), true);
        command
    }

    /// Renders and runs a step; returns its standard output.
    async fn run_step(
        &self,
        ns: &netns::ProcessNamespaces,
        step: &str,
        argv: &[String],
    ) -> Result<String, SutError> {
        let sut = self.driver.label;
        let argv = render_argv(sut, step, argv, &self.vars)?;
        common::run_tool(sut, self.command(ns, &argv), argv.join(" "), TOOL_TIMEOUT).await
    }

    /// Runs `argv` with `input` on its standard input; its trimmed standard output (or a note
    /// that it printed nothing) on success.
    async fn pipe_into(
        &self,
        ns: &netns::ProcessNamespaces,
        argv: &[String],
        input: Vec<u8>,
    ) -> Result<String, String> {
        let line = argv.join(" ");
        let mut command = self.command(ns, argv);
        command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = command
            .spawn()
            .map_err(|e| format!("cannot run `{line}`: {e}"))?;
        let mut stdin = child.stdin.take().expect("stdin is piped");
        let writer = tokio::spawn(async move {
            let written = stdin.write_all(&input).await;
            drop(stdin);
            written
        });
        let output = tokio::time::timeout(TOOL_TIMEOUT, child.wait_with_output())
            .await
            .map_err(|_| format!("`{line}` did not exit within {} s", TOOL_TIMEOUT.as_secs()))?
            .map_err(|e| format!("`{line}`: {e}"))?;
        let _ = writer.await;
        let stdout = String::from_utf8_lossy(&output.stdout).trim().to_string();
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            return Err(format!(
                "`{line}` failed ({}): {}{stdout}",
                output.status,
                stderr.trim()
            ));
        }
        Ok(if stdout.is_empty() {
            format!("`{}` exited 0", argv[0])
        } else {
            stdout
        })
    }
}

#[async_trait::async_trait]
impl RunningSut for RunningDriver {
    /// Hands `message` to the MTA: SMTP to the listen address, or the `inject` command with
    /// the message on standard input (its trimmed standard output is the reply). Records
    /// [`EventKind::MessageInjected`].
    async fn inject(&self, message: &OutgoingMessage) -> Result<String, SutError> {
        let steps = &self.steps;
        let sut = steps.driver.label;
        match &steps.driver.inject {
            Inject::Smtp => self.instance.inject(message).await,
            Inject::Command(argv) => {
                let mut vars = steps.vars.clone();
                vars.message = Some((message.from.clone(), message.to.clone()));
                let argv = render_argv(sut, "inject", argv, &vars)?;
                let content = String::from_utf8_lossy(&message.content).replace("\r\n", "\n");
                let reply = steps
                    .pipe_into(self.instance.ns(), &argv, content.into_bytes())
                    .await
                    .map_err(|detail| common::inject_error(sut, message, detail))?;
                common::record_injection(self.instance.log(), message, &reply);
                Ok(reply)
            }
        }
    }

    /// Runs the `kick` step; does nothing if the driver has none.
    async fn kick(&self) -> Result<(), SutError> {
        match &self.steps.driver.kick {
            Some(argv) => self.run_step("kick", argv).await.map(drop),
            None => Ok(()),
        }
    }

    /// Runs the `queue` step and parses its output (see the [module docs](super)); without a
    /// `queue` step the queue is reported empty. Records [`EventKind::SutQueue`].
    async fn queue(&self) -> Result<Vec<QueueEntry>, SutError> {
        let entries = match &self.steps.driver.queue {
            Some(argv) => queue::parse(&self.run_step("queue", argv).await?),
            None => Vec::new(),
        };
        Ok(self.instance.record_queue(entries))
    }

    /// Runs the `stop` step if there is one and gives `start` up to 5 s to exit; then ends the
    /// instance's PID namespace (SIGTERM, SIGKILL after 5 s) and records the log lines not yet
    /// recorded. A failing `stop` step is reported after everything was stopped.
    async fn stop(self: Box<Self>) -> Result<(), SutError> {
        let step = match &self.steps.driver.stop {
            Some(argv) => Some(self.run_step("stop", argv).await.map(drop)),
            None => None,
        };
        let mut instance = self.instance;
        if matches!(step, Some(Ok(()))) {
            instance.wait_for_exit(STOP_GRACE, PROBE_INTERVAL).await;
        }
        let stopped = instance.stop().await;
        step.unwrap_or(Ok(())).and(stopped)
    }

    fn pid_namespace(&self) -> Option<std::path::PathBuf> {
        self.instance.pid_namespace()
    }
}

/// Pipes `input` through the filter command `argv` (in `work_dir`, with `env`) and returns its
/// standard output; a non-zero exit is an error quoting its standard error.
async fn run_filter(
    sut: &'static str,
    argv: &[String],
    input: String,
    work_dir: &std::path::Path,
    env: &[(String, String)],
) -> Result<String, SutError> {
    let line = argv.join(" ");
    let failed = |status: String, output: String| SutError::Command {
        sut,
        command: line.clone(),
        status,
        output,
    };
    let mut child = tokio::process::Command::new(&argv[0])
        .args(&argv[1..])
        .current_dir(work_dir)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| failed(format!("cannot run: {e}"), String::new()))?;
    let mut stdin = child.stdin.take().expect("stdin is piped");
    let writer = tokio::spawn(async move {
        let written = stdin.write_all(input.as_bytes()).await;
        drop(stdin);
        written
    });
    let output = tokio::time::timeout(TOOL_TIMEOUT, child.wait_with_output())
        .await
        .map_err(|_| {
            failed(
                format!("no exit within {} s", TOOL_TIMEOUT.as_secs()),
                String::new(),
            )
        })?
        .map_err(|e| failed(format!("cannot run: {e}"), String::new()))?;
    let _ = writer.await;
    if !output.status.success() {
        return Err(failed(
            output.status.to_string(),
            String::from_utf8_lossy(&output.stderr).trim().to_string(),
        ));
    }
    String::from_utf8(output.stdout)
        .map_err(|_| failed("exit 0".into(), "its output is not UTF-8".into()))
}

/// Renders the driver's `[env]`.
fn render_env(
    sut: &'static str,
    env: &[(String, String)],
    vars: &Vars,
) -> Result<Vec<(String, String)>, SutError> {
    env.iter()
        .map(|(key, value)| {
            template::render(value, vars)
                .map(|rendered| (key.clone(), rendered))
                .map_err(|reason| SutError::bad_setting(sut, format!("env {key}"), reason))
        })
        .collect()
}

/// Renders a step's command.
fn render_argv(
    sut: &'static str,
    step: &str,
    argv: &[String],
    vars: &Vars,
) -> Result<Vec<String>, SutError> {
    template::render_argv(argv, vars).map_err(|reason| SutError::bad_setting(sut, step, reason))
}
