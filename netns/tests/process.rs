//! Process tests: PID namespaces, private resolv.conf, missing programs, cleanup.
//! They need root; without it each is listed as ignored with the reason (and fails under
//! `MXLAB_REQUIRE_ALL=1`, set by `.ci/run`).

mod common;

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{alive, descendants, ns_inode, pid_ns_inode};
use netns::{Namespace, SpawnOptions};

fn namespace(tag: &str) -> Namespace {
    Namespace::create(&common::prefix(tag)).unwrap()
}

/// Waits until `pid` has at least `n` descendants.
fn wait_for_descendants(pid: u32, n: usize) -> Vec<u32> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let found = descendants(pid);
        if found.len() >= n {
            return found;
        }
        assert!(
            Instant::now() < deadline,
            "pid {pid} has descendants {found:?}, wanted {n}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Waits until at least `n` descendants of `pid` run `comm` (have exec'd it); returns all
/// descendants.
fn wait_for_running(pid: u32, comm: &str, n: usize) -> Vec<u32> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let found = descendants(pid);
        let running = found
            .iter()
            .filter(|p| {
                std::fs::read_to_string(format!("/proc/{p}/comm"))
                    .is_ok_and(|c| c.trim_end() == comm)
            })
            .count();
        if running >= n {
            return found;
        }
        assert!(
            Instant::now() < deadline,
            "pid {pid} has descendants {found:?}, wanted {n} running {comm}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

async fn own_pid_namespace_stop_kills_grandchildren() {
    let ns = namespace("pidns");
    let mut command = Command::new("sh");
    command.args(["-c", "sleep 100 & sleep 100"]);
    let mut process = netns::spawn(
        &ns,
        command,
        SpawnOptions {
            own_pid_namespace: true,
            ..SpawnOptions::default()
        },
    )
    .unwrap();
    // waiter → init (PID 1) → sh (PID 2) → sleep (+ sleep, unless sh exec'd the last one)
    let tree = wait_for_descendants(process.pid(), 3);
    let nspid = |pid: u32| {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        status
            .lines()
            .find(|l| l.starts_with("NSpid:"))
            .unwrap()
            .to_owned()
    };
    let init = tree[0];
    assert!(
        nspid(init).ends_with("\t1"),
        "init is PID 1: {}",
        nspid(init)
    );
    assert!(
        nspid(tree[1]).ends_with("\t2"),
        "the command is PID 2 of its namespace: {}",
        nspid(tree[1])
    );
    assert_eq!(
        std::fs::read_to_string(format!("/proc/{}/comm", tree[1])).unwrap(),
        "sh\n"
    );
    assert_eq!(
        pid_ns_inode(init),
        ns_inode(&ns),
        "the command runs in our network namespace"
    );
    let grandchild = *tree.last().unwrap();
    assert_eq!(pid_ns_inode(grandchild), ns_inode(&ns));
    assert_eq!(process.try_exit_status().unwrap(), None);

    let t0 = Instant::now();
    process.stop(Duration::from_millis(200)).await.unwrap();
    let stopped = t0.elapsed();
    eprintln!("stop of sh (PID 2) with 200 ms grace took {stopped:?}; tree was {tree:?}");
    for pid in [process.pid()].iter().chain(&tree) {
        assert!(!alive(*pid), "pid {pid} survived stop()");
    }
    let status = process.try_exit_status().unwrap().expect("reaped");
    assert!(!status.success());
    // stop() again is a no-op.
    process.stop(Duration::from_millis(10)).await.unwrap();
}

async fn stop_is_graceful_when_the_command_handles_sigterm() {
    let ns = namespace("term");
    for own_pid_namespace in [false, true] {
        let mut command = Command::new("sh");
        // `wait` is interruptible, so the trap runs at once.
        command.args(["-c", "trap 'exit 7' TERM; sleep 100 & wait"]);
        let mut process = netns::spawn(
            &ns,
            command,
            SpawnOptions {
                own_pid_namespace,
                ..SpawnOptions::default()
            },
        )
        .unwrap();
        // The trap is set once sleep runs (waiter → init → sh → sleep). With a PID namespace the
        // SIGTERM reaches sleep too, so it must have exec'd: a fork of sh that has not yet would
        // run the trap instead of dying, and stop() would wait for it.
        wait_for_running(process.pid(), "sleep", 1);
        let t0 = Instant::now();
        process.stop(Duration::from_secs(5)).await.unwrap();
        let took = t0.elapsed();
        let status = process.try_exit_status().unwrap().unwrap();
        eprintln!("graceful stop (own_pid_namespace={own_pid_namespace}) took {took:?}: {status}");
        assert!(took < Duration::from_secs(2), "{took:?}");
        assert_eq!(status.code(), Some(7), "the TERM trap ran: {status}");
    }
}

fn bind_mounts_apply_in_order_and_only_to_the_child() {
    let ns = namespace("bind");
    let first = tempfile::tempdir().unwrap();
    let second = tempfile::tempdir().unwrap();
    let target = tempfile::tempdir().unwrap();
    std::fs::write(first.path().join("which"), "first\n").unwrap();
    std::fs::write(second.path().join("which"), "second\n").unwrap();
    let mut command = Command::new("cat");
    command
        .arg(target.path().join("which"))
        .stdout(Stdio::piped());
    let mut process = netns::spawn(
        &ns,
        command,
        SpawnOptions {
            own_pid_namespace: true,
            // The later mount covers the earlier one.
            bind_mounts: vec![
                (first.path().to_path_buf(), target.path().to_path_buf()),
                (second.path().to_path_buf(), target.path().to_path_buf()),
            ],
            ..SpawnOptions::default()
        },
    )
    .unwrap();
    let mut seen = String::new();
    process
        .take_stdout()
        .unwrap()
        .read_to_string(&mut seen)
        .unwrap();
    assert_eq!(seen, "second\n");
    assert!(
        !target.path().join("which").exists(),
        "the mount stays in the child's mount namespace"
    );
    let err = netns::spawn(
        &ns,
        Command::new("true"),
        SpawnOptions {
            bind_mounts: vec![("/nonexistent/mxlab-src".into(), target.path().to_path_buf())],
            ..SpawnOptions::default()
        },
    )
    .unwrap_err();
    assert!(err.to_string().contains("/nonexistent/mxlab-src"), "{err}");
}

fn resolv_conf_is_private_to_the_child() {
    let ns = namespace("resolv");
    let ours = format!(
        "# mxlab test {}\nnameserver 192.0.2.53\noptions attempts:1 timeout:2\n",
        std::process::id()
    );
    // A temp dir removes the file even if an assertion below fails.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("resolv.conf");
    std::fs::write(&path, &ours).unwrap();
    let host_before = std::fs::read("/etc/resolv.conf").unwrap();

    for own_pid_namespace in [false, true] {
        let mut command = Command::new("sh");
        command
            .args(["-c", "cat /etc/resolv.conf; echo \"env=$MXLAB_TEST_VAR\""])
            .env("MXLAB_TEST_VAR", "kept")
            .stdout(Stdio::piped());
        let mut process = netns::spawn(
            &ns,
            command,
            SpawnOptions {
                resolv_conf: Some(path.clone()),
                own_pid_namespace,
                ..SpawnOptions::default()
            },
        )
        .unwrap();
        let mut seen = String::new();
        process
            .take_stdout()
            .unwrap()
            .read_to_string(&mut seen)
            .unwrap();
        assert_eq!(
            seen,
            format!("{ours}env=kept\n"),
            "own_pid_namespace={own_pid_namespace}"
        );
        // The host's file is untouched, both while the child lives and after.
        assert_eq!(std::fs::read("/etc/resolv.conf").unwrap(), host_before);
    }
    assert_eq!(std::fs::read("/etc/resolv.conf").unwrap(), host_before);

    let err = netns::spawn(
        &ns,
        Command::new("true"),
        SpawnOptions {
            resolv_conf: Some("/nonexistent/mxlab-resolv.conf".into()),
            own_pid_namespace: false,
            ..Default::default()
        },
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("/nonexistent/mxlab-resolv.conf"),
        "{err}"
    );
}

fn missing_program_gives_a_clear_error() {
    let ns = namespace("missing");
    for own_pid_namespace in [false, true] {
        let err = netns::spawn(
            &ns,
            Command::new("mxlab-no-such-program"),
            SpawnOptions {
                own_pid_namespace,
                ..SpawnOptions::default()
            },
        )
        .unwrap_err();
        let text = err.to_string();
        eprintln!("spawn error: {text}");
        assert!(
            matches!(err, netns::Error::ProgramNotFound { .. }),
            "{err:?}"
        );
        assert!(
            text.contains("mxlab-no-such-program") && text.contains("install"),
            "{text}"
        );
    }
    let err = netns::output(&ns, Command::new("/nonexistent/mxlab-tool")).unwrap_err();
    eprintln!("output error: {err}");
    assert!(err.to_string().contains("/nonexistent/mxlab-tool"), "{err}");
}

fn output_runs_inside_the_namespace_with_loopback_up() {
    let ns = namespace("output");
    let mut command = Command::new("ip");
    command.args(["-o", "addr"]);
    let out = netns::output(&ns, command).unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("lo    inet 127.0.0.1/8"), "{text}");
    assert_eq!(text.lines().count(), 2, "only loopback: {text}");
    // Loopback really works: a TCP connection to 127.0.0.1 inside the namespace.
    ns.run(|| {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    })
    .unwrap();
}

fn dropping_a_process_kills_and_reaps_it() {
    let ns = namespace("drop");
    for own_pid_namespace in [false, true] {
        let mut command = Command::new("sleep");
        command.arg("100");
        let process = netns::spawn(
            &ns,
            command,
            SpawnOptions {
                own_pid_namespace,
                ..SpawnOptions::default()
            },
        )
        .unwrap();
        let pid = process.pid();
        let tree = if own_pid_namespace {
            wait_for_descendants(pid, 2)
        } else {
            vec![]
        };
        assert_eq!(pid_ns_inode(pid), ns_inode(&ns));
        let t0 = Instant::now();
        drop(process);
        eprintln!(
            "drop (own_pid_namespace={own_pid_namespace}) took {:?}",
            t0.elapsed()
        );
        for p in [pid].iter().chain(&tree) {
            assert!(!alive(*p), "pid {p} survived drop");
        }
    }
}

fn exit_status_without_waiting() {
    let ns = namespace("status");
    let mut command = Command::new("sh");
    command.args(["-c", "exit 3"]);
    let mut process = netns::spawn(&ns, command, SpawnOptions::default()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    let status = loop {
        if let Some(status) = process.try_exit_status().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(2));
    };
    assert_eq!(status.code(), Some(3));
    assert_eq!(process.try_exit_status().unwrap(), Some(status));
}

fn sysctls_are_per_namespace() {
    let root_value = std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap();
    let ns = namespace("sysctl");
    let want = if root_value.trim() == "1" { "0" } else { "1" };
    ns.set_sysctl("net/ipv4/ip_forward", want).unwrap();
    ns.set_sysctl("net.ipv6.conf.all.forwarding", "1").unwrap();
    let inside = ns
        .run(|| std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap())
        .unwrap();
    assert_eq!(inside.trim(), want);
    assert_eq!(
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap(),
        root_value
    );

    let err = ns.set_sysctl("net/ipv4/no_such_key", "1").unwrap_err();
    assert!(err.to_string().contains("no such sysctl"), "{err}");
    let err = ns.set_sysctl("../etc/passwd", "x").unwrap_err();
    assert!(err.to_string().contains("relative to /proc/sys"), "{err}");
}

fn run_propagates_results_and_panics() {
    let ns = namespace("run");
    let inode = ns.run(|| {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata("/proc/thread-self/ns/net").unwrap().ino()
    });
    assert_eq!(inode.unwrap(), ns_inode(&ns));
    let panicked =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| ns.run(|| panic!("boom"))));
    assert!(panicked.is_err());
}

