//! The HTML compatibility matrix in a real browser: Debian's `chromium`, headless, loads the
//! page [`mxlab::report::matrix::html`] renders for a realistic set of runs. The DOM it builds
//! must hold one row per scenario and one column per SUT with the expected cells, and its
//! screenshot must show the table's status colours.
//!
//! Needs the `chromium` package (`bash .ci/install-deps.sh`); fails, naming that fix, without it.

use std::fs;
use std::io::{Cursor, ErrorKind};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use mxlab::events::{Event, EventKind};
use mxlab::family::Family;
use mxlab::lab::RunReport;
use mxlab::report::matrix;
use mxlab::verdict::{Failure, Status, Verdict};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tempfile::TempDir;

/// How long one Chromium run may take before its process group is killed.
const CHROMIUM_TIMEOUT: Duration = Duration::from_secs(60);

/// The flags of every Chromium run: headless, no sandbox (tests run as root), and no network
/// or background activity of its own.
const CHROMIUM_FLAGS: [&str; 8] = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
];

/// The screenshot's size, as Chromium's `--window-size` takes it.
const WINDOW: (u32, u32) = (1200, 800);

/// The opensmtpd xfail reason of `net/first-connection-refused`, as the scenario file has it.
const OPENSMTPD_RETRY: &str =
    "retries only after 400 s (400·n² s, no setting), so the second connection never comes within the window";

// ---------------------------------------------------------------------------------------------
// The runs and the table they must give.

/// How a fixture run ended: its verdict, and the family and milliseconds from injection to the
/// first acceptance by `mx1` if the message got there.
type Outcome = (Verdict, Option<(Family, u64)>);

/// A finished run of `scenario` on `sut`.
fn run(scenario: &str, sut: &str, (verdict, delivered): Outcome) -> RunReport {
    let mut events = vec![Event {
        at: Duration::from_millis(40),
        kind: EventKind::MessageInjected {
            from: "alice@sender.test".into(),
            to: vec!["bob@example.test".into()],
            reply: "250 2.0.0 Ok: queued".into(),
        },
    }];
    if let Some((family, millis)) = delivered {
        events.push(Event {
            at: Duration::from_millis(40 + millis),
            kind: EventKind::MessageAccepted {
                host: "mx1".into(),
                session: 1,
                family,
                from: "alice@sender.test".into(),
                to: vec!["bob@example.test".into()],
                size: 412,
                digest: "5f0c".into(),
                message_id: Some("<1@sender.test>".into()),
            },
        });
    }
    RunReport {
        clock: mxlab::clock::ClockRate::REAL,
        timeouts: mxlab::sut::Timeouts::Fast,
        scenario: scenario.into(),
        sut: sut.into(),
        verdict,
        events,
        wall: Duration::from_secs(3),
        topology_up: Duration::from_millis(120),
        teardown: Duration::from_millis(80),
        mutant: None,
    }
}

/// A pass: delivered over `family` after `millis`.
fn delivered(family: Family, millis: u64) -> Outcome {
    let verdict = Verdict {
        status: Status::Pass,
        summary: format!("delivered once via {family} by mx1"),
        failures: Vec::new(),
    };
    (verdict, Some((family, millis)))
}

/// A verdict with `status` and one failed expectation.
fn failed(status: Status, summary: &str, expectation: &str, reason: &str) -> Verdict {
    Verdict {
        status,
        summary: summary.into(),
        failures: vec![Failure {
            key: None,
            expectation: expectation.into(),
            reason: reason.into(),
            evidence: vec![1],
        }],
    }
}

/// The SUTs of [`runs`], in column order.
const SUTS: [&str; 3] = ["postfix", "exim", "opensmtpd"];

