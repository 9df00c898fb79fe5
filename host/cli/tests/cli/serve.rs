//! `tessera serve` as a process on loopback: 200 concurrent runs (load), a kill -9 during a run
//! and a restart (run store), and the web page driven by headless Chromium (browser).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::repo_root;

fn fixtures() -> Option<PathBuf> {
    let fixtures = std::env::var_os("TESSERA_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("../shared/fixtures"));
    let needed = [
        fixtures.join("fm/fm7_tiny_swiglu_shared/model.safetensors"),
        fixtures.join("text/wordpiece_4m_30k.json"),
        repo_root().join("target/plugins/caption/plugin.toml"),
    ];
    for path in &needed {
        if !path.exists() {
            assert!(
                std::env::var_os("CI").is_none(),
                "{} is missing under CI",
                path.display()
            );
            eprintln!("skipping: {} is missing", path.display());
            return None;
        }
    }
    Some(fixtures)
}

/// A one-step workflow that is cheap on the fixture model.
const CHEAP: &str = "workflow_version = 1\n[workflow]\nname = \"cheap\"\n[inputs.caption]\ndomain = \"caption\"\n[[steps]]\nid = \"depth\"\ngenerate = \"tok_depth@224\"\nfrom = [\"inputs.caption\"]\nscheme = \"roar\"\ndecoding_steps = 1\n[outputs]\ndepth = \"steps.depth\"\n";

/// A running `tessera serve`, killed when dropped.
struct ServerProcess {
    child: Child,
    address: String,
}

impl ServerProcess {
    fn start(fixtures: &Path, data: &Path, extra: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_tessera"))
            .args([
                "--plugins",
                repo_root().join("target/plugins").to_str().unwrap(),
            ])
            .args(["serve", "--bind", "127.0.0.1:0", "--data-dir"])
            .arg(data)
            .arg("--model")
            .arg(fixtures.join("fm/fm7_tiny_swiglu_shared"))
            .arg("--vocab")
            .arg(fixtures.join("text/wordpiece_4m_30k.json"))
            .args(extra)
            .env("TESSERA_WORKFLOWS", repo_root().join("workflows"))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("tessera serve starts");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let address = line
            .split("http://")
            .nth(1)
            .and_then(|rest| rest.split('/').next())
            .unwrap_or_else(|| panic!("no address in {line:?}"))
            .to_owned();
        Self { child, address }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident memory of the server process, in KiB.
    fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }

    fn request(&self, method: &str, path: &str, body: Option<&str>) -> HttpReply {
        http(&self.address, method, path, body)
    }

    /// Starts a run of an inline workflow on a caption (`wait`: block until it ends).
    fn start_run(&self, workflow: &str, caption: &str, wait: bool) -> serde_json::Value {
        let body =
            serde_json::json!({ "workflow_toml": workflow, "inputs": { "caption": caption } });
        let path = if wait { "/v1/runs?wait=60" } else { "/v1/runs" };
        let reply = self.request("POST", path, Some(&body.to_string()));
        assert_eq!(
            reply.status,
            201,
            "{}",
            String::from_utf8_lossy(&reply.body)
        );
        reply.json()
    }

    /// Waits until the run's first step reports progress, and returns its record then.
    fn wait_until_running(&self, id: &str) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let record = self.request("GET", &format!("/v1/runs/{id}"), None).json();
            if record["steps"][0]["progress"].as_f64().unwrap_or(0.0) > 0.0 {
                return record;
            }
            assert!(Instant::now() < deadline, "run {id} never started");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct HttpReply {
    status: u16,
    body: Vec<u8>,
}

impl HttpReply {
    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&self.body)))
    }
}