/// Environment variable that turns `harness_crash_leaves_no_process` into its child role.
const CRASH_CHILD: &str = "MXLAB_NETNS_CRASH_CHILD";

fn harness_crash_leaves_no_process() {
    use std::io::BufRead;
    if std::env::var_os(CRASH_CHILD).is_some() {
        // Child role: start processes, report their pids, then wait to be SIGKILLed.
        println!(); // libtest's "test … ..." line has no newline yet
        let ns = namespace("crash");
        for own_pid_namespace in [false, true] {
            // Without a PID namespace only the direct child is covered (PDEATHSIG), so give it
            // no grandchildren there.
            let mut command = Command::new("sh");
            let script = if own_pid_namespace {
                "sleep 100 & sleep 100"
            } else {
                "exec sleep 100"
            };
            command.args(["-c", script]).stdout(Stdio::null());
            let process = netns::spawn(
                &ns,
                command,
                SpawnOptions {
                    own_pid_namespace,
                    ..SpawnOptions::default()
                },
            )
            .unwrap();
            let mut pids = vec![process.pid()];
            if own_pid_namespace {
                pids.extend(wait_for_descendants(process.pid(), 3));
            }
            for pid in pids {
                println!("PID {pid}");
            }
            std::mem::forget(process);
        }
        println!("READY");
        std::thread::sleep(Duration::from_secs(100));
        return;
    }
    let mut harness = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "harness_crash_leaves_no_process",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CRASH_CHILD, "1")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut pids = Vec::new();
    for line in std::io::BufReader::new(harness.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        if let Some(pid) = line.strip_prefix("PID ") {
            pids.push(pid.parse::<u32>().unwrap());
        }
        if line == "READY" {
            break;
        }
    }
    assert!(pids.len() >= 5, "{pids:?}");
    assert!(pids.iter().all(|p| alive(*p)));
    harness.kill().unwrap(); // SIGKILL: the "harness" crashes
    harness.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let survivors: Vec<String> = pids
            .iter()
            .filter(|p| alive(**p))
            .map(|p| {
                let status =
                    std::fs::read_to_string(format!("/proc/{p}/status")).unwrap_or_default();
                let state = status
                    .lines()
                    .find(|l| l.starts_with("State:"))
                    .unwrap_or("")
                    .to_owned();
                format!("{p} {state}")
            })
            .collect();
        if survivors.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still alive 3 s after the harness died: {survivors:?} of {pids:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    eprintln!("after the harness was SIGKILLed, all of {pids:?} were gone");
}

