//! `pm-runtime monit` as a user drives it: in tmux, keys sent, the screen captured and read.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::scenario::*;

const LONG: Duration = Duration::from_secs(30);

/// A detached tmux session running one command, on its own tmux server.
struct Tmux {
    session: String,
}

impl Tmux {
    fn start(width: u16, height: u16, cmd: &str) -> Tmux {
        require_tool("tmux", &["-V"]);
        let session = format!("monit-{}-{width}", std::process::id());
        let t = Tmux { session };
        t.run(&["new-session", "-d", "-s", &t.session, "-x", &width.to_string(), "-y", &height.to_string(), cmd]);
        t
    }

    fn run(&self, args: &[&str]) -> String {
        // A server of its own (-L): other tests' sessions cannot end it under this one.
        let out = Command::new("tmux").args(["-L", &self.session]).args(args).output().expect("tmux");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn screen(&self) -> String {
        self.run(&["capture-pane", "-p", "-t", &self.session])
    }

    /// With MONIT_SCREENSHOTS=dir, keeps the screen with its colours (ANSI) as `dir/name.ans`
    /// (docs/tools/ansi-shot.js renders them for the README).
    fn keep(&self, name: &str) {
        if let Some(dir) = std::env::var_os("MONIT_SCREENSHOTS") {
            let text = self.run(&["capture-pane", "-p", "-e", "-t", &self.session]);
            std::fs::write(std::path::Path::new(&dir).join(format!("{name}.ans")), text).unwrap();
        }
    }

    /// Polls the screen until `ok` holds; panics with the last screen otherwise.
    fn wait(&self, what: &str, ok: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + LONG;
        loop {
            let text = self.screen();
            if ok(&text) {
                return text;
            }
            assert!(Instant::now() < deadline, "{what}: not on screen after {LONG:?}:\n{text}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn wait_text(&self, needle: &str) -> String {
        self.wait(needle, |t| t.contains(needle))
    }

    fn keys(&self, keys: &[&str]) {
        for k in keys {
            self.run(&["send-keys", "-t", &self.session, k]);
        }
    }

    /// Typed text (literally, not as key names).
    fn type_text(&self, text: &str) {
        self.run(&["send-keys", "-t", &self.session, "-l", text]);
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        self.run(&["kill-session", "-t", &self.session]);
    }
}

/// The row of the process table that shows `name`, split into its columns.
fn row<'a>(screen: &'a str, name: &str) -> Option<Vec<&'a str>> {
    screen
        .lines()
        .map(|l| l.trim_matches(|c| c == '│' || c == ' ').split_whitespace().collect::<Vec<_>>())
        .find(|w| w.len() >= 8 && w[1] == name && matches!(w[2], "online" | "stopped" | "launching" | "errored" | "stopping"))
}

fn restarts(s: &Scenario, name: &str) -> Vec<u64> {
    let (_, out, _) = s.cli(&["jlist"]);
    let list: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap_or_default();
    list.iter().filter(|p| p["name"] == name).map(|p| p["pm2_env"]["restart_time"].as_u64().unwrap_or(0)).collect()
}

const APP_JS: &str = "\
const io = require('@pm2/io');
const queue = io.metric({ name: 'Queue depth', unit: 'jobs' });
queue.set(17);
const served = io.counter({ name: 'Served' });
// About half a core, so the CPU gauge has something to show.
setInterval(() => { const t = Date.now(); while (Date.now() - t < 40) {} served.inc(); console.log('api tick'); }, 100);
setInterval(() => console.error('api warning'), 700);
";

#[test]
fn monit_shows_four_panes_acts_by_key_and_resizes_from_80x24_to_200x50() {
    let modules = pm2_io_modules();
    let s = Scenario::new()
        .file("app.js", APP_JS)
        .file("worker.sh", "#!/bin/sh\nwhile :; do echo worker out; sleep 0.3; done\n")
        .file("e.yml", "apps:\n  - name: api\n    script: app.js\n    max_memory_restart: 400M\n  - name: worker\n    script: worker.sh\n");
    // The apps' directory is a git repository: its branch and commit are metadata.
    let commit = git_repo(s.path());

    let mut cmd = s.command(&["e.yml"]);
    cmd.env("NODE_PATH", &modules);
    let mut r = Running::start(cmd);
    r.wait_for("api tick", LONG);
    let home = s.path().join(".pm2");
    let t = Tmux::start(80, 24, &format!("PM2_HOME={} {BIN} monit; echo MONIT_EXIT=$?; sleep 30", home.display()));

    // Custom metrics of a real @pm2/io app, beside the runtime's own numbers.
    let screen = t.wait("the app's @pm2/io metrics", |t| t.contains("Queue depth") && t.contains("17 jobs") && t.contains("Served"));
    for pane in ["Processes", "Logs: api [0]", "Metrics: api", "Metadata"] {
        assert!(screen.contains(pane), "{pane} missing:\n{screen}");
    }
    assert!(screen.lines().all(|l| l.chars().count() <= 80), "{screen}");
    // Gauges: the API's CPU and memory bars (memory against its 400M limit) are partly full.
    let screen = t.wait("CPU and memory gauges", |t| {
        row(t, "api").is_some_and(|w| w[4].contains('█') && w[4].contains('░') && w[6].contains('█') && w[6].contains('░'))
    });
    let api = row(&screen, "api").unwrap();
    assert!(api[5].ends_with('%') && api[8] == "MB", "{api:?}");
    // Logs: out and err of the selected app.
    t.wait_text("out │ api tick");
    t.wait_text("err │ api warning");
    t.keep("monit-80x24");
    // Metadata: the interpreter and its version.
    let node = String::from_utf8(Command::new("node").arg("--version").output().unwrap().stdout).unwrap();
    t.wait_text(&format!("interpreter   node ({})", node.trim()));

    // Search in the logs: only matching lines stay.
    t.keys(&["/"]);
    t.type_text("warning");
    t.keys(&["Enter"]);
    let screen = t.wait_text("search \"warning\"");
    let log_lines: Vec<&str> = screen.lines().filter(|l| l.contains(" │ ")).collect();
    assert!(!log_lines.is_empty() && log_lines.iter().all(|l| l.contains("api warning")), "{screen}");
    t.keys(&["Escape"]);
    t.wait_text("out │ api tick");

    // A restart by key.
    assert_eq!(restarts(&s, "api"), [0]);
    t.keys(&["r"]);
    t.wait_text("restart api [0]: done");
    poll("api restarted once", LONG, || (restarts(&s, "api") == [1]).then_some(()));
    t.wait("↺ 1 on api's row", |t| row(t, "api").is_some_and(|w| w[3] == "1"));

    // Filter by name, then scale the selected app by one.
    t.keys(&["f"]);
    t.type_text("work");
    t.keys(&["Enter"]);
    let screen = t.wait_text("Logs: worker [1]");
    assert!(row(&screen, "api").is_none(), "api is filtered out:\n{screen}");
    t.wait_text("out │ worker out");
    t.keys(&["+"]);
    t.wait_text("scale worker +1: done");
    poll("two workers", LONG, || (restarts(&s, "worker").len() == 2).then_some(()));

    // The metadata pane scrolls to the git facts at 80×24.
    t.keys(&["Tab", "Tab", "Tab"]);
    for _ in 0..12 {
        t.keys(&["Down"]);
    }
    // The twelve scroll keys are drawn one frame at a time: wait for the last of them.
    let screen = t.wait("the git facts", |t| t.contains("git branch") && t.contains(&commit[..12]));
    assert!(screen.contains("trunk") && screen.contains(&commit[..12]), "{screen}");

    // Resized to 200×50: everything is redrawn, the help line has every label, the metadata two columns.
    t.run(&["resize-window", "-t", &t.session, "-x", "200", "-y", "50"]);
    let screen = t.wait("the 200×50 layout", |t| t.contains("stop/start") && t.contains("git remote"));
    assert!(screen.contains("https://example.org/shop.git"), "{screen}");
    assert!(screen.lines().any(|l| l.chars().count() > 150), "{screen}");
    // Back to every process and to the API: its memory limit.
    // (Escape alone: followed at once by another key it reads as Alt+key, as in any terminal.)
    t.keys(&["Escape"]);
    t.wait("the filter cleared", |t| row(t, "api").is_some());
    t.keys(&["Tab", "Up"]);
    // The panes redraw together but the screen is read between frames: wait for both.
    let screen = t.wait("the API's logs and metadata", |t| {
        t.contains("Logs: api [0]") && t.lines().find(|l| l.contains("memory limit")).is_some_and(|l| l.contains("400"))
    });
    let meta_line = screen.lines().find(|l| l.contains("memory limit")).unwrap();
    assert!(meta_line.contains("400"), "{meta_line}");
    t.keys(&["Tab"]);
    t.wait_text("out │ api tick");
    t.keep("monit-200x50");

    t.keys(&["q"]);
    let end = t.wait_text("MONIT_EXIT=0");
    assert!(!end.contains("Processes"), "terminal restored:\n{end}");
    drop(t);
    r.signal(libc::SIGTERM);
    r.wait(LONG);
}
