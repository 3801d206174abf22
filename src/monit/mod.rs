//! `pm-runtime monit`: the four panes of `pm2 monit` in the terminal (ratatui).
//!
//! Processes (status, restarts, CPU and memory gauges), the logs of the selected process (out
//! and err apart, following or scrolled back, searchable), its custom metrics (`@pm2/io`'s,
//! with the runtime's own numbers) and its metadata (script, interpreter and version, git
//! branch and commit…). Keys act on the selected process through the same control requests as
//! the verbs (restart, reload, stop/start, scale ±1).
//!
//! Owns: only the viewer's state ([`State`]); key handling is a pure transition
//! ([`State::on_key`]) that says which request to send. It reads the runtime through the control
//! socket (`ls` once a second, `logs` by sequence number): the runtime samples only while monit
//! asks, and closing monit never affects the apps. The terminal is restored on every exit path
//! (ratatui's init installs a panic hook that restores it).

mod facts;
mod view;

use std::collections::VecDeque;
use std::path::Path;
use std::time::{Duration, Instant};

use ratatui::crossterm::event::{self, Event, KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use serde_json::Value;

use crate::control::client;
use crate::control::protocol::Request;
use crate::exit::Outcome;

/// Log lines kept for scrolling back.
const LOG_LINES: usize = 2000;
/// How long a message about the last action stays on screen.
const MESSAGE_FOR: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pane {
    Processes,
    Logs,
    Metrics,
    Metadata,
}

impl Pane {
    const ORDER: [Pane; 4] = [Pane::Processes, Pane::Logs, Pane::Metrics, Pane::Metadata];

    fn step(self, by: isize) -> Pane {
        let i = Pane::ORDER.iter().position(|p| *p == self).unwrap_or(0) as isize;
        Pane::ORDER[(i + by).rem_euclid(4) as usize]
    }
}

/// What is being typed on the bottom line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Typing {
    Filter,
    Search,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LogEntry {
    pub err: bool,
    pub text: String,
}

/// What a key asks the loop to do.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Effect {
    Nothing,
    Quit,
    /// A control request, with the words for the message line.
    Send(Request, String),
}

#[derive(Debug, Default)]
pub(crate) struct State {
    /// Every process, as `ls` last gave them (PM2's jlist objects).
    pub procs: Vec<Value>,
    /// Shown are the processes whose name contains this (case-insensitive).
    pub filter: String,
    /// The selected process (kept by pm_id across refreshes).
    pub selected: Option<u64>,
    pub focus: Option<Pane>,
    /// pm_id whose logs are held.
    pub shown: Option<u64>,
    pub logs: VecDeque<LogEntry>,
    last_seq: u64,
    /// Lines scrolled back from the newest (0: following).
    pub log_scroll: usize,
    /// Logs show only lines containing this (case-insensitive), highlighted.
    pub search: String,
    pub typing: Option<Typing>,
    pub meta_scroll: u16,
    pub metrics_scroll: u16,
    pub help: bool,
    pub message: Option<(String, Instant)>,
    pub error: Option<String>,
    pub facts: facts::Facts,
}

fn contains_ci(hay: &str, needle: &str) -> bool {
    needle.is_empty() || hay.to_lowercase().contains(&needle.to_lowercase())
}

impl State {
    pub fn focus(&self) -> Pane {
        self.focus.unwrap_or(Pane::Processes)
    }

    /// The processes shown (the filter applied).
    pub fn visible(&self) -> Vec<&Value> {
        self.procs.iter().filter(|p| contains_ci(p["name"].as_str().unwrap_or(""), &self.filter)).collect()
    }

    /// Index of the selection in [`State::visible`].
    pub fn selected_index(&self) -> Option<usize> {
        let vis = self.visible();
        vis.iter().position(|p| p["pm_id"].as_u64() == self.selected)
    }

    pub fn selected_proc(&self) -> Option<&Value> {
        self.procs.iter().find(|p| p["pm_id"].as_u64() == self.selected)
    }

    /// Keeps the selection on a shown process (the first when it is gone or filtered out).
    fn fix_selection(&mut self) {
        if self.selected_index().is_none() {
            self.selected = self.visible().first().and_then(|p| p["pm_id"].as_u64());
        }
    }