/// Environment variable that turns `harness_crash_ends_a_pid_namespace_whose_command_changed_credentials`
/// into its child role.
const CRASH_CREDENTIALS_CHILD: &str = "MXLAB_NETNS_CRASH_CREDENTIALS_CHILD";

/// Whether `pid` is gone: no such process, or a zombie (this machine's init may never reap
/// orphans, so a dead orphan can stay a zombie).
fn gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        // "pid (comm) S …": the state follows the last ')'.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_none_or(|state| state == "Z" || state == "X"),
    }
}

/// Live (non-zombie) processes whose PID namespace is `pid_namespace` ("pid:[…]").
fn live_members(pid_namespace: &str) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return vec![];
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_link(format!("/proc/{pid}/ns/pid"))
                .is_ok_and(|link| link.as_os_str() == pid_namespace)
        })
        .filter(|pid| !gone(*pid))
        .collect()
}

/// `ps`-like lines for `pids`, for failure messages.
fn describe(pids: &[u32]) -> Vec<String> {
    pids.iter()
        .map(|p| {
            let status = std::fs::read_to_string(format!("/proc/{p}/status")).unwrap_or_default();
            let field = |name: &str| {
                status
                    .lines()
                    .find(|l| l.starts_with(name))
                    .unwrap_or("")
                    .split_whitespace()
                    .skip(1)
                    .collect::<Vec<_>>()
                    .join(" ")
            };
            format!(
                "{p} {} state={} ppid={} uid={}",
                field("Name:"),
                field("State:"),
                field("PPid:"),
                field("Uid:")
            )
        })
        .collect()
}