/// Four scenarios × [`SUTS`]: passes over both families, one without a delivery (a bounce), a
/// failure that still delivered, a known failure (xfail), a harness error, and one pair that
/// did not run.
fn runs() -> Vec<RunReport> {
    use Family::{Ipv4, Ipv6};
    let late = failed(
        Status::Fail,
        "delivered once via ipv4 by mx1",
        "within = \"45s\"",
        "accepted after 61.3 s",
    );
    let known = failed(
        Status::Xfail,
        &format!("not delivered (known: {OPENSMTPD_RETRY})"),
        "within = \"15s\"",
        "not delivered",
    );
    let bounced = Verdict {
        status: Status::Pass,
        summary: "bounced: 550 5.1.1 no such user".into(),
        failures: Vec::new(),
    };
    let error = Verdict::error("cannot prepare the work directory: No space left on device".into());
    let outcomes: [(&str, Vec<Outcome>); 4] = [
        (
            "baseline/dual-stack",
            vec![
                delivered(Ipv6, 310),
                delivered(Ipv6, 420),
                delivered(Ipv6, 380),
            ],
        ),
        (
            "net/v6-blackhole",
            vec![
                delivered(Ipv4, 30_120),
                (late, Some((Ipv4, 61_300))),
                delivered(Ipv4, 31_050),
            ],
        ),
        (
            "net/first-connection-refused",
            vec![
                delivered(Ipv4, 1_020),
                delivered(Ipv4, 1_500),
                (known, None),
            ],
        ),
        (
            "smtp/rcpt-550-bounces",
            vec![(bounced, None), (error, None)],
        ),
    ];
    outcomes
        .into_iter()
        .flat_map(|(scenario, row)| {
            SUTS.into_iter()
                .zip(row)
                .map(move |(sut, outcome)| run(scenario, sut, outcome))
        })
        .collect()
}

/// The table the runs must give, as a browser shows it.
fn expected() -> Table {
    let row = |scenario: &str, cells: [Cell; 3]| Row {
        scenario: scenario.into(),
        cells: cells.into(),
    };
    Table {
        columns: ["scenario", "postfix", "exim", "opensmtpd"]
            .map(String::from)
            .into(),
        rows: vec![
            row(
                "baseline/dual-stack",
                [
                    cell("pass", "PASS ipv6 0.31s", None),
                    cell("pass", "PASS ipv6 0.42s", None),
                    cell("pass", "PASS ipv6 0.38s", None),
                ],
            ),
            row(
                "net/v6-blackhole",
                [
                    cell("pass", "PASS ipv4 30.12s", None),
                    cell(
                        "fail",
                        "FAIL ipv4 61.30s",
                        Some("expected within = \"45s\": accepted after 61.3 s"),
                    ),
                    cell("pass", "PASS ipv4 31.05s", None),
                ],
            ),
            row(
                "net/first-connection-refused",
                [
                    cell("pass", "PASS ipv4 1.02s", None),
                    cell("pass", "PASS ipv4 1.50s", None),
                    cell("xfail", "XFAIL", Some(OPENSMTPD_RETRY)),
                ],
            ),
            row(
                "smtp/rcpt-550-bounces",
                [
                    cell("pass", "PASS", None),
                    cell(
                        "error",
                        "ERROR",
                        Some("cannot prepare the work directory: No space left on device"),
                    ),
                    cell("", "—", None),
                ],
            ),
        ],
    }
}

/// One expected cell.
fn cell(class: &str, headline: &str, note: Option<&str>) -> Cell {
    Cell {
        class: class.into(),
        headline: headline.into(),
        note: note.map(String::from),
    }
}

// ---------------------------------------------------------------------------------------------
// Reading the matrix table back from a DOM (a scan for the few tags `matrix::html` writes).

/// The matrix table as a browser shows it.
#[derive(Debug, PartialEq)]
struct Table {
    /// The header row: `scenario`, then one column per SUT.
    columns: Vec<String>,
    /// One row per scenario.
    rows: Vec<Row>,
}

/// One row of the matrix table.
#[derive(Debug, PartialEq)]
struct Row {
    /// The row header.
    scenario: String,
    /// One cell per SUT.
    cells: Vec<Cell>,
}