    fn move_selection(&mut self, by: isize) {
        let ids: Vec<u64> = self.visible().iter().filter_map(|p| p["pm_id"].as_u64()).collect();
        if ids.is_empty() {
            return;
        }
        let i = self.selected_index().unwrap_or(0) as isize;
        self.selected = Some(ids[(i + by).rem_euclid(ids.len() as isize) as usize]);
    }

    /// The log lines that match the search, oldest first.
    pub fn log_view(&self) -> Vec<&LogEntry> {
        self.logs.iter().filter(|l| contains_ci(&l.text, &self.search)).collect()
    }

    fn scroll_logs(&mut self, by: isize) {
        let max = self.log_view().len().saturating_sub(1);
        self.log_scroll = (self.log_scroll as isize + by).clamp(0, max as isize) as usize;
    }

    /// Takes new log lines of the shown process; a scrolled-back view stays where it is.
    pub fn push_logs(&mut self, lines: impl IntoIterator<Item = LogEntry>) {
        for l in lines {
            if self.log_scroll > 0 && contains_ci(&l.text, &self.search) {
                self.log_scroll += 1;
            }
            self.logs.push_back(l);
            if self.logs.len() > LOG_LINES {
                self.logs.pop_front();
            }
        }
    }

    fn say(&mut self, text: String) {
        self.message = Some((text, Instant::now()));
    }

    /// The pure part of a key press: changes the view, says what to send.
    pub fn on_key(&mut self, key: KeyEvent) -> Effect {
        if key.code == KeyCode::Char('c') && key.modifiers.contains(KeyModifiers::CONTROL) {
            return Effect::Quit;
        }
        if let Some(t) = self.typing {
            let text = match t {
                Typing::Filter => &mut self.filter,
                Typing::Search => &mut self.search,
            };
            match key.code {
                KeyCode::Enter => self.typing = None,
                KeyCode::Esc => {
                    text.clear();
                    self.typing = None;
                }
                KeyCode::Backspace => {
                    text.pop();
                }
                KeyCode::Char(c) => text.push(c),
                _ => {}
            }
            if t == Typing::Filter {
                self.fix_selection();
            } else {
                self.log_scroll = 0;
            }
            return Effect::Nothing;
        }
        if self.help {
            // Any key closes the help; q still quits.
            self.help = false;
            return if key.code == KeyCode::Char('q') { Effect::Quit } else { Effect::Nothing };
        }
        let page = 10;
        match key.code {
            KeyCode::Char('q') => return Effect::Quit,
            KeyCode::Esc if !self.search.is_empty() || !self.filter.is_empty() => {
                self.search.clear();
                self.filter.clear();
                self.fix_selection();
            }
            KeyCode::Esc => return Effect::Quit,
            KeyCode::Tab => self.focus = Some(self.focus().step(1)),
            KeyCode::BackTab => self.focus = Some(self.focus().step(-1)),
            KeyCode::Char('?') | KeyCode::Char('h') => self.help = true,
            KeyCode::Char('f') => self.typing = Some(Typing::Filter),
            KeyCode::Char('/') => self.typing = Some(Typing::Search),
            KeyCode::Up | KeyCode::Char('k') => self.arrow(-1),
            KeyCode::Down | KeyCode::Char('j') => self.arrow(1),
            KeyCode::PageUp => self.scroll_logs(page),
            KeyCode::PageDown => self.scroll_logs(-page),
            KeyCode::Home | KeyCode::Char('g') => self.scroll_logs(isize::MAX / 2),
            KeyCode::End | KeyCode::Char('G') => self.log_scroll = 0,
            KeyCode::Char(c @ ('r' | 'l' | 's' | '+' | '=' | '-')) => return self.action(c),
            _ => {}
        }
        Effect::Nothing
    }

    /// ↑/↓ act on the focused pane.
    fn arrow(&mut self, by: isize) {
        match self.focus() {
            Pane::Processes => self.move_selection(by),
            // Up goes back in time.
            Pane::Logs => self.scroll_logs(-by),
            Pane::Metrics => self.metrics_scroll = self.metrics_scroll.saturating_add_signed(by as i16),
            Pane::Metadata => self.meta_scroll = self.meta_scroll.saturating_add_signed(by as i16),
        }
    }