/// A minimal HTTP/1.1 client (one request per connection; chunked bodies decoded), so the tests
/// see exactly what goes over the socket.
fn http(address: &str, method: &str, path: &str, body: Option<&str>) -> HttpReply {
    let mut stream = TcpStream::connect(address).expect("connects");
    stream
        .set_read_timeout(Some(Duration::from_secs(300)))
        .unwrap();
    let body = body.unwrap_or("");
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).expect("reads the reply");
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a header block");
    let head = String::from_utf8_lossy(&raw[..split]).to_lowercase();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    let mut payload = raw[split + 4..].to_vec();
    if head.contains("transfer-encoding: chunked") {
        payload = dechunk(&payload);
    }
    HttpReply {
        status,
        body: payload,
    }
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(end) = data.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let size = usize::from_str_radix(
            String::from_utf8_lossy(&data[..end])
                .split(';')
                .next()
                .unwrap()
                .trim(),
            16,
        )
        .unwrap_or(0);
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&data[end + 2..end + 2 + size]);
        data = &data[end + 2 + size + 2..];
    }
}

/// (id, event name, data) of each SSE frame.
fn sse_frames(body: &[u8]) -> Vec<(u64, String, serde_json::Value)> {
    String::from_utf8_lossy(body)
        .split("\n\n")
        .filter(|frame| frame.contains("data:"))
        .map(|frame| {
            let field = |name: &str| {
                frame
                    .lines()
                    .find_map(|l| l.strip_prefix(name))
                    .map(|v| v.trim().to_owned())
                    .unwrap_or_default()
            };
            (
                field("id:").parse().unwrap(),
                field("event:"),
                serde_json::from_str(&field("data:")).unwrap(),
            )
        })
        .collect()
}

fn percentile(sorted: &[Duration], fraction: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * fraction).round() as usize]
}