/// One cell of the matrix table.
#[derive(Debug, PartialEq)]
struct Cell {
    /// Its `class` attribute (empty if none): the status, lowercase.
    class: String,
    /// Its text before the note.
    headline: String,
    /// The text of its `<small>` note, if any.
    note: Option<String>,
}

/// The `<tag …>inner</tag>` elements in `html`, in order, as (attributes, inner HTML). Not
/// nested in themselves, as in the matrix page.
fn elements<'h>(html: &'h str, tag: &str) -> Vec<(&'h str, &'h str)> {
    let open = format!("<{tag}");
    let close = format!("</{tag}>");
    let mut found = Vec::new();
    let mut rest = html;
    while let Some(start) = rest.find(&open) {
        let after = &rest[start + open.len()..];
        let Some(end_of_tag) = after.find('>') else {
            break;
        };
        let attributes = &after[..end_of_tag];
        if !attributes.is_empty() && !attributes.starts_with(' ') {
            rest = after; // a longer tag name, e.g. <thead> when looking for <th
            continue;
        }
        let body = &after[end_of_tag + 1..];
        let Some(end) = body.find(&close) else { break };
        found.push((attributes, &body[..end]));
        rest = &body[end + close.len()..];
    }
    found
}

/// The value of attribute `name` in an element's attribute text.
fn attribute<'a>(attributes: &'a str, name: &str) -> Option<&'a str> {
    let key = format!(" {name}=\"");
    let start = attributes.find(&key)? + key.len();
    let len = attributes[start..].find('"')?;
    Some(&attributes[start..start + len])
}

/// The text of an HTML fragment: tags dropped, the entities the page may hold decoded, trimmed.
fn text(html: &str) -> String {
    let mut out = String::new();
    let mut in_tag = false;
    for c in html.chars() {
        match c {
            '<' => in_tag = true,
            '>' => in_tag = false,
            _ if !in_tag => out.push(c),
            _ => {}
        }
    }
    out.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&nbsp;", "\u{a0}")
        .replace("&amp;", "&")
        .trim()
        .to_string()
}

/// One `<td>` of a row.
fn parse_cell((attributes, inner): (&str, &str)) -> Cell {
    let headline = inner
        .split_once("<small")
        .map_or(inner, |(headline, _)| headline);
    Cell {
        class: attribute(attributes, "class").unwrap_or_default().into(),
        headline: text(headline),
        note: elements(inner, "small")
            .first()
            .map(|&(_, note)| text(note)),
    }
}

/// One `<tr>` of the table's body.
fn parse_row(tr: &str) -> Result<Row, String> {
    let scenario = elements(tr, "th")
        .first()
        .map(|&(_, name)| text(name))
        .ok_or_else(|| format!("a body row without a row header: {tr}"))?;
    Ok(Row {
        scenario,
        cells: elements(tr, "td").into_iter().map(parse_cell).collect(),
    })
}

/// The `<table id="matrix">` in `dom`.
fn parse_matrix(dom: &str) -> Result<Table, String> {
    let (_, table) = elements(dom, "table")
        .into_iter()
        .find(|&(attributes, _)| attribute(attributes, "id") == Some("matrix"))
        .ok_or("no <table id=\"matrix\"> in the DOM")?;
    let (_, head) = *elements(table, "thead")
        .first()
        .ok_or("the table has no <thead>")?;
    let (_, body) = *elements(table, "tbody")
        .first()
        .ok_or("the table has no <tbody>")?;
    Ok(Table {
        columns: elements(head, "th")
            .into_iter()
            .map(|(_, th)| text(th))
            .collect(),
        rows: elements(body, "tr")
            .into_iter()
            .map(|(_, tr)| parse_row(tr))
            .collect::<Result<_, _>>()?,
    })
}