    /// The request of an action key on the selected process.
    fn action(&mut self, key: char) -> Effect {
        let Some(p) = self.selected_proc() else { return Effect::Nothing };
        let name = p["name"].as_str().unwrap_or("").to_string();
        let id = p["pm_id"].to_string();
        let stopped = matches!(p["pm2_env"]["status"].as_str(), Some("stopped" | "errored"));
        let target = id.clone();
        let (req, words) = match key {
            'r' => (Request::Restart { target }, format!("restart {name} [{id}]")),
            'l' => (Request::Reload { target }, format!("reload {name} [{id}]")),
            's' if stopped => (Request::Start { target }, format!("start {name} [{id}]")),
            's' => (Request::Stop { target }, format!("stop {name} [{id}]")),
            '-' => (Request::Scale { name: name.clone(), count: "-1".into() }, format!("scale {name} -1")),
            _ => (Request::Scale { name: name.clone(), count: "+1".into() }, format!("scale {name} +1")),
        };
        Effect::Send(req, words)
    }

    fn refresh(&mut self, home: &Path) {
        match client::processes(home) {
            Ok(ps) => {
                self.procs = ps;
                self.error = None;
                self.fix_selection();
            }
            Err(e) => self.error = Some(e.to_string()),
        }
    }

    fn poll_logs(&mut self, home: &Path) {
        if self.selected != self.shown {
            self.shown = self.selected;
            self.logs.clear();
            self.last_seq = 0;
            self.log_scroll = 0;
        }
        let Some(id) = self.shown else { return };
        let target = Some(id.to_string());
        let req = if self.last_seq == 0 {
            Request::Logs { target, lines: 200, after: None }
        } else {
            Request::Logs { target, lines: 0, after: Some(self.last_seq) }
        };
        if let Ok(r) = client::request(home, &req) {
            let lines = r.lines.unwrap_or_default();
            self.last_seq = lines.iter().map(|l| l.seq).max().unwrap_or(self.last_seq).max(self.last_seq);
            self.push_logs(lines.into_iter().map(|l| LogEntry { err: l.kind == "err", text: l.message }));
        }
    }
}