/// PR_SET_PDEATHSIG is cleared when a process changes credentials (and when it execs a setuid
/// or file-capability binary), as Postfix does: the PID namespace must end anyway when the
/// harness is SIGKILLed.
fn harness_crash_ends_a_pid_namespace_whose_command_changed_credentials() {
    use std::io::BufRead;
    const TEST: &str = "harness_crash_ends_a_pid_namespace_whose_command_changed_credentials";
    if std::env::var_os(CRASH_CREDENTIALS_CHILD).is_some() {
        // Child role: start the command, report its processes, then wait to be SIGKILLed.
        println!(); // libtest's "test … ..." line has no newline yet
        let ns = namespace("crashcred");
        let mut command = Command::new("setpriv");
        command
            .args([
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "--",
                "sh",
                "-c",
                "sleep 100 & exec sleep 100",
            ])
            .stdout(Stdio::null());
        let process = netns::spawn(
            &ns,
            command,
            SpawnOptions {
                own_pid_namespace: true,
                ..SpawnOptions::default()
            },
        )
        .unwrap();
        let pid_namespace =
            std::fs::read_link(format!("/proc/{}/ns/pid_for_children", process.pid())).unwrap();
        // Both sleeps run (as nobody).
        let tree = wait_for_running(process.pid(), "sleep", 2);
        println!("PIDNS {}", pid_namespace.display());
        for pid in [process.pid()].iter().chain(&tree) {
            println!("PID {pid}");
        }
        std::mem::forget(process);
        println!("READY");
        std::thread::sleep(Duration::from_secs(100));
        return;
    }
    let mut harness = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", TEST, "--nocapture", "--test-threads=1"])
        .env(CRASH_CREDENTIALS_CHILD, "1")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut pids = Vec::new();
    let mut pid_namespace = String::new();
    for line in std::io::BufReader::new(harness.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        if let Some(pid) = line.strip_prefix("PID ") {
            pids.push(pid.parse::<u32>().unwrap());
        }
        if let Some(ns) = line.strip_prefix("PIDNS ") {
            pid_namespace = ns.to_owned();
        }
        if line == "READY" {
            break;
        }
    }
    assert!(pid_namespace.starts_with("pid:["), "{pid_namespace:?}");
    assert!(pids.len() >= 3, "{pids:?}");
    let members = live_members(&pid_namespace);
    eprintln!(
        "before the crash: {:?}; namespace {pid_namespace} holds {members:?}",
        describe(&pids)
    );
    assert!(members.len() >= 2, "{members:?}");
    assert!(pids.iter().all(|p| !gone(*p)), "{:?}", describe(&pids));

    harness.kill().unwrap(); // SIGKILL: the "harness" crashes
    harness.wait().unwrap();
    let t0 = Instant::now();
    let deadline = t0 + Duration::from_secs(2);
    loop {
        let mut survivors: Vec<u32> = pids.iter().copied().filter(|p| !gone(*p)).collect();
        survivors.extend(
            live_members(&pid_namespace)
                .into_iter()
                .filter(|p| !pids.contains(p)),
        );
        if survivors.is_empty() {
            break;
        }
        if Instant::now() >= deadline {
            let text = describe(&survivors);
            // Do not leak them into later tests.
            for pid in &survivors {
                // SAFETY: kill with a pid we just saw alive and a signal number.
                unsafe { libc::kill(*pid as libc::pid_t, libc::SIGKILL) };
            }
            panic!(
                "still alive 2 s after the harness died: {text:?} (of {pids:?}, namespace {pid_namespace})"
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    eprintln!(
        "after the harness was SIGKILLed, namespace {pid_namespace} ({pids:?}) was empty within {:?}",
        t0.elapsed()
    );
}

fn hostname_and_private_dev_apply_only_to_the_child() {
    let ns = namespace("uts");
    let dev = tempfile::tempdir().unwrap();
    let dev_dir = dev.path().join("dev");
    let host_name_before = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let mut command = Command::new("sh");
    // The child writes into its /dev, reads a device node and lists what it finds there.
    command
        .args([
            "-c",
            "uname -n; echo x > /dev/mxlab-marker; head -c 4 /dev/zero | od -An -tx1; \
             test -c /dev/null && echo null-is-a-device; ls /dev/marker-from-caller",
        ])
        .stdout(Stdio::piped());
    std::fs::create_dir_all(&dev_dir).unwrap();
    std::fs::write(dev_dir.join("marker-from-caller"), "").unwrap();
    let mut process = netns::spawn(
        &ns,
        command,
        SpawnOptions {
            own_pid_namespace: true,
            hostname: Some("sut.sender.test".into()),
            private_dev: Some(dev_dir.clone()),
            ..SpawnOptions::default()
        },
    )
    .unwrap();
    let mut seen = String::new();
    process
        .take_stdout()
        .unwrap()
        .read_to_string(&mut seen)
        .unwrap();
    let lines: Vec<&str> = seen.lines().map(str::trim).collect();
    assert_eq!(
        lines,
        [
            "sut.sender.test",
            "00 00 00 00",
            "null-is-a-device",
            "/dev/marker-from-caller"
        ]
    );
    assert_eq!(
        std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap(),
        host_name_before,
        "the host keeps its name"
    );
    assert!(
        !std::path::Path::new("/dev/mxlab-marker").exists(),
        "what the child writes in its /dev stays out of the host's"
    );
    assert_eq!(
        std::fs::read_to_string(dev_dir.join("mxlab-marker")).unwrap(),
        "x\n"
    );
}

/// Why the credentials test cannot run here: no `setpriv` (util-linux).
fn setpriv_missing() -> Option<String> {
    Command::new("setpriv")
        .arg("--version")
        .output()
        .map_or(true, |o| !o.status.success())
        .then(|| "needs setpriv (util-linux)".into())
}

fn main() {
    let root = common::needs_root();
    common::run(vec![
        common::trial(
            "own_pid_namespace_stop_kills_grandchildren",
            root.clone(),
            || common::on_current_thread(own_pid_namespace_stop_kills_grandchildren()),
        ),
        common::trial(
            "stop_is_graceful_when_the_command_handles_sigterm",
            root.clone(),
            || common::on_current_thread(stop_is_graceful_when_the_command_handles_sigterm()),
        ),
        common::trial(
            "bind_mounts_apply_in_order_and_only_to_the_child",
            root.clone(),
            bind_mounts_apply_in_order_and_only_to_the_child,
        ),
        common::trial("resolv_conf_is_private_to_the_child", root.clone(), || {
            resolv_conf_is_private_to_the_child()
        }),
        common::trial("missing_program_gives_a_clear_error", root.clone(), || {
            missing_program_gives_a_clear_error()
        }),
        common::trial(
            "output_runs_inside_the_namespace_with_loopback_up",
            root.clone(),
            output_runs_inside_the_namespace_with_loopback_up,
        ),
        common::trial(
            "dropping_a_process_kills_and_reaps_it",
            root.clone(),
            dropping_a_process_kills_and_reaps_it,
        ),
        common::trial("exit_status_without_waiting", root.clone(), || {
            exit_status_without_waiting()
        }),
        common::trial("sysctls_are_per_namespace", root.clone(), || {
            sysctls_are_per_namespace()
        }),
        common::trial("run_propagates_results_and_panics", root.clone(), || {
            run_propagates_results_and_panics()
        }),
        common::trial("harness_crash_leaves_no_process", root.clone(), || {
            harness_crash_leaves_no_process()
        }),
        common::trial(
            "harness_crash_ends_a_pid_namespace_whose_command_changed_credentials",
            root.clone().or_else(setpriv_missing),
            harness_crash_ends_a_pid_namespace_whose_command_changed_credentials,
        ),
        common::trial(
            "hostname_and_private_dev_apply_only_to_the_child",
            root.clone(),
            hostname_and_private_dev_apply_only_to_the_child,
        ),
    ])
}