/// Whether the matrix table in `dom` is `expected`: exactly its columns, its rows (by scenario,
/// in order) and its cells; the error says what differs first.
fn check_matrix(dom: &str, expected: &Table) -> Result<(), String> {
    let found = parse_matrix(dom)?;
    if found.columns != expected.columns {
        return Err(format!(
            "columns: expected {:?}, found {:?}",
            expected.columns, found.columns
        ));
    }
    let scenarios = |table: &Table| -> Vec<String> {
        table.rows.iter().map(|row| row.scenario.clone()).collect()
    };
    if scenarios(&found) != scenarios(expected) {
        return Err(format!(
            "rows: expected {} {:?}, found {} {:?}",
            expected.rows.len(),
            scenarios(expected),
            found.rows.len(),
            scenarios(&found)
        ));
    }
    match found.rows.iter().zip(&expected.rows).find(|(f, e)| f != e) {
        Some((f, e)) => Err(format!("row {}: expected {e:#?}, found {f:#?}", e.scenario)),
        None => Ok(()),
    }
}

// ---------------------------------------------------------------------------------------------
// Headless Chromium.

/// The matrix of [`runs`] as `matrix.html` in a fresh temp dir, which goes with the result.
fn matrix_page() -> (TempDir, PathBuf) {
    let dir = TempDir::new().expect("a temp dir for the page");
    let page = dir.path().join("matrix.html");
    fs::write(&page, matrix::html(&runs())).expect("write the page");
    (dir, page)
}

/// Runs `chromium` with [`CHROMIUM_FLAGS`], a fresh profile, `args`, then `page`'s URL, and
/// returns its standard output (the DOM, for `--dump-dom`); panics if it is not installed,
/// fails, or outlasts [`CHROMIUM_TIMEOUT`] (then its process group is killed). Its profile and
/// output files are removed either way.
fn chromium(args: &[&str], page: &Path) -> String {
    let work = TempDir::new().expect("a temp dir for Chromium");
    let profile = work.path().join("profile");
    let stdout_path = work.path().join("stdout");
    let stderr_path = work.path().join("stderr");
    let mut command = Command::new("chromium");
    command
        .args(CHROMIUM_FLAGS)
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(format!("file://{}", page.display()))
        .stdin(Stdio::null())
        .stdout(fs::File::create(&stdout_path).expect("create the stdout file"))
        .stderr(fs::File::create(&stderr_path).expect("create the stderr file"))
        .process_group(0);
    let child = match command.spawn() {
        Ok(child) => child,
        Err(err) if err.kind() == ErrorKind::NotFound => panic!(
            "chromium is not installed: run `bash .ci/install-deps.sh` \
             (or `apt-get install --no-install-recommends chromium`)"
        ),
        Err(err) => panic!("cannot start chromium: {err}"),
    };
    let status = wait_or_kill(child, CHROMIUM_TIMEOUT);
    let stderr = fs::read_to_string(&stderr_path).unwrap_or_default();
    match status {
        Some(status) if status.success() => {}
        Some(status) => panic!("chromium {args:?} failed ({status}); stderr:\n{stderr}"),
        None => {
            panic!("chromium {args:?} ran over {CHROMIUM_TIMEOUT:?}, killed; stderr:\n{stderr}")
        }
    }
    fs::read_to_string(&stdout_path).expect("read Chromium's stdout")
}