pub fn run(home: &Path) -> Outcome {
    let mut st = State::default();
    st.refresh(home);
    if let Some(e) = st.error.take() {
        eprintln!("pm-runtime: {e}");
        return Outcome::AppsFinished(1);
    }
    let mut terminal = ratatui::init();
    let mut last_refresh = Instant::now();
    let outcome = loop {
        if last_refresh.elapsed() >= Duration::from_secs(1) {
            st.refresh(home);
            last_refresh = Instant::now();
        }
        st.poll_logs(home);
        if st.message.as_ref().is_some_and(|(_, at)| at.elapsed() > MESSAGE_FOR) {
            st.message = None;
        }
        if terminal.draw(|f| view::draw(f, &mut st)).is_err() {
            break Outcome::Internal;
        }
        match event::poll(Duration::from_millis(250)) {
            Ok(true) => {}
            Ok(false) => continue,
            Err(_) => break Outcome::Internal,
        }
        // A resize is redrawn by the next `draw` (ratatui resizes its buffers there).
        let Ok(Event::Key(key)) = event::read() else { continue };
        if key.kind != KeyEventKind::Press {
            continue;
        }
        match st.on_key(key) {
            Effect::Nothing => {}
            Effect::Quit => break Outcome::Requested,
            Effect::Send(req, words) => {
                let said = match client::request(home, &req) {
                    Ok(_) => format!("{words}: done"),
                    Err(e) => format!("{words}: {e}"),
                };
                st.say(said);
                st.refresh(home);
                last_refresh = Instant::now();
            }
        }
    };
    ratatui::restore();
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn key(c: KeyCode) -> KeyEvent {
        KeyEvent::new(c, KeyModifiers::NONE)
    }

    fn state() -> State {
        let p = |id: u32, name: &str, status: &str| json!({"pm_id": id, "name": name, "pm2_env": {"status": status}});
        let mut st = State { procs: vec![p(0, "web", "online"), p(1, "web", "online"), p(2, "worker", "stopped")], ..Default::default() };
        st.fix_selection();
        st
    }

    #[test]
    fn keys_select_filter_and_say_what_to_send() {
        let mut st = state();
        assert_eq!(st.selected, Some(0));
        st.on_key(key(KeyCode::Down));
        st.on_key(key(KeyCode::Down));
        assert_eq!(st.selected, Some(2));
        // A stopped process is started, a running one stopped.
        assert_eq!(st.on_key(key(KeyCode::Char('s'))), Effect::Send(Request::Start { target: "2".into() }, "start worker [2]".into()));
        st.on_key(key(KeyCode::Down));
        assert_eq!(st.selected, Some(0), "wraps around");
        let table = [
            ('r', Request::Restart { target: "0".into() }),
            ('l', Request::Reload { target: "0".into() }),
            ('s', Request::Stop { target: "0".into() }),
            ('+', Request::Scale { name: "web".into(), count: "+1".into() }),
            ('-', Request::Scale { name: "web".into(), count: "-1".into() }),
        ];
        for (c, want) in table {
            assert!(matches!(st.on_key(key(KeyCode::Char(c))), Effect::Send(r, _) if r == want), "{c}");
        }
        // Filter by name: typing narrows the list and moves the selection onto a shown process.
        st.on_key(key(KeyCode::Char('f')));
        for c in "WOR".chars() {
            st.on_key(key(KeyCode::Char(c)));
        }
        assert_eq!(st.on_key(key(KeyCode::Char('q'))), Effect::Nothing, "q is typed while filtering");
        st.on_key(key(KeyCode::Backspace));
        st.on_key(key(KeyCode::Enter));
        assert_eq!(st.filter, "WOR");
        assert_eq!(st.visible().len(), 1);
        assert_eq!(st.selected, Some(2));
        // Esc clears the filter first, then quits.
        assert_eq!(st.on_key(key(KeyCode::Esc)), Effect::Nothing);
        assert_eq!(st.visible().len(), 3);
        assert_eq!(st.on_key(key(KeyCode::Esc)), Effect::Quit);
        assert_eq!(st.on_key(KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL)), Effect::Quit);
    }

    #[test]
    fn panes_help_and_log_scrolling_and_search() {
        let mut st = state();
        st.push_logs((0..30).map(|i| LogEntry { err: i % 10 == 0, text: format!("line {i}") }));
        assert_eq!(st.focus(), Pane::Processes);
        st.on_key(key(KeyCode::Tab));
        assert_eq!(st.focus(), Pane::Logs);
        st.on_key(key(KeyCode::Up));
        st.on_key(key(KeyCode::PageUp));
        assert_eq!(st.log_scroll, 11);
        // New lines do not move a scrolled-back view.
        st.push_logs([LogEntry { err: false, text: "new".into() }]);
        assert_eq!(st.log_scroll, 12);
        st.on_key(key(KeyCode::End));
        assert_eq!(st.log_scroll, 0, "End follows again");
        st.on_key(key(KeyCode::Home));
        assert_eq!(st.log_scroll, 30, "Home is the oldest line");
        st.on_key(key(KeyCode::Char('/')));
        for c in "line 1".chars() {
            st.on_key(key(KeyCode::Char(c)));
        }
        st.on_key(key(KeyCode::Enter));
        assert_eq!(st.log_scroll, 0);
        assert_eq!(st.log_view().len(), 11, "line 1 and line 10..19");
        st.on_key(key(KeyCode::BackTab));
        st.on_key(key(KeyCode::BackTab));
        assert_eq!(st.focus(), Pane::Metadata);
        st.on_key(key(KeyCode::Down));
        assert_eq!(st.meta_scroll, 1);
        st.on_key(key(KeyCode::Char('?')));
        assert!(st.help);
        assert_eq!(st.on_key(key(KeyCode::Char('r'))), Effect::Nothing, "a key closes the help");
        assert!(!st.help);
    }
}