#[test]
fn two_hundred_concurrent_runs_all_finish_with_their_outputs_and_events() {
    let Some(fixtures) = fixtures() else { return };
    let data = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(&fixtures, data.path(), &["--max-runs", "2"]);
    // Warm up (plugin instances, allocator) before the baseline.
    let warm = server.request(
        "POST",
        "/v1/runs?wait=60",
        Some(
            &serde_json::json!({ "workflow_toml": CHEAP, "inputs": { "caption": "a cat" } })
                .to_string(),
        ),
    );
    assert_eq!(warm.status, 201);
    let baseline = server.rss_kib();

    const CLIENTS: usize = 200;
    let started = Instant::now();
    let results: Vec<(Duration, String, usize)> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..CLIENTS)
            .map(|client| {
                let server = &server;
                scope.spawn(move || {
                    let body = serde_json::json!({
                        "workflow_toml": CHEAP,
                        "inputs": { "caption": "a small dog" },
                        "seed": client,
                    })
                    .to_string();
                    let sent = Instant::now();
                    let reply = server.request("POST", "/v1/runs", Some(&body));
                    let latency = sent.elapsed();
                    assert_eq!(
                        reply.status,
                        201,
                        "client {client}: {}",
                        String::from_utf8_lossy(&reply.body)
                    );
                    let id = reply.json()["id"].as_str().unwrap().to_owned();
                    // Follow the run to its end on its event stream.
                    let events = server.request("GET", &format!("/v1/runs/{id}/events"), None);
                    let frames = sse_frames(&events.body);
                    let ids: Vec<u64> = frames.iter().map(|f| f.0).collect();
                    assert_eq!(
                        ids,
                        (1..=frames.len() as u64).collect::<Vec<_>>(),
                        "run {id}: an event is missing"
                    );
                    let last = frames.last().unwrap();
                    assert_eq!(last.2["state"], "succeeded", "run {id}");
                    assert!(
                        frames
                            .iter()
                            .any(|f| f.1 == "finished" && f.2["step"] == "depth")
                    );
                    (latency, id, frames.len())
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    let elapsed = started.elapsed();
    for (_, id, events) in &results {
        let record = server
            .request("GET", &format!("/v1/runs/{id}"), None)
            .json();
        assert_eq!(record["state"], "succeeded");
        // Every event the stream delivered is the whole log.
        let replay = sse_frames(
            &server
                .request("GET", &format!("/v1/runs/{id}/events"), None)
                .body,
        );
        assert_eq!(replay.len(), *events);
        for file in record["outputs"][0]["files"].as_array().unwrap() {
            let reply = server.request("GET", file["url"].as_str().unwrap(), None);
            assert_eq!(reply.status, 200);
            assert_eq!(reply.body.len() as u64, file["bytes"].as_u64().unwrap());
        }
    }
    let mut latencies: Vec<Duration> = results.iter().map(|r| r.0).collect();
    latencies.sort();
    // Idle threads of the blocking pool go after 10 s; then memory should be back near baseline.
    std::thread::sleep(Duration::from_secs(12));
    let after = server.rss_kib();
    println!(
        "load: {CLIENTS} concurrent run requests; accepted at {:.0} requests/s (p50 {:.1} ms, p99 {:.1} ms); \
         all {CLIENTS} runs finished in {:.1} s ({:.1} runs/s, 2 at a time); server RSS {} MiB before, {} MiB after",
        CLIENTS as f64 / latencies.iter().max().unwrap().as_secs_f64(),
        percentile(&latencies, 0.5).as_secs_f64() * 1e3,
        percentile(&latencies, 0.99).as_secs_f64() * 1e3,
        elapsed.as_secs_f64(),
        CLIENTS as f64 / elapsed.as_secs_f64(),
        baseline / 1024,
        after / 1024,
    );
    assert!(
        after < baseline + 64 * 1024,
        "server memory did not return near its baseline: {baseline} KiB before, {after} KiB after"
    );
}

/// A run that takes seconds on the fixture model (a 256-token autoregressive det).
const SLOW: &str = "workflow_version = 1\n[workflow]\nname = \"slow\"\n[inputs.caption]\ndomain = \"caption\"\n[[steps]]\nid = \"boxes\"\ngenerate = \"det\"\nfrom = [\"inputs.caption\"]\nscheme = \"autoregressive\"\n[outputs]\nboxes = \"steps.boxes\"\n";

#[test]
fn a_killed_server_restarts_with_its_runs_and_fails_the_interrupted_one() {
    let Some(fixtures) = fixtures() else { return };
    let data = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(&fixtures, data.path(), &[]);
    let finished = server.start_run(CHEAP, "a cat", true);
    assert_eq!(finished["state"], "succeeded");
    let slow_id = server.start_run(SLOW, "a dog", false)["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(server.wait_until_running(&slow_id)["state"], "running");
    drop(server); // SIGKILL, mid-run

    let restarted = ServerProcess::start(&fixtures, data.path(), &[]);
    let id = finished["id"].as_str().unwrap();
    let again = restarted
        .request("GET", &format!("/v1/runs/{id}"), None)
        .json();
    assert_eq!(again["state"], "succeeded");
    assert_eq!(again["outputs"], finished["outputs"]);
    for file in again["outputs"][0]["files"].as_array().unwrap() {
        assert_eq!(
            restarted
                .request("GET", file["url"].as_str().unwrap(), None)
                .status,
            200
        );
    }
    let interrupted = restarted
        .request("GET", &format!("/v1/runs/{slow_id}"), None)
        .json();
    assert_eq!(interrupted["state"], "failed", "{interrupted}");
    assert!(
        interrupted["error"]
            .as_str()
            .unwrap()
            .contains("interrupted"),
        "{interrupted}"
    );
    let listed = restarted.request("GET", "/v1/runs", None).json();
    assert_eq!(listed.as_array().unwrap().len(), 2);
    // Its event stream ends with the failure instead of hanging.
    let events = sse_frames(
        &restarted
            .request("GET", &format!("/v1/runs/{slow_id}/events"), None)
            .body,
    );
    assert_eq!(events.last().unwrap().2["state"], "failed");
}

/// Chromium, when installed (`cargo xtask test` installs Debian's `chromium`).
fn chromium() -> Option<PathBuf> {
    let found = ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .map(|name| Path::new("/usr/bin").join(name))
        .find(|path| path.is_file());
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "chromium is missing under CI (`cargo xtask test` installs it)"
        );
        eprintln!("skipping: no chromium in /usr/bin");
    }
    found
}

/// A DevTools-protocol session with one page of a headless Chromium.
struct Browser {
    process: Child,
    socket: tungstenite::WebSocket<tungstenite::stream::MaybeTlsStream<TcpStream>>,
    session: String,
    next_id: u64,
    _profile: tempfile::TempDir,
}

impl Browser {
    fn open(binary: &Path, url: &str) -> Self {
        let profile = tempfile::tempdir().unwrap();
        let mut process = Command::new(binary)
            .args([
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--remote-debugging-port=0",
                "--window-size=1280,1000",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("chromium starts");
        let mut endpoint = None;
        for line in BufReader::new(process.stderr.take().unwrap()).lines() {
            let line = line.unwrap();
            if let Some(url) = line.split("DevTools listening on ").nth(1) {
                endpoint = Some(url.trim().to_owned());
                break;
            }
        }
        let endpoint = endpoint.expect("chromium printed its DevTools endpoint");
        let (socket, _) = tungstenite::connect(&endpoint).expect("connects to DevTools");
        let mut browser = Self {
            process,
            socket,
            session: String::new(),
            next_id: 0,
            _profile: profile,
        };
        let target = browser.call(
            "Target.createTarget",
            serde_json::json!({ "url": "about:blank" }),
        );
        let target_id = target["targetId"].as_str().unwrap().to_owned();
        let attached = browser.call(
            "Target.attachToTarget",
            serde_json::json!({ "targetId": target_id, "flatten": true }),
        );
        browser.session = attached["sessionId"].as_str().unwrap().to_owned();
        browser.call("Page.navigate", serde_json::json!({ "url": url }));
        browser
    }

    /// Sends a command (to the page once attached) and returns its result.
    fn call(&mut self, method: &str, params: serde_json::Value) -> serde_json::Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut message = serde_json::json!({ "id": id, "method": method, "params": params });
        if !self.session.is_empty() {
            message["sessionId"] = self.session.clone().into();
        }
        self.socket
            .send(tungstenite::Message::text(message.to_string()))
            .unwrap();
        loop {
            let reply = self.socket.read().expect("DevTools answers");
            let tungstenite::Message::Text(text) = reply else {
                continue;
            };
            let json: serde_json::Value = serde_json::from_str(text.as_str()).unwrap();
            if json["id"] == id {
                assert!(json.get("error").is_none(), "{method} failed: {json}");
                return json["result"].clone();
            }
        }
    }

    /// Evaluates a JavaScript expression in the page.
    fn eval(&mut self, expression: &str) -> serde_json::Value {
        let result = self.call(
            "Runtime.evaluate",
            serde_json::json!({ "expression": expression, "returnByValue": true }),
        );
        result["result"]["value"].clone()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

#[test]
fn the_web_page_runs_a_workflow_in_a_real_browser() {
    let Some(fixtures) = fixtures() else { return };
    let Some(chromium) = chromium() else { return };
    let data = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(&fixtures, data.path(), &[]);
    // The 4M demo chain, started from the page's form (prefilled through the URL).
    let url = format!(
        "http://{}/#workflow=caption-boxes-depth-rgb&input.caption=a%20photo%20of%20a%20cat&autostart=1",
        server.address
    );
    let mut browser = Browser::open(&chromium, &url);
    let deadline = Instant::now() + Duration::from_secs(240);
    loop {
        let state = browser.eval("document.querySelector('#run-state')?.textContent || ''");
        let ready = browser.eval("document.querySelector('#outputs')?.dataset.ready === 'true'");
        if ready == true {
            assert_eq!(state, "succeeded");
            break;
        }
        assert!(
            state != "failed" && state != "cancelled",
            "the run ended {state}: {}",
            browser.eval("document.querySelector('#run')?.innerText")
        );
        assert!(
            Instant::now() < deadline,
            "the page never showed the outputs (state {state})"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    let steps = browser.eval(
        "[...document.querySelectorAll('#steps li')].map(li => [li.dataset.step, li.dataset.status])",
    );
    assert_eq!(
        steps,
        serde_json::json!([
            ["boxes", "finished"],
            ["depth", "finished"],
            ["rgb", "finished"]
        ])
    );
    let images = browser.eval(
        "[...document.querySelectorAll('#outputs img')].filter(img => img.complete && img.naturalWidth > 0).length",
    );
    assert_eq!(images, 2, "the depth and image outputs are shown");
    // Boxes are drawn (over the image when there is one); a random fixture model may emit none.
    let boxes = server
        .request(
            "GET",
            &format!(
                "{}/outputs/boxes",
                browser
                    .eval("location.hash")
                    .as_str()
                    .unwrap()
                    .replace("#run=", "/v1/runs/")
            ),
            None,
        )
        .json();
    let canvases =
        browser.eval("document.querySelectorAll('[data-output=boxes] canvas[data-boxes]').length");
    assert_eq!(canvases, u64::from(!boxes.as_array().unwrap().is_empty()));
    assert_eq!(
        browser.eval("document.querySelectorAll('#runs li').length"),
        1
    );

    let screenshot = browser.call(
        "Page.captureScreenshot",
        serde_json::json!({ "format": "png", "captureBeyondViewport": true }),
    );
    use base64::Engine as _;
    let png = base64::engine::general_purpose::STANDARD
        .decode(screenshot["data"].as_str().unwrap())
        .unwrap();
    assert!(png.starts_with(b"\x89PNG"));
    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("browser");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("web-page-run.png"), &png).unwrap();
    println!("screenshot: {}", out.join("web-page-run.png").display());
}

#[test]
fn readme_curl_examples_work_as_written() {
    let Some(fixtures) = fixtures() else { return };
    let readme = std::fs::read_to_string(repo_root().join("README.md")).unwrap();
    let block = readme
        .split("<!-- readme-curl-examples -->")
        .nth(1)
        .and_then(|rest| rest.split("```sh\n").nth(1))
        .and_then(|rest| rest.split("\n```").next())
        .expect("the README's curl examples");
    let data = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(&fixtures, data.path(), &[]);
    let out = Command::new("bash")
        .args(["-e", "-c", block])
        .current_dir(work.path())
        .env("TESSERA", format!("http://{}", server.address))
        .output()
        .expect("bash runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the README's examples failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for expected in [
        "\"status\":\"ok\"",
        "\"id\":\"cat-1\"",
        "\"state\":\"succeeded\"",
        "event: run",
        "\"id\":\"dog-1\"",
        "\"valid\":false",
        "unknown-input",
    ] {
        assert!(stdout.contains(expected), "no {expected} in:\n{stdout}");
    }
    let preview = std::fs::read(work.path().join("depth-preview.png")).unwrap();
    assert!(preview.starts_with(b"\x89PNG"));
    assert_eq!(server.request("GET", "/v1/runs/cat-1", None).status, 404);
    // Cancelled at once (a fast machine may already have finished it: then the cancel was a 409).
    let dog = server.request("GET", "/v1/runs/dog-1", None).json();
    assert_eq!(dog["workflow"], "caption-boxes-depth-rgb", "{dog}");
}

#[test]
fn sigterm_cancels_running_runs_after_the_grace_period_and_keeps_them() {
    let Some(fixtures) = fixtures() else { return };
    let data = tempfile::tempdir().unwrap();
    let mut server = ServerProcess::start(&fixtures, data.path(), &["--grace", "1"]);
    let id = server.start_run(SLOW, "a dog", false)["id"]
        .as_str()
        .unwrap()
        .to_owned();
    server.wait_until_running(&id);
    let signalled = Instant::now();
    let status = Command::new("kill")
        .args(["-TERM", &server.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = server.child.wait().unwrap();
    assert!(
        exit.success(),
        "the server exits cleanly on SIGTERM: {exit}"
    );
    assert!(
        signalled.elapsed() < Duration::from_secs(15),
        "shutdown took {:?}",
        signalled.elapsed()
    );
    // Stopped cleanly: recorded as cancelled (not interrupted) and still there after a restart.
    let restarted = ServerProcess::start(&fixtures, data.path(), &[]);
    let record = restarted
        .request("GET", &format!("/v1/runs/{id}"), None)
        .json();
    assert_eq!(record["state"], "cancelled", "{record}");
}