/// Waits up to `timeout` for `child`, the leader of its own process group; on timeout kills
/// that group (before reaping the leader, so the group id cannot have been reused) and returns
/// `None`.
fn wait_or_kill(mut child: Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().expect("wait for chromium") {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let group = Pid::from_raw(i32::try_from(child.id()).expect("a pid fits an i32"));
    if killpg(group, Signal::SIGKILL).is_err() {
        let _ = child.kill();
    }
    let _ = child.wait();
    None
}

/// The PNG at `path`, decoded to 8-bit RGB(A): (width, height, bytes per pixel, pixels).
fn decode_png(path: &Path) -> (u32, u32, usize, Vec<u8>) {
    let bytes = fs::read(path).expect("Chromium wrote no screenshot");
    assert!(
        bytes.starts_with(b"\x89PNG\r\n\x1a\n"),
        "the screenshot is not a PNG"
    );
    let mut decoder = png::Decoder::new(Cursor::new(bytes));
    decoder.set_transformations(png::Transformations::normalize_to_color8());
    let mut reader = decoder.read_info().expect("a readable PNG header");
    let mut pixels = vec![0; reader.output_buffer_size().expect("a sane PNG size")];
    let frame = reader.next_frame(&mut pixels).expect("a decodable PNG");
    pixels.truncate(frame.buffer_size());
    (
        frame.width,
        frame.height,
        frame.color_type.samples(),
        pixels,
    )
}

/// How many pixels are within 3 of `rgb` in every channel.
fn count_colour(pixels: &[u8], samples: usize, rgb: [u8; 3]) -> usize {
    pixels
        .chunks_exact(samples)
        .filter(|pixel| pixel.iter().zip(rgb).all(|(&p, c)| p.abs_diff(c) <= 3))
        .count()
}

// ---------------------------------------------------------------------------------------------
// The tests.

#[test]
fn chromium_dom_has_a_row_per_scenario_and_a_column_per_sut() {
    let (_dir, page) = matrix_page();
    let dom = chromium(&["--dump-dom"], &page);
    if let Err(mismatch) = check_matrix(&dom, &expected()) {
        panic!("the matrix Chromium shows is not the expected one: {mismatch}\nDOM:\n{dom}");
    }
}

#[test]
fn chromium_screenshot_shows_the_status_colours() {
    let (dir, page) = matrix_page();
    let shot = dir.path().join("matrix.png");
    chromium(
        &[
            &format!("--screenshot={}", shot.display()),
            &format!("--window-size={},{}", WINDOW.0, WINDOW.1),
        ],
        &page,
    );
    let (width, height, samples, pixels) = decode_png(&shot);
    assert_eq!((width, height), WINDOW, "screenshot size");
    // The page's CSS: th #eee, .pass #dff5dd, .fail #f8d7d5, .xfail #fdf0c8, .error #e3e3e3;
    // black-ish text.
    for (what, rgb) in [
        ("header", [0xee, 0xee, 0xee]),
        ("PASS", [0xdf, 0xf5, 0xdd]),
        ("FAIL", [0xf8, 0xd7, 0xd5]),
        ("XFAIL", [0xfd, 0xf0, 0xc8]),
        ("ERROR", [0xe3, 0xe3, 0xe3]),
        ("text", [0, 0, 0]),
    ] {
        let n = count_colour(&pixels, samples, rgb);
        assert!(n >= 100, "{n} {what} pixels ({rgb:02x?}) in the screenshot");
    }
}

#[test]
fn the_table_check_rejects_a_doctored_matrix() {
    let page = matrix::html(&runs());
    assert_eq!(
        check_matrix(&page, &expected()),
        Ok(()),
        "the page as rendered"
    );

    let missing_row = page
        .lines()
        .filter(|line| !line.contains(">net/v6-blackhole<"))
        .collect::<Vec<_>>()
        .join("\n");
    let err = check_matrix(&missing_row, &expected()).expect_err("a row is missing");
    assert!(
        err.starts_with("rows: expected 4 ") && err.contains(", found 3 "),
        "{err}"
    );

    let wrong_cell = page.replacen("XFAIL", "PASS", 1);
    let err = check_matrix(&wrong_cell, &expected()).expect_err("a cell is wrong");
    assert!(
        err.starts_with("row net/first-connection-refused:"),
        "{err}"
    );

    let missing_column = page.replacen("<th>exim</th>", "", 1);
    let err = check_matrix(&missing_column, &expected()).expect_err("a column is missing");
    assert!(err.starts_with("columns: "), "{err}");

    assert!(check_matrix("<html><body></body></html>", &expected()).is_err());
}
